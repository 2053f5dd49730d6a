//! The outbound phases of `cargo xtask bench`: how fast the delivery relay
//! inside `leadline serve` empties the outbox (email to a local SMTP sink,
//! texts to a local webhook receiver), and how the change feed fans one
//! write out to many Server-Sent Events subscribers on one instance.
//!
//! Relay throughput. A tenant of its own gets `messages` sent emails and
//! as many sent texts (drafted, approved and sent through the app's
//! services), held back (`next_attempt_at` a day ahead) while `serve`
//! starts with `smtp.url` and `webhooks.secret_key` set. Then one channel's
//! rows are made due in one UPDATE and the outbox is watched until every
//! one is `delivered`; the rate is counted from the first delivery seen to
//! the last (the relay's poll interval before the first is not its
//! throughput). The sink is aiosmtpd (the tests' SMTP server, one Python
//! process); the receiver is an axum handler in this process answering 204.
//!
//! Fan-out. `subscribers` streams follow `GET /v1/changes?types=lead.updated`
//! of the tenant; then `writes` leads are PATCHed, one every 50 ms, each
//! send time noted before the request leaves; every subscriber notes when
//! each change arrives. Write-to-delivery is arrival minus send, over every
//! (subscriber, write) pair. Memory per subscriber is the server's RSS
//! growth with the subscribers connected, divided by their number.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, StatusCode,
    body::Bytes,
    header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue},
};
use leadline_domain::{
    AgentId, AgentRole, ApprovalAction, ChangeFilter, Channel, CreateAgentRequest,
    CreateLeadRequest, CreateTenantRequest, CreateWebhookRequest, DisplayName,
    DraftApprovalRequest, Email, LeadId, LeadStatus, MessageBody, MessageChannels, Metadata,
    PersonName, Phone, Slug, Subject, Tags, TenantId, WebhookUrl,
};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::time::Instant;

use super::{
    CacheMode, Env,
    infra::{self, CommandLog},
    load::{self, Request},
};

/// One channel's relay run.
#[derive(Debug, Clone)]
pub struct RelayRun {
    /// `email` or `sms`.
    pub channel: &'static str,
    /// Where to.
    pub destination: &'static str,
    /// Messages delivered.
    pub messages: u64,
    /// From the first delivery seen to the last, seconds.
    pub secs: f64,
    /// Messages per second over that span.
    pub rate: f64,
}

/// The fan-out run.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// Streams connected.
    pub subscribers: usize,
    /// Writes made.
    pub writes: usize,
    /// (subscriber, write) pairs that arrived.
    pub delivered: u64,
    /// Pairs that had not arrived 30 s after the last write.
    pub missing: u64,
    /// Write-to-delivery, ms.
    pub p50_ms: f64,
    /// Write-to-delivery, ms.
    pub p99_ms: f64,
    /// Write-to-delivery, ms.
    pub max_ms: f64,
    /// Server RSS before the subscribers connected, KiB.
    pub rss_before_kib: u64,
    /// With them connected and idle, KiB.
    pub rss_connected_kib: u64,
    /// After the writes reached them, KiB.
    pub rss_after_kib: u64,
}

impl FanOut {
    /// RSS growth per connected subscriber, KiB.
    #[must_use]
    pub fn per_subscriber_kib(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64
            / self.subscribers.max(1) as f64
    }
}

/// What the outbound phases measured.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// Relay throughput, per channel.
    pub relay: Vec<RelayRun>,
    /// Change-feed fan-out.
    pub fan_out: Option<FanOut>,
    /// The relay settings in force (their defaults).
    pub relay_settings: String,
}

/// Sizes of the outbound phases.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Sent messages per channel.
    pub messages: u64,
    /// Fan-out subscribers.
    pub subscribers: usize,
    /// Fan-out writes.
    pub writes: usize,
}

/// The bench tenant of this phase, seeded through the app's services.
struct Seeded {
    bearer: String,
    tenant: TenantId,
    leads: Vec<LeadId>,
}

