//! Messages other than email, end to end on both backends: an approved and
//! sent text goes to the tenant's webhook for texts, signed (verified by a
//! real receiver with the Standard Webhooks library), with the delivery's
//! id as `webhook-id`, and lands once on the lead's timeline; a text with
//! nowhere to go (no endpoint for the channel, no phone number) fails
//! saying why, and a retry after the endpoint exists delivers it; an
//! endpoint without the change feed receives messages only; texts recorded
//! as sent before leadline delivered them are never sent by surprise.
//!
//! PostgreSQL tests use a database of their own: the relay claims due work
//! of every tenant.

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use leadline_app::{MessageWebhooks, Relay, RelaySettings, Services, WebhookRelay};
use leadline_domain::{
    AgentId, ApprovalAction, ChangeFilter, Channel, CreateWebhookRequest, Delivery, DeliveryStatus,
    DraftApprovalRequest, EventKind, LeadId, MessageBody, MessageChannels, PageLimit, Phone,
    SenderIdentity, TenantId, TimelineQuery, WebhookUrl,
};
use leadline_outbound::{ChaChaBox, HttpSettings, HttpWebhookChannel};
use leadline_store::Store;

use crate::{
    receiver::receiver,
    support::{
        agent_req, eventually, isolated_backends, isolated_pg, lead_req, migrations_since,
        new_tenant, services, sqlite_store,
    },
};

isolated_backends!("message_delivery";
    a_text_goes_signed_to_the_texts_endpoint_once_and_lands_on_the_timeline,
    a_text_with_nowhere_to_go_fails_saying_why_and_a_retry_delivers_it,
);

const KEY: [u8; 32] = [29; 32];

struct World {
    s: Services,
    store: Store,
    tenant: TenantId,
    agent: AgentId,
}

async fn world(store: Store) -> World {
    let mut s = services(store.clone());
    s.webhooks = s
        .webhooks
        .clone()
        .with_sealer(Arc::new(ChaChaBox::new(&KEY)));
    let (tenant, _) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(tenant, &agent_req("ada@example.com"))
        .await
        .unwrap()
        .id;
    World {
        s,
        store,
        tenant,
        agent,
    }
}

impl World {
    async fn lead(&self, phone: Option<&str>) -> LeadId {
        let mut req = lead_req("Grace");
        req.phone = phone.map(|p| Phone::parse(p).unwrap());
        self.s.leads.create(self.tenant, &req).await.unwrap().id
    }

    /// Drafts, approves and sends a text to `lead`.
    async fn text(&self, lead: LeadId, body: &str) {
        let a = self
            .s
            .approvals
            .draft(
                self.tenant,
                lead,
                &DraftApprovalRequest {
                    channel: Channel::Sms,
                    subject: None,
                    body: MessageBody::new(body).unwrap(),
                    requested_by: self.agent,
                },
            )
            .await
            .unwrap();
        for action in [
            ApprovalAction::Approve { by: self.agent },
            ApprovalAction::MarkSent { by: self.agent },
        ] {
            self.s
                .approvals
                .act(self.tenant, a.id, &action)
                .await
                .unwrap();
        }
    }

    /// An endpoint for texts only (no change feed), and its secret.
    async fn texts_endpoint(&self, url: &str) -> String {
        self.s
            .webhooks
            .create(
                self.tenant,
                &CreateWebhookRequest {
                    url: WebhookUrl::parse(url).unwrap(),
                    types: ChangeFilter::default(),
                    changes: false,
                    channels: MessageChannels::new([Channel::Sms]).unwrap(),
                    active: true,
                },
            )
            .await
            .unwrap()
            .secret
            .expose()
    }

    fn channel() -> Arc<HttpWebhookChannel> {
        Arc::new(
            HttpWebhookChannel::new(HttpSettings {
                timeout: Duration::from_secs(5),
                allow_private_targets: true,
            })
            .unwrap(),
        )
    }

    fn relay(&self) -> Relay {
        Relay::new(
            Arc::new(self.store.clone()),
            None,
            Some(MessageWebhooks {
                channel: Self::channel(),
                sealer: Arc::new(ChaChaBox::new(&KEY)),
            }),
            Arc::new(leadline_cache::NullCache::new()),
            RelaySettings {
                retry_base_secs: 1,
                retry_cap_secs: 1,
                ..RelaySettings::default()
            },
            SenderIdentity::new(
                leadline_domain::Email::parse("relay@leadline.example").unwrap(),
                None,
                None,
                None,
            )
            .unwrap(),
        )
    }

    async fn deliveries(&self) -> Vec<Delivery> {
        self.s
            .deliveries
            .list(self.tenant, None, None, PageLimit::new(50).unwrap())
            .await
            .unwrap()
            .items
    }

    async fn kinds(&self, lead: LeadId) -> Vec<EventKind> {
        self.s
            .timeline
            .timeline(self.tenant, lead, &TimelineQuery::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| e.kind)
            .collect()
    }
}

