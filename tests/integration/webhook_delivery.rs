//! Webhook delivery end to end, on both backends: a real HTTP receiver
//! (axum on a local port) that verifies every message with the Standard
//! Webhooks reference library, and the relay draining the change log.
//!
//! Rounds are run one at a time (`run_tenant`, `run_due`), so each test
//! says exactly when the relay acts; retries poll with a deadline.

use std::{sync::Arc, time::Duration};

use crate::{
    receiver::receiver,
    support::{eventually, isolated_backends, lead_req, new_tenant, services},
};
use axum::http::StatusCode;
use leadline_app::{RelaySettings, Services, WebhookRelay};
use leadline_domain::{
    AppendEventRequest, ChangeFilter, CreateWebhookRequest, Direction, EventKind, Metadata,
    PageLimit, TenantId, WebhookUrl,
};
use leadline_outbound::{ChaChaBox, HttpSettings, HttpWebhookChannel};
use leadline_ports::{WebhookQueue, WebhookRepository};
use leadline_store::Store;

const KEY: [u8; 32] = [11; 32];

fn relay(store: &Store, settings: RelaySettings, allow_private: bool) -> WebhookRelay {
    WebhookRelay::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(
            HttpWebhookChannel::new(HttpSettings {
                timeout: Duration::from_secs(5),
                allow_private_targets: allow_private,
            })
            .unwrap(),
        ),
        Arc::new(ChaChaBox::new(&KEY)),
        settings,
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

fn with_key(store: &Store) -> Services {
    let mut s = services(store.clone());
    s.webhooks = s
        .webhooks
        .clone()
        .with_sealer(Arc::new(ChaChaBox::new(&KEY)));
    s
}

async fn hook(
    s: &Services,
    t: TenantId,
    url: &str,
    types: &str,
) -> (leadline_domain::WebhookId, String) {
    let created = s
        .webhooks
        .create(
            t,
            &CreateWebhookRequest {
                url: WebhookUrl::parse(url).unwrap(),
                types: ChangeFilter::parse(types).unwrap(),
                changes: true,
                channels: leadline_domain::MessageChannels::default(),
                active: true,
            },
        )
        .await
        .unwrap();
    (created.webhook.id, created.secret.expose())
}

fn note() -> AppendEventRequest {
    AppendEventRequest {
        kind: EventKind::Note,
        direction: Direction::Internal,
        content: None,
        occurred_at: None,
        actor: None,
        metadata: Metadata::default(),
    }
}

async fn changes_arrive_signed_in_order_and_only_the_types_asked_for(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (_, secret) = hook(&s, t, &url, "lead").await;
    r.trust(&secret);
    let before = s.leads.create(t, &lead_req("Before")).await.unwrap();
    let _ = before;
    let relay = relay(&store, quick(), true);

    let mut leads = Vec::new();
    for name in ["Ada", "Bea", "Cy"] {
        let lead = s.leads.create(t, &lead_req(name)).await.unwrap();
        s.timeline.append(t, lead.id, &note()).await.unwrap();
        leads.push(lead.id.to_string());
    }
    // Another tenant's writes never reach this endpoint.
    let foreign = s.leads.create(other, &lead_req("Eve")).await.unwrap();
    relay.run_tenant(other, true).await.unwrap();
    let report = eventually(
        "the three leads are delivered",
        Duration::from_secs(15),
        async || {
            let report = relay.run_tenant(t, true).await.unwrap();
            if r.seen().len() >= 4 {
                Ok(report)
            } else {
                Err(r.seen())
            }
        },
    )
    .await;
    let _ = report;
    let seen = r.seen();
    let ids: Vec<&str> = seen
        .iter()
        .map(|m| m.body["data"]["entity_id"].as_str().unwrap())
        .collect();
    // "Before" was created after the endpoint, so it is delivered too.
    assert_eq!(ids.len(), 4, "{seen:?}");
    assert_eq!(
        &ids[1..],
        leads.iter().map(String::as_str).collect::<Vec<_>>(),
        "in commit order"
    );
    assert!(
        !ids.contains(&foreign.id.to_string().as_str()),
        "no other tenant's change"
    );
    for m in &seen {
        assert_eq!(
            m.body["type"], "lead.created",
            "only the types asked for: {m:?}"
        );
        assert_eq!(
            m.verified_by,
            vec![0],
            "signed with the endpoint's secret: {m:?}"
        );
        assert_eq!(m.body["data"]["type"], m.body["type"]);
    }
    let mut unique: Vec<&str> = seen.iter().map(|m| m.id.as_str()).collect();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "one webhook-id per change");
    // Nothing more to send: a new round delivers nothing again.
    let again = relay.run_tenant(t, true).await.unwrap();
    assert_eq!(again.delivered, 0, "{again:?}");
    assert_eq!(r.seen().len(), 4);
}