const SLUG: &str = "bench-outbound";
/// Leads the messages go to (each gets many).
const LEADS: usize = 200;

/// Runs both phases.
///
/// # Errors
/// Anything that stops them (a sink that does not start, a service that
/// does not answer, a delivery that never completes).
pub async fn run(
    env: &mut Env<'_>,
    owner_url: &str,
    admin: &PgPool,
    sizes: Sizes,
    log: &mut CommandLog,
) -> anyhow::Result<Outbound> {
    let key = base64::engine::general_purpose::STANDARD.encode([42_u8; 32]);
    let sink = tokio::task::spawn_blocking(|| {
        leadline_testsupport::SmtpServer::start(leadline_testsupport::SmtpOptions {
            discard: true,
            ..leadline_testsupport::SmtpOptions::default()
        })
    })
    .await
    .context("starting the SMTP sink panicked")??;
    log.note(format!(
        "SMTP sink: aiosmtpd from leadline-testsupport on 127.0.0.1:{} (one Python process, --discard: accepts and keeps nothing)",
        sink.port()
    ));
    let received = Arc::new(AtomicU64::new(0));
    let receiver = receiver(received.clone()).await?;
    log.note(format!(
        "webhook receiver: an axum handler in the xtask process on {receiver}, answering 204"
    ));
    eprintln!(
        "bench: outbound: sending {} emails and {} texts",
        sizes.messages, sizes.messages
    );
    let seeded = seed(owner_url, &key, receiver, sizes.messages).await?;
    // Held back until the relay is up: each channel is then released at once.
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = now() + interval '1 day' \
         WHERE tenant_id = $1 AND status = 'pending'",
    )
    .bind(seeded.tenant.as_uuid())
    .execute(admin)
    .await?;
    let extra = [
        ("LEADLINE_SMTP__URL", sink.url()),
        ("LEADLINE_SMTP__FROM", "bench@leadline.example".to_owned()),
        ("LEADLINE_WEBHOOKS__SECRET_KEY", key),
        (
            "LEADLINE_WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            "true".to_owned(),
        ),
    ];
    let server = env.serve_with(&CacheMode::Off, &extra, log).await?;
    let mut outbound = Outbound {
        relay_settings: "relay.batch 100, relay.concurrency 8, smtp.pool_max 4 (the defaults)"
            .to_owned(),
        ..Outbound::default()
    };
    for (channel, destination) in [
        ("email", "SMTP sink (aiosmtpd, discarding)"),
        ("sms", "webhook receiver (axum, 204)"),
    ] {
        let run = drain(admin, seeded.tenant, channel, sizes.messages).await?;
        eprintln!(
            "bench:   relay {channel:<5} {} messages in {:.2} s: {:.0} messages/s",
            run.messages, run.secs, run.rate
        );
        outbound.relay.push(RelayRun { destination, ..run });
    }
    let posted = received.load(Ordering::Relaxed);
    if posted < sizes.messages {
        bail!("the receiver saw {posted} of {} texts", sizes.messages);
    }
    eprintln!(
        "bench: outbound: {} subscribers on /v1/changes, {} writes",
        sizes.subscribers, sizes.writes
    );
    outbound.fan_out = Some(fan_out(&server, &seeded, sizes).await?);
    drop(server);
    drop(sink);
    Ok(outbound)
}

