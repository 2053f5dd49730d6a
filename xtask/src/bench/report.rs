//! What a run measured, as a table on stdout and as docs/benchmarks.md.

use std::{fmt::Write as _, time::Duration};

use super::{
    CONNECTIONS, GROWTH_CONNECTIONS, GROWTH_RUNS, POOL, Plan, SWEEP,
    ceilings::{Pgbench, RedisGet, Script},
    data::{AGENTS, DataSummary},
    infra::{CommandLog, Machine},
    load::Outcome,
    micro::Micro,
    scenarios::ZIPF_EXPONENT,
};

/// One load run, as reported.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What ran.
    pub label: String,
    /// Connections.
    pub connections: usize,
    /// Successful requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Failed requests in the window.
    pub errors: u64,
    /// One failure.
    pub first_error: Option<String>,
    /// Mean response body, bytes.
    pub mean_body: f64,
    /// The workload ran out early.
    pub exhausted: bool,
    /// The measured window, seconds.
    pub elapsed_secs: f64,
}

impl Measured {
    /// The row of `outcome`.
    #[must_use]
    pub fn from_outcome(label: &str, connections: usize, outcome: &Outcome) -> Self {
        Self {
            label: label.to_owned(),
            connections,
            rps: outcome.throughput(),
            p50_ms: outcome.quantile_ms(0.5),
            p95_ms: outcome.quantile_ms(0.95),
            p99_ms: outcome.quantile_ms(0.99),
            p999_ms: outcome.quantile_ms(0.999),
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            mean_body: outcome.mean_body(),
            exhausted: outcome.exhausted,
            elapsed_secs: outcome.elapsed.as_secs_f64(),
        }
    }
}

/// CSV in and out, in one run.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Rows in the imported file.
    pub rows: u64,
    /// `leadline import leads` (validation, duplicate lookup, batches of
    /// 2,000 with the run's position and an event per lead), seconds.
    pub import_secs: f64,
    /// The import's peak memory.
    pub import_peak: super::infra::PeakMemory,
    /// The same file into a fresh SQLite database (the embedded default),
    /// seconds, and its peak memory.
    pub sqlite_import: (f64, super::infra::PeakMemory),
    /// `psql \copy` of the same rows, as the import stores them, into
    /// `leads` (another tenant), seconds.
    pub copy_secs: f64,
    /// The server's execution time of the import's statements, split by
    /// what they write, and of `\copy`'s.
    pub server_time: super::data::StatementSplit,
    /// Leads in the exported tenant.
    pub export_rows: u64,
    /// `GET /v1/leads/export` to its last byte, seconds.
    pub export_secs: f64,
}

/// The sweeps of the first three scenarios.
#[derive(Debug, Default)]
pub struct Sweeps {
    /// (1) context, cache-hot.
    pub hot: Vec<Measured>,
    /// (2) context, cache-cold.
    pub cold: Vec<Measured>,
    /// (3) lead by id.
    pub by_id: Vec<Measured>,
}

/// The ceilings.
#[derive(Debug, Default)]
pub struct Ceilings {
    /// pgbench runs.
    pub pgbench: Vec<(Script, Pgbench)>,
    /// The trivial axum JSON server, per connection count.
    pub http: Vec<Measured>,
    /// The same server answering a document of a context's size, at the
    /// main connection count.
    pub http_body: Option<Measured>,
    /// redis-benchmark GET.
    pub redis: Option<RedisGet>,
}

impl Ceilings {
    /// The HTTP ceiling at `connections`.
    fn http_at(&self, connections: usize) -> Option<f64> {
        self.http
            .iter()
            .find(|m| m.connections == connections)
            .map(|m| m.rps)
    }

    /// The best pgbench result of `script` with at most `connections`
    /// clients (the database never sees more concurrency than that), or
    /// the smallest run when none is that small.
    fn pg_at(&self, script: Script, connections: usize) -> Option<Pgbench> {
        let runs = self
            .pgbench
            .iter()
            .filter(|(s, _)| *s == script)
            .map(|(_, r)| *r);
        runs.clone()
            .filter(|r| r.clients <= connections)
            .max_by(|a, b| a.tps.total_cmp(&b.tps))
            .or_else(|| runs.min_by_key(|r| r.clients))
    }
}

/// Cache counters over one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheDelta {
    /// L1 hits.
    pub l1_hits: u64,
    /// L1 misses.
    pub l1_misses: u64,
    /// L2 hits.
    pub l2_hits: u64,
    /// L2 errors.
    pub l2_errors: u64,
    /// Loader runs (store reads).
    pub loads: u64,
    /// L1 evictions.
    pub l1_evictions: u64,
}

impl CacheDelta {
    /// `after - before` of two `GET /v1/cache/stats` bodies.
    #[must_use]
    pub fn between(before: &serde_json::Value, after: &serde_json::Value) -> Self {
        let diff = |path: &[&str]| {
            let get = |v: &serde_json::Value| {
                path.iter()
                    .try_fold(v, |v, k| v.get(k))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            get(after).saturating_sub(get(before))
        };
        Self {
            l1_hits: diff(&["l1", "hits"]),
            l1_misses: diff(&["l1", "misses"]),
            l2_hits: diff(&["l2", "hits"]),
            l2_errors: diff(&["l2", "errors"]),
            loads: diff(&["loads"]),
            l1_evictions: diff(&["l1", "evictions"]),
        }
    }

    fn lookups(&self) -> u64 {
        self.l1_hits + self.l1_misses
    }

    fn share(&self, part: u64) -> f64 {
        match self.lookups() {
            0 => 0.0,
            n => part as f64 * 100.0 / n as f64,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} lookups: {:.1} % L1 hits, {:.1} % L2 (Redis) hits, {:.1} % loaded from PostgreSQL; {} L2 errors, {} L1 evictions",
            self.lookups(),
            self.share(self.l1_hits),
            self.share(self.l2_hits),
            self.share(self.loads),
            self.l2_errors,
            self.l1_evictions
        )
    }
}

/// The memory figure.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Contexts warmed.
    pub contexts: usize,
    /// RSS before, KiB.
    pub idle_kib: u64,
    /// RSS after, KiB.
    pub warm_kib: u64,
    /// `cache.l1_capacity_bytes` of that instance.
    pub capacity_bytes: u64,
    /// Loader runs.
    pub loads: u64,
    /// L1 evictions.
    pub evictions: u64,
    /// Warming rate, contexts per second (cold loads at 16 connections).
    pub warm_rps: f64,
    /// Failed warm requests.
    pub errors: u64,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Report {
    /// Sizes and durations.
    pub plan: Plan,
    /// The machine.
    pub machine: Machine,
    /// Every command.
    pub commands: CommandLog,
    /// Wall-clock phases.
    pub phases: Vec<(String, Duration)>,
    /// Micro-benchmarks.
    pub micro: Vec<Micro>,
    /// Cache-cold context at each data size: (leads in all, run).
    pub growth: Vec<(u64, Measured)>,
    /// The context statement inside the server at each growth point.
    pub growth_cost: Vec<super::data::ContextCost>,
    /// The curve's two ends again, side by side.
    pub growth_turns: Option<GrowthTurns>,
    /// Search (two words and a status filter) at each data size, one
    /// connection: (leads in all, run).
    pub search_growth: Vec<(u64, Measured)>,
    /// The same search with the last name misspelt, at each growth point.
    pub typo_search_growth: Vec<(u64, Measured)>,
    /// Search on the final data set at [`POOL`] connections.
    pub search_loaded: Option<Measured>,
    /// Appends and timeline pages before and after the events table grows.
    pub events_growth: Vec<EventsPoint>,
    /// CSV import and export.
    pub transfer: Option<Transfer>,
    /// What the database held.
    pub data: DataSummary,
    /// Sweeps of scenarios 1-3.
    pub sweeps: Sweeps,
    /// Ceilings.
    pub ceilings: Ceilings,
    /// Mean serialized context, bytes (the redis-benchmark value size).
    pub context_bytes: usize,
    /// Warming the caches before scenario 1: the hottest leads, once each.
    pub hot_warm: Option<Measured>,
    /// `cache.l1_capacity_bytes` of the instance serving scenarios 1 and 3-7.
    pub hot_l1_bytes: Option<u64>,
    /// (1) at [`CONNECTIONS`] taking turns with the trivial handler: side 0
    /// the handler, side 1 the cache-hot context.
    pub hot_turns: Option<Turns>,
    /// Cache counters during scenario 1 at [`CONNECTIONS`].
    pub hot_cache: Option<CacheDelta>,
    /// (1b): scenario 1's Zipf over every lead rather than the warmed set,
    /// at [`CONNECTIONS`], with its cache counters (only when the warm-up
    /// does not cover every lead).
    pub hot_all: Option<(Measured, CacheDelta)>,
    /// (4).
    pub page: Option<Measured>,
    /// (5).
    pub event: Option<Measured>,
    /// The server's time on (5)'s statements, warm-up included.
    pub event_server: Option<super::data::StatementSplit>,
    /// The machine's CPU during (5), as [`Report::approve_cpu`].
    pub event_cpu: Option<(f64, Vec<f64>)>,
    /// Pending approvals available to (6).
    pub pending_available: usize,
    /// (6).
    pub approve: Option<Measured>,
    /// The server's time on (6)'s statements, warm-up included.
    pub approve_server: Option<super::data::StatementSplit>,
    /// The machine's CPU during (6), warm-up included: busy in all, and
    /// each of [`CPU_PROGRAMS`], in per cent.
    pub approve_cpu: Option<(f64, Vec<f64>)>,
    /// (5) and (6) with and without the audit trail.
    pub audit_cost: Option<AuditCost>,
    /// The analytics reports.
    pub analytics: Option<Analytics>,
    /// (7).
    pub mix: Option<Measured>,
    /// Cache counters during (7).
    pub mix_cache: Option<CacheDelta>,
    /// The relay's throughput and the change feed's fan-out.
    pub outbound: Option<super::outbound::Outbound>,
    /// Memory.
    pub memory: Option<Memory>,
    /// The embedded default: scenarios on the same data in SQLite.
    pub sqlite: Option<super::sqlite::SqliteRuns>,
    /// The whole run.
    pub total: Duration,
}

