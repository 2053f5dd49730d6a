//! The change feed on both backends: every write is logged in its own
//! transaction, in order, with the entity as the API shows it; tenants see
//! only their own changes; retention turns a position it passed into a
//! clear "gone"; on PostgreSQL a change whose transaction commits after a
//! later-numbered one is never skipped, even under concurrent load; and over
//! real HTTP the stream resumes after `Last-Event-ID`, sends heartbeats, and
//! carries a write made through another instance (PostgreSQL NOTIFY). A
//! crowd of followers of one tenant shares one reader of the log, and
//! followers under out-of-order commits read everything, in order, once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;

use leadline::{config::Config, run};
use leadline_app::{ChangeFeed, ChangeSettings, Services};
use leadline_domain::{
    ApprovalAction, ChangeFilter, ChangePosition, ChangeType, Channel, DraftApprovalRequest,
    EventKind, LeadStatus, MessageBody, TenantId, UpdateLeadRequest,
};
use leadline_ports::{ChangeLog, ChangeLogError};
use leadline_store::{Store, StoreSettings};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

use crate::support::{
    agent_req, eventually, isolated_pg_url, lead_req, new_tenant, services, sqlite_store, store_at,
};

crate::support::isolated_backends!(
    "leadline_changes";
    every_write_is_logged_in_order_with_its_entity,
    a_tenant_reads_only_its_own_changes,
    retention_turns_a_passed_position_into_gone,
    a_crowd_of_followers_shares_one_reader_of_the_log,
);

/// The log, counting its reads.
struct Counting {
    store: Store,
    reads: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl ChangeLog for Counting {
    async fn after(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<leadline_ports::ChangeSpan, ChangeLogError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.store.after(tenant, after, limit).await
    }

    async fn head(&self, tenant: TenantId) -> Result<ChangePosition, ChangeLogError> {
        self.store.head(tenant).await
    }

    async fn prune(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
        max_rows: u32,
    ) -> Result<u64, ChangeLogError> {
        self.store.prune(older_than, max_rows).await
    }

    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<TenantId> {
        self.store.wakeups()
    }
}

/// Forty streams follow one tenant while ten leads are written one after
/// another, each write waiting until every stream has it. Each stream
/// would read the log at least once per write on its own (400 reads);
/// sharing the tenant's tail, the reads are the streams' catching up
/// (two or three each) plus the tail's few per write.
async fn a_crowd_of_followers_shares_one_reader_of_the_log(store: Store) {
    const FOLLOWERS: usize = 40;
    const WRITES: usize = 10;
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let reads = Arc::new(AtomicU64::new(0));
    let feed = ChangeFeed::new(
        Arc::new(Counting {
            store: store.clone(),
            reads: reads.clone(),
        }),
        ChangeSettings::default(),
    );
    let start = feed.head(tenant).await.unwrap();
    let (got, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let mut followers = Vec::new();
    for f in 0..FOLLOWERS {
        let mut stream = Box::pin(feed.follow(tenant, start, ChangeFilter::default()));
        let got = got.clone();
        followers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < WRITES {
                let change = stream.next().await.unwrap().unwrap();
                seen.push(change.change.entity_id);
                got.send(f).unwrap();
            }
            seen
        }));
    }
    let mut written = Vec::new();
    for w in 0..WRITES {
        let lead = s
            .leads
            .create(tenant, &lead_req(&format!("Crowd{w}")))
            .await
            .unwrap();
        written.push(lead.id.as_uuid());
        for _ in 0..FOLLOWERS {
            tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await
                .expect("every follower gets the write")
                .unwrap();
        }
    }
    for follower in followers {
        assert_eq!(follower.await.unwrap(), written, "in order, once each");
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(
        reads < (FOLLOWERS * WRITES / 2) as u64,
        "{reads} reads of the log for {FOLLOWERS} followers of {WRITES} writes"
    );
}

async fn all_changes(s: &Services, tenant: TenantId, filter: &ChangeFilter) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let span = s.changes.page(tenant, after, filter, 3).await.unwrap();
        out.extend(span.items.iter().map(|c| serde_json::to_value(c).unwrap()));
        after = Some(span.last);
        if !span.has_more {
            return out;
        }
    }
}

