//! The requests of each scenario, as [`Workload`]s over the benchmark's
//! deterministic lead ids.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hyper::{StatusCode, header::HeaderValue};
use rand::{Rng as _, rngs::StdRng};

use super::{
    data::BenchTenant,
    ids,
    load::{Cursor, Request, Workload, Zipf},
};

/// The Zipf exponent of the "hot" scenarios (YCSB's default).
pub const ZIPF_EXPONENT: f64 = 0.99;

/// Scatters Zipf ranks over the leads: rank `k` is lead index
/// `k × SCATTER mod n`, a bijection because the multiplier is a prime larger
/// than any `n` used here. The hottest leads are thus spread over every
/// tenant and over old and new rows alike.
const SCATTER: u128 = 2_654_435_761;

/// A tenant as the load generator needs it.
#[derive(Debug, Clone)]
struct Caller {
    index: u32,
    auth: HeaderValue,
    agents: Vec<String>,
}

/// Everything the workloads choose from: tenants, their keys and agents,
/// and how many leads each has.
#[derive(Debug, Clone)]
pub struct Space {
    callers: Arc<[Caller]>,
    leads_per_tenant: u64,
    zipf: Arc<Zipf>,
}

impl Space {
    /// The space of `leads_per_tenant` leads in each of `tenants`.
    ///
    /// # Errors
    /// An API key that is not a valid header value.
    pub fn new(tenants: &[BenchTenant], leads_per_tenant: u64) -> anyhow::Result<Self> {
        let callers = tenants
            .iter()
            .map(|t| {
                let mut auth = HeaderValue::from_str(&t.bearer)?;
                auth.set_sensitive(true);
                Ok(Caller {
                    index: t.index,
                    auth,
                    agents: t.agents.iter().map(ToString::to_string).collect(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let total = callers.len() * leads_per_tenant as usize;
        Ok(Self {
            callers: callers.into(),
            leads_per_tenant,
            zipf: Arc::new(Zipf::new(total, ZIPF_EXPONENT)),
        })
    }

    /// Leads in all tenants.
    #[must_use]
    pub fn total(&self) -> usize {
        self.callers.len() * self.leads_per_tenant as usize
    }

    /// Lead index `i` in `0..total`: tenant `i mod T`, row `i / T`.
    fn lead(&self, i: usize) -> (&Caller, String) {
        let tenants = self.callers.len();
        let caller = &self.callers[i % tenants];
        let row = (i / tenants) as u64;
        (caller, ids::lead_id(caller.index, row).to_string())
    }

    fn uniform(&self, rng: &mut StdRng) -> (&Caller, String) {
        self.lead(rng.random_range(0..self.total()))
    }

    fn hot(&self, rng: &mut StdRng) -> (&Caller, String) {
        self.ranked(self.zipf.sample(rng))
    }

    /// The lead of Zipf rank `rank` (0: the hottest).
    fn ranked(&self, rank: usize) -> (&Caller, String) {
        let i = (rank as u128 * SCATTER % self.total() as u128) as usize;
        self.lead(i)
    }
}

/// `GET /v1/leads/{id}/context`, Zipf over the `hot_set` hottest leads
/// (scattered over every tenant): the leads [`context_hottest_once`] warmed,
/// so that the scenario measures the cache rather than first loads from
/// PostgreSQL. With `hot_set` at least [`Space::total`], every lead.
#[must_use]
pub fn context_hot(space: &Space, hot_set: usize) -> Workload {
    let space = space.clone();
    let zipf = if hot_set >= space.total() {
        Arc::clone(&space.zipf)
    } else {
        Arc::new(Zipf::new(hot_set.max(1), ZIPF_EXPONENT))
    };
    Arc::new(move |rng| {
        let (caller, id) = space.ranked(zipf.sample(rng));
        Some(context(caller, &id))
    })
}

/// `GET /v1/leads/{id}/context`, uniform over all leads.
#[must_use]
pub fn context_uniform(space: &Space) -> Workload {
    let space = space.clone();
    Arc::new(move |rng| {
        let (caller, id) = space.uniform(rng);
        Some(context(caller, &id))
    })
}

/// Each lead's context once, in lead-index order (for warming L1).
#[must_use]
pub fn context_each_once(space: &Space, count: usize) -> Workload {
    let space = space.clone();
    let cursor = Arc::new(Cursor::default());
    let count = count.min(space.total());
    Arc::new(move |_| {
        let (caller, id) = space.lead(cursor.next(count)?);
        Some(context(caller, &id))
    })
}

/// The contexts of the `count` hottest leads (Zipf rank order), once each:
/// warms both cache tiers before the cache-hot scenario.
#[must_use]
pub fn context_hottest_once(space: &Space, count: usize) -> Workload {
    let space = space.clone();
    let cursor = Arc::new(Cursor::default());
    let count = count.min(space.total());
    Arc::new(move |_| {
        let (caller, id) = space.ranked(cursor.next(count)?);
        Some(context(caller, &id))
    })
}

fn context(caller: &Caller, id: &str) -> Request {
    Request::get(format!("/v1/leads/{id}/context"), Some(caller.auth.clone()))
}

/// `GET /v1/leads/{id}`, uniform.
#[must_use]
pub fn lead_by_id(space: &Space) -> Workload {
    let space = space.clone();
    Arc::new(move |rng| {
        let (caller, id) = space.uniform(rng);
        Some(Request::get(
            format!("/v1/leads/{id}"),
            Some(caller.auth.clone()),
        ))
    })
}

/// `GET /v1/leads/{id}/events?limit=20`: the newest page of a lead's
/// timeline, uniform.
#[must_use]
pub fn timeline(space: &Space) -> Workload {
    let space = space.clone();
    Arc::new(move |rng| {
        let (caller, id) = space.uniform(rng);
        Some(Request::get(
            format!("/v1/leads/{id}/events?limit=20"),
            Some(caller.auth.clone()),
        ))
    })
}

/// `GET /v1/leads?…&limit=20`: a status (half the requests), a tag (a
/// quarter) or an agent (a quarter), and half of them from a cursor at a
/// random lead (a later page) rather than from the newest.
#[must_use]
pub fn leads_page(space: &Space) -> Workload {
    const STATUSES: [&str; 6] = ["new", "contacted", "qualified", "nurturing", "won", "lost"];
    const TAGS: [&str; 8] = [
        "vip",
        "b2b",
        "enterprise",
        "smb",
        "warm",
        "cold",
        "q4",
        "partner",
    ];
    let space = space.clone();
    Arc::new(move |rng| {
        let (caller, id) = space.uniform(rng);
        let filter = match rng.random_range(0..4) {
            0 | 1 => format!("status={}", STATUSES[rng.random_range(0..STATUSES.len())]),
            2 => format!("tag={}", TAGS[rng.random_range(0..TAGS.len())]),
            _ => format!(
                "assigned_agent_id={}",
                caller.agents[rng.random_range(0..caller.agents.len())]
            ),
        };
        let cursor = if rng.random_bool(0.5) {
            let uuid: uuid::Uuid = id.parse().unwrap_or_default();
            let mut bytes = [0u8; 17];
            bytes[0] = 1;
            bytes[1..].copy_from_slice(uuid.as_bytes());
            format!("&cursor={}", URL_SAFE_NO_PAD.encode(bytes))
        } else {
            String::new()
        };
        Some(Request::get(
            format!("/v1/leads?{filter}&limit=20{cursor}"),
            Some(caller.auth.clone()),
        ))
    })
}

/// `GET /v1/leads/search?q=FIRST+LAST&status=S&limit=20`: the first and
/// last name of one of 2,000 generated leads (spread over every tenant and
/// row), with its status as the filter: two words that always find at
/// least that lead. With `typo`, the last name's last letter is replaced
/// (`Harris` → `Harrix`), so that term is looked up among the tenant's
/// words as a typo first.
///
/// # Errors
/// A lead the generator cannot make.
pub fn search(tenants: &[BenchTenant], space: &Space, typo: bool) -> anyhow::Result<Workload> {
    const QUERIES: u64 = 2_000;
    let percent = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut queries = Vec::with_capacity(QUERIES as usize);
    for k in 0..QUERIES {
        let caller = &space.callers[(k as usize) % space.callers.len()];
        let tenant = tenants
            .iter()
            .find(|t| t.index == caller.index)
            .ok_or_else(|| anyhow::anyhow!("no tenant {}", caller.index))?;
        let row = (k * 7_919) % space.leads_per_tenant.max(1);
        let lead = tenant.seed.lead(row, &tenant.agents)?;
        let mut last = lead.last_name.as_str().to_owned();
        if typo && last.chars().count() >= leadline_domain::search::FUZZY_MIN_CHARS {
            let end = last.pop().unwrap_or('x');
            last.push(if end.eq_ignore_ascii_case(&'x') {
                'q'
            } else {
                'x'
            });
        }
        let q = format!("{} {last}", lead.first_name.as_str());
        queries.push(Request::get(
            format!(
                "/v1/leads/search?q={}&status={}&limit=20",
                percent(&q),
                lead.status.as_str()
            ),
            Some(caller.auth.clone()),
        ));
    }
    let queries: Arc<[Request]> = queries.into();
    Ok(Arc::new(move |rng| {
        Some(queries[rng.random_range(0..queries.len())].clone())
    }))
}

/// The three analytics reports of a random tenant, in turn: the funnel by
/// week and activity by day over the last 90 days, and the agents.
#[must_use]
pub fn analytics(space: &Space) -> Workload {
    let space = space.clone();
    let to = chrono::Utc::now().date_naive();
    let from = to - chrono::Days::new(89);
    let uris: Arc<[String]> = [
        format!("/v1/analytics/funnel?from={from}&to={to}&interval=week"),
        "/v1/analytics/agents".to_owned(),
        format!("/v1/analytics/activity?from={from}&to={to}"),
    ]
    .into();
    Arc::new(move |rng| {
        let caller = &space.callers[rng.random_range(0..space.callers.len())];
        let uri = &uris[rng.random_range(0..uris.len())];
        Some(Request::get(uri.clone(), Some(caller.auth.clone())))
    })
}

/// `POST /v1/leads/{id}/events`: a note by one of the tenant's agents, on a
/// uniform (`hot = false`) or Zipf-distributed lead.
#[must_use]
pub fn append_event(space: &Space, hot: bool) -> Workload {
    let space = space.clone();
    Arc::new(move |rng| Some(event(&space, rng, hot)))
}

fn event(space: &Space, rng: &mut StdRng, hot: bool) -> Request {
    let (caller, id) = if hot {
        space.hot(rng)
    } else {
        space.uniform(rng)
    };
    let agent = &caller.agents[rng.random_range(0..caller.agents.len())];
    Request::post(
        format!("/v1/leads/{id}/events"),
        caller.auth.clone(),
        format!(
            r#"{{"kind":"note","direction":"internal","content":"Benchmark note: asked for a follow-up call next week.","actor":"{agent}"}}"#
        ),
        StatusCode::CREATED,
    )
}

/// `POST /v1/approvals/{id}/approve`, each pending approval once:
/// `(tenant index, approval id, approving agent)`.
#[must_use]
pub fn approve(
    space: &Space,
    pending: Vec<(u32, uuid::Uuid, leadline_domain::AgentId)>,
) -> Workload {
    let space = space.clone();
    let pending: Arc<[_]> = pending.into();
    let cursor = Arc::new(Cursor::default());
    Arc::new(move |_| {
        let (tenant, id, agent) = pending[cursor.next(pending.len())?];
        let caller = space.callers.iter().find(|c| c.index == tenant)?;
        Some(Request::post(
            format!("/v1/approvals/{id}/approve"),
            caller.auth.clone(),
            format!(r#"{{"decided_by":"{agent}"}}"#),
            StatusCode::OK,
        ))
    })
}

/// 90 % `GET …/context` (Zipf), 10 % `POST …/events` (Zipf, so writes
/// invalidate the contexts that are read).
#[must_use]
pub fn mix(space: &Space) -> Workload {
    let space = space.clone();
    Arc::new(move |rng| {
        if rng.random_bool(0.9) {
            let (caller, id) = space.hot(rng);
            Some(context(caller, &id))
        } else {
            Some(event(&space, rng, true))
        }
    })
}

/// `GET /` on the trivial JSON server.
#[must_use]
pub fn echo() -> Workload {
    Arc::new(|_| Some(Request::get("/".to_owned(), None)))
}

/// `GET /body` on the trivial JSON server: its document of a context's
/// size.
#[must_use]
pub fn echo_body() -> Workload {
    Arc::new(|_| Some(Request::get("/body".to_owned(), None)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng as _;

    use super::*;

    fn space(tenants: u32, leads_per_tenant: u64) -> Space {
        let callers: Vec<Caller> = (0..tenants)
            .map(|index| Caller {
                index,
                auth: HeaderValue::from_static("Bearer ll_test"),
                agents: Vec::new(),
            })
            .collect();
        let total = callers.len() * leads_per_tenant as usize;
        Space {
            callers: callers.into(),
            leads_per_tenant,
            zipf: Arc::new(Zipf::new(total, ZIPF_EXPONENT)),
        }
    }

    fn paths(workload: &Workload, rng: &mut StdRng, draws: usize) -> Vec<String> {
        (0..draws)
            .map_while(|_| workload(rng))
            .map(|r| r.path)
            .collect()
    }

    #[test]
    fn the_cache_hot_scenario_reads_only_what_the_warm_up_loaded() {
        let space = space(5, 2_000);
        let hot_set = 1_000;
        let mut rng = StdRng::seed_from_u64(7);
        let warmed: HashSet<String> =
            paths(&context_hottest_once(&space, hot_set), &mut rng, usize::MAX)
                .into_iter()
                .collect();
        assert_eq!(warmed.len(), hot_set, "the warm-up names each lead once");

        let hot = paths(&context_hot(&space, hot_set), &mut rng, 20_000);
        assert_eq!(hot.len(), 20_000);
        let outside = hot.iter().filter(|p| !warmed.contains(*p)).count();
        assert_eq!(outside, 0, "cache-hot draws outside the warmed set");

        // Over all leads, about a quarter of the draws fall in the tail the
        // warm-up left out: that is the run reported separately.
        let all = paths(&context_hot(&space, space.total()), &mut rng, 20_000);
        let outside = all.iter().filter(|p| !warmed.contains(*p)).count();
        let expected = (1.0 - space.zipf.head_share(hot_set)) * 20_000.0;
        assert!(
            (outside as f64 - expected).abs() < expected * 0.1,
            "{outside} draws outside the warmed set, expected about {expected:.0}"
        );
    }

    #[test]
    fn a_hot_set_as_large_as_the_data_is_every_lead() {
        let space = space(2, 50);
        let mut rng = StdRng::seed_from_u64(3);
        let seen: HashSet<String> = paths(&context_hot(&space, 1_000), &mut rng, 50_000)
            .into_iter()
            .collect();
        let every: HashSet<String> = paths(&context_each_once(&space, 100), &mut rng, 1_000)
            .into_iter()
            .collect();
        assert_eq!(every.len(), 100);
        assert_eq!(seen, every);
    }
}
