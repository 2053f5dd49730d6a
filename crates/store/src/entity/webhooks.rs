use chrono::{DateTime, Utc};
use leadline_domain::{
    ChangeFilter, DeliveryHealth, MessageChannels, TenantId, Webhook, WebhookId, WebhookUrl,
};
use sea_orm::entity::prelude::*;

use super::corrupt;

/// A webhook endpoint (migrations 13–15). The secrets are sealed bytes.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub url: String,
    pub types: String,
    pub active: bool,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub after_tx: i64,
    pub after_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_token: Option<Uuid>,
    pub last_error: Option<String>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub idle: bool,
    pub changes: bool,
    pub channels: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for Webhook {
    type Error = anyhow::Error;

    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        let c = |col: &'static str| move |e| corrupt("webhooks", col, e);
        let decoded = (|| {
            Ok::<_, anyhow::Error>(Self {
                id: WebhookId::from_uuid(m.id),
                tenant_id: TenantId::from_uuid(m.tenant_id),
                url: WebhookUrl::parse(&m.url).map_err(c("url"))?,
                types: ChangeFilter::parse(&m.types).map_err(c("types"))?,
                changes: m.changes,
                channels: MessageChannels::from_list(&m.channels).map_err(c("channels"))?,
                active: m.active,
                secret_rotated_at: m.secret_rotated_at,
                previous_secret_expires_at: m.previous_secret_expires_at,
                delivery: DeliveryHealth {
                    failing_attempts: u32::try_from(m.attempts)
                        .map_err(|e| corrupt("webhooks", "attempts", e))?,
                    last_error: m.last_error.clone(),
                    last_delivered_at: m.last_delivered_at,
                },
                created_at: m.created_at,
                updated_at: m.updated_at,
                version: m.version,
            })
        })();
        decoded.map_err(|e| e.context(format!("webhooks row {id} cannot be read")))
    }
}

impl ActiveModel {
    /// The columns an update of the endpoint's own fields sets (not its
    /// secrets, not its place in the log).
    pub(crate) fn fields_of(w: &Webhook) -> Self {
        use sea_orm::ActiveValue::{NotSet, Set};
        Self {
            tenant_id: NotSet,
            id: NotSet,
            url: Set(w.url.to_string()),
            types: Set(w.types.to_list()),
            active: Set(w.active),
            secret: NotSet,
            previous_secret: NotSet,
            secret_rotated_at: Set(w.secret_rotated_at),
            previous_secret_expires_at: Set(w.previous_secret_expires_at),
            after_tx: NotSet,
            after_seq: NotSet,
            created_at: NotSet,
            updated_at: Set(w.updated_at),
            version: Set(w.version),
            attempts: NotSet,
            next_attempt_at: NotSet,
            lease_token: NotSet,
            last_error: NotSet,
            last_delivered_at: NotSet,
            idle: NotSet,
            changes: Set(w.changes),
            channels: Set(w.channels.to_list()),
        }
    }
}
