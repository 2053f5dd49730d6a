//! Messages other than email go out through the tenant's webhooks.
//!
//! - `webhooks.channels`: the approval channels (`sms`, `call`, `linkedin`,
//!   comma-separated) whose sent messages the endpoint carries; the store
//!   keeps one endpoint per channel and tenant.
//! - `webhooks.changes`: whether the endpoint also receives the change feed
//!   (off for an endpoint that only carries messages). The change relay's
//!   cross-tenant scan (`webhook_due_tenants`) skips endpoints without it.
//! - Texts, calls and LinkedIn messages recorded as sent before now went
//!   out some other way (no relay took them): they become `failed` with a
//!   note saying so, never delivered by surprise once an endpoint exists;
//!   a person can retry any that should really go out. As in migration 9,
//!   PostgreSQL's migrating owner lifts FORCE ROW LEVEL SECURITY for that
//!   one UPDATE, in the migration's transaction.
//! - `events.kind` admits `message_delivered`, the timeline event of a text,
//!   call or LinkedIn message accepted by its endpoint (the same rebuild on
//!   SQLite as migration 12's).

use sea_orm_migration::prelude::*;

use crate::{
    m20261205_000012_import_timeline::{NEW_KINDS, pg_kinds, sqlite_events},
    sql::run,
};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000015_message_channels"
    }
}

fn kinds_with_message_delivered() -> String {
    format!("{NEW_KINDS}, 'message_delivered'")
}

/// Every sorted set of the three channels, as the domain writes them.
const CHANNELS_CHECK: &str = "CHECK (channels IN ('', 'call', 'linkedin', 'sms', \
     'call,linkedin', 'call,sms', 'linkedin,sms', 'call,linkedin,sms'))";

const PG_UP: &str = r"
ALTER TABLE outbox NO FORCE ROW LEVEL SECURITY;
UPDATE outbox
   SET status = 'failed', dispatched_at = now(), updated_at = now(),
       last_error = 'recorded as sent before leadline delivered texts, calls and LinkedIn messages (migration 15): it went out some other way; retry to deliver it'
 WHERE status = 'pending' AND channel <> 'email';
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE OR REPLACE FUNCTION webhook_due_tenants(due_before timestamptz, max_tenants integer)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT w.tenant_id
      FROM webhooks w
     WHERE w.active AND w.changes AND w.next_attempt_at <= due_before
     GROUP BY w.tenant_id
     ORDER BY min(w.next_attempt_at)
     LIMIT max_tenants
$$;
";

const PG_DOWN: &str = r"
CREATE OR REPLACE FUNCTION webhook_due_tenants(due_before timestamptz, max_tenants integer)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT w.tenant_id
      FROM webhooks w
     WHERE w.active AND w.next_attempt_at <= due_before
     GROUP BY w.tenant_id
     ORDER BY min(w.next_attempt_at)
     LIMIT max_tenants
$$;
ALTER TABLE webhooks DROP COLUMN channels, DROP COLUMN changes;
";

const SQLITE_EARLIER_SENDS: &str = r"
UPDATE outbox
   SET status = 'failed', dispatched_at = next_attempt_at,
       last_error = 'recorded as sent before leadline delivered texts, calls and LinkedIn messages (migration 15): it went out some other way; retry to deliver it'
 WHERE status = 'pending' AND channel <> 'email';
";

const SQLITE_DOWN: &str = r"
ALTER TABLE webhooks DROP COLUMN channels;
ALTER TABLE webhooks DROP COLUMN changes;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let kinds = kinds_with_message_delivered();
        let pg = format!(
            "ALTER TABLE webhooks\n\
             ADD COLUMN changes boolean NOT NULL DEFAULT true,\n\
             ADD COLUMN channels text NOT NULL DEFAULT '' {CHANNELS_CHECK};\n\
             {PG_UP}\n{}",
            pg_kinds(&kinds, true)
        );
        let sqlite = format!(
            "{SQLITE_EARLIER_SENDS}\n\
             ALTER TABLE webhooks ADD COLUMN changes INTEGER NOT NULL DEFAULT 1;\n\
             ALTER TABLE webhooks ADD COLUMN channels TEXT NOT NULL DEFAULT '' {CHANNELS_CHECK};\n\
             {}",
            sqlite_events(&kinds)
        );
        run(manager, &pg, &sqlite).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_DOWN}", pg_kinds(NEW_KINDS, false));
        let sqlite = format!("{}\n{SQLITE_DOWN}", sqlite_events(NEW_KINDS));
        run(manager, &pg, &sqlite).await
    }
}
