use leadline_domain::import::{ColumnError, RejectedRow};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "import_rejects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub import_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub line: i64,
    #[sea_orm(column_type = "JsonBinary")]
    pub errors: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub fields: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl ActiveModel {
    pub(crate) fn of(tenant: Uuid, import: Uuid, row: &RejectedRow) -> Self {
        use sea_orm::ActiveValue::Set;
        let errors = row
            .errors
            .iter()
            .map(|e| serde_json::json!({"column": e.column, "reason": e.reason}))
            .collect();
        Self {
            tenant_id: Set(tenant),
            import_id: Set(import),
            line: Set(i64::try_from(row.line).unwrap_or(i64::MAX)),
            errors: Set(Json::Array(errors)),
            fields: Set(Json::Array(
                row.fields.iter().cloned().map(Json::String).collect(),
            )),
        }
    }
}

impl TryFrom<Model> for RejectedRow {
    type Error = anyhow::Error;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let errors: Vec<serde_json::Map<String, Json>> =
            serde_json::from_value(m.errors).map_err(|e| corrupt("import_rejects", "errors", e))?;
        let fields: Vec<String> =
            serde_json::from_value(m.fields).map_err(|e| corrupt("import_rejects", "fields", e))?;
        let text = |e: &serde_json::Map<String, Json>, k: &str| {
            e.get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Self {
            line: u64::try_from(m.line).map_err(|e| corrupt("import_rejects", "line", e))?,
            errors: errors
                .iter()
                .map(|e| ColumnError {
                    column: text(e, "column"),
                    reason: text(e, "reason"),
                })
                .collect(),
            fields,
        })
    }
}
