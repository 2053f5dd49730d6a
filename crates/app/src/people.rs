//! People: inviting users, signing them in to the console and keeping
//! their sessions.
//!
//! - A user is invited with a one-time login link (`leadline users
//!   invite`); following it, the person chooses a password and is signed
//!   in. The user acts as the agent with the same email (made if the
//!   tenant has none), so drafts and decisions made in the console are
//!   recorded as that agent's.
//! - Passwords are argon2id; hashing and checking run on the blocking pool,
//!   never on the runtime's workers. An unknown email is checked against a
//!   dummy hash, so the answer takes as long as for a real account.
//! - Sign-in is refused for a while after too many failures of one account
//!   or from one address ([`LockoutPolicy`]); every attempt is recorded.
//! - Sessions are server-side: the cookie carries a random token, the
//!   store keeps its hash, the CSRF token, and the idle and absolute
//!   deadlines ([`SessionPolicy`]).

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentRole, CreateAgentRequest, DisplayName, Email, LOGIN_LINK_LIFETIME, Lockout, LockoutPolicy,
    NewUser, Password, PasswordHash, Role, SecretToken, Session, SessionPolicy, Slug, TenantId,
    User, UserId,
};
use leadline_ports::{
    AgentRepository, CreateAgentError, PeopleError, SessionStore, TenantRepository, UserRepository,
};
use rand::RngCore;

/// A user just invited, and the link that lets them in once.
#[derive(Debug)]
pub struct Invited {
    /// The user.
    pub user: User,
    /// The login link's token (shown once).
    pub link: SecretToken,
}

/// A person just signed in.
#[derive(Debug)]
pub struct SignedIn {
    /// Who.
    pub user: User,
    /// The session.
    pub session: Session,
    /// The cookie's value (shown once, to the browser).
    pub token: SecretToken,
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Unknown workspace or email, wrong password, disabled user, or a
    /// login link that is unknown, used or expired: deliberately one answer.
    #[error("wrong workspace, email or password")]
    Invalid,
    /// Too many failures lately.
    #[error("too many failed sign-ins")]
    LockedOut(Lockout),
    /// Too many attempts from this address just now, whatever their
    /// outcome.
    #[error("too many sign-in attempts from this address")]
    Throttled {
        /// Seconds until one more is allowed.
        retry_after_secs: u64,
    },
    /// The new password is not acceptable.
    #[error(transparent)]
    Password(#[from] leadline_domain::PasswordRefused),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] PeopleError),
}

/// Why an invitation failed.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// Another user of the tenant has this email.
    #[error("a user with this email already exists")]
    DuplicateEmail,
    /// The store failed.
    #[error(transparent)]
    Store(PeopleError),
    /// The agent could not be found or made.
    #[error("the user's agent: {0}")]
    Agent(String),
}

impl From<PeopleError> for InviteError {
    fn from(e: PeopleError) -> Self {
        match e {
            PeopleError::DuplicateEmail => Self::DuplicateEmail,
            other => Self::Store(other),
        }
    }
}

/// A hash to check unknown emails against, so that their answer takes as
/// long as a real account's.
static DUMMY_HASH: LazyLock<Option<PasswordHash>> = LazyLock::new(|| {
    Password::new("not a password of anyone's")
        .ok()
        .and_then(|p| p.hash([0; 16]).ok())
});

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Users and their sessions.
#[derive(Clone)]
pub struct PeopleService {
    users: Arc<dyn UserRepository>,
    sessions: Arc<dyn SessionStore>,
    agents: Arc<dyn AgentRepository>,
    tenants: Arc<dyn TenantRepository>,
    session_policy: SessionPolicy,
    lockout: LockoutPolicy,
    guard: Arc<SignInGuard>,
}

