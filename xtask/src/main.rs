//! `cargo xtask`: leadline's developer tasks, in Rust instead of shell
//! scripts (run through the alias in `.cargo/config.toml`).
//!
//! - `db migrate`: apply every pending migration.
//! - `db rollback [--steps N]`: revert the last N migrations (default 1).
//! - `db status`: list migrations and whether each is applied.
//! - `db reset --yes`: revert everything and re-apply; refuses without
//!   `--yes` because it destroys all data.
//! - `db seed [--tenants N] [--leads N] [--agents N] [--issue-keys]`: write
//!   realistic, reproducible seed data; re-running only fills what is missing.
//! - `bench [--quick]`: benchmark every hot path against this machine's own
//!   ceilings and write docs/benchmarks.md (see [`bench`]).
//! - `api-fuzz`: schemathesis against the OpenAPI document on SQLite and
//!   PostgreSQL, as CI runs it (see [`api_fuzz`]).
//!
//! Configuration is the binary's own (`leadline::config::load`): defaults,
//! then `./leadline.toml` or `--config`, then `DATABASE_URL`, then
//! `LEADLINE_*` variables such as `LEADLINE_DATABASE__URL` and
//! `LEADLINE_DATABASE__MIGRATION_URL`. A bad configuration exits with 2.

mod api_fuzz;
mod bench;
mod db;
mod generate;
mod seed;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use leadline::{config, run};
use leadline_store::MigrateOp;

/// As in `leadline`: the ceiling (`bench-echo`) and the load generator run
/// on the allocator the service runs on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "leadline developer tasks"
)]
struct Cli {
    /// A TOML config file (default: ./leadline.toml when present; also LEADLINE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Top-level task groups.
#[derive(Debug, Subcommand)]
enum Command {
    /// Schema migrations and seed data.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Benchmark every hot path against this machine's own ceilings and
    /// write docs/benchmarks.md (starts its own PostgreSQL and Redis).
    Bench(bench::BenchArgs),
    /// Schemathesis against /openapi.json on both backends: any 5xx or
    /// answer that breaks the document fails (needs `st`: pip install schemathesis).
    ApiFuzz(api_fuzz::ApiFuzzArgs),
    /// The benchmark's load generator, GETs of the paths in a file against
    /// a running service: for profiling one path, not a benchmark.
    #[command(hide = true)]
    BenchLoad(bench::LoadArgs),
    /// The trivial JSON server `bench` measures as the HTTP ceiling.
    #[command(hide = true)]
    BenchEcho {
        /// Listen address.
        #[arg(long)]
        bind: SocketAddr,
        /// Size of the document `GET /body` answers.
        #[arg(long, default_value_t = 6144)]
        body_bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Apply every pending migration.
    Migrate,
    /// Revert the most recent migrations.
    Rollback {
        /// How many to revert.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Revert every migration, then apply them all: destroys all data.
    Reset {
        /// Confirm that every table and its data may be dropped.
        #[arg(long)]
        yes: bool,
    },
    /// Write realistic seed data; safe to re-run.
    Seed(seed::SeedArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config.or_else(config::file_from_env);
    let mut config = match config::load(file.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("xtask: {err}");
            return ExitCode::from(2);
        }
    };
    // Warnings only (RUST_LOG still wins): info lines such as "database
    // connected" would tear through the progress bar.
    config.log.filter = "warn".to_owned();
    run::init_logging(&config);

    match dispatch(cli.command, &config).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: &config::Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Db { action } => match action {
            DbAction::Migrate => db::migrate(config, Some(MigrateOp::Up)).await?,
            DbAction::Rollback { steps } => {
                db::migrate(config, Some(MigrateOp::Down { steps })).await?
            }
            DbAction::Status => db::migrate(config, None).await?,
            DbAction::Reset { yes } => return db::reset(config, yes).await,
            DbAction::Seed(args) => seed::seed(config, &args).await?,
        },
        Command::Bench(args) => bench::bench(&args).await?,
        Command::ApiFuzz(args) => api_fuzz::api_fuzz(&args).await?,
        Command::BenchLoad(args) => bench::load_paths(&args).await?,
        Command::BenchEcho { bind, body_bytes } => bench::serve_echo(bind, body_bytes).await?,
    }
    Ok(ExitCode::SUCCESS)
}
