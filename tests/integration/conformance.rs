//! The repository conformance suite: the same scenarios against SQLite and
//! PostgreSQL (as the service role, so RLS is live), both built by the real
//! migrator.

use std::collections::HashSet;

use leadline_app::Services;
use leadline_domain::{
    ApiKeyToken, CreateTenantRequest, DisplayName, Email, LeadStatus, ListLeadsQuery, NewApiKey,
    PageLimit, Slug, Tag, Tags, TenantId, UpdateAgentRequest, UpdateLeadRequest,
};
use leadline_ports::{
    AuthenticateError, CreateAgentError, CreateLeadError, CreateTenantError, GetAgentError,
    GetLeadError, GetTenantError, KeyError, UpdateAgentError, UpdateLeadError,
};

use crate::support::{agent_req, lead_req, new_tenant, unique_slug};

/// Runs each scenario once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::support::services(crate::support::sqlite_store().await)).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::support::services(crate::support::pg_store().await)).await;
            })*
        }
    };
}

conformance!(
    tenants_keys_and_authentication,
    agents_crud_uniqueness_and_versions,
    agents_paginate_in_id_order,
    leads_crud_transitions_and_versions,
    leads_filter_and_paginate_newest_first,
    concurrent_updates_on_one_version_let_exactly_one_win,
    batch_create_is_all_or_nothing,
);

async fn tenants_keys_and_authentication(s: Services) {
    let slug = unique_slug("acme");
    let req = CreateTenantRequest {
        slug: Slug::parse(&slug).unwrap(),
        name: DisplayName::new("Acme").unwrap(),
    };
    let created = s.tenants.create(&req).await.unwrap();
    assert_eq!(created.tenant.slug.as_str(), slug);
    assert!(matches!(
        s.tenants.create(&req).await,
        Err(CreateTenantError::DuplicateSlug)
    ));

    let id = created.tenant.id;
    assert_eq!(s.tenants.get(id).await.unwrap(), created.tenant);
    assert!(matches!(
        s.tenants.get(TenantId::new()).await,
        Err(GetTenantError::NotFound(_))
    ));

    assert_eq!(
        s.keys
            .authenticate(created.api_key.expose())
            .await
            .unwrap()
            .tenant
            .id,
        id
    );
    // Right shape, wrong secret.
    let forged = ApiKeyToken::from_random(id, [0; 24]);
    assert!(matches!(
        s.keys.authenticate(forged.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
    // A real key of tenant B presented as tenant A's: the tenant id is part
    // of the hashed text, and the lookup runs in A's context.
    let (_, other_key) = new_tenant(&s).await;
    let spliced = format!("ll_{}_{}", id.as_uuid().simple(), &other_key[36..]);
    assert!(matches!(
        s.keys.authenticate(&spliced).await,
        Err(AuthenticateError::InvalidKey)
    ));

    let second = s.keys.issue(id, &NewApiKey::first()).await.unwrap().token;
    assert_eq!(
        s.keys
            .authenticate(second.expose())
            .await
            .unwrap()
            .tenant
            .id,
        id
    );
    assert!(matches!(
        s.keys.issue(TenantId::new(), &NewApiKey::first()).await,
        Err(KeyError::NotFound)
    ));
}

async fn agents_crud_uniqueness_and_versions(s: Services) {
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let ada = s
        .agents
        .create(a, &agent_req("ada@example.com"))
        .await
        .unwrap();
    assert_eq!(ada.version, 1);
    // Emails are unique per tenant, case-blind (normalised on parse) …
    assert!(matches!(
        s.agents.create(a, &agent_req("ADA@example.com")).await,
        Err(CreateAgentError::DuplicateEmail)
    ));
    // … and only per tenant.
    s.agents
        .create(b, &agent_req("ada@example.com"))
        .await
        .unwrap();

    assert_eq!(s.agents.get(a, ada.id).await.unwrap(), ada);
    assert!(matches!(
        s.agents.get(b, ada.id).await,
        Err(GetAgentError::NotFound)
    ));

    let upd = UpdateAgentRequest {
        expected_version: 1,
        name: Some(DisplayName::new("Ada L.").unwrap()),
        email: None,
        role: None,
        active: Some(false),
    };
    let ada2 = s.agents.update(a, ada.id, &upd).await.unwrap();
    assert_eq!(
        (ada2.version, ada2.active, ada2.name.as_str()),
        (2, false, "Ada L.")
    );
    assert_eq!(
        s.agents.get(a, ada.id).await.unwrap(),
        ada2,
        "the update is stored"
    );
    assert!(matches!(
        s.agents.update(a, ada.id, &upd).await,
        Err(UpdateAgentError::Conflict { current: 2 })
    ));
    assert!(matches!(
        s.agents.update(b, ada.id, &upd).await,
        Err(UpdateAgentError::NotFound)
    ));

    let grace = s
        .agents
        .create(a, &agent_req("grace@example.com"))
        .await
        .unwrap();
    let steal = UpdateAgentRequest {
        expected_version: 1,
        name: None,
        email: Some(Email::parse("ada@example.com").unwrap()),
        role: None,
        active: None,
    };
    assert!(matches!(
        s.agents.update(a, grace.id, &steal).await,
        Err(UpdateAgentError::DuplicateEmail)
    ));
    assert_eq!(
        s.agents.get(a, grace.id).await.unwrap().version,
        1,
        "a refused update changes nothing"
    );
}

async fn agents_paginate_in_id_order(s: Services) {
    let (t, _) = new_tenant(&s).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.agents
                .create(t, &agent_req(&format!("a{i}@example.com")))
                .await
                .unwrap()
                .id,
        );
    }
    let limit = PageLimit::new(2).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s.agents.list(t, limit, after).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|a| a.id));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|a| a.id);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "creation order, no gaps, no repeats");
}

