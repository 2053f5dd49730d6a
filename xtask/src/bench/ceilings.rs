//! The machine's own ceilings, measured on the same data in the same run:
//! pgbench (a point select on `leads`, plain, wrapped in the service's
//! tenant transaction, pipelined, and as the service's one tenant-setting
//! statement; a one-row `INSERT` into `events`), redis-benchmark
//! `GET`, and the trivial axum JSON handler ([`serve_echo`]) that the HTTP
//! scenarios are compared with.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use axum::{Json, Router, body::Bytes, http::header, routing::get};

use super::{data::BenchTenant, infra::CommandLog};

/// `cargo xtask bench-echo`: a trivial axum JSON handler on `bind`, the
/// HTTP ceiling. Same runtime flavour as `leadline serve` (tokio,
/// multi-threaded, one worker per core), no middleware, no logging.
///
/// `GET /` answers `{"status":"ok"}`. `GET /body` answers a JSON document
/// of `body_bytes` bytes, built once at start: the same HTTP work with a
/// body the size of a lead's context, which shows how much of the
/// cache-hot context's distance to `/` is the body alone.
///
/// # Errors
/// Bind and I/O errors.
pub async fn serve_echo(bind: SocketAddr, body_bytes: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let body = sized_json(body_bytes);
    let app = Router::new()
        .route(
            "/",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/body",
            get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
    axum::serve(listener, app).await?;
    Ok(())
}

/// A JSON document of exactly `bytes` bytes (at least 2): a string of
/// `x`s, or `""` when `bytes` is too small for more.
fn sized_json(bytes: usize) -> Bytes {
    let mut body = Vec::with_capacity(bytes.max(2));
    body.push(b'"');
    body.resize(bytes.max(2) - 1, b'x');
    body.push(b'"');
    Bytes::from(body)
}

/// What pgbench reported.
#[derive(Debug, Clone, Copy)]
pub struct Pgbench {
    /// Transactions per second, without connection time.
    pub tps: f64,
    /// Mean latency in milliseconds.
    pub latency_ms: f64,
    /// Clients.
    pub clients: usize,
}

/// Which pgbench script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `SELECT * FROM leads WHERE tenant_id = … AND id = …` as the
    /// superuser: no row-level security, no transaction around it.
    PointSelect,
    /// The same select inside `BEGIN; SELECT set_config('app.tenant_id',
    /// …, true); …; COMMIT`, as the service role: what the store does for
    /// every read.
    TenantSelect,
    /// [`Script::TenantSelect`]'s four statements in one pgbench pipeline
    /// (`\startpipeline` … `\endpipeline`): sent together, answered in one
    /// round trip. Not a ceiling any scenario is compared with, but the
    /// answer to "would pipelining lift the tenant context's price?".
    TenantSelectPipelined,
    /// The same select as one statement that sets the tenant itself in a
    /// leading CTE and runs as its own transaction, as the service role:
    /// what the store sends for a lead by id. The answer to "would fewer
    /// round trips lift the tenant context's price?".
    TenantSelectOneStatement,
    /// The store's cache-cold context statement itself (five indexed
    /// subqueries as JSON, tenant set in its leading CTE), as the service
    /// role: what scenario (2) costs PostgreSQL, without HTTP, decoding or
    /// serializing. Not a target's ceiling; it shows how much of (2)'s
    /// distance to the point select is the statement's own work.
    ContextStatement,
    /// One-row `INSERT INTO events` in autocommit, as the superuser.
    Insert,
}

