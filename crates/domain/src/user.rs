//! Users: the people who sign in to the console, with a role (as API keys
//! have), an optional agent they act as, and a password kept as an
//! argon2id hash. Also the rules of their sessions, one-time login links
//! and the sign-in lockout.
//!
//! Hashing is pure computation (no I/O), so it lives here like the API
//! key's hash; it is deliberately slow (tens of milliseconds), so callers
//! run it off the async runtime's workers.

use std::fmt;

use argon2::{
    Argon2, PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _,
    password_hash::SaltString,
};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{AgentId, DisplayName, Email, Role, TenantId, UserId};

/// A person of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Sign-in name, unique in the tenant.
    pub email: Email,
    /// Display name.
    pub name: DisplayName,
    /// What the person may do.
    pub role: Role,
    /// The agent the person acts as (drafts and decisions are recorded as
    /// this agent's).
    pub agent_id: Option<AgentId>,
    /// Whether a password is set (until then only a login link signs in).
    pub has_password: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When the user was disabled: no sign-in, no session.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// What it takes to create a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Sign-in name.
    pub email: Email,
    /// Display name.
    pub name: DisplayName,
    /// Role.
    pub role: Role,
    /// The agent the person acts as.
    pub agent_id: Option<AgentId>,
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateUserRequest {
    /// The version the caller read.
    pub expected_version: i64,
    /// A new role.
    pub role: Option<Role>,
    /// Disable (no sign-in, every session ended) or enable again.
    pub disabled: Option<bool>,
}

/// The user changed since the caller read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the user is at version {current}")]
pub struct StaleUser {
    /// The version stored.
    pub current: i64,
}

impl User {
    /// The user with `req` applied at `now`, at the next version.
    ///
    /// # Errors
    /// [`StaleUser`] when `req` was made against another version.
    pub fn apply(&self, req: &UpdateUserRequest, now: DateTime<Utc>) -> Result<Self, StaleUser> {
        if req.expected_version != self.version {
            return Err(StaleUser {
                current: self.version,
            });
        }
        let disabled_at = match req.disabled {
            Some(true) => self.disabled_at.or(Some(now)),
            Some(false) => None,
            None => self.disabled_at,
        };
        Ok(Self {
            role: req.role.unwrap_or(self.role),
            disabled_at,
            version: self.version + 1,
            ..self.clone()
        })
    }
}

/// A password as typed: 12 to 256 characters. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

/// Why a password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefused {
    /// Shorter than 12 characters.
    #[error("must be at least 12 characters")]
    TooShort,
    /// Longer than 256 characters.
    #[error("must be at most 256 characters")]
    TooLong,
}

impl Password {
    /// The shortest password accepted.
    pub const MIN: usize = 12;
    /// The longest password accepted (hashing is bounded by it).
    pub const MAX: usize = 256;