async fn leads_crud_transitions_and_versions(s: Services) {
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let agent_a = s
        .agents
        .create(a, &agent_req("owner@example.com"))
        .await
        .unwrap();
    let agent_b = s
        .agents
        .create(b, &agent_req("owner@example.com"))
        .await
        .unwrap();

    let mut req = lead_req("Grace");
    req.assigned_agent_id = Some(agent_b.id);
    assert!(
        matches!(
            s.leads.create(a, &req).await,
            Err(CreateLeadError::AgentNotFound)
        ),
        "another tenant's agent cannot be assigned"
    );
    req.assigned_agent_id = Some(agent_a.id);
    req.tags = Tags::parse(&["vip", "b2b"]).unwrap();
    req.metadata =
        leadline_domain::Metadata::new(serde_json::json!({"score": 42, "nested": {"k": [1, 2]}}))
            .unwrap();
    let lead = s.leads.create(a, &req).await.unwrap();
    assert_eq!(
        s.leads.get(a, lead.id).await.unwrap(),
        lead,
        "round-trips every field, JSON included"
    );
    assert!(matches!(
        s.leads.get(b, lead.id).await,
        Err(GetLeadError::NotFound)
    ));

    let to_contacted = UpdateLeadRequest {
        expected_version: 1,
        status: Some(LeadStatus::Contacted),
        email: Some(None),
        assigned_agent_id: Some(None),
        ..Default::default()
    };
    let l2 = s.leads.update(a, lead.id, &to_contacted).await.unwrap();
    assert_eq!(
        (
            l2.status,
            l2.version,
            l2.email.clone(),
            l2.assigned_agent_id
        ),
        (LeadStatus::Contacted, 2, None, None)
    );
    assert_eq!(s.leads.get(a, lead.id).await.unwrap(), l2);

    assert!(matches!(
        s.leads.update(a, lead.id, &to_contacted).await,
        Err(UpdateLeadError::Conflict { current: 2 })
    ));
    let to_won = UpdateLeadRequest {
        expected_version: 2,
        status: Some(LeadStatus::Won),
        ..Default::default()
    };
    assert!(matches!(
        s.leads.update(a, lead.id, &to_won).await,
        Err(UpdateLeadError::InvalidTransition {
            from: LeadStatus::Contacted,
            to: LeadStatus::Won
        })
    ));
    let reassign = UpdateLeadRequest {
        expected_version: 2,
        assigned_agent_id: Some(Some(agent_b.id)),
        ..Default::default()
    };
    assert!(matches!(
        s.leads.update(a, lead.id, &reassign).await,
        Err(UpdateLeadError::AgentNotFound)
    ));
    assert!(matches!(
        s.leads.update(b, lead.id, &to_won).await,
        Err(UpdateLeadError::NotFound)
    ));
    assert_eq!(
        s.leads.get(a, lead.id).await.unwrap().version,
        2,
        "refused updates change nothing"
    );
}

