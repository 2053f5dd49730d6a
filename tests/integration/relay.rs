//! The delivery relay against a real SMTP server (aiosmtpd, started by the
//! harness), on both backends: a sent approval becomes one email with a
//! stable Message-ID, unsubscribe headers and plain + HTML parts; transient
//! refusals back off and end in a dead letter a person can retry; permanent
//! ones bounce at once; the outcome lands once on the lead's timeline; two
//! relays on PostgreSQL share the queue without delivering anything twice;
//! STARTTLS and AUTH work, and wrong credentials or an untrusted
//! certificate are transient (the message is not at fault).
//!
//! PostgreSQL tests use a database of their own: the relay claims due work
//! of every tenant, and the shared database holds other tests' sends.
//! (The kill -9 redelivery test runs the real binary: crates/cli/tests.)

use std::{sync::Arc, time::Duration};

use leadline_app::{Relay, RelaySettings, Services};
use leadline_domain::{
    AgentId, ApprovalAction, ApprovalId, Channel, DeliveryStatus, DisplayName,
    DraftApprovalRequest, Email, EventKind, LeadId, MessageBody, OutboundEmail, SenderIdentity,
    Subject, TenantId, TimelineQuery, Unsubscribe,
};
use leadline_outbound::{SmtpChannel, SmtpSettings};
use leadline_ports::{DeliveryError, EmailChannel};
use leadline_store::Store;
use leadline_testsupport::{SmtpOptions, SmtpServer, smtp_server};
use secrecy::SecretString;

use crate::support::{
    agent_req, eventually, isolated_pg_url, lead_req, new_tenant, services, sqlite_store, store_at,
};

crate::support::isolated_backends!(
    "leadline_relay";
    a_sent_email_is_delivered_once_with_stable_headers,
    transient_refusals_back_off_then_dead_letter_and_a_retry_requeues,
    a_permanent_refusal_bounces_at_once,
    a_lead_without_an_address_fails_at_once,
);

struct World {
    s: Services,
    store: Store,
    tenant: TenantId,
    agent: AgentId,
}