    /// Checks a new password.
    ///
    /// # Errors
    /// [`PasswordRefused`] outside 12 to 256 characters.
    pub fn new(raw: &str) -> Result<Self, PasswordRefused> {
        let chars = raw.chars().count();
        if chars < Self::MIN {
            Err(PasswordRefused::TooShort)
        } else if chars > Self::MAX {
            Err(PasswordRefused::TooLong)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    /// Hashes it with argon2id (OWASP's parameters: 19 MiB, 2 passes) and
    /// `salt`, supplied by the caller (the domain does no I/O).
    ///
    /// # Errors
    /// Only if argon2 refuses its own defaults, which it does not.
    pub fn hash(&self, salt: [u8; 16]) -> Result<PasswordHash, argon2::password_hash::Error> {
        let salt = SaltString::encode_b64(&salt)?;
        let phc = Argon2::default().hash_password(self.0.as_bytes(), &salt)?;
        Ok(PasswordHash(phc.to_string()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An argon2id hash in PHC form (`$argon2id$v=19$m=…`): what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Rebuilds a hash read from storage.
    ///
    /// # Errors
    /// When it is not an argon2id PHC string.
    pub fn parse(raw: &str) -> Result<Self, argon2::password_hash::Error> {
        let phc = PhcHash::new(raw)?;
        if phc.algorithm.as_str() != "argon2id" {
            return Err(argon2::password_hash::Error::Algorithm);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The PHC string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `attempt` is the password. Constant-time in the password's
    /// content (argon2 compares digests so).
    #[must_use]
    pub fn verify(&self, attempt: &str) -> bool {
        if attempt.chars().count() > Password::MAX {
            return false;
        }
        PhcHash::new(&self.0).is_ok_and(|phc| {
            Argon2::default()
                .verify_password(attempt.as_bytes(), &phc)
                .is_ok()
        })
    }
}

/// A secret bearer token of a tenant (a session's cookie, a login link):
/// `<prefix><tenant, 32 hex>_<secret, 64 hex>`. The tenant in clear lets the
/// store open the tenant's row-level-security context before it looks the
/// token up; only the SHA-256 of the whole token is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken {
    tenant_id: TenantId,
    text: String,
}

/// A presented token not in the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed token")]
pub struct MalformedToken;

impl SecretToken {
    /// A session cookie's value starts so.
    pub const SESSION: &'static str = "lls_";
    /// A login link's token starts so.
    pub const LOGIN_LINK: &'static str = "lll_";

    /// Builds a token from random bytes the caller supplies.
    #[must_use]
    pub fn from_random(prefix: &'static str, tenant_id: TenantId, secret: [u8; 32]) -> Self {
        let mut text = String::with_capacity(prefix.len() + 32 + 1 + 64);
        text.push_str(prefix);
        text.push_str(&tenant_id.as_uuid().simple().to_string());
        text.push('_');
        for byte in secret {
            text.push_str(&format!("{byte:02x}"));
        }
        Self { tenant_id, text }
    }

    /// Parses a presented token of kind `prefix`.
    ///
    /// # Errors
    /// [`MalformedToken`] when the shape is wrong.
    pub fn parse(prefix: &'static str, raw: &str) -> Result<Self, MalformedToken> {
        let rest = raw.strip_prefix(prefix).ok_or(MalformedToken)?;
        let (tenant_hex, secret_hex) = rest.split_once('_').ok_or(MalformedToken)?;
        let is_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if tenant_hex.len() != 32
            || secret_hex.len() != 64
            || !is_hex(tenant_hex)
            || !is_hex(secret_hex)
        {
            return Err(MalformedToken);
        }
        let uuid = Uuid::try_parse(tenant_hex).map_err(|_| MalformedToken)?;
        Ok(Self {
            tenant_id: TenantId::from_uuid(uuid),
            text: raw.to_owned(),
        })
    }

    /// The tenant it claims (unverified until its hash is found).
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// What is stored and looked up.
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// The token, to hand to its holder.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretToken")
            .field("tenant_id", &self.tenant_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Signed out after this long without a request.
    pub idle: Duration,
    /// Signed out this long after signing in, whatever happens.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::minutes(30),
            absolute: Duration::hours(12),
        }
    }
}

/// How often a session's `last_seen_at` is written: every request would
/// make each page view a write.
pub const SESSION_TOUCH: Duration = Duration::minutes(1);

/// A console session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Who signed in.
    pub user_id: UserId,
    /// The token every form must carry back (CSRF): 64 hex characters.
    pub csrf_token: String,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// The last request (to [`SESSION_TOUCH`]).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// A session beginning at `now` under `policy`.
    #[must_use]
    pub fn begin(
        tenant_id: TenantId,
        user_id: UserId,
        csrf_random: [u8; 32],
        policy: SessionPolicy,
        now: DateTime<Utc>,
    ) -> Self {
        let csrf_token = csrf_random.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            tenant_id,
            user_id,
            csrf_token,
            created_at: now,
            last_seen_at: now,
            expires_at: now + policy.absolute,
        }
    }

    /// Whether it still signs its holder in at `now`.
    #[must_use]
    pub fn is_live(&self, policy: SessionPolicy, now: DateTime<Utc>) -> bool {
        now < self.expires_at && now - self.last_seen_at < policy.idle
    }

    /// When it stops being live under `policy` unless used again: the
    /// idle deadline, or its absolute end if that comes first.
    #[must_use]
    pub fn live_until(&self, policy: SessionPolicy) -> DateTime<Utc> {
        self.expires_at.min(self.last_seen_at + policy.idle)
    }

    /// Whether a request at `now` should be written as seen.
    #[must_use]
    pub fn needs_touch(&self, now: DateTime<Utc>) -> bool {
        now - self.last_seen_at >= SESSION_TOUCH
    }

    /// Whether a form's token is this session's. Compared in constant time.
    #[must_use]
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.csrf_token.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// How long a login link works.
pub const LOGIN_LINK_LIFETIME: Duration = Duration::hours(72);

/// When sign-in is refused for too many failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures counted…
    pub window: Duration,
    /// …at most this many for one account…
    pub per_account: u32,
    /// …and this many from one address (across accounts).
    pub per_address: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            window: Duration::minutes(15),
            per_account: 5,
            per_address: 20,
        }
    }
}

/// Why sign-in is refused before the password is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// The account had too many failures.
    Account {
        /// When it opens again.
        until: DateTime<Utc>,
    },
    /// The address had too many failures.
    Address {
        /// When it opens again.
        until: DateTime<Utc>,
    },
}