async fn leads_filter_and_paginate_newest_first(s: Services) {
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(t, &agent_req("x@example.com"))
        .await
        .unwrap();
    let mut created = Vec::new();
    for i in 0..9 {
        let mut req = lead_req(&format!("Lead{i}"));
        req.status = if i % 3 == 0 {
            LeadStatus::Qualified
        } else {
            LeadStatus::New
        };
        req.tags = if i % 2 == 0 {
            Tags::parse(&["vip"]).unwrap()
        } else {
            Tags::parse(&["cold", "smb"]).unwrap()
        };
        req.assigned_agent_id = (i < 4).then_some(agent.id);
        created.push(s.leads.create(t, &req).await.unwrap());
        // Noise in another tenant that must never show up.
        s.leads.create(other, &lead_req("Noise")).await.unwrap();
    }
    assert_eq!(s.leads.count(t).await.unwrap(), 9);

    let ids = |q: ListLeadsQuery| {
        let s = s.clone();
        async move {
            s.leads
                .list(t, &q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|l| l.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<_> = created.iter().rev().map(|l| l.id).collect();
    assert_eq!(
        ids(ListLeadsQuery {
            limit: PageLimit::new(200).unwrap(),
            ..Default::default()
        })
        .await,
        newest_first
    );

    let expect = |pred: &dyn Fn(usize) -> bool| -> Vec<_> {
        created
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| pred(*i))
            .map(|(_, l)| l.id)
            .collect()
    };
    assert_eq!(
        ids(ListLeadsQuery {
            status: Some(LeadStatus::Qualified),
            ..Default::default()
        })
        .await,
        expect(&|i| i % 3 == 0)
    );
    assert_eq!(
        ids(ListLeadsQuery {
            tag: Some(Tag::parse("vip").unwrap()),
            ..Default::default()
        })
        .await,
        expect(&|i| i % 2 == 0)
    );
    assert_eq!(
        ids(ListLeadsQuery {
            tag: Some(Tag::parse("smb").unwrap()),
            ..Default::default()
        })
        .await,
        expect(&|i| i % 2 == 1)
    );
    assert_eq!(
        ids(ListLeadsQuery {
            assigned_agent_id: Some(agent.id),
            ..Default::default()
        })
        .await,
        expect(&|i| i < 4)
    );
    assert_eq!(
        ids(ListLeadsQuery {
            status: Some(LeadStatus::Qualified),
            tag: Some(Tag::parse("vip").unwrap()),
            assigned_agent_id: Some(agent.id),
            ..Default::default()
        })
        .await,
        expect(&|i| i % 3 == 0 && i % 2 == 0 && i < 4)
    );
    assert!(
        ids(ListLeadsQuery {
            tag: Some(Tag::parse("nobody").unwrap()),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Keyset pages of 4 cover everything once, in order.
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = s
            .leads
            .list(
                t,
                &ListLeadsQuery {
                    limit: PageLimit::new(4).unwrap(),
                    after,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|l| l.id));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|l| l.id);
    }
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 9);
}

async fn concurrent_updates_on_one_version_let_exactly_one_win(s: Services) {
    let (t, _) = new_tenant(&s).await;
    let lead = s.leads.create(t, &lead_req("Race")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let req = UpdateLeadRequest {
                    expected_version: 1,
                    source: Some(Some(
                        leadline_domain::Source::new(&format!("writer-{i}")).unwrap(),
                    )),
                    ..Default::default()
                };
                s.leads.update(t, lead.id, &req).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(l) => {
                wins += 1;
                assert_eq!(l.version, 2);
            }
            Err(UpdateLeadError::Conflict { current: 2 }) => {}
            Err(other) => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer of version 1 wins");
    assert_eq!(s.leads.get(t, lead.id).await.unwrap().version, 2);
}

async fn batch_create_is_all_or_nothing(s: Services) {
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let foreign = s
        .agents
        .create(b, &agent_req("f@example.com"))
        .await
        .unwrap();
    let mut batch: Vec<_> = (0..1500).map(|i| lead_req(&format!("Bulk{i}"))).collect();
    assert_eq!(s.leads.create_many(a, &batch).await.unwrap(), 1500);
    assert_eq!(s.leads.count(a).await.unwrap(), 1500);

    // One bad row in the second chunk: nothing of this batch is kept.
    batch[1200].assigned_agent_id = Some(foreign.id);
    assert!(matches!(
        s.leads.create_many(a, &batch).await,
        Err(CreateLeadError::AgentNotFound)
    ));
    assert_eq!(s.leads.count(a).await.unwrap(), 1500);
    assert_eq!(s.leads.count(b).await.unwrap(), 0);
}