async fn a_rotated_secret_signs_beside_the_old_one(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (id, old) = hook(&s, t, &url, "").await;
    let rotated = s.webhooks.rotate(t, id).await.unwrap();
    r.trust(&old);
    r.trust(&rotated.secret.expose());
    s.leads.create(t, &lead_req("Rot")).await.unwrap();
    let relay = relay(&store, quick(), true);
    eventually(
        "the change is delivered",
        Duration::from_secs(15),
        async || {
            relay.run_tenant(t, true).await.unwrap();
            r.seen().first().cloned().ok_or(())
        },
    )
    .await;
    assert_eq!(
        r.seen()[0].verified_by,
        vec![0, 1],
        "both secrets verify during the overlap"
    );
}

async fn a_failing_receiver_gets_retries_then_refusals_become_dead_letters(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (id, secret) = hook(&s, t, &url, "lead.created").await;
    r.trust(&secret);
    r.answer(StatusCode::SERVICE_UNAVAILABLE, Some("0"));
    r.answer(StatusCode::BAD_REQUEST, None);
    let first = s.leads.create(t, &lead_req("One")).await.unwrap();
    let second = s.leads.create(t, &lead_req("Two")).await.unwrap();
    let relay = relay(&store, quick(), true);

    // 503: the stream stops at the first change, to be retried.
    let report = eventually("the first attempt", Duration::from_secs(15), async || {
        let report = relay.run_tenant(t, true).await.unwrap();
        if report.retrying == 1 {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await;
    assert_eq!(report.delivered, 0);
    let health = s.webhooks.get(t, id).await.unwrap().delivery;
    assert_eq!(
        (health.failing_attempts, health.last_error.as_deref()),
        (1, Some("HTTP 503")),
        "the endpoint says it is failing"
    );
    // A wake-up does not hurry a backing-off endpoint.
    assert_eq!(relay.run_tenant(t, true).await.unwrap().endpoints, 0);
    // When due again: the same change (400: a dead letter), then the next.
    eventually(
        "the retry and the next change",
        Duration::from_secs(15),
        async || {
            relay.run_due().await.unwrap();
            if r.seen().len() >= 3 {
                Ok(())
            } else {
                Err(r.seen())
            }
        },
    )
    .await;
    let seen = r.seen();
    assert_eq!(seen[0].id, seen[1].id, "a retry is the same message");
    assert_eq!(seen[1].body["data"]["entity_id"], first.id.to_string());
    assert_eq!(seen[2].body["data"]["entity_id"], second.id.to_string());
    let dead = store
        .dead_letters(t, id, PageLimit::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].entity_id, first.id.as_uuid());
    assert_eq!((dead[0].attempts, dead[0].reason.as_str()), (2, "HTTP 400"));
    let health = s.webhooks.get(t, id).await.unwrap().delivery;
    assert_eq!(health.failing_attempts, 0, "moving again");
    assert!(health.last_delivered_at.is_some());
}

async fn a_delivery_whose_record_was_lost_goes_out_again_with_the_same_id(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (_, secret) = hook(&s, t, &url, "lead.created").await;
    r.trust(&secret);
    s.leads.create(t, &lead_req("Once")).await.unwrap();
    // A relay that claims, delivers, and dies before recording: its claim
    // is taken and never released (a one-second lease).
    let settings = RelaySettings {
        lease_secs: 1,
        ..quick()
    };
    let claimed = eventually(
        "the endpoint is claimable",
        Duration::from_secs(15),
        async || {
            let c = WebhookQueue::claim(&store, t, Duration::from_secs(1), true)
                .await
                .unwrap();
            c.into_iter().next().ok_or(())
        },
    )
    .await;
    // The log shows a change once no older transaction is still open
    // anywhere on the server (its gap-free order): other tests' writes can
    // hold it back a moment.
    let change = eventually(
        "the lead's change is readable",
        Duration::from_secs(15),
        async || {
            let log = leadline_ports::ChangeLog::after(&store, t, claimed.after, 10)
                .await
                .unwrap();
            log.items
                .into_iter()
                .find(|c| c.change.kind.as_str() == "lead.created")
                .ok_or(())
        },
    )
    .await;
    let message = leadline_domain::WebhookMessage::of(claimed.webhook.id, &change);
    let channel = HttpWebhookChannel::new(HttpSettings {
        timeout: Duration::from_secs(5),
        allow_private_targets: true,
    })
    .unwrap();
    let target = leadline_ports::WebhookTarget {
        url: claimed.webhook.url.clone(),
        secrets: vec![
            leadline_domain::WebhookSecret::from_bytes(
                &leadline_ports::SecretBox::open(&ChaChaBox::new(&KEY), &claimed.secret).unwrap(),
            )
            .unwrap(),
        ],
    };
    let outcome = leadline_ports::WebhookChannel::post(&channel, &target, &message).await;
    assert!(matches!(
        outcome,
        leadline_domain::AttemptOutcome::Delivered { .. }
    ));
    // The relay that died held the claim: nobody else delivers until the
    // lease ends; then the change goes out again, the same message.
    let relay = relay(&store, settings, true);
    eventually(
        "the redelivery after the lease",
        Duration::from_secs(15),
        async || {
            relay.run_due().await.unwrap();
            if r.seen().len() >= 2 {
                Ok(())
            } else {
                Err(r.seen().len())
            }
        },
    )
    .await;
    let seen = r.seen();
    assert_eq!(
        seen[0].id, seen[1].id,
        "the receiver can drop the duplicate by webhook-id"
    );
    assert_eq!(seen[0].body, seen[1].body);
    // Recorded this time: nothing more.
    relay.run_tenant(t, true).await.unwrap();
    assert_eq!(r.seen().len(), 2);
}

async fn a_private_address_is_refused_unless_allowed(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (id, _) = hook(&s, t, &url, "lead.created").await;
    s.leads.create(t, &lead_req("Ssrf")).await.unwrap();
    let relay = relay(&store, quick(), false);
    eventually(
        "the change is given up on",
        Duration::from_secs(15),
        async || {
            let report = relay.run_tenant(t, true).await.unwrap();
            if report.dead == 1 {
                Ok(())
            } else {
                Err(report)
            }
        },
    )
    .await;
    assert!(r.seen().is_empty(), "nothing reached the loopback receiver");
    let dead = store
        .dead_letters(t, id, PageLimit::new(10).unwrap())
        .await
        .unwrap();
    assert!(dead[0].reason.contains("private"), "{dead:?}");
    let _ = WebhookRepository::get(&store, t, id).await.unwrap();
}

async fn two_relays_share_the_endpoints_without_delivering_twice(store: Store) {
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let mut hooks = Vec::new();
    for _ in 0..4 {
        let (_, secret) = hook(&s, t, &url, "lead.created").await;
        r.trust(&secret);
        hooks.push(secret);
    }
    for i in 0..10 {
        s.leads
            .create(t, &lead_req(&format!("Both{i}")))
            .await
            .unwrap();
    }
    let (a, b) = (relay(&store, quick(), true), relay(&store, quick(), true));
    eventually(
        "every endpoint gets every change",
        Duration::from_secs(30),
        async || {
            let (x, y) = tokio::join!(a.run_tenant(t, true), b.run_tenant(t, true));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.unrecorded + y.unrecorded, 0, "no claim was lost");
            if r.seen().len() >= 40 {
                Ok(())
            } else {
                Err(r.seen().len())
            }
        },
    )
    .await;
    let seen = r.seen();
    let mut ids: Vec<&str> = seen.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (seen.len(), ids.len()),
        (40, 40),
        "each change once per endpoint"
    );
    assert!(
        seen.iter().all(|m| m.verified_by.len() == 1),
        "each signed by its own endpoint's secret"
    );
}