/// One workload against two services that take turns (`take_turns` in
/// mod.rs): each side's runs, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    pub runs: [Vec<Measured>; 2],
}

impl Turns {
    /// The run of `side` (0 or 1) whose `key` is the median of its runs.
    fn median_by(&self, side: usize, key: impl Fn(&Measured) -> f64) -> Option<&Measured> {
        let mut runs: Vec<&Measured> = self.runs.get(side)?.iter().collect();
        runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        runs.get(runs.len() / 2).copied()
    }

    /// `side`'s run with the median throughput.
    #[must_use]
    pub fn median_rps(&self, side: usize) -> Option<&Measured> {
        self.median_by(side, |m| m.rps)
    }

    /// `side`'s run with the median p50.
    #[must_use]
    pub fn median_p50(&self, side: usize) -> Option<&Measured> {
        self.median_by(side, |m| m.p50_ms)
    }

    /// `side`'s runs as `f` prints each, in the order they ran.
    #[must_use]
    pub fn each(&self, side: usize, f: impl Fn(&Measured) -> String) -> String {
        self.runs
            .get(side)
            .map(|runs| runs.iter().map(f).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }
}

/// The cache-cold growth target's two ends measured side by side: the
/// first growth point's data set again, in a database of its own, and the
/// last, taking turns.
#[derive(Debug, Clone)]
pub struct GrowthTurns {
    /// Leads in all on each side: (small, large).
    pub leads: (u64, u64),
    /// Side 0: the small database; side 1: the large one.
    pub turns: Turns,
    /// The context statement inside the server during the turns: (small,
    /// large).
    pub cost: (super::data::ContextCost, super::data::ContextCost),
}

/// (5) and (6) with the audit trail (`database.audit = true`, the default)
/// and without it, each the median of its runs.
#[derive(Debug)]
pub struct AuditCost {
    pub append_on: Measured,
    pub append_off: Measured,
    pub approve_on: Measured,
    pub approve_off: Measured,
    /// Every run's req/s, in the order they ran: append with, append
    /// without, approve with, approve without.
    pub every_run: [Vec<f64>; 4],
}

impl AuditCost {
    /// `(label, with, without, cost)`: the throughput the trail takes away,
    /// as a share of the throughput without it.
    fn rows(&self) -> [(&'static str, &Measured, &Measured, f64); 2] {
        let cost = |on: &Measured, off: &Measured| {
            if off.rps > 0.0 {
                1.0 - on.rps / off.rps
            } else {
                0.0
            }
        };
        [
            (
                "(5) append an event",
                &self.append_on,
                &self.append_off,
                cost(&self.append_on, &self.append_off),
            ),
            (
                "(6) approve",
                &self.approve_on,
                &self.approve_off,
                cost(&self.approve_on, &self.approve_off),
            ),
        ]
    }
}

/// The analytics reports on the final data set.
#[derive(Debug)]
pub struct Analytics {
    /// Leads in all tenants.
    pub leads: u64,
    /// How long `analytics_refresh()` took (all tenants).
    pub refresh: Duration,
    /// The three reports, in turn.
    pub run: Measured,
}

/// The p95 an analytics report must keep, in ms: a dashboard's request.
pub const ANALYTICS_P95_MS: f64 = 100.0;

/// One events-growth point: appends and timeline pages at one connection
/// with the events table at `events` rows.
#[derive(Debug)]
pub struct EventsPoint {
    pub events: i64,
    pub append: Measured,
    pub timeline: Measured,
}

/// A target and how far the run is from it.
struct Verdict {
    target: String,
    measured: String,
    met: bool,
}

/// One headline row.
struct Row<'a> {
    number: &'static str,
    run: &'a Measured,
    ceiling: Option<(&'static str, f64)>,
}

impl Report {
    /// The mean size of a serialized context in bytes, as the cache-cold
    /// sweep returned them (the largest of its rows; at least 3): the value
    /// size of the Redis ceiling and of SQLite's L1 budget.
    #[must_use]
    pub fn cold_context_bytes(&self) -> usize {
        self.sweeps
            .cold
            .iter()
            .map(|r| r.mean_body)
            .fold(0.0, f64::max)
            .round()
            .max(3.0) as usize
    }

    /// An empty report.
    #[must_use]
    pub fn new(plan: Plan, machine: Machine, commands: CommandLog) -> Self {
        Self {
            plan,
            machine,
            commands,
            phases: Vec::new(),
            micro: Vec::new(),
            growth: Vec::new(),
            growth_cost: Vec::new(),
            growth_turns: None,
            search_growth: Vec::new(),
            typo_search_growth: Vec::new(),
            events_growth: Vec::new(),
            search_loaded: None,
            transfer: None,
            outbound: None,
            data: DataSummary::default(),
            sweeps: Sweeps::default(),
            ceilings: Ceilings::default(),
            context_bytes: 0,
            hot_warm: None,
            hot_l1_bytes: None,
            hot_cache: None,
            hot_turns: None,
            hot_all: None,
            page: None,
            event: None,
            pending_available: 0,
            approve: None,
            approve_server: None,
            approve_cpu: None,
            event_server: None,
            event_cpu: None,
            audit_cost: None,
            analytics: None,
            mix: None,
            mix_cache: None,
            memory: None,
            sqlite: None,
            total: Duration::ZERO,
        }
    }

    fn at(rows: &[Measured], connections: usize) -> Option<&Measured> {
        rows.iter().find(|r| r.connections == connections)
    }

    fn http_ceiling(&self, connections: usize) -> Option<(&'static str, f64)> {
        self.ceilings
            .http_at(connections)
            .map(|v| ("trivial axum JSON", v))
    }

    fn pg_ceiling(&self, script: Script, connections: usize) -> Option<(&'static str, f64)> {
        let name = match script {
            Script::PointSelect => "pgbench point select",
            Script::TenantSelect => "pgbench select in tenant tx",
            Script::TenantSelectPipelined => "pgbench select in tenant tx, pipelined",
            Script::TenantSelectOneStatement => "pgbench one-statement tenant select",
            Script::ContextStatement => "pgbench context statement",
            Script::Insert => "pgbench one-row INSERT",
        };
        self.ceilings
            .pg_at(script, connections)
            .map(|r| (name, r.tps))
    }

    /// The ceiling a scenario row is compared with.
    fn ceiling_for(&self, number: &str, connections: usize) -> Option<(&'static str, f64)> {
        match number {
            "1" | "1b" | "7" => self.http_ceiling(connections),
            "2" | "3" | "4" => self.pg_ceiling(Script::TenantSelect, connections),
            "5" | "6" => self.pg_ceiling(Script::Insert, connections),
            _ => None,
        }
    }

    fn headline<'a>(&'a self) -> Vec<Row<'a>> {
        let mut rows = Vec::new();
        let mut push = |number: &'static str, run: Option<&'a Measured>| {
            if let Some(run) = run {
                rows.push(Row {
                    number,
                    run,
                    ceiling: self.ceiling_for(number, run.connections),
                });
            }
        };
        push("1", Self::at(&self.sweeps.hot, CONNECTIONS));
        push("1b", self.hot_all.as_ref().map(|(run, _)| run));
        push("2", Self::at(&self.sweeps.cold, CONNECTIONS));
        push("3", Self::at(&self.sweeps.by_id, CONNECTIONS));
        push("4", self.page.as_ref());
        push("5", self.event.as_ref());
        push("6", self.approve.as_ref());
        push("7", self.mix.as_ref());
        rows
    }

