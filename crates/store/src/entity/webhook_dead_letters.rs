use chrono::{DateTime, Utc};
use leadline_domain::{ChangePosition, DeadLetter, WebhookId};
use sea_orm::entity::prelude::*;

use super::corrupt;

/// A change an endpoint never accepted (migration 14).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_dead_letters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub webhook_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub tx: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub entity_id: Uuid,
    pub attempts: i32,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for DeadLetter {
    type Error = anyhow::Error;

    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let c = |col: &'static str| move |e| corrupt("webhook_dead_letters", col, e);
        Ok(Self {
            webhook_id: WebhookId::from_uuid(m.webhook_id),
            change_id: ChangePosition {
                tx: u64::try_from(m.tx).map_err(c("tx"))?,
                seq: u64::try_from(m.seq).map_err(c("seq"))?,
            },
            kind: m
                .kind
                .parse()
                .map_err(|e| corrupt("webhook_dead_letters", "type", e))?,
            entity_id: m.entity_id,
            attempts: u32::try_from(m.attempts).map_err(c("attempts"))?,
            reason: m.reason,
            at: m.at,
        })
    }
}

impl ActiveModel {
    /// The row of `letter`, a dead letter of `tenant`.
    pub(crate) fn of(tenant: Uuid, letter: &DeadLetter) -> Self {
        use sea_orm::ActiveValue::Set;
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            tenant_id: Set(tenant),
            webhook_id: Set(letter.webhook_id.as_uuid()),
            tx: Set(signed(letter.change_id.tx)),
            seq: Set(signed(letter.change_id.seq)),
            kind: Set(letter.kind.as_str().to_owned()),
            entity_id: Set(letter.entity_id),
            attempts: Set(i32::try_from(letter.attempts).unwrap_or(i32::MAX)),
            reason: Set(letter.reason.clone()),
            at: Set(letter.at),
        }
    }
}
