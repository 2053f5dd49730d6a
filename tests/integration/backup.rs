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
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (s, stop, written) = (s.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                s.leads.create(tenant, &lead_req("Load")).await.unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    eventually(
        "the writer is writing",
        Duration::from_secs(10),
        async || {
            (written.load(Ordering::Relaxed) >= 5)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await;
    let dir = scratch();
    let out = dir.path().join("leadline.backup");
    let manifest = backup::backup(&url, &out).await.unwrap();
    let during = written.load(Ordering::Relaxed);
    eventually(
        "the writer writes on",
        Duration::from_secs(10),
        async || {
            (written.load(Ordering::Relaxed) > during + 5)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // A snapshot from the middle of the load: more than before it, fewer
    // than after.
    let total = 20 + written.load(Ordering::Relaxed);
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
