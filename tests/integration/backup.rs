//! Backup and restore of the embedded database: a backup taken while
//! writes go on is one consistent snapshot, whose manifest (every table's
//! row count and digest) is what a restore reads back; the restored
//! database serves and its audit chain verifies. A truncated, extended,
//! corrupt, foreign or lying file is refused before anything is written.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use leadline_domain::backup::{MAGIC, Manifest};
use leadline_store::backup::{self, BackupError};

use crate::support::{eventually, lead_req, new_tenant, services, sqlite_file_store, sqlite_url};

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A task that keeps creating leads of `tenant` through the service
/// until stopped: the write load a backup is taken under.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts it, and returns once it has written a few leads.
    async fn start(s: &leadline_app::Services, tenant: leadline_domain::TenantId) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let task = {
            let (s, stop, written) = (s.clone(), stop.clone(), written.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    s.leads.create(tenant, &lead_req("Load")).await.unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let writer = Self {
            stop,
            written,
            task,
        };
        eventually(
            "the writer is writing",
            Duration::from_secs(10),
            async || (writer.written() >= 5).then_some(()).ok_or("not yet"),
        )
        .await;
        writer
    }

    /// Leads written so far.
    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops it; the leads it wrote.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.written.load(Ordering::Relaxed)
    }
}

fn leads_in(manifest: &Manifest) -> u64 {
    manifest
        .tables
        .iter()
        .find(|t| t.table == "leads")
        .map(|t| t.rows)
        .unwrap()
}

