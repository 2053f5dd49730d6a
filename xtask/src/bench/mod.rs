//! `cargo xtask bench [--quick]`: every hot path of the service against
//! this machine's own ceilings, in one run, written to `docs/benchmarks.md`.
//!
//! The steps, in order:
//!
//! 1. `cargo xtask` runs the release build of xtask (the alias says
//!    `--release`), which builds `leadline` in release, in the same feature
//!    resolution. A debug xtask (`cargo run -p xtask -- bench`) would
//!    measure a debug client: it only builds both in release and re-executes
//!    the release xtask, which does everything below.
//! 2. The criterion micro-benchmarks (in process, `micro`), first, while
//!    the machine is otherwise idle.
//! 3. Its own PostgreSQL and Redis, from leadline-testsupport (the servers
//!    the tests use); an owner role and a database; `leadline migrate`,
//!    `leadline roles setup|verify` for the service login.
//! 4. Tenants and agents through the app's services; then leads with
//!    approvals and events in bulk, in growth steps (10k, 100k, 1M leads in
//!    all; `--quick` stops at 100k). After each step, `leadline serve`
//!    with caches off measures the cache-cold lead context (the growth
//!    curve); at the last step it also runs the cache-cold sweep.
//! 5. The ceilings: pgbench (point select; the same in the tenant
//!    transaction as the service role; one-row insert), the trivial axum
//!    JSON server, redis-benchmark `GET`.
//! 6. `leadline serve` with both cache tiers: the other scenarios.
//! 7. `leadline serve` with a large L1 and no Redis: RSS after warming
//!    contexts.
//! 8. The report: a table on stdout, and docs/benchmarks.md.
//!
//! The load generator is [`load`]: a small tokio + hyper client in this
//! process, one keep-alive connection per virtual user. See
//! docs/benchmarks.md for why, and for what limits each figure.

mod ceilings;
mod data;
mod ids;
mod infra;
mod load;
mod micro;
mod outbound;
mod paths;
mod report;
mod scenarios;
mod sqlite;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use leadline_testsupport::{OwnedPgServer, OwnedRedisServer};

use self::{
    ceilings::{PgTarget, Script},
    data::BenchTenant,
    infra::{CommandLog, Process, Tools},
    load::{Load, Outcome},
    report::{CacheDelta, Ceilings, EventsPoint, Measured, Memory, Report},
    scenarios::Space,
};

pub use ceilings::serve_echo;
pub use paths::{LoadArgs, load_paths};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Ten times less data (5 × 20,000 leads), shorter runs, growth to 100k
    /// leads only: the run in under ten minutes on two cores (a first build
    /// of a clean clone comes on top).
    #[arg(long)]
    pub quick: bool,
    /// Where to write the report (default: docs/benchmarks.md in the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip the criterion micro-benchmarks.
    #[arg(long, conflicts_with = "micro_only")]
    pub skip_micro: bool,
    /// Run only the criterion micro-benchmarks and print their figures (no
    /// servers, no report).
    #[arg(long)]
    pub micro_only: bool,
    /// Seed the data set, print how to reach it, and keep the servers until
    /// Ctrl-C: no measurements, no report. For profiling a statement on the
    /// bench's own data (`EXPLAIN`, `perf`).
    #[arg(long, conflicts_with = "micro_only")]
    pub hold: bool,
    /// Set by the debug launcher after it built the release binaries.
    #[arg(long, hide = true)]
    pub built: bool,
}

/// The service role the benchmark creates, and throw-away passwords (the
/// servers live in a temporary directory for the length of the run).
const OWNER: &str = "leadline_owner";
const OWNER_PASSWORD: &str = "bench-owner-password";
const SERVICE: &str = "leadline_app";
const SERVICE_PASSWORD: &str = "bench-service-password";
const DATABASE: &str = "leadline_bench";
/// The growth target's small end, beside [`DATABASE`].
const SMALL_DATABASE: &str = "leadline_bench_small";

/// The service's pool ceiling (`database.max_connections`, its default).
pub const POOL: usize = 16;

/// Connections of every scenario's headline figure.
pub const CONNECTIONS: usize = 64;

/// Connections of the analytics scenario: a few dashboards at once, more
/// than the analytics pool's two connections.
pub const ANALYTICS_CONNECTIONS: usize = 16;

/// Connections of the growth curve: one, so that its p50 is the cost of a
/// context read and not the queue in front of it.
pub const GROWTH_CONNECTIONS: usize = 1;

/// Events added to every lead for the events-growth point: 6 seeded per
/// lead on average, so 10 after it (10M events at the full run's 1M leads).
pub const EXTRA_EVENTS_PER_LEAD: u32 = 4;

/// Runs per growth point; the one with the median p50 is reported.
pub const GROWTH_RUNS: usize = 3;

/// The connection sweep of the first three scenarios.
pub const SWEEP: [usize; 4] = [1, 16, 64, 256];

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Tenants.
    pub tenants: u32,
    /// Leads per tenant after each growth step; the last is the data set of
    /// the scenarios.
    pub steps: Vec<u64>,
    /// Unmeasured lead-in of each load run.
    pub warmup: Duration,
    /// Measured part of each load run (and pgbench's `-T`).
    pub duration: Duration,
    /// Contexts warmed for the memory figure.
    pub warm_contexts: usize,
    /// The hottest leads whose contexts are loaded once before the
    /// cache-hot scenario.
    pub warm_hot: usize,
    /// redis-benchmark requests.
    pub redis_requests: u64,
    /// `--hold`: seed, then keep the servers for the caller, measuring
    /// nothing.
    pub hold: bool,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                tenants: 5,
                steps: vec![2_000, 20_000],
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(3),
                warm_contexts: 20_000,
                warm_hot: 100_000,
                redis_requests: 200_000,
                hold: false,
            }
        } else {
            Self {
                quick,
                tenants: 5,
                steps: vec![2_000, 20_000, 200_000],
                warmup: Duration::from_secs(3),
                duration: Duration::from_secs(10),
                warm_contexts: 100_000,
                warm_hot: 300_000,
                redis_requests: 1_000_000,
                hold: false,
            }
        }
    }

    /// Leads per tenant in the final data set.
    #[must_use]
    pub fn leads_per_tenant(&self) -> u64 {
        self.steps.last().copied().unwrap_or(0)
    }
}

