//! Backups: the manifest every backup carries, and what a restore checks
//! against it.
//!
//! A backup file is a header line, the manifest as one line of JSON, and
//! the payload (the database file, or a dump). The manifest holds the
//! payload's length and SHA-256, so a truncated or corrupt file is refused
//! before anything is restored, and every table's row count and content
//! digest, so a restore proves it holds what was backed up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The first line of every backup file.
pub const MAGIC: &str = "LEADLINE-BACKUP 1";

/// One table as backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// SHA-256 (hex) over its rows in a fixed order, each rendered by the
    /// database in a fixed form.
    pub sha256: String,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `postgres` or `sqlite`: a backup restores into the same backend.
    pub backend: String,
    /// PostgreSQL: the role that owned the database's objects. A restore
    /// runs as a role of that name, because the owner's own policies (its
    /// `SECURITY DEFINER` functions read through them) name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When it was taken (the snapshot's time).
    pub created_at: DateTime<Utc>,
    /// The leadline version that took it.
    pub leadline: String,
    /// The newest migration applied to the database it came from.
    pub schema: String,
    /// The payload's length in bytes.
    pub payload_bytes: u64,
    /// The payload's SHA-256 (hex).
    pub payload_sha256: String,
    /// Every table, by name.
    pub tables: Vec<TableDigest>,
}

impl Manifest {
    /// How `restored` (the tables as read back after a restore) differs
    /// from the manifest, one line per table; empty when it holds exactly
    /// what was backed up.
    #[must_use]
    pub fn differences(&self, restored: &[TableDigest]) -> Vec<String> {
        let mut out = Vec::new();
        for want in &self.tables {
            match restored.iter().find(|t| t.table == want.table) {
                None => out.push(format!("{}: missing", want.table)),
                Some(got) if got.rows != want.rows => out.push(format!(
                    "{}: {} rows, the manifest says {}",
                    want.table, got.rows, want.rows
                )),
                Some(got) if got.sha256 != want.sha256 => {
                    out.push(format!(
                        "{}: content differs ({} rows)",
                        want.table, got.rows
                    ));
                }
                Some(_) => {}
            }
        }
        for got in restored {
            if !self.tables.iter().any(|t| t.table == got.table) {
                out.push(format!("{}: not in the manifest", got.table));
            }
        }
        out
    }

    /// Rows in all tables.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// The first line of every tenant export.
pub const TENANT_MAGIC: &str = "LEADLINE-TENANT 1";

/// What a tenant export holds: one tenant's rows, to import into another
/// deployment (of either backend), ids kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantManifest {
    /// The tenant's id, kept by the import.
    pub tenant_id: uuid::Uuid,
    /// Its slug.
    pub slug: String,
    /// `postgres` or `sqlite`: where it came from.
    pub backend: String,
    /// When it was read (one snapshot).
    pub created_at: DateTime<Utc>,
    /// The leadline version that read it.
    pub leadline: String,
    /// The newest migration of the database it came from: an import goes
    /// into a database at the same one.
    pub schema: String,
    /// Every table moved: its rows and the SHA-256 of their lines in the
    /// file.
    pub tables: Vec<TableDigest>,
}

impl TenantManifest {
    /// Rows in all tables.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(table: &str, rows: u64, sha: &str) -> TableDigest {
        TableDigest {
            table: table.to_owned(),
            rows,
            sha256: sha.to_owned(),
        }
    }

    #[test]
    fn differences_name_each_table_and_what_is_wrong() {
        let manifest = Manifest {
            backend: "sqlite".to_owned(),
            owner: None,
            created_at: Utc::now(),
            leadline: "0.1.0".to_owned(),
            schema: "m1".to_owned(),
            payload_bytes: 1,
            payload_sha256: "00".to_owned(),
            tables: vec![
                digest("leads", 3, "aa"),
                digest("events", 5, "bb"),
                digest("gone", 1, "cc"),
            ],
        };
        assert_eq!(manifest.rows(), 9);
        assert!(manifest.differences(&manifest.tables).is_empty());
        let got = vec![
            digest("leads", 2, "aa"),
            digest("events", 5, "xx"),
            digest("extra", 0, ""),
        ];
        assert_eq!(
            manifest.differences(&got),
            vec![
                "leads: 2 rows, the manifest says 3",
                "events: content differs (5 rows)",
                "gone: missing",
                "extra: not in the manifest",
            ]
        );
    }
}