async fn world(store: Store) -> World {
    let s = services(store.clone());
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
    /// A lead with `email` (none when `None`).
    async fn lead(&self, email: Option<&str>) -> LeadId {
        let mut req = lead_req("Grace");
        req.email = email.map(|e| Email::parse(e).unwrap());
        self.s.leads.create(self.tenant, &req).await.unwrap().id
    }

    /// Drafts, approves and sends an email to `lead`.
    async fn send(&self, lead: LeadId, body: &str) -> ApprovalId {
        let a = self
            .s
            .approvals
            .draft(
                self.tenant,
                lead,
                &DraftApprovalRequest {
                    channel: Channel::Email,
                    subject: Some(Subject::new("Hello from Acme").unwrap()),
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
        a.id
    }

    fn relay(&self, smtp: &SmtpServer, settings: RelaySettings) -> Relay {
        relay_over(self.store.clone(), smtp, settings)
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

    async fn only_delivery(&self) -> leadline_domain::Delivery {
        let page = self
            .s
            .deliveries
            .list(
                self.tenant,
                None,
                None,
                leadline_domain::PageLimit::new(50).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "{page:?}");
        page.items.into_iter().next().unwrap()
    }
}

fn smtp_settings(server: &SmtpServer) -> SmtpSettings {
    SmtpSettings {
        url: Some(SecretString::from(server.url())),
        ca_file: server.ca_file().map(std::path::Path::to_path_buf),
        from: "relay@leadline.example".to_owned(),
        ..SmtpSettings::default()
    }
}

fn relay_over(store: Store, smtp: &SmtpServer, settings: RelaySettings) -> Relay {
    let smtp = smtp_settings(smtp);
    let channel = SmtpChannel::from_settings(&smtp).unwrap().unwrap();
    Relay::new(
        Arc::new(store),
        Some(Arc::new(channel)),
        None,
        Arc::new(leadline_cache::NullCache::new()),
        settings,
        smtp.default_sender().unwrap(),
    )
}

fn quick() -> RelaySettings {
    RelaySettings {
        max_attempts: 3,
        retry_base_secs: 1,
        retry_cap_secs: 1,
        breaker_threshold: 100,
        ..RelaySettings::default()
    }
}

async fn a_sent_email_is_delivered_once_with_stable_headers(store: Store) {
    let w = world(store).await;
    let smtp = smtp_server(SmtpOptions::default());
    w.s.deliveries
        .set_sender(
            w.tenant,
            &SenderIdentity {
                from_email: Email::parse("team@acme.example").unwrap(),
                from_name: Some(DisplayName::new("Acme Team").unwrap()),
                reply_to: Some(Email::parse("replies@acme.example").unwrap()),
                unsubscribe: Some(Unsubscribe::parse("https://acme.example/u/1").unwrap()),
            },
        )
        .await
        .unwrap();
    let lead = w.lead(Some("grace@example.com")).await;
    let approval = w.send(lead, "Hi Grace,\nshall we <talk> & plan?").await;
    let pending = w.only_delivery().await;
    assert_eq!(
        (pending.status, pending.attempts, pending.approval_id),
        (DeliveryStatus::Pending, 0, approval)
    );

    let relay = w.relay(&smtp, quick());
    let report = relay.run_once().await.unwrap();
    assert_eq!((report.claimed, report.delivered), (1, 1), "{report:?}");

    let got = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.rcpt_tos, ["grace@example.com"]);
    assert_eq!(m.mail_from, "team@acme.example");
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some(format!("<approval-{approval}@acme.example>").as_str())
    );
    assert_eq!(
        m.header("List-Unsubscribe").as_deref(),
        Some("<https://acme.example/u/1>")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(
        m.header("Reply-To").as_deref(),
        Some("replies@acme.example")
    );
    assert!(
        m.header("From").unwrap().contains("Acme Team"),
        "{:?}",
        m.header("From")
    );
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        m.data
    );
    assert!(m.data.contains("text/plain") && m.data.contains("text/html"));
    assert!(m.data.contains("&lt;talk&gt; &amp; plan"), "{}", m.data);

    let delivered = w.only_delivery().await;
    assert_eq!(
        (
            delivered.status,
            delivered.attempts,
            delivered.next_attempt_at
        ),
        (DeliveryStatus::Delivered, 1, None)
    );
    assert!(delivered.finished_at.is_some());
    assert_eq!(
        w.kinds(lead)
            .await
            .iter()
            .filter(|k| **k == EventKind::EmailDelivered)
            .count(),
        1
    );

    // Nothing is left to claim, and nothing goes out twice.
    assert_eq!(relay.run_once().await.unwrap().claimed, 0);
    assert_eq!(smtp.messages().len(), 1);
}

async fn transient_refusals_back_off_then_dead_letter_and_a_retry_requeues(store: Store) {
    let w = world(store).await;
    let smtp = smtp_server(SmtpOptions::default());
    let lead = w.lead(Some("tempfail@example.com")).await;
    w.send(lead, "Hello").await;
    let relay = w.relay(&smtp, quick());

    let first = relay.run_once().await.unwrap();
    assert_eq!(first.retrying, 1, "{first:?}");
    let waiting = w.only_delivery().await;
    assert_eq!(
        (waiting.status, waiting.attempts),
        (DeliveryStatus::Pending, 1)
    );
    assert!(
        waiting.last_error.as_deref().unwrap().contains("451"),
        "{waiting:?}"
    );
    let due = waiting.next_attempt_at.unwrap();
    // retry_base_secs = 1: the first retry waits between 0.5 and 1 s.
    let wait = due - waiting.updated_at;
    assert!(
        wait >= chrono::Duration::milliseconds(400) && wait <= chrono::Duration::milliseconds(1000),
        "backs off half to all of the first step: due {due}, updated {}",
        waiting.updated_at
    );
    // Not due yet: a round right away claims nothing.
    assert_eq!(relay.run_once().await.unwrap().claimed, 0);

    let dead = eventually(
        "the third attempt dead-letters it",
        Duration::from_secs(20),
        async || {
            relay.run_once().await.unwrap();
            let d = w.only_delivery().await;
            if d.status == DeliveryStatus::Dead {
                Ok(d)
            } else {
                Err(d)
            }
        },
    )
    .await;
    assert_eq!(dead.attempts, 3);
    let kinds = w.kinds(lead).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::DeliveryFailed)
            .count(),
        1,
        "{kinds:?}"
    );
    let failed =
        w.s.deliveries
            .list(
                w.tenant,
                Some(DeliveryStatus::Dead),
                None,
                leadline_domain::PageLimit::new(10).unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(failed.items, std::slice::from_ref(&dead));

    // A person retries it: pending, due now, with a fresh budget.
    let again = w.s.deliveries.retry(w.tenant, dead.id).await.unwrap();
    assert_eq!((again.status, again.attempts), (DeliveryStatus::Pending, 3));
    assert!(matches!(
        w.s.deliveries.retry(w.tenant, dead.id).await,
        Err(DeliveryError::Conflict {
            current: DeliveryStatus::Pending
        })
    ));
    let round = relay.run_once().await.unwrap();
    assert_eq!(
        round.retrying, 1,
        "attempt 4 is the first of a new round: {round:?}"
    );
    assert_eq!(w.only_delivery().await.attempts, 4);
    assert!(matches!(
        w.s.deliveries
            .retry(w.tenant, leadline_domain::DeliveryId::new())
            .await,
        Err(DeliveryError::NotFound)
    ));
    assert!(smtp.messages().is_empty(), "nothing was accepted");
}