/// The workspace root (this crate's parent).
fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A `cargo` command, as cargo itself named it when it ran us, with the
/// environment the outer `cargo run` had rather than the one it gave us.
///
/// `cargo run` exports `CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR` and the
/// like to the program it runs. Build scripts such as ring's say
/// `rerun-if-env-changed=CARGO_PKG_NAME`, and cargo checks those against its
/// own environment: an inner `cargo build` that inherited them would rerun
/// ring's build script and rebuild everything above it (about 3 minutes on
/// 2 cores), and the next `cargo xtask` would rebuild it all back.
fn cargo() -> Command {
    let program = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            command.env_remove(name);
        }
    }
    command
}

/// `cargo xtask bench`.
///
/// # Errors
/// Anything that stops the run; servers and processes it started are
/// stopped on the way out.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        return relaunch_in_release();
    }
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let release_dir = exe
        .parent()
        .context("xtask has no directory")?
        .to_path_buf();
    let target_dir = release_dir
        .parent()
        .context("the release directory has no parent")?
        .to_path_buf();
    let workspace = workspace();
    let mut log = CommandLog::default();
    let mut build = cargo();
    build
        .current_dir(&workspace)
        .args(["build", "--release", "-p", "leadline", "-p", "xtask"]);
    if args.built {
        log.record(&build);
    } else {
        // Run as a release binary directly: make sure `leadline` is current.
        eprintln!("bench: building leadline (release)");
        log.run(&mut build)?;
    }
    let leadline = release_dir.join("leadline");
    if !leadline.is_file() {
        bail!(
            "{} is missing: build it with cargo build --release -p leadline",
            leadline.display()
        );
    }
    let tools = Tools::find()?;
    let plan = Plan {
        hold: args.hold,
        ..Plan::new(args.quick)
    };
    let mut report = Report::new(
        plan.clone(),
        infra::Machine::describe(&tools, &workspace),
        log,
    );
    let mut timer = Timer::new(started);

    if !args.skip_micro && !args.hold {
        eprintln!("bench: criterion micro-benchmarks");
        report.micro = micro::run(&target_dir, plan.quick)?;
        timer.lap(&mut report, "micro-benchmarks (criterion, in process)");
        if args.micro_only {
            for m in &report.micro {
                println!(
                    "{:<48} median {:>12.1} ns  mean {:>12.1} ns",
                    m.id, m.median_ns, m.mean_ns
                );
            }
            return Ok(());
        }
    }

    let scratch = std::env::temp_dir().join(format!("leadline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = measure(
        &plan,
        &tools,
        &leadline,
        &exe,
        &scratch,
        &mut report,
        &mut timer,
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    if args.hold {
        return Ok(());
    }

    report.total = started.elapsed();
    println!("{}", report.table());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("docs").join("benchmarks.md"));
    std::fs::write(&out, report.markdown())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "bench: wrote {} ({:.0} s in all)",
        out.display(),
        report.total.as_secs_f64()
    );
    Ok(())
}

/// Builds `leadline` and `xtask` in release and replaces this process with
/// the release xtask, same arguments plus `--built`.
fn relaunch_in_release() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let workspace = workspace();
    eprintln!(
        "bench: building leadline and xtask in release (the client must not be a debug build)"
    );
    let status = cargo()
        .current_dir(&workspace)
        .args(["build", "--release", "-p", "leadline", "-p", "xtask"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p leadline -p xtask failed ({status})");
    }
    let exe = std::env::current_exe()?;
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?;
    let release = target_dir.join("release").join("xtask");
    let error = Command::new(&release)
        .args(std::env::args_os().skip(1))
        .arg("--built")
        .exec();
    Err(error).with_context(|| format!("running {}", release.display()))
}

/// Wall-clock phases, for the report.
struct Timer {
    last: Instant,
}

impl Timer {
    fn new(started: Instant) -> Self {
        Self { last: started }
    }

    fn lap(&mut self, report: &mut Report, phase: &str) {
        let now = Instant::now();
        report.phases.push((phase.to_owned(), now - self.last));
        self.last = now;
    }
}

/// How `leadline serve` is configured for a phase.
#[derive(Debug, Clone)]
enum CacheMode {
    /// `cache.enabled = false`: every context from the store.
    Off,
    /// L1 and Redis (the production multi-instance setup), L1 sized by
    /// `cache.l1_capacity_bytes`.
    TwoTier {
        redis_url: String,
        l1_capacity_bytes: u64,
    },
    /// L1 only, with room for the warmed contexts.
    LocalOnly { capacity_bytes: u64 },
}

/// Everything the phases share.
struct Env<'a> {
    plan: &'a Plan,
    leadline: &'a Path,
    scratch: &'a Path,
    service_url: String,
    serves: usize,
}

