//! Micro-benchmarks of the per-instance rate limiter, which every `/v1`
//! request passes through when limits are on (and which decides alone when
//! Redis does not answer): the domain's GCRA decision by itself, and
//! `LocalRateLimiter::check` through its port for one busy key and for keys
//! spread over 10,000 tenants. The shared limiter's cost is one Redis round
//! trip (`EVALSHA`), which the Redis rows of docs/benchmarks.md bound.

#![allow(
    clippy::expect_used,
    reason = "a benchmark's fixtures are constants; failing loudly is right"
)]

use std::{hint::black_box, time::Instant};

use criterion::Criterion;
use leadline_cache::LocalRateLimiter;
use leadline_domain::{ApiKeyId, RateLimit, RouteClass, TenantId};
use leadline_ports::{RateLimiter, RateLimits};

/// Tenants in the spread benchmark.
const TENANTS: usize = 10_000;

pub fn run(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // The highest limits there are (a million a second, a million burst):
    // a long run may still reach them, and a refusal does the same work
    // (one decision per limit, no write), so the figure holds either way.
    let limits = RateLimits {
        key: RateLimit::new(1e6, 1_000_000).expect("a valid limit"),
        tenant: RateLimit::new(1e6, 1_000_000).expect("a valid limit"),
    };
    let mut group = c.benchmark_group("rate_limit");
    group.bench_function("gcra_decide", |b| {
        let mut tat = None;
        let mut now = 0.0;
        b.iter(|| {
            now += 1.0;
            let decision = limits.key.decide(black_box(tat), now);
            tat = Some(decision.tat_ms);
            black_box(decision)
        });
    });
    let limiter = LocalRateLimiter::new();
    let (tenant, key) = (TenantId::new(), ApiKeyId::new());
    group.bench_function("local_check_one_key", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(limiter.check(tenant, key, RouteClass::Read, limits).await);
                }
                started.elapsed()
            })
        });
    });
    let spread: Vec<(TenantId, ApiKeyId)> = (0..TENANTS)
        .map(|_| (TenantId::new(), ApiKeyId::new()))
        .collect();
    group.bench_function("local_check_10k_tenants", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let (tenant, key) = spread[(i as usize).wrapping_mul(7919) % TENANTS];
                    black_box(limiter.check(tenant, key, RouteClass::Write, limits).await);
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}