impl LockoutPolicy {
    /// Whether sign-in is locked at `now`, given the times of the recent
    /// failures of the account and of the address (each oldest first,
    /// within [`Self::window`]). Locked until the oldest failure that still
    /// counts leaves the window.
    #[must_use]
    pub fn lockout(
        &self,
        account_failures: &[DateTime<Utc>],
        address_failures: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Option<Lockout> {
        let until = |failures: &[DateTime<Utc>], max: u32| {
            let recent: Vec<_> = failures
                .iter()
                .filter(|at| now - **at < self.window)
                .collect();
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            (recent.len() >= max).then(|| *recent[recent.len() - max] + self.window)
        };
        if let Some(until) = until(account_failures, self.per_account) {
            return Some(Lockout::Account { until });
        }
        until(address_failures, self.per_address).map(|until| Lockout::Address { until })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_never_show() {
        assert_eq!(
            Password::new("short").err(),
            Some(PasswordRefused::TooShort)
        );
        assert_eq!(
            Password::new(&"x".repeat(257)).err(),
            Some(PasswordRefused::TooLong)
        );
        let password = Password::new("correct horse battery").unwrap();
        let hash = password.hash([7; 16]).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"), "{}", hash.as_str());
        assert!(hash.verify("correct horse battery"));
        assert!(!hash.verify("correct horse batterz"));
        assert!(!hash.verify(""));
        assert_eq!(PasswordHash::parse(hash.as_str()).unwrap(), hash);
        assert!(PasswordHash::parse("plain").is_err());
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn updates_check_the_version_and_keep_the_first_disable_time() {
        let now = Utc::now();
        let user = User {
            id: UserId::new(),
            tenant_id: TenantId::new(),
            email: Email::parse("a@b.example").unwrap(),
            name: DisplayName::new("A").unwrap(),
            role: Role::Agent,
            agent_id: None,
            has_password: true,
            created_at: now,
            disabled_at: None,
            version: 3,
        };
        let stale = UpdateUserRequest {
            expected_version: 2,
            role: Some(Role::Admin),
            disabled: None,
        };
        assert_eq!(user.apply(&stale, now), Err(StaleUser { current: 3 }));
        let off = user
            .apply(
                &UpdateUserRequest {
                    expected_version: 3,
                    role: Some(Role::Viewer),
                    disabled: Some(true),
                },
                now,
            )
            .unwrap();
        assert_eq!(
            (off.role, off.disabled_at, off.version),
            (Role::Viewer, Some(now), 4)
        );
        let later = now + Duration::minutes(1);
        let again = off
            .apply(
                &UpdateUserRequest {
                    expected_version: 4,
                    role: None,
                    disabled: Some(true),
                },
                later,
            )
            .unwrap();
        assert_eq!(
            again.disabled_at,
            Some(now),
            "disabled once, at the first time"
        );
        let on = again
            .apply(
                &UpdateUserRequest {
                    expected_version: 5,
                    role: None,
                    disabled: Some(false),
                },
                later,
            )
            .unwrap();
        assert_eq!(on.disabled_at, None);
    }

    #[test]
    fn tokens_carry_their_tenant_and_kind() {
        let tenant = TenantId::new();
        let token = SecretToken::from_random(SecretToken::SESSION, tenant, [9; 32]);
        let parsed = SecretToken::parse(SecretToken::SESSION, token.expose()).unwrap();
        assert_eq!((parsed.tenant_id(), parsed.hash()), (tenant, token.hash()));
        assert!(SecretToken::parse(SecretToken::LOGIN_LINK, token.expose()).is_err());
        assert!(SecretToken::parse(SecretToken::SESSION, &token.expose()[1..]).is_err());
        assert!(!format!("{token:?}").contains("0909"));
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let policy = SessionPolicy::default();
        let now = Utc::now();
        let session = Session::begin(TenantId::new(), UserId::new(), [1; 32], policy, now);
        assert!(session.is_live(policy, now + Duration::minutes(29)));
        assert!(!session.is_live(policy, now + Duration::minutes(30)));
        let busy = Session {
            last_seen_at: now + Duration::hours(12) - Duration::minutes(1),
            ..session.clone()
        };
        assert!(!busy.is_live(policy, now + Duration::hours(12)), "absolute");
        assert_eq!(session.live_until(policy), now + Duration::minutes(30));
        assert_eq!(busy.live_until(policy), now + Duration::hours(12));
        assert!(session.csrf_matches(&"01".repeat(32)));
        assert!(!session.csrf_matches(&"02".repeat(32)));
        assert!(!session.csrf_matches(""));
        assert!(!session.needs_touch(now + Duration::seconds(59)));
        assert!(session.needs_touch(now + Duration::seconds(60)));
    }

    #[test]
    fn lockout_counts_recent_failures_per_account_and_address() {
        let policy = LockoutPolicy::default();
        let now = Utc::now();
        let ago = |m: i64| now - Duration::minutes(m);
        let four = [ago(10), ago(8), ago(6), ago(4)];
        assert_eq!(policy.lockout(&four, &four, now), None);
        let five = [ago(20), ago(10), ago(8), ago(6), ago(4), ago(2)];
        assert_eq!(
            policy.lockout(&five, &[], now),
            Some(Lockout::Account {
                until: ago(10) + Duration::minutes(15)
            })
        );
        let many: Vec<_> = (0..20).map(|i| ago(14) + Duration::seconds(i)).collect();
        assert!(matches!(
            policy.lockout(&[], &many, now),
            Some(Lockout::Address { .. })
        ));
    }
}
