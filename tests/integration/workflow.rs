//! The outreach workflow on both backends: approvals, the timeline, the
//! lead context, idempotency keys; and exactly-once under real concurrency
//! on PostgreSQL.

use leadline_app::Services;
use leadline_domain::{
    AgentId, AppendEventRequest, ApprovalAction, ApprovalQueueQuery, ApprovalStatus, Channel,
    Direction, DraftApprovalRequest, EventContent, EventKind, IdempotencyKey, LeadId, LeadStatus,
    MessageBody, Metadata, PageLimit, RejectionReason, Subject, TenantId, TimelineCursor,
    TimelineQuery, UpdateLeadRequest,
};
use leadline_ports::{
    AppendEventError, DraftApprovalError, GetLeadError, IdempotencyBegin, IdempotencyStore,
    StoredResponse, TimelineError, TransitionApprovalError,
};
use leadline_store::Store;

use crate::support::{agent_req, both_backends, lead_req, new_tenant, services};

both_backends!(
    approval_lifecycle_with_events_and_outbox,
    only_lifecycle_moves_succeed_and_losers_learn_the_status,
    queue_lists_by_status_oldest_first,
    timeline_orders_by_occurrence_and_pages,
    append_refuses_a_missing_or_foreign_lead_and_an_unknown_actor,
    context_gathers_everything_about_one_lead,
    context_reads_a_date_before_the_common_era,
    idempotency_keys_reserve_replay_and_refuse,
    a_deleted_lead_is_hidden_everywhere_until_restored,
    an_event_may_not_predate_its_lead,
    a_row_that_cannot_be_read_fails_its_reads_by_name_and_a_patch_repairs_it,
    an_inactive_agent_gets_no_new_leads_and_cannot_draft,
);

/// A row written behind the store's back that no longer satisfies the
/// domain (docs/backends.md, "Reading rows back"): every read that meets it
/// fails naming the table, the row and the column (never a page that
/// silently leaves it out), and a PATCH of the field repairs it.
async fn a_row_that_cannot_be_read_fails_its_reads_by_name_and_a_patch_repairs_it(store: Store) {
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let lead = s.leads.create(tenant, &lead_req("Broken")).await.unwrap();
    match store.backend() {
        leadline_store::Backend::Postgres => leadline_testsupport::postgres()
            .admin_execute(
                &crate::support::pg().await.database,
                &format!(
                    "UPDATE leads SET email = 'NOT AN EMAIL' WHERE id = '{}'",
                    lead.id
                ),
            )
            .await
            .unwrap(),
        leadline_store::Backend::Sqlite => store
            .execute_for_tests(&format!(
                "UPDATE leads SET email = 'NOT AN EMAIL' WHERE id = x'{}'",
                lead.id.as_uuid().simple()
            ))
            .await
            .unwrap(),
    }
    let named = |e: &dyn std::fmt::Display| {
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("leads row {}", lead.id)) && text.contains("leads.email"),
            "names the row and the column: {text}"
        );
    };
    match s.leads.get(tenant, lead.id).await {
        Err(leadline_ports::GetLeadError::Unknown(e)) => named(&e),
        other => panic!("expected the read to fail: {other:?}"),
    }
    match s
        .leads
        .list(tenant, &leadline_domain::ListLeadsQuery::default())
        .await
    {
        Err(leadline_ports::ListLeadsError::Unknown(e)) => named(&e),
        other => panic!("a page with the row fails too, never skips it: {other:?}"),
    }
    // The repair: PATCH the field (the update reads the row under its
    // own rules, so the stored version is all it needs).
    let repaired = s
        .leads
        .update(
            tenant,
            lead.id,
            &leadline_domain::UpdateLeadRequest {
                expected_version: lead.version,
                email: Some(Some(
                    leadline_domain::Email::parse("fixed@example.com").unwrap(),
                )),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        repaired.unwrap().email.unwrap().as_str(),
        "fixed@example.com"
    );
    assert!(s.leads.get(tenant, lead.id).await.is_ok(), "readable again");
}

