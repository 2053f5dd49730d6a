//! `cargo xtask db migrate | rollback | status | reset`: the schema
//! operations, run through `leadline::run::migrate` so they connect (as
//! `database.migration_url` when set) and lock exactly as the binary does.

use std::process::ExitCode;

use leadline::config::Config;
use leadline_store::{MigrateOp, MigrationState, redact_url};
use secrecy::ExposeSecret;

/// The database the schema operations act on, with any password hidden.
fn target(config: &Config) -> String {
    let url = config
        .database
        .migration_url
        .as_ref()
        .unwrap_or(&config.database.url);
    redact_url(url.expose_secret())
}

/// Runs `op` (`None`: only report) and prints the resulting status table.
///
/// # Errors
/// Connection or migration failures, with the database's message.
pub async fn migrate(config: &Config, op: Option<MigrateOp>) -> anyhow::Result<()> {
    eprintln!("database: {}", target(config));
    let states = leadline::run::migrate(config, op).await?;
    print_status(&states);
    Ok(())
}

/// Reverts every migration and applies them all again. Because that drops
/// every table, it refuses (exit 2) unless `yes` is set.
///
/// # Errors
/// As [`migrate`].
pub async fn reset(config: &Config, yes: bool) -> anyhow::Result<ExitCode> {
    if !yes {
        eprintln!(
            "xtask: refusing to reset {}: it reverts every migration, dropping all tables and their data. Re-run with --yes.",
            target(config)
        );
        return Ok(ExitCode::from(2));
    }
    migrate(config, Some(MigrateOp::Reset)).await?;
    Ok(ExitCode::SUCCESS)
}

/// The binary's `migrate` table, plus a count so a glance answers "anything pending?".
fn print_status(states: &[MigrationState]) {
    for m in states {
        println!(
            "{:<45} {}",
            m.name,
            if m.applied { "applied" } else { "pending" }
        );
    }
    let applied = states.iter().filter(|m| m.applied).count();
    println!("{applied} applied, {} pending", states.len() - applied);
}
