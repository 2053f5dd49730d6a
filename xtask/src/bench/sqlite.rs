//! The embedded default under the same load (issue 17): the benchmark's
//! seeded data copied from PostgreSQL into a SQLite file, then scenarios
//! (2), (3), (1), (4) and (5) against `leadline serve` on that file.
//!
//! The copy is generic over the tables the scenarios read: for each column
//! both schemas have, PostgreSQL hands the value over in the form the store
//! writes on SQLite (uuids as their 16 bytes, timestamps as RFC 3339 text
//! with microseconds, JSON as text), and multi-row `INSERT`s put them in,
//! so SQLite's own triggers build its search tables as the store's writes
//! would. The file is migrated by `leadline migrate up` first and
//! `ANALYZE`d after, as PostgreSQL's data is `VACUUM ANALYZE`d.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::TryStreamExt as _;
use sqlx::{
    ConnectOptions as _, Connection as _, PgPool, Row as _,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous},
};

use super::{
    CONNECTIONS, CacheMode, Env, GROWTH_RUNS,
    infra::CommandLog,
    load::Load,
    measure_one,
    report::{Measured, Turns},
    scenarios::{self, Space},
    take_turns,
};

/// The tables the scenarios read, parents first.
const TABLES: [&str; 6] = [
    "tenants",
    "agents",
    "api_keys",
    "leads",
    "approvals",
    "events",
];

/// Rows per multi-row `INSERT` (SQLite binds at most 32,766 values).
const ROWS_PER_INSERT: usize = 500;

/// Rows per transaction of the copy.
const ROWS_PER_COMMIT: usize = 50_000;