/// A deactivated agent is honoured on both backends: no lead may be
/// assigned to it, and it may not draft.
async fn an_inactive_agent_gets_no_new_leads_and_cannot_draft(store: Store) {
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(tenant, &agent_req("idle@example.com"))
        .await
        .unwrap();
    let lead = s.leads.create(tenant, &lead_req("Waiting")).await.unwrap();
    s.agents
        .update(
            tenant,
            agent.id,
            &leadline_domain::UpdateAgentRequest {
                expected_version: agent.version,
                name: None,
                email: None,
                role: None,
                active: Some(false),
            },
        )
        .await
        .unwrap();
    let mut req = lead_req("Assigned");
    req.assigned_agent_id = Some(agent.id);
    assert!(matches!(
        s.leads.create(tenant, &req).await,
        Err(leadline_ports::CreateLeadError::AgentInactive)
    ));
    assert!(matches!(
        s.leads
            .update(
                tenant,
                lead.id,
                &leadline_domain::UpdateLeadRequest {
                    expected_version: lead.version,
                    assigned_agent_id: Some(Some(agent.id)),
                    ..Default::default()
                },
            )
            .await,
        Err(leadline_ports::UpdateLeadError::AgentInactive)
    ));
    assert!(matches!(
        s.approvals.draft(tenant, lead.id, &draft(agent.id)).await,
        Err(leadline_ports::DraftApprovalError::AgentInactive)
    ));
}

/// Rewrites a lead's creation time behind the store's back (as the
/// superuser on PostgreSQL, past RLS): a fixture for leads older than the
/// test. Each backend gets its own SQL expression.
async fn set_created_at(store: &Store, lead: LeadId, postgres: &str, sqlite: &str) {
    match store.backend() {
        leadline_store::Backend::Postgres => leadline_testsupport::postgres()
            .admin_execute(
                &crate::support::pg().await.database,
                &format!("UPDATE leads SET created_at = {postgres} WHERE id = '{lead}'"),
            )
            .await
            .unwrap(),
        leadline_store::Backend::Sqlite => store
            .execute_for_tests(&format!(
                "UPDATE leads SET created_at = {sqlite} WHERE id = x'{}'",
                lead.as_uuid().simple()
            ))
            .await
            .unwrap(),
    }
}

/// Back-dating is what logging a past call is, but not to before the lead
/// existed: on PostgreSQL both the one-statement append and the
/// transaction (taken under an idempotency key) refuse it, naming when the
/// lead was created; an event at the lead's very creation is fine.
async fn an_event_may_not_predate_its_lead(store: Store) {
    let w = world(store).await;
    let created = w.s.leads.get(w.tenant, w.lead).await.unwrap().created_at;
    let at = |t| {
        let mut req = note("backdated", 0);
        req.occurred_at = Some(t);
        req
    };
    let early = at(created - chrono::Duration::microseconds(1));
    let scoped = leadline_ports::IdempotentRequest {
        tenant: w.tenant,
        key: IdempotencyKey::new("predates-1").unwrap(),
        recover: None,
    };
    let plain = w.s.timeline.append(w.tenant, w.lead, &early).await;
    let keyed = scoped
        .scope(w.s.timeline.append(w.tenant, w.lead, &early))
        .await;
    for refused in [plain, keyed] {
        match refused {
            Err(leadline_app::AppendError::Store(AppendEventError::PredatesLead {
                lead_created_at,
            })) => assert_eq!(lead_created_at, created),
            other => panic!("expected PredatesLead, got {other:?}"),
        }
    }
    w.s.timeline
        .append(w.tenant, w.lead, &at(created))
        .await
        .expect("an event at the lead's creation");
    let page =
        w.s.timeline
            .timeline(w.tenant, w.lead, &TimelineQuery::default())
            .await
            .unwrap();
    assert_eq!(page.items.len(), 1, "nothing refused was written");
}

