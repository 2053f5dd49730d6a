//! Use cases over the real in-memory SQLite store: the happy paths, and
//! the cache wiring (every write that changes what a context shows
//! invalidates it). They live here rather than in `crates/app`, which
//! depends on `domain` and `ports` only.

use std::sync::Arc;

use leadline_app::{RecallSettings, Services};
use leadline_domain::{
    AgentRole, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest, DisplayName, Email,
    LeadStatus, ListLeadsQuery, Metadata, PersonName, Slug, Tags, UpdateLeadRequest,
};

use crate::support::sqlite_store;

fn tenant_request(slug: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        slug: Slug::parse(slug).expect("valid slug"),
        name: DisplayName::new("Acme Inc").expect("valid name"),
    }
}

fn lead_request() -> CreateLeadRequest {
    CreateLeadRequest {
        first_name: PersonName::new("Grace").expect("valid"),
        last_name: PersonName::new("Hopper").expect("valid"),
        email: Some(Email::parse("grace@navy.example").expect("valid")),
        phone: None,
        company: None,
        source: None,
        status: LeadStatus::New,
        assigned_agent_id: None,
        tags: Tags::parse(&["vip"]).expect("valid"),
        metadata: Metadata::default(),
    }
}

#[tokio::test]
async fn happy_path_on_in_memory_sqlite() {
    let store = sqlite_store().await;
    let s = &Services::over(
        Arc::new(store.clone()),
        Arc::new(leadline_cache::NullCache::new()),
        RecallSettings::default(),
    );

    let created = s
        .tenants
        .create(&tenant_request("acme"))
        .await
        .expect("tenant");
    let authed = s
        .keys
        .authenticate(created.api_key.expose())
        .await
        .expect("own key works");
    assert_eq!(authed.tenant.id, created.tenant.id);
    let second = s
        .keys
        .issue(created.tenant.id, &leadline_domain::NewApiKey::first())
        .await
        .expect("second key")
        .token;
    assert_eq!(
        s.keys
            .authenticate(second.expose())
            .await
            .expect("second key works")
            .tenant
            .id,
        created.tenant.id
    );

    let tenant = created.tenant.id;
    let agent = s
        .agents
        .create(
            tenant,
            &CreateAgentRequest {
                name: DisplayName::new("Ada").expect("valid"),
                email: Email::parse("ada@acme.example").expect("valid"),
                role: AgentRole::Agent,
            },
        )
        .await
        .expect("agent");
    let mut req = lead_request();
    req.assigned_agent_id = Some(agent.id);
    let lead = s.leads.create(tenant, &req).await.expect("lead");
    assert_eq!(s.leads.get(tenant, lead.id).await.expect("read back"), lead);

    let page = s
        .leads
        .list(tenant, &ListLeadsQuery::default())
        .await
        .expect("list");
    assert_eq!(page.items, vec![lead.clone()]);

    let moved = s
        .leads
        .update(
            tenant,
            lead.id,
            &UpdateLeadRequest {
                expected_version: 1,
                status: Some(LeadStatus::Contacted),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!((moved.status, moved.version), (LeadStatus::Contacted, 2));
    store.close().await;
}

mod cache_wiring {
    //! Every write that changes what a context shows invalidates it, and
    //! the context read goes through the cache. Mocks for the cache, the
    //! in-memory SQLite store for the writes.

    use std::sync::{Arc, Mutex};

    use leadline_app::{RecallSettings, Services};
    use leadline_domain::{
        AppendEventRequest, ApprovalAction, Channel, Direction, DraftApprovalRequest, EventKind,
        LeadId, MessageBody, Metadata, TenantId, UpdateAgentRequest, UpdateLeadRequest,
    };
    use leadline_ports::{GetLeadError, MockContextCache, Unavailable};
    use leadline_store::Store;

    use super::{lead_request, tenant_request};

    /// What a recording cache saw invalidated, in order.
    type Invalidations = Arc<Mutex<Vec<(TenantId, LeadId)>>>;

    /// A cache mock that records every invalidation.
    fn recording_cache() -> (MockContextCache, Invalidations) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut cache = MockContextCache::new();
        // A cache that hears other writers itself: no log follower.
        cache.expect_needs_change_log().return_const(None);
        let log = seen.clone();
        cache
            .expect_invalidate()
            .returning(move |t, l| log.lock().expect("lock").push((t, l)));
        (cache, seen)
    }

    async fn store() -> Store {
        crate::support::sqlite_store().await
    }

    #[tokio::test]
    async fn writes_invalidate_exactly_the_contexts_they_change() {
        let (cache, seen) = recording_cache();
        let s = Services::over(
            Arc::new(store().await),
            Arc::new(cache),
            RecallSettings::default(),
        );
        let tenant = s
            .tenants
            .create(&tenant_request("acme"))
            .await
            .expect("tenant")
            .tenant
            .id;
        let agent = s
            .agents
            .create(
                tenant,
                &leadline_domain::CreateAgentRequest {
                    name: leadline_domain::DisplayName::new("Ada").expect("valid"),
                    email: leadline_domain::Email::parse("ada@example.com").expect("valid"),
                    role: leadline_domain::AgentRole::Agent,
                },
            )
            .await
            .expect("agent");
        let mut req = lead_request();
        req.assigned_agent_id = Some(agent.id);
        let a = s.leads.create(tenant, &req).await.expect("lead a");
        let b = s.leads.create(tenant, &req).await.expect("lead b");
        let unassigned = s
            .leads
            .create(tenant, &lead_request())
            .await
            .expect("lead c");
        assert!(
            seen.lock().expect("lock").is_empty(),
            "creating leads invalidates nothing"
        );

        s.leads
            .update(
                tenant,
                a.id,
                &UpdateLeadRequest {
                    expected_version: 1,
                    ..Default::default()
                },
            )
            .await
            .expect("update");
        let draft = DraftApprovalRequest {
            channel: Channel::Sms,
            subject: None,
            body: MessageBody::new("hi").expect("valid"),
            requested_by: agent.id,
        };
        let approval = s
            .approvals
            .draft(tenant, b.id, &draft)
            .await
            .expect("draft");
        // Separation of duties is on for a new tenant: the drafter may not
        // approve. Turned off, she may.
        assert!(matches!(
            s.approvals
                .act(
                    tenant,
                    approval.id,
                    &ApprovalAction::Approve { by: agent.id }
                )
                .await,
            Err(leadline_ports::TransitionApprovalError::SelfDecision)
        ));
        s.tenants
            .set_separation_of_duties(tenant, false)
            .await
            .expect("turned off");
        s.approvals
            .act(
                tenant,
                approval.id,
                &ApprovalAction::Approve { by: agent.id },
            )
            .await
            .expect("approve");
        let note = AppendEventRequest {
            kind: EventKind::Note,
            direction: Direction::Internal,
            content: None,
            occurred_at: None,
            actor: None,
            metadata: Metadata::default(),
        };
        s.timeline
            .append(tenant, unassigned.id, &note)
            .await
            .expect("append");
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                (tenant, a.id),
                (tenant, b.id),
                (tenant, b.id),
                (tenant, unassigned.id)
            ]
        );

        seen.lock().expect("lock").clear();
        let rename = UpdateAgentRequest {
            expected_version: 1,
            name: Some(leadline_domain::DisplayName::new("Ada L.").expect("valid")),
            email: None,
            role: None,
            active: None,
        };
        s.agents
            .update(tenant, agent.id, &rename)
            .await
            .expect("rename");
        let mut touched: Vec<_> = seen.lock().expect("lock").iter().map(|(_, l)| *l).collect();
        touched.sort();
        let mut expected = vec![a.id, b.id];
        expected.sort();
        assert_eq!(
            touched, expected,
            "every context showing the agent, and only those"
        );

        seen.lock().expect("lock").clear();
        let refused = UpdateLeadRequest {
            expected_version: 99,
            ..Default::default()
        };
        assert!(s.leads.update(tenant, a.id, &refused).await.is_err());
        assert!(
            seen.lock().expect("lock").is_empty(),
            "a refused write invalidates nothing"
        );
    }

    #[tokio::test]
    async fn context_reads_through_the_cache_and_passes_its_errors_on() {
        let mut cache = MockContextCache::new();
        cache.expect_needs_change_log().return_const(None);
        cache.expect_get_or_load().times(1).returning(|_, _, _| {
            Err(GetLeadError::Unavailable(Unavailable(
                "store down, nothing cached".into(),
            )))
        });
        let s = Services::over(
            Arc::new(store().await),
            Arc::new(cache),
            RecallSettings::default(),
        );
        let result = s.context.context(TenantId::new(), LeadId::new()).await;
        assert!(matches!(result, Err(GetLeadError::Unavailable(_))));
    }
}
