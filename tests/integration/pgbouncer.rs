//! leadline through a real PgBouncer (Debian's package) in transaction-pooling
//! mode (issue 17): with `database.transaction_pooling` every operation
//! works while a few server connections serve many client connections, and
//! tenants stay apart although a server connection passes from one tenant's
//! transaction to another's (the tenant is set per transaction, with
//! `set_config(…, true)`). Without the setting, cached prepared statements
//! meet server connections that never saw them, which is why it exists.

use std::sync::atomic::{AtomicU64, Ordering};

use leadline_domain::{
    AgentRole, ApprovalAction, Channel, DraftApprovalRequest, EventKind, LeadStatus, MessageBody,
    TenantId, UpdateLeadRequest,
};
use leadline_store::{Store, StoreSettings};
use leadline_testsupport::PgBouncer;

use crate::support::{
    SERVICE, SERVICE_PASSWORD, agent_req, isolated_pg_url, lead_req, new_tenant, services, settings,
};

/// Server connections PgBouncer may open to the database.
const SERVER_CONNECTIONS: u32 = 2;

/// A PgBouncer in front of a database of the test's own, and the service
/// login's URL through it.
async fn bouncer(database_name: &str) -> (PgBouncer, String, String) {
    let direct = isolated_pg_url(database_name).await;
    let database = direct
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("a database name")
        .to_owned();
    let server = leadline_testsupport::postgres();
    let bouncer = PgBouncer::start_transaction_pool(
        server.host(),
        server.port(),
        &[(SERVICE, SERVICE_PASSWORD)],
        SERVER_CONNECTIONS,
    )
    .expect("pgbouncer starts");
    let url = bouncer.url(SERVICE, SERVICE_PASSWORD, &database);
    (bouncer, url, database)
}

fn pooled(url: &str, transaction_pooling: bool) -> StoreSettings {
    StoreSettings {
        transaction_pooling,
        max_connections: 16,
        ..settings(url)
    }
}

/// One client's round of every kind of statement the store sends: writes
/// in transactions, the one-statement reads and append, an approval's
/// decision with its outbox row, and a read of another tenant's lead.
async fn round(
    s: &leadline_app::Services,
    own: TenantId,
    other: TenantId,
    i: u64,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: &dyn std::fmt::Debug| format!("{what}: {err:?}")
    };
    let lead = s
        .leads
        .create(own, &lead_req(&format!("Pooled{i}")))
        .await
        .map_err(|x| e("create")(&x))?;
    let read = s.leads.get(own, lead.id).await.map_err(|x| e("get")(&x))?;
    if read.id != lead.id {
        return Err("get returned another lead".to_owned());
    }
    s.context
        .context(own, lead.id)
        .await
        .map_err(|x| e("context")(&x))?;
    s.timeline
        .append(
            own,
            lead.id,
            &leadline_domain::AppendEventRequest {
                kind: EventKind::Note,
                direction: leadline_domain::Direction::Internal,
                content: None,
                occurred_at: None,
                actor: None,
                metadata: leadline_domain::Metadata::default(),
            },
        )
        .await
        .map_err(|x| e("append")(&x))?;
    s.leads
        .update(
            own,
            lead.id,
            &UpdateLeadRequest {
                expected_version: lead.version,
                status: Some(LeadStatus::Contacted),
                ..UpdateLeadRequest::default()
            },
        )
        .await
        .map_err(|x| e("update")(&x))?;
    let agent = s
        .agents
        .create(
            own,
            &leadline_domain::CreateAgentRequest {
                role: AgentRole::Admin,
                ..agent_req(&format!(
                    "pooled{i}-{}@acme.example",
                    uuid::Uuid::new_v4().simple()
                ))
            },
        )
        .await
        .map_err(|x| e("agent")(&x))?;
    let approval = s
        .approvals
        .draft(
            own,
            lead.id,
            &DraftApprovalRequest {
                channel: Channel::Email,
                subject: None,
                body: MessageBody::new("Hello through the pooler").expect("a body"),
                requested_by: agent.id,
            },
        )
        .await
        .map_err(|x| e("draft")(&x))?;
    s.approvals
        .act(own, approval.id, &ApprovalAction::Approve { by: agent.id })
        .await
        .map_err(|x| e("approve")(&x))?;
    // The other tenant's transactions ran on the same few server
    // connections: this one must still not see that tenant's lead.
    match s.leads.get(other, lead.id).await {
        Err(leadline_ports::GetLeadError::NotFound) => Ok(()),
        other => Err(format!("another tenant read the lead: {other:?}")),
    }
}

/// Every operation succeeds through PgBouncer with 16 client connections on
/// 2 server connections, and RLS keeps the tenants apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_through_pgbouncer_in_transaction_mode() {
    let (bouncer, url, database) = bouncer("pgbouncer_pooled").await;
    let store = Store::connect(&pooled(&url, true)).await.expect("connects");
    let s = services(store.clone());
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let tasks = (0..16_u64).map(|task| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let (own, other) = if (task + i) % 2 == 0 { (a, b) } else { (b, a) };
                round(&s, own, other, task * 100 + i).await?;
            }
            Ok::<_, String>(())
        })
    });
    for outcome in futures::future::join_all(tasks).await {
        if let Err(problem) = outcome.expect("no task panics") {
            panic!("{problem}\npgbouncer's log:\n{}", bouncer.log());
        }
    }
    assert!(
        store.pool_stats().size > SERVER_CONNECTIONS,
        "the client held more connections than the server had: {:?}",
        store.pool_stats()
    );
    let backends: i64 = sqlx_count(
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND usename = '{SERVICE}'"
        ),
    )
    .await;
    assert!(
        backends <= i64::from(SERVER_CONNECTIONS),
        "{backends} server connections for {SERVER_CONNECTIONS} allowed: PgBouncer multiplexed nothing"
    );
    store.close().await;
}

/// The same load without the setting fails: a statement cached on one
/// client connection is missing on the server connection its next
/// transaction gets. (This is the control for the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_cached_statements_break_behind_pgbouncer() {
    let (_bouncer, url, _) = bouncer("pgbouncer_unpooled").await;
    // Tenants are made through a pooled store, so that setup is not what
    // fails, and every round would pass but for the statement cache.
    let setup = Store::connect(&pooled(&url, true)).await.expect("connects");
    let (a, _) = new_tenant(&services(setup.clone())).await;
    let (b, _) = new_tenant(&services(setup.clone())).await;
    setup.close().await;
    let store = Store::connect(&pooled(&url, false))
        .await
        .expect("connects");
    let s = services(store.clone());
    let failures = std::sync::Arc::new(AtomicU64::new(0));
    let tasks = (0..16_u64).map(|task| {
        let s = s.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let (own, other) = if (task + i) % 2 == 0 { (a, b) } else { (b, a) };
                if round(&s, own, other, task * 100 + i).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    for outcome in futures::future::join_all(tasks).await {
        outcome.expect("no task panics");
    }
    assert!(
        failures.load(Ordering::Relaxed) > 0,
        "without transaction_pooling some rounds fail behind PgBouncer"
    );
    store.close().await;
}

async fn sqlx_count(sql: &str) -> i64 {
    use sqlx::Connection as _;
    let server = leadline_testsupport::postgres();
    let mut admin = sqlx::PgConnection::connect(&server.admin_url("postgres"))
        .await
        .expect("the superuser connects");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut admin)
        .await
        .expect("the count")
}