isolated_backends!("webhook_delivery";
    changes_arrive_signed_in_order_and_only_the_types_asked_for,
    a_rotated_secret_signs_beside_the_old_one,
    a_failing_receiver_gets_retries_then_refusals_become_dead_letters,
    a_delivery_whose_record_was_lost_goes_out_again_with_the_same_id,
    a_private_address_is_refused_unless_allowed,
    two_relays_share_the_endpoints_without_delivering_twice,
);

/// The relay's own bookkeeping (claims, progress) grows no log, so it
/// wakes nobody: waking on it made an idle relay spin. Only a commit that
/// recorded changes wakes the tenant's readers. (SQLite: no other
/// instance's NOTIFY can arrive late and blur what woke whom.)
#[tokio::test]
async fn sqlite_only_a_commit_with_changes_wakes_readers() {
    use tokio::sync::broadcast::error::TryRecvError;
    let store = crate::support::sqlite_store().await;
    let s = with_key(&store);
    let (t, _) = new_tenant(&s).await;
    let (r, url) = receiver().await;
    let (_, secret) = hook(&s, t, &url, "lead.created").await;
    r.trust(&secret);
    let mut wakeups = leadline_ports::ChangeLog::wakeups(&store);
    s.leads.create(t, &lead_req("Wakes")).await.unwrap();
    assert_eq!(wakeups.try_recv(), Ok(t), "a recorded change wakes");
    let relay = relay(&store, quick(), true);
    let report = relay.run_tenant(t, true).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(
        wakeups.try_recv(),
        Err(TryRecvError::Empty),
        "the relay's claim and progress wake nobody"
    );
    // Caught up and woken again: it claims, finds nothing, wakes nobody.
    let again = relay.run_tenant(t, true).await.unwrap();
    assert_eq!((again.endpoints, again.delivered), (1, 0));
    assert_eq!(wakeups.try_recv(), Err(TryRecvError::Empty));
}
