use chrono::{DateTime, Utc};
use leadline_domain::{DisplayName, Email, SenderIdentity, Unsubscribe};
use sea_orm::entity::prelude::*;

use super::corrupt;

/// A tenant's sender identity (migration 9).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_senders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub from_email: String,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    pub unsubscribe: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for SenderIdentity {
    type Error = anyhow::Error;

    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let c = |col: &'static str| move |e| corrupt("email_senders", col, e);
        Self::new(
            Email::parse(&m.from_email).map_err(c("from_email"))?,
            m.from_name
                .as_deref()
                .map(DisplayName::new)
                .transpose()
                .map_err(c("from_name"))?,
            m.reply_to
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(c("reply_to"))?,
            m.unsubscribe
                .as_deref()
                .map(Unsubscribe::parse)
                .transpose()
                .map_err(c("unsubscribe"))?,
        )
        .map_err(|e| corrupt("email_senders", e.field, e.reason))
    }
}