/// The whole log once it holds `n` changes. On PostgreSQL a change is
/// readable once every older transaction on the server has ended (other
/// tests' included), so the newest may take a moment.
async fn settled(s: &Services, tenant: TenantId, filter: &ChangeFilter, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} changes readable"),
        Duration::from_secs(30),
        async || {
            let all = all_changes(s, tenant, filter).await;
            if all.len() >= n {
                Ok(all)
            } else {
                Err(all.len())
            }
        },
    )
    .await
}

/// The page after `after` once it holds a change (see [`settled`]).
async fn next_changes(
    s: &Services,
    tenant: TenantId,
    after: ChangePosition,
) -> leadline_ports::ChangeSpan {
    eventually("a change readable", Duration::from_secs(30), async || {
        let span = s
            .changes
            .page(tenant, Some(after), &ChangeFilter::default(), 10)
            .await
            .unwrap();
        if span.items.is_empty() {
            Err(span)
        } else {
            Ok(span)
        }
    })
    .await
}

fn types(changes: &[Value]) -> Vec<&str> {
    changes
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect()
}

async fn every_write_is_logged_in_order_with_its_entity(store: Store) {
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(tenant, &agent_req("ada@example.com"))
        .await
        .unwrap();
    let lead = s.leads.create(tenant, &lead_req("Grace")).await.unwrap();
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
    let approval = s
        .approvals
        .draft(
            tenant,
            lead.id,
            &DraftApprovalRequest {
                channel: Channel::Email,
                subject: None,
                body: MessageBody::new("Hello").unwrap(),
                requested_by: agent.id,
            },
        )
        .await
        .unwrap();
    for action in [
        ApprovalAction::Approve { by: agent.id },
        ApprovalAction::MarkSent { by: agent.id },
    ] {
        s.approvals.act(tenant, approval.id, &action).await.unwrap();
    }
    s.leads.delete(tenant, lead.id).await.unwrap();
    let restored = s.leads.restore(tenant, lead.id).await.unwrap();

    let all = settled(&s, tenant, &ChangeFilter::default(), 11).await;
    assert_eq!(
        types(&all),
        [
            "agent.created",
            "lead.created",
            "lead.updated",
            "event.recorded",
            "approval.drafted",
            "approval.approved",
            "event.recorded",
            "approval.sent",
            "event.recorded",
            "lead.deleted",
            "lead.restored",
        ]
    );
    // Each carries its entity as the API shows it, at that moment.
    assert_eq!(all[1]["data"], serde_json::to_value(&lead).unwrap());
    assert_eq!(all[2]["data"], serde_json::to_value(&moved).unwrap());
    assert_eq!(all[3]["data"]["kind"], EventKind::StatusChanged.as_str());
    assert_eq!(all[10]["data"], serde_json::to_value(&restored).unwrap());
    assert_eq!(all[9]["data"]["version"], json!(restored.version - 1));
    for c in &all {
        assert_eq!(
            c["entity"],
            c["type"].as_str().unwrap().split('.').next().unwrap()
        );
        assert_eq!(c["entity_id"], c["data"]["id"], "{c}");
    }
    // Positions only grow.
    let positions: Vec<ChangePosition> = all
        .iter()
        .map(|c| c["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // A filter keeps the order and drops the rest; an event append is
    // logged on the one-statement path as on the transaction path.
    let approvals = settled(&s, tenant, &ChangeFilter::parse("approval").unwrap(), 3).await;
    assert_eq!(
        types(&approvals),
        ["approval.drafted", "approval.approved", "approval.sent"]
    );
    let note = s
        .timeline
        .append(
            tenant,
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
        .unwrap();
    let after = next_changes(&s, tenant, *positions.last().unwrap()).await;
    assert_eq!(after.items.len(), 1);
    assert_eq!(after.items[0].change.kind, ChangeType::EventRecorded);
    assert_eq!(after.items[0].change.entity_id, note.id.as_uuid());
    assert_eq!(s.changes.head(tenant).await.unwrap(), after.last);
}

async fn a_tenant_reads_only_its_own_changes(store: Store) {
    let s = services(store);
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let mine = s.leads.create(a, &lead_req("Mine")).await.unwrap();
    let theirs = s.leads.create(b, &lead_req("Theirs")).await.unwrap();
    let seen = settled(&s, a, &ChangeFilter::default(), 1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["entity_id"], json!(mine.id));
    // Not even from B's own position.
    let b_head = s.changes.head(b).await.unwrap();
    let from_b = s
        .changes
        .page(
            a,
            Some(ChangePosition::default()),
            &ChangeFilter::default(),
            100,
        )
        .await
        .unwrap();
    assert!(
        from_b
            .items
            .iter()
            .all(|c| c.change.entity_id != theirs.id.as_uuid()),
        "{from_b:?} (B is at {b_head})"
    );
}

async fn retention_turns_a_passed_position_into_gone(store: Store) {
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    for name in ["One", "Two"] {
        s.leads.create(tenant, &lead_req(name)).await.unwrap();
    }
    let both = settled(&s, tenant, &ChangeFilter::default(), 2).await;
    let head: ChangePosition = both[1]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(s.changes.head(tenant).await.unwrap(), head);
    let removed = ChangeLog::prune(&store, chrono::Utc::now() + chrono::Duration::hours(1), 1)
        .await
        .unwrap();
    assert_eq!(removed, 1, "one batch of one");
    let removed = ChangeLog::prune(&store, chrono::Utc::now() + chrono::Duration::hours(1), 100)
        .await
        .unwrap();
    assert!(removed >= 1, "the rest");
    match store.after(tenant, ChangePosition::default(), 10).await {
        Err(ChangeLogError::Expired { horizon, .. }) => assert_eq!(horizon, head),
        other => panic!("expected Expired, got {other:?}"),
    }
    // From the present all is well, and a page without a position starts
    // at the oldest change kept.
    assert_eq!(s.changes.head(tenant).await.unwrap(), head);
    let page = s
        .changes
        .page(tenant, None, &ChangeFilter::default(), 10)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    let later = s.leads.create(tenant, &lead_req("Three")).await.unwrap();
    let page = next_changes(&s, tenant, head).await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].change.entity_id, later.id.as_uuid());
}

/// A transaction that started first but commits last must not be skipped:
/// while it runs, the changes committed after it are held back; once it
/// commits, both come, in log order.
#[tokio::test]
async fn postgres_a_change_committed_late_is_not_skipped() {
    let url = isolated_pg_url("leadline_changes_late").await;
    let store = store_at(&url).await;
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let start = s.changes.head(tenant).await.unwrap();

    let mut early = sqlx::PgConnection::connect(&url).await.unwrap();
    early.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut early)
        .await
        .unwrap();
    let slow = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO changes (tenant_id, type, entity_id, at, data) \
         VALUES ($1, 'event.recorded', $2, now(), '{}')",
    )
    .bind(tenant.as_uuid())
    .bind(slow)
    .execute(&mut early)
    .await
    .unwrap();

    let quick = s.leads.create(tenant, &lead_req("Quick")).await.unwrap();
    let held = s
        .changes
        .page(tenant, Some(start), &ChangeFilter::default(), 10)
        .await
        .unwrap();
    assert!(
        held.items.is_empty(),
        "the later commit waits behind the open transaction: {held:?}"
    );
    assert_eq!(held.last, start);

    early.execute("COMMIT").await.unwrap();
    // Other tests' transactions on the same server may hold the horizon a
    // moment longer: ask until both are past it.
    let both = eventually(
        "both changes readable",
        Duration::from_secs(30),
        async || {
            let span = s
                .changes
                .page(tenant, Some(start), &ChangeFilter::default(), 10)
                .await
                .unwrap();
            if span.items.len() == 2 {
                Ok(span)
            } else {
                Err(span)
            }
        },
    )
    .await;
    let ids: Vec<uuid::Uuid> = both.items.iter().map(|c| c.change.entity_id).collect();
    assert_eq!(
        ids,
        [slow, quick.id.as_uuid()],
        "both, the earlier transaction first"
    );
}

