//! The audit trail's use cases: reading it, verifying each tenant's hash
//! chain, and sealing new records into it in the background.

use std::{sync::Arc, time::Duration};

use leadline_domain::{
    Anchor, AuditEntry, AuditQuery, ChainBreak, ChainState, ChangePosition, Page, TenantId,
};
use leadline_ports::{AuditError, AuditTrail};

/// Records sealed per call.
const SEAL_BATCH: u32 = 5_000;
/// Records read per step of a verification.
const VERIFY_BATCH: u32 = 5_000;

/// The audit trail.
#[derive(Clone)]
pub struct AuditService {
    trail: Arc<dyn AuditTrail>,
}

/// What verifying one tenant's trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every sealed record is as written and chained in order.
    Intact(ChainState),
    /// The first record that is not.
    Broken(ChainBreak),
    /// Every record chains, but the record an earlier verification ended
    /// at is gone or changed: records were deleted from the end, or the
    /// chain was rewritten from before it.
    Truncated {
        /// What the earlier verification left.
        anchor: Anchor,
        /// The chain as it stands.
        state: ChainState,
    },
}

impl AuditService {
    /// The service over `trail`.
    #[must_use]
    pub fn new(trail: Arc<dyn AuditTrail>) -> Self {
        Self { trail }
    }

    /// A page of `tenant`'s trail, newest first.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn list(
        &self,
        tenant: TenantId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEntry>, AuditError> {
        self.trail.list(tenant, query).await
    }

    /// Seals what is ready, then walks `tenant`'s whole trail in chain
    /// order, checking every record, and that the record `anchor` (where
    /// an earlier verification ended) is still there, unchanged.
    ///
    /// # Errors
    /// The store's failures (a broken chain is a [`Verdict`], not an error).
    pub async fn verify(
        &self,
        tenant: TenantId,
        anchor: Option<&Anchor>,
    ) -> Result<Verdict, AuditError> {
        self.seal_all().await?;
        let mut state = ChainState::start();
        let mut after = ChangePosition::default();
        let mut anchored = anchor.is_none();
        loop {
            let batch = self.trail.chain(tenant, after, VERIFY_BATCH).await?;
            for entry in &batch {
                if let Err(broken) = state.check(entry) {
                    return Ok(Verdict::Broken(broken));
                }
                anchored |= anchor.is_some_and(|a| a.holds(entry));
            }
            match batch.last() {
                Some(last) if batch.len() == VERIFY_BATCH as usize => after = last.position,
                _ => break,
            }
        }
        Ok(match anchor {
            Some(anchor) if !anchored => Verdict::Truncated {
                anchor: anchor.clone(),
                state,
            },
            _ => Verdict::Intact(state),
        })
    }

    /// Up to `limit` of `tenant`'s records after `after`, in chain order.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn chain(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        self.trail.chain(tenant, after, limit).await
    }

    /// Every tenant, to verify them all.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn tenants(&self) -> Result<Vec<TenantId>, AuditError> {
        self.trail.tenants().await
    }

    /// Seals every record that is ready; returns how many.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn seal_all(&self) -> Result<u64, AuditError> {
        let mut total = 0;
        loop {
            let n = self.trail.seal(SEAL_BATCH).await?;
            total += n;
            if n < u64::from(SEAL_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Seals every `every` until `shutdown` completes.
    pub async fn run_sealer(
        self,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.seal_all().await {
                tracing::warn!(error = %e, "audit: sealing failed; trying again later");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
