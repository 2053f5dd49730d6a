//! An entity's row as JSON on SQLite: the object PostgreSQL's
//! `row_to_json` makes, so that a read gathering several tables (the lead
//! context) can be one statement on SQLite too, decoded by the same serde
//! path as on PostgreSQL.
//!
//! On SQLite every statement is a hop to the connection's worker thread,
//! and that hop, not SQLite, bounds a read (docs/backends.md, "What bounds
//! SQLite"): one statement instead of five queries in a transaction is one
//! hop instead of seven.
//!
//! The expression is built from the entity's columns, so a column added to
//! an entity is in it. Each value is checked to have the storage class the
//! store writes (uuids as 16-byte blobs, JSON as valid text, booleans as 0
//! or 1); a row with any other gives a JSON string instead of an object,
//! which fails to decode, and the caller reads the row the portable way,
//! whose decoding names what is wrong with it.

use sea_orm::{ColumnTrait, ColumnType, EntityTrait, IdenStatic, Iterable};

/// What a row that is not as the store writes it renders as: a text that
/// is not JSON on its own, and a JSON string inside an array, where an
/// object is expected either way.
const UNREADABLE: &str = "'unreadable row'";

/// `alias`'s row of `E` as a JSON object keyed by column name (with
/// SQLite's JSON subtype, so that `json_group_array` embeds it as an
/// object), or the text `unreadable row` when a value is not stored as the
/// store writes it. `None` when a column's type has no JSON form here (the caller
/// then has no one-statement form).
pub(crate) fn row_object<E: EntityTrait>(alias: &str) -> Option<String> {
    let mut checks = Vec::new();
    let mut fields = Vec::new();
    for column in E::Column::iter() {
        let def = column.def();
        let name = column.as_str();
        let col = format!("{alias}.{name}");
        let (check, value) = match def.get_column_type() {
            ColumnType::Uuid => (
                format!("(typeof({col}) = 'blob' AND length({col}) = 16)"),
                format!("hex({col})"),
            ),
            ColumnType::Json | ColumnType::JsonBinary => (
                format!("(typeof({col}) = 'text' AND json_valid({col}))"),
                format!("json({col})"),
            ),
            ColumnType::Boolean => (
                format!("(typeof({col}) = 'integer' AND {col} IN (0, 1))"),
                format!("json(CASE {col} WHEN 1 THEN 'true' ELSE 'false' END)"),
            ),
            ColumnType::TinyInteger
            | ColumnType::SmallInteger
            | ColumnType::Integer
            | ColumnType::BigInteger => (format!("typeof({col}) = 'integer'"), col.clone()),
            ColumnType::Char(_)
            | ColumnType::String(_)
            | ColumnType::Text
            | ColumnType::DateTime
            | ColumnType::Timestamp
            | ColumnType::TimestampWithTimeZone => (format!("typeof({col}) = 'text'"), col.clone()),
            _ => return None,
        };
        if def.is_null() {
            checks.push(format!("({col} IS NULL OR {check})"));
            fields.push(format!(
                "'{name}', CASE WHEN {col} IS NOT NULL THEN {value} END"
            ));
        } else {
            checks.push(check);
            fields.push(format!("'{name}', {value}"));
        }
    }
    Some(format!(
        "CASE WHEN {} THEN json_object({}) ELSE {UNREADABLE} END",
        checks.join(" AND "),
        fields.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use crate::entity::{agents, approvals, events, leads};

    /// Every table the context reads has a JSON form, naming each column.
    #[test]
    fn the_context_tables_have_a_json_form() {
        let forms = [
            super::row_object::<leads::Entity>("l"),
            super::row_object::<agents::Entity>("a"),
            super::row_object::<approvals::Entity>("o"),
            super::row_object::<events::Entity>("e"),
        ];
        for form in &forms {
            assert!(form.is_some());
        }
        let lead = forms[0].as_deref().unwrap_or_default();
        assert!(lead.contains("'assigned_agent_id', CASE WHEN l.assigned_agent_id IS NOT NULL"));
        assert!(lead.contains("'tags', json(l.tags)"));
        assert!(lead.contains("'name_key', l.name_key"));
        let agent = forms[1].as_deref().unwrap_or_default();
        assert!(agent.contains("'active', json(CASE a.active WHEN 1"));
    }

    /// The uuid form `hex()` gives (32 upper-case digits) is one serde reads.
    #[test]
    fn hex_uuids_decode() {
        let id = uuid::Uuid::now_v7();
        let hex = format!("\"{}\"", id.simple()).to_uppercase();
        assert_eq!(serde_json::from_str::<uuid::Uuid>(&hex).ok(), Some(id));
    }
}