/// Under load: writers whose transactions overlap and commit out of order,
/// a follower reading all the while. What it read equals the whole log.
#[tokio::test]
async fn postgres_a_follower_reads_every_change_under_out_of_order_commits() {
    let url = isolated_pg_url("leadline_changes_load").await;
    let store = store_at(&url).await;
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let start = s.changes.head(tenant).await.unwrap();
    const WRITERS: usize = 12;
    const EACH: usize = 8;
    // Streams too: through the tenant's shared tail.
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let mut stream = Box::pin(s.changes.follow(tenant, start, ChangeFilter::default()));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < WRITERS * EACH {
                    seen.push(stream.next().await.unwrap().unwrap().position);
                }
                seen
            })
        })
        .collect();

    let follower = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = start;
            while seen.len() < WRITERS * EACH {
                let span = s
                    .changes
                    .page(tenant, Some(after), &ChangeFilter::default(), 7)
                    .await
                    .unwrap();
                after = span.last;
                seen.extend(span.items.into_iter().map(|c| c.position));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            for i in 0..EACH {
                conn.execute("BEGIN").await.unwrap();
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO changes (tenant_id, type, entity_id, at, data) \
                     VALUES ($1, 'event.recorded', gen_random_uuid(), now(), '{}')",
                )
                .bind(tenant.as_uuid())
                .execute(&mut conn)
                .await
                .unwrap();
                // Hold some transactions open while others commit.
                let hold = ((w * 7 + i * 13) % 5) as u64 * 3;
                sqlx::query("SELECT pg_sleep($1)")
                    .bind(hold as f64 / 1000.0)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.execute("COMMIT").await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower caught up")
        .unwrap();
    let whole = store
        .after(tenant, start, 10_000)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.position)
        .collect::<Vec<_>>();
    assert_eq!(whole.len(), WRITERS * EACH);
    assert_eq!(seen, whole, "read in order, nothing skipped, nothing twice");
    for stream in streams {
        let streamed = tokio::time::timeout(Duration::from_secs(30), stream)
            .await
            .expect("the stream caught up")
            .unwrap();
        assert_eq!(
            streamed, whole,
            "streamed in order, nothing skipped, nothing twice"
        );
    }
}

