//! The lead-context cache across two app instances sharing PostgreSQL and
//! Redis: coherence after writes, the stale re-insert race, a broken
//! invalidation subscription, Redis stopped, PostgreSQL stopped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use leadline::Composition;
use leadline_app::{RecallSettings, Services};
use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_domain::{CompanyName, LeadId, TenantId, UpdateLeadRequest};
use leadline_store::Store;

use crate::support::{agent_req, eventually, lead_req, new_tenant, pg_store};

fn cache_settings(redis_url: &str) -> CacheSettings {
    CacheSettings {
        redis_url: Some(redis_url.to_owned()),
        ..CacheSettings::default()
    }
}

/// An app instance, and its cache for asking whether it listens to Redis.
async fn instance(store: Store, redis_url: &str) -> (Services, Arc<TwoTierCache>) {
    let cache = Arc::new(
        TwoTierCache::connect(&cache_settings(redis_url))
            .await
            .expect("cache starts"),
    );
    let services =
        Composition::from_parts(store, cache.clone(), RecallSettings::default()).services;
    (services, cache)
}

struct Pair {
    a: Services,
    b: Services,
    caches: [Arc<TwoTierCache>; 2],
    tenant: TenantId,
    lead: LeadId,
}

impl Pair {
    /// Whether both instances are subscribed to Redis's invalidations.
    fn subscribed(&self) -> [bool; 2] {
        self.caches.each_ref().map(|c| c.subscribed())
    }
}

async fn pair(redis_url: &str) -> Pair {
    let (a, cache_a) = instance(pg_store().await, redis_url).await;
    let (b, cache_b) = instance(pg_store().await, redis_url).await;
    let (tenant, _) = new_tenant(&a).await;
    let agent = a
        .agents
        .create(tenant, &agent_req("coh@example.com"))
        .await
        .unwrap();
    let mut req = lead_req("Coherent");
    req.assigned_agent_id = Some(agent.id);
    let lead = a.leads.create(tenant, &req).await.unwrap().id;
    Pair {
        a,
        b,
        caches: [cache_a, cache_b],
        tenant,
        lead,
    }
}

async fn company_on(s: &Services, tenant: TenantId, lead: LeadId) -> Option<String> {
    s.context
        .context(tenant, lead)
        .await
        .unwrap()
        .parse()
        .unwrap()
        .lead
        .company
        .as_ref()
        .map(ToString::to_string)
}

async fn set_company(s: &Services, tenant: TenantId, lead: LeadId, name: &str) {
    let version = s.leads.get(tenant, lead).await.unwrap().version;
    let req = UpdateLeadRequest {
        expected_version: version,
        company: Some(Some(CompanyName::new(name).unwrap())),
        ..Default::default()
    };
    s.leads.update(tenant, lead, &req).await.unwrap();
}

/// Reads the context on `s` until it shows `expected` (within `bound`),
/// returning how long it took.
async fn until_seen(
    s: &Services,
    tenant: TenantId,
    lead: LeadId,
    expected: &str,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    eventually(
        &format!("B shows company {expected:?}"),
        bound,
        async || match company_on(s, tenant, lead).await {
            seen if seen.as_deref() == Some(expected) => Ok(()),
            stale => Err(stale),
        },
    )
    .await;
    start.elapsed()
}