async fn a_permanent_refusal_bounces_at_once(store: Store) {
    let w = world(store).await;
    let smtp = smtp_server(SmtpOptions::default());
    let lead = w.lead(Some("reject@example.com")).await;
    w.send(lead, "Hello").await;
    let report = w.relay(&smtp, quick()).run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let d = w.only_delivery().await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 1));
    assert!(d.last_error.as_deref().unwrap().contains("550"), "{d:?}");
    let events =
        w.s.timeline
            .timeline(w.tenant, lead, &TimelineQuery::default())
            .await
            .unwrap()
            .items;
    let bounce = events
        .iter()
        .find(|e| e.kind == EventKind::EmailBounced)
        .expect("a bounce on the timeline");
    assert!(bounce.content.as_ref().unwrap().as_str().contains("550"));
    assert_eq!(
        bounce.metadata.as_map()["delivery_id"],
        serde_json::json!(d.id)
    );
}

async fn a_lead_without_an_address_fails_at_once(store: Store) {
    let w = world(store).await;
    let smtp = smtp_server(SmtpOptions::default());
    let lead = w.lead(None).await;
    w.send(lead, "Hello").await;
    let report = w.relay(&smtp, quick()).run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let d = w.only_delivery().await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 1));
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("no email address")
    );
    assert!(w.kinds(lead).await.contains(&EventKind::DeliveryFailed));
    assert!(smtp.messages().is_empty());
}

/// Two relays (two pools, as two instances would have) drain one queue on
/// PostgreSQL: every message goes out exactly once.
#[tokio::test]
async fn two_relays_share_the_queue_without_delivering_twice() {
    let url = isolated_pg_url("leadline_relay2").await;
    let w = world(store_at(&url).await).await;
    let smtp = smtp_server(SmtpOptions::default());
    const N: usize = 40;
    for i in 0..N {
        let lead = w.lead(Some(&format!("p{i}@example.com"))).await;
        w.send(lead, &format!("Message {i}")).await;
    }
    let settings = RelaySettings {
        batch: 5,
        ..quick()
    };
    let a = w.relay(&smtp, settings);
    let b = relay_over(store_at(&url).await, &smtp, settings);
    let (da, db) = tokio::join!(drain_all(&a), drain_all(&b));
    assert_eq!(da + db, N, "each delivered by one relay: {da} + {db}");
    let got = smtp.wait_for(N, Duration::from_secs(20));
    let mut ids: Vec<_> = got
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (N, N), "no message twice");
}

async fn drain_all(relay: &Relay) -> usize {
    let mut delivered = 0;
    loop {
        let r = relay.run_once().await.unwrap();
        delivered += r.delivered;
        if r.claimed == 0 {
            return delivered;
        }
    }
}

fn email_to(to: &str) -> OutboundEmail {
    let now = chrono::Utc::now();
    let delivery = leadline_domain::Delivery {
        id: leadline_domain::DeliveryId::new(),
        tenant_id: TenantId::new(),
        approval_id: ApprovalId::new(),
        lead_id: LeadId::new(),
        channel: Channel::Email,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now),
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    OutboundEmail::compose(
        &delivery,
        &leadline_domain::OutboxMessage {
            subject: Some(Subject::new("TLS").unwrap()),
            body: MessageBody::new("Over STARTTLS").unwrap(),
        },
        (None, Email::parse(to).unwrap()),
        &SenderIdentity {
            from_email: Email::parse("relay@leadline.example").unwrap(),
            from_name: None,
            reply_to: None,
            unsubscribe: None,
        },
    )
}

