//! SeaORM entities: private to the store. Conversions to domain types live
//! beside each one; a row that fails domain validation is reported as a
//! data error, never silently fixed.

pub(crate) mod agents;
pub(crate) mod api_keys;
pub(crate) mod approvals;
pub(crate) mod changes;
pub(crate) mod delivery_attempts;
pub(crate) mod email_senders;
pub(crate) mod events;
pub(crate) mod idempotency_keys;
pub(crate) mod import_rejects;
pub(crate) mod imports;
pub(crate) mod leads;
pub(crate) mod login_attempts;
pub(crate) mod login_links;
pub(crate) mod outbox;
pub(crate) mod sessions;
pub(crate) mod tenants;
pub(crate) mod users;
pub(crate) mod webhook_dead_letters;
pub(crate) mod webhooks;

/// A stored value that no longer satisfies the domain's rules.
pub(crate) fn corrupt(table: &str, column: &str, err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("stored {table}.{column} is invalid: {err}")
}
