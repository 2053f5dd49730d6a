use chrono::{DateTime, Utc};
use leadline_domain::{AgentId, Event, EventContent, EventId, LeadId, Metadata, TenantId};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub lead_id: Uuid,
    pub kind: String,
    pub direction: String,
    pub content: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub actor: Option<Uuid>,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub created_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for Event {
    type Error = anyhow::Error;
    /// A row that fails to decode fails the whole read, naming its
    /// table and id: a page that silently skipped it would look like
    /// lost data (docs/backends.md, "Reading rows back").
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("events row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<Event> {
    Ok(Event {
        id: EventId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        lead_id: LeadId::from_uuid(m.lead_id),
        kind: m.kind.parse().map_err(|e| corrupt("events", "kind", e))?,
        direction: m
            .direction
            .parse()
            .map_err(|e| corrupt("events", "direction", e))?,
        content: m
            .content
            .map(|c| EventContent::new(&c))
            .transpose()
            .map_err(|e| corrupt("events", "content", e))?,
        occurred_at: m.occurred_at,
        actor: m.actor.map(AgentId::from_uuid),
        metadata: Metadata::new(m.metadata).map_err(|e| corrupt("events", "metadata", e))?,
        created_at: m.created_at,
    })
}

impl From<&Event> for ActiveModel {
    fn from(e: &Event) -> Self {
        use sea_orm::ActiveValue::Set;
        Self {
            tenant_id: Set(e.tenant_id.as_uuid()),
            id: Set(e.id.as_uuid()),
            lead_id: Set(e.lead_id.as_uuid()),
            kind: Set(e.kind.as_str().to_owned()),
            direction: Set(e.direction.as_str().to_owned()),
            content: Set(e.content.as_ref().map(|c| c.as_str().to_owned())),
            occurred_at: Set(e.occurred_at),
            actor: Set(e.actor.map(|a| a.as_uuid())),
            metadata: Set(Json::Object(e.metadata.as_map().clone())),
            created_at: Set(e.created_at),
        }
    }
}