/// What the SQLite phase measured.
#[derive(Debug, Clone)]
pub struct SqliteRuns {
    /// Rows copied per table.
    pub copied: Vec<(&'static str, u64)>,
    /// How long the copy took, `ANALYZE` included.
    pub copy: Duration,
    /// The database file's size after the copy, bytes.
    pub file_bytes: u64,
    /// Reader connections of the service (`database.sqlite_readers`).
    pub readers: u32,
    /// (2) cache-cold context at [`CONNECTIONS`], caches off: side 0
    /// PostgreSQL's service, side 1 SQLite's, taking turns.
    pub cold: Turns,
    /// (3) lead by id at [`CONNECTIONS`], as `cold`.
    pub by_id: Turns,
    /// (3) with `database.sqlite_readers = 0`: every read on the writer's
    /// one connection, as before the reader pool.
    pub by_id_one_connection: Measured,
    /// (1) cache-hot context, L1 only (the embedded default has no Redis).
    pub hot: Measured,
    /// (4) filtered page of leads.
    pub page: Measured,
    /// (5) append an event, `database.sqlite_synchronous = full` (the
    /// default: acknowledged once flushed, flushes shared), on L1, taking
    /// turns with PostgreSQL's service as its scenario (5) runs (side 0).
    pub append_full: Turns,
    /// (5) append an event, `database.sqlite_synchronous = normal` (the
    /// opt-in: no flush).
    pub append_normal: Measured,
    /// (5) append an event, `full`, with `database.audit = false`: what
    /// SQLite's audit trail (a chained record per write, checked against the
    /// head) costs.
    pub append_unaudited: Measured,
}

/// Copies the seeded data into `file` and runs the scenarios on it.
///
/// # Errors
/// Copy, migration or load failures.
pub async fn run(
    env: &mut Env<'_>,
    pg: &PgPool,
    space: &Space,
    hot_set: usize,
    context_bytes: usize,
    pg_writes: &CacheMode,
    log: &mut CommandLog,
) -> anyhow::Result<SqliteRuns> {
    let file = env.scratch.join("bench.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let mut migrate = Command::new(env.leadline);
    migrate
        .current_dir(env.scratch)
        .env_remove("LEADLINE_CONFIG")
        .env("DATABASE_URL", &url)
        .env("LEADLINE_LOG__FILTER", "warn")
        .args(["migrate", "up"]);
    log.run(&mut migrate)?;
    eprintln!(
        "bench: SQLite: copying the data set into {}",
        file.display()
    );
    let started = Instant::now();
    let copied = copy(pg, &file).await?;
    let copy = started.elapsed();
    log.note(format!(
        "SQLite: `leadline migrate up` on a new file, then {} copied from PostgreSQL \
         (xtask/src/bench/sqlite.rs) and ANALYZEd, in {:.0} s",
        copied
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", "),
        copy.as_secs_f64()
    ));
    let file_bytes = std::fs::metadata(&file)?.len();
    let readers = leadline_store::StoreSettings::default().sqlite_reader_count();
    let on_file = |more: &[(&'static str, String)]| {
        let mut extra = vec![("DATABASE_URL", url.clone())];
        extra.extend(more.iter().cloned());
        extra
    };

    // (2), (3) and (5) are the targets' figures: each against PostgreSQL's
    // service under the same load, taking turns.
    eprintln!("bench: SQLite (2), (3), taking turns with PostgreSQL");
    let lite = env.serve_with(&CacheMode::Off, &on_file(&[]), log).await?;
    let postgres = env.serve(&CacheMode::Off, log).await?;
    let uniform = scenarios::context_uniform(space);
    let cold = take_turns(
        env,
        "context, cache-cold (uniform)",
        [
            ("PostgreSQL", postgres.addr, &uniform),
            ("SQLite", lite.addr, &uniform),
        ],
        CONNECTIONS,
        pg,
        log,
    )
    .await?;
    let by_id_workload = scenarios::lead_by_id(space);
    let by_id = take_turns(
        env,
        "lead by id (uniform)",
        [
            ("PostgreSQL", postgres.addr, &by_id_workload),
            ("SQLite", lite.addr, &by_id_workload),
        ],
        CONNECTIONS,
        pg,
        log,
    )
    .await?;
    drop((lite, postgres));
    let server = env
        .serve_with(
            &CacheMode::Off,
            &on_file(&[("LEADLINE_DATABASE__SQLITE_READERS", "0".to_owned())]),
            log,
        )
        .await?;
    let by_id_one_connection = measure_one(
        "SQLite: lead by id, no readers",
        env.load(server.addr, CONNECTIONS),
        scenarios::lead_by_id(space),
        log,
    )
    .await?;
    drop(server);

    eprintln!("bench: SQLite (1), (4), (5)");
    let warm = hot_set.min(space.total());
    let capacity_bytes = (warm as u64 * (context_bytes as u64 + 256) * 3 / 2).max(256 << 20);
    let server = env
        .serve_with(&CacheMode::LocalOnly { capacity_bytes }, &on_file(&[]), log)
        .await?;
    measure_one(
        "SQLite: warm L1 (hottest leads once)",
        Load {
            addr: server.addr,
            connections: CONNECTIONS,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1_200),
        },
        scenarios::context_hottest_once(space, hot_set),
        log,
    )
    .await?;
    let hot = measure_one(
        "SQLite: context, cache-hot (Zipf)",
        env.load(server.addr, CONNECTIONS),
        scenarios::context_hot(space, hot_set),
        log,
    )
    .await?;
    let page = measure_one(
        "SQLite: filtered page of leads",
        env.load(server.addr, CONNECTIONS),
        scenarios::leads_page(space),
        log,
    )
    .await?;
    // Each in its deployed shape: PostgreSQL's as its scenario (5) runs
    // (`pg_writes`: both cache tiers, so a write also invalidates in Redis),
    // SQLite's as the embedded default runs (L1 only).
    let postgres = env.serve(pg_writes, log).await?;
    let append = scenarios::append_event(space, false);
    let append_full = take_turns(
        env,
        "append an event",
        [
            ("PostgreSQL", postgres.addr, &append),
            ("SQLite (full)", server.addr, &append),
        ],
        CONNECTIONS,
        pg,
        log,
    )
    .await?;
    drop((server, postgres));
    // The same append on an instance of its own per setting: `normal`, and
    // `full` without the audit trail.
    let mut appends = Vec::with_capacity(2);
    for (label, (key, value)) in [
        (
            "SQLite: append an event (normal)",
            ("LEADLINE_DATABASE__SQLITE_SYNCHRONOUS", "normal"),
        ),
        (
            "SQLite: append an event (full, no audit trail)",
            ("LEADLINE_DATABASE__AUDIT", "false"),
        ),
    ] {
        let server = env
            .serve_with(&CacheMode::Off, &on_file(&[(key, value.to_owned())]), log)
            .await?;
        appends.push(
            measure_one(
                label,
                env.load(server.addr, CONNECTIONS),
                scenarios::append_event(space, false),
                log,
            )
            .await?,
        );
        drop(server);
    }
    let [append_normal, append_unaudited]: [Measured; 2] = appends
        .try_into()
        .map_err(|_| anyhow::anyhow!("two append runs"))?;
    Ok(SqliteRuns {
        copied,
        copy,
        file_bytes,
        readers,
        cold,
        by_id,
        by_id_one_connection,
        hot,
        page,
        append_full,
        append_normal,
        append_unaudited,
    })
}

/// How one PostgreSQL column is handed over.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bytes,
    Text,
    Integer,
}