impl Env<'_> {
    /// Starts `leadline serve` as the service role.
    async fn serve(&mut self, cache: &CacheMode, log: &mut CommandLog) -> anyhow::Result<Process> {
        self.serve_with(cache, &[], log).await
    }

    /// [`Env::serve`] with more settings in its environment.
    async fn serve_with(
        &mut self,
        cache: &CacheMode,
        extra: &[(&str, String)],
        log: &mut CommandLog,
    ) -> anyhow::Result<Process> {
        self.serves += 1;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, infra::free_port()?));
        let mut command = Command::new(self.leadline);
        command
            // Not the caller's ./leadline.toml.
            .current_dir(self.scratch)
            .env_remove("LEADLINE_CONFIG")
            .env("DATABASE_URL", &self.service_url)
            .env("LEADLINE_LOG__FILTER", "warn")
            .env("LEADLINE_RECALL__PRELOAD_ON_START", "false")
            // One key drives thousands of requests a second here: the
            // scenarios measure the data path, not the rate limiter.
            .env("LEADLINE_RATE_LIMIT__ENABLED", "false")
            // The analytics views are refreshed when the analytics phase
            // asks, timed: at a million leads a periodic refresh is seconds
            // of work that landed in whichever run was under way.
            .env("LEADLINE_ANALYTICS__REFRESH_SECS", "86400");
        match cache {
            CacheMode::Off => {
                command.env("LEADLINE_CACHE__ENABLED", "false");
            }
            CacheMode::TwoTier {
                redis_url,
                l1_capacity_bytes,
            } => {
                command.env("LEADLINE_CACHE__REDIS_URL", redis_url).env(
                    "LEADLINE_CACHE__L1_CAPACITY_BYTES",
                    l1_capacity_bytes.to_string(),
                );
            }
            CacheMode::LocalOnly { capacity_bytes } => {
                command.env(
                    "LEADLINE_CACHE__L1_CAPACITY_BYTES",
                    capacity_bytes.to_string(),
                );
            }
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        command.args(["serve", "--bind", &addr.to_string()]);
        let log_file = self.scratch.join(format!("serve-{}.log", self.serves));
        Process::start(
            "leadline serve",
            &mut command,
            addr,
            log_file,
            "/readyz",
            log,
        )
        .await
    }

    fn load(&self, addr: SocketAddr, connections: usize) -> Load {
        Load {
            addr,
            connections,
            warmup: self.plan.warmup,
            duration: self.plan.duration,
        }
    }
}

/// (5) and (6) on two instances started for it, alike but for
/// `database.audit` (the serving instance has warmed caches and a longer
/// history the baseline would lack), taking turns, [`GROWTH_RUNS`] runs
/// each; the run with the median p50 of each stands for it. Approvals come
/// fresh for every run: each can be approved once. Each run starts after a
/// `CHECKPOINT`, and the instances take turns going first: at a million
/// leads a checkpoint or the page cache's state landing in one side's runs
/// moved single runs by more than the cost being measured.
async fn audit_cost(
    env: &mut Env<'_>,
    mode: &CacheMode,
    space: &Space,
    pool: &sqlx::PgPool,
    tenants: &[data::BenchTenant],
    log: &mut CommandLog,
) -> anyhow::Result<report::AuditCost> {
    eprintln!("bench: the audit trail's cost: (5) and (6) with and without it");
    let audited = env
        .serve_with(
            mode,
            &[("LEADLINE_DATABASE__AUDIT", "true".to_owned())],
            log,
        )
        .await?;
    let bare = env
        .serve_with(
            mode,
            &[("LEADLINE_DATABASE__AUDIT", "false".to_owned())],
            log,
        )
        .await?;
    let mut runs: [Vec<Measured>; 4] = Default::default();
    for run in 1..=GROWTH_RUNS {
        let mut sides = [
            (0, "with the trail", audited.addr),
            (1, "without", bare.addr),
        ];
        if run % 2 == 0 {
            sides.reverse();
        }
        for (slot, label, addr) in sides {
            sqlx::query("CHECKPOINT").execute(pool).await?;
            runs[slot].push(
                measure_one(
                    &format!("append an event, {label}, run {run}"),
                    env.load(addr, CONNECTIONS),
                    scenarios::append_event(space, false),
                    log,
                )
                .await?,
            );
            let pending = data::pending_approvals(pool, tenants, 300_000).await?;
            sqlx::query("CHECKPOINT").execute(pool).await?;
            runs[2 + slot].push(
                measure_one(
                    &format!("approve, {label}, run {run}"),
                    env.load(addr, CONNECTIONS),
                    scenarios::approve(space, pending),
                    log,
                )
                .await?,
            );
        }
    }
    drop((audited, bare));
    let every_run = runs
        .each_ref()
        .map(|r| r.iter().map(|m| m.rps).collect::<Vec<_>>());
    let [append_on, append_off, approve_on, approve_off] = runs.map(|mut r| {
        // A run that found no pending approval left (`--quick` has few)
        // measured nothing: its p50 of 0 would sort first and move the
        // median. It is left out unless every run is empty.
        if r.iter().any(|m| m.rps > 0.0) {
            r.retain(|m| m.rps > 0.0);
        }
        r.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
        r.swap_remove(r.len() / 2)
    });
    Ok(report::AuditCost {
        append_on,
        append_off,
        approve_on,
        approve_off,
        every_run,
    })
}

