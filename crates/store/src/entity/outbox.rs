use chrono::{DateTime, Utc};
use leadline_domain::{
    ApprovalId, Delivery, DeliveryId, LeadId, MessageBody, OutboxMessage, Subject, TenantId,
};
use sea_orm::entity::prelude::*;

use super::corrupt;

/// A sent message and its delivery (migrations 3 and 9).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub approval_id: Uuid,
    pub lead_id: Uuid,
    pub channel: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up on (NULL while pending).
    pub dispatched_at: Option<DateTime<Utc>>,
    pub status: String,
    pub attempts: i32,
    pub round_start: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_token: Option<Uuid>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<&Model> for Delivery {
    type Error = anyhow::Error;

    fn try_from(m: &Model) -> Result<Self, Self::Error> {
        let status = m
            .status
            .parse()
            .map_err(|e| corrupt("outbox", "status", e))?;
        Ok(Self {
            id: DeliveryId::from_uuid(m.id),
            tenant_id: TenantId::from_uuid(m.tenant_id),
            approval_id: ApprovalId::from_uuid(m.approval_id),
            lead_id: LeadId::from_uuid(m.lead_id),
            channel: m
                .channel
                .parse()
                .map_err(|e| corrupt("outbox", "channel", e))?,
            status,
            attempts: u32::try_from(m.attempts).map_err(|e| corrupt("outbox", "attempts", e))?,
            next_attempt_at: (status == leadline_domain::DeliveryStatus::Pending)
                .then_some(m.next_attempt_at),
            last_error: m.last_error.clone(),
            created_at: m.created_at,
            updated_at: m.updated_at,
            finished_at: m.dispatched_at,
        })
    }
}

/// The message an outbox row carries (`Approval::outbox_payload`).
pub(crate) fn message_of(m: &Model) -> Result<OutboxMessage, anyhow::Error> {
    #[derive(serde::Deserialize)]
    struct Payload {
        subject: Option<Subject>,
        body: MessageBody,
    }
    let p: Payload =
        serde_json::from_value(m.payload.clone()).map_err(|e| corrupt("outbox", "payload", e))?;
    Ok(OutboxMessage {
        subject: p.subject,
        body: p.body,
    })
}