    /// PostgreSQL's figures beside the SQLite section's.
    fn beside_sqlite(&self) -> super::sqlite::Beside<'_> {
        super::sqlite::Beside {
            hot: Self::at(&self.sweeps.hot, CONNECTIONS),
            page: self.page.as_ref(),
        }
    }

    fn ratio(run: &Measured, ceiling: Option<(&str, f64)>) -> Option<f64> {
        ceiling.and_then(|(_, c)| (c > 0.0).then(|| run.rps / c))
    }

    fn verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        if let Some(hot) = Self::at(&self.sweeps.hot, CONNECTIONS) {
            // From the runs that took turns with the ceiling's when the run
            // has them; else the sweep's row against the ceilings' phase.
            let (measured, ratio) = match self
                .hot_turns
                .as_ref()
                .and_then(|t| Some((t.median_rps(1)?, t.median_rps(0)?)))
            {
                Some((turn, echo)) => {
                    let ratio = turn.rps / echo.rps.max(1e-9);
                    (
                        format!(
                            "{} % ({:.0} vs {:.0} req/s, taking turns)",
                            short_of(ratio * 100.0, 60.0, 0),
                            turn.rps,
                            echo.rps
                        ),
                        ratio,
                    )
                }
                None => {
                    let ratio = Self::ratio(hot, self.http_ceiling(CONNECTIONS)).unwrap_or(0.0);
                    (
                        format!(
                            "{} % ({:.0} req/s)",
                            short_of(ratio * 100.0, 60.0, 0),
                            hot.rps
                        ),
                        ratio,
                    )
                }
            };
            out.push(Verdict {
                target: format!(
                    "(1) cache-hot context ≥ 60 % of the trivial-axum ceiling at {CONNECTIONS} connections"
                ),
                measured,
                met: ratio >= 0.6,
            });
            out.push(Verdict {
                target: format!("(1) cache-hot context p99 < 5 ms at {CONNECTIONS} connections"),
                measured: format!("{:.2} ms", hot.p99_ms),
                met: hot.p99_ms < 5.0,
            });
        }
        for (number, label, rows) in [
            ("3", "lead by id", &self.sweeps.by_id),
            ("2", "cache-cold context", &self.sweeps.cold),
        ] {
            if let Some(run) = Self::at(rows, CONNECTIONS) {
                let ratio = Self::ratio(run, self.ceiling_for(number, CONNECTIONS)).unwrap_or(0.0);
                let one = Self::ratio(
                    run,
                    self.pg_ceiling(Script::TenantSelectOneStatement, CONNECTIONS),
                )
                .map(|r| format!("; {:.0} % of the one-statement select", r * 100.0))
                .unwrap_or_default();
                out.push(Verdict {
                    target: format!(
                        "({number}) {label} ≥ 50 % of the RLS-wrapped pgbench select ceiling"
                    ),
                    measured: format!(
                        "{} % ({:.0} req/s{one})",
                        short_of(ratio * 100.0, 50.0, 0),
                        run.rps
                    ),
                    met: ratio >= 0.5,
                });
            }
        }
        if let Some(cost) = &self.audit_cost {
            for (label, on, off, cost) in cost.rows() {
                out.push(Verdict {
                    target: format!("{label}: the audit trail costs ≤ 20 % of its throughput"),
                    measured: format!(
                        "{} % ({:.0} req/s with, {:.0} without)",
                        short_of(cost * 100.0, 20.0, 0),
                        on.rps,
                        off.rps
                    ),
                    met: cost <= 0.2 && on.errors == 0 && off.errors == 0,
                });
            }
        }
        if let Some(a) = &self.analytics {
            out.push(Verdict {
                target: format!(
                    "analytics reports at {} leads: p95 ≤ {ANALYTICS_P95_MS:.0} ms",
                    a.leads
                ),
                measured: format!(
                    "p95 {:.2} ms ({:.0} req/s; refresh {:.1} s)",
                    a.run.p95_ms,
                    a.run.rps,
                    a.refresh.as_secs_f64()
                ),
                met: a.run.p95_ms <= ANALYTICS_P95_MS && a.run.errors == 0,
            });
        }
        if let Some(run) = &self.event {
            let ratio = Self::ratio(run, self.ceiling_for("5", run.connections)).unwrap_or(0.0);
            out.push(Verdict {
                target: "(5) append event ≥ 50 % of the one-row INSERT ceiling".to_owned(),
                measured: format!(
                    "{} % ({:.0} req/s)",
                    short_of(ratio * 100.0, 50.0, 0),
                    run.rps
                ),
                met: ratio >= 0.5,
            });
        }
        // The two ends measured side by side when the run has them; else
        // the curve's first and last points, minutes apart.
        let growth_ends = self
            .growth_turns
            .as_ref()
            .and_then(|g| {
                Some((
                    (g.leads.0, g.turns.median_p50(0)?),
                    (g.leads.1, g.turns.median_p50(1)?),
                    ", taking turns",
                ))
            })
            .or_else(|| {
                let (small, first) = self.growth.first()?;
                let (large, last) = self.growth.last()?;
                Some(((*small, first), (*large, last), ""))
            });
        if let Some(((small, first), (large, last), how)) = growth_ends {
            let ratio = if first.p50_ms > 0.0 {
                last.p50_ms / first.p50_ms
            } else {
                0.0
            };
            out.push(Verdict {
                target: format!(
                    "cache-cold context p50 at {} leads ≤ 1.2 × p50 at {}{}",
                    human(large),
                    human(small),
                    if large < 1_000_000 {
                        " (the target is stated at 1M; this run stops earlier)"
                    } else {
                        ""
                    }
                ),
                measured: format!(
                    "{ratio:.2} × ({:.3} ms vs {:.3} ms{how})",
                    last.p50_ms, first.p50_ms
                ),
                met: ratio <= 1.2 && last.errors == 0 && first.errors == 0,
            });
        }
        if let (Some((small, first)), Some((large, last))) =
            (self.search_growth.first(), self.search_growth.last())
        {
            out.push(Verdict {
                target: format!(
                    "search (two words + a filter) p95 < 20 ms at {} leads",
                    human(*large)
                ),
                measured: format!("{:.2} ms (p50 {:.2} ms)", last.p95_ms, last.p50_ms),
                met: last.p95_ms < 20.0 && last.errors == 0,
            });
            // Flat: within 2 ms or 1.5 × of the smallest data set, whichever
            // is looser (sub-millisecond figures jitter by more than 20 %).
            let flat = last.p95_ms <= (first.p95_ms * 1.5).max(first.p95_ms + 2.0);
            out.push(Verdict {
                target: format!(
                    "search p95 flat from {} to {} leads (≤ 1.5 × or + 2 ms)",
                    human(*small),
                    human(*large)
                ),
                measured: format!("{:.2} ms vs {:.2} ms", last.p95_ms, first.p95_ms),
                met: flat,
            });
        }
        if let (Some(first), Some(last)) = (self.events_growth.first(), self.events_growth.last())
            && self.events_growth.len() > 1
        {
            for (what, before, after) in [
                ("append", &first.append, &last.append),
                ("timeline page", &first.timeline, &last.timeline),
            ] {
                // Flat: within 1.2 × or 0.2 ms of the smaller table, whichever
                // is looser (sub-millisecond figures jitter by more than 20 %).
                let flat = after.p50_ms <= (before.p50_ms * 1.2).max(before.p50_ms + 0.2)
                    && after.errors == 0;
                out.push(Verdict {
                    target: format!(
                        "{what} p50 flat from {} to {} events (≤ 1.2 × or + 0.2 ms)",
                        human(u64::try_from(first.events).unwrap_or(0)),
                        human(u64::try_from(last.events).unwrap_or(0)),
                    ),
                    measured: format!("{:.3} ms vs {:.3} ms", after.p50_ms, before.p50_ms),
                    met: flat,
                });
            }
        }
        if let Some(lite) = &self.sqlite {
            for (target, run, beside, factor) in lite.targets() {
                let ratio = run.rps / beside.rps.max(1e-9);
                out.push(Verdict {
                    target: target.to_owned(),
                    measured: format!(
                        "{} × ({:.0} vs {:.0} req/s)",
                        short_of(ratio, factor, 2),
                        run.rps,
                        beside.rps
                    ),
                    met: ratio >= factor && run.errors == 0,
                });
            }
        }
        if let Some(t) = &self.transfer {
            let ratio = t.copy_secs / t.import_secs.max(1e-9);
            out.push(Verdict {
                target: format!(
                    "CSV import ≥ 50 % of `psql \\copy` rows/s into `leads` ({} rows)",
                    human(t.rows)
                ),
                measured: format!(
                    "{} % ({:.0} vs {:.0} rows/s)",
                    short_of(ratio * 100.0, 50.0, 0),
                    t.rows as f64 / t.import_secs.max(1e-9),
                    t.rows as f64 / t.copy_secs.max(1e-9)
                ),
                met: ratio >= 0.5,
            });
        }
        out
    }

    /// The results table printed at the end of a run.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<2} {:<30} {:>5} {:>9} {:>8} {:>8} {:>8} {:>6}  {:<28} {:>9} {:>6}",
            "#",
            "scenario",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9",
            "errors",
            "ceiling",
            "ceil/s",
            "ratio"
        );
        for row in self.headline() {
            let run = row.run;
            let (name, value) = row.ceiling.unwrap_or(("-", 0.0));
            let _ = writeln!(
                out,
                "{:<2} {:<30} {:>5} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>6}  {:<28} {:>9.0} {:>5.0}%",
                row.number,
                run.label,
                run.connections,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.p999_ms,
                run.errors,
                name,
                value,
                Self::ratio(run, row.ceiling).unwrap_or(0.0) * 100.0
            );
        }
        let _ = writeln!(out);
        for verdict in self.verdicts() {
            let _ = writeln!(
                out,
                "{} {}: {}",
                if verdict.met { "MET    " } else { "NOT MET" },
                verdict.target,
                verdict.measured
            );
        }
        out
    }

    /// docs/benchmarks.md.
    #[must_use]
    #[allow(clippy::too_many_lines, reason = "one document, section by section")]
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let plan = &self.plan;
        let mode = if plan.quick { "--quick" } else { "full" };
        let command = if plan.quick {
            "cargo xtask bench --quick"
        } else {
            "cargo xtask bench"
        };
        let _ = writeln!(
            md,
            "# Benchmarks\n\n\
             <!-- Generated by `{command}` (xtask/src/bench). Do not edit by hand: re-run it. -->\n\n\
             Every hot path of the service against this machine's own ceilings, measured in one \
             run on one data set. This page is written by `{command}`; the last run was a \
             **{mode}** run that took **{:.0} s** in all ({}). `cargo xtask bench` without \
             `--quick` uses ten times more data and longer runs. Benchmarks never run inside \
             `cargo test --workspace`: the harness, micro-benchmarks included, is an xtask \
             subcommand.\n",
            self.total.as_secs_f64(),
            utc_now(),
        );

        // Summary of targets.
        let _ = writeln!(md, "## Targets\n\n| target | measured | |\n|---|---|---|");
        for v in self.verdicts() {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                v.target,
                v.measured,
                if v.met { "met" } else { "**not met**" }
            );
        }

        // Headline table.
        let _ = writeln!(
            md,
            "\n## Results\n\n\
             Each scenario at {CONNECTIONS} connections, {:.0} s measured after {:.0} s of \
             warm-up. Latencies are per request, in milliseconds, as the client saw them. \
             The ratio is the scenario's throughput over its ceiling's (below), both measured \
             in this run on this data.\n\n\
             | # | scenario | req/s | p50 | p99 | p99.9 | errors | ceiling | ceiling req/s | ratio |\n\
             |---|---|---:|---:|---:|---:|---:|---|---:|---:|",
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64(),
        );
        for row in self.headline() {
            let run = row.run;
            let (name, value) = row.ceiling.unwrap_or(("-", 0.0));
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {}{} | {} | {:.0} | {:.0} % |",
                row.number,
                run.label,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.p999_ms,
                run.errors,
                if run.exhausted {
                    " (ran out of work)"
                } else {
                    ""
                },
                name,
                value,
                Self::ratio(run, row.ceiling).unwrap_or(0.0) * 100.0
            );
        }
        let mut runs: Vec<&Measured> = self.headline().iter().map(|r| r.run).collect();
        runs.extend(
            self.sweeps
                .hot
                .iter()
                .chain(&self.sweeps.cold)
                .chain(&self.sweeps.by_id)
                .chain(self.growth.iter().map(|(_, m)| m)),
        );
        let mut errors: Vec<String> = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            if runs[..i].iter().any(|seen| std::ptr::eq(*seen, *run)) {
                continue;
            }
            if let Some(e) = &run.first_error {
                errors.push(format!(
                    "- {} at {} connections: {} errors, e.g. `{}`",
                    run.label,
                    run.connections,
                    run.errors,
                    e.replace('`', "'")
                ));
            }
        }
        if !errors.is_empty() {
            let _ = writeln!(md, "\nErrors seen:\n\n{}", errors.join("\n"));
        }

        // Sweeps.
        let _ = writeln!(
            md,
            "\n## Connection sweeps ({} connections)\n\n\
             | scenario | connections | req/s | p50 | p99 | p99.9 | ceiling req/s | ratio |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|",
            sweep_list()
        );
        for (number, rows) in [
            ("1", &self.sweeps.hot),
            ("2", &self.sweeps.cold),
            ("3", &self.sweeps.by_id),
        ] {
            for run in rows {
                let ceiling = self.ceiling_for(number, run.connections);
                let _ = writeln!(
                    md,
                    "| ({number}) {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} % |",
                    run.label,
                    run.connections,
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    ceiling.map_or(0.0, |(_, c)| c),
                    Self::ratio(run, ceiling).unwrap_or(0.0) * 100.0
                );
            }
        }
        let _ = writeln!(
            md,
            "\nThe ceiling of a sweep point is measured at the same concurrency: the trivial \
             axum server at the same number of connections; pgbench with the best of its runs \
             at no more clients than the point has connections (the service itself never opens \
             more than {POOL} database connections)."
        );

        // Ceilings.
        let _ = writeln!(
            md,
            "\n## Ceilings\n\n\
             | ceiling | clients | throughput | latency |\n|---|---:|---:|---|"
        );
        for (script, run) in &self.ceilings.pgbench {
            let name = match script {
                Script::PointSelect => {
                    "pgbench: point select on `leads` (superuser, no RLS, `-M prepared`)"
                }
                Script::TenantSelect => {
                    "pgbench: same select in `BEGIN; set_config('app.tenant_id'); …; COMMIT` as the service role (RLS)"
                }
                Script::TenantSelectPipelined => {
                    "pgbench: the same four statements in one pipeline (`\\startpipeline`), service role (RLS)"
                }
                Script::TenantSelectOneStatement => {
                    "pgbench: the same select as one statement that sets the tenant in a CTE (the store's lead by id), service role (RLS)"
                }
                Script::ContextStatement => {
                    "pgbench: the store's cache-cold context statement itself (five subqueries as JSON), service role (RLS)"
                }
                Script::Insert => {
                    "pgbench: one-row `INSERT INTO events` (autocommit, `synchronous_commit = on`)"
                }
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {:.0} tps | mean {:.3} ms |",
                run.clients, run.tps, run.latency_ms
            );
        }
        for run in &self.ceilings.http {
            let _ = writeln!(
                md,
                "| trivial axum JSON handler (`cargo xtask bench-echo`), same load generator | {} | {:.0} req/s | p50 {:.3} ms, p99 {:.3} ms |",
                run.connections, run.rps, run.p50_ms, run.p99_ms
            );
        }
        if let Some(run) = &self.ceilings.http_body {
            let _ = writeln!(
                md,
                "| the same handler answering a {:.0} B document (a mean lead context, built once) | {} | {:.0} req/s | p50 {:.3} ms, p99 {:.3} ms |",
                run.mean_body, run.connections, run.rps, run.p50_ms, run.p99_ms
            );
        }
        if let Some(redis) = &self.ceilings.redis {
            let _ = writeln!(
                md,
                "| redis-benchmark `GET`, {} B values (a mean lead context), unpipelined | {} | {:.0} req/s | p50 {:.3} ms, p99 {:.3} ms |",
                redis.size, redis.clients, redis.rps, redis.p50_ms, redis.p99_ms
            );
        }
        if let (Some(plain), Some(tenant)) = (
            self.ceilings.pg_at(Script::PointSelect, POOL),
            self.ceilings.pg_at(Script::TenantSelect, POOL),
        ) && plain.tps > 0.0
        {
            let _ = writeln!(
                md,
                "\nThe price of the tenant context: at {POOL} clients the select inside the \
                 tenant transaction runs at {:.0} % of the bare select ({:.0} vs {:.0} tps): four \
                 round trips (`BEGIN`, `set_config`, the select, `COMMIT`) instead of one.",
                tenant.tps * 100.0 / plain.tps,
                tenant.tps,
                plain.tps
            );
            if let Some(piped) = self.ceilings.pg_at(Script::TenantSelectPipelined, POOL) {
                let _ = writeln!(
                    md,
                    "\nPipelined (the four statements sent together, one round trip) the same \
                     transaction runs at {:.0} tps, {:.0} % of the bare select and {:.1} × the \
                     unpipelined one: that is what pipelining would lift the ceiling to. The \
                     service cannot use it today: sqlx, under SeaORM, sends each statement and \
                     waits for its answer before the next.",
                    piped.tps,
                    piped.tps * 100.0 / plain.tps,
                    piped.tps / tenant.tps.max(1.0)
                );
            }
            if let Some(one) = self.ceilings.pg_at(Script::TenantSelectOneStatement, POOL) {
                let versus = match self.ceilings.pg_at(Script::TenantSelectPipelined, POOL) {
                    Some(piped) if one.tps > piped.tps => {
                        "fewer round trips lift the ceiling further than pipelining does"
                    }
                    Some(_) => "fewer round trips lift the ceiling about as far as pipelining does",
                    None => "fewer round trips lift the ceiling",
                };
                let _ = writeln!(
                    md,
                    "\nAs one statement that sets the tenant itself (`WITH scope AS MATERIALIZED \
                     (SELECT set_config(…)) SELECT … FROM scope CROSS JOIN LATERAL (…)`, one round \
                     trip, no `BEGIN`/`COMMIT`) the same read runs at {:.0} tps, {:.0} % of the \
                     bare select and {:.1} × the four-statement transaction: {versus}. The store \
                     sends its lead by id in exactly this shape, and its context and append in \
                     the same one-statement form. Scenarios (2) and (3) are still compared with \
                     the four-statement transaction, the ceiling the targets name.",
                    one.tps,
                    one.tps * 100.0 / plain.tps,
                    one.tps / tenant.tps.max(1.0)
                );
            }
        }

        // Growth.
        let _ = writeln!(
            md,
            "\n## Growth: cache-cold context as data grows\n\n\
             `GET /v1/leads/{{id}}/context` with caches off, uniform over every lead, \
             {GROWTH_CONNECTIONS} connection (so p50 is the cost of one read, without queueing), \
             after each seeding step (same tenants, more leads each) and a `CHECKPOINT`; each \
             point is run {GROWTH_RUNS} times and the run with the median p50 is shown. \
             \"server ms\" is the context statement's mean execution time inside PostgreSQL \
             over the point's runs, and \"buffers\" the pages it touched per read, of which \
             \"read\" came from outside `shared_buffers` (128 MB: from the operating system's \
             page cache), from `pg_stat_statements`.\n\n\
             | leads in all | req/s | p50 | p99 | p99.9 | p50 vs first | server ms | buffers | read |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let base = self.growth.first().map_or(0.0, |(_, m)| m.p50_ms);
        for (i, (leads, run)) in self.growth.iter().enumerate() {
            let cost = self.growth_cost.get(i).filter(|c| c.calls > 0).map_or_else(
                || "- | - | -".to_owned(),
                |c| format!("{:.3} | {:.1} | {:.1}", c.exec_ms, c.hit + c.read, c.read),
            );
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} × | {cost} |",
                human(*leads),
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.p999_ms,
                if base > 0.0 { run.p50_ms / base } else { 0.0 },
            );
        }
        if let Some(g) = &self.growth_turns
            && let (Some(small), Some(large)) = (g.turns.median_p50(0), g.turns.median_p50(1))
        {
            let _ = writeln!(
                md,
                "\nThe curve's points are minutes apart, and on this shared machine single \
                 1-connection runs a few minutes apart have differed by more than the 20 % the \
                 target allows (this ratio read from the curve ranged from 0.73 × to 1.50 × over \
                 earlier full runs). So its two ends are also measured side by side: the \
                 {small_leads} data set again, seeded alike into a second database on the same \
                 server, and the {large_leads} one, each behind a service of its own, taking \
                 turns ({runs} runs each, the side that goes first alternating, each run after a \
                 `CHECKPOINT`). p50 of the median runs: {large_p50:.3} ms at {large_leads} \
                 against {small_p50:.3} ms at {small_leads}, {ratio:.2} × (the target's \
                 figure). Every run's p50 in order: {small_leads} {small_each}; {large_leads} \
                 {large_each}. Inside PostgreSQL over these runs the context statement took \
                 {large_exec:.3} ms a read at {large_leads}, touching {large_buffers:.1} pages of \
                 which {large_read:.1} came from outside `shared_buffers`, against \
                 {small_exec:.3} ms, {small_buffers:.1} and {small_read:.1} at {small_leads}.",
                large_exec = g.cost.1.exec_ms,
                large_buffers = g.cost.1.hit + g.cost.1.read,
                large_read = g.cost.1.read,
                small_exec = g.cost.0.exec_ms,
                small_buffers = g.cost.0.hit + g.cost.0.read,
                small_read = g.cost.0.read,
                small_leads = human(g.leads.0),
                large_leads = human(g.leads.1),
                runs = g.turns.runs[0].len(),
                large_p50 = large.p50_ms,
                small_p50 = small.p50_ms,
                ratio = if small.p50_ms > 0.0 {
                    large.p50_ms / small.p50_ms
                } else {
                    0.0
                },
                small_each = g.turns.each(0, |m| format!("{:.3}", m.p50_ms)),
                large_each = g.turns.each(1, |m| format!("{:.3}", m.p50_ms)),
            );
        }
        if plan.quick {
            let _ = writeln!(
                md,
                "\n`--quick` stops at 100k leads; the full run adds the 1M point."
            );
        }

        if let Some(cost) = &self.audit_cost {
            let _ = writeln!(
                md,
                "\n## The audit trail's cost\n\n\
                 (5) and (6) at {CONNECTIONS} connections on two instances started for it, with the \
                 settings above, one with `database.audit = false` (no audit record; the \
                 baseline only), \
                 taking turns, {GROWTH_RUNS} runs each, the run with the median p50 shown; fresh \
                 pending approvals for every approve run. With the trail every write also \
                 inserts its audit record in the same transaction (the append: in the same one \
                 statement), and `serve` seals the records every second.\n\n\
                 | scenario | with req/s | with p50 | with p99 | without req/s | without p50 | without p99 | cost |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (label, on, off, cost) in cost.rows() {
                let _ = writeln!(
                    md,
                    "| {label} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} % |",
                    on.rps,
                    on.p50_ms,
                    on.p99_ms,
                    off.rps,
                    off.p50_ms,
                    off.p99_ms,
                    cost * 100.0
                );
            }
            let list = |runs: &[f64]| {
                runs.iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let [append_on, append_off, approve_on, approve_off] = &cost.every_run;
            let _ = writeln!(
                md,
                "\nEvery run's req/s, in order (each after a `CHECKPOINT`; the two instances \
                 take turns going first): append with the trail {}, without {}; approve with \
                 {}, without {}.",
                list(append_on),
                list(append_off),
                list(approve_on),
                list(approve_off)
            );
        }

        if let Some(a) = &self.analytics {
            let _ = writeln!(
                md,
                "\n## Analytics\n\n\
                 `analytics_refresh()` (the four materialized views, every tenant, `CONCURRENTLY`) \
                 on the final data set of {} leads took {:.1} s. Then the three reports of a \
                 random tenant in turn (the funnel by week and activity by day over 90 days, and \
                 the agents), at {} connections, through the analytics pool:\n\n\
                 | req/s | p50 ms | p95 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|\n\
                 | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
                a.leads,
                a.refresh.as_secs_f64(),
                a.run.connections,
                a.run.rps,
                a.run.p50_ms,
                a.run.p95_ms,
                a.run.p99_ms,
                a.run.errors
            );
        }

        if !self.events_growth.is_empty() {
            let _ = writeln!(
                md,
                "\n## Growth: the events table\n\n\
                 `POST /v1/leads/{{id}}/events` (append) and `GET /v1/leads/{{id}}/events?limit=20` \
                 (the newest timeline page), uniform over every lead, caches on, \
                 {GROWTH_CONNECTIONS} connection, on the final data set and again after \
                 {EXTRA} more events per lead (`INSERT … SELECT`, `VACUUM ANALYZE`, `CHECKPOINT`); \
                 each point run {GROWTH_RUNS} times, the run with the median p50 shown. The \
                 table is not partitioned: why it need not be is in \
                 [scaling.md](scaling.md#the-events-table).\n\n\
                 | events | append req/s | append p50 | append p99 | timeline req/s | timeline p50 | timeline p99 |\n\
                 |---:|---:|---:|---:|---:|---:|---:|",
                EXTRA = super::EXTRA_EVENTS_PER_LEAD,
            );
            for point in &self.events_growth {
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} |",
                    human(u64::try_from(point.events).unwrap_or(0)),
                    point.append.rps,
                    point.append.p50_ms,
                    point.append.p99_ms,
                    point.timeline.rps,
                    point.timeline.p50_ms,
                    point.timeline.p99_ms,
                );
            }
        }

        // Search.
        if !self.search_growth.is_empty() {
            let _ = writeln!(
                md,
                "\n## Search as data grows\n\n\
                 `GET /v1/leads/search?q=FIRST+LAST&status=S&limit=20` (the first and last name \
                 of a random generated lead, and its status), caches off, \
                 {GROWTH_CONNECTIONS} connection, after each seeding step. Target: p95 < 20 ms \
                 and flat as the data grows.\n\n\
                 | leads in all | req/s | p50 | p95 | p99 | p95 vs first |\n|---:|---:|---:|---:|---:|---:|"
            );
            let base = self.search_growth.first().map_or(0.0, |(_, m)| m.p95_ms);
            for (leads, run) in &self.search_growth {
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} × |",
                    human(*leads),
                    run.rps,
                    run.p50_ms,
                    run.p95_ms,
                    run.p99_ms,
                    if base > 0.0 { run.p95_ms / base } else { 0.0 }
                );
            }
            if !self.typo_search_growth.is_empty() {
                let _ = writeln!(
                    md,
                    "\nThe same queries with the last name misspelt (its last letter replaced: \
                     `Harris` → `Harrix`): no word of the tenant starts with that term, so it is \
                     first looked up in the tenant's vocabulary as a typo (a trigram index over \
                     every distinct word; the generated emails and phone numbers make that about \
                     two words per lead), then the words found are looked up among the leads. \
                     No target; shown so the cost of a typo is known.\n\n\
                     | leads in all | req/s | p50 | p95 | p99 |\n|---:|---:|---:|---:|---:|"
                );
                for (leads, run) in &self.typo_search_growth {
                    let _ = writeln!(
                        md,
                        "| {} | {:.0} | {:.3} | {:.3} | {:.3} |",
                        human(*leads),
                        run.rps,
                        run.p50_ms,
                        run.p95_ms,
                        run.p99_ms,
                    );
                }
            }
            if let Some(run) = &self.search_loaded {
                let _ = writeln!(
                    md,
                    "\nAt {} connections on the last data set: {:.0} req/s, p50 {:.3} ms, p95 \
                     {:.3} ms, p99 {:.3} ms{}.",
                    run.connections,
                    run.rps,
                    run.p50_ms,
                    run.p95_ms,
                    run.p99_ms,
                    if run.errors > 0 {
                        format!(", {} errors", run.errors)
                    } else {
                        String::new()
                    }
                );
            }
        }

        // Import and export.
        if let Some(t) = &self.transfer {
            let rate = |rows: u64, secs: f64| rows as f64 / secs.max(1e-9);
            let _ = writeln!(
                md,
                "\n## CSV import and export\n\n\
                 | | rows | seconds | rows/s |\n|---|---:|---:|---:|\n\
                 | `leadline import leads` (PostgreSQL, service role) | {} | {:.2} | {:.0} |\n\
                 | `psql \\copy` of the same rows into `leads` (superuser) | {} | {:.2} | {:.0} |\n\
                 | `leadline import leads` (SQLite file, a new tenant) | {} | {:.2} | {:.0} |\n\
                 | `GET /v1/leads/export` (one tenant, streamed) | {} | {:.2} | {:.0} |\n\n\
                 The import reads the CSV, checks every row with the API's rules, looks up \
                 each batch's emails among the tenant's leads, and commits 2,000 rows at a \
                 time (two such batches written at once on PostgreSQL) with their change-log \
                 rows, an `imported` event per lead (and its change-log row) and the run's \
                 position (so a killed import resumes). \
                 `\\copy` loads the same rows, already in the table's shape (search text \
                 computed), into the same table with its indexes and triggers, as the \
                 superuser, and writes nothing else: the ceiling the target names. Import \
                 is {:.0} % of it (target: 50 %). Its peak resident memory was {:.1} MiB \
                 ({:.1} MiB of it anonymous: heap and stacks). \
                 On SQLite the same file goes into a new tenant of an empty database file \
                 (WAL, one writer), peak resident memory {:.1} MiB, of which at most \
                 {:.1} MiB was anonymous; the rest is pages of the database file, which \
                 leadline maps into memory for reads (`database.sqlite_mmap_bytes`) and the kernel \
                 reclaims under pressure.",
                human(t.rows),
                t.import_secs,
                rate(t.rows, t.import_secs),
                human(t.rows),
                t.copy_secs,
                rate(t.rows, t.copy_secs),
                human(t.rows),
                t.sqlite_import.0,
                rate(t.rows, t.sqlite_import.0),
                human(t.export_rows),
                t.export_secs,
                rate(t.export_rows, t.export_secs),
                rate(t.rows, t.import_secs) * 100.0 / rate(t.rows, t.copy_secs).max(1e-9),
                mib(t.import_peak.resident_kib),
                mib(t.import_peak.anonymous_kib),
                mib(t.sqlite_import.1.resident_kib),
                mib(t.sqlite_import.1.anonymous_kib),
            );
            md.push_str(&import_bound(t));
        }

        if let Some(lite) = &self.sqlite {
            md.push_str(&lite.markdown(self.beside_sqlite()));
        }

        if let Some(outbound) = &self.outbound {
            md.push_str(&outbound.markdown());
        }

        // Memory.
        if let Some(mem) = &self.memory {
            let grown = mem.warm_kib.saturating_sub(mem.idle_kib);
            let _ = writeln!(
                md,
                "\n## Memory\n\n\
                 `leadline serve` (L1 only, `cache.l1_capacity_bytes` = {} MiB so nothing is \
                 evicted) warmed with {} contexts, each requested once ({:.0} contexts/s at \
                 {POOL} connections, {} loads, {} evictions, {} errors):\n\n\
                 | | RSS |\n|---|---:|\n\
                 | after start | {:.1} MiB |\n\
                 | after warming {} contexts | {:.1} MiB |\n\
                 | per context | {:.1} KiB (mean serialized context: {:.1} KiB) |",
                mem.capacity_bytes >> 20,
                human(mem.contexts as u64),
                mem.warm_rps,
                mem.loads,
                mem.evictions,
                mem.errors,
                mem.idle_kib as f64 / 1024.0,
                human(mem.contexts as u64),
                mem.warm_kib as f64 / 1024.0,
                if mem.contexts > 0 {
                    grown as f64 / mem.contexts as f64
                } else {
                    0.0
                },
                self.context_bytes as f64 / 1024.0
            );
            if plan.quick {
                let _ = writeln!(
                    md,
                    "\n`--quick` warms {} contexts; the full run warms 100k.",
                    human(mem.contexts as u64)
                );
            }
        }

        // Micro-benchmarks.
        if !self.micro.is_empty() {
            let _ = writeln!(
                md,
                "\n## Micro-benchmarks (criterion)\n\n\
                 Run in process by the release xtask (`cargo xtask bench --micro-only` runs just \
                 these){}: the hot pure paths, one \
                 thread, no I/O.\n\n| benchmark | median | mean |\n|---|---:|---:|",
                if plan.quick {
                    " (here 1 s warm-up and 1 s measurement each)"
                } else {
                    ""
                }
            );
            for m in &self.micro {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} |",
                    m.id,
                    nanos(m.median_ns),
                    nanos(m.mean_ns)
                );
            }
        }

        // Limits.
        md.push_str(&self.limits());

        // Method.
        let _ = writeln!(
            md,
            "\n## How it runs\n\n\
             - **Data set.** {} tenants × {} leads ({} leads in all), {AGENTS} agents per tenant. \
             Leads come from the `cargo xtask db seed` generator (fake names, companies, emails, \
             phones, tags, JSON metadata) and are loaded with `COPY`; per lead, `r mod 3` closed \
             approvals, a pending one for 40 % of leads, and 0-9 events (150 for every 97th lead, \
             a long timeline). In the database at the end: {} leads, {} approvals ({} pending), \
             {} events, {}. Lead ids are UUID v7 with the tenant and lead number in their \
             random bits (`xtask/src/bench/ids.rs`), so the load generator and pgbench can name \
             any lead without a list.\n\
             - **Servers.** PostgreSQL and Redis are throw-away servers from \
             `leadline-testsupport`, the ones the tests use (`TEST_DATABASE_URL` / \
             `TEST_REDIS_URL` when set, else the local `postgres` and `redis-server` \
             binaries: the benchmark's build leaves Docker support out), started fresh for \
             the run. Their settings are the test \
             harness's: `fsync=off`, `synchronous_commit=off` (the benchmark database sets it \
             back `on`), `full_page_writes=off`, `shared_buffers=128MB`, and `pg_stat_statements` loaded \
             (`track=top`, as many production servers run it). Commits therefore wait \
             for a WAL write but not for a disk flush: write figures are an upper bound for a \
             durable deployment, for the service and its INSERT ceiling alike.\n\
             - **The service** is the release build of `leadline serve` (mimalloc as its allocator, as \
             in every build), connected as \
             `{}` (NOSUPERUSER, NOBYPASSRLS, checked with `leadline roles verify`), default \
             settings (`database.max_connections` = {POOL}) except `log.filter = warn` (no \
             per-request log line), no start-up preload, the rate limiter off (one key drives \
             thousands of requests a second) and `analytics.refresh_secs` = 86400: the \
             analytics views are refreshed once, timed, in their own phase below (a periodic \
             refresh at a million leads, seconds of work, landed in whichever run was under \
             way). Scenario 2 and the growth curve \
             run with `cache.enabled = false`; the others with both cache tiers \
             (`cache.redis_url` set, L1 sized for the warmed hot set as below).\n\
             - **Load generator.** A small tokio + hyper client inside xtask \
             (`xtask/src/bench/load.rs`), run from the release build in its own process: one \
             keep-alive HTTP/1.1 connection per virtual user, closed loop (next request when \
             the previous answer is read), warm-up then a measured window, latencies in HDR \
             histograms (3 significant digits). Chosen over wrk because it needs nothing \
             installed, can send every request to a different lead and tenant with the right \
             API key (Zipf or uniform, each pending approval once), checks every status code, \
             and reports p99.9 from full histograms; the same client measures the trivial axum \
             ceiling, so client overhead cancels out of the ratios. Client and server share \
             the machine's {} cores, as pgbench and redis-benchmark do with their servers.\n\
             - **Hot keys.** Zipf with exponent {ZIPF_EXPONENT}, the hottest lead ids \
             scattered over tenants and rows; over all {} leads of all tenants, the 10,000 \
             hottest get {:.0} % of the requests. {}\n\
             - **Scenarios.** (1) `GET /v1/leads/{{id}}/context`, Zipf, caches on; (2) the \
             same, uniform, caches off; (3) `GET /v1/leads/{{id}}`, uniform; (4) `GET \
             /v1/leads?…&limit=20` by status, tag or agent, half of them from a cursor deep in \
             the list; (5) `POST /v1/leads/{{id}}/events`, uniform; (6) `POST \
             /v1/approvals/{{id}}/approve`, each of {} pending approvals at most once; (7) 90 % \
             (1) and 10 % (5) on Zipf-distributed leads, so the writes invalidate hot \
             contexts.",
            plan.tenants,
            human(plan.leads_per_tenant()),
            human(plan.leads_per_tenant() * u64::from(plan.tenants)),
            self.data.leads,
            self.data.approvals,
            self.data.pending,
            self.data.events,
            self.data.size,
            super::SERVICE,
            self.machine.cores,
            human(plan.leads_per_tenant() * u64::from(plan.tenants)),
            self.zipf_head(10_000) * 100.0,
            self.hot_set_words(),
            self.pending_available,
        );

        // Machine.
        let m = &self.machine;
        let _ = writeln!(
            md,
            "\n## Machine\n\n| | |\n|---|---|\n\
             | cores | {} ({}) |\n| memory | {} |\n| kernel | {} |\n| rustc | {} |\n\
             | PostgreSQL | {} |\n| pgbench | {} |\n| Redis | {} |\n| commit | {} |",
            m.cores, m.cpu, m.memory, m.kernel, m.rustc, m.postgres, m.pgbench, m.redis, m.commit
        );

        // Commands.
        let _ = writeln!(
            md,
            "\n## Commands\n\n\
             Run from the workspace root: `{command}`. It ran these, in order (ports and \
             temporary paths differ from run to run; the passwords are throw-away ones of \
             throw-away servers):\n\n```text"
        );
        for line in self.commands.lines() {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(
            md,
            "```\n\nWhere the time went:\n\n| phase | seconds |\n|---|---:|"
        );
        for (phase, took) in &self.phases {
            let _ = writeln!(md, "| {phase} | {:.1} |", took.as_secs_f64());
        }
        let _ = writeln!(
            md,
            "\nNot included: the release build of `xtask` (the `cargo xtask` alias) and of \
             `leadline`, which a clean clone compiles first."
        );
        md
    }

    /// Which leads scenario (1) draws from, and (1b) when there is one.
    fn hot_set_words(&self) -> String {
        let total = self.total_leads();
        let hot = self.plan.warm_hot.min(total);
        if hot >= total {
            "Scenario (1) draws from every lead, all of them warmed first; (7) from the same \
             distribution."
                .to_owned()
        } else {
            format!(
                "Scenario (1) draws from the {} hottest ranks only, the leads warmed before it \
                 (the same distribution cut at that rank, so a cache-hot run reads what the \
                 cache holds); (1b) and (7) draw from all {} leads, so {:.1} % of their draws \
                 fall in the tail the warm-up left out.",
                human(hot as u64),
                human(total as u64),
                (1.0 - self.zipf_head(hot)) * 100.0
            )
        }
    }

    fn total_leads(&self) -> usize {
        (self.plan.leads_per_tenant() * u64::from(self.plan.tenants)) as usize
    }

    fn zipf_head(&self, k: usize) -> f64 {
        super::load::Zipf::new(self.total_leads(), ZIPF_EXPONENT).head_share(k)
    }

    fn limits(&self) -> String {
        let mut md = String::from(
            "\n## What limits each figure\n\n\
             - **Two cores for everything.** The load generator, the service, PostgreSQL and \
             Redis share the machine's cores, and so do pgbench and redis-benchmark with their \
             servers. Every figure is a throughput of the whole machine, not of the service \
             alone; the ratios compare like with like. Runs are a few seconds long and other \
             work on the machine shows up as noise: compare ratios more than absolute numbers.\n",
        );
        let warm = self
            .hot_warm
            .as_ref()
            .map(|w| {
                let n = self.plan.warm_hot.min(self.total_leads());
                let what = if n >= self.total_leads() {
                    format!("every lead's context ({}) was", human(n as u64))
                } else {
                    format!("the contexts of the {} hottest leads were", human(n as u64))
                };
                let l1 = self
                    .hot_l1_bytes
                    .map(|b| {
                        format!(
                            " L1 (`cache.l1_capacity_bytes` = {} MiB) is sized to hold them, \
                             as docs/operations.md tells an operator to size it for the hot set.",
                            b >> 20
                        )
                    })
                    .unwrap_or_default();
                format!(
                    " Before the sweep, {what} requested once, hottest first ({:.0} s at {} \
                     connections): all of them are then in Redis and in L1.{l1}",
                    w.elapsed_secs, w.connections,
                )
            })
            .unwrap_or_default();
        let serialize = self
            .micro
            .iter()
            .find(|m| m.id == "context_json/serialize_20_events")
            .map(|m| {
                format!(
                    " Serializing a context with 20 events takes {} on one core (criterion, \
                     below), paid once per fill from PostgreSQL, never on a hit.",
                    nanos(m.median_ns),
                )
            })
            .unwrap_or_default();
        let body = match (
            &self.ceilings.http_body,
            self.ceilings.http_at(CONNECTIONS),
            Self::at(&self.sweeps.hot, CONNECTIONS),
        ) {
            (Some(sized), Some(bare), Some(hot)) if sized.rps > 0.0 && bare > 0.0 => format!(
                " How much of the distance is the body's size: the trivial handler answering \
                 a {:.0} B document (a context's size, built once) makes {:.0} req/s, {:.0} % \
                 of its small answer's figure, and the cache-hot context is {:.0} % of that.",
                sized.mean_body,
                sized.rps,
                100.0 * sized.rps / bare,
                100.0 * hot.rps / sized.rps
            ),
            _ => String::new(),
        };
        let hot = self
            .hot_cache
            .map(|d| {
                format!(
                    " During the {CONNECTIONS}-connection run: {}.",
                    d.describe()
                )
            })
            .unwrap_or_default();
        let turns = self
            .hot_turns
            .as_ref()
            .and_then(|t| {
                let (turn, echo) = (t.median_rps(1)?, t.median_rps(0)?);
                Some(format!(
                    " The target's figure is read from runs that take turns with the trivial \
                     handler's, after the sweep ({} each at {CONNECTIONS} connections, the side \
                     that goes first alternating): the medians are {:.0} and {:.0} req/s, {:.0} \
                     %; every run's req/s in order, the context {}, the handler {}.",
                    t.runs[1].len(),
                    turn.rps,
                    echo.rps,
                    100.0 * turn.rps / echo.rps.max(1e-9),
                    t.each(1, |m| format!("{:.0}", m.rps)),
                    t.each(0, |m| format!("{:.0}", m.rps)),
                ))
            })
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- **(1) cache-hot context** is bounded by the HTTP stack and by the cache's \
             reach: an L1 hit costs the request's routing, the API-key check (a hash and an \
             in-process lookup) and copying the context's cached JSON (a few KiB) to the \
             socket; nothing is serialized per hit. A key L1 does not hold goes to Redis (one \
             round trip; the copy's header line is compared, nothing decoded) or PostgreSQL \
             (one statement).{body}{serialize}{warm}{hot}{turns}"
        );
        if let Some((run, delta)) = &self.hot_all {
            let _ = writeln!(
                md,
                "- **(1b) Zipf over all leads** is (1) without the cut: the tail the warm-up \
                 left out is loaded from PostgreSQL on its first request, each such load costs \
                 what (2) costs, and with {CONNECTIONS} connections sharing {POOL} database \
                 connections a few percent of loads set the pace for the rest ({:.0} req/s, \
                 p99 {:.3} ms). During the run: {}.",
                run.rps,
                run.p99_ms,
                delta.describe()
            );
        }
        let statement = match (
            self.ceilings.pg_at(Script::ContextStatement, POOL),
            Self::at(&self.sweeps.cold, CONNECTIONS),
        ) {
            (Some(alone), Some(cold)) if alone.tps > 0.0 => format!(
                " The statement alone, run by pgbench at {} clients with nothing around it, \
                 makes {:.0} tps: the service's {:.0} req/s (at {CONNECTIONS} connections) \
                 are {:.0} % of what PostgreSQL does with this statement on this machine, and \
                 the statement alone makes {:.0} % of the four-statement point select's tps at \
                 the same {} clients, the target's yardstick.",
                alone.clients,
                alone.tps,
                cold.rps,
                cold.rps * 100.0 / alone.tps,
                self.ceilings
                    .pg_at(Script::TenantSelect, alone.clients)
                    .map_or(0.0, |t| alone.tps * 100.0 / t.tps.max(1.0)),
                alone.clients,
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "- **(2) cache-cold context** is bounded by PostgreSQL and by the work around it: \
             one statement that sets the tenant in a leading CTE and gathers the five indexed \
             reads (lead, agent, open approvals, recent approvals, latest events) as JSON \
             subqueries, one round trip against the ceiling's four (the pool lends \
             connections without a ping, `test_before_acquire` is off and a dead connection \
             is rerun by the store's retry instead; sqlx still sends a `Sync` when a \
             connection goes back to the pool), but a statement that reads five indexes and \
             returns a few KiB, decoded and serialized by the service, through a pool of \
             {POOL} connections. \
             The growth curve shows how that cost moves as the tables outgrow \
             `shared_buffers` (128 MB) and reads come from the page cache.{statement}"
        );
        let _ = writeln!(
            md,
            "- **(3) lead by id** is the ceiling's primary-key select under the tenant's \
             policy, sent as one statement that sets the tenant itself (one round trip \
             where the ceiling makes four; compare it with the one-statement ceiling too), \
             plus HTTP, the API-key check (remembered in process after the first request) \
             and JSON."
        );
        let _ = writeln!(
            md,
            "- **(4) filtered page** reads 21 rows through a `(tenant_id, status, id)` or \
             `(tenant_id, assigned_agent_id, id)` index and serializes 20 leads; a tag filter \
             walks the tenant's `(tenant_id, id)` order and tests each row, because under the \
             tenant policy the GIN (tags) index is out of reach (`@>` is not leakproof: \
             docs/backends.md). Its ratio to a one-row ceiling shows the cost of the page."
        );
        let event_server = self
            .event_server
            .filter(|st| st.main_calls > 0 && st.main_rows > 0)
            .map(|st| {
                let per = |ms: f64| ms / st.main_rows as f64;
                format!(
                    " Per append the server executed the append statements for {:.3} ms and \
                     everything else the service sent for {:.3} ms (`pg_stat_statements`, {} \
                     appends with the warm-up in {} statements, {:.1} to a statement; \
                     wall-clock inside the server, waiting for a core included).",
                    per(st.main_ms),
                    per(st.other_ms + st.log_ms),
                    st.main_rows,
                    st.main_calls,
                    st.main_rows as f64 / st.main_calls as f64,
                )
            })
            .unwrap_or_default();
        let event_cpu = self
            .event_cpu
            .as_ref()
            .map(|(busy, shares)| cpu_sentence("append", *busy, shares))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- **(5) append event** is an autocommit statement like the ceiling's (it sets \
             the tenant in a leading CTE and inserts `ON CONFLICT DO NOTHING`; its foreign key \
             also checks the lead), shared by the appends of one tenant that arrive together \
             (one statement, one round trip and one commit for all of them), but it writes \
             three rows per event where the ceiling writes one (the event, its change-log row \
             and its audit record, each with its indexes), followed \
             by the cache invalidation (a Redis `MULTI`: `INCR`, `EXPIRE`, `DEL`, `PUBLISH`, \
             one more round trip), plus HTTP and the event's JSON in and out. The `INSERT` \
             itself, its index updates and the WAL write of each commit (shared with every \
             concurrent writer) cost the same on both sides, and that cost grows with the \
             table: the closer the two, the bigger the data set.{event_server}{event_cpu}"
        );
        let approve_server = self
            .approve_server
            .filter(|st| st.main_calls > 0)
            .map(|st| {
                let per = |ms: f64| ms / st.main_calls as f64;
                format!(
                    " Per approve the server executed the `UPDATE` for {:.3} ms, the statement \
                     that writes the event, its two change-log rows and their audit records \
                     for {:.3} ms, and everything else (`BEGIN`, the tenant, `COMMIT`) for \
                     {:.3} ms (`pg_stat_statements`, {} approves with the warm-up; times are \
                     wall-clock inside the server, so they include waiting for a core).",
                    per(st.main_ms),
                    per(st.log_ms),
                    per(st.other_ms),
                    st.main_calls,
                )
            })
            .unwrap_or_default();
        let approve_cpu = self
            .approve_cpu
            .as_ref()
            .map(|(busy, shares)| cpu_sentence("approve", *busy, shares))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- **(6) approve** is a conditional `UPDATE … WHERE status = 'pending' RETURNING`, \
             the `approval_decided` event and the invalidation in one transaction: two writes \
             per commit.{approve_server}{approve_cpu}"
        );
        let mix = self
            .mix_cache
            .map(|d| format!(" During the run: {}.", d.describe()))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- **(7) 90/10 mix**: every write invalidates a hot context in both tiers, so the \
             next read of that lead goes to PostgreSQL; the writes themselves cost what (5) \
             costs.{mix}"
        );
        let _ = writeln!(
            md,
            "- **Ceilings.** pgbench and redis-benchmark are C clients with prepared \
             statements or raw RESP: cheaper per request than any HTTP client, so a ratio \
             near 100 % is not reachable for an HTTP service. The trivial axum handler pays \
             the same HTTP costs as the service with none of its work."
        );
        md
    }
}