/// A running `leadline serve` on `database`, stopped on drop.
struct Serving {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Serving {
    async fn start(database: &str, changes: ChangeSettings) -> Self {
        let config = Config {
            database: StoreSettings {
                migration_url: Some(SecretString::from(database.to_owned())),
                ..StoreSettings::for_url(database)
            },
            changes,
            relay: leadline_app::RelaySettings {
                enabled: false,
                ..Default::default()
            },
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run::serve(&config, listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        let http = reqwest::Client::new();
        eventually("the server answers", Duration::from_secs(30), async || {
            http.get(format!("{base}/healthz")).send().await.map(drop)
        })
        .await;
        Self {
            base,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// An open SSE response, read line by line.
struct Stream {
    res: reqwest::Response,
    pending: String,
}

impl Stream {
    async fn open(base: &str, key: &str, last_event: Option<&str>) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/v1/changes?types=lead"))
            .header("authorization", format!("Bearer {key}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            res,
            pending: String::new(),
        }
    }

    /// The next line (without its newline), within `within`.
    async fn line(&mut self, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.pending.find('\n') {
                let line = self.pending[..i].to_owned();
                self.pending.drain(..=i);
                return line;
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .expect("a line in time")
                .unwrap()
                .expect("the stream stays open");
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event's `(id, type, data)`, skipping heartbeats.
    async fn event(&mut self, within: Duration) -> (String, String, Value) {
        let (mut id, mut kind, mut data) = (String::new(), String::new(), Value::Null);
        loop {
            let line = self.line(within).await;
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap();
            } else if line.is_empty() && !id.is_empty() {
                return (id, kind, data);
            }
        }
    }
}

async fn create_lead(base: &str, key: &str, first: &str) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/leads"))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"first_name": first, "last_name": "Streamer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

/// Over real HTTP on SQLite: a stream delivers changes as they commit,
/// sends heartbeats while idle, resumes after `Last-Event-ID` with exactly
/// what it missed, and a position retention passed is a 410 problem.
#[tokio::test]
async fn a_stream_delivers_resumes_and_keeps_alive() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/feed.db?mode=rwc", dir.path().display());
    let serving = Serving::start(
        &db,
        ChangeSettings {
            heartbeat_secs: 1,
            ..ChangeSettings::default()
        },
    )
    .await;
    let store = Store::connect(&StoreSettings::for_url(&db)).await.unwrap();
    let (_, key) = new_tenant(&services(store.clone())).await;

    let mut stream = Stream::open(&serving.base, &key, None).await;
    // Idle: a heartbeat comes first.
    let line = stream.line(Duration::from_secs(5)).await;
    assert!(line.starts_with(':'), "a comment line: {line:?}");
    let first = create_lead(&serving.base, &key, "First").await;
    let (id, kind, data) = stream.event(Duration::from_secs(5)).await;
    assert_eq!(kind, "lead.created");
    assert_eq!(data["type"], "lead.created");
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["data"], first);
    drop(stream);

    // Missed while away, then resumed: exactly what came after.
    let second = create_lead(&serving.base, &key, "Second").await;
    let mut stream = Stream::open(&serving.base, &key, Some(&id)).await;
    let (_, kind, data) = stream.event(Duration::from_secs(5)).await;
    assert_eq!((kind.as_str(), &data["data"]), ("lead.created", &second));
    drop(stream);

    // A malformed Last-Event-ID names itself; a passed one is gone.
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{}/v1/changes", serving.base))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Last-Event-ID");
    // A position past the end of the log (a restored database) is gone too,
    // rather than a silent wait for changes that will never come.
    for accept in ["text/event-stream", "application/json"] {
        let res = http
            .get(format!("{}/v1/changes?after=0-999999", serving.base))
            .header("authorization", format!("Bearer {key}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 410, "ahead, {accept}");
    }
    ChangeLog::prune(
        &store,
        chrono::Utc::now() + chrono::Duration::hours(1),
        1000,
    )
    .await
    .unwrap();
    for accept in ["text/event-stream", "application/json"] {
        let res = http
            .get(format!("{}/v1/changes?after=0-0", serving.base))
            .header("authorization", format!("Bearer {key}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 410, "{accept}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{accept}"
        );
    }
    // Shutting down ends open streams at once instead of waiting out the
    // grace period (20 s by default) for them.
    let mut open = Stream::open(&serving.base, &key, None).await;
    let started = std::time::Instant::now();
    serving.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.res.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended with the server");
    store.close().await;
}

/// Two instances on one PostgreSQL database: a follower on B sees a write
/// made through A promptly, woken by NOTIFY (B's own poll is a minute).
#[tokio::test]
async fn postgres_a_follower_on_one_instance_sees_a_write_through_another() {
    let url = isolated_pg_url("leadline_changes_two").await;
    let a = Serving::start(&url, ChangeSettings::default()).await;
    let b = Serving::start(
        &url,
        ChangeSettings {
            poll_ms: 60_000,
            ..ChangeSettings::default()
        },
    )
    .await;
    let store = store_at(&url).await;
    let (_, key) = new_tenant(&services(store.clone())).await;
    // Both instances listen (serve starts its listener at once).
    let db = url.rsplit('/').next().unwrap().to_owned();
    let admin = leadline_testsupport::postgres().admin_url(&db);
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    eventually(
        "two instances LISTEN",
        Duration::from_secs(30),
        async || {
            let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
        )
        .bind(&db)
        .fetch_one(&mut conn)
        .await
        .unwrap();
            if n >= 2 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    let mut stream = Stream::open(&b.base, &key, None).await;
    let started = std::time::Instant::now();
    let lead = create_lead(&a.base, &key, "Elsewhere").await;
    let (_, kind, data) = stream.event(Duration::from_secs(10)).await;
    assert_eq!((kind.as_str(), &data["data"]), ("lead.created", &lead));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken, not polled: {:?}",
        started.elapsed()
    );
    drop(stream);
    store.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_json_page_answers_filters_and_bad_input_as_problems() {
    let store = sqlite_store().await;
    let s = services(store);
    let (tenant, key) = new_tenant(&s).await;
    s.leads.create(tenant, &lead_req("Paged")).await.unwrap();
    let app = leadline_http::router(leadline_http::AppState::new(s));
    let call = |uri: &str| {
        let app = app.clone();
        let uri = uri.to_owned();
        let key = key.clone();
        async move {
            use tower::ServiceExt;
            let res = app
                .oneshot(
                    axum::http::Request::get(uri)
                        .header("authorization", format!("Bearer {key}"))
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, page) = call("/v1/changes").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["type"], "lead.created");
    assert_eq!(page["has_more"], false);
    let next = page["next_after"].as_str().unwrap().to_owned();
    let (_, rest) = call(&format!("/v1/changes?after={next}")).await;
    assert_eq!(rest["items"], json!([]));
    assert_eq!(rest["next_after"], next.as_str());
    let (_, none) = call("/v1/changes?types=agent").await;
    assert_eq!(none["items"], json!([]));
    for (uri, field) in [
        ("/v1/changes?types=lead.exploded", "types"),
        ("/v1/changes?after=1", "after"),
        ("/v1/changes?limit=0", "limit"),
        ("/v1/changes?limit=1001", "limit"),
    ] {
        let (status, problem) = call(uri).await;
        assert_eq!(status, 422, "{uri}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{uri}");
    }
}
