//! Webhook endpoints: where a tenant wants its changes POSTed, which types
//! it wants, and the secret the deliveries are signed with (the Standard
//! Webhooks scheme: `whsec_` and the base64 of the key).
//!
//! A secret is shown once, when it is made (at creation and at each
//! rotation); the store keeps it sealed. After a rotation the previous
//! secret keeps signing beside the new one for [`ROTATION_GRACE`], so a
//! receiver can switch keys without a window of refused deliveries.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};

use crate::{
    ChangeFilter, ChangePosition, ChangeType, Channel, Delivery, LoggedChange, OutboxMessage,
    Recipient, TenantId, ValueError, ids::WebhookId,
};

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// Most endpoints one tenant may have.
pub const MAX_WEBHOOKS_PER_TENANT: u64 = 50;

/// Where deliveries are POSTed: an absolute `http` or `https` URL with a
/// host, without credentials (they would be stored and shown in clear) or
/// a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// The longest accepted URL.
    pub const MAX: usize = 2048;

    /// Parses and normalises `raw`.
    ///
    /// # Errors
    /// [`ValueError`] saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ValueError::Empty);
        }
        if raw.chars().count() > Self::MAX {
            return Err(ValueError::TooLong { max: Self::MAX });
        }
        let url = url::Url::parse(raw)
            .map_err(|_| ValueError::Invalid("must be an absolute http:// or https:// URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValueError::Invalid("must be an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ValueError::Invalid("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValueError::Invalid(
                "must not carry credentials: the payload is signed with the webhook's secret",
            ));
        }
        if url.port() == Some(0) {
            return Err(ValueError::Invalid("must not name port 0"));
        }
        if url.fragment().is_some() {
            return Err(ValueError::Invalid("must not have a #fragment"));
        }
        let normalised = url.to_string();
        if normalised.chars().count() > Self::MAX {
            return Err(ValueError::TooLong { max: Self::MAX });
        }
        Ok(Self(normalised))
    }

    /// The URL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The approval channels whose sent messages an endpoint carries: any but
/// email (which goes out over SMTP), each at most once, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageChannels(Vec<Channel>);

impl MessageChannels {
    /// The set of `channels`.
    ///
    /// # Errors
    /// [`ValueError`] for `email`.
    pub fn new(channels: impl IntoIterator<Item = Channel>) -> Result<Self, ValueError> {
        let mut set = Vec::new();
        for channel in channels {
            if channel == Channel::Email {
                return Err(ValueError::Invalid(
                    "email goes out over SMTP (smtp.url), not to a webhook",
                ));
            }
            if !set.contains(&channel) {
                set.push(channel);
            }
        }
        set.sort_by_key(|c| c.as_str());
        Ok(Self(set))
    }

