//! Group commit for SQLite: durable writes without an `fsync` inside the
//! writer's turn.
//!
//! With `PRAGMA synchronous = FULL`, every COMMIT waits for SQLite to
//! `fsync` the write-ahead log while it holds the one writer connection, so
//! writers queue for each other's disk flushes. `database.sqlite_synchronous
//! = full` (the default) instead runs the writer at `NORMAL` (a COMMIT
//! writes its frames to the log file and returns; the database stays
//! consistent on any crash) and holds each write's acknowledgement until an
//! `fdatasync` of the log file that *started after* the COMMIT returned has
//! finished: [`WalSync::durable`]. One flush covers every commit that came
//! before it, so commits of concurrent writers share it, as PostgreSQL's
//! commits share a WAL flush. A write is acknowledged only once it is on
//! the disk, as with `FULL`.
//!
//! Why the log file alone is enough: a commit's frames stay in the log
//! until a checkpoint copies them into the database file, and a checkpoint
//! at `NORMAL` flushes the log before copying and the database file after,
//! before the log is restarted. So a commit is durable once either flush
//! covered it. A missing log file (the last connection closed and SQLite
//! checkpointed and removed it) holds nothing unflushed.
//!
//! What differs from `FULL`:
//! - Another connection can read a commit before the flush that answers it
//!   has ended (for up to two flushes). A write that follows such a read is
//!   itself answered only after a later flush, which covers the commit it
//!   read; a read that leaves the system as a promise, the change log that
//!   the change feed and webhooks deliver, waits for a flush too
//!   ([`WalSync::durable`] after the read), so a consumer's cursor never
//!   passes a change that a power loss could take back.
//! - A failed flush is final. Linux marks the pages a failed `fsync` could
//!   not write as clean, so a later flush "succeeds" without them, and the
//!   log's chained checksums then end recovery at the gap. So after one
//!   failure every later write fails too, and `/readyz` says so, until the
//!   process restarts and SQLite recovers from what the disk holds.
//! - A flush that takes longer than `database.acquire_timeout_ms` answers its
//!   writes 503 without poisoning anything: it may still complete.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::counter;
use tokio::sync::watch;

/// How far the flushes have come, in commit numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flushed {
    /// Every commit numbered up to this one is on the disk.
    through: u64,
    /// A flush failed: nothing after [`Flushed::through`] is known to be
    /// on the disk, now or later.
    failed: bool,
}

/// Why a write was not acknowledged as durable.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FlushFailed {
    /// A flush of the log failed: writes since the last good flush may be
    /// lost on a power loss, and no later flush can prove otherwise.
    #[error(
        "flushing the SQLite write-ahead log failed ({0}); writes are refused until the service restarts"
    )]
    Failed(String),
    /// The flush did not end in time; it may still.
    #[error("the SQLite write-ahead log was not flushed within {0:?}")]
    TimedOut(Duration),
}

/// Flushes a file to the disk: `fdatasync`, as SQLite does for its log.
pub(crate) trait Flush: Send + Sync + 'static {
    /// # Errors
    /// The flush's I/O error.
    fn flush(&self) -> std::io::Result<()>;
}

/// The log of a SQLite database file, `<file>-wal`, kept open between
/// flushes: a write-back error is reported to the descriptors open when it
/// happened, so a descriptor opened for each flush could miss one.
#[derive(Debug)]
pub(crate) struct WalFile {
    wal: PathBuf,
    dir: PathBuf,
    /// The open log and its (device, inode), reopened if the file is
    /// replaced.
    open: Mutex<Option<(File, (u64, u64))>>,
    dir_flushed: AtomicBool,
}

impl WalFile {
    /// The log of the database at `db`, which SQLite names after the file
    /// a symbolic link leads to.
    pub(crate) fn of(db: &Path) -> Self {
        let db = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_owned());
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            wal: PathBuf::from(wal),
            dir,
            open: Mutex::new(None),
            dir_flushed: AtomicBool::new(false),
        }
    }
}

impl Flush for WalFile {
    fn flush(&self) -> std::io::Result<()> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| std::io::Error::other("a flush panicked"))?;
        let id = match std::fs::metadata(&self.wal) {
            Ok(m) => identity(&m),
            // Checkpointed into the database file and removed (the last
            // connection closed): nothing of it is unflushed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *open = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if open.as_ref().is_none_or(|(_, was)| *was != id) {
            *open = Some((File::open(&self.wal)?, id));
        }
        if let Some((file, _)) = open.as_ref() {
            file.sync_data()?;
        }
        // SQLite flushes the directory when it creates the log; once more
        // here costs nothing, and a file system that refuses to flush a
        // directory must not refuse every write.
        if !self.dir_flushed.swap(true, Ordering::AcqRel)
            && let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all())
        {
            tracing::debug!(error = %e, dir = %self.dir.display(), "flushing the log's directory");
        }
        Ok(())
    }
}

/// Which file a path names now: (device, inode) where there are such.
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (m.dev(), m.ino())
}

