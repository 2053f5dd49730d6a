//! The in-process context cache without Redis, beside another process that
//! writes to the same database (a CLI import, a second instance): the
//! change-log follower invalidates what the other process changed.
//!
//! "Another process" is a second store on the same database: a second pool
//! on PostgreSQL (its commits reach the first only by `NOTIFY`), a second
//! connection to the same file on SQLite (nothing reaches the first but the
//! log itself, read on the follower's timer).

use std::{sync::Arc, time::Duration};

use leadline::Composition;
use leadline_app::{RecallSettings, Services};
use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_domain::{
    AppendEventRequest, CompanyName, Direction, DisplayName, EventContent, EventKind, LeadContext,
    LeadId, Metadata, TenantId, UpdateAgentRequest, UpdateLeadRequest,
};
use leadline_ports::ChangeLog as _;
use leadline_store::{MigrateOp, Store, StoreSettings};
use tokio::sync::Notify;

use crate::support::{agent_req, eventually, lead_req, new_tenant, pg_store, services};

/// The server: an in-process cache and no Redis.
async fn server(store: Store) -> Services {
    let cache = Arc::new(
        TwoTierCache::connect(&CacheSettings::default())
            .await
            .expect("cache starts"),
    );
    Composition::from_parts(store, cache, RecallSettings::default()).services
}

async fn context(s: &Services, tenant: TenantId, lead: LeadId) -> LeadContext {
    s.context
        .context(tenant, lead)
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads the context on `s` until `fresh` holds of it.
async fn until_fresh(
    s: &Services,
    tenant: TenantId,
    lead: LeadId,
    what: &str,
    fresh: impl Fn(&LeadContext) -> bool,
) {
    eventually(what, Duration::from_secs(15), async || {
        let seen = context(s, tenant, lead).await;
        if fresh(&seen) { Ok(()) } else { Err(seen) }
    })
    .await;
}

/// `server` caches contexts; `writer` (another process, no shared cache)
/// changes a lead, its agent and its timeline; the server's follower,
/// reading the log every `poll`, makes each change visible.
async fn the_server_sees_another_processs_writes(
    server: Services,
    writer: Services,
    poll: Duration,
) {
    let (tenant, _) = new_tenant(&writer).await;
    let agent = writer
        .agents
        .create(tenant, &agent_req("owner@example.com"))
        .await
        .unwrap();
    let mut req = lead_req("Cached");
    req.assigned_agent_id = Some(agent.id);
    let lead = writer.leads.create(tenant, &req).await.unwrap();

    // The server caches the context, then the writer changes the lead.
    assert_eq!(context(&server, tenant, lead.id).await.lead.company, None);
    writer
        .leads
        .update(
            tenant,
            lead.id,
            &UpdateLeadRequest {
                expected_version: lead.version,
                company: Some(Some(CompanyName::new("Acme").unwrap())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Nothing follows the log yet: the server still serves its copy. This
    // is the staleness the follower exists to end.
    assert_eq!(context(&server, tenant, lead.id).await.lead.company, None);

    let follower = server
        .context
        .coherence()
        .expect("a cache without a shared tier follows the change log");
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(follower.run(poll, async move { stopped.notified().await }));

    until_fresh(&server, tenant, lead.id, "the lead's update", |c| {
        c.lead.company.as_ref().map(ToString::to_string).as_deref() == Some("Acme")
    })
    .await;

    writer
        .agents
        .update(
            tenant,
            agent.id,
            &UpdateAgentRequest {
                expected_version: agent.version,
                name: Some(DisplayName::new("Renamed Owner").unwrap()),
                email: None,
                role: None,
                active: None,
            },
        )
        .await
        .unwrap();
    until_fresh(&server, tenant, lead.id, "the agent's rename", |c| {
        c.assigned_agent
            .as_ref()
            .is_some_and(|a| a.name.to_string() == "Renamed Owner")
    })
    .await;

    let event = writer
        .timeline
        .append(
            tenant,
            lead.id,
            &AppendEventRequest {
                kind: EventKind::Note,
                direction: Direction::Internal,
                content: Some(EventContent::new("called from the other process").unwrap()),
                occurred_at: None,
                actor: None,
                metadata: Metadata::default(),
            },
        )
        .await
        .unwrap();
    until_fresh(&server, tenant, lead.id, "the appended event", |c| {
        c.events.iter().any(|e| e.id == event.id)
    })
    .await;

    stop.notify_one();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the follower stops when asked")
        .unwrap();
}

#[tokio::test]
async fn sqlite_a_second_connection_to_the_file_is_followed_on_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("shared.db").display()
    );
    let open = async || {
        let store = Store::connect(&StoreSettings::for_url(&url))
            .await
            .expect("sqlite opens");
        store.migrate(MigrateOp::Up).await.expect("migrates");
        store
    };
    let (a, b) = (open().await, open().await);
    the_server_sees_another_processs_writes(
        server(a).await,
        services(b),
        Duration::from_millis(50),
    )
    .await;
}

#[tokio::test]
async fn postgres_another_pools_commits_are_followed_by_notify() {
    let (a, b) = (pg_store().await, pg_store().await);
    // Only NOTIFY can make the server catch up within the test: its timer
    // is an hour. Wait until the server's listener hears the writer.
    let mut wakeups = a.wakeups();
    let writer = services(b);
    let (scratch_tenant, _) = new_tenant(&writer).await;
    eventually(
        "the server listens for the writer's commits",
        Duration::from_secs(15),
        async || {
            writer
                .leads
                .create(scratch_tenant, &lead_req("Probe"))
                .await
                .unwrap();
            // Other tests' tenants wake it too: look for ours.
            let heard = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match wakeups.recv().await {
                        Ok(tenant) if tenant == scratch_tenant => return Ok(()),
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(closed) => return Err(closed),
                    }
                }
            })
            .await;
            match heard {
                Ok(Ok(())) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    the_server_sees_another_processs_writes(server(a).await, writer, Duration::from_secs(3600))
        .await;
}