    /// Reads back what [`MessageChannels::to_list`] wrote.
    ///
    /// # Errors
    /// [`ValueError`] for an unknown channel or `email`.
    pub fn from_list(raw: &str) -> Result<Self, ValueError> {
        Self::new(
            raw.split(',')
                .filter(|n| !n.is_empty())
                .map(str::parse::<Channel>)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    /// Comma-separated, as stored (`call,sms`).
    #[must_use]
    pub fn to_list(&self) -> String {
        self.0
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The channels.
    #[must_use]
    pub fn as_slice(&self) -> &[Channel] {
        &self.0
    }

    /// Whether it carries `channel`.
    #[must_use]
    pub fn contains(&self, channel: Channel) -> bool {
        self.0.contains(&channel)
    }

    /// Whether it carries none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A signing key: 32 random bytes, written `whsec_<base64>`. Its `Debug`
/// never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret([u8; 32]);

impl WebhookSecret {
    const PREFIX: &'static str = "whsec_";

    /// The secret made of `key` (which the caller draws from a secure
    /// random source).
    #[must_use]
    pub const fn from_key(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// Reads a secret back from its bytes (as unsealed from the store).
    ///
    /// # Errors
    /// [`ValueError`] when it is not 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ValueError::Invalid("a webhook secret is 32 bytes"))
    }

    /// The key, for signing and sealing.
    #[must_use]
    pub const fn key(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret as the user copies it: `whsec_` and the key in base64.
    #[must_use]
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(self.0))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A webhook endpoint, as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// The change types it receives (all when empty).
    pub types: ChangeFilter,
    /// Whether it receives the change feed (of `types`); off for an
    /// endpoint that only carries messages.
    pub changes: bool,
    /// The channels whose approved messages it carries.
    pub channels: MessageChannels,
    /// Whether deliveries go out; an inactive endpoint keeps its place and
    /// catches up when reactivated.
    pub active: bool,
    /// When the secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// How its deliveries go (kept by the relay).
    pub delivery: DeliveryHealth,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// How an endpoint's deliveries go, as the relay last recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryHealth {
    /// Failed attempts at the change it is stuck on (0: not stuck).
    pub failing_attempts: u32,
    /// The last failure (cleared by the next delivery).
    pub last_error: Option<String>,
    /// When it last accepted a delivery.
    pub last_delivered_at: Option<DateTime<Utc>>,
}

/// A new endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateWebhookRequest {
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// The types it receives (all when empty).
    pub types: ChangeFilter,
    /// Whether it receives the change feed.
    pub changes: bool,
    /// The channels whose approved messages it carries.
    pub channels: MessageChannels,
    /// Whether deliveries go out at once.
    pub active: bool,
}

/// A change to an endpoint: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateWebhookRequest {
    /// The version the caller read.
    pub expected_version: i64,
    /// A new URL.
    pub url: Option<WebhookUrl>,
    /// New types.
    pub types: Option<ChangeFilter>,
    /// Turn the change feed on or off.
    pub changes: Option<bool>,
    /// New channels.
    pub channels: Option<MessageChannels>,
    /// Pause or resume.
    pub active: Option<bool>,
}

impl UpdateWebhookRequest {
    /// Whether it changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.types.is_none()
            && self.changes.is_none()
            && self.channels.is_none()
            && self.active.is_none()
    }
}

/// Why an endpoint cannot be made or changed as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefused {
    /// The caller read another version.
    #[error("the webhook is at version {current}")]
    Stale {
        /// The version it is at.
        current: i64,
    },
    /// It would receive nothing: no change feed and no channel.
    #[error("a webhook without the change feed must carry at least one channel")]
    ReceivesNothing,
}