/// A webhook receiver in this process: counts and answers 204.
async fn receiver(count: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/texts",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A tenant with an agent, [`LEADS`] leads, an endpoint for texts, and
/// `messages` sent emails and texts.
async fn seed(
    owner_url: &str,
    key: &str,
    receiver: SocketAddr,
    messages: u64,
) -> anyhow::Result<Seeded> {
    let settings = leadline_store::StoreSettings {
        url: SecretString::from(owner_url.to_owned()),
        ..leadline_store::StoreSettings::default()
    };
    let composition = leadline::compose(&settings, false).await?;
    let mut s = composition.services.clone();
    let sealer = leadline_outbound::ChaChaBox::from_base64(key)
        .map_err(|e| anyhow::anyhow!("the bench's sealing key: {e}"))?;
    s.webhooks = s.webhooks.clone().with_sealer(Arc::new(sealer));
    let created = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(SLUG)?,
            name: DisplayName::new("Bench outbound")?,
        })
        .await?;
    let tenant = created.tenant.id;
    // One agent drafts and sends every message: what is measured is the
    // relay, not the rule that keeps a drafter from approving.
    s.tenants.set_separation_of_duties(tenant, false).await?;
    let agent = s
        .agents
        .create(
            tenant,
            &CreateAgentRequest {
                name: DisplayName::new("Relay Bench")?,
                email: Email::parse("relay.bench@leadline.example")?,
                role: AgentRole::Agent,
            },
        )
        .await?
        .id;
    let mut leads = Vec::with_capacity(LEADS);
    for n in 0..LEADS {
        let lead = s
            .leads
            .create(
                tenant,
                &CreateLeadRequest {
                    first_name: PersonName::new(&format!("Outbound{n}"))?,
                    last_name: PersonName::new("Bench")?,
                    email: Some(Email::parse(&format!("outbound{n}@example.com"))?),
                    phone: Some(Phone::parse(&format!("+1 555 01{n:02}"))?),
                    company: None,
                    source: None,
                    status: LeadStatus::New,
                    assigned_agent_id: None,
                    tags: Tags::default(),
                    metadata: Metadata::default(),
                },
            )
            .await?;
        leads.push(lead.id);
    }
    s.webhooks
        .create(
            tenant,
            &CreateWebhookRequest {
                url: WebhookUrl::parse(&format!("http://{receiver}/texts"))?,
                types: ChangeFilter::default(),
                changes: false,
                channels: MessageChannels::new([Channel::Sms])?,
                active: true,
            },
        )
        .await?;
    let jobs = (0..messages * 2).map(|n| {
        let s = &s;
        let lead = leads[usize::try_from(n).unwrap_or(0) % LEADS];
        let channel = if n % 2 == 0 {
            Channel::Email
        } else {
            Channel::Sms
        };
        async move { send(s, tenant, agent, lead, channel, n).await }
    });
    let mut stream = futures::stream::iter(jobs).buffer_unordered(16);
    while let Some(result) = stream.next().await {
        result?;
    }
    drop(stream);
    composition.shutdown().await;
    Ok(Seeded {
        bearer: format!("Bearer {}", created.api_key.expose()),
        tenant,
        leads,
    })
}

/// Drafts, approves and sends one message.
async fn send(
    s: &leadline_app::Services,
    tenant: TenantId,
    agent: AgentId,
    lead: LeadId,
    channel: Channel,
    n: u64,
) -> anyhow::Result<()> {
    let draft = s
        .approvals
        .draft(
            tenant,
            lead,
            &DraftApprovalRequest {
                channel,
                subject: (channel == Channel::Email)
                    .then(|| Subject::new(&format!("Following up ({n})")))
                    .transpose()?,
                body: MessageBody::new(&format!(
                    "Hello,\n\nthis is message {n} of the relay benchmark.\n\nThe bench"
                ))?,
                requested_by: agent,
            },
        )
        .await?;
    for action in [
        ApprovalAction::Approve { by: agent },
        ApprovalAction::MarkSent { by: agent },
    ] {
        s.approvals.act(tenant, draft.id, &action).await?;
    }
    Ok(())
}

