//! PostgreSQL backups: `pg_dump` and `pg_restore`, reading as
//! `leadline_backup` (migration 26).
//!
//! Every tenant table has FORCE ROW LEVEL SECURITY: a dump by the owner, or
//! by any role without `BYPASSRLS`, reads every table as empty and
//! succeeds. A backup therefore runs as the owner's login with `pg_dump
//! --role leadline_backup --enable-row-security`, reading through the
//! role's `backup_reading` policies, and refuses to start while any table
//! lacks that policy or the role's `SELECT`. The manifest's counts and
//! digests are taken as the same role in the transaction whose snapshot
//! `pg_dump` dumps (`--snapshot`), so they describe exactly the dump, taken
//! while the service keeps writing.
//!
//! A restore goes into an empty database, as a role of the original
//! owner's name (the owner's own policies name it): the payload is checked
//! against the manifest first, the service and backup roles are created if
//! the cluster lacks them, `pg_restore` runs in one transaction, and every
//! table's count and digest is compared with the manifest's. Row-level
//! security comes back as it was (policies, ENABLE and FORCE are in the
//! dump).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use leadline_domain::backup::{Manifest, TableDigest};
use sea_orm::sqlx::{self, Connection, Row, postgres::PgConnection};
use sha2::{Digest, Sha256};

use super::{BackupError, Scratch, beside, db, sha256_file, stage, write_backup};

/// The backup role.
const ROLE: &str = leadline_migrations::BACKUP_ROLE;

/// A PostgreSQL client tool: from `LEADLINE_PG_BIN_DIR`, else `PATH`, else
/// the newest `/usr/lib/postgresql/*/bin` (Debian's layout, where `PATH`
/// may hold none).
fn tool(name: &str) -> Result<PathBuf, BackupError> {
    if let Some(dir) = std::env::var_os("LEADLINE_PG_BIN_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join(name));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if let Some(found) = on_path {
        return Ok(found);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .max_by_key(|(v, _)| *v);
    newest.map(|(_, p)| p).ok_or_else(|| {
        BackupError::Target(format!(
            "`{name}` was not found (PATH, /usr/lib/postgresql/*/bin): install the PostgreSQL \
             client of the server's version, or set LEADLINE_PG_BIN_DIR"
        ))
    })
}

/// Runs a client tool on the database at `url`, the password handed over
/// in its environment (never on a command line others can read).
fn run_tool(name: &str, url: &str, args: &[&str]) -> Result<(), BackupError> {
    let (url, password) = without_password(url)?;
    let mut command = Command::new(tool(name)?);
    command.arg("--dbname").arg(&url).args(args);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let out = command
        .output()
        .map_err(|e| BackupError::Io(name.to_owned(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BackupError::Database(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `url` without its password, and the password: from the user part
/// (percent-decoded: `+` stays a plus) or from a `password` query pair.
fn without_password(url: &str) -> Result<(String, Option<String>), BackupError> {
    let mut parsed = url::Url::parse(url).map_err(|e| BackupError::Target(e.to_string()))?;
    // In the user part a password is percent-encoded (`+` is a plus);
    // one in the query (`?password=`) is moved out too.
    let mut password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = parsed.set_password(None);
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| k == "password") {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &pairs {
            if key == "password" {
                password = Some(value.clone());
            } else {
                query.append_pair(key, value);
            }
        }
        let query = query.finish();
        parsed.set_query((!query.is_empty()).then_some(query.as_str()));
    }
    Ok((parsed.to_string(), password))
}

/// The tables a backup could not read whole: without the backup role's
/// `SELECT`, or under row-level security without its policy.
async fn unreadable(conn: &mut PgConnection) -> Result<Vec<String>, BackupError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(ROLE)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !exists {
        return Err(BackupError::Target(format!(
            "the server has no {ROLE} role: run `leadline migrate` (migration 26 makes it)"
        )));
    }
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'm')
            AND (NOT has_table_privilege($1, c.oid, 'SELECT')
                 OR (c.relrowsecurity AND NOT EXISTS (
                        SELECT 1 FROM pg_policy p
                         WHERE p.polrelid = c.oid AND p.polname = 'backup_reading'
                           AND p.polcmd IN ('r', '*') AND p.polpermissive
                           AND (SELECT oid FROM pg_roles WHERE rolname = $1) = ANY (p.polroles))))
          ORDER BY 1",
    )
    .bind(ROLE)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)
}

/// Every table's row count and digest, read in the caller's transaction
/// as the backup role: the SHA-256 of the count and of the sum of each
/// row's text's MD5 (its first 64 bits), which needs no order and no
/// memory beyond one row, and is the same for the same rows.
async fn digests(conn: &mut PgConnection) -> Result<Vec<TableDigest>, BackupError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        // The name comes from the catalog, quoted.
        let sql = format!(
            "SELECT count(*)::bigint AS n, \
                    coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text AS s \
               FROM public.\"{}\" t",
            table.replace('"', "\"\"")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        let rows: i64 = row.try_get("n").map_err(db)?;
        let sum: String = row.try_get("s").map_err(db)?;
        let rows = u64::try_from(rows).unwrap_or(0);
        out.push(TableDigest {
            sha256: leadline_domain::audit::hex(&Sha256::digest(format!("{rows}:{sum}"))),
            table,
            rows,
        });
    }
    Ok(out)
}