impl Webhook {
    /// A new endpoint of `tenant`, created `now`.
    ///
    /// # Errors
    /// [`WebhookRefused::ReceivesNothing`].
    pub fn new(
        tenant: TenantId,
        req: &CreateWebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, WebhookRefused> {
        if !req.changes && req.channels.is_empty() {
            return Err(WebhookRefused::ReceivesNothing);
        }
        Ok(Self {
            id: WebhookId::new(),
            tenant_id: tenant,
            url: req.url.clone(),
            types: req.types.clone(),
            changes: req.changes,
            channels: req.channels.clone(),
            active: req.active,
            secret_rotated_at: None,
            previous_secret_expires_at: None,
            delivery: DeliveryHealth::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    /// This endpoint with `req` applied at `now`.
    ///
    /// # Errors
    /// [`WebhookRefused::Stale`] when `req` expected another version;
    /// [`WebhookRefused::ReceivesNothing`].
    pub fn apply(
        &self,
        req: &UpdateWebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, WebhookRefused> {
        if req.expected_version != self.version {
            return Err(WebhookRefused::Stale {
                current: self.version,
            });
        }
        let mut next = self.clone();
        if let Some(url) = &req.url {
            next.url = url.clone();
        }
        if let Some(types) = &req.types {
            next.types = types.clone();
        }
        if let Some(changes) = req.changes {
            next.changes = changes;
        }
        if let Some(channels) = &req.channels {
            next.channels = channels.clone();
        }
        if !next.changes && next.channels.is_empty() {
            return Err(WebhookRefused::ReceivesNothing);
        }
        if let Some(active) = req.active {
            next.active = active;
        }
        next.version += 1;
        next.updated_at = now;
        Ok(next)
    }

    /// This endpoint after its secret was rotated at `now`: the previous
    /// secret signs beside the new one until [`ROTATION_GRACE`] from now.
    #[must_use]
    pub fn rotated(&self, now: DateTime<Utc>) -> Self {
        Self {
            secret_rotated_at: Some(now),
            previous_secret_expires_at: Some(now + ROTATION_GRACE),
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Whether the previous secret still signs at `now`.
    #[must_use]
    pub fn previous_secret_signs(&self, now: DateTime<Utc>) -> bool {
        self.previous_secret_expires_at
            .is_some_and(|until| now < until)
    }
}

/// One change as an endpoint receives it: the Standard Webhooks message id
/// (`webhook-id`, the same on every redelivery of this change to this
/// endpoint, so a receiver can drop duplicates) and the JSON body
/// `{"type", "timestamp", "data"}`, `data` being the change exactly as
/// `GET /v1/changes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    /// `webhook-id`.
    pub id: String,
    /// The body, as signed.
    pub body: Vec<u8>,
}

impl WebhookMessage {
    /// The message that delivers `change` to `webhook`.
    #[must_use]
    pub fn of(webhook: WebhookId, change: &LoggedChange) -> Self {
        let body = serde_json::json!({
            "type": change.change.kind,
            "timestamp": change.change.at,
            "data": change,
        });
        Self {
            id: format!(
                "msg_{}_{}_{}",
                webhook.as_uuid().simple(),
                change.position.tx,
                change.position.seq
            ),
            // The domain's own values always serialise.
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

impl WebhookMessage {
    /// The message that carries a sent approval (`delivery`, saying
    /// `message`) to the endpoint of its channel: `webhook-id` is
    /// `msg_dlv_` and the delivery's id, the same on every attempt (and on
    /// a retry by hand), and the body is
    /// `{"type": "message.send", "timestamp", "data": {delivery_id,
    /// approval_id, lead_id, channel, to: {name, email, phone}, subject,
    /// body}}`.
    #[must_use]
    pub fn of_delivery(delivery: &Delivery, message: &OutboxMessage, to: &Recipient) -> Self {
        let body = serde_json::json!({
            "type": "message.send",
            "timestamp": delivery.created_at,
            "data": {
                "delivery_id": delivery.id,
                "approval_id": delivery.approval_id,
                "lead_id": delivery.lead_id,
                "channel": delivery.channel,
                "to": {
                    "name": to.name,
                    "email": to.email,
                    "phone": to.phone,
                },
                "subject": message.subject,
                "body": message.body,
            },
        });
        Self {
            id: format!("msg_dlv_{}", delivery.id.as_uuid().simple()),
            // The domain's own values always serialise.
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

/// A change an endpoint never accepted: refused for good (HTTP 4xx), or
/// failing every attempt. The endpoint's stream moved past it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// The change's position in the log.
    pub change_id: ChangePosition,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ChangeType,
    /// The entity it was about.
    pub entity_id: uuid::Uuid,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's failure.
    pub reason: String,
    /// When it was given up on.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_the_change_as_the_feed_shows_it_with_a_stable_id() {
        let tenant = TenantId::new();
        let lead = crate::fixtures::lead_context(tenant, crate::LeadId::new()).lead;
        let change = LoggedChange {
            position: ChangePosition { tx: 7, seq: 42 },
            change: crate::Change::lead(ChangeType::LeadCreated, &lead),
        };
        let hook = WebhookId::new();
        let message = WebhookMessage::of(hook, &change);
        assert_eq!(
            message,
            WebhookMessage::of(hook, &change),
            "the same id again"
        );
        assert!(message.id.ends_with("_7_42"), "{}", message.id);
        assert_ne!(WebhookMessage::of(WebhookId::new(), &change).id, message.id);
        let body: serde_json::Value = serde_json::from_slice(&message.body).expect("json");
        assert_eq!(body["type"], "lead.created");
        assert_eq!(body["data"], serde_json::to_value(&change).expect("json"));
        assert_eq!(body["data"]["id"], "7-42");
    }

    #[test]
    fn channels_are_a_set_without_email_and_read_back_from_their_list() {
        let set = MessageChannels::new([Channel::Sms, Channel::Call, Channel::Sms]).expect("valid");
        assert_eq!(set.to_list(), "call,sms");
        assert_eq!(MessageChannels::from_list(&set.to_list()), Ok(set.clone()));
        assert!(set.contains(Channel::Sms) && !set.contains(Channel::Linkedin));
        assert_eq!(
            MessageChannels::from_list(""),
            Ok(MessageChannels::default())
        );
        assert!(MessageChannels::new([Channel::Email]).is_err());
        assert!(MessageChannels::from_list("sms,fax").is_err());
    }

    #[test]
    fn a_sent_message_carries_its_delivery_id_and_the_recipient() {
        let now = Utc::now();
        let delivery = Delivery {
            id: crate::DeliveryId::new(),
            tenant_id: TenantId::new(),
            approval_id: crate::ApprovalId::new(),
            lead_id: crate::LeadId::new(),
            channel: Channel::Sms,
            status: crate::DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(now),
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let message = OutboxMessage {
            subject: None,
            body: crate::MessageBody::new("See you at 3?").expect("valid"),
        };
        let to = Recipient {
            name: Some("Ada Lovelace".to_owned()),
            email: None,
            phone: Some(crate::Phone::parse("+44 20 7946 0000").expect("valid")),
        };
        let sent = WebhookMessage::of_delivery(&delivery, &message, &to);
        assert_eq!(sent, WebhookMessage::of_delivery(&delivery, &message, &to));
        assert_eq!(
            sent.id,
            format!("msg_dlv_{}", delivery.id.as_uuid().simple())
        );
        let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
        assert_eq!(body["type"], "message.send");
        assert_eq!(body["data"]["channel"], "sms");
        assert_eq!(body["data"]["body"], "See you at 3?");
        assert_eq!(body["data"]["to"]["name"], "Ada Lovelace");
        assert_eq!(body["data"]["to"]["phone"], serde_json::json!(to.phone));
        assert_eq!(body["data"]["delivery_id"], delivery.id.to_string());
    }

    #[test]
    fn urls_are_absolute_http_without_credentials() {
        let ok = WebhookUrl::parse(" https://hooks.example.com/in?x=1 ").expect("valid");
        assert_eq!(ok.as_str(), "https://hooks.example.com/in?x=1");
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/hook").is_ok());
        for bad in [
            "",
            "hooks.example.com/in",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
            "http://",
            "https://:443/",
            "http://example.com:0/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(WebhookUrl::MAX));
        assert_eq!(
            WebhookUrl::parse(&long),
            Err(ValueError::TooLong {
                max: WebhookUrl::MAX
            })
        );
    }

    #[test]
    fn a_secret_is_shown_as_whsec_and_never_debugged() {
        let secret = WebhookSecret::from_key([7; 32]);
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(
            STANDARD
                .decode(&secret.expose()["whsec_".len()..])
                .expect("base64"),
            vec![7; 32]
        );
        assert!(!format!("{secret:?}").contains("Bwc"));
        assert_eq!(WebhookSecret::from_bytes(&[7; 32]), Ok(secret));
        assert!(WebhookSecret::from_bytes(&[7; 31]).is_err());
    }

    #[test]
    fn updates_check_the_version_and_rotation_keeps_the_old_secret_a_day() {
        let now = Utc::now();
        let hook = Webhook::new(
            TenantId::new(),
            &CreateWebhookRequest {
                url: WebhookUrl::parse("https://example.com/h").expect("valid"),
                types: ChangeFilter::default(),
                changes: true,
                channels: MessageChannels::default(),
                active: true,
            },
            now,
        )
        .expect("receives changes");
        let paused = hook
            .apply(
                &UpdateWebhookRequest {
                    expected_version: 1,
                    active: Some(false),
                    ..Default::default()
                },
                now,
            )
            .expect("current version");
        assert_eq!((paused.active, paused.version), (false, 2));
        assert_eq!(
            hook.apply(&UpdateWebhookRequest::default(), now),
            Err(WebhookRefused::Stale { current: 1 }),
            "version 0 is stale"
        );
        let feedless = UpdateWebhookRequest {
            expected_version: 1,
            changes: Some(false),
            ..Default::default()
        };
        assert_eq!(
            hook.apply(&feedless, now),
            Err(WebhookRefused::ReceivesNothing),
            "neither changes nor a channel"
        );
        let texts = hook
            .apply(
                &UpdateWebhookRequest {
                    channels: Some(MessageChannels::new([Channel::Sms]).expect("sms")),
                    ..feedless
                },
                now,
            )
            .expect("carries texts");
        assert_eq!(
            (texts.changes, texts.channels.to_list()),
            (false, "sms".to_owned())
        );
        let rotated = paused.rotated(now);
        assert_eq!(rotated.version, 3);
        assert!(rotated.previous_secret_signs(now + chrono::Duration::hours(23)));
        assert!(!rotated.previous_secret_signs(now + ROTATION_GRACE));
        assert!(!hook.previous_secret_signs(now));
    }
}
