//! The import port: runs of a file into a tenant, committed batch by batch
//! so that a killed import resumes exactly where it stopped.

use async_trait::async_trait;
use leadline_domain::{
    ImportId, TenantId,
    import::{ImportBatch, ImportRun, ImportStatus, OnDuplicate, RejectedRow},
};

use crate::errors::Unavailable;

/// Failure of an import operation; see the crate docs for when each variant
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No such run in this tenant.
    #[error("import not found")]
    NotFound,
    /// The run is not where the batch expected it (another process is
    /// importing the same file): nothing of the batch was written.
    #[error("the import moved on to line {committed_line} meanwhile")]
    Moved {
        /// Where it stands now.
        committed_line: u64,
    },
    /// An owner named by a row is no agent of this tenant, or an inactive
    /// one (checked again when the batch is written).
    #[error("an assigned agent is missing or inactive")]
    AgentUnavailable,
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Import runs and their rejected rows.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ImportRepository: Send + Sync {
    /// The run of this file (same content hash and duplicate policy), or a
    /// new one at line 0: importing a file again continues its run.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn start(
        &self,
        tenant: TenantId,
        file_sha256: &str,
        source_name: &str,
        headers: &[String],
        on_duplicate: OnDuplicate,
    ) -> Result<ImportRun, ImportError>;

    /// Writes a batch in one transaction: its leads, its rejected rows and
    /// the run's counts and position, only if the run is at
    /// `batch.from_line` when the batch is done. Moving the run is the
    /// batch's last write, so a caller may write the next batch (from this
    /// one's `to_line`, with none of its emails) while this one is written,
    /// up to [`ImportRepository::concurrent_batches`]: the next one's move
    /// waits for this one's, and fails with `Moved` if this one did not
    /// commit or had not yet moved the run.
    ///
    /// # Errors
    /// [`ImportError::NotFound`], [`ImportError::Moved`] (nothing written),
    /// [`ImportError::AgentUnavailable`] (nothing written).
    async fn commit(
        &self,
        tenant: TenantId,
        run: ImportId,
        batch: &ImportBatch,
    ) -> Result<ImportRun, ImportError>;

    /// How many batches of one run are worth writing at once: 1 where
    /// writes queue for one writer anyway.
    fn concurrent_batches(&self) -> usize {
        1
    }

    /// Marks the run done or failed.
    ///
    /// # Errors
    /// [`ImportError::NotFound`].
    async fn finish(
        &self,
        tenant: TenantId,
        run: ImportId,
        status: ImportStatus,
        failure: Option<String>,
    ) -> Result<ImportRun, ImportError>;

    /// Reads a run.
    ///
    /// # Errors
    /// [`ImportError::NotFound`], also for another tenant's run.
    async fn get(&self, tenant: TenantId, run: ImportId) -> Result<ImportRun, ImportError>;

    /// The run's rejected rows by line, after `after_line`, at most `limit`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown` (an unknown run has none).
    async fn rejects(
        &self,
        tenant: TenantId,
        run: ImportId,
        after_line: u64,
        limit: u32,
    ) -> Result<Vec<RejectedRow>, ImportError>;
}