/// Begins a repeatable-read, read-only transaction reading as the backup
/// role, rows rendered the same way whatever the server's or session's
/// defaults (digests compare text).
async fn begin_as_backup(conn: &mut PgConnection) -> Result<(), BackupError> {
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL ROLE leadline_backup; \
         SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
         SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1; \
         SET LOCAL bytea_output = 'hex'",
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn member_of_backup(conn: &mut PgConnection) -> Result<(), BackupError> {
    let (user, member): (String, bool) =
        sqlx::query_as("SELECT current_user::text, pg_has_role(current_user, $1, 'MEMBER')")
            .bind(ROLE)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if member {
        Ok(())
    } else {
        // Never suggest granting it to another login: its policies show
        // every tenant's rows, and the service login must see one.
        Err(BackupError::Target(format!(
            "{user} is not a member of {ROLE}: back up with the schema owner's URL \
             (database.migration_url), which migration 26 made a member"
        )))
    }
}

/// Backs up the database at `url` (the owner's) into `out`.
pub(super) async fn backup(url: &str, out: &Path) -> Result<Manifest, BackupError> {
    let mut conn = PgConnection::connect(url).await.map_err(db)?;
    let unreadable = unreadable(&mut conn).await?;
    if !unreadable.is_empty() {
        return Err(BackupError::Target(format!(
            "{ROLE} cannot read every row of {}: a dump would miss them (run `leadline migrate`)",
            unreadable.join(", ")
        )));
    }
    member_of_backup(&mut conn).await?;
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c \
          WHERE c.oid = 'public.seaql_migrations'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(db)?;
    let schema: String =
        sqlx::query_scalar("SELECT coalesce(max(version), '') FROM seaql_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
    let created_at = crate::now();
    begin_as_backup(&mut conn).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .map_err(db)?;
    let tables = digests(&mut conn).await?;
    let copy = Scratch(Some(beside(out, "dump")));
    let copy_path = copy.0.clone().unwrap_or_default();
    let _ = std::fs::remove_file(&copy_path);
    let dump_to = copy_path.to_string_lossy().into_owned();
    // The snapshot lives as long as this transaction: pg_dump runs inside.
    let source = url.to_owned();
    let dumped = tokio::task::spawn_blocking(move || {
        run_tool(
            "pg_dump",
            &source,
            &[
                "--format=custom",
                "--role",
                ROLE,
                "--enable-row-security",
                "--snapshot",
                &snapshot,
                "--file",
                &dump_to,
            ],
        )
    })
    .await
    .map_err(|e| BackupError::Database(e.to_string()))?;
    let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    dumped?;
    let (payload_bytes, payload_sha256) = sha256_file(&copy_path)?;
    let manifest = Manifest {
        backend: "postgres".to_owned(),
        owner: Some(owner),
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

/// Restores the payload in `reader` into the empty database at `url`.
pub(super) async fn restore(
    mut reader: impl Read,
    file: &Path,
    manifest: Manifest,
    url: &str,
) -> Result<Manifest, BackupError> {
    let mut conn = PgConnection::connect(url).await.map_err(db)?;
    let (user, database, objects): (String, String, i64) = sqlx::query_as(
        "SELECT current_user::text, current_database()::text, \
                (SELECT count(*) FROM pg_class c \
                  WHERE c.relnamespace = 'public'::regnamespace \
                    AND c.relkind IN ('r', 'p', 'v', 'm', 'S'))",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(db)?;
    if objects > 0 {
        return Err(BackupError::Target(format!(
            "database {database} is not empty: restore into a new, empty database \
             (a restore never overwrites data)"
        )));
    }
    if let Some(owner) = manifest.owner.as_deref().filter(|o| *o != user) {
        return Err(BackupError::Target(format!(
            "restore as {owner}, the role that owned the backed-up database (its policies name \
             it); connected as {user}"
        )));
    }
    // Checked before anything is written.
    let staged = Scratch(Some(beside(file, "restore")));
    let staged_path = staged.0.clone().unwrap_or_default();
    let _ = std::fs::remove_file(&staged_path);
    stage(&mut reader, file, &manifest, &staged_path)?;
    // The roles the dump's grants and policies name.
    for role in ["leadline_service", ROLE] {
        let sql = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
             CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS; \
             END IF; END $$"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| {
                BackupError::Target(format!(
                    "the cluster has no {role} role and {user} cannot create it: {e}"
                ))
            })?;
    }
    let restore_from = staged_path.to_string_lossy().into_owned();
    let target = url.to_owned();
    tokio::task::spawn_blocking(move || {
        run_tool(
            "pg_restore",
            &target,
            &[
                "--exit-on-error",
                "--single-transaction",
                "--no-owner",
                // Rows load before their tables' row-level security is
                // enabled (it is post-data); what runs after, refreshing
                // the analytics views, reads through the owner's own
                // policies, which `row_security = off` would refuse.
                "--enable-row-security",
                &restore_from,
            ],
        )
    })
    .await
    .map_err(|e| BackupError::Database(e.to_string()))??;
    drop(staged);
    sqlx::query("SELECT leadline_grant_backup_membership()")
        .execute(&mut conn)
        .await
        .map_err(db)?;
    begin_as_backup(&mut conn).await?;
    let tables = digests(&mut conn).await?;
    let schema: String =
        sqlx::query_scalar("SELECT coalesce(max(version), '') FROM seaql_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
    let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    let mut differences = manifest.differences(&tables);
    if schema != manifest.schema {
        differences.push(format!(
            "schema {schema}, the manifest says {}",
            manifest.schema
        ));
    }
    if differences.is_empty() {
        renumber_logs(url).await?;
        Ok(manifest)
    } else {
        Err(BackupError::Refused(format!(
            "{}: the restored database {database} does not hold what the manifest says ({}); \
             drop it",
            file.display(),
            differences.join("; ")
        )))
    }
}

/// Positions in the audit trail and the change log are `(tx, seq)`, `tx`
/// the writing transaction's id, read below the oldest running one
/// (`pg_snapshot_xmin`). Another cluster's transaction ids mean nothing
/// here: restored into a cluster whose counter is behind them, the rows
/// would stay above every horizon (the change feed would hide them, the
/// sealer never reach them). Such a restore renumbers both logs in their
/// order: every row moves to `tx` 3 (the first normal transaction id, below
/// any this cluster will hand out) with its rank as `seq`, and the places
/// that point into the change log (each tenant's pruning horizon, each
/// webhook's cursor and dead letters) move with them. A restore into the
/// cluster it came from keeps every position.
const RENUMBER: &str = r"
CREATE TEMP TABLE restored_audit ON COMMIT DROP AS
    SELECT tenant_id, tx, seq, row_number() OVER (ORDER BY tx, seq) AS n FROM audit_log;
CREATE TEMP TABLE restored_changes ON COMMIT DROP AS
    SELECT tenant_id, tx, seq, row_number() OVER (ORDER BY tx, seq) AS n FROM changes;
ALTER TABLE audit_log ALTER COLUMN seq SET GENERATED BY DEFAULT;
ALTER TABLE changes ALTER COLUMN seq SET GENERATED BY DEFAULT;
-- Negative first, so that no new position meets an old one.
UPDATE audit_log a SET tx = '3', seq = -o.n
  FROM restored_audit o WHERE a.tenant_id = o.tenant_id AND a.tx = o.tx AND a.seq = o.seq;
UPDATE audit_log SET seq = -seq WHERE seq < 0;
UPDATE changes c SET tx = '3', seq = -o.n
  FROM restored_changes o WHERE c.tenant_id = o.tenant_id AND c.tx = o.tx AND c.seq = o.seq;
UPDATE changes SET seq = -seq WHERE seq < 0;
ALTER TABLE audit_log ALTER COLUMN seq SET GENERATED ALWAYS;
ALTER TABLE changes ALTER COLUMN seq SET GENERATED ALWAYS;
-- What pointed at a change now points at the last change at or before it.
UPDATE change_horizons h
   SET seq = coalesce((SELECT max(o.n) FROM restored_changes o
                        WHERE o.tenant_id = h.tenant_id AND (o.tx, o.seq) <= (h.tx, h.seq)), 0),
       tx = '3';
ALTER TABLE webhooks NO FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_dead_letters NO FORCE ROW LEVEL SECURITY;
UPDATE webhooks w
   SET after_seq = m.n, after_tx = CASE WHEN m.n = 0 THEN 0 ELSE 3 END
  FROM (SELECT w2.tenant_id, w2.id,
               coalesce((SELECT max(o.n) FROM restored_changes o
                          WHERE o.tenant_id = w2.tenant_id
                            AND (o.tx::text::bigint, o.seq) <= (w2.after_tx, w2.after_seq)), 0) AS n
          FROM webhooks w2) m
 WHERE w.tenant_id = m.tenant_id AND w.id = m.id;
UPDATE webhook_dead_letters d SET tx = 3, seq = o.n
  FROM restored_changes o
 WHERE o.tenant_id = d.tenant_id AND o.tx::text::bigint = d.tx AND o.seq = d.seq;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_dead_letters FORCE ROW LEVEL SECURITY;
";

/// Renumbers the restored logs when their transaction ids are ahead of
/// this cluster's ([`RENUMBER`]), in one transaction.
async fn renumber_logs(url: &str) -> Result<(), BackupError> {
    let mut conn = PgConnection::connect(url).await.map_err(db)?;
    let ahead: bool = sqlx::query_scalar(
        "SELECT coalesce(greatest((SELECT max(tx) FROM audit_log), (SELECT max(tx) FROM changes), \
                                  (SELECT max(tx) FROM change_horizons)) \
                         >= pg_snapshot_xmin(pg_current_snapshot()), false)",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(db)?;
    if ahead {
        let mut txn = conn.begin().await.map_err(db)?;
        sqlx::raw_sql(RENUMBER)
            .execute(&mut *txn)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
    }
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_whole_and_decoded() {
        let (url, password) =
            without_password("postgres://owner:p%2Bq+r%26s@db.example:5432/leadline")
                .expect("a valid url");
        assert_eq!(url, "postgres://owner@db.example:5432/leadline");
        assert_eq!(password.as_deref(), Some("p+q+r&s"));
        let (url, password) =
            without_password("postgres://owner@db/leadline?sslmode=require&password=se%2Bcret")
                .expect("a valid url");
        assert_eq!(url, "postgres://owner@db/leadline?sslmode=require");
        assert_eq!(password.as_deref(), Some("se+cret"));
        let (url, password) =
            without_password("postgres://owner@db/leadline").expect("a valid url");
        assert_eq!(
            (url.as_str(), password),
            ("postgres://owner@db/leadline", None)
        );
    }
}
