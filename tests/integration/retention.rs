//! Retention against real databases: a tenant's policy archives (or
//! deletes) exactly the events past its age, in batches no larger than
//! asked, leaving the rest of the timeline, other tenants and tenants
//! without a policy alone; archived events leave the timeline and the
//! cached context but stay in the privacy export; each batch leaves an
//! audit record. On PostgreSQL, `retention_apply` (the service role's only
//! way to remove an event) answers only for the transaction's tenant and
//! never removes younger events than the policy allows.

use std::collections::BTreeSet;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use chrono::{Days, Utc};
use http_body_util::BodyExt;
use leadline_app::Services;
use leadline_domain::{
    AppendEventRequest, Direction, Email, EventKind, Lead, LeadStatus, Metadata, PageLimit,
    RetentionAction, RetentionPolicy, TenantId, TimelineQuery, UpdateLeadRequest,
};
use leadline_http::{AppState, router};
use leadline_store::Store;
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tower::ServiceExt;

use crate::support::{Owner, lead_req, new_tenant, services};

mod sqlite {
    #[tokio::test]
    async fn a_policy_removes_exactly_the_old_events_in_bounded_batches() {
        let (store, path) = crate::support::sqlite_file_store().await;
        let owner = crate::support::Owner::Sqlite(crate::support::sqlite_url(&path));
        super::a_policy_removes_exactly_the_old_events_in_bounded_batches(store, owner).await;
    }
}

mod postgres {
    #[tokio::test]
    async fn a_policy_removes_exactly_the_old_events_in_bounded_batches() {
        // A database of its own: the job runs over every tenant.
        let (owner, service) = crate::support::isolated_pg("leadline_retention").await;
        super::a_policy_removes_exactly_the_old_events_in_bounded_batches(
            crate::support::store_at(&service).await,
            crate::support::Owner::Postgres(owner),
        )
        .await;
    }
}

