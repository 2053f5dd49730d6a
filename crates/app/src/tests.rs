//! Use-case tests with mockall mocks: this crate depends on `domain` and
//! `ports` only, so the happy paths on a real store (SQLite in memory) run
//! in the integration binary (`tests/integration/use_cases.rs`).

use std::sync::Arc;

use leadline_domain::{
    ApiKeyToken, CreateTenantRequest, DisplayName, Slug, TenantId, UpdateLeadRequest,
};
use leadline_ports::{
    AuthenticateError, CreateTenantError, GetLeadError, MockApiKeyRepository, MockLeadRepository,
    MockTenantRepository, Unavailable, UpdateLeadError,
};

use crate::{KeyService, LeadService, TenantService};

/// A cache that takes invalidations and is never read: these tests are
/// about the repositories' answers.
fn no_cache() -> Arc<dyn leadline_ports::ContextCache> {
    let mut cache = leadline_ports::MockContextCache::new();
    cache.expect_invalidate().returning(|_, _| ());
    Arc::new(cache)
}

fn tenant_request(slug: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        slug: Slug::parse(slug).expect("valid slug"),
        name: DisplayName::new("Acme Inc").expect("valid name"),
    }
}

#[tokio::test]
async fn duplicate_slug_is_reported_as_such() {
    let mut repo = MockTenantRepository::new();
    repo.expect_create()
        .returning(|_, _, _, _| Err(CreateTenantError::DuplicateSlug));
    let service = TenantService::new(Arc::new(repo));
    let err = service
        .create(&tenant_request("acme"))
        .await
        .expect_err("duplicate");
    assert!(matches!(err, CreateTenantError::DuplicateSlug));
}

fn tenant(id: TenantId) -> leadline_domain::Tenant {
    leadline_domain::Tenant {
        id,
        slug: Slug::parse("acme").expect("valid"),
        name: DisplayName::new("Acme").expect("valid"),
        created_at: chrono::Utc::now(),
        separation_of_duties: true,
    }
}

