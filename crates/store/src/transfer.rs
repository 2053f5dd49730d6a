//! Moving one tenant between deployments: `leadline tenant export SLUG
//! --out FILE` and `leadline tenant import FILE`, PostgreSQL and SQLite
//! either way, every id kept.
//!
//! The file is `TENANT_MAGIC`, a newline, the manifest
//! ([`TenantManifest`]) as one line of JSON, then one line per row,
//! `{"table": …, "row": {column: value}}`, tables in an order their
//! foreign keys allow and the audit trail and change log in log order.
//! Values are written as the source holds them (a uuid as text from
//! PostgreSQL, as 16 bytes from SQLite; bytes as `{"hex": …}`; a time in
//! the RFC 3339 form SQLite stores; JSON as its text, byte for byte, since
//! an audit record's hash covers its text) and converted by the target's
//! own column types on import, so nothing has to name a column's type twice.
//!
//! What is not moved: sessions, login links and sign-in attempts (people
//! sign in again), stored idempotent responses, the search vocabulary (the
//! target's triggers rebuild it from the leads), the change log's
//! horizons, and the change log's and audit trail's positions: the target
//! numbers the rows anew, in the same order, so each chain still verifies
//! while the change feed's ids start over. A webhook's cursor travels as
//! how many of the tenant's changes it had passed, and lands on the
//! target's position of the last of them; a webhook dead letter, as the
//! rank of its change, and lands on that change's new position (so its
//! `change_id` still reads that change again). A dead letter whose change
//! retention had already removed is not moved: it names nothing the
//! target holds.
//!
//! The export reads one snapshot, as the owner in the tenant's context (so
//! row-level security shows it that tenant only). The import runs in one
//! transaction as the owner, into a database at the same migration that
//! holds no tenant of that id or slug, checks every table's lines against
//! the manifest as it goes, and commits only if all match.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
};

use chrono::{DateTime, Utc};
use leadline_domain::backup::{TENANT_MAGIC, TableDigest, TenantManifest};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult,
    Statement, TransactionTrait, Value,
};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use crate::{
    Backend,
    backup::{BackupError, Scratch, create_private},
    params::Params,
};

/// The tables moved, parents first.
const TABLES: &[&str] = &[
    "tenants",
    "agents",
    "users",
    "api_keys",
    "leads",
    "approvals",
    "events",
    "events_archive",
    "outbox",
    "delivery_attempts",
    "email_senders",
    "imports",
    "import_rejects",
    "webhooks",
    "webhook_dead_letters",
    "retention_policies",
    "audit_log",
    "changes",
];

/// Columns the target numbers itself: the log positions.
fn renumbered(table: &str, column: &str) -> bool {
    matches!(table, "audit_log" | "changes") && matches!(column, "tx" | "seq")
}

/// A column as the database declares it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// PostgreSQL: the type's name (`uuid`, `timestamptz`, `int4`, …);
    /// SQLite: the declared type, upper-cased (`BLOB`, `TEXT`, `INTEGER`).
    kind: String,
}

