//! The schema stays distributable by tenant (issue 17: Citus distributing
//! every tenant table by `tenant_id`), read from the migrated PostgreSQL
//! catalog rather than from the migrations' text:
//!
//! - every table with a `tenant_id` column is a tenant table
//!   (`TENANT_TABLES`), so none escapes row-level security or this check;
//! - every tenant table's primary key, unique constraints and unique
//!   indexes include `tenant_id`, so uniqueness is decidable within one
//!   shard. `tenants` itself is the one reference table (small, replicated
//!   to every node, its slug unique across all), so its keys are exempt;
//! - every foreign key between tenant tables carries `tenant_id` on both
//!   sides (to `tenants`: its `id`), so a reference never crosses shards.

use leadline_migrations::TENANT_TABLES;
use sqlx::{Connection, Row};

/// The reference table: replicated, not distributed.
const REFERENCE: &str = "tenants";

/// The distribution column of `table` (for `tenants`, the column other
/// tables' `tenant_id` meets).
fn tenant_column(table: &str) -> &'static str {
    if table == "tenants" {
        "id"
    } else {
        "tenant_id"
    }
}

#[tokio::test]
async fn every_tenant_table_keys_and_references_by_tenant() {
    let pg = crate::support::pg().await;
    let mut db = sqlx::PgConnection::connect(&pg.owner_url).await.unwrap();
    let mut problems = Vec::new();

    let with_tenant: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_name = 'tenant_id' \
         ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        with_tenant.len() >= TENANT_TABLES.len() - 1,
        "{with_tenant:?}"
    );
    for table in &with_tenant {
        if !TENANT_TABLES.contains(&table.as_str()) {
            problems.push(format!("{table} has tenant_id but is not in TENANT_TABLES"));
        }
    }

    // Keys and references: constraints, with their columns on both sides.
    let constraints = sqlx::query(
        "SELECT c.conrelid::regclass::text AS tab, c.conname::text AS name, c.contype::text AS kind, \
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k) AS cols, \
           c.confrelid::regclass::text AS ftab, \
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) k \
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k) AS fcols \
         FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace \
         WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut keyed = std::collections::BTreeSet::new();
    for row in &constraints {
        let table: String = row.get("tab");
        if !TENANT_TABLES.contains(&table.as_str()) {
            continue;
        }
        let (name, kind): (String, String) = (row.get("name"), row.get("kind"));
        let cols: Vec<String> = row.get("cols");
        let column = tenant_column(&table);
        if table != REFERENCE && !cols.iter().any(|c| c == column) {
            problems.push(format!(
                "{table}.{name} ({kind}) on {cols:?} lacks {column}"
            ));
        }
        if kind == "p" {
            keyed.insert(table.clone());
        }
        if kind == "f" {
            let (target, fcols): (String, Vec<String>) = (row.get("ftab"), row.get("fcols"));
            let target_column = tenant_column(&target);
            // The tenant column must meet the target's, position for
            // position, or the reference may cross tenants.
            let paired = cols
                .iter()
                .zip(&fcols)
                .any(|(c, f)| c == column && f == target_column);
            if !TENANT_TABLES.contains(&target.as_str()) || !paired {
                problems.push(format!(
                    "{table}.{name} references {target}{fcols:?} from {cols:?} without pairing {column} with {target_column}"
                ));
            }
        }
    }
    for table in TENANT_TABLES {
        if !keyed.contains(*table) {
            problems.push(format!("{table} has no primary key"));
        }
    }

    // Unique indexes that no constraint stands for (partial or expression
    // ones included): their plain columns must include the tenant's.
    let indexes = sqlx::query(
        "SELECT t.relname::text AS tab, i.relname::text AS name, \
           ARRAY(SELECT a.attname::text FROM unnest(x.indkey) k \
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k) AS cols \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE x.indisunique AND n.nspname = current_schema()",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(!indexes.is_empty(), "the catalog query sees the indexes");
    for row in &indexes {
        let table: String = row.get("tab");
        if !TENANT_TABLES.contains(&table.as_str()) {
            continue;
        }
        let (name, cols): (String, Vec<String>) = (row.get("name"), row.get("cols"));
        let column = tenant_column(&table);
        if table != REFERENCE && !cols.iter().any(|c| c == column) {
            problems.push(format!(
                "unique index {table}.{name} on {cols:?} lacks {column}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
