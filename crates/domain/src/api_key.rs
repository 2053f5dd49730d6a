//! API keys: bearer tokens that identify a tenant and carry a role or
//! scopes (see [`crate::access`]).
//!
//! A token reads `ll_<tenant id, 32 hex>_<secret, 48 hex>`. The tenant id in
//! clear lets the store open the tenant's row-level-security context before
//! it looks the key up, so even authentication runs behind RLS. Only the
//! SHA-256 of the whole token is stored: the secret is 192 random bits, so a
//! fast hash is enough (slow password hashes exist to protect low-entropy
//! secrets, which these are not) and lookups stay a single index probe.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Access, ApiKeyId, DisplayName, TenantId};

const PREFIX: &str = ApiKeyToken::PREFIX;
const SECRET_BYTES: usize = 24;

/// A bearer token as presented by a client, or as freshly generated.
///
/// Its `Debug` never shows the secret, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    tenant_id: TenantId,
    text: String,
}

/// A presented token that is not in leadline's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key")]
pub struct ParseApiKeyError;

impl ApiKeyToken {
    /// How every token starts.
    pub const PREFIX: &'static str = "ll_";

    /// Builds a token for `tenant_id` from random bytes supplied by the
    /// caller (the domain does no I/O, randomness included).
    #[must_use]
    pub fn from_random(tenant_id: TenantId, secret: [u8; SECRET_BYTES]) -> Self {
        let mut text = String::with_capacity(PREFIX.len() + 32 + 1 + SECRET_BYTES * 2);
        text.push_str(PREFIX);
        text.push_str(&tenant_id.as_uuid().simple().to_string());
        text.push('_');
        for byte in secret {
            text.push_str(&format!("{byte:02x}"));
        }
        Self { tenant_id, text }
    }

    /// Parses a presented token.
    ///
    /// # Errors
    /// [`ParseApiKeyError`] when the shape is wrong; this says nothing about
    /// whether the key exists.
    pub fn parse(raw: &str) -> Result<Self, ParseApiKeyError> {
        let rest = raw.strip_prefix(PREFIX).ok_or(ParseApiKeyError)?;
        let (tenant_hex, secret_hex) = rest.split_once('_').ok_or(ParseApiKeyError)?;
        let is_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if tenant_hex.len() != 32
            || secret_hex.len() != SECRET_BYTES * 2
            || !is_hex(tenant_hex)
            || !is_hex(secret_hex)
        {
            return Err(ParseApiKeyError);
        }
        let uuid = Uuid::try_parse(tenant_hex).map_err(|_| ParseApiKeyError)?;
        Ok(Self {
            tenant_id: TenantId::from_uuid(uuid),
            text: raw.to_owned(),
        })
    }

    /// The tenant the token claims to belong to (unverified until the hash is found).
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The hash that is stored and looked up.
    #[must_use]
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(self.text.as_bytes()).into())
    }

    /// The token text, to show the user exactly once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What the store keeps of it: the hash and the prefix.
    #[must_use]
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            hash: self.hash(),
            prefix: self.prefix(),
        }
    }

    /// What identifies the key in lists without revealing it: the first
    /// [`KeyPrefix::LEN`] characters of its secret part.
    #[must_use]
    pub fn prefix(&self) -> KeyPrefix {
        let secret_start = PREFIX.len() + 32 + 1;
        KeyPrefix(self.text[secret_start..secret_start + KeyPrefix::LEN].to_owned())
    }
}

/// What is stored of a freshly issued key: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// The SHA-256 of the whole token, looked up on every request.
    pub hash: ApiKeyHash,
    /// The start of the secret, shown in lists.
    pub prefix: KeyPrefix,
}

/// The start of a key's secret part, kept in clear so a person can tell
/// keys apart (`ll_<tenant>_3f9c0a1b…`). Eight hex characters are 32 of the
/// secret's 192 bits: recognisable, and no help to a guesser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Its length in characters.
    pub const LEN: usize = 8;

    /// Rebuilds a prefix read from storage.
    ///
    /// # Errors
    /// [`ParseApiKeyError`] when it is not [`Self::LEN`] lowercase hex characters.
    pub fn parse(raw: &str) -> Result<Self, ParseApiKeyError> {
        if raw.len() == Self::LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseApiKeyError)
        }
    }

    /// The characters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API key as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// What people call it ("CRM sync", "Ada's laptop").
    pub name: DisplayName,
    /// What it may do.
    pub access: Access,
    /// The start of its secret; absent for keys issued before prefixes
    /// were kept.
    pub prefix: Option<KeyPrefix>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working by itself, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key a rotation issued to follow it.
    pub replaced_by: Option<ApiKeyId>,
}