/// Elsewhere the log is taken to stay the same file while it exists.
#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl std::fmt::Debug for WalSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalSync")
            .field("committed", &self.committed.load(Ordering::Relaxed))
            .field("flushed", &*self.flushed.borrow())
            .finish_non_exhaustive()
    }
}

/// Group commit over one log file: see the module documentation.
pub(crate) struct WalSync {
    flush: Arc<dyn Flush>,
    /// How long a write waits for its flush.
    timeout: Duration,
    /// Commits that have returned, numbered from 1.
    committed: AtomicU64,
    /// Whether a flush is running.
    flushing: AtomicBool,
    flushed: watch::Sender<Flushed>,
}

impl WalSync {
    pub(crate) fn new(flush: Arc<dyn Flush>, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            flush,
            timeout,
            committed: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            flushed: watch::Sender::new(Flushed::default()),
        })
    }

    /// Returns once a flush that started after this call has ended: every
    /// commit that had returned before the call, and every commit the
    /// calling task had read, is then on the disk. Call it after a COMMIT
    /// returned, and after reading what is about to leave the system.
    ///
    /// Cancel-safe: a flush runs in a task of its own, so dropping this
    /// future (a client that went away) neither stops the flush nor leaves
    /// other writers waiting for it.
    ///
    /// # Errors
    /// [`FlushFailed`]: a flush failed (now or before: the failure is
    /// final), or none ended within the timeout.
    pub(crate) async fn durable(self: &Arc<Self>) -> Result<(), FlushFailed> {
        let mine = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let mut flushed = self.flushed.subscribe();
        let wait = async {
            loop {
                let now = *flushed.borrow_and_update();
                if now.failed {
                    return Err(FlushFailed::Failed(
                        "a flush since the last good one failed".to_owned(),
                    ));
                }
                if now.through >= mine {
                    return Ok(());
                }
                if !self.flushing.swap(true, Ordering::AcqRel) {
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.flush_once().await });
                }
                // Sent after every flush; the sender lives in `self`.
                if flushed.changed().await.is_err() {
                    return Err(FlushFailed::Failed("the store closed".to_owned()));
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or(Err(FlushFailed::TimedOut(self.timeout)))
    }

    /// Whether a flush has failed: writes are refused until a restart.
    pub(crate) fn failed(&self) -> bool {
        self.flushed.borrow().failed
    }

    /// One flush, covering every commit that returned before it started.
    async fn flush_once(self: Arc<Self>) {
        let target = self.committed.load(Ordering::Acquire);
        let flush = Arc::clone(&self.flush);
        let result = tokio::task::spawn_blocking(move || flush.flush())
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        counter!("db_wal_flushes_total").increment(1);
        // Cleared before the news goes out: a waiter the news does not
        // cover starts the next flush.
        self.flushing.store(false, Ordering::Release);
        self.flushed.send_modify(|f| match &result {
            Ok(()) if !f.failed => f.through = f.through.max(target),
            Ok(()) => {}
            Err(e) => {
                if !f.failed {
                    tracing::error!(
                        error = %e,
                        "flushing the SQLite write-ahead log failed: writes since the last \
                         flush may not survive a power loss; every write is refused until \
                         the service is restarted"
                    );
                    counter!("db_wal_flush_failures_total").increment(1);
                }
                f.failed = true;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any test waits.
    const LONG: Duration = Duration::from_secs(30);

    /// A flush that records, for the order test, which commits had returned
    /// when it started and when it ended.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(&'static str, u64)>>,
        returned: AtomicU64,
        fail: AtomicBool,
    }

    struct Recording(Arc<Recorder>);

    impl Flush for Recording {
        fn flush(&self) -> std::io::Result<()> {
            let r = &self.0;
            let at = r.returned.load(Ordering::SeqCst);
            r.log.lock().expect("log").push(("start", at));
            std::thread::sleep(std::time::Duration::from_millis(2));
            r.log.lock().expect("log").push(("end", at));
            if r.fail.load(Ordering::SeqCst) {
                Err(std::io::Error::other("EIO"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_share_flushes_and_each_waits_for_one_that_covers_it() {
        let recorder = Arc::new(Recorder::default());
        let sync = WalSync::new(Arc::new(Recording(Arc::clone(&recorder))), LONG);
        const WRITERS: u64 = 200;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (sync, recorder) = (Arc::clone(&sync), Arc::clone(&recorder));
                tokio::spawn(async move {
                    // "COMMIT returned": counted before durable() numbers it.
                    let mine = recorder.returned.fetch_add(1, Ordering::SeqCst) + 1;
                    sync.durable().await.expect("flushed");
                    // A flush that began once this commit had returned has
                    // ended: its record counts this commit among those
                    // returned when it started.
                    let log = recorder.log.lock().expect("log").clone();
                    assert!(
                        log.iter().any(|&(what, at)| what == "end" && at >= mine),
                        "commit {mine} acknowledged before a flush that started after it \
                         ended: {log:?}"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        let flushes = recorder
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|(w, _)| *w == "start")
            .count();
        assert!(flushes >= 1);
        assert!(
            (flushes as u64) < WRITERS,
            "{flushes} flushes for {WRITERS} commits: none was shared"
        );
    }

    /// A flush that tells when it starts and ends only when let go.
    struct Gated {
        started: tokio::sync::mpsc::UnboundedSender<()>,
        go: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Flush for Gated {
        fn flush(&self) -> std::io::Result<()> {
            self.started.send(()).expect("test listens");
            self.go.lock().expect("gate").recv().expect("test lets go");
            Ok(())
        }
    }

    /// A group commit over a [`Gated`] flush: the flush's starts, and the
    /// handle that lets each one end.
    fn gated(
        timeout: Duration,
    ) -> (
        Arc<WalSync>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started_tx, started) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let gate = Gated {
            started: started_tx,
            go: Mutex::new(go_rx),
        };
        (WalSync::new(Arc::new(gate), timeout), started, go)
    }

    /// A commit that returns while a flush runs is not covered by it: it
    /// waits for the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_during_a_flush_waits_for_the_next_flush() {
        let (sync, mut started, go) = gated(LONG);
        let deadline = std::time::Duration::from_secs(10);
        let first = tokio::spawn({
            let sync = Arc::clone(&sync);
            async move { sync.durable().await }
        });
        tokio::time::timeout(deadline, started.recv())
            .await
            .expect("the first commit starts a flush");
        let second = tokio::spawn({
            let sync = Arc::clone(&sync);
            async move { sync.durable().await }
        });
        tokio::time::timeout(deadline, async {
            while sync.committed.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second commit is counted");
        go.send(()).expect("flush waits");
        first
            .await
            .expect("task")
            .expect("the first commit is flushed");
        tokio::time::timeout(deadline, started.recv())
            .await
            .expect("the second commit needs a flush of its own");
        assert!(!second.is_finished(), "acknowledged before its flush ended");
        go.send(()).expect("flush waits");
        second
            .await
            .expect("task")
            .expect("the second commit is flushed");
    }

    /// After a failed flush no later flush proves anything (Linux drops
    /// the pages it could not write), so every later write fails too.
    #[tokio::test]
    async fn a_failed_flush_fails_every_later_write() {
        let recorder = Arc::new(Recorder::default());
        let sync = WalSync::new(Arc::new(Recording(Arc::clone(&recorder))), LONG);
        sync.durable().await.expect("a good flush");
        assert!(!sync.failed());
        recorder.fail.store(true, Ordering::SeqCst);
        assert!(matches!(sync.durable().await, Err(FlushFailed::Failed(_))));
        recorder.fail.store(false, Ordering::SeqCst);
        assert!(
            matches!(sync.durable().await, Err(FlushFailed::Failed(_))),
            "a later write is refused although the disk now answers"
        );
        assert!(sync.failed());
    }

    /// A flush that hangs answers its writes after the timeout, without
    /// condemning later ones: it may still end. (Real time: tokio's paused
    /// clock does not advance while a blocking task runs.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_that_hangs_times_out_its_writes() {
        let (sync, mut started, go) = gated(Duration::from_millis(200));
        assert!(matches!(
            sync.durable().await,
            Err(FlushFailed::TimedOut(_))
        ));
        started.recv().await.expect("the flush began");
        go.send(()).expect("flush waits");
        // The hung flush ends after all, and counts: it covered the write.
        tokio::time::timeout(LONG, async {
            while sync.flushed.borrow().through < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the late flush is recorded");
        assert!(!sync.failed());
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_found_open_and_reopened_when_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("leadline.db");
        std::fs::write(&db, b"").expect("db");
        let wal = WalFile::of(&db);
        wal.flush().expect("no log yet: nothing to flush");
        let log = dir.path().join("leadline.db-wal");
        std::fs::write(&log, b"frames").expect("log");
        wal.flush().expect("the log and its directory");
        assert!(wal.dir_flushed.load(Ordering::SeqCst));
        let first = wal.open.lock().expect("open").as_ref().map(|(_, id)| *id);
        std::fs::remove_file(&log).expect("removed");
        std::fs::write(&log, b"new frames").expect("a new log");
        wal.flush().expect("the new log");
        let second = wal.open.lock().expect("open").as_ref().map(|(_, id)| *id);
        assert!(first.is_some() && second.is_some() && first != second);
        let bare = WalFile::of(Path::new("no-such-dir/leadline.db"));
        assert_eq!(bare.wal, PathBuf::from("no-such-dir/leadline.db-wal"));
    }

    /// SQLite names the log after the file a symbolic link leads to.
    #[cfg(unix)]
    #[test]
    fn a_linked_database_has_its_targets_log() {
        let dir = tempfile::tempdir().expect("dir");
        let real = dir.path().join("real.db");
        std::fs::write(&real, b"").expect("db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        let wal = WalFile::of(&link);
        let canonical = std::fs::canonicalize(&real).expect("real");
        assert_eq!(
            wal.wal,
            PathBuf::from(format!("{}-wal", canonical.display()))
        );
    }
}
