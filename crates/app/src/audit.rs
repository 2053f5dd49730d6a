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
        self.seal_while(|| true).await
    }

    /// Seals batch after batch until none is full or `go_on` says stop
    /// (asked after each full batch); returns how many.
    async fn seal_while(&self, go_on: impl FnMut() -> bool) -> Result<u64, AuditError> {
        crate::stopping::drain(u64::from(SEAL_BATCH), || self.trail.seal(SEAL_BATCH), go_on).await
    }

    /// Seals every `every` until `shutdown` completes.
    pub async fn run_sealer(
        self,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        loop {
            // A stop waits for one batch at most, not for the whole backlog.
            let mut stopped = false;
            let sealed = self
                .seal_while(|| {
                    stopped = crate::stopping::requested(shutdown.as_mut());
                    !stopped
                })
                .await;
            if let Err(e) = sealed {
                tracing::warn!(error = %e, "audit: sealing failed; trying again later");
            }
            if stopped {
                return;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use leadline_ports::MockAuditTrail;

    use super::{AuditService, Duration, SEAL_BATCH};

    /// A trail with `batches` full batches waiting to be sealed, and how
    /// many times `seal` was called.
    fn backlog(batches: u64) -> (AuditService, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let count = calls.clone();
        let mut trail = MockAuditTrail::new();
        trail.expect_seal().returning(move |max| {
            let call = count.fetch_add(1, Ordering::SeqCst);
            Ok(if call < batches { u64::from(max) } else { 0 })
        });
        (AuditService::new(Arc::new(trail)), calls)
    }

    #[tokio::test]
    async fn seal_all_drains_the_whole_backlog() {
        let (audit, calls) = backlog(100);
        let sealed = audit.seal_all().await.expect("sealed");
        assert_eq!(sealed, 100 * u64::from(SEAL_BATCH));
        assert_eq!(calls.load(Ordering::SeqCst), 101);
    }

    #[tokio::test]
    async fn a_stop_waits_for_one_batch_not_the_backlog() {
        let (audit, calls) = backlog(100);
        // Requested before the sealer starts. An `async` block panics if
        // polled after completing, so this also proves the sealer returns
        // the moment it sees the stop.
        tokio::time::timeout(
            Duration::from_secs(10),
            audit.run_sealer(Duration::from_secs(1), async {}),
        )
        .await
        .expect("the sealer stops");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