#[tokio::test]
async fn a_write_on_one_instance_reaches_the_other_and_the_time_is_measured() {
    let p = pair(&leadline_testsupport::redis().url()).await;
    let mut times = Vec::new();
    for i in 0..30 {
        // B holds the context in L1 (and L2) before every write.
        company_on(&p.b, p.tenant, p.lead).await;
        let name = format!("Company {i}");
        set_company(&p.a, p.tenant, p.lead, &name).await;
        times.push(until_seen(&p.b, p.tenant, p.lead, &name, Duration::from_secs(2)).await);
    }
    times.sort();
    eprintln!(
        "invalidation propagation A -> B over {} writes: p50 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let stats = p.b.context.cache_stats();
    assert!(stats.invalidations_received >= 30, "{stats:?}");
    assert!(stats.l1.hits + stats.l2.hits > 0, "{stats:?}");
}

// Several worker threads: readers that hit L1 complete without ever
// waiting, and must not starve the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_context_survives_writes_under_concurrent_reads() {
    let p = Arc::new(pair(&leadline_testsupport::redis().url()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    // Readers on B keep loading and re-caching the context while A writes,
    // which is what it takes for a loader that read before a write to try to
    // put its old value back after the write's invalidation.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (p, stop, reads) = (p.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    p.b.context.context(p.tenant, p.lead).await.unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut last = String::new();
    for i in 0..40 {
        last = format!("Race {i}");
        set_company(&p.a, p.tenant, p.lead, &last).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The last write reaches B while the readers still reload around it…
    until_seen(&p.b, p.tenant, p.lead, &last, Duration::from_secs(5)).await;
    // …and once they have stopped, no reader that read before it has put an
    // older context back: both instances agree with the database.
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        company_on(&p.b, p.tenant, p.lead).await.as_deref(),
        Some(last.as_str()),
        "B"
    );
    assert_eq!(
        company_on(&p.a, p.tenant, p.lead).await.as_deref(),
        Some(last.as_str()),
        "A"
    );
    eprintln!(
        "stale re-insert hunt: {} concurrent reads on B during 40 writes on A",
        reads.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_killed_subscription_leaves_no_stale_context() {
    let redis = leadline_testsupport::OwnedRedisServer::start().unwrap();
    let p = pair(&redis.url()).await;
    assert_eq!(company_on(&p.b, p.tenant, p.lead).await, None);
    // Kill B's (and A's) pub/sub connections, then write at once: the
    // invalidation may be published while B is not listening.
    kill_pubsub_clients(&redis.url()).await;
    set_company(&p.a, p.tenant, p.lead, "After the blip").await;
    until_seen(
        &p.b,
        p.tenant,
        p.lead,
        "After the blip",
        Duration::from_secs(5),
    )
    .await;
}

async fn kill_pubsub_clients(url: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("redis://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n")
        .await
        .unwrap();
    let mut reply = [0u8; 64];
    let n = conn.read(&mut reply).await.unwrap();
    assert!(
        reply[..n].starts_with(b":"),
        "CLIENT KILL answered {:?}",
        String::from_utf8_lossy(&reply[..n])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_mid_test_fails_no_request() {
    let mut redis = leadline_testsupport::OwnedRedisServer::start().unwrap();
    let p = Arc::new(pair(&redis.url()).await);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (p, failures, done, writes, stop) = (
                p.clone(),
                failures.clone(),
                done.clone(),
                writes.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ok = if w == 0 && i % 5 == 0 {
                        let version = p.a.leads.get(p.tenant, p.lead).await.map(|l| l.version);
                        match version {
                            Ok(v) => {
                                let req = UpdateLeadRequest {
                                    expected_version: v,
                                    ..Default::default()
                                };
                                writes.fetch_add(1, Ordering::Relaxed);
                                // A lost version race is a business answer, not a failure.
                                !matches!(
                                    p.a.leads.update(p.tenant, p.lead, &req).await,
                                    Err(leadline_ports::UpdateLeadError::Unavailable(_)
                                        | leadline_ports::UpdateLeadError::Unknown(_))
                                )
                            }
                            Err(_) => false,
                        }
                    } else {
                        let s = if w % 2 == 0 { &p.a } else { &p.b };
                        s.context.context(p.tenant, p.lead).await.is_ok()
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    // Requests before, during and after the outage: each phase lasts until
    // the workers have got through a number of reads and of writes (whose
    // invalidations and reloads are what meets Redis), however long it takes.
    let served_more = async |what: &str, reads: usize, more_writes: usize| {
        let target = (
            done.load(Ordering::Relaxed) + reads,
            writes.load(Ordering::Relaxed) + more_writes,
        );
        eventually(what, Duration::from_secs(20), async || {
            let now = (done.load(Ordering::Relaxed), writes.load(Ordering::Relaxed));
            if now.0 >= target.0 && now.1 >= target.1 {
                Ok(())
            } else {
                Err(now)
            }
        })
        .await;
    };
    served_more("requests before the outage", 50, 5).await;
    let errors_before = p.a.context.cache_stats().l2.errors;
    redis.stop().unwrap();
    let stopped = Instant::now();
    eventually(
        "both instances notice that Redis is gone",
        Duration::from_secs(5),
        async || match p.subscribed() {
            [false, false] => Ok(()),
            still => Err(still),
        },
    )
    .await;
    served_more("requests while Redis is down", 200, 10).await;
    assert!(
        p.a.context.cache_stats().l2.errors > errors_before,
        "the requests met the outage"
    );
    redis.restart().unwrap();
    let outage = stopped.elapsed();
    eventually(
        "both instances subscribe again",
        Duration::from_secs(10),
        async || match p.subscribed() {
            [true, true] => Ok(()),
            still => Err(still),
        },
    )
    .await;
    served_more("requests after Redis is back", 200, 10).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    eprintln!(
        "with Redis stopped for {outage:?}: {} requests, {} failed",
        done.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    // Coherence resumes once Redis is back.
    set_company(&p.a, p.tenant, p.lead, "Back").await;
    until_seen(&p.b, p.tenant, p.lead, "Back", Duration::from_secs(10)).await;
}

/// PostgreSQL stopped under a running instance: cached contexts are still
/// served (stale-if-error once past freshness), uncached ones get a 503
/// problem with Retry-After, and service resumes by itself once PostgreSQL
/// is back.
#[tokio::test]
async fn postgres_stopped_serves_cached_contexts_and_recovers() {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use leadline_store::{MigrateOp, StoreSettings};
    use secrecy::SecretString;
    use tower::ServiceExt;

    let mut pg = leadline_testsupport::OwnedPgServer::start().unwrap();
    pg.admin_execute(
        "postgres",
        "CREATE ROLE owner_down LOGIN CREATEROLE PASSWORD 'owner-down-pw'",
    )
    .await
    .unwrap();
    let db = pg
        .create_database("leadline_down", Some("owner_down"))
        .await
        .unwrap();
    let owner = Store::connect_for_migrations(
        &pg.url("owner_down", "owner-down-pw", &db),
        &StoreSettings::default(),
    )
    .await
    .unwrap();
    owner.migrate(MigrateOp::Up).await.unwrap();
    owner
        .ensure_service_login(
            "app_down",
            &SecretString::from("app-down-password".to_owned()),
        )
        .await
        .unwrap();
    owner.close().await;

    let settings = StoreSettings {
        max_connections: 4,
        acquire_timeout_ms: 500,
        ..StoreSettings::for_url(&pg.url("app_down", "app-down-password", &db))
    };
    let store = Store::connect(&settings).await.unwrap();
    // Fresh for one second, then servable for a minute if the store fails.
    let cache = CacheSettings {
        l1_ttl_secs: 1,
        stale_if_error_secs: 60,
        ..CacheSettings::default()
    };
    let cache = TwoTierCache::connect(&cache).await.unwrap();
    let services =
        Composition::from_parts(store, Arc::new(cache), RecallSettings::default()).services;
    let created = services
        .tenants
        .create(&leadline_domain::CreateTenantRequest {
            slug: leadline_domain::Slug::parse(&crate::support::unique_slug("down")).unwrap(),
            name: leadline_domain::DisplayName::new("Down Inc").unwrap(),
        })
        .await
        .unwrap();
    let tenant = created.tenant.id;
    let cached = services
        .leads
        .create(tenant, &lead_req("Cached"))
        .await
        .unwrap()
        .id;
    let uncached = services
        .leads
        .create(tenant, &lead_req("Uncached"))
        .await
        .unwrap()
        .id;
    let app = leadline_http::router(leadline_http::AppState::new(services.clone()));
    let key = created.api_key.expose().to_owned();
    let get = |lead: LeadId| {
        let (app, key) = (app.clone(), key.clone());
        async move {
            let req = Request::get(format!("/v1/leads/{lead}/context"))
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let retry_after = res.headers().get("retry-after").cloned();
            let body: serde_json::Value =
                serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            (status, retry_after, body)
        }
    };
    assert_eq!(get(cached).await.0, 200);

    pg.stop().unwrap();
    // Ask for the cached context until its copy is past freshness (one
    // second), which shows as the first stale copy served: every answer on
    // the way is the lead, fresh or stale, never an error.
    eventually(
        "the cached context is served stale",
        Duration::from_secs(5),
        async || {
            let ctx = services
                .context
                .context(tenant, cached)
                .await
                .expect("the cached context is served while PostgreSQL is down")
                .parse()
                .unwrap();
            assert_eq!(ctx.lead.id, cached);
            match services.context.cache_stats().stale_served {
                0 => Err("still fresh"),
                _ => Ok(()),
            }
        },
    )
    .await;
    let started = Instant::now();
    let stale_before = services.context.cache_stats().stale_served;
    let (status, _, body) = get(cached).await;
    // The key was verified a moment ago and the context is cached: the
    // request is answered without PostgreSQL, from the stale copy.
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lead"]["id"], serde_json::json!(cached));
    assert_eq!(
        services.context.cache_stats().stale_served,
        stale_before + 1,
        "the request was answered from the stale copy"
    );
    let err = services
        .context
        .context(tenant, uncached)
        .await
        .expect_err("nothing cached, store down");
    assert!(
        matches!(err, leadline_ports::GetLeadError::Unavailable(_)),
        "{err:?}"
    );
    let (status, retry_after, body) = get(uncached).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(body["type"], "urn:leadline:problem:unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, does not hang: {:?}",
        started.elapsed()
    );

    pg.restart().unwrap();
    let body = eventually(
        "service resumes once PostgreSQL is back",
        Duration::from_secs(15),
        async || match get(uncached).await {
            (status, _, body) if status == 200 => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        },
    )
    .await;
    assert_eq!(body["lead"]["id"], serde_json::json!(uncached));
}

/// A starting instance warms the contexts the fleet loaded most recently,
/// each in its own tenant's transaction, before it reports ready.
#[tokio::test]
async fn a_new_instance_preloads_what_the_fleet_uses() {
    let redis = leadline_testsupport::OwnedRedisServer::start().unwrap();
    let p = pair(&redis.url()).await;
    let mut hot = vec![p.lead];
    for i in 0..3 {
        hot.push(
            p.a.leads
                .create(p.tenant, &lead_req(&format!("Hot{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    for lead in &hot {
        p.a.context.context(p.tenant, *lead).await.unwrap();
    }
    let (c, _) = instance(pg_store().await, &redis.url()).await;
    let report = c.context.preload_fleet().await;
    assert_eq!(
        (
            report.requested,
            report.loaded,
            report.failed,
            report.timed_out
        ),
        (4, 4, 0, false),
        "{report:?}"
    );
    let before = c.context.cache_stats();
    for lead in &hot {
        c.context.context(p.tenant, *lead).await.unwrap();
    }
    let after = c.context.cache_stats();
    assert_eq!(
        after.l1.hits - before.l1.hits,
        4,
        "all four were warm in the new instance's L1"
    );
    assert_eq!(after.loads, before.loads, "nothing had to be loaded");
}