/// How stale `last_used_at` may get: recording every use would turn each
/// request into a write.
pub const LAST_USED_GRANULARITY: Duration = Duration::minutes(1);

/// The longest overlap a rotation gives the old key.
pub const MAX_ROTATION_OVERLAP: Duration = Duration::days(7);

impl ApiKey {
    /// Whether it authenticates at `now`.
    #[must_use]
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }

    /// Whether a use at `now` should be recorded.
    #[must_use]
    pub fn use_worth_recording(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|at| now - at >= LAST_USED_GRANULARITY)
    }

    /// When the old key stops working once rotated at `now` with `overlap`:
    /// after the overlap, or sooner if it was to expire sooner.
    ///
    /// # Errors
    /// [`KeyRefused::Revoked`] for a revoked key, [`KeyRefused::Overlap`]
    /// for an overlap outside 0 to 7 days.
    pub fn rotation_deadline(
        &self,
        now: DateTime<Utc>,
        overlap: Duration,
    ) -> Result<DateTime<Utc>, KeyRefused> {
        if !self.is_live(now) {
            return Err(KeyRefused::Revoked);
        }
        if let Some(successor) = self.replaced_by {
            return Err(KeyRefused::AlreadyRotated(successor));
        }
        if overlap < Duration::zero() || overlap > MAX_ROTATION_OVERLAP {
            return Err(KeyRefused::Overlap);
        }
        let end = now + overlap;
        Ok(self.expires_at.map_or(end, |at| at.min(end)))
    }

    /// What its successor looks like: the same name and access, and the
    /// same expiry if it had one.
    #[must_use]
    pub fn successor(&self) -> NewApiKey {
        NewApiKey {
            name: self.name.clone(),
            access: self.access,
            expires_at: self.expires_at,
        }
    }
}

/// What it takes to issue a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Its name.
    pub name: DisplayName,
    /// What it may do.
    pub access: Access,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewApiKey {
    /// Whether it would work after `issuer_expires_at`, the expiry of the
    /// key issuing it: a key hands out no more time than it has, as it
    /// hands out no more access.
    #[must_use]
    pub fn outlives(&self, issuer_expires_at: Option<DateTime<Utc>>) -> bool {
        match (issuer_expires_at, self.expires_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(issuer), Some(own)) => own > issuer,
        }
    }

    /// The key a new tenant starts with: an admin key without expiry.
    ///
    /// # Panics
    /// Never: the name is a valid constant.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn first() -> Self {
        Self {
            name: DisplayName::new("first admin key").expect("a valid constant name"),
            access: Access::Role(crate::Role::Admin),
            expires_at: None,
        }
    }

    /// Checks a key about to be issued at `now`.
    ///
    /// # Errors
    /// [`KeyRefused::ExpiryPassed`] when `expires_at` is not in the future.
    pub fn new(
        name: DisplayName,
        access: Access,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyRefused> {
        if expires_at.is_some_and(|at| at <= now) {
            return Err(KeyRefused::ExpiryPassed);
        }
        Ok(Self {
            name,
            access,
            expires_at,
        })
    }
}