/// Writes the scripts of `script` for every tenant into `dir` and returns
/// them: one file per tenant (tenant id as a literal, lead number random in
/// `0..leads`), so pgbench spreads the load over the tenants like the load
/// generator does.
///
/// # Errors
/// I/O errors.
pub fn write_scripts(
    dir: &Path,
    script: Script,
    tenants: &[BenchTenant],
    leads: u64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for tenant in tenants {
        let (t, id) = (tenant.index, tenant.id);
        let select = format!(
            "SELECT * FROM leads WHERE tenant_id = '{id}'::uuid AND id = bench_lead_id({t}, :r);"
        );
        let mut text = format!("\\set r random(0, {})\n", leads - 1);
        match script {
            Script::PointSelect => text.push_str(&select),
            Script::TenantSelect => write!(
                text,
                "BEGIN;\nSELECT set_config('app.tenant_id', '{id}', true);\n{select}\nCOMMIT;"
            )?,
            Script::TenantSelectPipelined => write!(
                text,
                "\\startpipeline\nBEGIN;\nSELECT set_config('app.tenant_id', '{id}', true);\n\
                 {select}\nCOMMIT;\n\\endpipeline"
            )?,
            Script::TenantSelectOneStatement => write!(
                text,
                "WITH scope AS MATERIALIZED (SELECT set_config('app.tenant_id', '{id}', true)::uuid \
                 AS tenant_id) SELECT l.* FROM scope CROSS JOIN LATERAL (SELECT * FROM leads \
                 WHERE leads.tenant_id = scope.tenant_id AND leads.id = bench_lead_id({t}, :r) \
                 OFFSET 0) l;"
            )?,
            Script::ContextStatement => {
                let events = leadline_app::RecallSettings::default().events;
                let (sql, literals) = leadline_store::context_statement_for_pgbench(events);
                let mut sql = sql.to_owned();
                // Highest first, so `$1` does not match the start of `$10`.
                for (i, literal) in literals.iter().enumerate().rev() {
                    sql = sql.replace(&format!("${}", i + 3), literal);
                }
                let sql = sql
                    .replace("$2", &format!("bench_lead_id({t}, :r)"))
                    .replace("$1", &format!("'{id}'"));
                // pgbench reads a statement up to its `;`, on any number of lines.
                writeln!(text, "{};", sql.trim())?;
            }
            Script::Insert => write!(
                text,
                "INSERT INTO events (tenant_id, id, lead_id, kind, direction, content, occurred_at, \
                 actor, metadata, created_at) VALUES ('{id}'::uuid, bench_uuid7(now()), \
                 bench_lead_id({t}, :r), 'note', 'internal', 'pgbench: one-row insert ceiling', \
                 now(), NULL, '{{}}', now());"
            )?,
        }
        text.push('\n');
        let path = dir.join(format!("{script:?}-{t}.sql").to_lowercase());
        std::fs::write(&path, text)?;
        files.push(path);
    }
    Ok(files)
}

/// Connection details for pgbench.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// Role.
    pub user: String,
    /// Its password (a throw-away one).
    pub password: String,
}

/// Runs pgbench with `scripts` (equal weights), prepared statements, over
/// TCP like the service.
///
/// # Errors
/// pgbench failures, or output without a `tps` line.
pub fn pgbench(
    pgbench: &Path,
    target: &PgTarget,
    scripts: &[PathBuf],
    clients: usize,
    duration: Duration,
    log: &mut CommandLog,
) -> anyhow::Result<Pgbench> {
    let mut command = Command::new(pgbench);
    command
        .env("PGPASSWORD", &target.password)
        .args(["-n", "-M", "prepared"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.min(2)))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--host={}", target.host))
        .arg(format!("--port={}", target.port))
        .arg(format!("--username={}", target.user));
    for script in scripts {
        command.arg(format!("--file={}", script.display()));
    }
    command.arg(&target.database);
    let out = log.run(&mut command)?;
    let number_after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let Some(tps) = number_after("tps = ") else {
        bail!("pgbench printed no tps line:\n{out}");
    };
    Ok(Pgbench {
        tps,
        latency_ms: number_after("latency average = ").unwrap_or(0.0),
        clients,
    })
}

/// What redis-benchmark reported for `GET`.
#[derive(Debug, Clone, Copy)]
pub struct RedisGet {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Clients.
    pub clients: usize,
    /// Value size in bytes.
    pub size: usize,
}

/// `redis-benchmark -t get` without pipelining, values of `size` bytes.
///
/// # Errors
/// redis-benchmark failures or unparseable CSV.
pub fn redis_get(
    redis_benchmark: &Path,
    port: u16,
    clients: usize,
    requests: u64,
    size: usize,
    log: &mut CommandLog,
) -> anyhow::Result<RedisGet> {
    let mut command = Command::new(redis_benchmark);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "get", "--csv"])
        .args(["-c", &clients.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-d", &size.to_string()]);
    let out = log.run(&mut command)?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = out
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .with_context(|| format!("redis-benchmark printed no GET row:\n{out}"))?;
    let fields: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    Ok(RedisGet {
        rps: field(0),
        p50_ms: field(3),
        p99_ms: field(5),
        clients,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sized document is valid JSON of exactly the size asked for, or
    /// `""` when the size is too small for a JSON string.
    #[test]
    fn sized_json_is_json_of_the_size_asked_for() {
        for bytes in [0, 1, 2, 3, 6144] {
            let body = sized_json(bytes);
            assert_eq!(body.len(), bytes.max(2), "{bytes} bytes");
            let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert!(value.is_string(), "{bytes} bytes: {value}");
        }
    }
}
