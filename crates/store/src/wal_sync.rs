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
//! What differs from `FULL`: another connection can read a commit in the
//! instant before its flush ends (the writer has moved on). A write that
//! follows such a read is itself acknowledged only after a flush, which
//! covers the log up to it and so the commit it read; only a bare read can
//! show a commit that a power loss then takes back, and that commit was
//! never acknowledged.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use metrics::counter;
use tokio::sync::watch;

/// How far the flushes have come, in commit numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flushed {
    /// Every commit numbered up to this one is on the disk.
    through: u64,
    /// Commits in `failed.0..=failed.1` were in a flush that failed: they
    /// may not be on the disk, and a later flush cannot tell (Linux drops
    /// the pages a failed `fsync` could not write).
    failed: (u64, u64),
}

impl Flushed {
    /// What commit `n` waits for: `Some(true)` when it is on the disk,
    /// `Some(false)` when its flush failed, `None` while neither is known.
    fn of(self, n: u64) -> Option<bool> {
        if (self.failed.0..=self.failed.1).contains(&n) {
            Some(false)
        } else if self.through >= n {
            Some(true)
        } else {
            None
        }
    }
}

/// A flush of the log that failed: the commits it held may be lost.
#[derive(Debug, thiserror::Error)]
#[error("flushing the SQLite write-ahead log failed: {0}")]
pub(crate) struct FlushFailed(String);

/// Flushes a file to the disk: `fdatasync`, as SQLite does for its log.
pub(crate) trait Flush: Send + Sync + 'static {
    /// # Errors
    /// The flush's I/O error.
    fn flush(&self) -> std::io::Result<()>;
}

/// The log of a SQLite database file, `<file>-wal`.
#[derive(Debug)]
pub(crate) struct WalFile {
    wal: PathBuf,
    /// The log's directory, flushed once so that the log's own entry is on
    /// the disk (SQLite creates the file at `NORMAL` without flushing it).
    dir: PathBuf,
    dir_flushed: AtomicBool,
}

impl WalFile {
    /// The log of the database at `db`.
    pub(crate) fn of(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            wal: PathBuf::from(wal),
            dir,
            dir_flushed: AtomicBool::new(false),
        }
    }
}

impl Flush for WalFile {
    fn flush(&self) -> std::io::Result<()> {
        match std::fs::File::open(&self.wal) {
            Ok(file) => file.sync_data()?,
            // Checkpointed into the database file and removed: nothing of
            // it is unflushed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if !self.dir_flushed.load(Ordering::Acquire) {
            std::fs::File::open(&self.dir)?.sync_all()?;
            self.dir_flushed.store(true, Ordering::Release);
        }
        Ok(())
    }
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
    /// Commits that have returned, numbered from 1.
    committed: AtomicU64,
    /// Whether a flush is running.
    flushing: AtomicBool,
    flushed: watch::Sender<Flushed>,
}

impl WalSync {
    pub(crate) fn new(flush: Arc<dyn Flush>) -> Arc<Self> {
        Arc::new(Self {
            flush,
            committed: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            flushed: watch::Sender::new(Flushed::default()),
        })
    }

    /// Call after a COMMIT returned: returns once a flush that started
    /// after that covered it.
    ///
    /// Cancel-safe: a flush runs in a task of its own, so dropping this
    /// future (a client that went away) neither stops the flush nor leaves
    /// other writers waiting for it.
    ///
    /// # Errors
    /// [`FlushFailed`] when the flush that held this commit failed: the
    /// commit is in the database but may not survive a power loss.
    pub(crate) async fn durable(self: &Arc<Self>) -> Result<(), FlushFailed> {
        let mine = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let mut flushed = self.flushed.subscribe();
        loop {
            match flushed.borrow_and_update().of(mine) {
                Some(true) => return Ok(()),
                Some(false) => {
                    return Err(FlushFailed(
                        "a flush that held this commit failed".to_owned(),
                    ));
                }
                None => {}
            }
            if !self.flushing.swap(true, Ordering::AcqRel) {
                let this = Arc::clone(self);
                tokio::spawn(async move { this.flush_once().await });
            }
            // Sent after every flush, and the sender lives in `self`.
            if flushed.changed().await.is_err() {
                return Err(FlushFailed("the store closed".to_owned()));
            }
        }
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
            Ok(()) => f.through = f.through.max(target),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "flushing the SQLite write-ahead log failed: writes since the last flush \
                     may not survive a power loss, and their requests fail"
                );
                counter!("db_wal_flush_failures_total").increment(1);
                f.failed = (f.through + 1, target);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

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
        let sync = WalSync::new(Arc::new(Recording(Arc::clone(&recorder))));
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

    /// A commit that returns while a flush runs is not covered by it: it
    /// waits for the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_during_a_flush_waits_for_the_next_flush() {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let sync = WalSync::new(Arc::new(Gated {
            started: started_tx,
            go: Mutex::new(go_rx),
        }));
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

    #[tokio::test]
    async fn a_failed_flush_fails_the_commits_it_held_and_not_later_ones() {
        let recorder = Arc::new(Recorder::default());
        let sync = WalSync::new(Arc::new(Recording(Arc::clone(&recorder))));
        recorder.fail.store(true, Ordering::SeqCst);
        assert!(sync.durable().await.is_err());
        recorder.fail.store(false, Ordering::SeqCst);
        sync.durable().await.expect("a later commit, flushed");
    }

    #[tokio::test]
    async fn a_missing_log_is_nothing_to_flush_and_a_present_one_is_flushed() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("leadline.db");
        let wal = WalFile::of(&db);
        wal.flush().expect("no log yet");
        std::fs::write(dir.path().join("leadline.db-wal"), b"frames").expect("log");
        wal.flush().expect("the log and its directory");
        assert!(wal.dir_flushed.load(Ordering::SeqCst));
        let bare = WalFile::of(Path::new("leadline.db"));
        assert_eq!(bare.dir, PathBuf::from("."));
        assert_eq!(bare.wal, PathBuf::from("leadline.db-wal"));
    }
}