fn db(e: impl std::fmt::Display) -> BackupError {
    BackupError::Database(e.to_string())
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table`'s stored columns, generated ones left out.
async fn columns(
    conn: &impl ConnectionTrait,
    backend: Backend,
    table: &str,
) -> Result<Vec<Column>, BackupError> {
    let mut p = Params::new(backend);
    let sql = match backend {
        Backend::Postgres => format!(
            "SELECT column_name::text AS name, udt_name::text AS kind FROM information_schema.columns \
              WHERE table_schema = 'public' AND table_name = {} AND is_generated = 'NEVER' \
              ORDER BY ordinal_position",
            p.push(table)
        ),
        Backend::Sqlite => format!(
            "SELECT name, upper(type) AS kind FROM pragma_table_xinfo({}) WHERE hidden = 0 ORDER BY cid",
            p.push(table)
        ),
    };
    let rows = conn.query_all_raw(p.statement(sql)).await.map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.try_get("", "name").map_err(db)?;
        let kind: String = row.try_get("", "kind").map_err(db)?;
        if !renumbered(table, &name) {
            out.push(Column { name, kind });
        }
    }
    if out.is_empty() {
        return Err(BackupError::Target(format!(
            "the database has no table {table}"
        )));
    }
    Ok(out)
}

/// A time as SQLite stores it (and as the file carries it).
fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

fn hex_value(bytes: &[u8]) -> Json {
    json!({ "hex": leadline_domain::audit::hex(bytes) })
}

/// The SELECT list reading `columns` in forms [`value`] decodes.
fn select_list(backend: Backend, columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| {
            let q = quoted(&c.name);
            match (backend, c.kind.as_str()) {
                (Backend::Postgres, "uuid" | "json" | "jsonb") => format!("{q}::text AS {q}"),
                (Backend::Postgres, "int2" | "int4") => format!("{q}::int8 AS {q}"),
                _ => q,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One column of a row read by [`select_list`], as the file carries it.
fn value(row: &QueryResult, backend: Backend, c: &Column) -> Result<Json, BackupError> {
    let name = c.name.as_str();
    let get_text = || row.try_get::<Option<String>>("", name).map_err(db);
    Ok(match (backend, c.kind.as_str()) {
        (Backend::Postgres, "timestamptz") => row
            .try_get::<Option<DateTime<Utc>>>("", name)
            .map_err(db)?
            .map_or(Json::Null, |t| Json::String(time_text(t))),
        (Backend::Postgres, "int2" | "int4" | "int8") | (Backend::Sqlite, "INTEGER") => row
            .try_get::<Option<i64>>("", name)
            .map_err(db)?
            .map_or(Json::Null, Json::from),
        (Backend::Postgres, "bool") => row
            .try_get::<Option<bool>>("", name)
            .map_err(db)?
            .map_or(Json::Null, Json::Bool),
        (Backend::Postgres, "bytea") | (Backend::Sqlite, "BLOB") => row
            .try_get::<Option<Vec<u8>>>("", name)
            .map_err(db)?
            .map_or(Json::Null, |b| hex_value(&b)),
        (Backend::Postgres, "text" | "varchar" | "uuid" | "json" | "jsonb")
        | (Backend::Sqlite, _) => get_text()?.map_or(Json::Null, Json::String),
        (Backend::Postgres, other) => {
            return Err(BackupError::Target(format!(
                "column {name} has type {other}, which a tenant export does not carry"
            )));
        }
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.len()
        .is_multiple_of(2)
        .then(|| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .flatten()
}

/// The bytes a file value holds: `{"hex": …}`, or a uuid's text (from
/// PostgreSQL) as its 16 bytes.
fn bytes_of(v: &Json) -> Option<Vec<u8>> {
    match v {
        Json::Object(m) => m.get("hex").and_then(Json::as_str).and_then(unhex),
        Json::String(s) => s.parse::<uuid::Uuid>().ok().map(|u| u.as_bytes().to_vec()),
        _ => None,
    }
}

/// A file value bound for `c` of the target, with the SQL that takes it.
fn bind(p: &mut Params, backend: Backend, c: &Column, v: &Json) -> Result<String, String> {
    let bad = || format!("{}: {v} does not fit a {} column", c.name, c.kind);
    if backend == Backend::Postgres {
        let kind = c.kind.as_str();
        let placeholder = match (kind, v) {
            (_, Json::Null) => p.push(Value::String(None)),
            ("bytea", _) => p.push(bytes_of(v).ok_or_else(bad)?),
            ("uuid", Json::Object(_)) => {
                let bytes = bytes_of(v).ok_or_else(bad)?;
                let id = uuid::Uuid::from_slice(&bytes).map_err(|_| bad())?;
                p.push(id.to_string())
            }
            ("bool", Json::Bool(b)) => p.push(*b),
            ("bool", Json::Number(n)) => p.push(n.as_i64().ok_or_else(bad)? != 0),
            ("int2" | "int4" | "int8", Json::Number(n)) => p.push(n.as_i64().ok_or_else(bad)?),
            (_, Json::String(s)) => p.push(s.clone()),
            _ => return Err(bad()),
        };
        return Ok(format!("CAST({placeholder} AS {kind})"));
    }
    Ok(match (c.kind.as_str(), v) {
        (_, Json::Null) => p.push(Value::String(None)),
        ("BLOB", _) => p.push(bytes_of(v).ok_or_else(bad)?),
        ("INTEGER", Json::Bool(b)) => p.push(i64::from(*b)),
        ("INTEGER", Json::Number(n)) => p.push(n.as_i64().ok_or_else(bad)?),
        (_, Json::String(s)) => p.push(s.clone()),
        _ => return Err(bad()),
    })
}

/// Begins a transaction (PostgreSQL: a repeatable-read snapshot when
/// `read_only`).
async fn begin(
    conn: &DatabaseConnection,
    backend: Backend,
    read_only: bool,
) -> Result<DatabaseTransaction, BackupError> {
    let txn = conn.begin().await.map_err(db)?;
    if backend == Backend::Postgres && read_only {
        txn.execute_unprepared("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db)?;
    }
    Ok(txn)
}

/// PostgreSQL: sets `setting` (`app.tenant_id`, `app.tenant_slug`) for
/// the transaction, which the tenant policies read: they then show and
/// take that tenant's rows only.
async fn scope(
    txn: &DatabaseTransaction,
    backend: Backend,
    setting: &str,
    value: &str,
) -> Result<(), BackupError> {
    if backend == Backend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config($1, $2, true)",
            [setting.into(), value.into()],
        ))
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn schema_of(conn: &impl ConnectionTrait, backend: Backend) -> Result<String, BackupError> {
    let row = conn
        .query_one_raw(Statement::from_string(
            backend.db(),
            "SELECT coalesce(max(version), '') AS v FROM seaql_migrations",
        ))
        .await
        .map_err(|e| {
            BackupError::Target(format!(
                "the database has no schema to read ({e}): run `leadline migrate` first"
            ))
        })?;
    row.map_or(Ok(String::new()), |r| r.try_get("", "v").map_err(db))
}

/// Exports the tenant `slug` of the database at `url` (the owner's, on
/// PostgreSQL) into the new file `out`.
///
/// # Errors
/// [`BackupError`] naming what failed; `out` is not left half written.
pub async fn export_tenant(
    url: &str,
    slug: &str,
    out: &Path,
) -> Result<TenantManifest, BackupError> {
    crate::backup::writable_dir(out)?;
    let backend = Backend::from_url(url).map_err(|e| BackupError::Target(e.to_string()))?;
    let conn = Database::connect(url).await.map_err(db)?;
    let schema = schema_of(&conn, backend).await?;
    let rows_file = Scratch(Some(crate::backup::beside(out, "rows")));
    let rows_path = rows_file.0.clone().unwrap_or_default();
    let _ = std::fs::remove_file(&rows_path);
    let io = |e| BackupError::Io(rows_path.display().to_string(), e);
    let mut rows_out = std::io::BufWriter::new(create_private(&rows_path)?);
    let created_at = crate::now();
    let txn = begin(&conn, backend, true).await?;
    // The slug's policy shows its tenant's row; then the tenant's policies
    // show its rows.
    scope(&txn, backend, "app.tenant_slug", slug).await?;
    let mut p = Params::new(backend);
    let sql = format!("SELECT id FROM tenants WHERE slug = {}", p.push(slug));
    let tenant: uuid::Uuid = txn
        .query_one_raw(p.statement(sql))
        .await
        .map_err(db)?
        .ok_or_else(|| BackupError::Target(format!("no tenant has the slug {slug}")))?
        .try_get("", "id")
        .map_err(db)?;
    scope(&txn, backend, "app.tenant_id", &tenant.to_string()).await?;
    let mut tables = Vec::new();
    for table in TABLES {
        let columns = columns(&txn, backend, table).await?;
        let key = if *table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let order = match (backend, *table) {
            (Backend::Postgres, "audit_log" | "changes") => " ORDER BY tx, seq",
            (Backend::Sqlite, "audit_log" | "changes") => " ORDER BY seq",
            _ => "",
        };
        let mut p = Params::new(backend);
        let sql = format!(
            "SELECT {} FROM {table} WHERE {key} = {}{order}",
            select_list(backend, &columns),
            p.push(tenant)
        );
        let rows = txn.query_all_raw(p.statement(sql)).await.map_err(db)?;
        let mut hash = Sha256::new();
        let mut written = 0_u64;
        for row in &rows {
            let mut object = Map::new();
            for c in &columns {
                object.insert(c.name.clone(), value(row, backend, c)?);
            }
            if *table == "webhooks" {
                // Its cursor, as how many of the tenant's changes it had
                // passed: the target numbers the changes anew.
                let at = position(&object, "after_tx", "after_seq");
                let (rank, _) = changes_passed(&txn, backend, tenant, at).await?;
                object.insert(PASSED.to_owned(), Json::from(rank));
            }
            if *table == "webhook_dead_letters" {
                // Its change, by rank, as a cursor's; one whose change
                // retention already removed names nothing the target has.
                let at = position(&object, "tx", "seq");
                match changes_passed(&txn, backend, tenant, at).await? {
                    (rank, true) => object.insert(PASSED.to_owned(), Json::from(rank)),
                    (_, false) => continue,
                };
            }
            let line = json!({ "table": table, "row": object }).to_string();
            hash.update(line.as_bytes());
            hash.update(b"\n");
            writeln!(rows_out, "{line}").map_err(io)?;
            written += 1;
        }
        tables.push(TableDigest {
            table: (*table).to_owned(),
            rows: written,
            sha256: leadline_domain::audit::hex(&hash.finalize()),
        });
    }
    txn.commit().await.map_err(db)?;
    let _ = conn.close().await;
    rows_out.flush().map_err(io)?;
    drop(rows_out);
    let manifest = TenantManifest {
        tenant_id: tenant,
        slug: slug.to_owned(),
        backend: backend.name().to_owned(),
        created_at,
        leadline: env!("CARGO_PKG_VERSION").to_owned(),
        schema,
        tables,
    };
    let header = format!(
        "{TENANT_MAGIC}\n{}\n",
        serde_json::to_string(&manifest).map_err(db)?
    );
    crate::backup::write_file(out, header.as_bytes(), &rows_path)?;
    Ok(manifest)
}

/// Imports the tenant export `file` into the database at `url` (the
/// owner's, on PostgreSQL).
///
/// # Errors
/// [`BackupError::Refused`] for a damaged file (nothing is written);
/// [`BackupError::Target`] for a target at another migration or already
/// holding the tenant's id or slug.
pub async fn import_tenant(file: &Path, url: &str) -> Result<TenantManifest, BackupError> {
    let backend = Backend::from_url(url).map_err(|e| BackupError::Target(e.to_string()))?;
    let io = |e| BackupError::Io(file.display().to_string(), e);
    let mut reader = BufReader::new(std::fs::File::open(file).map_err(io)?);
    let damaged = |why: String| BackupError::Refused(format!("{}: {why}", file.display()));
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    if line.trim_end() != TENANT_MAGIC {
        return Err(damaged("not a leadline tenant export".to_owned()));
    }
    line.clear();
    reader.read_line(&mut line).map_err(io)?;
    let manifest: TenantManifest = serde_json::from_str(&line)
        .map_err(|e| damaged(format!("the manifest cannot be read ({e})")))?;
    let conn = Database::connect(url).await.map_err(db)?;
    let schema = schema_of(&conn, backend).await?;
    if schema != manifest.schema {
        return Err(BackupError::Target(format!(
            "the export is of schema {} and this database is at {schema}: migrate both to the \
             same version first",
            manifest.schema
        )));
    }
    let tenant = manifest.tenant_id;
    let txn = begin(&conn, backend, false).await?;
    scope(&txn, backend, "app.tenant_id", &tenant.to_string()).await?;
    scope(&txn, backend, "app.tenant_slug", &manifest.slug).await?;
    // Nobody of that id or slug.
    let mut p = Params::new(backend);
    let sql = format!(
        "SELECT count(*) AS n FROM tenants WHERE id = {} OR slug = {}",
        p.push(tenant),
        p.push(manifest.slug.clone())
    );
    let taken: i64 = txn
        .query_one_raw(p.statement(sql))
        .await
        .map_err(db)?
        .map_or(Ok(0), |r| r.try_get("", "n"))
        .map_err(db)?;
    if taken > 0 {
        return Err(BackupError::Target(format!(
            "this database already holds tenant {} or the slug {}: an import never overwrites",
            tenant, manifest.slug
        )));
    }
    let mut targets: std::collections::HashMap<String, Vec<Column>> = Default::default();
    for table in TABLES {
        targets.insert((*table).to_owned(), columns(&txn, backend, table).await?);
    }
    let mut seen: std::collections::BTreeMap<String, (u64, Sha256)> = Default::default();
    // SQLite seals each audit record as it is written; one the source had
    // not sealed yet is sealed here, after its predecessor.
    let mut chain_head = leadline_domain::audit::GENESIS;
    let mut passed: Vec<(Json, i64)> = Vec::new();
    let mut letters: Vec<Map<String, Json>> = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let text = line.trim_end_matches('\n');
        let parsed: Json = serde_json::from_str(text)
            .map_err(|e| damaged(format!("a row cannot be read ({e})")))?;
        let table = parsed["table"].as_str().unwrap_or_default().to_owned();
        let Some(columns) = targets.get(&table) else {
            return Err(damaged(format!("a row of an unknown table {table:?}")));
        };
        let entry = seen
            .entry(table.clone())
            .or_insert_with(|| (0, Sha256::new()));
        entry.0 += 1;
        entry.1.update(text.as_bytes());
        entry.1.update(b"\n");
        let mut row = parsed["row"]
            .as_object()
            .cloned()
            .ok_or_else(|| damaged(format!("a {table} row is not an object")))?;
        // Every row is the manifest's tenant's: a file cannot write into
        // another tenant (the owner's own policies would let it).
        let key = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        if row.get(key).and_then(bytes_of).as_deref() != Some(tenant.as_bytes().as_slice()) {
            return Err(damaged(format!(
                "a {table} row belongs to another tenant than the manifest's"
            )));
        }
        if table == "audit_log" && backend == Backend::Sqlite {
            seal(&mut row, &mut chain_head).map_err(&damaged)?;
        }
        if table == "webhooks" {
            let rank = row.get(PASSED).and_then(Json::as_i64).unwrap_or(0);
            passed.push((row.get("id").cloned().unwrap_or(Json::Null), rank));
        }
        if table == "webhook_dead_letters" {
            // Written once the changes are, at its change's new position.
            letters.push(row);
            continue;
        }
        insert(&txn, backend, &table, columns, &row, damaged).await?;
    }
    let read: Vec<TableDigest> = seen
        .into_iter()
        .map(|(table, (rows, hash))| TableDigest {
            table,
            rows,
            sha256: leadline_domain::audit::hex(&hash.finalize()),
        })
        .collect();
    let wanted: Vec<&TableDigest> = manifest.tables.iter().filter(|t| t.rows > 0).collect();
    let mut differences = Vec::new();
    for want in &wanted {
        match read.iter().find(|t| t.table == want.table) {
            Some(got) if got == *want => {}
            Some(got) => differences.push(format!(
                "{}: {} rows read, the manifest says {}{}",
                want.table,
                got.rows,
                want.rows,
                if got.rows == want.rows {
                    " (content differs)"
                } else {
                    ""
                }
            )),
            None => differences.push(format!("{}: missing", want.table)),
        }
    }
    for got in &read {
        if !wanted.iter().any(|w| w.table == got.table) {
            differences.push(format!("{}: not in the manifest", got.table));
        }
    }
    if differences.is_empty() {
        place_cursors(&txn, backend, tenant, &passed).await?;
        let columns = targets
            .get("webhook_dead_letters")
            .map_or(&[][..], Vec::as_slice);
        for mut row in letters {
            // A file from before dead letters carried their change's rank
            // keeps the source's position, as that version imported it.
            if let Some(rank) = row.get(PASSED).and_then(Json::as_i64) {
                let (tx, seq) = nth_change(&txn, backend, tenant, rank)
                    .await?
                    .ok_or_else(|| {
                        damaged(format!(
                            "a webhook dead letter names change {rank}, which the file does not hold"
                        ))
                    })?;
                row.insert("tx".to_owned(), Json::from(tx));
                row.insert("seq".to_owned(), Json::from(seq));
            }
            insert(
                &txn,
                backend,
                "webhook_dead_letters",
                columns,
                &row,
                damaged,
            )
            .await?;
        }
    }
    if !differences.is_empty() {
        // Dropped, the transaction rolls back: nothing was imported.
        return Err(damaged(format!(
            "does not hold what its manifest says: {}",
            differences.join("; ")
        )));
    }
    txn.commit().await.map_err(db)?;
    let _ = conn.close().await;
    Ok(manifest)
}

/// The export's note on a webhook row: how many of the tenant's changes
/// its cursor had passed.
const PASSED: &str = "changes_passed";

/// The log position an exported row holds in its columns named `tx` and
/// `seq`.
fn position(row: &Map<String, Json>, tx: &str, seq: &str) -> (i64, i64) {
    let at = |c: &str| row.get(c).and_then(Json::as_i64).unwrap_or(0);
    (at(tx), at(seq))
}

/// How many of `tenant`'s changes lie at or before the log position
/// `(tx, seq)` (SQLite's `tx` is 0), and whether a change sits at it.
async fn changes_passed(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: uuid::Uuid,
    (tx, seq): (i64, i64),
) -> Result<(i64, bool), BackupError> {
    let mut p = Params::new(backend);
    let sql = match backend {
        Backend::Postgres => format!(
            "SELECT count(*) AS n, \
                    count(*) FILTER (WHERE (tx::text::bigint, seq) = ({tx}, {seq})) AS here \
               FROM changes WHERE tenant_id = {} AND (tx::text::bigint, seq) <= ({tx}, {seq})",
            p.push(tenant),
            tx = p.push(tx),
            seq = p.push(seq)
        ),
        Backend::Sqlite => format!(
            "SELECT count(*) AS n, count(CASE WHEN seq = {seq} THEN 1 END) AS here \
               FROM changes WHERE tenant_id = {} AND seq <= {seq}",
            p.push(tenant),
            seq = p.push(seq)
        ),
    };
    let Some(row) = txn.query_one_raw(p.statement(sql)).await.map_err(db)? else {
        return Ok((0, false));
    };
    let n: i64 = row.try_get("", "n").map_err(db)?;
    let here: i64 = row.try_get("", "here").map_err(db)?;
    Ok((n, here > 0))
}

/// The target's log position of `tenant`'s `rank`-th change (from 1), if
/// it has that many; `rank` 0 is the start, `(0, 0)`.
async fn nth_change(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: uuid::Uuid,
    rank: i64,
) -> Result<Option<(i64, i64)>, BackupError> {
    if rank <= 0 {
        return Ok(Some((0, 0)));
    }
    let mut p = Params::new(backend);
    let position = match backend {
        Backend::Postgres => "tx::text::bigint AS tx, seq, tx AS t8",
        Backend::Sqlite => "0 AS tx, seq, seq AS t8",
    };
    let sql = format!(
        "SELECT {position} FROM changes WHERE tenant_id = {} ORDER BY t8, seq \
          LIMIT 1 OFFSET {}",
        p.push(tenant),
        p.push(rank - 1)
    );
    let Some(row) = txn.query_one_raw(p.statement(sql)).await.map_err(db)? else {
        return Ok(None);
    };
    Ok(Some((
        row.try_get("", "tx").map_err(db)?,
        row.try_get("", "seq").map_err(db)?,
    )))
}

/// Writes one imported row of `table` (`columns`: the target's); a value
/// the column cannot take is the file's damage, told by `damaged`.
async fn insert(
    txn: &DatabaseTransaction,
    backend: Backend,
    table: &str,
    columns: &[Column],
    row: &Map<String, Json>,
    damaged: impl Fn(String) -> BackupError,
) -> Result<(), BackupError> {
    let mut p = Params::new(backend);
    let mut names = Vec::new();
    let mut values = Vec::new();
    for c in columns {
        let Some(v) = row.get(&c.name) else { continue };
        names.push(quoted(&c.name));
        values.push(bind(&mut p, backend, c, v).map_err(|e| damaged(format!("{table}.{e}")))?);
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    );
    txn.execute_raw(p.statement(sql)).await.map_err(db)?;
    Ok(())
}

/// Moves each imported webhook's cursor to the target's position of the
/// last change it had passed (none: the start).
async fn place_cursors(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: uuid::Uuid,
    passed: &[(Json, i64)],
) -> Result<(), BackupError> {
    for (id, rank) in passed {
        let (tx, seq) = nth_change(txn, backend, tenant, *rank)
            .await?
            .unwrap_or((0, 0));
        let id = id
            .as_str()
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
            .or_else(|| bytes_of(id).and_then(|b| uuid::Uuid::from_slice(&b).ok()))
            .ok_or_else(|| BackupError::Refused(format!("a webhook's id {id} cannot be read")))?;
        let mut p = Params::new(backend);
        let sql = format!(
            "UPDATE webhooks SET after_tx = {}, after_seq = {} WHERE tenant_id = {} AND id = {}",
            p.push(tx),
            p.push(seq),
            p.push(tenant),
            p.push(id)
        );
        txn.execute_raw(p.statement(sql)).await.map_err(db)?;
    }
    Ok(())
}

/// Gives an audit record the source had not sealed its link hashes
/// (`row` in log order), and moves the chain's head past it.
fn seal(
    row: &mut Map<String, Json>,
    head: &mut leadline_domain::audit::Hash,
) -> Result<(), String> {
    let hash_of = |v: Option<&Json>| v.and_then(bytes_of);
    let content =
        hash_of(row.get("content_hash")).ok_or("an audit record without its content hash")?;
    let content: leadline_domain::audit::Hash = content
        .try_into()
        .map_err(|_| "an audit record's content hash is not 32 bytes")?;
    match hash_of(row.get("hash")) {
        Some(hash) => {
            *head = hash
                .try_into()
                .map_err(|_| "an audit record's link hash is not 32 bytes")?;
        }
        None => {
            let hash = leadline_domain::audit::link(head, &content);
            row.insert("prev_hash".to_owned(), hex_value(head));
            row.insert("hash".to_owned(), hex_value(&hash));
            *head = hash;
        }
    }
    Ok(())
}
