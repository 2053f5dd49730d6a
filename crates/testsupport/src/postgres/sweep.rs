//! Test databases left behind on a server that outlives the tests.
//!
//! A local cluster or a container goes with the test process, and its databases with it. A
//! server named by `TEST_DATABASE_URL` stays, and so would every database a run created and did
//! not drop: the shared migrated database of a test binary lives in a `static` and is never
//! dropped, and a test that panics skips its own cleanup.
//!
//! So [`PgServer::create_database`] writes its creator into each database's comment
//! (`leadline-testsupport created=<unix s> space=<pid space> pid=<pid>`), and the first
//! `create_database` of a process on a server first drops the databases whose creator is gone:
//!
//! - made in this pid space (same boot of the same machine, same pid namespace) by a process
//!   that no longer exists; or
//! - made anywhere more than [`STALE_AFTER`] ago (another machine's process cannot be checked).
//!
//! A database without the comment is never touched, whatever its name: it is not ours.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sqlx::Connection as _;

use super::PgServer;
use crate::util;

/// How a comment written by [`PgServer::create_database`] starts.
const MARK: &str = "leadline-testsupport";

/// Age past which a database is swept even if its creator cannot be checked: twice CI's
/// 90-minute budget, so no live run of this project still uses it.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3 * 60 * 60);

/// Who created a database, as written into its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creator {
    /// Unix seconds.
    pub(crate) created: u64,
    /// Where `pid` means something: see [`pid_space`].
    pub(crate) space: String,
    pub(crate) pid: i32,
}

impl Creator {
    /// This process, now.
    pub(crate) fn this_process() -> Self {
        Self {
            created: unix_now(),
            space: pid_space().to_owned(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        }
    }

    pub(crate) fn comment(&self) -> String {
        format!(
            "{MARK} created={} space={} pid={}",
            self.created, self.space, self.pid
        )
    }

    /// The creator named by `comment`, if [`Creator::comment`] wrote it.
    fn parse(comment: &str) -> Option<Self> {
        let mut fields = comment.strip_prefix(MARK)?.split_whitespace();
        let mut field = |name: &str| fields.next()?.strip_prefix(name)?.strip_prefix('=');
        let created = field("created")?.parse().ok()?;
        let space = field("space")?.to_owned();
        let pid = field("pid")?.parse().ok()?;
        Some(Self {
            created,
            space,
            pid,
        })
    }

    /// Whether the database is left over: see the module docs.
    fn is_gone(&self, now: u64) -> bool {
        if self.space == pid_space() && !util::pid_alive(self.pid) {
            return true;
        }
        now.saturating_sub(self.created) > STALE_AFTER.as_secs()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Names the space this process's pid lives in: the kernel's boot id (one boot of one machine)
/// and the pid namespace. Where either cannot be read it is unique to this process, so that
/// only the age rule applies to its databases.
fn pid_space() -> &'static str {
    static SPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SPACE.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
        let namespace = std::fs::read_link("/proc/self/ns/pid");
        match (boot, namespace) {
            (Ok(boot), Ok(namespace)) => {
                // "pid:[4026531836]" → "4026531836"
                let namespace = namespace
                    .to_string_lossy()
                    .replace(|c: char| !c.is_ascii_digit(), "");
                format!("{}/{namespace}", boot.trim())
            }
            _ => format!("process-{}", util::random_hex(16)),
        }
    })
}

/// Servers (`host:port`) this process has swept already.
static SWEPT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether this is the first call for `server` in this process.
pub(super) fn first_time_for(server: &PgServer) -> bool {
    let mut swept = SWEPT.lock().unwrap_or_else(PoisonError::into_inner);
    swept
        .get_or_insert_with(HashSet::new)
        .insert(format!("{}:{}", server.host(), server.port()))
}

/// Drops the databases on `server` whose creator is gone, and returns their names.
///
/// # Errors
///
/// The driver's error, listing or dropping.
pub(crate) async fn sweep(server: &PgServer) -> anyhow::Result<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(&server.admin_url("postgres"))
        .await
        .context("connecting as superuser to list test databases")?;
    let marked: Result<Vec<(String, String)>, _> = sqlx::query_as(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database \
         WHERE starts_with(shobj_description(oid, 'pg_database'), $1)",
    )
    .bind(MARK)
    .fetch_all(&mut conn)
    .await;
    let _ = conn.close().await;
    let now = unix_now();
    let mut dropped = Vec::new();
    for (name, comment) in marked.context("listing test databases")? {
        if Creator::parse(&comment).is_some_and(|creator| creator.is_gone(now)) {
            server.drop_database(&name).await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// The SQL that marks `database` as created by `creator`.
pub(crate) fn mark_sql(database: &str, creator: &Creator) -> String {
    format!(
        "COMMENT ON DATABASE {} IS '{}'",
        util::quote_ident(database),
        creator.comment().replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_names_its_creator() {
        let creator = Creator::this_process();
        assert_eq!(Creator::parse(&creator.comment()), Some(creator.clone()));
        assert!(!creator.is_gone(unix_now()), "this process is alive");
        assert_eq!(Creator::parse("leadline's database"), None);
        assert_eq!(Creator::parse(&format!("{MARK} created=x")), None);
    }

    #[test]
    fn creators_elsewhere_count_as_gone_only_when_old() {
        let elsewhere = Creator {
            space: "another-machine/1".to_owned(),
            ..Creator::this_process()
        };
        let now = elsewhere.created;
        assert!(!elsewhere.is_gone(now + 60));
        assert!(elsewhere.is_gone(now + STALE_AFTER.as_secs() + 1));
    }
}
