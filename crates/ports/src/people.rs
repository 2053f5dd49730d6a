//! The people ports: users, their console sessions, one-time login links
//! and the record of sign-in attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{
    Email, NewUser, Page, PageLimit, PasswordHash, Session, TenantId, UpdateUserRequest, User,
    UserId,
};

use crate::errors::Unavailable;

/// Failure of a people operation; see the crate docs for when each
/// variant is returned.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    /// No such user in this tenant.
    #[error("user not found")]
    NotFound,
    /// Another user of the tenant has this email.
    #[error("a user with this email already exists")]
    DuplicateEmail,
    /// The agent to link is not in this tenant.
    #[error("agent not found")]
    AgentNotFound,
    /// The user changed since the caller read it.
    #[error("the user is at version {current}")]
    Conflict {
        /// The version now stored.
        current: i64,
    },
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Recent failed sign-ins, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentFailures {
    /// Of the account (the email asked for).
    pub account: Vec<DateTime<Utc>>,
    /// From the address.
    pub address: Vec<DateTime<Utc>>,
}

/// A tenant's users.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user without a password.
    ///
    /// # Errors
    /// [`PeopleError::DuplicateEmail`], [`PeopleError::AgentNotFound`].
    async fn create(&self, tenant: TenantId, user: &NewUser) -> Result<User, PeopleError>;

    /// Reads a user.
    ///
    /// # Errors
    /// [`PeopleError::NotFound`].
    async fn get(&self, tenant: TenantId, id: UserId) -> Result<User, PeopleError>;

    /// The user signing in as `email`, with the stored password hash.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn credentials(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<(User, Option<PasswordHash>)>, PeopleError>;

    /// The tenant's users, oldest first.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<UserId>,
    ) -> Result<Page<User>, PeopleError>;

    /// Changes a user's role or disables them, at `req.expected_version`
    /// (as [`User::apply`] decides).
    ///
    /// # Errors
    /// [`PeopleError::NotFound`], [`PeopleError::Conflict`].
    async fn update(
        &self,
        tenant: TenantId,
        id: UserId,
        req: &UpdateUserRequest,
    ) -> Result<User, PeopleError>;

    /// Sets a user's password hash.
    ///
    /// # Errors
    /// [`PeopleError::NotFound`].
    async fn set_password(
        &self,
        tenant: TenantId,
        id: UserId,
        hash: &PasswordHash,
    ) -> Result<(), PeopleError>;

    /// Stores a one-time login link for `user`, by the hash of its token;
    /// the user's earlier unused links stop working.
    ///
    /// # Errors
    /// [`PeopleError::NotFound`] for a missing user.
    async fn add_login_link(
        &self,
        tenant: TenantId,
        user: UserId,
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<(), PeopleError>;

    /// Uses a login link, once: the user it was for, if it exists, is
    /// unused and has not expired by `now`. A second use finds nothing, and
    /// the user's other unused links stop working too.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn use_login_link(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, PeopleError>;

    /// Records a sign-in attempt (kept for the lockout and for audit).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn record_attempt(
        &self,
        tenant: TenantId,
        email: &str,
        address: &str,
        succeeded: bool,
    ) -> Result<(), PeopleError>;

    /// Failed attempts since `since` for `email` and from `address`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn recent_failures(
        &self,
        tenant: TenantId,
        email: &str,
        address: &str,
        since: DateTime<Utc>,
    ) -> Result<RecentFailures, PeopleError>;
}

/// Where console sessions are kept, by the hash of their cookie's token.
///
/// `keep_until` is when the session stops being live unless it is used
/// again ([`Session::live_until`]): a store that expires entries by itself
/// (Redis) may forget it then; one that does not (the database) keeps it
/// for the service to refuse and end.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn create(
        &self,
        token_hash: [u8; 32],
        session: &Session,
        keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError>;

    /// The session, if it exists (live or not: the caller applies the
    /// policy, and reads its user).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn get(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
    ) -> Result<Option<Session>, PeopleError>;

    /// Records a request at `at`; a session no longer stored stays gone.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn touch(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
        at: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError>;

    /// Ends one session.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn end(&self, tenant: TenantId, token_hash: [u8; 32]) -> Result<(), PeopleError>;

    /// Ends every session of a user; returns how many.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn end_all(&self, tenant: TenantId, user: UserId) -> Result<u64, PeopleError>;
}
