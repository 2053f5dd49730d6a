//! Micro-benchmarks of the cache's hot paths without Redis: an L1 hit over
//! 100,000 cached contexts (every cache-hot request), an L1 miss that runs
//! its loader and inserts (every fill), and the shape of the Redis keys.
//!
//! Run in process by `cargo xtask bench` (and `cargo xtask bench --micro-only`), which
//! copies the figures into docs/benchmarks.md. The cache is used through
//! its public port (`ContextCache::get_or_load`), so the figures include
//! what every caller pays: the boxed loader, the single-flight bookkeeping
//! on a miss, the statistics.

#![allow(
    clippy::expect_used,
    reason = "a benchmark's fixtures are constants; failing loudly is right"
)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::Criterion;
use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_domain::{LeadContext, LeadId, TenantId, fixtures};
use leadline_ports::{ContextCache, ContextLoader};

/// Cached keys in the hit benchmark ("moka hit ≈ 1 µs over 100k keys").
const KEYS: usize = 100_000;

/// A small context (a lead and three events, about 1.5 KiB of JSON): the
/// hit path does not depend on the size, and 100,000 of them must fit in
/// memory.
fn context(tenant: TenantId, lead: LeadId) -> LeadContext {
    let mut context = fixtures::lead_context(tenant, lead);
    context.events = (0..3)
        .map(|_| fixtures::note(tenant, lead, "Prefers email."))
        .collect();
    context
}

fn loader(tenant: TenantId, lead: LeadId) -> ContextLoader {
    Box::new(move || Box::pin(async move { Ok(context(tenant, lead)) }))
}

fn l1(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let settings = CacheSettings {
        redis_url: None,
        // Room for every key: nothing may be evicted while measuring hits.
        l1_capacity_bytes: 1 << 30,
        ..CacheSettings::default()
    };
    let cache = Arc::new(
        runtime
            .block_on(TwoTierCache::connect(&settings))
            .expect("an L1-only cache needs no server"),
    );
    let tenant = TenantId::new();
    let keys: Vec<LeadId> = (0..KEYS).map(|_| LeadId::new()).collect();
    runtime.block_on(async {
        for &lead in &keys {
            cache
                .get_or_load(tenant, lead, loader(tenant, lead))
                .await
                .expect("the loader succeeds");
        }
    });

    let mut group = c.benchmark_group("l1");
    group.bench_function("hit_of_100k_keys", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let lead = keys[(i as usize).wrapping_mul(7919) % KEYS];
                    black_box(
                        cache
                            .get_or_load(tenant, lead, loader(tenant, lead))
                            .await
                            .expect("a hit"),
                    );
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("miss_load_and_insert", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let lead = LeadId::new();
                    let started = Instant::now();
                    black_box(
                        cache
                            .get_or_load(tenant, lead, loader(tenant, lead))
                            .await
                            .expect("the loader succeeds"),
                    );
                    took += started.elapsed();
                }
                took
            })
        });
    });
    group.bench_function("invalidate_local", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    cache.invalidate(tenant, keys[i as usize % KEYS]).await;
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    runtime.block_on(cache.shutdown());
}

/// The Redis key of a context, `leadline:{<tenant>}:ctx:<lead>`, built as
/// `keys::value_key` builds it (that function is crate-private): every L2
/// read, write and invalidation formats one or two of these.
fn cache_keys(c: &mut Criterion) {
    let (tenant, lead) = (TenantId::new(), LeadId::new());
    c.bench_function("keys/value_key", |b| {
        b.iter(|| {
            black_box(format!(
                "leadline:{{{}}}:ctx:{}",
                black_box(tenant),
                black_box(lead)
            ))
        });
    });
}

/// Every benchmark of this module.
pub fn run(c: &mut Criterion) {
    l1(c);
    cache_keys(c);
}