async fn call(
    app: &Router,
    key: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let res = app
        .clone()
        .oneshot(
            req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A lead created `days` ago with status moves that day, and touches at
/// each of `touches` days ago.
async fn history(
    s: &Services,
    owner: &Owner,
    tenant: TenantId,
    name: &str,
    days: i64,
    touches: &[u64],
) -> Lead {
    let mut req = lead_req(name);
    req.email = Some(Email::parse(&format!("{name}@retention.example")).unwrap());
    let lead = s.leads.create(tenant, &req).await.unwrap();
    let moved = s
        .leads
        .update(
            tenant,
            lead.id,
            &UpdateLeadRequest {
                expected_version: lead.version,
                status: Some(LeadStatus::Contacted),
                ..UpdateLeadRequest::default()
            },
        )
        .await
        .unwrap();
    owner.backdate(tenant, &moved, days).await;
    for ago in touches {
        let touch = AppendEventRequest {
            kind: EventKind::Note,
            direction: Direction::Internal,
            content: None,
            occurred_at: Some(Utc::now() - Days::new(*ago)),
            actor: None,
            metadata: Metadata::new(json!({"ago": ago})).unwrap(),
        };
        s.timeline.append(tenant, lead.id, &touch).await.unwrap();
    }
    lead
}

/// The tenant's three reports over the last 90 days (PostgreSQL's after a
/// refresh), with their `as_of`s left out.
async fn figures(
    s: &Services,
    tenant: TenantId,
    postgres: bool,
) -> (
    leadline_domain::Funnel,
    leadline_domain::AgentsReport,
    leadline_domain::Activity,
) {
    if s.analytics.refresh().await.unwrap().is_none() && postgres {
        // Another refresh held the lock: this one's figures must include
        // every write before now.
        crate::support::eventually(
            "a refresh of our own",
            std::time::Duration::from_secs(30),
            async || {
                s.analytics
                    .refresh()
                    .await
                    .unwrap()
                    .ok_or("another refresh holds the lock")
            },
        )
        .await;
    }
    let today = Utc::now().date_naive();
    let range = leadline_domain::DateRange::new(today - Days::new(90), today).unwrap();
    let day = leadline_domain::Interval::Day;
    let at = chrono::DateTime::<Utc>::MIN_UTC;
    let mut funnel = s.analytics.funnel(tenant, range, day).await.unwrap();
    let mut agents = s.analytics.agents(tenant).await.unwrap();
    let mut activity = s.analytics.activity(tenant, range, day).await.unwrap();
    (funnel.as_of, agents.as_of, activity.as_of) = (at, at, at);
    (funnel, agents, activity)
}

/// The ids of the lead's events on its timeline, and of those older than
/// `days`.
async fn timeline(
    s: &Services,
    tenant: TenantId,
    lead: &Lead,
    days: u64,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let query = TimelineQuery {
        limit: PageLimit::new(200).unwrap(),
        after: None,
    };
    let page = s.timeline.timeline(tenant, lead.id, &query).await.unwrap();
    assert!(!page.has_more);
    let cutoff = Utc::now() - Days::new(days);
    let all = page.items.iter().map(|e| e.id.to_string()).collect();
    let old = page
        .items
        .iter()
        .filter(|e| e.occurred_at < cutoff)
        .map(|e| e.id.to_string())
        .collect();
    (all, old)
}

async fn a_policy_removes_exactly_the_old_events_in_bounded_batches(store: Store, owner: Owner) {
    let postgres = store.backend() == leadline_store::Backend::Postgres;
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let mut tenants = Vec::new();
    for action in [
        Some(RetentionAction::Archive),
        Some(RetentionAction::Delete),
        None,
    ] {
        let (tenant, key) = new_tenant(&s).await;
        let old = history(&s, &owner, tenant, "olga", 60, &[50, 40, 10, 0]).await;
        let young = history(&s, &owner, tenant, "yan", 20, &[15]).await;
        if let Some(action) = action {
            let body = json!({"events_older_than_days": 30, "action": action.as_str()});
            let (status, answer) = call(
                &app,
                &key,
                Method::PUT,
                "/v1/settings/retention",
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer, body);
        }
        tenants.push((tenant, key, action, old, young));
    }

    for (tenant, key, action, old, young) in &tenants {
        let (before, due) = timeline(&s, *tenant, old, 30).await;
        let (young_before, young_due) = timeline(&s, *tenant, young, 30).await;
        // Moved 60 days ago (creation leaves no event), touched 50 and 40
        // days ago.
        assert_eq!(due.len(), 3, "{action:?}");
        assert!(young_due.is_empty());
        // A cached context holding the old events.
        let cached = s
            .context
            .context(*tenant, old.id)
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            cached
                .events
                .iter()
                .any(|e| due.contains(&e.id.to_string())),
            "the context holds old events before"
        );

        let figures_before = figures(&s, *tenant, postgres).await;
        let (removed, batches) = s.retention.apply_tenant(*tenant, 2).await.unwrap();
        let (after, _) = timeline(&s, *tenant, old, 30).await;
        let (young_after, _) = timeline(&s, *tenant, young, 30).await;
        assert_eq!(young_after, young_before, "{action:?}: younger events stay");
        if action.is_none() {
            assert_eq!((removed, batches), (0, 1), "no policy, nothing removed");
            assert_eq!(after, before);
            continue;
        }
        // Three due events in batches of at most two: two batches.
        assert_eq!((removed, batches), (3, 2), "{action:?}");
        assert_eq!(
            after,
            before.difference(&due).cloned().collect(),
            "{action:?}: exactly the old events left the timeline"
        );
        let context = s
            .context
            .context(*tenant, old.id)
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            context
                .events
                .iter()
                .all(|e| !due.contains(&e.id.to_string())),
            "{action:?}: the cached context no longer shows them"
        );
        assert_eq!(
            s.retention.apply_tenant(*tenant, 2).await.unwrap().0,
            0,
            "nothing left"
        );
        if *action == Some(RetentionAction::Archive) {
            // Archived events happened: the figures do not change.
            assert_eq!(
                figures(&s, *tenant, postgres).await,
                figures_before,
                "analytics after archiving"
            );
        }

        // The archive is in the export; deleted events are nowhere.
        let (status, export) = call(
            &app,
            key,
            Method::POST,
            "/v1/privacy/export",
            Some(json!({"email": "olga@retention.example"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{export}");
        let archived: BTreeSet<String> = export["archived_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let expected = if *action == Some(RetentionAction::Archive) {
            due.clone()
        } else {
            BTreeSet::new()
        };
        assert_eq!(archived, expected, "{action:?}");

        // One audit record per batch, counting the events; and the setting.
        let (status, trail) = call(&app, key, Method::GET, "/v1/audit?entity=tenant", None).await;
        assert_eq!(status, StatusCode::OK, "{trail}");
        let items = trail["items"].as_array().unwrap();
        let verb = match action {
            Some(RetentionAction::Archive) => "tenant.events_archived",
            _ => "tenant.events_deleted",
        };
        let counted: Vec<u64> = items
            .iter()
            .filter(|r| r["action"] == verb)
            .map(|r| r["changes"]["events"]["new"].as_u64().unwrap())
            .collect();
        assert_eq!(counted, vec![1, 2], "newest first: {trail}");
        assert!(
            items.iter().any(|r| r["action"] == "tenant.retention_set"),
            "{trail}"
        );
    }

    // A tenant that archived, then chose to delete: the archive empties of
    // what is past the policy too.
    let (archiving, key, ..) = &tenants[0];
    s.retention
        .set_policy(
            *archiving,
            Some(RetentionPolicy::new(30, RetentionAction::Delete).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        s.retention.apply_tenant(*archiving, 2).await.unwrap(),
        (3, 2)
    );
    let (_, export) = call(
        &app,
        key,
        Method::POST,
        "/v1/privacy/export",
        Some(json!({"email": "olga@retention.example"})),
    )
    .await;
    assert_eq!(export["archived_events"], json!([]), "{export}");
    s.retention
        .set_policy(
            *archiving,
            Some(RetentionPolicy::new(30, RetentionAction::Archive).unwrap()),
        )
        .await
        .unwrap();

    // The job finds the tenants with a policy and nothing is due any more.
    let report = s.retention.apply_all(1000).await.unwrap();
    assert_eq!(report.tenants, 2, "{report:?}");
    assert_eq!(report.events, 0, "{report:?}");

    // The setting reads back, clears, and refuses what it cannot keep.
    let (_, key, ..) = &tenants[0];
    let (status, body) = call(&app, key, Method::GET, "/v1/settings/retention", None).await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("archive"))
    );
    for (body, field) in [
        (
            json!({"events_older_than_days": 0, "action": "delete"}),
            "events_older_than_days",
        ),
        (
            json!({"events_older_than_days": 36501, "action": "delete"}),
            "events_older_than_days",
        ),
        (json!({"events_older_than_days": 30}), "action"),
        (
            json!({"events_older_than_days": 30, "action": "shred"}),
            "action",
        ),
        (json!({"action": "delete"}), "events_older_than_days"),
        (
            json!({"events_older_than_days": "30", "action": "delete"}),
            "events_older_than_days",
        ),
        (json!({"days": 30}), "days"),
    ] {
        let (status, problem) = call(
            &app,
            key,
            Method::PUT,
            "/v1/settings/retention",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert!(problem.to_string().contains(field), "{body}: {problem}");
    }
    let cleared = json!({"events_older_than_days": null, "action": null});
    let (status, body) = call(
        &app,
        key,
        Method::PUT,
        "/v1/settings/retention",
        Some(cleared.clone()),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, cleared));
    let policy = s.retention.policy(tenants[0].0).await.unwrap();
    assert_eq!(policy, None);
    let _ = RetentionPolicy::new(1, RetentionAction::Delete).unwrap();
}

/// `retention_apply` removes only the transaction's own tenant's events,
/// and never younger ones than its policy allows, whatever cutoff the
/// caller names.
#[tokio::test]
async fn retention_apply_answers_only_for_its_tenant_and_policy() {
    let pg = crate::support::pg().await;
    let s = services(crate::support::pg_store().await);
    let owner = Owner::Postgres(pg.owner_url.clone());
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let (tenant, _) = new_tenant(&s).await;
        history(&s, &owner, tenant, "ida", 60, &[50, 10]).await;
        s.retention
            .set_policy(
                tenant,
                Some(RetentionPolicy::new(30, RetentionAction::Delete).unwrap()),
            )
            .await
            .unwrap();
        tenants.push(tenant);
    }
    let count = async |conn: &mut sqlx::PgConnection, tenant: TenantId| -> i64 {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: i64 = sqlx::query("SELECT count(*) FROM events WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        tx.rollback().await.unwrap();
        n
    };
    let mut conn = sqlx::PgConnection::connect(&pg.service_url).await.unwrap();
    let before = [
        count(&mut conn, tenants[0]).await,
        count(&mut conn, tenants[1]).await,
    ];
    // As the service role, in tenant 0's transaction, asking for everything
    // up to now.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenants[0].to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let removed: i64 = sqlx::query(
        "SELECT coalesce(sum(out_count), 0)::bigint FROM retention_apply($1, now(), 1000)",
    )
    .bind(tenants[0].as_uuid())
    .fetch_one(&mut *tx)
    .await
    .unwrap()
    .get(0);
    tx.commit().await.unwrap();
    // Moved 60 and touched 50 days ago: two; the touch 10 days ago stays.
    assert_eq!(removed, 2);
    assert_eq!(count(&mut conn, tenants[0]).await, before[0] - 2);
    assert_eq!(
        count(&mut conn, tenants[1]).await,
        before[1],
        "the other tenant is untouched"
    );
    // Without a tenant context, or naming another tenant than the
    // context's: nothing.
    let nothing: i64 = sqlx::query("SELECT count(*) FROM retention_apply($1, now(), 1000)")
        .bind(tenants[1].as_uuid())
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(nothing, 0);
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenants[0].to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let nothing: i64 = sqlx::query("SELECT count(*) FROM retention_apply($1, now(), 1000)")
        .bind(tenants[1].as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(nothing, 0);
    assert_eq!(
        count(&mut conn, tenants[1]).await,
        before[1],
        "the other tenant is untouched"
    );
    // And still no way to delete an event directly.
    let err = sqlx::query("DELETE FROM events WHERE tenant_id = $1")
        .bind(tenants[1].as_uuid())
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
}