/// The select expression that gives `column` (of PostgreSQL type
/// `data_type`) in the store's SQLite form, and how to read it.
fn select_expr(column: &str, data_type: &str) -> (String, Kind) {
    let c = format!("\"{column}\"");
    match data_type {
        "uuid" => (format!("uuid_send({c})"), Kind::Bytes),
        "bytea" => (c, Kind::Bytes),
        "timestamp with time zone" => (
            format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"),
            Kind::Text,
        ),
        "smallint" | "integer" | "bigint" => (format!("{c}::int8"), Kind::Integer),
        "boolean" => (format!("{c}::int::int8"), Kind::Integer),
        "ARRAY" => (format!("to_jsonb({c})::text"), Kind::Text),
        _ => (format!("{c}::text"), Kind::Text),
    }
}

async fn copy(pg: &PgPool, file: &Path) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut lite = SqliteConnectOptions::new()
        .filename(file)
        .journal_mode(SqliteJournalMode::Wal)
        // A bulk load into a file that is thrown away on failure.
        .synchronous(SqliteSynchronous::Off)
        .foreign_keys(false)
        .disable_statement_logging()
        .connect()
        .await
        .context("opening the SQLite file")?;
    let mut copied = Vec::new();
    for table in TABLES {
        let n = copy_table(pg, &mut lite, table)
            .await
            .with_context(|| format!("copying {table}"))?;
        copied.push((table, n));
    }
    sqlx::query("ANALYZE").execute(&mut lite).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut lite)
        .await?;
    lite.close().await?;
    Ok(copied)
}