/// Soft delete on each backend, through every read path the store has for a
/// lead: by id (one statement on PostgreSQL), the list and count, the
/// context (one statement on PostgreSQL), the timeline, appends (one
/// statement on PostgreSQL), drafts and updates.
async fn a_deleted_lead_is_hidden_everywhere_until_restored(store: Store) {
    use leadline_ports::{DeleteLeadError, GetLeadError, RestoreLeadError, UpdateLeadError};
    let w = world(store).await;
    let before = w.s.leads.get(w.tenant, w.lead).await.unwrap();
    w.s.timeline
        .append(w.tenant, w.lead, &note("before", 1))
        .await
        .unwrap();

    // Open approvals keep a lead from being deleted.
    let pending =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(w.agent))
            .await
            .unwrap();
    assert!(matches!(
        w.s.leads.delete(w.tenant, w.lead).await,
        Err(DeleteLeadError::OpenApprovals { open: 1 })
    ));
    w.s.approvals
        .act(
            w.tenant,
            pending.id,
            &ApprovalAction::Cancel { by: w.agent },
        )
        .await
        .unwrap();
    let listed = |s: &Services| {
        let s = s.clone();
        let tenant = w.tenant;
        async move {
            s.leads
                .list(
                    tenant,
                    &leadline_domain::ListLeadsQuery {
                        status: None,
                        assigned_agent_id: None,
                        tag: None,
                        limit: PageLimit::new(200).unwrap(),
                        after: None,
                    },
                )
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(listed(&w.s).await, 1);

    w.s.leads.delete(w.tenant, w.lead).await.unwrap();
    assert!(matches!(
        w.s.leads.get(w.tenant, w.lead).await,
        Err(GetLeadError::NotFound)
    ));
    assert_eq!(listed(&w.s).await, 0);
    assert_eq!(w.s.leads.count(w.tenant).await.unwrap(), 0);
    assert!(w.s.context.context(w.tenant, w.lead).await.is_err());
    assert!(matches!(
        w.s.timeline
            .timeline(w.tenant, w.lead, &TimelineQuery::default())
            .await,
        Err(TimelineError::LeadNotFound)
    ));
    for actor in [None, Some(w.agent)] {
        let mut event = note("after", 0);
        event.actor = actor;
        assert!(
            matches!(
                w.s.timeline.append(w.tenant, w.lead, &event).await,
                Err(leadline_app::AppendError::Store(
                    AppendEventError::LeadNotFound
                ))
            ),
            "an event on a deleted lead (actor {actor:?})"
        );
    }
    assert!(matches!(
        w.s.approvals.draft(w.tenant, w.lead, &draft(w.agent)).await,
        Err(DraftApprovalError::LeadNotFound)
    ));
    let patch = UpdateLeadRequest {
        expected_version: before.version + 1,
        ..UpdateLeadRequest::default()
    };
    assert!(matches!(
        w.s.leads.update(w.tenant, w.lead, &patch).await,
        Err(UpdateLeadError::NotFound)
    ));
    assert!(matches!(
        w.s.leads.delete(w.tenant, w.lead).await,
        Err(DeleteLeadError::NotFound)
    ));

    let restored = w.s.leads.restore(w.tenant, w.lead).await.unwrap();
    assert_eq!(
        restored.version,
        before.version + 2,
        "delete and restore each move the version"
    );
    assert_eq!(
        (restored.id, &restored.email, restored.status),
        (before.id, &before.email, before.status)
    );
    assert_eq!(w.s.leads.get(w.tenant, w.lead).await.unwrap(), restored);
    assert_eq!(listed(&w.s).await, 1);
    let ctx =
        w.s.context
            .context(w.tenant, w.lead)
            .await
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(ctx.lead, restored);
    assert_eq!(
        ctx.events.len(),
        2,
        "the timeline kept its events: the note and the cancel"
    );
    assert!(matches!(
        w.s.leads.restore(w.tenant, w.lead).await,
        Err(RestoreLeadError::NotFound)
    ));
}

struct World {
    s: Services,
    tenant: TenantId,
    agent: AgentId,
    lead: LeadId,
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
    let mut req = lead_req("Grace");
    req.assigned_agent_id = Some(agent);
    let lead = s.leads.create(tenant, &req).await.unwrap().id;
    // An established lead: its timeline may hold notes from the last day
    // (an event may not predate its lead).
    set_created_at(
        &store,
        lead,
        "now() - interval '1 day'",
        "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '-1 day')",
    )
    .await;
    World {
        s,
        tenant,
        agent,
        lead,
    }
}

fn draft(agent: AgentId) -> DraftApprovalRequest {
    DraftApprovalRequest {
        channel: Channel::Email,
        subject: Some(Subject::new("Hello").unwrap()),
        body: MessageBody::new("Hi Grace,\nshall we talk?").unwrap(),
        requested_by: agent,
    }
}

async fn approval_lifecycle_with_events_and_outbox(store: Store) {
    let w = world(store.clone()).await;
    let a =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(w.agent))
            .await
            .unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(w.s.approvals.get(w.tenant, a.id).await.unwrap(), a);

    let approved =
        w.s.approvals
            .act(w.tenant, a.id, &ApprovalAction::Approve { by: w.agent })
            .await
            .unwrap();
    assert_eq!(
        (approved.status, approved.decided_by),
        (ApprovalStatus::Approved, Some(w.agent))
    );
    assert!(approved.decided_at.is_some());
    let sent =
        w.s.approvals
            .act(w.tenant, a.id, &ApprovalAction::MarkSent { by: w.agent })
            .await
            .unwrap();
    assert_eq!(
        (sent.status, sent.sent_by),
        (ApprovalStatus::Sent, Some(w.agent))
    );
    assert_eq!(
        w.s.approvals.get(w.tenant, a.id).await.unwrap(),
        sent,
        "stored as returned"
    );

    let events =
        w.s.timeline
            .timeline(w.tenant, w.lead, &TimelineQuery::default())
            .await
            .unwrap()
            .items;
    let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.direction)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::EmailSent, Direction::Outbound),
            (EventKind::ApprovalDecided, Direction::Internal)
        ]
    );
    assert_eq!(
        events[0].content.as_ref().map(EventContent::as_str),
        Some("Hi Grace,\nshall we talk?")
    );
    assert_eq!(
        events[0].metadata.as_map()["approval_id"],
        serde_json::json!(a.id)
    );

    let unknown =
        w.s.approvals
            .draft(w.tenant, LeadId::new(), &draft(w.agent))
            .await;
    assert!(matches!(unknown, Err(DraftApprovalError::LeadNotFound)));
    let stranger =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(AgentId::new()))
            .await;
    assert!(matches!(stranger, Err(DraftApprovalError::AgentNotFound)));

    // Rejections carry their reason onto the record and the timeline.
    let b =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(w.agent))
            .await
            .unwrap();
    let reason = RejectionReason::new("too pushy").unwrap();
    let rejected =
        w.s.approvals
            .act(
                w.tenant,
                b.id,
                &ApprovalAction::Reject {
                    by: w.agent,
                    reason: reason.clone(),
                },
            )
            .await
            .unwrap();
    assert_eq!(
        (rejected.status, rejected.rejection_reason),
        (ApprovalStatus::Rejected, Some(reason))
    );
    let latest =
        &w.s.timeline
            .timeline(w.tenant, w.lead, &TimelineQuery::default())
            .await
            .unwrap()
            .items[0];
    assert_eq!(
        (
            latest.kind,
            latest.content.as_ref().map(EventContent::as_str)
        ),
        (EventKind::ApprovalDecided, Some("too pushy"))
    );
}