fn key(
    tenant: TenantId,
    role: leadline_domain::Role,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> leadline_domain::ApiKey {
    leadline_domain::ApiKey {
        id: leadline_domain::ApiKeyId::new(),
        tenant_id: tenant,
        name: DisplayName::new("k").expect("valid"),
        access: leadline_domain::Access::Role(role),
        prefix: None,
        created_at: chrono::Utc::now(),
        expires_at,
        last_used_at: Some(chrono::Utc::now()),
        revoked_at: None,
        replaced_by: None,
    }
}

#[tokio::test]
async fn malformed_key_never_reaches_the_store() {
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate().never();
    let service = KeyService::new(Arc::new(repo));
    let err = service
        .authenticate("not-a-key")
        .await
        .expect_err("malformed");
    assert!(matches!(err, AuthenticateError::InvalidKey));
}

#[tokio::test]
async fn well_formed_key_is_looked_up_by_its_tenant_and_hash() {
    let tenant = TenantId::new();
    let token = ApiKeyToken::from_random(tenant, [3; 24]);
    let hash = token.hash();
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate()
        .withf(move |t, h| *t == tenant && *h == hash)
        .times(1)
        .returning(|_, _| Err(AuthenticateError::InvalidKey));
    let service = KeyService::new(Arc::new(repo));
    assert!(matches!(
        service.authenticate(token.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
}

#[tokio::test]
async fn store_down_surfaces_as_unavailable_not_unknown() {
    let mut repo = MockLeadRepository::new();
    repo.expect_get().returning(|_, _| {
        Err(GetLeadError::Unavailable(Unavailable(
            "pool timed out".into(),
        )))
    });
    repo.expect_update()
        .returning(|_, _, _| Err(UpdateLeadError::Conflict { current: 4 }));
    let service = LeadService::new(Arc::new(repo), no_cache());
    let tenant = TenantId::new();
    let id = leadline_domain::LeadId::new();
    assert!(matches!(
        service.get(tenant, id).await,
        Err(GetLeadError::Unavailable(_))
    ));
    let req = UpdateLeadRequest {
        expected_version: 1,
        ..Default::default()
    };
    assert!(matches!(
        service.update(tenant, id, &req).await,
        Err(UpdateLeadError::Conflict { current: 4 })
    ));
}

#[tokio::test]
async fn not_found_passes_through_unchanged() {
    let mut repo = MockLeadRepository::new();
    repo.expect_get()
        .times(1)
        .returning(|_, _| Err(GetLeadError::NotFound));
    let service = LeadService::new(Arc::new(repo), no_cache());
    let result = service
        .get(TenantId::new(), leadline_domain::LeadId::new())
        .await;
    assert!(matches!(result, Err(GetLeadError::NotFound)));
}

#[tokio::test]
async fn create_with_id_uses_that_id_and_a_key_for_it() {
    let id = TenantId::new();
    let mut repo = MockTenantRepository::new();
    repo.expect_create()
        .withf(move |t, _, first, material| {
            *t == id
                && first.access == leadline_domain::Access::Role(leadline_domain::Role::Admin)
                && material.prefix.as_str().len() == 8
        })
        .times(1)
        .returning(|t, req, _, _| {
            Ok(leadline_domain::Tenant {
                id: t,
                slug: req.slug.clone(),
                name: req.name.clone(),
                created_at: chrono::Utc::now(),
                separation_of_duties: true,
            })
        });
    let service = TenantService::new(Arc::new(repo));
    let created = service
        .create_with_id(id, &tenant_request("seed-001"))
        .await
        .expect("created");
    assert_eq!(created.tenant.id, id);
    assert_eq!(
        ApiKeyToken::parse(created.api_key.expose())
            .expect("well-formed")
            .tenant_id(),
        id
    );
}

#[tokio::test]
async fn verified_keys_are_remembered_and_refusals_are_not() {
    let tenant_id = TenantId::new();
    let token = ApiKeyToken::from_random(tenant_id, [9; 24]);
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate()
        .times(1)
        .returning(move |t, _| Ok((tenant(t), key(t, leadline_domain::Role::Agent, None))));
    let service = KeyService::new(Arc::new(repo));
    for _ in 0..3 {
        let caller = service
            .authenticate(token.expose())
            .await
            .expect("verified");
        assert_eq!(caller.tenant.id, tenant_id);
        assert_eq!(
            caller.access,
            leadline_domain::Access::Role(leadline_domain::Role::Agent)
        );
    }
    // (The outage fallback is covered end to end by the PostgreSQL-stopped
    // integration test.)

    let mut refusing = MockApiKeyRepository::new();
    refusing
        .expect_authenticate()
        .times(2)
        .returning(|_, _| Err(AuthenticateError::InvalidKey));
    let service = KeyService::new(Arc::new(refusing));
    for _ in 0..2 {
        assert!(
            matches!(
                service.authenticate(token.expose()).await,
                Err(AuthenticateError::InvalidKey)
            ),
            "refusals are never cached"
        );
    }
}

#[tokio::test]
async fn an_expired_key_is_refused_and_one_about_to_expire_is_not_trusted_past_it() {
    let tenant_id = TenantId::new();
    let expired = ApiKeyToken::from_random(tenant_id, [1; 24]);
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate().times(1).returning(move |t, _| {
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        Ok((tenant(t), key(t, leadline_domain::Role::Admin, Some(past))))
    });
    let service = KeyService::new(Arc::new(repo));
    assert!(matches!(
        service.authenticate(expired.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));

    // A key expiring in 50 ms is trusted until then, not for the usual
    // second: the store is asked again once it has passed.
    let soon = ApiKeyToken::from_random(tenant_id, [2; 24]);
    let expiry = chrono::Utc::now() + chrono::Duration::milliseconds(50);
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate().returning(move |t, _| {
        Ok((
            tenant(t),
            key(t, leadline_domain::Role::Admin, Some(expiry)),
        ))
    });
    let service = KeyService::new(Arc::new(repo));
    service
        .authenticate(soon.expose())
        .await
        .expect("live for now");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match service.authenticate(soon.expose()).await {
            Err(AuthenticateError::InvalidKey) => break,
            Ok(_) => {
                assert!(
                    chrono::Utc::now() < expiry + chrono::Duration::milliseconds(900),
                    "a key was trusted long past its expiry"
                );
            }
            Err(e) => panic!("{e}"),
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_use_is_recorded_when_the_last_one_is_a_minute_old() {
    let tenant_id = TenantId::new();
    let token = ApiKeyToken::from_random(tenant_id, [4; 24]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut repo = MockApiKeyRepository::new();
    repo.expect_authenticate().times(1).returning(move |t, _| {
        let mut stale = key(t, leadline_domain::Role::Viewer, None);
        stale.last_used_at = Some(chrono::Utc::now() - chrono::Duration::minutes(2));
        Ok((tenant(t), stale))
    });
    repo.expect_record_use()
        .times(1)
        .returning(move |t, id, _| {
            let _ = tx.send((t, id));
            Ok(())
        });
    let service = KeyService::new(Arc::new(repo));
    let caller = service
        .authenticate(token.expose())
        .await
        .expect("verified");
    let recorded = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("recorded in the background")
        .expect("one record");
    assert_eq!(recorded, (tenant_id, caller.key_id));
}

#[tokio::test]
async fn revoking_forgets_the_key_on_this_instance_at_once() {
    let tenant_id = TenantId::new();
    let token = ApiKeyToken::from_random(tenant_id, [5; 24]);
    let the_key = key(tenant_id, leadline_domain::Role::Admin, None);
    let id = the_key.id;
    let mut repo = MockApiKeyRepository::new();
    let mut calls = mockall::Sequence::new();
    let live = the_key.clone();
    repo.expect_authenticate()
        .times(1)
        .in_sequence(&mut calls)
        .returning(move |t, _| Ok((tenant(t), live.clone())));
    let revoked = leadline_domain::ApiKey {
        revoked_at: Some(chrono::Utc::now()),
        ..the_key
    };
    repo.expect_revoke()
        .times(1)
        .in_sequence(&mut calls)
        .returning(move |_, _| Ok(revoked.clone()));
    repo.expect_authenticate()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _| Err(AuthenticateError::InvalidKey));
    let service = KeyService::new(Arc::new(repo));
    service.authenticate(token.expose()).await.expect("live");
    service.revoke(tenant_id, id).await.expect("revoked");
    assert!(matches!(
        service.authenticate(token.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
}

mod relay {
    //! The relay's rules around its port calls: a late claim is released
    //! untried, an unavailable store is asked again before the message is
    //! left to go out twice, a text goes to its channel's endpoint (or fails
    //! saying how to give it one).

    use std::{sync::Arc, time::Duration};

    use async_trait::async_trait;
    use chrono::Utc;
    use leadline_domain::{
        ApprovalId, AttemptOutcome, Channel, Decision, Delivery, DeliveryId, DeliveryStatus, Email,
        LeadId, MessageBody, OutboundEmail, OutboxMessage, Phone, Recipient, SenderIdentity,
        TenantId, WebhookId, WebhookUrl,
    };
    use leadline_ports::{
        ClaimedDelivery, DeliveryError, EmailChannel, MessageRoute, MockDeliveryRepository,
        MockSecretBox, MockWebhookChannel, SealedSecret, Unavailable,
    };

    use crate::{MessageWebhooks, Relay, RelaySettings};

    /// A mail server that takes `delay` to accept each message.
    struct SlowServer {
        delay: Duration,
    }

    #[async_trait]
    impl EmailChannel for SlowServer {
        fn destination(&self) -> String {
            "smtp://slow:25".to_owned()
        }

        async fn send(&self, _: &OutboundEmail) -> AttemptOutcome {
            tokio::time::sleep(self.delay).await;
            AttemptOutcome::Delivered {
                reply: "250 ok".to_owned(),
            }
        }
    }

    fn claimed() -> ClaimedDelivery {
        let now = Utc::now();
        ClaimedDelivery {
            delivery: Delivery {
                id: DeliveryId::new(),
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
            },
            lease: uuid::Uuid::now_v7(),
            round_start: 0,
            message: OutboxMessage {
                subject: None,
                body: MessageBody::new("hi").expect("valid body"),
            },
            recipient: Some(Recipient {
                name: None,
                email: Some(Email::parse("ada@example.com").expect("valid")),
                phone: Some(Phone::parse("+1 555 0100").expect("valid")),
            }),
            sender: None,
            route: None,
        }
    }

    fn relay(repo: MockDeliveryRepository, delay: Duration, lease_secs: u64) -> Relay {
        relay_with(repo, delay, lease_secs, None)
    }

    fn relay_with(
        repo: MockDeliveryRepository,
        delay: Duration,
        lease_secs: u64,
        messages: Option<MessageWebhooks>,
    ) -> Relay {
        Relay::new(
            Arc::new(repo),
            Some(Arc::new(SlowServer { delay })),
            messages,
            super::no_cache(),
            RelaySettings {
                concurrency: 1,
                lease_secs,
                ..RelaySettings::default()
            },
            SenderIdentity::new(
                Email::parse("relay@leadline.example").expect("valid"),
                None,
                None,
                None,
            )
            .expect("plain"),
        )
    }

    #[tokio::test]
    async fn a_claim_past_half_its_lease_is_released_untried() {
        let mut repo = MockDeliveryRepository::new();
        repo.expect_claim_due()
            .returning(|_, _, _| Ok(vec![claimed(), claimed()]));
        // The first takes 600 ms of a 1 s lease: the second's turn comes
        // after half of it, so it goes back untried.
        repo.expect_record().times(1).returning(|_, _| Ok(true));
        repo.expect_defer().times(1).returning(|_, _| Ok(true));
        let report = relay(repo, Duration::from_millis(600), 1)
            .run_once()
            .await
            .expect("round");
        assert_eq!(
            (report.claimed, report.delivered, report.released),
            (2, 1, 1),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_is_asked_again_before_giving_up() {
        let mut repo = MockDeliveryRepository::new();
        repo.expect_claim_due()
            .returning(|_, _, _| Ok(vec![claimed()]));
        let mut calls = 0;
        repo.expect_record().times(3).returning(move |_, _| {
            calls += 1;
            if calls < 3 {
                Err(DeliveryError::Unavailable(Unavailable("down".to_owned())))
            } else {
                Ok(true)
            }
        });
        let report = relay(repo, Duration::ZERO, 300)
            .run_once()
            .await
            .expect("round");
        assert_eq!((report.delivered, report.unrecorded), (1, 0), "{report:?}");
    }

    fn text(route: Option<MessageRoute>) -> ClaimedDelivery {
        let mut claimed = claimed();
        claimed.delivery.channel = Channel::Sms;
        claimed.route = route;
        claimed
    }

    #[tokio::test]
    async fn a_text_goes_signed_to_its_channels_endpoint_and_without_one_fails_saying_how() {
        let hook = WebhookId::new();
        let route = |active| MessageRoute {
            webhook: hook,
            url: WebhookUrl::parse("https://texts.example.com/send").expect("valid"),
            active,
            secret: SealedSecret(vec![7; 32]),
            previous_secret: None,
        };
        let routed = text(Some(route(true)));
        let routed_id = routed.delivery.id;
        let paused = text(Some(route(false)));
        let paused_id = paused.delivery.id;
        let claims = vec![routed, text(None), paused];
        let mut repo = MockDeliveryRepository::new();
        repo.expect_claim_due()
            .withf(|channels, _, _| channels.contains(&Channel::Sms))
            .returning(move |_, _, _| Ok(claims.clone()));
        repo.expect_record()
            .times(2)
            .returning(move |claimed, record| {
                let expected = match (&claimed.route, claimed.delivery.id == routed_id) {
                    (Some(_), true) => matches!(record.decision, Decision::Delivered),
                    (None, _) => {
                        matches!(record.decision, Decision::Failed)
                            && record.outcome.detail().contains("\"channels\": [\"sms\"]")
                    }
                    (Some(_), false) => false,
                };
                assert!(expected, "{claimed:?} {record:?}");
                Ok(true)
            });
        // A paused endpoint holds its text back, its attempts not counted.
        repo.expect_defer()
            .times(1)
            .withf(move |claimed, until| {
                claimed.delivery.id == paused_id
                    && *until > Utc::now() + chrono::Duration::seconds(30)
            })
            .returning(|_, _| Ok(true));
        let mut sealer = MockSecretBox::new();
        sealer
            .expect_open()
            .returning(|sealed| Ok(sealed.0.clone()));
        let mut channel = MockWebhookChannel::new();
        channel
            .expect_destination()
            .returning(|url| url.as_str().to_owned());
        channel
            .expect_post()
            .times(1)
            .withf(move |target, message| {
                target.secrets.len() == 1
                    && target.secrets[0].key() == &[7; 32]
                    && message.id == format!("msg_dlv_{}", routed_id.as_uuid().simple())
            })
            .returning(|_, _| AttemptOutcome::Delivered {
                reply: "200".to_owned(),
            });
        let messages = MessageWebhooks {
            channel: Arc::new(channel),
            sealer: Arc::new(sealer),
        };
        let report = relay_with(repo, Duration::ZERO, 300, Some(messages))
            .run_once()
            .await
            .expect("round");
        assert_eq!(
            (report.delivered, report.failed, report.deferred),
            (1, 1, 1),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn one_tenants_failing_receiver_never_holds_back_anothers_on_the_same_host() {
        let url = WebhookUrl::parse("https://hooks.example.com/in").expect("valid");
        let route = MessageRoute {
            webhook: WebhookId::new(),
            url,
            active: true,
            secret: SealedSecret(vec![7; 32]),
            previous_secret: None,
        };
        let failing = TenantId::new();
        let text_of = |tenant| {
            let mut c = text(Some(route.clone()));
            c.delivery.tenant_id = tenant;
            c
        };
        let (first, second, other) = (text_of(failing), text_of(failing), text_of(TenantId::new()));
        let other_id = other.delivery.id;
        let rounds = std::sync::Mutex::new(vec![vec![second, other], vec![first]]);
        let mut repo = MockDeliveryRepository::new();
        repo.expect_claim_due().times(2).returning(move |_, _, _| {
            Ok(rounds
                .lock()
                .expect("not poisoned")
                .pop()
                .unwrap_or_default())
        });
        repo.expect_record().times(2).returning(|_, _| Ok(true));
        // The failing tenant's second text waits for its breaker; the other
        // tenant's goes out.
        repo.expect_defer()
            .times(1)
            .withf(move |claimed, _| claimed.delivery.tenant_id == failing)
            .returning(|_, _| Ok(true));
        let mut sealer = MockSecretBox::new();
        sealer
            .expect_open()
            .returning(|sealed| Ok(sealed.0.clone()));
        let mut channel = MockWebhookChannel::new();
        channel
            .expect_destination()
            .returning(|url| url.as_str().to_owned());
        channel.expect_post().times(2).returning(move |_, message| {
            if message.id == format!("msg_dlv_{}", other_id.as_uuid().simple()) {
                AttemptOutcome::Delivered {
                    reply: "204".to_owned(),
                }
            } else {
                AttemptOutcome::Transient {
                    reason: "HTTP 503".to_owned(),
                    retry_after: None,
                }
            }
        });
        let relay = Relay::new(
            Arc::new(repo),
            None,
            Some(MessageWebhooks {
                channel: Arc::new(channel),
                sealer: Arc::new(sealer),
            }),
            super::no_cache(),
            RelaySettings {
                breaker_threshold: 1,
                ..RelaySettings::default()
            },
            SenderIdentity::new(
                Email::parse("relay@leadline.example").expect("valid"),
                None,
                None,
                None,
            )
            .expect("plain"),
        );
        let opened = relay.run_once().await.expect("round");
        assert_eq!(opened.retrying, 1, "{opened:?}");
        let next = relay.run_once().await.expect("round");
        assert_eq!((next.delivered, next.deferred), (1, 1), "{next:?}");
    }

    #[test]
    fn a_round_takes_the_tenants_in_turns() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let of = |tenant| {
            let mut c = claimed();
            c.delivery.tenant_id = tenant;
            c
        };
        let batch = vec![of(a), of(a), of(a), of(b), of(b)];
        let ids: Vec<_> = batch.iter().map(|c| c.delivery.id).collect();
        let order: Vec<_> = crate::deliveries::in_turns(batch)
            .iter()
            .map(|c| c.delivery.id)
            .collect();
        assert_eq!(order, [ids[0], ids[3], ids[1], ids[4], ids[2]]);
    }
}

mod change_tail {
    //! The shared tail of a tenant's log must not strand a follower that
    //! caught up just before a commit the tail, starting later, reads as
    //! already past.

    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use chrono::Utc;
    use futures::StreamExt as _;
    use leadline_domain::{
        Change, ChangeFilter, ChangePosition, ChangeType, LeadId, LoggedChange, TenantId,
    };
    use leadline_ports::{ChangeLog, ChangeLogError, ChangeSpan};

    use crate::{ChangeFeed, ChangeSettings};

    /// A log in memory that never wakes anyone: only reads find changes.
    #[derive(Default)]
    struct Silent {
        changes: Mutex<Vec<LoggedChange>>,
        wake: Option<tokio::sync::broadcast::Sender<TenantId>>,
    }

    #[async_trait]
    impl ChangeLog for Silent {
        async fn after(
            &self,
            _: TenantId,
            after: ChangePosition,
            limit: u32,
        ) -> Result<ChangeSpan, ChangeLogError> {
            let items: Vec<LoggedChange> = self
                .changes
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|c| c.position > after)
                .take(limit as usize)
                .cloned()
                .collect();
            Ok(ChangeSpan {
                last: items.last().map_or(after, |c| c.position),
                has_more: false,
                items,
            })
        }

        async fn head(&self, _: TenantId) -> Result<ChangePosition, ChangeLogError> {
            Ok(self
                .changes
                .lock()
                .expect("not poisoned")
                .last()
                .map(|c| c.position)
                .unwrap_or_default())
        }

        async fn prune(&self, _: chrono::DateTime<Utc>, _: u32) -> Result<u64, ChangeLogError> {
            Ok(0)
        }

        fn wakeups(&self) -> tokio::sync::broadcast::Receiver<TenantId> {
            self.wake.as_ref().expect("a wake-up channel").subscribe()
        }
    }

    #[tokio::test]
    async fn a_commit_between_a_followers_catch_up_and_the_tails_start_still_arrives() {
        let tenant = TenantId::new();
        let (wake, _keep) = tokio::sync::broadcast::channel(8);
        let log = Arc::new(Silent {
            changes: Mutex::new(Vec::new()),
            wake: Some(wake),
        });
        let feed = ChangeFeed::new(
            log.clone(),
            ChangeSettings {
                // Long enough that only the tail's start can deliver.
                poll_ms: 60_000,
                ..ChangeSettings::default()
            },
        );
        let mut stream =
            Box::pin(feed.follow(tenant, ChangePosition::default(), ChangeFilter::default()));
        // The follower catches up on the empty log and waits; the tail
        // (spawned, on this one thread) has not run yet.
        assert!(futures::poll!(stream.next()).is_pending());
        let lead = leadline_domain::fixtures::lead_context(tenant, LeadId::new()).lead;
        log.changes
            .lock()
            .expect("not poisoned")
            .push(LoggedChange {
                position: ChangePosition { tx: 0, seq: 1 },
                change: Change::lead(ChangeType::LeadCreated, &lead),
            });
        let change = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("the change arrives without a wake-up or a poll")
            .expect("the stream goes on")
            .expect("no error");
        assert_eq!(change.position, ChangePosition { tx: 0, seq: 1 });
    }
}
