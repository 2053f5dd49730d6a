//! API keys get a name, a role or explicit scopes, an expiry, a recognisable
//! prefix and a last-used time.
//!
//! - `role` (`viewer`, `agent`, `approver`, `admin`) or `scopes` (the
//!   domain's comma-separated list): exactly one of the two is set.
//! - Keys issued before this were tenant-wide: they become `admin` keys
//!   named `default`, so no caller loses access by upgrading.
//! - `prefix` is the first eight hex characters of the key's secret, in
//!   clear, to tell keys apart in lists; it is NULL for the earlier keys,
//!   whose secrets were never kept.
//! - `down` revokes every key that is not `admin` before dropping the
//!   columns: the older schema cannot express a limited key, and a viewer's
//!   key must not come out of a downgrade able to do everything.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000016_key_access"
    }
}

const PG_UP: &str = r"
ALTER TABLE api_keys
    ADD COLUMN name text NOT NULL DEFAULT 'default' CHECK (name <> ''),
    ADD COLUMN role text DEFAULT 'admin' CHECK (role IN ('viewer', 'agent', 'approver', 'admin')),
    ADD COLUMN scopes text CHECK (scopes <> ''),
    ADD COLUMN prefix text CHECK (prefix ~ '^[0-9a-f]{8}$'),
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD CONSTRAINT api_keys_role_or_scopes CHECK ((role IS NULL) <> (scopes IS NULL));
ALTER TABLE api_keys ALTER COLUMN name DROP DEFAULT, ALTER COLUMN role DROP DEFAULT;
";

const PG_DOWN: &str = r"
ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY;
UPDATE api_keys SET revoked_at = now()
 WHERE revoked_at IS NULL AND role IS DISTINCT FROM 'admin';
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_role_or_scopes,
    DROP COLUMN name,
    DROP COLUMN role,
    DROP COLUMN scopes,
    DROP COLUMN prefix,
    DROP COLUMN expires_at,
    DROP COLUMN last_used_at;
";

// SQLite cannot drop a column default or add a table constraint after the
// fact: `name` keeps its default (the store always writes one) and the
// one-of check rides on `scopes`, added once every row has its role.
const SQLITE_UP: &str = r"
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'default' CHECK (name <> '');
ALTER TABLE api_keys ADD COLUMN role TEXT CHECK (role IN ('viewer', 'agent', 'approver', 'admin'));
UPDATE api_keys SET role = 'admin';
ALTER TABLE api_keys ADD COLUMN scopes TEXT
    CHECK (scopes <> '' AND (role IS NULL) <> (scopes IS NULL));
ALTER TABLE api_keys ADD COLUMN prefix TEXT CHECK (length(prefix) = 8);
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
";

const SQLITE_DOWN: &str = r"
UPDATE api_keys SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
 WHERE revoked_at IS NULL AND (role IS NULL OR role <> 'admin');
ALTER TABLE api_keys DROP COLUMN scopes;
ALTER TABLE api_keys DROP COLUMN role;
ALTER TABLE api_keys DROP COLUMN name;
ALTER TABLE api_keys DROP COLUMN prefix;
ALTER TABLE api_keys DROP COLUMN expires_at;
ALTER TABLE api_keys DROP COLUMN last_used_at;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, SQLITE_DOWN).await
    }
}
