//! Backups and restores, with a manifest ([`leadline_domain::backup`]).
//!
//! The file is `MAGIC`, a newline, the manifest as one line of JSON, a
//! newline, then the payload. SQLite's payload is the database itself,
//! copied by `VACUUM INTO` (one read transaction: a consistent snapshot,
//! taken while the service keeps writing, since a WAL reader blocks no
//! writer). A restore refuses a file whose payload is shorter or longer
//! than the manifest says, or whose SHA-256 differs, before it writes
//! anything; then it checks the copy's integrity, recomputes every table's
//! digest, and only if all match moves the database into place.
//! PostgreSQL's payload is a `pg_dump` archive ([`postgres`] says how it
//! reads through row-level security).

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
};

use leadline_domain::backup::{MAGIC, Manifest, TableDigest};
use sea_orm::sqlx::{
    self, Connection, Row,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};
use sha2::{Digest, Sha256};

use crate::Backend;

mod postgres;

/// A backup or restore failed; the message says why in a user's terms.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a leadline backup, or is damaged.
    #[error("{0}")]
    Refused(String),
    /// The restore target is not empty, or is another backend.
    #[error("{0}")]
    Target(String),
    /// Reading or writing a file failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
}

fn db(e: impl std::fmt::Display) -> BackupError {
    BackupError::Database(e.to_string())
}

/// The path of a `sqlite:` URL's file.
fn sqlite_path(url: &str) -> Result<PathBuf, BackupError> {
    let options = SqliteConnectOptions::from_str(url).map_err(db)?;
    let path = options.get_filename().to_path_buf();
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory || path.as_os_str().is_empty() {
        return Err(BackupError::Target(
            "an in-memory database has nothing to back up or restore into".to_owned(),
        ));
    }
    Ok(path)
}

async fn open_sqlite(path: &Path, read_only: bool) -> Result<SqliteConnection, BackupError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .create_if_missing(false);
    SqliteConnection::connect_with(&options).await.map_err(db)
}

/// Every table's row count and digest: each row rendered by SQLite's
/// `quote()` (a literal of its type: text, number, `X'…'` blob, NULL),
/// columns joined by a unit separator, rows in the order of all their
/// columns, hashed with SHA-256. Virtual tables are skipped (their shadow
/// tables, which hold their data, are ordinary tables and included).
async fn sqlite_digests(conn: &mut SqliteConnection) -> Result<Vec<TableDigest>, BackupError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
        let quoted = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let rendered = columns
            .iter()
            .map(|c| format!("quote({})", quoted(c)))
            .collect::<Vec<_>>()
            .join(" || char(31) || ");
        let order = (1..=columns.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // Identifiers come from the database's own catalog, quoted.
        let sql = format!(
            "SELECT {rendered} AS row, {} FROM {} ORDER BY {order}",
            columns
                .iter()
                .map(|c| quoted(c))
                .collect::<Vec<_>>()
                .join(", "),
            quoted(&table)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        let mut hash = Sha256::new();
        for row in &rows {
            let text: Option<String> = row.try_get(0).map_err(db)?;
            hash.update(text.unwrap_or_default().as_bytes());
            hash.update(b"\n");
        }
        out.push(TableDigest {
            table,
            rows: rows.len() as u64,
            sha256: leadline_domain::audit::hex(&hash.finalize()),
        });
    }
    Ok(out)
}

async fn sqlite_schema(conn: &mut SqliteConnection) -> Result<String, BackupError> {
    sqlx::query_scalar::<_, String>(
        "SELECT version FROM seaql_migrations ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)
    .map(Option::unwrap_or_default)
}

/// A new file only its owner may read (a backup holds every tenant's data).
pub(crate) fn create_private(path: &Path) -> Result<std::fs::File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::Target(format!(
                "{} exists: leadline never overwrites a file",
                path.display()
            ))
        } else {
            BackupError::Io(path.display().to_string(), e)
        }
    })
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let io = |e| BackupError::Io(path.display().to_string(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut len = 0_u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, leadline_domain::audit::hex(&hash.finalize())))
}

/// Removes a file when dropped, unless kept.
pub(crate) struct Scratch(pub(crate) Option<PathBuf>);