/// How many sign-in attempts one address gets: a few a minute, in bursts
/// of ten, whatever their outcome or workspace. Per instance.
const ADDRESS_ATTEMPTS_PER_MINUTE: f64 = 10.0;
const ADDRESS_ATTEMPTS_BURST: u32 = 10;
/// Password hashes computed at once: each takes 19 MiB and a core for
/// tens of milliseconds, so a flood waits its turn instead of exhausting
/// memory and the blocking pool.
const CONCURRENT_HASHES: usize = 4;

/// This instance's defences around sign-in, in front of the store.
struct SignInGuard {
    /// Per address: the GCRA state of its attempts.
    addresses: moka::sync::Cache<String, f64>,
    /// Per account (workspace and email): a lock, so its attempts take
    /// turns.
    accounts: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    /// Failures for workspaces that do not exist, by workspace and email.
    unknown: moka::sync::Cache<String, Vec<DateTime<Utc>>>,
    hashing: Arc<tokio::sync::Semaphore>,
    epoch: std::time::Instant,
}

impl SignInGuard {
    fn new() -> Self {
        let window = std::time::Duration::from_secs(15 * 60);
        Self {
            addresses: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(120))
                .build(),
            accounts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(60))
                .build(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            hashing: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HASHES)),
            epoch: std::time::Instant::now(),
        }
    }

    fn throttle(&self, address: &str) -> Result<(), SignInError> {
        let Ok(limit) = leadline_domain::RateLimit::new(
            ADDRESS_ATTEMPTS_PER_MINUTE / 60.0,
            ADDRESS_ATTEMPTS_BURST,
        ) else {
            return Ok(());
        };
        let now = self.epoch.elapsed().as_secs_f64() * 1000.0;
        let entry = self
            .addresses
            .entry(address.to_owned())
            .and_compute_with(|current| {
                let decision = limit.decide(current.map(|e| *e.value()), now);
                if decision.allowed {
                    moka::ops::compute::Op::Put(decision.tat_ms)
                } else {
                    moka::ops::compute::Op::Nop
                }
            });
        match entry {
            moka::ops::compute::CompResult::Inserted(_)
            | moka::ops::compute::CompResult::ReplacedWith(_) => Ok(()),
            _ => {
                let tat = self.addresses.get(address).unwrap_or(now);
                let decision = limit.decide(Some(tat), now);
                Err(SignInError::Throttled {
                    retry_after_secs: decision.retry_after_secs(),
                })
            }
        }
    }

    fn account(&self, workspace: &str, email: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.accounts
            .get_with(format!("{workspace}\u{0}{email}"), Arc::default)
    }

    fn unknown_lockout(
        &self,
        policy: &LockoutPolicy,
        workspace: &str,
        email: &str,
        now: DateTime<Utc>,
    ) -> Option<Lockout> {
        let failures = self
            .unknown
            .get(&format!("{workspace}\u{0}{email}"))
            .unwrap_or_default();
        policy.lockout(&failures, &[], now)
    }

    fn unknown_failed(&self, workspace: &str, email: &str, now: DateTime<Utc>) {
        let key = format!("{workspace}\u{0}{email}");
        let mut failures = self.unknown.get(&key).unwrap_or_default();
        failures.push(now);
        self.unknown.insert(key, failures);
    }

    /// Checks `password` against `hash` (or the dummy hash, for no
    /// account) on the blocking pool, a few at a time. False without a
    /// hash.
    async fn check_password(&self, hash: Option<PasswordHash>, password: &str) -> bool {
        let real = hash.is_some();
        let Some(hash) = hash.or_else(|| DUMMY_HASH.clone()) else {
            return false;
        };
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let attempt = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || hash.verify(&attempt))
            .await
            .unwrap_or(false);
        real && verified
    }
}

impl PeopleService {
    /// Wraps the ports, with the default policies.
    #[must_use]
    pub fn new(
        users: Arc<dyn UserRepository>,
        sessions: Arc<dyn SessionStore>,
        agents: Arc<dyn AgentRepository>,
        tenants: Arc<dyn TenantRepository>,
    ) -> Self {
        Self {
            users,
            sessions,
            agents,
            tenants,
            session_policy: SessionPolicy::default(),
            lockout: LockoutPolicy::default(),
            guard: Arc::new(SignInGuard::new()),
        }
    }