#[tokio::test]
async fn a_backup_under_write_load_restores_exactly() {
    let (store, path) = sqlite_file_store().await;
    let url = sqlite_url(&path);
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    for i in 0..20 {
        s.leads
            .create(tenant, &lead_req(&format!("Bea{i}")))
            .await
            .unwrap();
    }

    // A writer that keeps creating leads through the service.
    let writer = Writer::start(&s, tenant).await;
    let dir = scratch();
    let out = dir.path().join("leadline.backup");
    let manifest = backup::backup(&url, &out).await.unwrap();
    let during = writer.written();
    eventually(
        "the writer writes on",
        Duration::from_secs(10),
        async || {
            (writer.written() > during + 5)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await;
    let written = writer.stop().await;

    // A snapshot from the middle of the load: more than before it, fewer
    // than after.
    let total = 20 + written;
    let backed_up = leads_in(&manifest);
    assert!(
        backed_up >= 25 && backed_up < total,
        "{backed_up} of {total}"
    );
    assert!(
        manifest
            .tables
            .iter()
            .any(|t| t.table == "audit_log" && t.rows > 0)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads a backup");
    }
    assert!(
        matches!(
            backup::backup(&url, &out).await,
            Err(BackupError::Target(_))
        ),
        "a backup never overwrites a file"
    );

    let target = dir.path().join("restored.db");
    let target_url = sqlite_url(&target);
    let restored = backup::restore(&out, &target_url).await.unwrap();
    assert_eq!(restored, manifest);
    assert_eq!(backup::digests(&target_url).await.unwrap(), manifest.tables);
    assert!(
        matches!(
            backup::restore(&out, &target_url).await,
            Err(BackupError::Target(_))
        ),
        "a restore never overwrites a database"
    );

    // The restored database serves what was backed up, and its trail
    // verifies.
    let again = services(crate::support::store_at(&target_url).await);
    let page = again
        .leads
        .list(
            tenant,
            &leadline_domain::ListLeadsQuery {
                limit: leadline_domain::PageLimit::new(200).unwrap(),
                ..leadline_domain::ListLeadsQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len() as u64, backed_up.min(200));
    assert!(matches!(
        again.audit.verify(tenant, None).await.unwrap(),
        leadline_app::Verdict::Intact(_)
    ));
    // Nothing but the backup and the restored database is left behind.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("restored.db-"))
        .collect();
    left.sort();
    assert_eq!(left, vec!["leadline.backup", "restored.db"]);
}

/// The byte where the payload starts.
fn payload_start(bytes: &[u8]) -> usize {
    let first = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    first + bytes[first..].iter().position(|&b| b == b'\n').unwrap() + 1
}

#[tokio::test]
async fn a_damaged_backup_is_refused_before_anything_is_written() {
    let (store, path) = sqlite_file_store().await;
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    for i in 0..10 {
        s.leads
            .create(tenant, &lead_req(&format!("Cy{i}")))
            .await
            .unwrap();
    }
    let dir = scratch();
    let good = dir.path().join("good.backup");
    let manifest = backup::backup(&sqlite_url(&path), &good).await.unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let start = payload_start(&bytes);

    let lying = {
        let mut m = manifest.clone();
        for t in &mut m.tables {
            if t.table == "leads" {
                t.rows += 1;
            }
        }
        let mut out = format!("{MAGIC}\n{}\n", serde_json::to_string(&m).unwrap()).into_bytes();
        out.extend_from_slice(&bytes[start..]);
        out
    };
    type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "truncated",
            Box::new(|b| b[..b.len() - 100].to_vec()),
            "truncated",
        ),
        (
            "extended",
            Box::new(|b| [b, b"more".as_slice()].concat()),
            "longer than its manifest",
        ),
        (
            "a flipped payload byte",
            Box::new(move |b| {
                let mut b = b.to_vec();
                let i = start + (b.len() - start) / 2;
                b[i] ^= 0x55;
                b
            }),
            "corrupt",
        ),
        (
            "not a backup",
            Box::new(|b| [b"SQLite format 3\n".as_slice(), b].concat()),
            "not a leadline backup",
        ),
        (
            "a garbled manifest",
            Box::new(move |b| {
                let mut b = b.to_vec();
                b[MAGIC.len() + 3] = b'}';
                b
            }),
            "manifest cannot be read",
        ),
        (
            "a manifest that lies about a table",
            Box::new(move |_| lying.clone()),
            "leads: 10 rows, the manifest says 11",
        ),
        ("empty", Box::new(|_| Vec::new()), "not a leadline backup"),
    ];
    for (what, damage, expected) in cases {
        let file: PathBuf = dir
            .path()
            .join(format!("{}.backup", what.replace(' ', "-")));
        std::fs::write(&file, damage(&bytes)).unwrap();
        let target = dir.path().join(format!("{}.db", what.replace(' ', "-")));
        let err = backup::restore(&file, &sqlite_url(&target))
            .await
            .expect_err(what)
            .to_string();
        assert!(err.contains(expected), "{what}: {err}");
        assert!(!target.exists(), "{what}: nothing was restored");
        assert_no_scratch(dir.path(), what);
    }
    // A schema this leadline does not know (a newer one took it).
    let newer = {
        let mut m = manifest.clone();
        m.schema = "m20991231_000099_future".to_owned();
        let mut out = format!("{MAGIC}\n{}\n", serde_json::to_string(&m).unwrap()).into_bytes();
        out.extend_from_slice(&bytes[start..]);
        out
    };
    let file = dir.path().join("newer.backup");
    std::fs::write(&file, newer).unwrap();
    let err = backup::restore(&file, &sqlite_url(&dir.path().join("newer.db")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not know"), "{err}");
    // A WAL left beside the target would be replayed into the restore.
    let target = dir.path().join("stale.db");
    std::fs::write(dir.path().join("stale.db-wal"), b"old pages").unwrap();
    let err = backup::restore(&good, &sqlite_url(&target))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stale.db-wal"), "{err}");
    assert!(!target.exists());
    // A missing directory is named before any work.
    let err = backup::backup(&sqlite_url(&path), &dir.path().join("nodir/x.backup"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // An in-memory database has nothing to back up.
    let err = backup::backup("sqlite::memory:", &dir.path().join("m.backup"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in-memory"), "{err}");
    // The undamaged file restores.
    let target = dir.path().join("fine.db");
    backup::restore(&good, &sqlite_url(&target)).await.unwrap();
    assert_eq!(leads_in(&manifest), 10);
}

fn assert_no_scratch(dir: &Path, what: &str) {
    let scratch: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(scratch.is_empty(), "{what}: left {scratch:?}");
}

/// PostgreSQL: the dump reads through FORCE ROW LEVEL SECURITY as
/// `leadline_backup` (a dump by the owner would hold zero rows and
/// succeed), under write load, into a fresh database that comes back with
/// its policies, an unprivileged service role and verifying audit chains.
#[tokio::test]
async fn postgres_a_backup_under_write_load_restores_exactly_through_row_level_security() {
    use crate::support::{OWNER, OWNER_PASSWORD, SERVICE, SERVICE_PASSWORD};
    let server = leadline_testsupport::postgres();
    let (owner_url, service_url) = crate::support::isolated_pg("leadline_pgbackup").await;
    let source = database_of(&owner_url);
    let s = services(crate::support::store_at(&service_url).await);
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    for i in 0..10 {
        for tenant in [a, b] {
            s.leads
                .create(tenant, &lead_req(&format!("Pia{i}")))
                .await
                .unwrap();
        }
    }
    let writer = Writer::start(&s, a).await;
    let dir = scratch();
    let out = dir.path().join("pg.backup");
    let manifest = backup::backup(&owner_url, &out).await.unwrap();
    let total = 20 + writer.stop().await;
    let backed_up = leads_in(&manifest);
    assert!(
        backed_up >= 25 && backed_up <= total,
        "not the empty dump FORCE RLS gives the owner: {backed_up} of {total}"
    );
    assert_eq!(manifest.backend, "postgres");
    assert_eq!(manifest.owner.as_deref(), Some(OWNER));

    // Into a fresh, empty database.
    let target = server
        .create_database("leadline_pgrestore", Some(OWNER))
        .await
        .unwrap();
    let target_owner = server.url(OWNER, OWNER_PASSWORD, &target);
    let restored = backup::restore(&out, &target_owner).await.unwrap();
    assert_eq!(restored, manifest);
    let superuser_count = |database: String| async move {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&server.admin_url(&database))
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        u64::try_from(n).unwrap()
    };
    assert_eq!(
        superuser_count(target.clone()).await,
        backed_up,
        "every row came back"
    );
    assert_eq!(superuser_count(source.clone()).await, total);
    // Row-level security enabled, forced and with its policies on every
    // tenant table; the service login unprivileged.
    let owner = leadline_store::Store::connect_for_migrations(
        &target_owner,
        &leadline_store::StoreSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        owner.verify_service_login(SERVICE).await.unwrap(),
        Vec::<String>::new()
    );
    owner.close().await;
    // The service on the restored database: each tenant sees its own, and
    // each chain verifies.
    let again =
        services(crate::support::store_at(&server.url(SERVICE, SERVICE_PASSWORD, &target)).await);
    for tenant in [a, b] {
        assert!(matches!(
            again.audit.verify(tenant, None).await.unwrap(),
            leadline_app::Verdict::Intact(_)
        ));
    }
    let page = again
        .leads
        .list(
            b,
            &leadline_domain::ListLeadsQuery {
                limit: leadline_domain::PageLimit::new(200).unwrap(),
                ..leadline_domain::ListLeadsQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 10);
    assert!(page.items.iter().all(|l| l.tenant_id == b));

    // A database that is not empty is refused; so is a truncated file,
    // before anything is written.
    assert!(matches!(
        backup::restore(&out, &target_owner).await,
        Err(BackupError::Target(_))
    ));
    let short = dir.path().join("short.backup");
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 100]).unwrap();
    let empty = server
        .create_database("leadline_pgempty", Some(OWNER))
        .await
        .unwrap();
    match backup::restore(&short, &server.url(OWNER, OWNER_PASSWORD, &empty)).await {
        Err(BackupError::Refused(why)) => assert!(why.contains("truncated"), "{why}"),
        other => panic!("a truncated dump was not refused: {other:?}"),
    }

    // A table a backup could not read whole stops it, named.
    server
        .admin_execute(
            &source,
            "CREATE TABLE unguarded (id int); ALTER TABLE unguarded ENABLE ROW LEVEL SECURITY; \
             GRANT SELECT ON unguarded TO leadline_backup",
        )
        .await
        .unwrap();
    match backup::backup(&owner_url, &dir.path().join("again.backup")).await {
        Err(BackupError::Target(why)) => assert!(why.contains("unguarded"), "{why}"),
        other => panic!("a backup ran past an unreadable table: {other:?}"),
    }
}

fn database_of(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .unwrap()
        .to_owned()
}

/// PostgreSQL: a restore into another cluster whose transaction counter is
/// behind the backup's renumbers the audit trail and the change log in
/// their order: the change feed shows every restored change, a new write
/// comes after them, and the chain verifies with it.
#[tokio::test]
async fn postgres_a_restore_into_a_younger_cluster_renumbers_its_logs() {
    use crate::support::{OWNER, OWNER_PASSWORD, SERVICE, SERVICE_PASSWORD};
    let (owner_url, service_url) = crate::support::isolated_pg("leadline_xcluster").await;
    let source = database_of(&owner_url);
    // Transaction ids well past a fresh cluster's: each subtransaction
    // that writes takes one.
    leadline_testsupport::postgres()
        .admin_execute(
            &source,
            "CREATE TEMP TABLE burn (i int); \
             DO $$ BEGIN FOR i IN 1..5000 LOOP \
               BEGIN INSERT INTO burn VALUES (i); EXCEPTION WHEN OTHERS THEN NULL; END; \
             END LOOP; END $$",
        )
        .await
        .unwrap();
    let s = services(crate::support::store_at(&service_url).await);
    let (tenant, _) = new_tenant(&s).await;
    for i in 0..5 {
        s.leads
            .create(tenant, &lead_req(&format!("Xi{i}")))
            .await
            .unwrap();
    }
    let feed = |s: leadline_app::Services| async move {
        s.changes
            .page(
                tenant,
                None,
                &leadline_domain::ChangeFilter::default(),
                1000,
            )
            .await
            .unwrap()
            .items
    };
    let before = feed(s.clone()).await;
    assert!(before.len() >= 5);
    let dir = scratch();
    let out = dir.path().join("x.backup");
    backup::backup(&owner_url, &out).await.unwrap();

    let fresh = leadline_testsupport::OwnedPgServer::start().expect("start a PostgreSQL");
    fresh
        .admin_execute(
            "postgres",
            &format!("CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'"),
        )
        .await
        .unwrap();
    let target = fresh
        .create_database("leadline_young", Some(OWNER))
        .await
        .unwrap();
    let target_owner = fresh.url(OWNER, OWNER_PASSWORD, &target);
    backup::restore(&out, &target_owner).await.unwrap();
    let owner = leadline_store::Store::connect_for_migrations(
        &target_owner,
        &leadline_store::StoreSettings::default(),
    )
    .await
    .unwrap();
    owner
        .ensure_service_login(SERVICE, &secrecy::SecretString::from(SERVICE_PASSWORD))
        .await
        .unwrap();
    owner.close().await;
    let r =
        services(crate::support::store_at(&fresh.url(SERVICE, SERVICE_PASSWORD, &target)).await);
    let restored = feed(r.clone()).await;
    let kinds = |items: &[leadline_domain::LoggedChange]| {
        items
            .iter()
            .map(|c| (c.change.kind, c.change.entity_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(&restored),
        kinds(&before),
        "every restored change, in order"
    );
    let sealed = match r.audit.verify(tenant, None).await.unwrap() {
        leadline_app::Verdict::Intact(state) => state.sealed,
        other => panic!("the restored chain does not verify: {other:?}"),
    };
    let after = r.leads.create(tenant, &lead_req("Later")).await.unwrap();
    let now = feed(r.clone()).await;
    assert_eq!(now.len(), restored.len() + 1);
    assert_eq!(now.last().unwrap().change.entity_id, after.id.as_uuid());
    match r.audit.verify(tenant, None).await.unwrap() {
        leadline_app::Verdict::Intact(state) => assert_eq!(state.sealed, sealed + 1),
        other => panic!("the chain breaks after a new write: {other:?}"),
    }
}