async fn copy_table(
    pg: &PgPool,
    lite: &mut SqliteConnection,
    table: &'static str,
) -> anyhow::Result<u64> {
    let lite_columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        // `table` is one of TABLES, never input.
        "PRAGMA table_info(\"{table}\")"
    )))
    .fetch_all(&mut *lite)
    .await?
    .iter()
    .map(|row| row.try_get::<String, _>(1))
    .collect::<Result<_, _>>()?;
    let pg_columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind(table)
    .fetch_all(pg)
    .await?;
    let columns: Vec<(String, String, Kind)> = lite_columns
        .iter()
        .filter_map(|name| {
            pg_columns.iter().find(|(n, _)| n == name).map(|(n, ty)| {
                let (expr, kind) = select_expr(n, ty);
                (n.clone(), expr, kind)
            })
        })
        .collect();
    if columns.is_empty() {
        bail!("{table}: no column in common");
    }
    let select = format!(
        "SELECT {} FROM \"{table}\"",
        columns
            .iter()
            .map(|(_, e, _)| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let names = columns
        .iter()
        .map(|(n, _, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let one_row = format!("({})", vec!["?"; columns.len()].join(", "));
    let insert_of = |rows: usize| {
        format!(
            "INSERT INTO \"{table}\" ({names}) VALUES {}",
            vec![one_row.as_str(); rows].join(", ")
        )
    };
    let full_insert = insert_of(ROWS_PER_INSERT);
    let mut stream = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(pg);
    let mut batch: Vec<sqlx::postgres::PgRow> = Vec::with_capacity(ROWS_PER_INSERT);
    let mut total = 0_u64;
    let mut in_transaction = 0_usize;
    sqlx::query("BEGIN").execute(&mut *lite).await?;
    loop {
        let next = stream.try_next().await?;
        let done = next.is_none();
        if let Some(row) = next {
            batch.push(row);
        }
        if batch.len() == ROWS_PER_INSERT || (done && !batch.is_empty()) {
            let sql = if batch.len() == ROWS_PER_INSERT {
                full_insert.clone()
            } else {
                insert_of(batch.len())
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in &batch {
                for (i, (_, _, kind)) in columns.iter().enumerate() {
                    query = match kind {
                        Kind::Bytes => query.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
                        Kind::Text => query.bind(row.try_get::<Option<String>, _>(i)?),
                        Kind::Integer => query.bind(row.try_get::<Option<i64>, _>(i)?),
                    };
                }
            }
            query.execute(&mut *lite).await?;
            total += batch.len() as u64;
            in_transaction += batch.len();
            batch.clear();
            if in_transaction >= ROWS_PER_COMMIT {
                sqlx::query("COMMIT").execute(&mut *lite).await?;
                sqlx::query("BEGIN").execute(&mut *lite).await?;
                in_transaction = 0;
            }
        }
        if done {
            break;
        }
    }
    sqlx::query("COMMIT").execute(&mut *lite).await?;
    let (expected,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(pg)
    .await?;
    if u64::try_from(expected).ok() != Some(total) {
        bail!("{table}: copied {total} rows of {expected}");
    }
    Ok(total)
}

/// PostgreSQL's figures of the scenarios that do not take turns, from the
/// tables of the same run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beside<'a> {
    pub hot: Option<&'a Measured>,
    pub page: Option<&'a Measured>,
}

/// Side 0 of [`Turns`] is PostgreSQL's service, side 1 SQLite's.
const PG: usize = 0;
const LITE: usize = 1;

impl SqliteRuns {
    /// The targets' figures: (what, SQLite's median run, PostgreSQL's
    /// median run, the factor the target asks for).
    #[must_use]
    pub fn targets(&self) -> Vec<(&'static str, &Measured, &Measured, f64)> {
        [
            (
                "SQLite (3) lead by id ≥ 2 × PostgreSQL's, taking turns",
                &self.by_id,
                2.0,
            ),
            (
                "SQLite (2) cache-cold context ≥ 2 × PostgreSQL's, taking turns",
                &self.cold,
                2.0,
            ),
            (
                "SQLite (5) append (`sqlite_synchronous = full`) ≥ 50 % of PostgreSQL's, taking turns",
                &self.append_full,
                0.5,
            ),
        ]
        .into_iter()
        .filter_map(|(what, turns, factor)| {
            Some((what, turns.median_rps(LITE)?, turns.median_rps(PG)?, factor))
        })
        .collect()
    }

    /// The report's section.
    #[must_use]
    pub fn markdown(&self, pg: Beside<'_>) -> String {
        use std::fmt::Write as _;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "\n## SQLite, the embedded default\n\n\
             The same data set ({}) copied from PostgreSQL into a SQLite file of {:.0} MiB \
             (`leadline migrate up`, then the rows, then `ANALYZE`; {:.0} s), served by \
             `leadline serve` on that file with its defaults: WAL, one writer connection, \
             {} reader connections (four per core), the file memory-mapped \
             (`database.sqlite_mmap_bytes`), `database.sqlite_synchronous = full`. Same \
             load generator, {CONNECTIONS} connections.\n\n\
             The targets' scenarios (2), (3) and (5, `full`) take turns with PostgreSQL's \
             service under the same load: {GROWTH_RUNS} runs each, the side that goes first \
             alternating, each run after a `CHECKPOINT`; each side's run with the median \
             req/s is shown and compared. (2) and (3) run with caches off on both sides; \
             (5) runs on PostgreSQL as its scenario (5) does (both cache tiers, so each \
             write also invalidates in Redis) and on SQLite as the embedded default does (L1 \
             only). The other rows ran once, and their PostgreSQL figure is from the tables \
             above; the `normal` and no-trail appends and the no-readers read are compared \
             with the PostgreSQL run of their turn-taking twin.\n\n\
             | # | scenario | req/s | p50 | p99 | errors | PostgreSQL req/s | SQLite / PostgreSQL |\n\
             |---|---|---:|---:|---:|---:|---:|---:|",
            self.copied
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.file_bytes as f64 / f64::from(1 << 20),
            self.copy.as_secs_f64(),
            self.readers,
        );
        type Twin<'a> = (Option<&'a Measured>, Option<&'a Measured>);
        fn twin(turns: &Turns) -> Twin<'_> {
            (turns.median_rps(LITE), turns.median_rps(PG))
        }
        let rows: [(&str, &str, Twin<'_>); 8] = [
            ("2", "context, cache-cold (uniform)", twin(&self.cold)),
            ("3", "lead by id (uniform)", twin(&self.by_id)),
            (
                "3",
                "lead by id, no readers",
                (Some(&self.by_id_one_connection), self.by_id.median_rps(PG)),
            ),
            ("1", "context, cache-hot (Zipf)", (Some(&self.hot), pg.hot)),
            ("4", "filtered page of leads", (Some(&self.page), pg.page)),
            ("5", "append an event (full)", twin(&self.append_full)),
            (
                "5",
                "append an event (normal)",
                (Some(&self.append_normal), self.append_full.median_rps(PG)),
            ),
            (
                "5",
                "append an event (full, no audit trail)",
                (
                    Some(&self.append_unaudited),
                    self.append_full.median_rps(PG),
                ),
            ),
        ];
        for (number, what, (run, beside)) in rows {
            let Some(run) = run else { continue };
            let (pg_rps, ratio) = beside.map_or_else(
                || ("-".to_owned(), "-".to_owned()),
                |b| {
                    (
                        format!("{:.0}", b.rps),
                        format!("{:.2} ×", run.rps / b.rps.max(1e-9)),
                    )
                },
            );
            let _ = writeln!(
                md,
                "| {number} | {what} | {:.0} | {:.3} | {:.3} | {} | {pg_rps} | {ratio} |",
                run.rps, run.p50_ms, run.p99_ms, run.errors,
            );
        }
        let _ = writeln!(
            md,
            "\nEvery turn's req/s, in the order they ran (PostgreSQL went first in runs 1 and \
             3): (2) SQLite {}, PostgreSQL {}; (3) SQLite {}, PostgreSQL {}; (5) SQLite {}, \
             PostgreSQL {}.",
            self.cold.each(LITE, rps),
            self.cold.each(PG, rps),
            self.by_id.each(LITE, rps),
            self.by_id.each(PG, rps),
            self.append_full.each(LITE, rps),
            self.append_full.each(PG, rps),
        );
        let _ = writeln!(
            md,
            "\n\"no readers\" is the same service with `database.sqlite_readers = 0`: every \
             read queues for the writer's one connection, as before the reader pool. The \
             cache-hot context runs on L1 alone (the embedded default has no Redis), warmed \
             like PostgreSQL's. `full` (the default) answers a write once an `fdatasync` of \
             the write-ahead log that began after its COMMIT has ended, one flush shared by \
             every commit before it (group commit; the writer itself runs at \
             `synchronous=NORMAL`); `normal`, the faster opt-in whose last commits a power \
             loss can take, answers without a flush. \"no audit trail\" is `full` with \
             `database.audit = false`: on SQLite each audited write also writes its chained \
             record (checked against its tenant's chain head), inside the one writer's turn. \
             The `normal` and no-trail appends run with caches off. The benchmark's \
             PostgreSQL runs with `fsync=off`, so its commits never wait for a disk: the \
             SQLite `full` append figures include flushes that PostgreSQL's do not. What \
             bounds SQLite's figures on this machine, from a CPU profile of these runs, is in \
             [backends.md](backends.md#what-bounds-sqlite)."
        );
        md
    }
}

fn rps(m: &Measured) -> String {
    format!("{:.0}", m.rps)
}