impl Scratch {
    pub(crate) fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A scratch path beside `path` (same file system, so a rename is atomic).
pub(crate) fn beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Backs up the database at `url` into the new file `out` (never
/// overwritten; created readable by its owner only).
///
/// # Errors
/// [`BackupError`] naming what failed; `out` is not left behind half
/// written.
pub async fn backup(url: &str, out: &Path) -> Result<Manifest, BackupError> {
    writable_dir(out)?;
    match Backend::from_url(url).map_err(|e| BackupError::Target(e.to_string()))? {
        Backend::Sqlite => backup_sqlite(url, out).await,
        Backend::Postgres => postgres::backup(url, out).await,
    }
}

async fn backup_sqlite(url: &str, out: &Path) -> Result<Manifest, BackupError> {
    let source = sqlite_path(url)?;
    let copy = Scratch(Some(beside(out, "copy")));
    let copy_path = copy.0.clone().unwrap_or_default();
    let _ = std::fs::remove_file(&copy_path);
    let created_at = crate::now();
    {
        let mut conn = open_sqlite(&source, true).await?;
        sqlx::query("VACUUM INTO ?")
            .bind(copy_path.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await
            .map_err(db)?;
        conn.close().await.map_err(db)?;
    }
    let (tables, schema) = {
        let mut conn = open_sqlite(&copy_path, true).await?;
        let tables = sqlite_digests(&mut conn).await?;
        let schema = sqlite_schema(&mut conn).await?;
        conn.close().await.map_err(db)?;
        (tables, schema)
    };
    let (payload_bytes, payload_sha256) = sha256_file(&copy_path)?;
    let manifest = Manifest {
        backend: "sqlite".to_owned(),
        owner: None,
        created_at,
        leadline: env!("CARGO_PKG_VERSION").to_owned(),
        schema,
        payload_bytes,
        payload_sha256,
        tables,
    };
    write_backup(out, &manifest, &copy_path)?;
    Ok(manifest)
}

/// Writes the backup file `out` (new, its owner's only): the header, the
/// manifest, then the payload from `payload`; durable before it returns,
/// and not left behind half written.
fn write_backup(out: &Path, manifest: &Manifest, payload: &Path) -> Result<(), BackupError> {
    let mut header = format!("{MAGIC}\n").into_bytes();
    serde_json::to_writer(&mut header, manifest)
        .map_err(|e| BackupError::Io(out.display().to_string(), e.into()))?;
    header.push(b'\n');
    write_file(out, &header, payload)
}

/// Writes the new file `out` (its owner's only): `header`, then the bytes
/// of `payload`; durable before it returns, and not left behind half
/// written.
pub(crate) fn write_file(out: &Path, header: &[u8], payload: &Path) -> Result<(), BackupError> {
    let file = create_private(out)?;
    let written = Scratch(Some(out.to_path_buf()));
    let io = |e| BackupError::Io(out.display().to_string(), e);
    let mut writer = std::io::BufWriter::new(file);
    writer.write_all(header).map_err(io)?;
    let mut source = std::fs::File::open(payload)
        .map_err(|e| BackupError::Io(payload.display().to_string(), e))?;
    std::io::copy(&mut source, &mut writer).map_err(io)?;
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    written.keep();
    Ok(())
}

/// Reads a backup's manifest, leaving `reader` at the payload's start.
fn read_manifest(reader: &mut impl BufRead, file: &Path) -> Result<Manifest, BackupError> {
    let not_ours = || BackupError::Refused(format!("{} is not a leadline backup", file.display()));
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(64)
        .read_until(b'\n', &mut line)
        .map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    if line != format!("{MAGIC}\n").as_bytes() {
        return Err(not_ours());
    }
    line.clear();
    reader
        .by_ref()
        .take(64 << 20)
        .read_until(b'\n', &mut line)
        .map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    serde_json::from_slice(&line).map_err(|e| {
        BackupError::Refused(format!(
            "{}: the manifest cannot be read ({e}): the file is damaged",
            file.display()
        ))
    })
}

/// Reads `file`'s manifest only.
///
/// # Errors
/// [`BackupError::Refused`] for a file that is not a backup.
pub fn manifest_of(file: &Path) -> Result<Manifest, BackupError> {
    let f =
        std::fs::File::open(file).map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    read_manifest(&mut BufReader::new(f), file)
}

/// Restores the backup `file` into the database at `url`, which must not
/// exist yet (SQLite) — a restore never overwrites data.
///
/// # Errors
/// [`BackupError::Refused`] for a damaged, truncated or altered file (and
/// then nothing is written); [`BackupError::Target`] for a target that
/// exists or is another backend.
pub async fn restore(file: &Path, url: &str) -> Result<Manifest, BackupError> {
    let f =
        std::fs::File::open(file).map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    let mut reader = BufReader::new(f);
    let manifest = read_manifest(&mut reader, file)?;
    let backend = Backend::from_url(url).map_err(|e| BackupError::Target(e.to_string()))?;
    if manifest.backend != backend.name() {
        return Err(BackupError::Target(format!(
            "this is a {} backup; database.url is {}",
            manifest.backend,
            backend.name()
        )));
    }
    known_schema(&manifest.schema)?;
    if backend == Backend::Postgres {
        return postgres::restore(reader, file, manifest, url).await;
    }
    let target = sqlite_path(url)?;
    // A journal or WAL left beside the target would be applied to the
    // restored file when it is first opened: another database's pages.
    for path in std::iter::once(target.clone())
        .chain(["-wal", "-shm", "-journal"].map(|s| sibling(&target, s)))
    {
        if path.exists() {
            return Err(BackupError::Target(format!(
                "{} exists: restore into a new database file, with no journal or WAL of an \
                 old one beside it (a restore never overwrites data)",
                path.display()
            )));
        }
    }
    // The payload, checked as it is copied beside the target.
    let staged = Scratch(Some(beside(&target, "restore")));
    let staged_path = staged.0.clone().unwrap_or_default();
    let _ = std::fs::remove_file(&staged_path);
    stage(&mut reader, file, &manifest, &staged_path)?;
    // The copy as a database: intact, and holding what the manifest says.
    {
        let mut conn = open_sqlite(&staged_path, true).await?;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        if check != "ok" {
            return Err(BackupError::Refused(format!(
                "{}: the database in it fails its integrity check: {check}",
                file.display()
            )));
        }
        let tables = sqlite_digests(&mut conn).await?;
        let schema = sqlite_schema(&mut conn).await?;
        conn.close().await.map_err(db)?;
        if schema != manifest.schema {
            return Err(BackupError::Refused(format!(
                "{}: its manifest says schema {}, the database in it is at {schema}",
                file.display(),
                manifest.schema
            )));
        }
        let differences = manifest.differences(&tables);
        if !differences.is_empty() {
            return Err(BackupError::Refused(format!(
                "{}: does not hold what its manifest says: {}",
                file.display(),
                differences.join("; ")
            )));
        }
    }
    let staged_path = staged.keep();
    std::fs::rename(&staged_path, &target)
        .map_err(|e| BackupError::Io(target.display().to_string(), e))?;
    Ok(manifest)
}

/// `path` with `suffix` appended to its file name (`leadline.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Refuses a backup whose schema this build does not know: a newer
/// leadline took it, and this one could neither serve nor migrate it.
pub(crate) fn known_schema(schema: &str) -> Result<(), BackupError> {
    use leadline_migrations::migration::MigratorTrait as _;
    let known = leadline_migrations::Migrator::migrations()
        .iter()
        .any(|m| m.name() == schema);
    if known {
        Ok(())
    } else {
        Err(BackupError::Target(format!(
            "it was taken at schema {schema}, which this leadline does not know: restore it \
             with the leadline that took it, or a newer one"
        )))
    }
}

/// Refuses an output path whose directory does not exist, before any work.
pub(crate) fn writable_dir(out: &Path) -> Result<(), BackupError> {
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(BackupError::Target(format!(
            "{}: the directory {} does not exist",
            out.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Copies the payload from `reader` to the new file `staged`, checking it
/// against the manifest as it goes: never longer, never shorter, and the
/// same SHA-256.
///
/// # Errors
/// [`BackupError::Refused`] naming how the file (`file`) is damaged.
fn stage(
    reader: &mut impl Read,
    file: &Path,
    manifest: &Manifest,
    staged_path: &Path,
) -> Result<(), BackupError> {
    let io = |e| BackupError::Io(staged_path.display().to_string(), e);
    let mut out = create_private(staged_path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut len = 0_u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| BackupError::Io(file.display().to_string(), e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
        if len > manifest.payload_bytes {
            return Err(BackupError::Refused(format!(
                "{}: longer than its manifest says ({} bytes): the file is damaged",
                file.display(),
                manifest.payload_bytes
            )));
        }
        out.write_all(&buf[..n]).map_err(io)?;
    }
    if len < manifest.payload_bytes {
        return Err(BackupError::Refused(format!(
            "{}: truncated ({len} of {} bytes)",
            file.display(),
            manifest.payload_bytes
        )));
    }
    if leadline_domain::audit::hex(&hash.finalize()) != manifest.payload_sha256 {
        return Err(BackupError::Refused(format!(
            "{}: corrupt (the content's SHA-256 is not the manifest's)",
            file.display()
        )));
    }
    out.sync_all().map_err(io)?;
    Ok(())
}

/// Every table's digest of the SQLite database at `url`, as a restore
/// compares them (for tests and `leadline backup verify`).
///
/// # Errors
/// [`BackupError`].
pub async fn digests(url: &str) -> Result<Vec<TableDigest>, BackupError> {
    let path = sqlite_path(url)?;
    let mut conn = open_sqlite(&path, true).await?;
    let tables = sqlite_digests(&mut conn).await?;
    conn.close().await.map_err(db)?;
    Ok(tables)
}