/// STARTTLS with a private CA and AUTH: delivered; wrong credentials and an
/// untrusted certificate are transient (the relay's setup is at fault, not
/// the message), and nothing is accepted without them.
#[tokio::test]
async fn starttls_and_auth_deliver_and_misconfiguration_is_transient() {
    let smtp = smtp_server(SmtpOptions {
        tls: true,
        auth: Some(("relay".to_owned(), "s3cret-pass".to_owned())),
        ..SmtpOptions::default()
    });
    let good = smtp_settings(&smtp);
    let channel = SmtpChannel::from_settings(&good).unwrap().unwrap();
    let outcome = channel.send(&email_to("ok@example.com")).await;
    assert!(
        matches!(outcome, leadline_domain::AttemptOutcome::Delivered { .. }),
        "{outcome:?}\n{}",
        smtp.log()
    );
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).len(), 1);

    let wrong_password = SmtpSettings {
        url: Some(SecretString::from(
            smtp.url().replace("s3cret-pass", "wrong-pass"),
        )),
        ..good.clone()
    };
    let outcome = SmtpChannel::from_settings(&wrong_password)
        .unwrap()
        .unwrap()
        .send(&email_to("ok@example.com"))
        .await;
    assert!(
        matches!(&outcome, leadline_domain::AttemptOutcome::Transient { reason, .. } if reason.contains("535")),
        "{outcome:?}"
    );

    let untrusted = SmtpSettings {
        ca_file: None,
        ..good.clone()
    };
    let outcome = SmtpChannel::from_settings(&untrusted)
        .unwrap()
        .unwrap()
        .send(&email_to("ok@example.com"))
        .await;
    assert!(
        matches!(outcome, leadline_domain::AttemptOutcome::Transient { .. }),
        "{outcome:?}"
    );
    assert_eq!(smtp.messages().len(), 1, "nothing more was accepted");
}

/// A dead server opens the breaker: after the threshold, due deliveries are
/// put back untried (no attempt counted) until the cool-down passes.
#[tokio::test]
async fn a_dead_server_opens_the_breaker_and_deliveries_wait_untried() {
    let w = world(sqlite_store().await).await;
    let mut smtp = smtp_server(SmtpOptions::default());
    for i in 0..4 {
        let lead = w.lead(Some(&format!("b{i}@example.com"))).await;
        w.send(lead, "Hello").await;
    }
    let relay = w.relay(
        &smtp,
        RelaySettings {
            concurrency: 1,
            breaker_threshold: 2,
            breaker_cool_down_secs: 600,
            ..quick()
        },
    );
    smtp.stop().unwrap();
    let report = relay.run_once().await.unwrap();
    assert_eq!(
        (report.claimed, report.retrying, report.deferred),
        (4, 2, 2),
        "two attempts open the breaker, the rest wait: {report:?}"
    );
    let page =
        w.s.deliveries
            .list(
                w.tenant,
                None,
                None,
                leadline_domain::PageLimit::new(10).unwrap(),
            )
            .await
            .unwrap();
    let mut attempts: Vec<u32> = page.items.iter().map(|d| d.attempts).collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [0, 0, 1, 1]);
    assert!(
        page.items
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending)
    );
}

/// Sends recorded before migration 9 were never delivered by leadline (no
/// relay existed: the message went out some other way). Migrating must not
/// send them by surprise: they become failed, saying why, and a person may
/// retry one.
async fn sends_before_delivery_existed_are_not_sent_by_surprise(store: Store) {
    let w = world(store.clone()).await;
    let lead = w.lead(Some("old@example.com")).await;
    w.send(lead, "Sent by hand last month").await;
    // Back to before migration 9 (the later ones go too), and up.
    store
        .migrate(leadline_store::MigrateOp::Down {
            steps: crate::support::migrations_since("m20261205_000009_deliveries"),
        })
        .await
        .unwrap();
    store.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    let d = w.only_delivery().await;
    assert_eq!(d.status, DeliveryStatus::Failed, "{d:?}");
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("before delivery existed"),
        "{d:?}"
    );
    let retried = w.s.deliveries.retry(w.tenant, d.id).await.unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
}

#[tokio::test]
async fn sqlite_sends_before_delivery_existed_are_not_sent_by_surprise() {
    sends_before_delivery_existed_are_not_sent_by_surprise(sqlite_store().await).await;
}

#[tokio::test]
async fn postgres_sends_before_delivery_existed_are_not_sent_by_surprise() {
    use crate::support::{OWNER, OWNER_PASSWORD};
    crate::support::pg().await;
    let server = leadline_testsupport::postgres();
    let db = server
        .create_database("leadline_mig9", Some(OWNER))
        .await
        .unwrap();
    let owner = Store::connect_for_migrations(
        &server.url(OWNER, OWNER_PASSWORD, &db),
        &leadline_store::StoreSettings::default(),
    )
    .await
    .unwrap();
    owner.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    sends_before_delivery_existed_are_not_sent_by_surprise(owner).await;
}
