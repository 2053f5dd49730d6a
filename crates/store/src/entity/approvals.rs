use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, Approval, ApprovalId, LeadId, MessageBody, RejectionReason, Subject, TenantId,
};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "approvals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub lead_id: Uuid,
    pub channel: String,
    pub subject: Option<String>,
    pub body: String,
    pub requested_by: Uuid,
    pub status: String,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<String>,
    pub sent_by: Option<Uuid>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i32,
    pub edited_by: Option<Uuid>,
    pub edited_at: Option<DateTime<Utc>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for Approval {
    type Error = anyhow::Error;
    /// A row that fails to decode fails the whole read, naming its
    /// table and id: a page that silently skipped it would look like
    /// lost data (docs/backends.md, "Reading rows back").
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("approvals row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<Approval> {
    Ok(Approval {
        id: ApprovalId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        lead_id: LeadId::from_uuid(m.lead_id),
        channel: m
            .channel
            .parse()
            .map_err(|e| corrupt("approvals", "channel", e))?,
        subject: m
            .subject
            .map(|s| Subject::new(&s))
            .transpose()
            .map_err(|e| corrupt("approvals", "subject", e))?,
        body: MessageBody::new(&m.body).map_err(|e| corrupt("approvals", "body", e))?,
        requested_by: AgentId::from_uuid(m.requested_by),
        status: m
            .status
            .parse()
            .map_err(|e| corrupt("approvals", "status", e))?,
        decided_by: m.decided_by.map(AgentId::from_uuid),
        decided_at: m.decided_at,
        rejection_reason: m
            .rejection_reason
            .map(|r| RejectionReason::new(&r))
            .transpose()
            .map_err(|e| corrupt("approvals", "rejection_reason", e))?,
        sent_by: m.sent_by.map(AgentId::from_uuid),
        sent_at: m.sent_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
        revision: m.revision,
        edited_by: m.edited_by.map(AgentId::from_uuid),
        edited_at: m.edited_at,
    })
}

impl From<&Approval> for ActiveModel {
    fn from(a: &Approval) -> Self {
        use sea_orm::ActiveValue::Set;
        Self {
            tenant_id: Set(a.tenant_id.as_uuid()),
            id: Set(a.id.as_uuid()),
            lead_id: Set(a.lead_id.as_uuid()),
            channel: Set(a.channel.as_str().to_owned()),
            subject: Set(a.subject.as_ref().map(|s| s.as_str().to_owned())),
            body: Set(a.body.as_str().to_owned()),
            requested_by: Set(a.requested_by.as_uuid()),
            status: Set(a.status.as_str().to_owned()),
            decided_by: Set(a.decided_by.map(|x| x.as_uuid())),
            decided_at: Set(a.decided_at),
            rejection_reason: Set(a.rejection_reason.as_ref().map(|r| r.as_str().to_owned())),
            sent_by: Set(a.sent_by.map(|x| x.as_uuid())),
            sent_at: Set(a.sent_at),
            created_at: Set(a.created_at),
            updated_at: Set(a.updated_at),
            revision: Set(a.revision),
            edited_by: Set(a.edited_by.map(|x| x.as_uuid())),
            edited_at: Set(a.edited_at),
        }
    }
}
