//! Webhook endpoints through the use cases on both backends: created with
//! a secret shown once, read and listed without it, changed under a
//! version, rotated, deleted, bounded per tenant, and invisible to other
//! tenants; each message channel carried by one endpoint at most, and no
//! endpoint that would receive nothing.

use std::sync::Arc;

use leadline_app::Services;
use leadline_domain::{
    ChangeFilter, Channel, CreateWebhookRequest, MAX_WEBHOOKS_PER_TENANT, MessageChannels,
    PageLimit, UpdateWebhookRequest, WebhookUrl,
};
use leadline_outbound::ChaChaBox;
use leadline_ports::WebhookError;
use leadline_store::Store;

use crate::support::{both_backends, new_tenant, services};

fn with_key(store: Store) -> Services {
    let mut s = services(store);
    s.webhooks = s
        .webhooks
        .clone()
        .with_sealer(Arc::new(ChaChaBox::new(&[3; 32])));
    s
}

fn request(path: &str) -> CreateWebhookRequest {
    CreateWebhookRequest {
        url: WebhookUrl::parse(&format!("https://hooks.example.com/{path}")).unwrap(),
        types: ChangeFilter::parse("lead,approval.sent").unwrap(),
        changes: true,
        channels: leadline_domain::MessageChannels::default(),
        active: true,
    }
}

async fn endpoints_live_their_whole_life(store: Store) {
    let s = with_key(store.clone());
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;

    let created = s.webhooks.create(t, &request("a")).await.unwrap();
    assert!(created.secret.expose().starts_with("whsec_"));
    let read = s.webhooks.get(t, created.webhook.id).await.unwrap();
    assert_eq!(read, created.webhook, "reads back as created");
    assert_eq!(
        read.types.to_list(),
        ChangeFilter::parse("lead,approval.sent").unwrap().to_list()
    );

    // Another tenant neither reads, changes, rotates nor deletes it.
    let id = created.webhook.id;
    assert!(matches!(
        s.webhooks.get(other, id).await,
        Err(WebhookError::NotFound)
    ));
    let pause = UpdateWebhookRequest {
        expected_version: 1,
        active: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        s.webhooks.update(other, id, &pause).await,
        Err(WebhookError::NotFound)
    ));
    assert!(matches!(
        s.webhooks.rotate(other, id).await,
        Err(WebhookError::NotFound)
    ));
    assert!(matches!(
        s.webhooks.delete(other, id).await,
        Err(WebhookError::NotFound)
    ));
    let others = s
        .webhooks
        .list(other, None, PageLimit::new(10).unwrap())
        .await
        .unwrap();
    assert!(others.items.is_empty());

    let paused = s.webhooks.update(t, id, &pause).await.unwrap();
    assert_eq!((paused.active, paused.version), (false, 2));
    assert!(matches!(
        s.webhooks.update(t, id, &pause).await,
        Err(WebhookError::Conflict { current: 2 })
    ));
    let rotated = s.webhooks.rotate(t, id).await.unwrap();
    assert_ne!(rotated.secret, created.secret);
    assert_eq!(rotated.webhook.version, 3);
    assert!(rotated.webhook.previous_secret_signs(chrono::Utc::now()));
    assert_eq!(s.webhooks.get(t, id).await.unwrap(), rotated.webhook);

    s.webhooks.delete(t, id).await.unwrap();
    assert!(matches!(
        s.webhooks.get(t, id).await,
        Err(WebhookError::NotFound)
    ));
    assert!(matches!(
        s.webhooks.delete(t, id).await,
        Err(WebhookError::NotFound)
    ));

    // Without a key nothing is made, and the error says so.
    let keyless = services(store);
    assert!(matches!(
        keyless.webhooks.create(t, &request("b")).await,
        Err(WebhookError::NotConfigured)
    ));
}

async fn a_tenant_has_a_bounded_number_of_endpoints_listed_in_pages(store: Store) {
    let s = with_key(store);
    let (t, _) = new_tenant(&s).await;
    let mut made = Vec::new();
    for i in 0..MAX_WEBHOOKS_PER_TENANT {
        made.push(
            s.webhooks
                .create(t, &request(&i.to_string()))
                .await
                .unwrap()
                .webhook
                .id,
        );
    }
    assert!(matches!(
        s.webhooks.create(t, &request("one-too-many")).await,
        Err(WebhookError::TooMany {
            max: MAX_WEBHOOKS_PER_TENANT
        })
    ));
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .webhooks
            .list(t, after, PageLimit::new(7).unwrap())
            .await
            .unwrap();
        listed.extend(page.items.iter().map(|w| w.id));
        match page.items.last() {
            Some(last) if page.has_more => after = Some(last.id),
            _ => break,
        }
    }
    made.sort();
    assert_eq!(listed, made, "every endpoint once, oldest first");
}

fn carrying(path: &str, channels: &[Channel]) -> CreateWebhookRequest {
    CreateWebhookRequest {
        changes: false,
        channels: MessageChannels::new(channels.iter().copied()).unwrap(),
        ..request(path)
    }
}

async fn each_channel_goes_to_one_endpoint_of_a_tenant(store: Store) {
    let s = with_key(store);
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let texts = s
        .webhooks
        .create(t, &carrying("texts", &[Channel::Sms]))
        .await
        .unwrap()
        .webhook;
    assert_eq!(
        s.webhooks.get(t, texts.id).await.unwrap(),
        texts,
        "reads back with its channels and without the feed"
    );
    assert!(!texts.changes && texts.channels.contains(Channel::Sms));
    let taken = s
        .webhooks
        .create(t, &carrying("again", &[Channel::Call, Channel::Sms]))
        .await;
    assert!(
        matches!(taken, Err(WebhookError::ChannelTaken { channel: Channel::Sms, by }) if by == texts.id),
        "{taken:?}"
    );
    // Another tenant's channels are its own.
    s.webhooks
        .create(other, &carrying("theirs", &[Channel::Sms]))
        .await
        .unwrap();
    let calls = s
        .webhooks
        .create(t, &carrying("calls", &[Channel::Call]))
        .await
        .unwrap()
        .webhook;
    let take_texts = UpdateWebhookRequest {
        expected_version: 1,
        channels: Some(MessageChannels::new([Channel::Call, Channel::Sms]).unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        s.webhooks.update(t, calls.id, &take_texts).await,
        Err(WebhookError::ChannelTaken {
            channel: Channel::Sms,
            ..
        })
    ));
    // An endpoint with neither the feed nor a channel would receive nothing.
    let nothing = UpdateWebhookRequest {
        expected_version: 1,
        channels: Some(MessageChannels::default()),
        ..Default::default()
    };
    assert!(matches!(
        s.webhooks.update(t, texts.id, &nothing).await,
        Err(WebhookError::ReceivesNothing)
    ));
    assert!(matches!(
        s.webhooks.create(t, &carrying("nothing", &[])).await,
        Err(WebhookError::ReceivesNothing)
    ));
    // Handed over: the texts endpoint gives sms up for the feed, and the
    // calls endpoint takes it.
    let handed = UpdateWebhookRequest {
        changes: Some(true),
        ..nothing
    };
    let texts = s.webhooks.update(t, texts.id, &handed).await.unwrap();
    assert!(texts.changes && texts.channels.is_empty());
    let calls = s.webhooks.update(t, calls.id, &take_texts).await.unwrap();
    assert_eq!(calls.channels.to_list(), "call,sms");
}

both_backends!(
    endpoints_live_their_whole_life,
    a_tenant_has_a_bounded_number_of_endpoints_listed_in_pages,
    each_channel_goes_to_one_endpoint_of_a_tenant
);