async fn only_lifecycle_moves_succeed_and_losers_learn_the_status(store: Store) {
    let w = world(store).await;
    let act = |id, action: ApprovalAction| {
        let s = w.s.clone();
        let t = w.tenant;
        async move { s.approvals.act(t, id, &action).await }
    };
    let by = w.agent;
    let a =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    assert!(
        matches!(
            act(a.id, ApprovalAction::MarkSent { by }).await,
            Err(TransitionApprovalError::Conflict {
                current: ApprovalStatus::Pending
            })
        ),
        "cannot send unapproved"
    );
    act(a.id, ApprovalAction::Cancel { by }).await.unwrap();
    for action in [
        ApprovalAction::Approve { by },
        ApprovalAction::Cancel { by },
        ApprovalAction::MarkSent { by },
    ] {
        assert!(matches!(
            act(a.id, action).await,
            Err(TransitionApprovalError::Conflict {
                current: ApprovalStatus::Cancelled
            })
        ));
    }
    let b =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    act(b.id, ApprovalAction::Approve { by }).await.unwrap();
    assert!(matches!(
        act(b.id, ApprovalAction::Approve { by }).await,
        Err(TransitionApprovalError::Conflict {
            current: ApprovalStatus::Approved
        })
    ));
    assert!(
        matches!(
            act(b.id, ApprovalAction::Cancel { by }).await,
            Err(TransitionApprovalError::Conflict {
                current: ApprovalStatus::Approved
            })
        ),
        "approved can only be sent"
    );
    act(b.id, ApprovalAction::MarkSent { by }).await.unwrap();
    assert!(
        matches!(
            act(b.id, ApprovalAction::MarkSent { by }).await,
            Err(TransitionApprovalError::Conflict {
                current: ApprovalStatus::Sent
            })
        ),
        "sent once"
    );
    assert!(matches!(
        act(
            leadline_domain::ApprovalId::new(),
            ApprovalAction::Approve { by }
        )
        .await,
        Err(TransitionApprovalError::NotFound)
    ));
    let c =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    assert!(matches!(
        act(c.id, ApprovalAction::Approve { by: AgentId::new() }).await,
        Err(TransitionApprovalError::AgentNotFound)
    ));
    assert_eq!(
        w.s.approvals.get(w.tenant, c.id).await.unwrap().status,
        ApprovalStatus::Pending,
        "a refused move changes nothing"
    );

    // Another tenant cannot see or move it.
    let (other, _) = new_tenant(&w.s).await;
    assert!(matches!(
        w.s.approvals
            .act(other, c.id, &ApprovalAction::Approve { by })
            .await,
        Err(TransitionApprovalError::NotFound)
    ));
}

