//! Cross-crate integration tests, one binary with a module per feature.
//!
//! PostgreSQL comes from `leadline-testsupport` (TEST_DATABASE_URL, Docker,
//! or the local server binaries); a missing server fails loudly, never
//! skips. One migrated database serves the whole binary; tests isolate by
//! creating their own tenants, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accepted_reads_back;
mod analytics;
mod appends;
mod audit;
mod backup;
mod batch;
mod changes;
mod cli;
mod coherence;
mod conformance;
mod disk_full;
mod distributable;
mod e2e;
mod edge;
mod erasure;
mod http_tenancy;
mod import;
mod keys;
mod log_coherence;
mod message_delivery;
mod migrations;
mod operations;
mod people;
mod pgbouncer;
mod privacy;
mod receiver;
mod relay;
mod replica;
mod retention;
mod retries;
mod rls;
mod roles;
mod search;
mod separation;
mod sqlite_readers;
mod support;
mod tls;
mod transfer;
mod use_cases;
mod webhook_delivery;
mod webhooks;
mod workflow;
