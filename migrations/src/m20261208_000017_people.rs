//! The people who work in leadline: users with a role, their console
//! sessions, one-time login links, and the record of login attempts.
//!
//! - `users`: per tenant, unique email; a role (as API keys have); an
//!   optional link to the agent they act as; an argon2id `password_hash`
//!   (PHC string), NULL until the user sets one through a login link.
//! - `sessions`: server-side console sessions, looked up by the SHA-256 of
//!   the cookie's token; each carries its CSRF token, its absolute expiry
//!   and when it was last seen (for the idle timeout).
//! - `login_links`: one-time links (`leadline users invite`), by hash.
//! - `login_attempts`: every sign-in attempt, success or not, with the
//!   email and address: what the lockout counts and what an auditor reads.
//!   The service may only insert and read them.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000017_people"
    }
}

pub(crate) const TABLES: &[(&str, &str)] = &[
    ("users", "tenant_id"),
    ("sessions", "tenant_id"),
    ("login_links", "tenant_id"),
    ("login_attempts", "tenant_id"),
];

const PG_UP: &str = r"
CREATE TABLE users (
    tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id             uuid        NOT NULL,
    email          text        NOT NULL,
    name           text        NOT NULL CHECK (name <> ''),
    role           text        NOT NULL CHECK (role IN ('viewer', 'agent', 'approver', 'admin')),
    agent_id       uuid,
    password_hash  text        CHECK (password_hash LIKE '$argon2id$%'),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    disabled_at    timestamptz,
    version        bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT users_email_key UNIQUE (tenant_id, email),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE TABLE sessions (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL CHECK (length(token_hash) = 32),
    user_id       uuid        NOT NULL,
    csrf_token    text        NOT NULL CHECK (length(csrf_token) = 64),
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);
CREATE TABLE login_links (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    user_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE TABLE login_attempts (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         uuid        NOT NULL,
    email      text        NOT NULL,
    address    text        NOT NULL,
    succeeded  boolean     NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX login_attempts_email ON login_attempts (tenant_id, email, at);
CREATE INDEX login_attempts_address ON login_attempts (tenant_id, address, at);
GRANT SELECT, INSERT, UPDATE, DELETE ON users, sessions, login_links TO leadline_service;
GRANT SELECT, INSERT ON login_attempts TO leadline_service;
";

const PG_DOWN: &str = r"
DROP TABLE login_attempts;
DROP TABLE login_links;
DROP TABLE sessions;
DROP TABLE users;
";

const SQLITE_UP: &str = r"
CREATE TABLE users (
    tenant_id      BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id             BLOB    NOT NULL,
    email          TEXT    NOT NULL,
    name           TEXT    NOT NULL CHECK (name <> ''),
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'agent', 'approver', 'admin')),
    agent_id       BLOB,
    password_hash  TEXT    CHECK (password_hash LIKE '$argon2id$%'),
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    disabled_at    TEXT,
    version        INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT users_email_key UNIQUE (tenant_id, email),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE TABLE sessions (
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash    BLOB    NOT NULL CHECK (length(token_hash) = 32),
    user_id       BLOB    NOT NULL,
    csrf_token    TEXT    NOT NULL CHECK (length(csrf_token) = 64),
    created_at    TEXT    NOT NULL,
    last_seen_at  TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);
CREATE TABLE login_links (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash  BLOB    NOT NULL CHECK (length(token_hash) = 32),
    user_id     BLOB    NOT NULL,
    created_at  TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE TABLE login_attempts (
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         BLOB    NOT NULL,
    email      TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    succeeded  INTEGER NOT NULL,
    at         TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX login_attempts_email ON login_attempts (tenant_id, email, at);
CREATE INDEX login_attempts_address ON login_attempts (tenant_id, address, at);
";

const SQLITE_DOWN: &str = r"
DROP TABLE login_attempts;
DROP TABLE login_links;
DROP TABLE sessions;
DROP TABLE users;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_UP}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_DOWN}", disable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_DOWN).await
    }
}