async fn a_text_goes_signed_to_the_texts_endpoint_once_and_lands_on_the_timeline(store: Store) {
    let w = world(store).await;
    let (r, url) = receiver().await;
    r.trust(&w.texts_endpoint(&url).await);
    let lead = w.lead(Some("+44 20 7946 0018")).await;
    w.text(lead, "Still on for 3pm?").await;
    let Ok([delivery]) = <[Delivery; 1]>::try_from(w.deliveries().await) else {
        panic!("one delivery");
    };

    // The receiver is busy once: the text waits for a retry, then goes
    // out again under the same id.
    r.answer(StatusCode::SERVICE_UNAVAILABLE, None);
    let relay = w.relay();
    let first = relay.run_once().await.unwrap();
    assert_eq!((first.claimed, first.retrying), (1, 1), "{first:?}");
    eventually(
        "the retry delivers the text",
        Duration::from_secs(20),
        async || {
            let report = relay.run_once().await.unwrap();
            let seen = r.seen().len();
            if report.delivered == 1 {
                Ok(())
            } else {
                Err(format!("{report:?}; the receiver saw {seen}"))
            }
        },
    )
    .await;

    let seen = r.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let expected_id = format!("msg_dlv_{}", delivery.id.as_uuid().simple());
    for message in &seen {
        assert_eq!(message.id, expected_id, "the same id on every attempt");
        assert_eq!(
            message.verified_by,
            [0],
            "signed with the endpoint's secret"
        );
    }
    let body = &seen[1].body;
    assert_eq!(body["type"], "message.send");
    assert_eq!(body["data"]["channel"], "sms");
    assert_eq!(body["data"]["body"], "Still on for 3pm?");
    assert_eq!(body["data"]["lead_id"], lead.to_string());
    assert_eq!(body["data"]["to"]["name"], "Grace Tester");
    assert_eq!(
        body["data"]["to"]["phone"],
        serde_json::json!(Phone::parse("+44 20 7946 0018").unwrap())
    );

    let Ok([done]) = <[Delivery; 1]>::try_from(w.deliveries().await) else {
        panic!("one delivery");
    };
    assert_eq!((done.status, done.attempts), (DeliveryStatus::Delivered, 2));
    let kinds = w.kinds(lead).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::MessageDelivered)
            .count(),
        1,
        "{kinds:?}"
    );

    // Without the change feed the endpoint gets nothing from the change
    // relay, though the tenant's log holds the lead, the approval, the
    // events.
    let feed = WebhookRelay::new(
        Arc::new(w.store.clone()),
        Arc::new(w.store.clone()),
        World::channel(),
        Arc::new(ChaChaBox::new(&KEY)),
        RelaySettings::default(),
    );
    let report = feed.run_tenant(w.tenant, true).await.unwrap();
    assert_eq!(report.endpoints, 0, "{report:?}");
    assert_eq!(r.seen().len(), 2, "messages only");
}

async fn a_text_with_nowhere_to_go_fails_saying_why_and_a_retry_delivers_it(store: Store) {
    let w = world(store).await;
    let phoneless = w.lead(None).await;
    w.text(phoneless, "No number to text").await;
    let reachable = w.lead(Some("+1 555 0100")).await;
    w.text(reachable, "Nowhere to send it yet").await;
    let relay = w.relay();
    let report = relay.run_once().await.unwrap();
    assert_eq!((report.claimed, report.failed), (2, 2), "{report:?}");
    let failed = w.deliveries().await;
    let reason = |lead: LeadId| {
        let d = failed.iter().find(|d| d.lead_id == lead).unwrap();
        assert_eq!(d.status, DeliveryStatus::Failed);
        d.last_error.clone().unwrap_or_default()
    };
    assert!(reason(phoneless).contains("no phone number"), "{failed:?}");
    assert!(
        reason(reachable).contains(r#""channels": ["sms"]"#),
        "says how to route texts: {failed:?}"
    );
    assert!(
        w.kinds(reachable)
            .await
            .contains(&EventKind::DeliveryFailed)
    );

    let (r, url) = receiver().await;
    r.trust(&w.texts_endpoint(&url).await);
    let id = failed.iter().find(|d| d.lead_id == reachable).unwrap().id;
    w.s.deliveries.retry(w.tenant, id).await.unwrap();
    let report = relay.run_once().await.unwrap();
    assert_eq!((report.claimed, report.delivered), (1, 1), "{report:?}");
    let seen = r.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["data"]["body"], "Nowhere to send it yet");
    assert!(
        w.kinds(reachable)
            .await
            .contains(&EventKind::MessageDelivered)
    );
}

async fn texts_recorded_before_message_delivery_are_not_sent_by_surprise(store: Store) {
    let w = world(store.clone()).await;
    let lead = w.lead(Some("+1 555 0100")).await;
    w.text(lead, "Texted by hand last week").await;
    // Back to before migration 15, and up.
    store
        .migrate(leadline_store::MigrateOp::Down {
            steps: migrations_since("m20261207_000015_message_channels"),
        })
        .await
        .unwrap();
    store.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    let Ok([d]) = <[Delivery; 1]>::try_from(w.deliveries().await) else {
        panic!("one delivery");
    };
    assert_eq!(d.status, DeliveryStatus::Failed, "{d:?}");
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("went out some other way"),
        "{d:?}"
    );
    // An endpoint made now does not get it; a person may still send it.
    let (r, url) = receiver().await;
    r.trust(&w.texts_endpoint(&url).await);
    assert_eq!(w.relay().run_once().await.unwrap().claimed, 0);
    assert!(r.seen().is_empty());
    let retried = w.s.deliveries.retry(w.tenant, d.id).await.unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
}

#[tokio::test]
async fn sqlite_texts_recorded_before_message_delivery_are_not_sent_by_surprise() {
    texts_recorded_before_message_delivery_are_not_sent_by_surprise(sqlite_store().await).await;
}

#[tokio::test]
async fn postgres_texts_recorded_before_message_delivery_are_not_sent_by_surprise() {
    // The migrating owner runs the service's calls too (under the same
    // row-level security), as it must to migrate down and up.
    let (owner_url, _) = isolated_pg("leadline_mig15").await;
    let owner =
        Store::connect_for_migrations(&owner_url, &leadline_store::StoreSettings::default())
            .await
            .unwrap();
    texts_recorded_before_message_delivery_are_not_sent_by_surprise(owner).await;
}