async fn queue_lists_by_status_oldest_first(store: Store) {
    let w = world(store).await;
    let other_agent =
        w.s.agents
            .create(w.tenant, &agent_req("bob@example.com"))
            .await
            .unwrap()
            .id;
    let mut pending = Vec::new();
    for i in 0..5 {
        let by = if i % 2 == 0 { w.agent } else { other_agent };
        pending.push(
            w.s.approvals
                .draft(w.tenant, w.lead, &draft(by))
                .await
                .unwrap()
                .id,
        );
    }
    w.s.approvals
        .act(
            w.tenant,
            pending[0],
            &ApprovalAction::Approve { by: w.agent },
        )
        .await
        .unwrap();
    let approved = pending.remove(0);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let q = ApprovalQueueQuery {
            limit: PageLimit::new(2).unwrap(),
            after,
            ..Default::default()
        };
        let page = w.s.approvals.queue(w.tenant, &q).await.unwrap();
        seen.extend(page.items.iter().map(|a| a.id));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|a| a.id);
    }
    assert_eq!(seen, pending, "the pending queue, oldest first");
    let mine =
        w.s.approvals
            .queue(
                w.tenant,
                &ApprovalQueueQuery {
                    requested_by: Some(other_agent),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(
        mine.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![pending[0], pending[2]]
    );
    let approved_q =
        w.s.approvals
            .queue(
                w.tenant,
                &ApprovalQueueQuery {
                    status: ApprovalStatus::Approved,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(
        approved_q.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![approved]
    );
}

/// A note dated `minutes_ago` (the world's lead was created a day ago).
fn note(text: &str, minutes_ago: i64) -> AppendEventRequest {
    AppendEventRequest {
        kind: EventKind::Note,
        direction: Direction::Internal,
        content: Some(EventContent::new(text).unwrap()),
        occurred_at: Some(chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)),
        actor: None,
        metadata: Metadata::default(),
    }
}

/// The foreign keys do the existence checks, so each refusal must still be
/// told apart, and nothing may be written.
async fn append_refuses_a_missing_or_foreign_lead_and_an_unknown_actor(store: Store) {
    use leadline_app::AppendError;
    let w = world(store).await;
    let (other_tenant, _) = new_tenant(&w.s).await;
    let foreign_lead =
        w.s.leads
            .create(other_tenant, &lead_req("Linus"))
            .await
            .unwrap()
            .id;
    let with_actor = |actor| AppendEventRequest {
        actor: Some(actor),
        ..note("with an actor", 0)
    };
    let refused = |result: Result<_, AppendError>| match result {
        Err(AppendError::Store(e)) => e,
        other => panic!("expected a store refusal, got {other:?}"),
    };

    for lead in [LeadId::new(), foreign_lead] {
        let e = refused(
            w.s.timeline
                .append(w.tenant, lead, &note("nobody", 0))
                .await,
        );
        assert!(matches!(e, AppendEventError::LeadNotFound), "{e:?}");
        let e = refused(
            w.s.timeline
                .append(w.tenant, lead, &with_actor(w.agent))
                .await,
        );
        assert!(matches!(e, AppendEventError::LeadNotFound), "{e:?}");
    }
    let e = refused(
        w.s.timeline
            .append(w.tenant, w.lead, &with_actor(AgentId::new()))
            .await,
    );
    assert!(matches!(e, AppendEventError::AgentNotFound), "{e:?}");

    let page = |tenant, lead| {
        let s = w.s.clone();
        async move {
            s.timeline
                .timeline(
                    tenant,
                    lead,
                    &TimelineQuery {
                        limit: PageLimit::new(50).unwrap(),
                        after: None,
                    },
                )
                .await
                .unwrap()
                .items
        }
    };
    assert!(page(w.tenant, w.lead).await.is_empty(), "nothing written");
    assert!(
        page(other_tenant, foreign_lead).await.is_empty(),
        "nothing written"
    );
    // And the good one still goes in.
    w.s.timeline
        .append(w.tenant, w.lead, &with_actor(w.agent))
        .await
        .unwrap();
    assert_eq!(page(w.tenant, w.lead).await.len(), 1);
}

async fn timeline_orders_by_occurrence_and_pages(store: Store) {
    let w = world(store).await;
    // Recorded out of order: the timeline follows when things happened.
    for (text, ago) in [
        ("third", 10),
        ("first", 30),
        ("fourth", 5),
        ("second", 20),
        ("fifth", 0),
    ] {
        w.s.timeline
            .append(w.tenant, w.lead, &note(text, ago))
            .await
            .unwrap();
    }
    let mut texts = Vec::new();
    let mut after: Option<TimelineCursor> = None;
    loop {
        let page =
            w.s.timeline
                .timeline(
                    w.tenant,
                    w.lead,
                    &TimelineQuery {
                        limit: PageLimit::new(2).unwrap(),
                        after,
                    },
                )
                .await
                .unwrap();
        texts.extend(
            page.items
                .iter()
                .map(|e| e.content.as_ref().unwrap().as_str().to_owned()),
        );
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|e| TimelineCursor {
            occurred_at: e.occurred_at,
            id: e.id,
        });
    }
    assert_eq!(texts, ["fifth", "fourth", "third", "second", "first"]);

    let mut future = note("later", 0);
    future.occurred_at = Some(chrono::Utc::now() + chrono::Duration::hours(2));
    assert!(
        w.s.timeline
            .append(w.tenant, w.lead, &future)
            .await
            .is_err(),
        "no events from the future"
    );
    let mut stranger = note("x", 0);
    stranger.actor = Some(AgentId::new());
    assert!(
        w.s.timeline
            .append(w.tenant, w.lead, &stranger)
            .await
            .is_err(),
        "actor must be an agent of the tenant"
    );
    assert!(matches!(
        w.s.timeline
            .timeline(w.tenant, LeadId::new(), &TimelineQuery::default())
            .await,
        Err(TimelineError::LeadNotFound)
    ));

    // A status move is a touch too.
    let moved = UpdateLeadRequest {
        expected_version: 1,
        status: Some(LeadStatus::Contacted),
        ..Default::default()
    };
    w.s.leads.update(w.tenant, w.lead, &moved).await.unwrap();
    let latest =
        &w.s.timeline
            .timeline(w.tenant, w.lead, &TimelineQuery::default())
            .await
            .unwrap()
            .items[0];
    assert_eq!(latest.kind, EventKind::StatusChanged);
    assert_eq!(latest.metadata.as_map()["to"], "contacted");
}

async fn context_gathers_everything_about_one_lead(store: Store) {
    let w = world(store.clone()).await;
    let by = w.agent;
    let pending =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    let approved =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    w.s.approvals
        .act(w.tenant, approved.id, &ApprovalAction::Approve { by })
        .await
        .unwrap();
    let sent =
        w.s.approvals
            .draft(w.tenant, w.lead, &draft(by))
            .await
            .unwrap();
    w.s.approvals
        .act(w.tenant, sent.id, &ApprovalAction::Approve { by })
        .await
        .unwrap();
    w.s.approvals
        .act(w.tenant, sent.id, &ApprovalAction::MarkSent { by })
        .await
        .unwrap();
    for i in 0..25 {
        w.s.timeline
            .append(w.tenant, w.lead, &note(&format!("n{i}"), 100 - i))
            .await
            .unwrap();
    }
    // Another lead's activity stays out of this context.
    let other =
        w.s.leads
            .create(w.tenant, &lead_req("Other"))
            .await
            .unwrap()
            .id;
    w.s.approvals
        .draft(w.tenant, other, &draft(by))
        .await
        .unwrap();

    let ctx =
        w.s.context
            .context(w.tenant, w.lead)
            .await
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(ctx.lead.id, w.lead);
    assert_eq!(ctx.assigned_agent.as_ref().map(|a| a.id), Some(by));
    assert_eq!(
        ctx.open_approvals.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![approved.id, pending.id],
        "open, newest first"
    );
    assert_eq!(
        ctx.recent_approvals
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        vec![sent.id]
    );
    assert_eq!(
        ctx.events.len(),
        20,
        "the configured default of the latest events"
    );
    assert_eq!(ctx.events[0].kind, EventKind::EmailSent, "newest first");
    assert!(
        ctx.events
            .windows(2)
            .all(|p| (p[0].occurred_at, p[0].id) > (p[1].occurred_at, p[1].id))
    );

    // Value for value what the other reads return (on PostgreSQL the context
    // is one statement decoded from JSON: timestamps, metadata and tags must
    // survive it exactly).
    assert_eq!(ctx.lead, w.s.leads.get(w.tenant, w.lead).await.unwrap());
    assert_eq!(
        ctx.assigned_agent,
        Some(w.s.agents.get(w.tenant, by).await.unwrap())
    );
    let timeline =
        w.s.timeline
            .timeline(
                w.tenant,
                w.lead,
                &TimelineQuery {
                    limit: PageLimit::new(20).unwrap(),
                    after: None,
                },
            )
            .await
            .unwrap();
    assert_eq!(ctx.events, timeline.items);
    for approval in ctx.open_approvals.iter().chain(&ctx.recent_approvals) {
        assert_eq!(
            approval,
            &w.s.approvals.get(w.tenant, approval.id).await.unwrap()
        );
    }
    // A lead with no agent, no events and one pending approval.
    let bare =
        w.s.context
            .context(w.tenant, other)
            .await
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(bare.assigned_agent, None);
    assert_eq!(bare.open_approvals.len(), 1);
    assert!(bare.recent_approvals.is_empty() && bare.events.is_empty());

    let (other_tenant, _) = new_tenant(&w.s).await;
    assert!(matches!(
        w.s.context.context(other_tenant, w.lead).await,
        Err(GetLeadError::NotFound)
    ));

    // On both backends the one statement read all of it, not the five
    // queries it falls back to.
    for lead in [w.lead, other] {
        assert!(
            store
                .context_reads_in_one_statement(w.tenant, lead, 20)
                .await
                .unwrap(),
            "{:?}: one statement",
            store.backend()
        );
    }
    // On SQLite a value not stored as the store writes it (a boolean as 2,
    // which SQLite's loose typing lets in) makes the row unreadable to the
    // JSON form: the context falls back to the five queries and reads what
    // it always read.
    if store.backend() == leadline_store::Backend::Sqlite {
        store
            .execute_for_tests(&format!(
                "UPDATE agents SET active = 2 WHERE id = x'{}'",
                by.as_uuid().simple()
            ))
            .await
            .unwrap();
        assert!(
            !store
                .context_reads_in_one_statement(w.tenant, w.lead, 20)
                .await
                .unwrap()
        );
        let again = leadline_ports::LeadContextRepository::context(&store, w.tenant, w.lead, 20)
            .await
            .unwrap();
        assert_eq!(again.assigned_agent.map(|a| a.active), Some(true));
        assert_eq!(again.lead, ctx.lead);
        assert_eq!(again.events, ctx.events);
        assert_eq!(again.open_approvals, ctx.open_approvals);
        assert_eq!(again.recent_approvals, ctx.recent_approvals);
    }
}

/// PostgreSQL renders a BC timestamp in JSON as "0001-06-01T00:00:00+00:00
/// BC", which no ISO parser reads: the one-statement context must fall back
/// to the row-by-row reads instead of failing.
/// The API no longer accepts a time before year 1, nor an event older than
/// its lead, but a database written before those rules may hold such a row:
/// the store must still read it. The lead is backdated behind the store's
/// back (as the superuser on PostgreSQL, past RLS), then the event is
/// written straight through the store's port, past the use case's rule.
async fn context_reads_a_date_before_the_common_era(store: Store) {
    use chrono::TimeZone;
    use leadline_ports::EventRepository;
    let w = world(store.clone()).await;
    let ancient = chrono::Utc.with_ymd_and_hms(0, 6, 1, 12, 0, 0).unwrap();
    let mut req = note("a very old note", 0);
    req.occurred_at = Some(ancient);
    assert!(
        w.s.timeline.append(w.tenant, w.lead, &req).await.is_err(),
        "the API refuses it"
    );
    set_created_at(
        &store,
        w.lead,
        "'0001-01-01 00:00:00+00 BC'",
        "'-0001-01-01T00:00:00.000000+00:00'",
    )
    .await;
    EventRepository::append(&store, w.tenant, w.lead, &req)
        .await
        .unwrap();
    w.s.timeline
        .append(w.tenant, w.lead, &note("today", 0))
        .await
        .unwrap();

    let ctx =
        w.s.context
            .context(w.tenant, w.lead)
            .await
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(ctx.events.len(), 2);
    assert_eq!(ctx.events[1].occurred_at, ancient);
    assert_eq!(ctx.lead, w.s.leads.get(w.tenant, w.lead).await.unwrap());
    // PostgreSQL's JSON cannot carry the date, so the fallback read it;
    // SQLite stores the text the store wrote, which its JSON carries as is.
    assert_eq!(
        store
            .context_reads_in_one_statement(w.tenant, w.lead, 20)
            .await
            .unwrap(),
        store.backend() == leadline_store::Backend::Sqlite
    );
}

async fn idempotency_keys_reserve_replay_and_refuse(store: Store) {
    let s = services(store.clone());
    let (t, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let key = IdempotencyKey::new("retry-me-1").unwrap();
    assert_eq!(
        store.begin(t, &key, [1; 32]).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        store.begin(t, &key, [1; 32]).await.unwrap(),
        IdempotencyBegin::InProgress
    );
    assert_eq!(
        store.begin(other, &key, [1; 32]).await.unwrap(),
        IdempotencyBegin::Started,
        "keys are per tenant"
    );
    let response = StoredResponse {
        status: 201,
        location: Some("/v1/x".into()),
        body: b"{\"ok\":true}".to_vec(),
    };
    store.complete(t, &key, &response).await.unwrap();
    assert_eq!(
        store.begin(t, &key, [1; 32]).await.unwrap(),
        IdempotencyBegin::Replay(response)
    );
    assert_eq!(
        store.begin(t, &key, [2; 32]).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    store.abandon(t, &key).await.unwrap();
    assert!(
        matches!(
            store.begin(t, &key, [1; 32]).await.unwrap(),
            IdempotencyBegin::Replay(_)
        ),
        "a completed key is never abandoned"
    );

    let failed = IdempotencyKey::new("failed-once").unwrap();
    assert_eq!(
        store.begin(t, &failed, [3; 32]).await.unwrap(),
        IdempotencyBegin::Started
    );
    store.abandon(t, &failed).await.unwrap();
    assert_eq!(
        store.begin(t, &failed, [3; 32]).await.unwrap(),
        IdempotencyBegin::Started,
        "an abandoned key runs again"
    );
}

/// 64 concurrent approvers on one pending approval, then 64 concurrent
/// senders, repeated: exactly one of each wins, and the database holds
/// exactly one decision event, one send event and one outbox row.
#[tokio::test]
async fn exactly_once_under_64_concurrent_callers_on_postgres() {
    use sqlx::{Connection, Row};
    const CALLERS: usize = 64;
    const TRIALS: usize = 25;
    // A connection per caller: the race is decided in PostgreSQL, not in
    // the pool's queue.
    let store = crate::support::pg_store_sized(CALLERS as u32).await;
    let w = world(store).await;
    let mut conn = sqlx::PgConnection::connect(&crate::support::pg().await.service_url)
        .await
        .unwrap();
    for trial in 0..TRIALS {
        let approval =
            w.s.approvals
                .draft(w.tenant, w.lead, &draft(w.agent))
                .await
                .unwrap();
        for action in [
            ApprovalAction::Approve { by: w.agent },
            ApprovalAction::MarkSent { by: w.agent },
        ] {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (s, barrier, action) = (w.s.clone(), barrier.clone(), action.clone());
                    let (t, id) = (w.tenant, approval.id);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        s.approvals.act(t, id, &action).await
                    })
                })
                .collect();
            let mut wins = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(_) => wins += 1,
                    Err(TransitionApprovalError::Conflict { current }) => {
                        assert_eq!(current, action.to_status())
                    }
                    Err(other) => panic!("trial {trial}: unexpected {other:?}"),
                }
            }
            assert_eq!(wins, 1, "trial {trial}: exactly one {action:?} wins");
        }
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(w.tenant.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM events WHERE metadata->>'approval_id' = $1 AND kind = 'approval_decided'),
                    (SELECT count(*) FROM events WHERE metadata->>'approval_id' = $1 AND kind = 'email_sent'),
                    (SELECT count(*) FROM outbox WHERE approval_id = $2)",
        )
        .bind(approval.id.to_string())
        .bind(approval.id.as_uuid())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            counts,
            (1, 1, 1),
            "trial {trial}: one decision event, one send event, one outbox row"
        );
    }
}