/// KiB as MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// 10k, 100k, 1M, …
fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 100_000 == 0 => format!("{}M", n as f64 / 1e6),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn nanos(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn utc_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The sweep's connection counts: `1/16/64/256`.
fn sweep_list() -> String {
    SWEEP
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

/// `value` with `decimals` decimals, or more where that many would put it
/// on the other side of `threshold` (or on it): 1.997 against a 2 × target
/// reads "1.997", not "2.00" beside "not met", and a 20.4 % cost against a
/// 20 % ceiling reads "20.4".
fn short_of(value: f64, threshold: f64, decimals: usize) -> String {
    let mut decimals = decimals;
    loop {
        let shown = format!("{value:.decimals$}");
        let misread = shown.parse::<f64>().is_ok_and(|v| {
            (v >= threshold) != (value >= threshold) || (v <= threshold) != (value <= threshold)
        });
        if !misread || decimals >= 6 {
            return shown;
        }
        decimals += 1;
    }
}

/// The programs whose share of the CPU the report gives: PostgreSQL's
/// backends, the service, the load generator (in the benchmark's own
/// process) and Redis.
pub const CPU_PROGRAMS: [&str; 4] = ["postgres", "leadline", "xtask", "redis-server"];

/// How busy the machine's cores were during a scenario (`busy`, and each
/// of [`CPU_PROGRAMS`]'s `shares`, in per cent), and what that says bounds
/// `what`.
fn cpu_sentence(what: &str, busy: f64, shares: &[f64]) -> String {
    let named: Vec<String> = CPU_PROGRAMS
        .iter()
        .zip(shares)
        .map(|(name, share)| format!("`{name}` {share:.0} %"))
        .collect();
    let verdict = if busy >= 90.0 {
        format!("the cores were saturated, so {what} is bound by CPU")
    } else {
        format!("the cores had room, so {what} waits on something else")
    };
    format!(
        " During the run the machine's cores were {busy:.0} % busy ({}; from `/proc`, the load \
         generator is `xtask`): {verdict}.",
        named.join(", ")
    )
}

/// What bounds the import, from the server's time per statement: a
/// paragraph, or nothing when the statistics were not read.
fn import_bound(t: &Transfer) -> String {
    let st = &t.server_time;
    if st.copy_ms <= 0.0 {
        return String::new();
    }
    let s = |ms: f64| ms / 1000.0;
    let writes = (st.main_ms + st.log_ms) / st.copy_ms;
    format!(
        "\nWhere the import's time goes (`pg_stat_statements`, execution time inside the \
         server): the import's statements ran for {:.1} s in all during its {:.1} s, {:.2} at \
         a time on average (it writes two batches at once, on two connections); the rest of \
         its time is parsing, binding and the network, and the client reading and checking \
         the rows. The `INSERT INTO leads` took {:.1} s, {:.2} × the {:.1} s the server spent \
         on `\\copy`'s `COPY` of the same rows; the statements that write the change log, the \
         `imported` events and the audit records took {:.1} s; everything else {:.1} s. The \
         writes every imported lead needs (a lead row, an event and two change-log rows with \
         their audit records, in the lead's transaction) cost the server {writes:.2} × what \
         `COPY` spends on the lead row alone; writing two batches at once puts both of this \
         machine's cores to that work, where `COPY` uses one.\n",
        s(st.busy_ms()),
        t.import_secs,
        st.busy_ms() / 1000.0 / t.import_secs.max(1e-9),
        s(st.main_ms),
        st.main_ms / st.copy_ms,
        s(st.copy_ms),
        s(st.log_ms),
        s(st.other_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::super::infra::PeakMemory;
    use super::*;

    fn transfer(split: super::super::data::StatementSplit) -> Transfer {
        Transfer {
            rows: 1_000_000,
            import_secs: 200.0,
            import_peak: PeakMemory {
                resident_kib: 1024,
                anonymous_kib: 512,
            },
            sqlite_import: (
                100.0,
                PeakMemory {
                    resident_kib: 1024,
                    anonymous_kib: 512,
                },
            ),
            copy_secs: 80.0,
            server_time: split,
            export_rows: 1_000_000,
            export_secs: 10.0,
        }
    }

    /// The import's bound is stated from the server's own times: the leads
    /// insert against `COPY`, and with the log statements; nothing when the
    /// statistics were not read.
    #[test]
    fn the_import_bound_is_read_from_the_server_times() {
        let split = super::super::data::StatementSplit {
            main_calls: 500,
            main_ms: 90_000.0,
            main_rows: 1_000_000,
            log_ms: 60_000.0,
            other_ms: 10_000.0,
            copy_ms: 75_000.0,
        };
        let text = import_bound(&transfer(split));
        assert!(
            text.contains("ran for 160.0 s in all during its 200.0 s, 0.80 at a time"),
            "{text}"
        );
        assert!(text.contains("took 90.0 s, 1.20 × the 75.0 s"), "{text}");
        assert!(
            text.contains("audit records took 60.0 s; everything else 10.0 s"),
            "{text}"
        );
        assert!(text.contains("cost the server 2.00 ×"), "{text}");
        assert_eq!(import_bound(&transfer(Default::default())), "");
    }

    /// A figure just short of its target is never shown as the target.
    #[test]
    fn a_miss_is_never_rounded_up_to_its_target() {
        assert_eq!(short_of(1.997_3, 2.0, 2), "1.997");
        assert_eq!(short_of(1.999_96, 2.0, 2), "1.99996");
        assert_eq!(short_of(1.92, 2.0, 2), "1.92");
        // Never shown on the threshold unless it is on it.
        assert_eq!(short_of(2.004, 2.0, 2), "2.004");
        assert_eq!(short_of(2.0, 2.0, 2), "2.00");
        assert_eq!(short_of(0.65, 0.5, 2), "0.65");
        assert_eq!(short_of(0.499_9, 0.5, 2), "0.4999");
        // A ceiling (≤): a miss is not rounded down onto it.
        assert_eq!(short_of(20.4, 20.0, 0), "20.4");
        assert_eq!(short_of(19.6, 20.0, 0), "19.6");
        assert_eq!(short_of(22.0, 20.0, 0), "22");
        assert_eq!(short_of(49.0, 50.0, 0), "49");
    }

    fn run(rps: f64, p50_ms: f64) -> Measured {
        Measured {
            label: String::new(),
            connections: 1,
            rps,
            p50_ms,
            p95_ms: p50_ms,
            p99_ms: p50_ms,
            p999_ms: p50_ms,
            errors: 0,
            first_error: None,
            mean_body: 0.0,
            exhausted: false,
            elapsed_secs: 10.0,
        }
    }

    /// Each side's median is its own: by throughput for the ratios of
    /// req/s, by p50 for the growth target, whatever order the runs came in.
    #[test]
    fn turns_give_each_side_its_own_median_run() {
        let turns = Turns {
            runs: [
                vec![run(300.0, 1.0), run(100.0, 3.0), run(200.0, 2.5)],
                vec![run(50.0, 9.0)],
            ],
        };
        let rps = |m: Option<&Measured>| m.map(|m| m.rps);
        assert_eq!(rps(turns.median_rps(0)), Some(200.0));
        assert_eq!(rps(turns.median_p50(0)), Some(200.0));
        assert_eq!(rps(turns.median_rps(1)), Some(50.0));
        assert_eq!(rps(turns.median_rps(2)), None);
        assert_eq!(turns.each(0, |m| format!("{:.0}", m.rps)), "300, 100, 200");
        assert!(Turns::default().median_p50(0).is_none());
    }

    #[test]
    fn counts_and_times_read_like_the_issue_states_them() {
        assert_eq!(human(10_000), "10k");
        assert_eq!(human(1_000_000), "1M");
        assert_eq!(human(1_500_000), "1.5M");
        assert_eq!(human(1_234), "1234");
        assert_eq!(nanos(38.94), "38.9 ns");
        assert_eq!(nanos(2_110.0), "2.11 µs");
        assert_eq!(nanos(3_500_000.0), "3.50 ms");
    }

    #[test]
    fn cache_deltas_subtract_and_tolerate_missing_counters() {
        let before = serde_json::json!({"l1": {"hits": 10, "misses": 5}, "loads": 5});
        let after =
            serde_json::json!({"l1": {"hits": 90, "misses": 10}, "l2": {"hits": 3}, "loads": 7});
        let delta = CacheDelta::between(&before, &after);
        assert_eq!(
            (delta.l1_hits, delta.l1_misses, delta.l2_hits, delta.loads),
            (80, 5, 3, 2)
        );
        assert!((delta.share(delta.l1_hits) - 80.0 / 85.0 * 100.0).abs() < 1e-9);
    }
}