    /// The same, with these policies.
    #[must_use]
    pub fn with_policies(mut self, session: SessionPolicy, lockout: LockoutPolicy) -> Self {
        self.session_policy = session;
        self.lockout = lockout;
        self
    }

    /// The same, keeping sessions in `sessions` (Redis, when configured)
    /// instead of the store they were built over.
    #[must_use]
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = sessions;
        self
    }

    /// The session policy in force.
    #[must_use]
    pub fn session_policy(&self) -> SessionPolicy {
        self.session_policy
    }

    /// Creates a user acting as the agent with the same email (made if the
    /// tenant has none), and a login link for them.
    ///
    /// # Errors
    /// [`InviteError::DuplicateEmail`] and the store's failures.
    pub async fn invite(
        &self,
        tenant: TenantId,
        email: Email,
        name: DisplayName,
        role: Role,
    ) -> Result<Invited, InviteError> {
        let agent = self.agent_for(tenant, &email, &name).await?;
        let user = self
            .users
            .create(
                tenant,
                &NewUser {
                    email,
                    name,
                    role,
                    agent_id: Some(agent),
                },
            )
            .await?;
        let link = self.issue_link(tenant, user.id).await?;
        Ok(Invited { user, link })
    }

    async fn agent_for(
        &self,
        tenant: TenantId,
        email: &Email,
        name: &DisplayName,
    ) -> Result<leadline_domain::AgentId, InviteError> {
        let found = self
            .agents
            .find_by_email(tenant, email)
            .await
            .map_err(|e| InviteError::Agent(e.to_string()))?;
        if let Some(agent) = found {
            return Ok(agent.id);
        }
        let request = CreateAgentRequest {
            name: name.clone(),
            email: email.clone(),
            role: AgentRole::Agent,
        };
        match self.agents.create(tenant, &request).await {
            Ok(agent) => Ok(agent.id),
            // Made meanwhile by someone else: use that one.
            Err(CreateAgentError::DuplicateEmail) => self
                .agents
                .find_by_email(tenant, email)
                .await
                .map_err(|e| InviteError::Agent(e.to_string()))?
                .map(|a| a.id)
                .ok_or_else(|| InviteError::Agent("vanished while being made".into())),
            Err(e) => Err(InviteError::Agent(e.to_string())),
        }
    }

    /// A new one-time login link for a user (to reset a password too).
    ///
    /// # Errors
    /// [`PeopleError::NotFound`] and the store's failures.
    pub async fn issue_link(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<SecretToken, PeopleError> {
        let link = SecretToken::from_random(SecretToken::LOGIN_LINK, tenant, random());
        self.users
            .add_login_link(tenant, user, link.hash(), Utc::now() + LOGIN_LINK_LIFETIME)
            .await?;
        Ok(link)
    }

    /// The tenant's users.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn list(
        &self,
        tenant: TenantId,
        limit: leadline_domain::PageLimit,
        after: Option<UserId>,
    ) -> Result<leadline_domain::Page<User>, PeopleError> {
        self.users.list(tenant, limit, after).await
    }

    /// A user.
    ///
    /// # Errors
    /// [`PeopleError::NotFound`] and the store's failures.
    pub async fn get(&self, tenant: TenantId, id: UserId) -> Result<User, PeopleError> {
        self.users.get(tenant, id).await
    }

    /// Changes a user's role, or disables them; disabling ends every
    /// session they have.
    ///
    /// # Errors
    /// [`PeopleError::NotFound`], [`PeopleError::Conflict`] and the store's
    /// failures.
    pub async fn update(
        &self,
        tenant: TenantId,
        id: UserId,
        req: &leadline_domain::UpdateUserRequest,
    ) -> Result<User, PeopleError> {
        let user = self.users.update(tenant, id, req).await?;
        if user.disabled_at.is_some() {
            // The disabling is committed, and a disabled user's session is
            // refused when next presented whether or not it was ended
            // ([`Self::session`] reads the user): a session store that
            // does not answer now only delays the clean-up.
            if let Err(e) = self.sessions.end_all(tenant, id).await {
                tracing::warn!(error = %e, user = %id, "user disabled; their sessions are refused but could not be removed now");
            }
        }
        Ok(user)
    }

    /// A user by email, for commands that name one.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn find(&self, tenant: TenantId, email: &Email) -> Result<Option<User>, PeopleError> {
        Ok(self.users.credentials(tenant, email).await?.map(|(u, _)| u))
    }

    /// Signs in with a password, from `address`.
    ///
    /// # Errors
    /// [`SignInError::Invalid`] for anything wrong with the credentials,
    /// [`SignInError::LockedOut`] after too many failures, and the store's
    /// failures.
    pub async fn sign_in(
        &self,
        workspace: &str,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<SignedIn, SignInError> {
        // Before anything costs a store call or a hash: each address gets a
        // few attempts a minute, whatever the workspace (known or not).
        self.guard.throttle(address)?;
        let workspace = workspace.trim().to_lowercase();
        // Failures count per account as the store spells it, so that case
        // and spaces do not make a fresh account.
        let email_key =
            Email::parse(email).map_or_else(|_| email.trim().to_lowercase(), |e| e.to_string());
        // One attempt at a time per account (on this instance): the count,
        // the check and the record below cannot be raced by parallel
        // guesses.
        let account = self.guard.account(&workspace, &email_key);
        let _turn = account.lock().await;
        let now = Utc::now();
        let Some(tenant) = self.workspace(&workspace).await? else {
            // No tenant to record the attempt in: counted here, so that an
            // unknown workspace locks out like a known one and the two
            // cannot be told apart.
            if let Some(lockout) =
                self.guard
                    .unknown_lockout(&self.lockout, &workspace, &email_key, now)
            {
                return Err(SignInError::LockedOut(lockout));
            }
            self.guard.check_password(None, password).await;
            self.guard.unknown_failed(&workspace, &email_key, now);
            return Err(SignInError::Invalid);
        };
        let failures = self
            .users
            .recent_failures(tenant, &email_key, address, now - self.lockout.window)
            .await?;
        if let Some(lockout) = self
            .lockout
            .lockout(&failures.account, &failures.address, now)
        {
            tracing::warn!(%tenant, address, "sign-in refused: locked out");
            return Err(SignInError::LockedOut(lockout));
        }
        let credentials = match Email::parse(email) {
            Ok(email) => self.users.credentials(tenant, &email).await?,
            Err(_) => None,
        };
        let (user, hash) = match credentials {
            Some((user, hash)) if user.disabled_at.is_none() => (Some(user), hash),
            _ => (None, None),
        };
        let matches = self.guard.check_password(hash, password).await;
        let user = user.filter(|_| matches);
        self.users
            .record_attempt(tenant, &email_key, address, user.is_some())
            .await?;
        match user {
            Some(user) => Ok(self.begin(user).await?),
            None => {
                tracing::info!(%tenant, address, "sign-in failed");
                Err(SignInError::Invalid)
            }
        }
    }

    /// Follows a login link: sets the password and signs in. The link
    /// works once.
    ///
    /// # Errors
    /// [`SignInError::Password`] for an unacceptable password (the link is
    /// not used up), [`SignInError::Invalid`] for an unknown, used or
    /// expired link, and the store's failures.
    pub async fn redeem_link(&self, link: &str, password: &str) -> Result<SignedIn, SignInError> {
        let password = Password::new(password)?;
        let token =
            SecretToken::parse(SecretToken::LOGIN_LINK, link).map_err(|_| SignInError::Invalid)?;
        let tenant = token.tenant_id();
        // The session store must answer before a one-time link is used up:
        // a link spent on a sign-in that then cannot begin is lost to its
        // holder. (A lookup of the link's own hash finds no session.)
        self.sessions.get(tenant, token.hash()).await?;
        let Some(user) = self
            .users
            .use_login_link(tenant, token.hash(), Utc::now())
            .await?
        else {
            return Err(SignInError::Invalid);
        };
        if user.disabled_at.is_some() {
            return Err(SignInError::Invalid);
        }
        let hash = tokio::task::spawn_blocking(move || password.hash(random()))
            .await
            .map_err(|e| PeopleError::Unknown(anyhow::anyhow!("hashing stopped: {e}")))?
            .map_err(|e| PeopleError::Unknown(anyhow::anyhow!("hashing failed: {e}")))?;
        self.users.set_password(tenant, user.id, &hash).await?;
        // A new password ends every session the old one (or a thief
        // holding one) had.
        self.sessions.end_all(tenant, user.id).await?;
        Ok(self.begin(user).await?)
    }

    /// Whether a login link is one that could be used (for showing the
    /// page that sets a password; using it is [`Self::redeem_link`]).
    #[must_use]
    pub fn link_looks_valid(link: &str) -> bool {
        SecretToken::parse(SecretToken::LOGIN_LINK, link).is_ok()
    }

    async fn begin(&self, user: User) -> Result<SignedIn, PeopleError> {
        let token = SecretToken::from_random(SecretToken::SESSION, user.tenant_id, random());
        let session = Session::begin(
            user.tenant_id,
            user.id,
            random(),
            self.session_policy,
            Utc::now(),
        );
        self.sessions
            .create(
                token.hash(),
                &session,
                session.live_until(self.session_policy),
            )
            .await?;
        Ok(SignedIn {
            user,
            session,
            token,
        })
    }

    /// The live session a cookie names, and its user; records the request
    /// (at most once a minute). `None` for anything that does not sign in:
    /// malformed, unknown, expired, idle too long, or a disabled user.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn session(&self, cookie: &str) -> Result<Option<(Session, User)>, PeopleError> {
        let Ok(token) = SecretToken::parse(SecretToken::SESSION, cookie) else {
            return Ok(None);
        };
        let tenant = token.tenant_id();
        let Some(mut session) = self.sessions.get(tenant, token.hash()).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        let user = if session.is_live(self.session_policy, now) {
            match self.users.get(tenant, session.user_id).await {
                Ok(user) => Some(user).filter(|u| u.disabled_at.is_none()),
                Err(PeopleError::NotFound) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let Some(user) = user else {
            self.sessions.end(tenant, token.hash()).await?;
            return Ok(None);
        };
        if session.needs_touch(now) {
            session.last_seen_at = now;
            self.sessions
                .touch(
                    tenant,
                    token.hash(),
                    now,
                    session.live_until(self.session_policy),
                )
                .await?;
        }
        Ok(Some((session, user)))
    }

    /// Ends the session a cookie names.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn sign_out(&self, cookie: &str) -> Result<(), PeopleError> {
        if let Ok(token) = SecretToken::parse(SecretToken::SESSION, cookie) {
            self.sessions.end(token.tenant_id(), token.hash()).await?;
        }
        Ok(())
    }

    /// Ends every session of a user, on every device.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn sign_out_everywhere(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<u64, PeopleError> {
        self.sessions.end_all(tenant, user).await
    }

    async fn workspace(&self, slug: &str) -> Result<Option<TenantId>, PeopleError> {
        let Ok(slug) = Slug::parse(slug.trim()) else {
            return Ok(None);
        };
        match self.tenants.find_by_slug(&slug).await {
            Ok(tenant) => Ok(tenant.map(|t| t.id)),
            Err(leadline_ports::GetTenantError::Unavailable(u)) => Err(PeopleError::Unavailable(u)),
            Err(e) => Err(PeopleError::Unknown(anyhow::anyhow!("{e}"))),
        }
    }
}

/// When a lockout ends.
#[must_use]
pub fn lockout_ends(lockout: Lockout) -> DateTime<Utc> {
    match lockout {
        Lockout::Account { until } | Lockout::Address { until } => until,
    }
}