/// Makes `channel`'s rows due and waits until all `expected` are delivered.
async fn drain(
    admin: &PgPool,
    tenant: TenantId,
    channel: &'static str,
    expected: u64,
) -> anyhow::Result<RelayRun> {
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = now() \
         WHERE tenant_id = $1 AND status = 'pending' AND channel = $2",
    )
    .bind(tenant.as_uuid())
    .bind(channel)
    .execute(admin)
    .await?;
    let count = || async {
        let (delivered, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'delivered'), \
                    count(*) FILTER (WHERE status IN ('failed', 'dead')) \
             FROM outbox WHERE tenant_id = $1 AND channel = $2",
        )
        .bind(tenant.as_uuid())
        .bind(channel)
        .fetch_one(admin)
        .await?;
        anyhow::Ok((
            u64::try_from(delivered).unwrap_or(0),
            u64::try_from(failed).unwrap_or(0),
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let (delivered, failed) = count().await?;
        let now = Instant::now();
        if failed > 0 {
            bail!("{failed} {channel} deliveries failed");
        }
        if delivered > 0 && first.is_none() {
            first = Some((now, delivered));
        }
        if delivered >= expected {
            let (since, already) = first.unwrap_or((now, 0));
            let secs = now.duration_since(since).as_secs_f64();
            let messages = expected - already;
            return Ok(RelayRun {
                channel,
                destination: "",
                messages: expected,
                secs,
                rate: messages as f64 / secs.max(1e-3),
            });
        }
        if now > deadline {
            bail!("{delivered} of {expected} {channel} deliveries after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the subscribers share: when each lead was written.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

async fn fan_out(server: &infra::Process, seeded: &Seeded, sizes: Sizes) -> anyhow::Result<FanOut> {
    let addr = server.addr;
    let auth = HeaderValue::from_str(&seeded.bearer)?;
    let writes = sizes.writes.min(seeded.leads.len());
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let connected = Arc::new(AtomicUsize::new(0));
    let rss_before_kib = server.rss_kib()?;
    let mut subscribers = Vec::with_capacity(sizes.subscribers);
    for _ in 0..sizes.subscribers {
        subscribers.push(tokio::spawn(subscribe(
            addr,
            auth.clone(),
            sent.clone(),
            connected.clone(),
            writes,
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < sizes.subscribers {
        if Instant::now() > deadline {
            bail!(
                "{} of {} subscribers connected after 60 s",
                connected.load(Ordering::Relaxed),
                sizes.subscribers
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Settled: every stream has read the log once and waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected_kib = server.rss_kib()?;
    let mut writer = load::connect(addr).await?;
    for lead in seeded.leads.iter().take(writes) {
        let path = format!("/v1/leads/{lead}");
        let (status, body) = load::send(
            &mut writer,
            addr,
            Request::get(path.clone(), Some(auth.clone())),
        )
        .await?;
        if status != StatusCode::OK {
            bail!("GET {path} answered {status}");
        }
        let version = serde_json::from_slice::<serde_json::Value>(&body)?["version"].clone();
        let patch = serde_json::json!({"version": version, "company": "Fan-out Ltd"});
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(lead.to_string(), Instant::now());
        let (status, body) = load::send(
            &mut writer,
            addr,
            Request {
                method: Method::PATCH,
                path: path.clone(),
                auth: Some(auth.clone()),
                body: Some(Bytes::from(patch.to_string())),
                expect: StatusCode::OK,
            },
        )
        .await?;
        if status != StatusCode::OK {
            bail!(
                "PATCH {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut delivered = 0;
    let mut missing = 0;
    for subscriber in subscribers {
        let latencies = tokio::time::timeout(Duration::from_secs(30), subscriber)
            .await
            .unwrap_or_else(|_| Ok(Ok(Vec::new())))
            .context("a subscriber panicked")??;
        delivered += latencies.len() as u64;
        missing += (writes - latencies.len().min(writes)) as u64;
        for micros in latencies {
            histogram.record(micros.clamp(1, 60_000_000))?;
        }
    }
    let rss_after_kib = server.rss_kib()?;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(FanOut {
        subscribers: sizes.subscribers,
        writes,
        delivered,
        missing,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
        rss_before_kib,
        rss_connected_kib,
        rss_after_kib,
    })
}

/// One subscriber: follows the feed until `expected` writes arrived, and
/// returns each one's write-to-delivery in microseconds.
async fn subscribe(
    addr: SocketAddr,
    auth: HeaderValue,
    sent: Sent,
    connected: Arc<AtomicUsize>,
    expected: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut sender = load::connect(addr).await?;
    sender.ready().await?;
    let request = hyper::Request::builder()
        .method(Method::GET)
        .uri("/v1/changes?types=lead.updated")
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, auth)
        .header(ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        bail!("GET /v1/changes answered {}", response.status());
    }
    connected.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let Some(frame) = body.frame().await else {
            bail!("the stream ended");
        };
        let arrived = Instant::now();
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(json) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let change: serde_json::Value = serde_json::from_str(json.trim())?;
            let Some(entity) = change["entity_id"].as_str() else {
                continue;
            };
            let at = sent
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .get(entity)
                .copied();
            if let Some(at) = at {
                latencies.push(u64::try_from(arrived.duration_since(at).as_micros()).unwrap_or(0));
            }
        }
    }
    Ok(latencies)
}

impl Outbound {
    /// The report's section.
    #[must_use]
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut md = String::from("\n## Outbound: the relay and the change feed\n\n");
        if !self.relay.is_empty() {
            let _ = writeln!(
                md,
                "Delivery relay inside `leadline serve` (PostgreSQL; {}), one channel at a \
                 time, its whole queue due at once, counted from the first delivery to the \
                 last:\n\n| channel | to | messages | seconds | messages/s |\n|---|---|---:|---:|---:|",
                self.relay_settings
            );
            for run in &self.relay {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.2} | {:.0} |",
                    run.channel, run.destination, run.messages, run.secs, run.rate
                );
            }
            let _ = writeln!(
                md,
                "\nEach delivery is claimed under a lease, attempted, and recorded with its \
                 attempt row in its own transaction (and, when final, its timeline event). \
                 The SMTP sink is one Python process (aiosmtpd) that keeps nothing and \
                 takes a message in 0.6 ms from `smtplib` on one connection. What bounds \
                 email is lettre 0.11.23 (the latest release): it leaves Nagle's algorithm \
                 on and writes a message's closing `.` apart from its body, so each \
                 message waits for the server's delayed ACK (up to 40 ms on Linux) on its \
                 connection; fixed upstream (lettre pull request 1159, merged, not yet \
                 released). Until then throughput scales with `smtp.pool_max` (and \
                 `relay.concurrency` at least as large). Texts show the relay's own cost: \
                 the same claim, attempt and record per message, to a receiver that answers \
                 at once."
            );
        }
        if let Some(f) = &self.fan_out {
            let _ = writeln!(
                md,
                "\nChange feed: {} subscribers on one `leadline serve` (`GET /v1/changes` as \
                 Server-Sent Events, `types=lead.updated`), {} leads PATCHed one every 50 ms; \
                 write-to-delivery is from just before the PATCH left to the change's arrival \
                 at each subscriber, over every (subscriber, write) pair:\n\n\
                 | | |\n|---|---:|\n\
                 | delivered | {} of {} ({} missing) |\n\
                 | p50 | {:.1} ms |\n| p99 | {:.1} ms |\n| max | {:.1} ms |\n\
                 | server RSS before / connected / after the writes | {:.1} / {:.1} / {:.1} MiB |\n\
                 | memory per subscriber (connected) | {:.1} KiB |",
                f.subscribers,
                f.writes,
                f.delivered,
                f.subscribers as u64 * f.writes as u64,
                f.missing,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                f.rss_before_kib as f64 / 1024.0,
                f.rss_connected_kib as f64 / 1024.0,
                f.rss_after_kib as f64 / 1024.0,
                f.per_subscriber_kib()
            );
        }
        md
    }
}