/// Why a key operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefused {
    /// The expiry is not in the future.
    #[error("must be in the future")]
    ExpiryPassed,
    /// The key is revoked or expired: there is nothing to rotate.
    #[error("the key is revoked or expired; issue a new one instead")]
    Revoked,
    /// The overlap is negative or longer than seven days.
    #[error("must be between 0 and 604800 seconds (7 days)")]
    Overlap,
    /// The key was rotated already: its successor is the one to rotate.
    #[error("the key was rotated already, to key {0}: rotate that one")]
    AlreadyRotated(ApiKeyId),
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyToken")
            .field("tenant_id", &self.tenant_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a token: what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// Rebuilds a hash read from storage.
    ///
    /// # Errors
    /// [`ParseApiKeyError`] when `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseApiKeyError> {
        bytes.try_into().map(Self).map_err(|_| ParseApiKeyError)
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {

    #[test]
    fn a_key_hands_out_no_more_time_than_it_has() {
        let now = Utc::now();
        let new = |expires_at| NewApiKey {
            name: DisplayName::new("k").expect("valid"),
            access: Access::Role(crate::Role::Viewer),
            expires_at,
        };
        let day = chrono::Duration::days(1);
        assert!(!new(None).outlives(None), "neither expires");
        assert!(!new(Some(now + day)).outlives(None));
        assert!(
            new(None).outlives(Some(now + day)),
            "forever outlives a day"
        );
        assert!(new(Some(now + day * 2)).outlives(Some(now + day)));
        assert!(
            !new(Some(now + day)).outlives(Some(now + day)),
            "the same end"
        );
    }
    use super::*;

    #[test]
    fn generated_tokens_parse_back_to_the_same_tenant_and_hash() {
        let tenant = TenantId::new();
        let token = ApiKeyToken::from_random(tenant, [7; SECRET_BYTES]);
        let parsed = ApiKeyToken::parse(token.expose()).expect("own format parses");
        assert_eq!(parsed.tenant_id(), tenant);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(
            ApiKeyToken::from_random(tenant, [8; SECRET_BYTES]).hash(),
            token.hash(),
            "different secrets hash differently"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = ApiKeyToken::from_random(TenantId::new(), [1; SECRET_BYTES]);
        let text = good.expose();
        for bad in [
            "",
            "Bearer x",
            &text[3..],
            &text[..text.len() - 1],
            &text.replace("ll_", "LL_"),
            &format!("{text}0"),
            &text.to_uppercase(),
        ] {
            assert_eq!(ApiKeyToken::parse(bad), Err(ParseApiKeyError), "{bad:?}");
        }
    }

    fn key(expires_at: Option<DateTime<Utc>>) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(),
            tenant_id: TenantId::new(),
            name: DisplayName::new("CRM sync").unwrap(),
            access: Access::Role(crate::Role::Agent),
            prefix: None,
            created_at: Utc::now(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
        }
    }

    #[test]
    fn the_prefix_is_the_start_of_the_secret() {
        let token = ApiKeyToken::from_random(TenantId::new(), [0x3f; SECRET_BYTES]);
        assert_eq!(token.prefix().as_str(), "3f3f3f3f");
        assert!(token.expose().contains("_3f3f3f3f"));
        assert_eq!(KeyPrefix::parse("3f3f3f3f"), Ok(token.prefix()));
        assert!(KeyPrefix::parse("3F3F3F3F").is_err());
        assert!(KeyPrefix::parse("3f3f3f3").is_err());
    }

    #[test]
    fn a_key_lives_until_revoked_or_expired() {
        let now = Utc::now();
        assert!(key(None).is_live(now));
        assert!(key(Some(now + Duration::seconds(1))).is_live(now));
        assert!(!key(Some(now)).is_live(now));
        let revoked = ApiKey {
            revoked_at: Some(now),
            ..key(None)
        };
        assert!(!revoked.is_live(now));
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap_never_longer_than_it_had() {
        let now = Utc::now();
        let day = Duration::days(1);
        assert_eq!(key(None).rotation_deadline(now, day), Ok(now + day));
        let soon = now + Duration::hours(1);
        assert_eq!(key(Some(soon)).rotation_deadline(now, day), Ok(soon));
        assert_eq!(key(None).rotation_deadline(now, Duration::zero()), Ok(now));
        assert_eq!(
            key(None).rotation_deadline(now, Duration::days(8)),
            Err(KeyRefused::Overlap)
        );
        assert_eq!(
            key(None).rotation_deadline(now, Duration::seconds(-1)),
            Err(KeyRefused::Overlap)
        );
        let revoked = ApiKey {
            revoked_at: Some(now),
            ..key(None)
        };
        assert_eq!(
            revoked.rotation_deadline(now, day),
            Err(KeyRefused::Revoked)
        );
        let old = key(Some(soon));
        let next = old.successor();
        assert_eq!(
            (next.name, next.access, next.expires_at),
            (old.name, old.access, old.expires_at)
        );
    }

    #[test]
    fn uses_are_recorded_at_most_once_a_minute() {
        let now = Utc::now();
        assert!(key(None).use_worth_recording(now));
        let recent = ApiKey {
            last_used_at: Some(now - Duration::seconds(59)),
            ..key(None)
        };
        assert!(!recent.use_worth_recording(now));
        let older = ApiKey {
            last_used_at: Some(now - Duration::seconds(60)),
            ..key(None)
        };
        assert!(older.use_worth_recording(now));
    }

    #[test]
    fn an_expiry_must_be_in_the_future() {
        let now = Utc::now();
        let name = DisplayName::new("k").unwrap();
        let access = Access::Role(crate::Role::Viewer);
        assert_eq!(
            NewApiKey::new(name.clone(), access, Some(now), now),
            Err(KeyRefused::ExpiryPassed)
        );
        assert!(NewApiKey::new(name, access, Some(now + Duration::seconds(1)), now).is_ok());
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let token = ApiKeyToken::from_random(TenantId::new(), [0xab; SECRET_BYTES]);
        let shown = format!("{token:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
