use chrono::{DateTime, Utc};
use leadline_domain::{Agent, AgentId, DisplayName, Email, TenantId};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for Agent {
    type Error = anyhow::Error;
    /// A row that fails to decode fails the whole read, naming its
    /// table and id: a page that silently skipped it would look like
    /// lost data (docs/backends.md, "Reading rows back").
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("agents row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<Agent> {
    Ok(Agent {
        id: AgentId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        name: DisplayName::new(&m.name).map_err(|e| corrupt("agents", "name", e))?,
        email: Email::parse(&m.email).map_err(|e| corrupt("agents", "email", e))?,
        role: m.role.parse().map_err(|e| corrupt("agents", "role", e))?,
        active: m.active,
        created_at: m.created_at,
        updated_at: m.updated_at,
        version: m.version,
    })
}

impl From<&Agent> for ActiveModel {
    fn from(a: &Agent) -> Self {
        use sea_orm::ActiveValue::Set;
        Self {
            tenant_id: Set(a.tenant_id.as_uuid()),
            id: Set(a.id.as_uuid()),
            name: Set(a.name.to_string()),
            email: Set(a.email.to_string()),
            role: Set(a.role.as_str().to_owned()),
            active: Set(a.active),
            created_at: Set(a.created_at),
            updated_at: Set(a.updated_at),
            version: Set(a.version),
        }
    }
}