/// Refreshes the analytics views once, timed, then loads the three reports.
async fn analytics(
    env: &Env<'_>,
    addr: SocketAddr,
    space: &Space,
    pool: &sqlx::PgPool,
    log: &mut CommandLog,
) -> anyhow::Result<report::Analytics> {
    eprintln!("bench: analytics: refresh, then the reports");
    log.note("psql (superuser, leadline_bench): SELECT analytics_refresh()".to_owned());
    let started = Instant::now();
    let refreshed: bool = sqlx::query_scalar("SELECT analytics_refresh() IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let refresh = started.elapsed();
    anyhow::ensure!(refreshed, "another refresh held the lock");
    let run = measure_one(
        "analytics reports",
        env.load(addr, ANALYTICS_CONNECTIONS),
        scenarios::analytics(space),
        log,
    )
    .await?;
    Ok(report::Analytics {
        leads: space.total() as u64,
        refresh,
        run,
    })
}

/// [`measure_one`] [`GROWTH_RUNS`] times, keeping the run with the median
/// p50: at about 1 ms a single short run moved by ±15 % between identical
/// runs.
async fn measure_median(
    label: &str,
    load: Load,
    workload: &load::Workload,
    log: &mut CommandLog,
) -> anyhow::Result<Measured> {
    let mut runs = Vec::with_capacity(GROWTH_RUNS);
    for run in 1..=GROWTH_RUNS {
        runs.push(measure_one(&format!("{label}, run {run}"), load, workload.clone(), log).await?);
    }
    runs.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    Ok(runs.swap_remove(GROWTH_RUNS / 2))
}

/// Two services under their workloads in turn, [`GROWTH_RUNS`] runs each,
/// the side that goes first alternating, each run after a `CHECKPOINT`
/// (`pool`'s server; harmless for a side that is not on it). For figures
/// that are compared with each other: runs minutes apart on this shared
/// machine differed by more than the differences the targets judge, and a
/// checkpoint or the page cache's state landing in one side's runs moves
/// them further.
async fn take_turns(
    env: &Env<'_>,
    label: &str,
    sides: [(&str, SocketAddr, &load::Workload); 2],
    connections: usize,
    pool: &sqlx::PgPool,
    log: &mut CommandLog,
) -> anyhow::Result<report::Turns> {
    let mut turns = report::Turns::default();
    for run in 1..=GROWTH_RUNS {
        let mut order = [0, 1];
        if run % 2 == 0 {
            order.reverse();
        }
        for side in order {
            let (name, addr, workload) = sides[side];
            sqlx::query("CHECKPOINT").execute(pool).await?;
            let measured = measure_one(
                &format!("{label}, {name}, run {run}"),
                env.load(addr, connections),
                workload.clone(),
                log,
            )
            .await?;
            turns.runs[side].push(measured);
        }
    }
    Ok(turns)
}

/// Runs one load and turns it into a report row, printing a progress line.
async fn measure_one(
    label: &str,
    load: Load,
    workload: load::Workload,
    log: &mut CommandLog,
) -> anyhow::Result<Measured> {
    log.note(format!(
        "load: {label}: {} connections, {:.0} s warm-up, {:.0} s measured",
        load.connections,
        load.warmup.as_secs_f64(),
        load.duration.as_secs_f64()
    ));
    let outcome: Outcome = load::run(load, workload).await?;
    let measured = Measured::from_outcome(label, load.connections, &outcome);
    eprintln!(
        "bench:   {label:<34} {:>4} conns {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms{}",
        measured.connections,
        measured.rps,
        measured.p50_ms,
        measured.p99_ms,
        measured.p999_ms,
        if measured.errors > 0 {
            format!(
                "  {} errors, e.g. {}",
                measured.errors,
                measured.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        }
    );
    Ok(measured)
}

/// [`measure_one`] against the service at `load.addr`, with what its cache
/// counted during the run (as `tenant` sees them).
async fn measure_cached(
    label: &str,
    load: Load,
    workload: load::Workload,
    tenant: &BenchTenant,
    log: &mut CommandLog,
) -> anyhow::Result<(Measured, CacheDelta)> {
    let before = cache_stats(load.addr, tenant).await?;
    let measured = measure_one(label, load, workload, log).await?;
    let after = cache_stats(load.addr, tenant).await?;
    Ok((measured, CacheDelta::between(&before, &after)))
}

/// Cache counters of a running service, through `GET /v1/cache/stats`.
async fn cache_stats(
    addr: SocketAddr,
    space_auth: &BenchTenant,
) -> anyhow::Result<serde_json::Value> {
    let mut auth = hyper::header::HeaderValue::from_str(&space_auth.bearer)?;
    auth.set_sensitive(true);
    let (status, body) = load::once(
        addr,
        load::Request::get("/v1/cache/stats".to_owned(), Some(auth)),
    )
    .await?;
    if !status.is_success() {
        bail!("GET /v1/cache/stats answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

#[allow(
    clippy::too_many_lines,
    reason = "the run, phase by phase, reads best in one place"
)]
async fn measure(
    plan: &Plan,
    tools: &Tools,
    leadline: &Path,
    xtask: &Path,
    scratch: &Path,
    report: &mut Report,
    timer: &mut Timer,
) -> anyhow::Result<()> {
    // --- servers, roles, schema -------------------------------------------
    eprintln!("bench: starting PostgreSQL and Redis");
    let pg = tokio::task::spawn_blocking(OwnedPgServer::start)
        .await
        .context("starting PostgreSQL panicked")??;
    let redis = tokio::task::spawn_blocking(OwnedRedisServer::start)
        .await
        .context("starting Redis panicked")??;
    let log = &mut report.commands;
    log.note(format!(
        "PostgreSQL: a throw-away cluster from leadline-testsupport on 127.0.0.1:{} \
         (fsync=off, synchronous_commit=off, full_page_writes=off, shared_buffers=128MB, max_connections=300)",
        pg.port()
    ));
    log.note(format!(
        "Redis: a throw-away redis-server from leadline-testsupport on 127.0.0.1:{} (--save \"\" --appendonly no)",
        redis.port()
    ));
    let create = [
        format!("CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'"),
        format!("CREATE DATABASE {DATABASE} OWNER {OWNER}"),
        // Commits wait for the WAL write, as in production (the cluster's
        // fsync=off still makes that a write to the page cache).
        format!("ALTER DATABASE {DATABASE} SET synchronous_commit = on"),
    ];
    for sql in &create {
        log.note(format!("psql (superuser): {sql}"));
        pg.admin_execute("postgres", sql).await?;
    }
    log.note("psql (superuser, leadline_bench): CREATE FUNCTION bench_lead_ms, bench_lead_id, bench_uuid7 (xtask/src/bench/ids.rs)");
    pg.admin_execute(DATABASE, ids::SQL_FUNCTIONS).await?;
    let owner_url = pg.url(OWNER, OWNER_PASSWORD, DATABASE);
    let service_url = pg.url(SERVICE, SERVICE_PASSWORD, DATABASE);
    let admin_url = pg.admin_url(DATABASE);
    let leadline_admin = |args: &[&str]| {
        let mut command = Command::new(leadline);
        command
            .current_dir(scratch)
            .env_remove("LEADLINE_CONFIG")
            .env("DATABASE_URL", &owner_url)
            .env("LEADLINE_LOG__FILTER", "warn")
            .args(args);
        command
    };
    log.run(&mut leadline_admin(&["migrate", "up"]))?;
    log.run(
        leadline_admin(&["roles", "setup", SERVICE])
            .env("LEADLINE_SERVICE_PASSWORD", SERVICE_PASSWORD),
    )?;
    log.run(&mut leadline_admin(&["roles", "verify", SERVICE]))?;
    // A second database for the growth target's side-by-side runs: the
    // first growth point's data set again, beside the last.
    let small_owner_url = if plan.hold || plan.steps.len() < 2 {
        None
    } else {
        for sql in [
            format!("CREATE DATABASE {SMALL_DATABASE} OWNER {OWNER}"),
            format!("ALTER DATABASE {SMALL_DATABASE} SET synchronous_commit = on"),
        ] {
            log.note(format!("psql (superuser): {sql}"));
            pg.admin_execute("postgres", &sql).await?;
        }
        pg.admin_execute(SMALL_DATABASE, ids::SQL_FUNCTIONS).await?;
        let url = pg.url(OWNER, OWNER_PASSWORD, SMALL_DATABASE);
        log.run(leadline_admin(&["migrate", "up"]).env("DATABASE_URL", &url))?;
        log.run(
            leadline_admin(&["roles", "setup", SERVICE])
                .env("DATABASE_URL", &url)
                .env("LEADLINE_SERVICE_PASSWORD", SERVICE_PASSWORD),
        )?;
        Some(url)
    };
    timer.lap(report, "servers, schema, roles");

    // --- data, growth, cache-cold -----------------------------------------
    let log = &mut report.commands;
    log.note(format!(
        "seed: {} tenants × {} agents through the app's services (owner URL); leads by COPY \
         (the `db seed` generator), approvals and events by INSERT … SELECT (xtask/src/bench/data.rs); \
         VACUUM ANALYZE after each step",
        plan.tenants,
        data::AGENTS
    ));
    let tenants = data::create_tenants(&owner_url, plan.tenants).await?;
    let pool = data::admin_pool(&admin_url).await?;
    let small = match (&small_owner_url, plan.steps.first()) {
        (Some(url), Some(&leads_per_tenant)) => {
            log.note(format!(
                "seed: the same {} tenants and their first {leads_per_tenant} leads each into \
                 {SMALL_DATABASE}, alike",
                plan.tenants
            ));
            let small_tenants = data::create_tenants(url, plan.tenants).await?;
            let small_pool = data::admin_pool(&pg.admin_url(SMALL_DATABASE)).await?;
            data::top_up(&small_pool, &small_tenants, 0, leads_per_tenant).await?;
            small_pool.close().await;
            timer.lap(
                report,
                &format!(
                    "seed {} leads into a second database (side by side)",
                    leads_per_tenant * u64::from(plan.tenants)
                ),
            );
            Some((
                small_tenants,
                leads_per_tenant,
                pg.url(SERVICE, SERVICE_PASSWORD, SMALL_DATABASE),
            ))
        }
        _ => None,
    };
    let mut env = Env {
        plan,
        leadline,
        scratch,
        service_url,
        serves: 0,
    };
    let mut have = 0;
    let mut cold = None;
    let last_step = plan.leads_per_tenant();
    for &step in &plan.steps {
        let total = step * u64::from(plan.tenants);
        eprintln!("bench: seeding to {total} leads");
        let took = data::top_up(&pool, &tenants, have, step).await?;
        have = step;
        report
            .phases
            .push((format!("seed {total} leads (incl. VACUUM ANALYZE)"), took));
        timer.last = Instant::now();
        if plan.hold {
            continue;
        }
        let server = env.serve(&CacheMode::Off, &mut report.commands).await?;
        let space = Space::new(&tenants, step)?;
        // The seed's dirty pages are flushed first, so that a checkpoint
        // does not land in one point's window.
        sqlx::query("CHECKPOINT").execute(&pool).await?;
        data::reset_statement_stats(&pool).await?;
        let growth = measure_median(
            &format!("growth: cold context at {total} leads"),
            env.load(server.addr, GROWTH_CONNECTIONS),
            &scenarios::context_uniform(&space),
            &mut report.commands,
        )
        .await?;
        report
            .growth_cost
            .push(data::context_cost(&pool, DATABASE).await?);
        report.growth.push((total, growth));
        if step == last_step
            && let Some((small_tenants, small_step, small_url)) = &small
        {
            let small_server = env
                .serve_with(
                    &CacheMode::Off,
                    &[("DATABASE_URL", small_url.clone())],
                    &mut report.commands,
                )
                .await?;
            // A fresh service on the large side too, so that both sides
            // start alike. When the turns reused the curve's service after
            // its search at 16 connections, the sides' p50 differed by 94 µs
            // where the statement inside the server differed by 44 µs: that
            // service had 16 pooled connections, which sqlx's first-in,
            // first-out idle queue hands a 1-connection load in turn, each a
            // backend gone idle; the small side's had one or two.
            let large_server = env.serve(&CacheMode::Off, &mut report.commands).await?;
            let small_space = Space::new(small_tenants, *small_step)?;
            let small_total = small_step * u64::from(plan.tenants);
            data::reset_statement_stats(&pool).await?;
            let turns = take_turns(
                &env,
                "growth: cold context, side by side",
                [
                    (
                        &format!("{small_total} leads"),
                        small_server.addr,
                        &scenarios::context_uniform(&small_space),
                    ),
                    (
                        &format!("{total} leads"),
                        large_server.addr,
                        &scenarios::context_uniform(&space),
                    ),
                ],
                GROWTH_CONNECTIONS,
                &pool,
                &mut report.commands,
            )
            .await?;
            report.growth_turns = Some(report::GrowthTurns {
                leads: (small_total, total),
                turns,
                cost: (
                    data::context_cost(&pool, SMALL_DATABASE).await?,
                    data::context_cost(&pool, DATABASE).await?,
                ),
            });
        }
        let searched = measure_one(
            &format!("growth: search at {total} leads"),
            env.load(server.addr, GROWTH_CONNECTIONS),
            scenarios::search(&tenants, &space, false)?,
            &mut report.commands,
        )
        .await?;
        report.search_growth.push((total, searched));
        let misspelt = measure_one(
            &format!("growth: search with a typo at {total} leads"),
            env.load(server.addr, GROWTH_CONNECTIONS),
            scenarios::search(&tenants, &space, true)?,
            &mut report.commands,
        )
        .await?;
        report.typo_search_growth.push((total, misspelt));
        if step == last_step {
            report.search_loaded = Some(
                measure_one(
                    "search",
                    env.load(server.addr, POOL),
                    scenarios::search(&tenants, &space, false)?,
                    &mut report.commands,
                )
                .await?,
            );
        }
        timer.lap(report, &format!("growth point at {total} leads"));
        if step == last_step {
            cold = Some((server, space));
        }
    }
    report.data = data::summary(&pool).await?;
    if plan.hold {
        return hold_until_interrupted(&pg, &redis, &env, &tenants, &admin_url).await;
    }
    let (cold_server, space) = cold.context("no growth steps")?;
    eprintln!("bench: (2) lead context, cache-cold");
    for connections in SWEEP {
        let row = measure_one(
            "context, cache-cold (uniform)",
            env.load(cold_server.addr, connections),
            scenarios::context_uniform(&space),
            &mut report.commands,
        )
        .await?;
        report.sweeps.cold.push(row);
    }
    drop(cold_server);
    timer.lap(report, "scenario 2 (cache-cold sweep)");

    // --- the embedded default: the same data on SQLite ---------------------
    let mean_context = report.cold_context_bytes();
    report.sqlite = Some(
        sqlite::run(
            &mut env,
            &pool,
            &space,
            plan.warm_hot,
            mean_context,
            // PostgreSQL's appends as its scenario (5) runs them: both tiers
            // (L1 at its default size; appends fill nothing).
            &CacheMode::TwoTier {
                redis_url: format!("{}/0", redis.url()),
                l1_capacity_bytes: 256 << 20,
            },
            &mut report.commands,
        )
        .await?,
    );
    timer.lap(report, "SQLite: copy, scenarios 2, 3, 1, 4, 5");

    // --- ceilings ---------------------------------------------------------
    eprintln!("bench: ceilings");
    let scripts_dir = scratch.join("pgbench");
    std::fs::create_dir_all(&scripts_dir)?;
    let superuser = PgTarget {
        host: pg.host().to_owned(),
        port: pg.port(),
        database: DATABASE.to_owned(),
        user: "postgres".to_owned(),
        password: "postgres".to_owned(),
    };
    let service = PgTarget {
        user: SERVICE.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..superuser.clone()
    };
    let mut ceilings = Ceilings::default();
    let runs = [
        (Script::PointSelect, &superuser, &[POOL, CONNECTIONS][..]),
        (Script::TenantSelect, &service, &[1, POOL, CONNECTIONS][..]),
        (Script::TenantSelectPipelined, &service, &[POOL][..]),
        (
            Script::TenantSelectOneStatement,
            &service,
            &[POOL, CONNECTIONS][..],
        ),
        (Script::ContextStatement, &service, &[POOL][..]),
        (Script::Insert, &superuser, &[POOL, CONNECTIONS][..]),
    ];
    for (script, target, clients) in runs {
        let files = ceilings::write_scripts(&scripts_dir, script, &tenants, last_step)?;
        for &c in clients {
            let result = ceilings::pgbench(
                &tools.pgbench,
                target,
                &files,
                c,
                plan.duration,
                &mut report.commands,
            )?;
            eprintln!(
                "bench:   pgbench {script:?} {c:>4} clients {:>9.0} tps  latency {:.3} ms",
                result.tps, result.latency_ms
            );
            ceilings.pgbench.push((script, result));
        }
    }
    let context_size = report.cold_context_bytes();
    let echo_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, infra::free_port()?));
    let mut echo_command = Command::new(xtask);
    echo_command.current_dir(scratch).args([
        "bench-echo",
        "--bind",
        &echo_addr.to_string(),
        "--body-bytes",
        &context_size.to_string(),
    ]);
    let echo = Process::start(
        "trivial axum JSON server",
        &mut echo_command,
        echo_addr,
        scratch.join("echo.log"),
        "/",
        &mut report.commands,
    )
    .await?;
    for connections in SWEEP {
        let row = measure_one(
            "trivial axum JSON",
            env.load(echo.addr, connections),
            scenarios::echo(),
            &mut report.commands,
        )
        .await?;
        ceilings.http.push(row);
    }
    // The same server answering a document the size of a context: what the
    // body alone costs the ceiling.
    ceilings.http_body = Some(
        measure_one(
            "trivial axum JSON, context-sized body",
            env.load(echo.addr, CONNECTIONS),
            scenarios::echo_body(),
            &mut report.commands,
        )
        .await?,
    );
    // Kept for (1)'s turns with it, below.
    let redis_get = ceilings::redis_get(
        &tools.redis_benchmark,
        redis.port(),
        CONNECTIONS,
        plan.redis_requests,
        context_size,
        &mut report.commands,
    )?;
    eprintln!(
        "bench:   redis-benchmark GET ({context_size} B) {:>9.0} req/s  p50 {:.3} ms",
        redis_get.rps, redis_get.p50_ms
    );
    ceilings.redis = Some(redis_get);
    report.ceilings = ceilings;
    report.context_bytes = context_size;
    timer.lap(report, "ceilings");

    // --- cache on: the other scenarios --------------------------------------
    let redis_url = format!("{}/0", redis.url());
    // L1 sized for the warmed hot set, as docs/operations.md tells an
    // operator to size it (each entry weighs its JSON plus 256 bytes; half as
    // much again for contexts larger than the mean), never below the default.
    let warm_hot = plan.warm_hot.min(space.total()) as u64;
    let l1_capacity_bytes = (warm_hot * (context_size as u64 + 256) * 3 / 2).max(256 << 20);
    report.hot_l1_bytes = Some(l1_capacity_bytes);
    let hot_mode = CacheMode::TwoTier {
        redis_url,
        l1_capacity_bytes,
    };
    let hot = env.serve(&hot_mode, &mut report.commands).await?;
    let first = tenants.first().context("no tenants")?;
    eprintln!(
        "bench: (1) lead context, cache-hot: warming the {} hottest leads",
        plan.warm_hot.min(space.total())
    );
    report.hot_warm = Some(
        measure_one(
            "warm caches (hottest leads once)",
            Load {
                addr: hot.addr,
                connections: CONNECTIONS,
                warmup: Duration::ZERO,
                duration: Duration::from_secs(1_200),
            },
            scenarios::context_hottest_once(&space, plan.warm_hot),
            &mut report.commands,
        )
        .await?,
    );
    for connections in SWEEP {
        let (row, cache) = measure_cached(
            "context, cache-hot (Zipf)",
            env.load(hot.addr, connections),
            scenarios::context_hot(&space, plan.warm_hot),
            first,
            &mut report.commands,
        )
        .await?;
        if connections == CONNECTIONS {
            report.hot_cache = Some(cache);
        }
        report.sweeps.hot.push(row);
    }
    // The target's ratio from runs that take turns with the ceiling's own.
    let hot_workload = scenarios::context_hot(&space, plan.warm_hot);
    report.hot_turns = Some(
        take_turns(
            &env,
            "cache-hot against the trivial handler",
            [
                ("trivial axum JSON", echo.addr, &scenarios::echo()),
                ("context, cache-hot (Zipf)", hot.addr, &hot_workload),
            ],
            CONNECTIONS,
            &pool,
            &mut report.commands,
        )
        .await?,
    );
    drop(echo);
    if plan.warm_hot < space.total() {
        // The same Zipf over every lead: the tail the warm-up left out is
        // loaded from PostgreSQL on first touch. Reported beside (1), not
        // as it: that run measures first loads as much as the cache.
        eprintln!("bench: (1b) lead context, Zipf over all leads");
        report.hot_all = Some(
            measure_cached(
                "context, Zipf over all leads",
                env.load(hot.addr, CONNECTIONS),
                scenarios::context_hot(&space, space.total()),
                first,
                &mut report.commands,
            )
            .await?,
        );
    }
    eprintln!("bench: (3) lead by id");
    for connections in SWEEP {
        let row = measure_one(
            "lead by id (uniform)",
            env.load(hot.addr, connections),
            scenarios::lead_by_id(&space),
            &mut report.commands,
        )
        .await?;
        report.sweeps.by_id.push(row);
    }
    eprintln!("bench: (4)-(7)");
    report.page = Some(
        measure_one(
            "filtered page of leads",
            env.load(hot.addr, CONNECTIONS),
            scenarios::leads_page(&space),
            &mut report.commands,
        )
        .await?,
    );
    data::reset_statement_stats(&pool).await?;
    let cpu_before = infra::CpuTicks::now();
    report.event = Some(
        measure_one(
            "append an event",
            env.load(hot.addr, CONNECTIONS),
            scenarios::append_event(&space, false),
            &mut report.commands,
        )
        .await?,
    );
    report.event_cpu = Some(cpu_before.shares(&infra::CpuTicks::now(), &report::CPU_PROGRAMS));
    report.event_server = Some(data::statement_split(&pool, SERVICE, data::EVENT_APPEND).await?);
    let pending = data::pending_approvals(&pool, &tenants, 300_000).await?;
    report.pending_available = pending.len();
    data::reset_statement_stats(&pool).await?;
    let cpu_before = infra::CpuTicks::now();
    report.approve = Some(
        measure_one(
            "approve a pending approval",
            env.load(hot.addr, CONNECTIONS),
            scenarios::approve(&space, pending),
            &mut report.commands,
        )
        .await?,
    );
    report.approve_cpu = Some(cpu_before.shares(&infra::CpuTicks::now(), &report::CPU_PROGRAMS));
    report.approve_server =
        Some(data::statement_split(&pool, SERVICE, data::APPROVAL_UPDATE).await?);
    report.audit_cost = Some(
        audit_cost(
            &mut env,
            &hot_mode,
            &space,
            &pool,
            &tenants,
            &mut report.commands,
        )
        .await?,
    );
    report.analytics = Some(analytics(&env, hot.addr, &space, &pool, &mut report.commands).await?);
    let (mix, mix_cache) = measure_cached(
        "90/10 read/write mix",
        env.load(hot.addr, CONNECTIONS),
        scenarios::mix(&space),
        first,
        &mut report.commands,
    )
    .await?;
    report.mix = Some(mix);
    report.mix_cache = Some(mix_cache);
    timer.lap(report, "scenarios 1 and 3-7 (caches on)");

    // --- events growth: appends and timelines as the events table grows ----
    eprintln!("bench: events growth");
    for point in 0..2 {
        if point == 1 {
            let took = data::more_events(&pool, &tenants, last_step, EXTRA_EVENTS_PER_LEAD).await?;
            report
                .phases
                .push(("seed more events (incl. VACUUM ANALYZE)".to_owned(), took));
            timer.last = Instant::now();
        }
        let events = data::summary(&pool).await?.events;
        sqlx::query("CHECKPOINT").execute(&pool).await?;
        let mut points = Vec::with_capacity(2);
        for (what, workload) in [
            ("append", scenarios::append_event(&space, false)),
            ("timeline", scenarios::timeline(&space)),
        ] {
            points.push(
                measure_median(
                    &format!("growth: {what} at {events} events"),
                    env.load(hot.addr, GROWTH_CONNECTIONS),
                    &workload,
                    &mut report.commands,
                )
                .await?,
            );
        }
        let timeline = points.pop().context("a timeline run")?;
        let append = points.pop().context("an append run")?;
        report.events_growth.push(EventsPoint {
            events,
            append,
            timeline,
        });
        timer.lap(report, &format!("events growth point at {events} events"));
    }
    drop(hot);

    // --- CSV import and export ---------------------------------------------
    eprintln!("bench: CSV import and export");
    let rows = if plan.quick { 20_000 } else { 1_000_000 };
    let csv_path = scratch.join("import.csv");
    data::write_import_csv(&csv_path, first, last_step, rows)?;
    // The same rows, as the import stores them, for \copy into `leads`
    // under another tenant.
    let copy_target = tenants
        .iter()
        .find(|t| t.index != first.index)
        .context("a second tenant for the \\copy ceiling")?;
    data::write_import_copy(
        &scratch.join("import.copy"),
        first,
        copy_target,
        last_step,
        rows,
    )?;
    // What the import and `\copy` cost the server, statement by statement.
    data::reset_statement_stats(&pool).await?;
    let started = Instant::now();
    let import_peak = report.commands.run_peak_rss(
        Command::new(leadline)
            .current_dir(scratch)
            .env_remove("LEADLINE_CONFIG")
            .env("DATABASE_URL", &env.service_url)
            .env("LEADLINE_LOG__FILTER", "warn")
            .args(["import", "leads", "import.csv", "--quiet", "--tenant"])
            .arg(data::slug(first)),
    )?;
    let import_secs = started.elapsed().as_secs_f64();
    // The embedded default: the same file into a new tenant of a fresh
    // SQLite file.
    let sqlite_url = format!("sqlite://{}?mode=rwc", scratch.join("import.db").display());
    let sqlite_leadline = |args: &[&str]| {
        let mut command = Command::new(leadline);
        command
            .current_dir(scratch)
            .env_remove("LEADLINE_CONFIG")
            .env("DATABASE_URL", &sqlite_url)
            .env("LEADLINE_LOG__FILTER", "warn")
            .args(args);
        command
    };
    let slug = data::slug(first);
    report
        .commands
        .run(&mut sqlite_leadline(&["tenant", "create", &slug]))?;
    let started = Instant::now();
    let sqlite_peak = report.commands.run_peak_rss(&mut sqlite_leadline(&[
        "import",
        "leads",
        "import.csv",
        "--quiet",
        "--tenant",
        &slug,
    ]))?;
    let sqlite_import = (started.elapsed().as_secs_f64(), sqlite_peak);
    let psql = tools.pgbench.with_file_name("psql");
    let psql_command = |sql: &str| {
        let mut command = Command::new(&psql);
        command
            .current_dir(scratch)
            .env("PGPASSWORD", "postgres")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host(), "-p"])
            .arg(pg.port().to_string())
            .args(["-U", "postgres", "-d", DATABASE, "-c", sql]);
        command
    };
    let started = Instant::now();
    report.commands.run(&mut psql_command(&format!(
        "\\copy leads ({}) FROM 'import.copy'",
        data::IMPORT_COPY_COLUMNS
    )))?;
    let copy_secs = started.elapsed().as_secs_f64();
    let server_time = data::statement_split(&pool, SERVICE, data::LEADS_INSERT).await?;
    let server = env.serve(&CacheMode::Off, &mut report.commands).await?;
    let started = Instant::now();
    let export_rows = infra::export_lines(server.addr, &first.bearer).await?;
    let export_secs = started.elapsed().as_secs_f64();
    drop(server);
    report.transfer = Some(report::Transfer {
        rows,
        import_secs,
        import_peak,
        sqlite_import,
        copy_secs,
        server_time,
        export_rows,
        export_secs,
    });
    eprintln!(
        "bench:   import {rows} rows in {import_secs:.2} s (SQLite {:.2} s), \\copy in {copy_secs:.2} s, export {export_rows} rows in {export_secs:.2} s",
        sqlite_import.0
    );
    timer.lap(report, "CSV import and export");

    // --- outbound: relay throughput, change-feed fan-out -------------------
    let sizes = outbound::Sizes {
        messages: if plan.quick { 1_000 } else { 10_000 },
        subscribers: 1_000,
        writes: if plan.quick { 50 } else { 200 },
    };
    report.outbound =
        Some(outbound::run(&mut env, &owner_url, &pool, sizes, &mut report.commands).await?);
    timer.lap(report, "outbound (relay throughput, change-feed fan-out)");

    // --- memory -------------------------------------------------------------
    let warm = plan.warm_contexts.min(space.total());
    eprintln!("bench: memory after warming {warm} contexts");
    let capacity_bytes = (warm as u64 * context_size as u64 * 3).max(64 << 20);
    let server = env
        .serve(
            &CacheMode::LocalOnly { capacity_bytes },
            &mut report.commands,
        )
        .await?;
    let idle_kib = server.rss_kib()?;
    let warm_run = measure_one(
        "warm L1 (each context once)",
        Load {
            addr: server.addr,
            connections: POOL,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(600),
        },
        scenarios::context_each_once(&space, warm),
        &mut report.commands,
    )
    .await?;
    let stats = cache_stats(server.addr, first).await?;
    report.memory = Some(Memory {
        contexts: warm,
        idle_kib,
        warm_kib: server.rss_kib()?,
        capacity_bytes,
        loads: stats["loads"].as_u64().unwrap_or(0),
        evictions: stats["l1"]["evictions"].as_u64().unwrap_or(0),
        warm_rps: warm_run.rps,
        errors: warm_run.errors,
    });
    drop(server);
    timer.lap(report, "memory");
    pool.close().await;
    drop(redis);
    drop(pg);
    Ok(())
}

