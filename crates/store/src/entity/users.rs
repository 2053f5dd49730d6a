use chrono::{DateTime, Utc};
use leadline_domain::{AgentId, DisplayName, Email, PasswordHash, TenantId, User, UserId};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub agent_id: Option<Uuid>,
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for User {
    type Error = anyhow::Error;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("users row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<User> {
    Ok(User {
        id: UserId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        email: Email::parse(&m.email).map_err(|e| corrupt("users", "email", e))?,
        name: DisplayName::new(&m.name).map_err(|e| corrupt("users", "name", e))?,
        role: m.role.parse().map_err(|e| corrupt("users", "role", e))?,
        agent_id: m.agent_id.map(AgentId::from_uuid),
        has_password: m.password_hash.is_some(),
        created_at: m.created_at,
        disabled_at: m.disabled_at,
        version: m.version,
    })
}

/// The stored password hash of a row, if any.
pub(crate) fn password_of(m: &Model) -> anyhow::Result<Option<PasswordHash>> {
    m.password_hash
        .as_deref()
        .map(|h| PasswordHash::parse(h).map_err(|e| corrupt("users", "password_hash", e)))
        .transpose()
}
