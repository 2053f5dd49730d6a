//! leadline's store adapter: the ports' repositories on SeaORM, over
//! PostgreSQL in production and SQLite as the embedded default.
//!
//! - [`Store`] owns the process's one pool ([`Store::connect`]), its stats,
//!   health probe and shutdown.
//! - Every repository call is one transaction. On PostgreSQL it begins with
//!   `set_config('app.tenant_id', $tenant, true)`, which the row-level
//!   security policies read; the explicit `tenant_id` filter in every query
//!   is the first wall, RLS the second.
//! - Driver errors are translated here; `DbErr` and the entities never leave
//!   the crate.
//! - [`Store::migrate`], [`Store::ensure_service_login`] and
//!   [`Store::verify_service_login`] serve the CLI and the tests.

mod appends;
mod audit;
pub mod backup;
mod bulk;
mod changes;
mod effects;
mod entity;
mod errors;
mod health;
mod migrate;
mod params;
mod point_reads;
mod pool;
mod repo_agents;
mod repo_analytics;
mod repo_approvals;
mod repo_context;
mod repo_deliveries;
mod repo_duplicates;
mod repo_events;
mod repo_idempotency;
mod repo_imports;
mod repo_keys;
mod repo_leads;
mod repo_privacy;
mod repo_retention;
mod repo_search;
mod repo_sessions;
mod repo_tenants;
mod repo_users;
mod repo_webhooks;
mod roles;
mod settings;
mod sqlite_json;
pub mod transfer;
mod tx;
mod wal_sync;

pub use migrate::{MigrateError, MigrateOp, MigrationState};
pub use pool::{Backend, ConnectError, Store, redact_url};
pub use repo_context::context_statement_for_pgbench;
pub use roles::RolesError;
pub use settings::{SqliteSynchronous, SslMode, StoreSettings};

/// Rows per multi-row `INSERT` of a table with `columns` columns: as many
/// as fit under SQLite's 32,766 bound parameters (PostgreSQL allows 65,535),
/// so a bulk write is a few statements, not dozens.
pub(crate) const fn rows_per_insert(columns: usize) -> usize {
    32_000 / columns
}

/// The current time at the precision both backends store (microseconds),
/// so a value handed back after a write equals the value read later.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