/// `--hold`: prints how to reach the seeded servers, then keeps them until
/// Ctrl-C.
async fn hold_until_interrupted(
    pg: &OwnedPgServer,
    redis: &OwnedRedisServer,
    env: &Env<'_>,
    tenants: &[BenchTenant],
    admin_url: &str,
) -> anyhow::Result<()> {
    println!("superuser:    {admin_url}");
    println!("service role: {}", env.service_url);
    println!("redis:        redis://127.0.0.1:{}/0", redis.port());
    println!("postgres port: {}", pg.port());
    for tenant in tenants {
        println!("tenant {} ({}): {}", tenant.index, tenant.id, tenant.bearer);
    }
    println!("holding; Ctrl-C stops the servers");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inner_cargo_does_not_inherit_what_cargo_run_exported() {
        // cargo and nextest run tests with the package's variables set, as
        // `cargo run` runs xtask.
        let exported: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with("CARGO_PKG_") || name == "CARGO_MANIFEST_DIR")
            .collect();
        assert!(
            exported.iter().any(|name| name == "CARGO_PKG_NAME"),
            "run this test through cargo, which sets CARGO_PKG_NAME"
        );
        let command = cargo();
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .filter_map(|(name, _)| name.to_str().map(str::to_owned))
            .collect();
        for name in &exported {
            assert!(removed.contains(name), "{name} reaches the inner cargo");
        }
        // Everything else, CARGO_HOME and the toolchain's variables among
        // it, is left as it is.
        assert!(removed.iter().all(|name| {
            name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "OUT_DIR",
                ]
                .contains(&name.as_str())
        }));
    }
}
