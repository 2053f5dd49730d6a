//! leadline's schema history.
//!
//! Migrations are written as explicit SQL per backend rather than derived
//! from today's entities: editing an entity must never rewrite history, and
//! the PostgreSQL schema (composite keys led by `tenant_id`, row-level
//! security, roles and grants, GIN indexes) says things an ORM builder cannot.
//! Every migration has a working `down`.
//!
//! On PostgreSQL each migration runs in its own transaction (sea-orm-migration
//! does this), so a failed migration leaves nothing half-applied.

use sea_orm_migration::prelude::*;

mod m20261122_000001_core;
mod m20261122_000002_row_level_security;
mod m20261122_000003_workflow;
mod m20261122_000004_recent_activity;
mod m20261203_000005_idempotent_effects;
mod m20261203_000006_lead_soft_delete;
mod m20261205_000007_lead_search;
mod m20261205_000008_imports;
mod m20261205_000009_deliveries;
mod m20261205_000010_changes;
mod m20261205_000011_search_vocabulary;
mod m20261205_000012_import_timeline;
mod m20261206_000013_webhooks;
mod m20261206_000014_webhook_delivery;
mod m20261207_000015_message_channels;
mod m20261208_000016_key_access;
mod m20261208_000017_people;
mod m20261208_000018_separation_of_duties;
mod m20261208_000019_key_successors;
mod m20261209_000020_approval_edits;
mod m20261210_000021_audit_log;
mod m20261211_000022_analytics;
mod m20261211_000023_audit_seal_hot;
mod m20261211_000024_retention;
mod m20261212_000025_privacy_erasure;
mod m20261212_000026_backup_role;
mod m20261212_000027_erasure_at_scale;
mod m20261212_000028_erasure_trusts_less;
mod m20261213_000029_audit_seal_set;
mod m20261214_000030_audit_seal_from_head;
mod m20261215_000031_audit_head_bisect;
mod m20261216_000032_search_keys;
mod m20261217_000033_import_runner;
mod sql;

pub use sql::{BACKUP_ROLE, CLUSTER_ROLES, SERVICE_GROUP_ROLE};

/// The migration framework, re-exported so the store needs no second dependency on it.
pub use sea_orm_migration as migration;

/// Applies and reverts leadline's migrations, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_core::Migration),
            Box::new(m20261122_000002_row_level_security::Migration),
            Box::new(m20261122_000003_workflow::Migration),
            Box::new(m20261122_000004_recent_activity::Migration),
            Box::new(m20261203_000005_idempotent_effects::Migration),
            Box::new(m20261203_000006_lead_soft_delete::Migration),
            Box::new(m20261205_000007_lead_search::Migration),
            Box::new(m20261205_000008_imports::Migration),
            Box::new(m20261205_000009_deliveries::Migration),
            Box::new(m20261205_000010_changes::Migration),
            Box::new(m20261205_000011_search_vocabulary::Migration),
            Box::new(m20261205_000012_import_timeline::Migration),
            Box::new(m20261206_000013_webhooks::Migration),
            Box::new(m20261206_000014_webhook_delivery::Migration),
            Box::new(m20261207_000015_message_channels::Migration),
            Box::new(m20261208_000016_key_access::Migration),
            Box::new(m20261208_000017_people::Migration),
            Box::new(m20261208_000018_separation_of_duties::Migration),
            Box::new(m20261208_000019_key_successors::Migration),
            Box::new(m20261209_000020_approval_edits::Migration),
            Box::new(m20261210_000021_audit_log::Migration),
            Box::new(m20261211_000022_analytics::Migration),
            Box::new(m20261211_000023_audit_seal_hot::Migration),
            Box::new(m20261211_000024_retention::Migration),
            Box::new(m20261212_000025_privacy_erasure::Migration),
            Box::new(m20261212_000026_backup_role::Migration),
            Box::new(m20261212_000027_erasure_at_scale::Migration),
            Box::new(m20261212_000028_erasure_trusts_less::Migration),
            Box::new(m20261213_000029_audit_seal_set::Migration),
            Box::new(m20261214_000030_audit_seal_from_head::Migration),
            Box::new(m20261215_000031_audit_head_bisect::Migration),
            Box::new(m20261216_000032_search_keys::Migration),
            Box::new(m20261217_000033_import_runner::Migration),
        ]
    }
}

/// The tables that hold one tenant's data, each with `tenant_id` leading its
/// primary key and a row-level-security policy on it. `tenants` itself is
/// listed: its policy is on `id`.
pub const TENANT_TABLES: &[&str] = &[
    "tenants",
    "api_keys",
    "agents",
    "leads",
    "approvals",
    "events",
    "outbox",
    "idempotency_keys",
    "imports",
    "import_rejects",
    "delivery_attempts",
    "email_senders",
    "changes",
    "change_horizons",
    "search_words",
    "webhooks",
    "webhook_dead_letters",
    "users",
    "sessions",
    "login_links",
    "login_attempts",
    "audit_log",
    "retention_policies",
    "events_archive",
];
