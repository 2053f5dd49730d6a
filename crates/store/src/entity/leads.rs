use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, CompanyName, Email, Lead, LeadId, Metadata, PersonName, Phone, Source, Tags, TenantId,
};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "leads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub source: Option<String>,
    pub status: String,
    pub assigned_agent_id: Option<Uuid>,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// Set while the lead is deleted (hidden from every read, restorable).
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    /// The folded words search looks in (`leadline_domain::search`),
    /// written with every change of the lead.
    #[serde(default)]
    pub search_text: String,
    /// Folded name and company, for duplicate groups
    /// (`leadline_domain::search::name_key`).
    #[serde(default)]
    pub name_key: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn opt<T, E: std::fmt::Display>(
    value: Option<String>,
    column: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> anyhow::Result<Option<T>> {
    value
        .map(|v| parse(&v).map_err(|e| corrupt("leads", column, e)))
        .transpose()
}

impl TryFrom<Model> for Lead {
    type Error = anyhow::Error;
    /// A row that fails to decode fails the whole read, naming its
    /// table and id: a page that silently skipped it would look like
    /// lost data (docs/backends.md, "Reading rows back").
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("leads row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<Lead> {
    let tags: Vec<String> =
        serde_json::from_value(m.tags).map_err(|e| corrupt("leads", "tags", e))?;
    Ok(Lead {
        id: LeadId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        first_name: PersonName::new(&m.first_name)
            .map_err(|e| corrupt("leads", "first_name", e))?,
        last_name: PersonName::new(&m.last_name).map_err(|e| corrupt("leads", "last_name", e))?,
        email: opt(m.email, "email", Email::parse)?,
        phone: opt(m.phone, "phone", Phone::parse)?,
        company: opt(m.company, "company", CompanyName::new)?,
        source: opt(m.source, "source", Source::new)?,
        status: m
            .status
            .parse()
            .map_err(|e| corrupt("leads", "status", e))?,
        assigned_agent_id: m.assigned_agent_id.map(AgentId::from_uuid),
        tags: Tags::parse(&tags).map_err(|e| corrupt("leads", "tags", e))?,
        metadata: Metadata::new(m.metadata).map_err(|e| corrupt("leads", "metadata", e))?,
        created_at: m.created_at,
        updated_at: m.updated_at,
        version: m.version,
    })
}

pub(crate) fn tags_json(tags: &Tags) -> Json {
    Json::Array(
        tags.as_slice()
            .iter()
            .map(|t| Json::String(t.as_str().to_owned()))
            .collect(),
    )
}

/// `m` with the fields `req` sets written over it, in their stored form:
/// the repair path for a row that no longer decodes (docs/backends.md,
/// "Reading rows back"). A PATCH that sets the broken field makes the row
/// readable; status and assignment are left to [`Lead::apply`], which
/// checks their rules against the row as it decodes.
pub(crate) fn patched(mut m: Model, req: &leadline_domain::UpdateLeadRequest) -> Model {
    let text = |v: &dyn std::fmt::Display| v.to_string();
    if let Some(v) = &req.first_name {
        m.first_name = text(v);
    }
    if let Some(v) = &req.last_name {
        m.last_name = text(v);
    }
    if let Some(v) = &req.email {
        m.email = v.as_ref().map(|e| text(e));
    }
    if let Some(v) = &req.phone {
        m.phone = v.as_ref().map(|p| p.as_str().to_owned());
    }
    if let Some(v) = &req.company {
        m.company = v.as_ref().map(|c| text(c));
    }
    if let Some(v) = &req.source {
        m.source = v.as_ref().map(|s| text(s));
    }
    if let Some(v) = &req.tags {
        m.tags = tags_json(v);
    }
    if let Some(v) = &req.metadata {
        m.metadata = Json::Object(v.as_map().clone());
    }
    m
}

impl From<&Lead> for ActiveModel {
    fn from(l: &Lead) -> Self {
        use sea_orm::ActiveValue::Set;
        Self {
            tenant_id: Set(l.tenant_id.as_uuid()),
            id: Set(l.id.as_uuid()),
            first_name: Set(l.first_name.to_string()),
            last_name: Set(l.last_name.to_string()),
            email: Set(l.email.as_ref().map(ToString::to_string)),
            phone: Set(l.phone.as_ref().map(|p| p.as_str().to_owned())),
            company: Set(l.company.as_ref().map(ToString::to_string)),
            source: Set(l.source.as_ref().map(ToString::to_string)),
            status: Set(l.status.as_str().to_owned()),
            assigned_agent_id: Set(l.assigned_agent_id.map(|a| a.as_uuid())),
            tags: Set(tags_json(&l.tags)),
            metadata: Set(Json::Object(l.metadata.as_map().clone())),
            created_at: Set(l.created_at),
            updated_at: Set(l.updated_at),
            version: Set(l.version),
            // Written only by delete and restore; reads never see a deleted row.
            deleted_at: sea_orm::ActiveValue::NotSet,
            search_text: Set(leadline_domain::search::search_text(l)),
            name_key: Set(leadline_domain::search::lead_name_key(l)),
        }
    }
}
