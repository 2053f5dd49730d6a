//! The idempotency key a request runs under, handed to the store without
//! threading it through every port method.
//!
//! The HTTP adapter runs a request that carries an `Idempotency-Key` inside
//! [`IdempotentRequest::scope`]. A store that writes on that request records
//! the id of what it wrote on the key's row **in the same transaction** as
//! the write ([`IdempotentRequest::current`]), so whether the effect
//! happened is never in doubt: after a COMMIT whose reply was lost, the row
//! says so if and only if the write committed. A retry then runs in a scope
//! whose [`IdempotentRequest::recover`] names that effect, and the store
//! returns it as it stands instead of writing again.
//!
//! A task-local rather than a parameter: every write port would otherwise
//! take an argument that only this one protocol reads, and an adapter that
//! forgets it would compile.

use leadline_domain::{IdempotencyKey, TenantId};

/// A request running under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// The tenant the key belongs to.
    pub tenant: TenantId,
    /// The key.
    pub key: IdempotencyKey,
    /// The effect an earlier attempt committed (the id of the entity it
    /// wrote) when this run recovers its lost response.
    pub recover: Option<uuid::Uuid>,
}

tokio::task_local! {
    static CURRENT: IdempotentRequest;
}

impl IdempotentRequest {
    /// Runs `work` as this request: [`Self::current`] returns it within.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The request the calling task runs under, if any.
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The effect to recover, when the calling task recovers one for
    /// `tenant`.
    #[must_use]
    pub fn recovering(tenant: TenantId) -> Option<uuid::Uuid> {
        CURRENT
            .try_with(|r| r.recover.filter(|_| r.tenant == tenant))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_is_seen_inside_and_only_there() {
        assert_eq!(IdempotentRequest::current(), None);
        let tenant = TenantId::new();
        let effect = uuid::Uuid::now_v7();
        let request = IdempotentRequest {
            tenant,
            key: IdempotencyKey::new("k-1").expect("valid key"),
            recover: Some(effect),
        };
        let seen = request
            .clone()
            .scope(async {
                (
                    IdempotentRequest::current(),
                    IdempotentRequest::recovering(tenant),
                    IdempotentRequest::recovering(TenantId::new()),
                )
            })
            .await;
        assert_eq!(seen, (Some(request), Some(effect), None));
        assert_eq!(IdempotentRequest::current(), None);
    }
}
