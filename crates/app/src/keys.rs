//! API keys: authenticating every request, and the admin's key management
//! (issue, list, revoke, rotate).
//!
//! Verified keys are kept in process for [`KEY_FRESH`] (one second): that
//! saves a transaction per request, and bounds how long a revoked or
//! expired key keeps working on *any* instance without a message between
//! instances that could be lost. The instance that revokes forgets the key
//! at once.

use std::{sync::Arc, time::Instant};

use chrono::{Duration, Utc};
use leadline_domain::{
    ApiKey, ApiKeyId, ApiKeyToken, Caller, NewApiKey, Page, PageLimit, TenantId,
};
use leadline_ports::{ApiKeyRepository, AuthenticateError, KeyError, Rotated};
use rand::RngCore;

/// How long a verified key is trusted without asking the store again: the
/// most a revoked key keeps working on an instance that did not revoke it.
/// It costs one indexed read per key per second per instance.
pub const KEY_FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// How long past that a verified key is still accepted while the store is
/// unavailable (never past its expiry).
const KEY_STALE_IF_ERROR: std::time::Duration = std::time::Duration::from_secs(600);

/// A key just issued: its secret, shown once, and what is kept of it.
#[derive(Debug)]
pub struct IssuedKey {
    /// The key as listed.
    pub key: ApiKey,
    /// The bearer token, never stored.
    pub token: ApiKeyToken,
}

/// A new random token for `tenant`.
pub(crate) fn new_token(tenant: TenantId) -> ApiKeyToken {
    let mut secret = [0u8; 24];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut secret);
    ApiKeyToken::from_random(tenant, secret)
}

#[derive(Debug, Clone)]
struct VerifiedKey {
    caller: Caller,
    key: ApiKey,
    fresh_until: Instant,
}

/// API keys.
#[derive(Clone)]
pub struct KeyService {
    repo: Arc<dyn ApiKeyRepository>,
    /// Verified keys by hash. Only successes are kept.
    verified: moka::sync::Cache<[u8; 32], VerifiedKey>,
}

impl KeyService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn ApiKeyRepository>) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(KEY_FRESH + KEY_STALE_IF_ERROR)
            .build();
        Self { repo, verified }
    }

    /// Resolves a bearer token to its caller. A malformed token is refused
    /// without touching the store; an expired one like an unknown one.
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidKey`] and the store's failures.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AuthenticateError> {
        let token = ApiKeyToken::parse(bearer).map_err(|_| AuthenticateError::InvalidKey)?;
        let hash = token.hash();
        let known = self.verified.get(hash.as_bytes());
        if let Some(known) = &known
            && Instant::now() < known.fresh_until
        {
            return Ok(known.caller.clone());
        }
        match self.repo.authenticate(token.tenant_id(), hash).await {
            Ok((tenant, key)) => {
                let now = Utc::now();
                if !key.is_live(now) {
                    self.verified.invalidate(hash.as_bytes());
                    return Err(AuthenticateError::InvalidKey);
                }
                if key.use_worth_recording(now) {
                    self.record_use(&key, now);
                }
                let caller = Caller {
                    tenant,
                    key_id: key.id,
                    access: key.access,
                };
                self.verified.insert(
                    *hash.as_bytes(),
                    VerifiedKey {
                        caller: caller.clone(),
                        fresh_until: fresh_until(&key, now),
                        key,
                    },
                );
                Ok(caller)
            }
            Err(AuthenticateError::Unavailable(cause)) => match known {
                Some(known) if known.key.is_live(Utc::now()) => {
                    tracing::warn!(%cause, "store unavailable: accepting a recently verified API key");
                    Ok(known.caller)
                }
                _ => Err(AuthenticateError::Unavailable(cause)),
            },
            Err(other) => {
                self.verified.invalidate(hash.as_bytes());
                Err(other)
            }
        }
    }

    /// Records a use in the background: the request does not wait for a
    /// write, and a failure costs only a stale `last_used_at`.
    fn record_use(&self, key: &ApiKey, now: chrono::DateTime<Utc>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let repo = self.repo.clone();
        let (tenant, id) = (key.tenant_id, key.id);
        // Kept to the second: it is written at most once a minute anyway.
        let now = chrono::SubsecRound::trunc_subsecs(now, 0);
        runtime.spawn(async move {
            if let Err(e) = repo.record_use(tenant, id, now).await {
                tracing::debug!(error = %e, key = %id, "could not record an API key's use");
            }
        });
    }

    /// Issues a key; its secret is in the answer and nowhere else.
    ///
    /// # Errors
    /// [`KeyError::NotFound`] for a missing tenant, and the store's failures.
    pub async fn issue(&self, tenant: TenantId, key: &NewApiKey) -> Result<IssuedKey, KeyError> {
        let token = new_token(tenant);
        let key = self.repo.issue(tenant, key, &token.material()).await?;
        Ok(IssuedKey { key, token })
    }

    /// Reads a key.
    ///
    /// # Errors
    /// [`KeyError::NotFound`] and the store's failures.
    pub async fn get(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        self.repo.get(tenant, id).await
    }

    /// A page of the tenant's keys, oldest first, revoked ones included.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<ApiKeyId>,
    ) -> Result<Page<ApiKey>, KeyError> {
        self.repo.list(tenant, limit, after).await
    }

    /// Revokes a key. This instance stops accepting it at once; every other
    /// within [`KEY_FRESH`].
    ///
    /// # Errors
    /// [`KeyError::NotFound`] and the store's failures.
    pub async fn revoke(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        let key = self.repo.revoke(tenant, id).await?;
        self.forget(tenant, id);
        Ok(key)
    }

    /// Issues a successor to key `id` (same name, access and expiry) and
    /// lets `id` work for `overlap` more, so that clients can move to the
    /// new key without a moment in which neither works.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::Refused`] (a revoked or expired
    /// key, an overlap outside 0 to 7 days) and the store's failures.
    pub async fn rotate(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        overlap: Duration,
    ) -> Result<(Rotated, ApiKeyToken), KeyError> {
        let token = new_token(tenant);
        let rotated = self
            .repo
            .rotate(tenant, id, overlap, &token.material())
            .await?;
        // Its expiry moved: read it again on its next use.
        self.forget(tenant, id);
        Ok((rotated, token))
    }

    /// Drops key `id` of `tenant` from this instance's verified keys.
    fn forget(&self, tenant: TenantId, id: ApiKeyId) {
        let stale: Vec<[u8; 32]> = self
            .verified
            .iter()
            .filter(|(_, v)| v.caller.tenant.id == tenant && v.key.id == id)
            .map(|(hash, _)| *hash)
            .collect();
        for hash in stale {
            self.verified.invalidate(&hash);
        }
    }
}

/// Until when `key`, verified at `now`, is trusted without asking again:
/// [`KEY_FRESH`], or less when it expires sooner.
fn fresh_until(key: &ApiKey, now: chrono::DateTime<Utc>) -> Instant {
    let fresh = key
        .expires_at
        .and_then(|at| (at - now).to_std().ok())
        .map_or(KEY_FRESH, |left| left.min(KEY_FRESH));
    Instant::now() + fresh
}
