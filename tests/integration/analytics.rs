//! Analytics against real databases: a known history (status moves,
//! client-logged touches on several days and channels, approvals decided
//! and sent by different agents, a deleted lead), every figure of the three
//! reports checked against a ground truth computed here from the leads,
//! timelines and approvals read back. PostgreSQL serves materialized views:
//! after more writes its answers stay those of the last refresh (same
//! `as_of`) until the next one, which brings them to the new truth. SQLite
//! counts when asked. And the views' walls: the service role cannot read or
//! refresh a materialized view, and each tenant sees only its own rows.

use std::collections::{BTreeMap, HashMap};

use axum::{Router, http::StatusCode};
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use leadline_app::Services;
use leadline_domain::{
    Agent, AppendEventRequest, Approval, ApprovalAction, ApprovalStatus, Channel, Direction,
    DraftApprovalRequest, Event, EventKind, Lead, LeadStatus, MessageBody, Metadata, PageLimit,
    RejectionReason, TenantId, TimelineCursor, TimelineQuery, UpdateLeadRequest,
};
use leadline_http::{AppState, router};
use leadline_store::Store;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::support::{agent_req, lead_req, new_tenant, services};

mod sqlite {
    #[tokio::test]
    async fn figures_match_a_ground_truth_before_and_after_a_refresh() {
        let (store, path) = crate::support::sqlite_file_store().await;
        super::figures_match_a_ground_truth_before_and_after_a_refresh(
            store,
            crate::support::Owner::Sqlite(crate::support::sqlite_url(&path)),
        )
        .await;
    }
}

mod postgres {
    #[tokio::test]
    async fn figures_match_a_ground_truth_before_and_after_a_refresh() {
        let (owner, service) = crate::support::isolated_pg("leadline_analytics").await;
        super::figures_match_a_ground_truth_before_and_after_a_refresh(
            crate::support::store_at(&service).await,
            crate::support::Owner::Postgres(owner),
        )
        .await;
    }
}

async fn get(app: &Router, key: &str, uri: &str) -> (StatusCode, Value) {
    let answer = crate::support::call(app, key, axum::http::Method::GET, uri, None, &[]).await;
    (answer.status, answer.body)
}

/// What the test wrote and must read back: lead ids (with the deleted
/// ones' last state and events, which can no longer be read), approvals.
#[derive(Default)]
struct History {
    leads: Vec<Lead>,
    deleted: Vec<(Lead, Vec<Event>)>,
    approvals: Vec<Approval>,
}

struct Fixture {
    s: Services,
    owner: crate::support::Owner,
    tenant: TenantId,
    agents: Vec<Agent>,
    history: History,
}

impl Fixture {
    async fn lead(&mut self, name: &str, status: LeadStatus, agent: Option<usize>) -> Lead {
        let mut req = lead_req(name);
        req.status = status;
        req.assigned_agent_id = agent.map(|i| self.agents[i].id);
        let lead = self.s.leads.create(self.tenant, &req).await.unwrap();
        self.history.leads.push(lead.clone());
        lead
    }

    /// Moves the lead's creation and history back `days`.
    async fn backdate(&mut self, lead: &Lead, days: i64) -> Lead {
        self.owner.backdate(self.tenant, lead, days).await;
        let moved = self.s.leads.get(self.tenant, lead.id).await.unwrap();
        for l in &mut self.history.leads {
            if l.id == lead.id {
                *l = moved.clone();
            }
        }
        moved
    }

    async fn moves(&self, lead: &Lead, path: &[LeadStatus]) {
        let mut version = self
            .s
            .leads
            .get(self.tenant, lead.id)
            .await
            .unwrap()
            .version;
        for status in path {
            let req = UpdateLeadRequest {
                expected_version: version,
                status: Some(*status),
                ..UpdateLeadRequest::default()
            };
            version = self
                .s
                .leads
                .update(self.tenant, lead.id, &req)
                .await
                .unwrap()
                .version;
        }
    }

    async fn touch(
        &self,
        lead: &Lead,
        kind: EventKind,
        direction: Direction,
        days_ago: u64,
        metadata: Value,
    ) {
        let req = AppendEventRequest {
            kind,
            direction,
            content: None,
            occurred_at: (days_ago > 0).then(|| Utc::now() - Days::new(days_ago)),
            actor: None,
            metadata: Metadata::new(metadata).unwrap(),
        };
        self.s
            .timeline
            .append(self.tenant, lead.id, &req)
            .await
            .unwrap();
    }

    async fn message(&mut self, lead: &Lead, channel: Channel, by: usize, then: &[(usize, &str)]) {
        let draft = DraftApprovalRequest {
            channel,
            subject: None,
            body: MessageBody::new("Hello").unwrap(),
            requested_by: self.agents[by].id,
        };
        let mut approval = self
            .s
            .approvals
            .draft(self.tenant, lead.id, &draft)
            .await
            .unwrap();
        for (who, what) in then {
            let by = self.agents[*who].id;
            let action = match *what {
                "approve" => ApprovalAction::Approve { by },
                "send" => ApprovalAction::MarkSent { by },
                "cancel" => ApprovalAction::Cancel { by },
                _ => ApprovalAction::Reject {
                    by,
                    reason: RejectionReason::new("Not now").unwrap(),
                },
            };
            approval = self
                .s
                .approvals
                .act(self.tenant, approval.id, &action)
                .await
                .unwrap();
        }
        self.history.approvals.push(approval);
    }

    async fn timeline(&self, lead: &Lead) -> Vec<Event> {
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let query = TimelineQuery {
                limit: PageLimit::new(200).unwrap(),
                after,
            };
            let page = self
                .s
                .timeline
                .timeline(self.tenant, lead.id, &query)
                .await
                .unwrap();
            after = page
                .items
                .last()
                .map(|e| TimelineCursor::new(e.occurred_at, e.id).unwrap());
            events.extend(page.items);
            if !page.has_more {
                return events;
            }
        }
    }

    async fn delete(&mut self, lead: &Lead) {
        let last = self.s.leads.get(self.tenant, lead.id).await.unwrap();
        let events = self.timeline(lead).await;
        self.s.leads.delete(self.tenant, lead.id).await.unwrap();
        self.history.leads.retain(|l| l.id != lead.id);
        self.history.deleted.push((last, events));
    }

    /// Every lead as stored now, with its events and whether it is deleted.
    async fn read_back(&self) -> (Vec<(Lead, Vec<Event>, bool)>, Vec<Approval>) {
        let mut leads = Vec::new();
        for lead in &self.history.leads {
            let now = self.s.leads.get(self.tenant, lead.id).await.unwrap();
            let events = self.timeline(&now).await;
            leads.push((now, events, false));
        }
        for (lead, events) in &self.history.deleted {
            leads.push((lead.clone(), events.clone(), true));
        }
        let mut approvals = Vec::new();
        for a in &self.history.approvals {
            approvals.push(self.s.approvals.get(self.tenant, a.id).await.unwrap());
        }
        (leads, approvals)
    }
}

/// An agent's leads owned, approvals drafted, approved and rejected,
/// messages sent and median first-touch seconds.
type Figures = (u64, u64, u64, u64, u64, Option<f64>);

/// The figures the reports should show, computed here from what was read
/// back, by the rules as docs/operations.md states them.
#[derive(Debug, PartialEq)]
struct Truth {
    /// (day, status) → entries.
    funnel: BTreeMap<(NaiveDate, String), u64>,
    /// agent → (owned, drafted, approved, rejected, sent, median seconds).
    agents: BTreeMap<String, Figures>,
    /// (day, channel, direction) → events.
    activity: BTreeMap<(NaiveDate, String, String), u64>,
    /// stage → (leads that first entered it in the range, of them those
    /// that entered the next stage at or after that).
    conversion: BTreeMap<String, (u64, u64)>,
}

fn channel_of(event: &Event) -> String {
    let named = event
        .metadata
        .as_map()
        .get("channel")
        .and_then(Value::as_str);
    if let Some(c) = named.filter(|c| ["email", "sms", "call", "linkedin"].contains(c)) {
        return c.to_owned();
    }
    let kind = event.kind.as_str();
    if kind.starts_with("email_") {
        "email"
    } else if kind.starts_with("sms_") {
        "sms"
    } else if kind == "call" || kind == "meeting" {
        kind
    } else {
        "other"
    }
    .to_owned()
}

fn truth(
    agents: &[Agent],
    leads: &[(Lead, Vec<Event>, bool)],
    approvals: &[Approval],
    range: (NaiveDate, NaiveDate),
) -> Truth {
    let within = |d: NaiveDate| range.0 <= d && d <= range.1;
    let mut funnel = BTreeMap::new();
    let mut activity = BTreeMap::new();
    let mut conversion: BTreeMap<String, (u64, u64)> = ["new", "contacted", "qualified"]
        .iter()
        .map(|s| ((*s).to_owned(), (0, 0)))
        .collect();
    for (lead, events, _) in leads {
        let mut moves: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == EventKind::StatusChanged)
            .collect();
        moves.sort_by_key(|e| (e.occurred_at, e.id));
        let first = moves.first().map_or(lead.status.as_str().to_owned(), |e| {
            e.metadata.as_map()["from"].as_str().unwrap().to_owned()
        });
        let mut entries = vec![(lead.created_at, first)];
        for m in &moves {
            let to = m.metadata.as_map()["to"].as_str().unwrap().to_owned();
            entries.push((m.occurred_at, to));
        }
        // Per stage, the lead's first and last entry; a cohort member
        // converted when it entered the next stage at or after its first
        // entry into this one.
        let span = |status: &str| {
            let times: Vec<DateTime<Utc>> = entries
                .iter()
                .filter(|(_, s)| s == status)
                .map(|(t, _)| *t)
                .collect();
            Some((*times.iter().min()?, *times.iter().max()?))
        };
        for (stage, next) in [
            ("new", "contacted"),
            ("contacted", "qualified"),
            ("qualified", "won"),
        ] {
            if let Some((first, _)) = span(stage).filter(|(f, _)| within(f.date_naive())) {
                let cohort = conversion.get_mut(stage).unwrap();
                cohort.0 += 1;
                if span(next).is_some_and(|(_, last)| last >= first) {
                    cohort.1 += 1;
                }
            }
        }
        for (at, status) in entries.into_iter().filter(|(t, _)| within(t.date_naive())) {
            *funnel.entry((at.date_naive(), status)).or_insert(0) += 1;
        }
        for e in events.iter().filter(|e| within(e.occurred_at.date_naive())) {
            let key = (
                e.occurred_at.date_naive(),
                channel_of(e),
                e.direction.as_str().to_owned(),
            );
            *activity.entry(key).or_insert(0) += 1;
        }
    }
    let mut figures = BTreeMap::new();
    for agent in agents {
        let id = Some(agent.id);
        let owned: Vec<&(Lead, Vec<Event>, bool)> = leads
            .iter()
            .filter(|(l, _, deleted)| !deleted && l.assigned_agent_id == id)
            .collect();
        let count =
            |f: &dyn Fn(&Approval) -> bool| approvals.iter().filter(|a| f(a)).count() as u64;
        let mut micros: Vec<i64> = owned
            .iter()
            .filter_map(|(lead, events, _)| {
                events
                    .iter()
                    .filter(|e| {
                        e.direction == Direction::Outbound && e.occurred_at >= lead.created_at
                    })
                    .map(|e| e.occurred_at)
                    .min()
                    .map(|t: DateTime<Utc>| (t - lead.created_at).num_microseconds().unwrap())
            })
            .collect();
        micros.sort_unstable();
        let median = match micros.len() {
            0 => None,
            n if n % 2 == 1 => Some(micros[n / 2] as f64 / 1e6),
            n => Some((micros[n / 2 - 1] + micros[n / 2]) as f64 / 2.0 / 1e6),
        };
        figures.insert(
            agent.id.to_string(),
            (
                owned.len() as u64,
                count(&|a| a.requested_by == agent.id),
                count(&|a| {
                    a.decided_by == id
                        && matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Sent)
                }),
                count(&|a| a.decided_by == id && a.status == ApprovalStatus::Rejected),
                count(&|a| a.sent_by == id && a.status == ApprovalStatus::Sent),
                median,
            ),
        );
    }
    Truth {
        funnel,
        agents: figures,
        activity,
        conversion,
    }
}

/// The three reports as the API gives them, in [`Truth`]'s shape, with
/// their `as_of`s.
async fn reported(app: &Router, key: &str, range: (NaiveDate, NaiveDate)) -> (Truth, Vec<String>) {
    let q = format!("from={}&to={}", range.0, range.1);
    let (status, funnel) = get(app, key, &format!("/v1/analytics/funnel?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{funnel}");
    let (status, agents) = get(app, key, "/v1/analytics/agents").await;
    assert_eq!(status, StatusCode::OK, "{agents}");
    let (status, activity) = get(app, key, &format!("/v1/analytics/activity?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{activity}");

    let day = |v: &Value| v.as_str().unwrap().parse::<NaiveDate>().unwrap();
    let mut by_day = BTreeMap::new();
    let mut totals: HashMap<String, u64> = HashMap::new();
    for bucket in funnel["intervals"].as_array().unwrap() {
        for stage in bucket["stages"].as_array().unwrap() {
            let n = stage["entered"].as_u64().unwrap();
            let status = stage["status"].as_str().unwrap().to_owned();
            *totals.entry(status.clone()).or_default() += n;
            if n > 0 {
                by_day.insert((day(&bucket["start"]), status), n);
            }
        }
    }
    // The whole-range figures agree with the buckets.
    for stage in funnel["stages"].as_array().unwrap() {
        let status = stage["status"].as_str().unwrap();
        assert_eq!(
            stage["entered"].as_u64(),
            Some(totals.get(status).copied().unwrap_or(0)),
            "{funnel}"
        );
    }
    let mut conversion = BTreeMap::new();
    for c in funnel["conversion"].as_array().unwrap() {
        let (leads, converted) = (
            c["leads"].as_u64().unwrap(),
            c["converted"].as_u64().unwrap(),
        );
        let expected =
            (leads > 0).then(|| ((converted as f64 / leads as f64) * 10_000.0).round() / 10_000.0);
        assert_eq!(c["rate"].as_f64(), expected, "{c}");
        assert!(converted <= leads, "{c}");
        conversion.insert(c["from"].as_str().unwrap().to_owned(), (leads, converted));
    }

    let mut figures = BTreeMap::new();
    for a in agents["agents"].as_array().unwrap() {
        let n = |f: &str| a[f].as_u64().unwrap();
        figures.insert(
            a["agent_id"].as_str().unwrap().to_owned(),
            (
                n("leads_owned"),
                n("approvals_drafted"),
                n("approvals_approved"),
                n("approvals_rejected"),
                n("messages_sent"),
                a["median_first_touch_seconds"].as_f64(),
            ),
        );
    }

    let mut events = BTreeMap::new();
    for bucket in activity["intervals"].as_array().unwrap() {
        for c in bucket["counts"].as_array().unwrap() {
            let key = (
                day(&bucket["start"]),
                c["channel"].as_str().unwrap().to_owned(),
                c["direction"].as_str().unwrap().to_owned(),
            );
            events.insert(key, c["events"].as_u64().unwrap());
        }
    }
    let as_of = [&funnel, &agents, &activity]
        .iter()
        .map(|r| r["as_of"].as_str().unwrap().to_owned())
        .collect();
    (
        Truth {
            funnel: by_day,
            agents: figures,
            activity: events,
            conversion,
        },
        as_of,
    )
}

/// Equal, medians within a microsecond (both sides divide the same whole
/// microseconds, but by different paths).
fn assert_matches(reported: &Truth, truth: &Truth, when: &str) {
    assert_eq!(reported.funnel, truth.funnel, "{when}: funnel");
    assert_eq!(reported.conversion, truth.conversion, "{when}: conversion");
    assert_eq!(reported.activity, truth.activity, "{when}: activity");
    assert_eq!(
        reported.agents.keys().collect::<Vec<_>>(),
        truth.agents.keys().collect::<Vec<_>>(),
        "{when}: agents"
    );
    for (agent, r) in &reported.agents {
        let t = &truth.agents[agent];
        assert_eq!(
            (r.0, r.1, r.2, r.3, r.4),
            (t.0, t.1, t.2, t.3, t.4),
            "{when}: {agent}"
        );
        match (r.5, t.5) {
            (Some(a), Some(b)) => {
                assert!((a - b).abs() < 1e-6, "{when}: {agent} median {a} vs {b}")
            }
            (a, b) => assert_eq!(a, b, "{when}: {agent} median"),
        }
    }
}

async fn figures_match_a_ground_truth_before_and_after_a_refresh(
    store: Store,
    owner: crate::support::Owner,
) {
    let postgres = store.backend() == leadline_store::Backend::Postgres;
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (tenant, key) = new_tenant(&s).await;
    let mut agents = Vec::new();
    for email in ["a@acme.example", "b@acme.example", "c@acme.example"] {
        agents.push(s.agents.create(tenant, &agent_req(email)).await.unwrap());
    }
    let mut f = Fixture {
        s: s.clone(),
        owner,
        tenant,
        agents: agents.clone(),
        history: History::default(),
    };
    // Today's and tomorrow's buckets both: a run across midnight still
    // counts every write.
    let today = Utc::now().date_naive();
    let range = (today - Days::new(30), today + Days::new(1));

    use Direction::{Inbound, Internal, Outbound};
    use EventKind::{Call, EmailReceived, Meeting, Note, SmsReceived};
    use LeadStatus::{Contacted, Lost, New, Nurturing, Qualified, Won};
    // Created 12 days ago, moved twice that day; won today. Touched before
    // (inbound) and after its first outbound call.
    let won = f.lead("Wendy", New, Some(0)).await;
    f.moves(&won, &[Contacted, Qualified]).await;
    let won = f.backdate(&won, 12).await;
    f.moves(&won, &[Won]).await;
    f.touch(&won, EmailReceived, Inbound, 11, json!({})).await;
    f.touch(&won, Call, Outbound, 10, json!({})).await;
    f.touch(&won, Call, Outbound, 0, json!({})).await;
    let talked = f.lead("Tom", New, Some(0)).await;
    let talked = f.backdate(&talked, 5).await;
    f.moves(&talked, &[Contacted]).await;
    f.touch(&talked, Meeting, Outbound, 3, json!({})).await;
    // Created before the range: only its move to lost is counted.
    let lost = f.lead("Lou", New, Some(0)).await;
    let lost = f.backdate(&lost, 45).await;
    f.touch(&lost, SmsReceived, Inbound, 40, json!({})).await;
    f.moves(&lost, &[Lost]).await;
    let gone = f.lead("Gus", New, Some(0)).await;
    let gone = f.backdate(&gone, 2).await;
    f.touch(&gone, Call, Outbound, 0, json!({})).await;
    let qualified = f.lead("Quinn", New, Some(1)).await;
    let qualified = f.backdate(&qualified, 7).await;
    f.moves(&qualified, &[Contacted, Qualified]).await;
    f.touch(
        &qualified,
        Note,
        Outbound,
        6,
        json!({"channel": "linkedin"}),
    )
    .await;
    let warm = f.lead("Nia", New, Some(1)).await;
    f.moves(&warm, &[Nurturing]).await;
    let unowned = f.lead("Una", New, None).await;
    let unowned = f.backdate(&unowned, 20).await;
    f.touch(&unowned, Note, Internal, 19, json!({"channel": "pigeon"}))
        .await;
    f.touch(&unowned, Note, Internal, 1, json!({})).await;
    // Contacted twice (lost, kept warm, contacted again): one lead of the
    // new cohort, converted once.
    let again = f.lead("Rex", New, Some(1)).await;
    f.moves(&again, &[Contacted, Lost, Nurturing, Contacted])
        .await;
    // Created straight into contacted, then moved on: it entered contacted
    // at creation, qualified later.
    let direct = f.lead("Dee", Contacted, None).await;
    f.moves(&direct, &[Qualified]).await;

    f.message(&talked, Channel::Email, 0, &[(1, "approve"), (1, "send")])
        .await;
    f.message(&lost, Channel::Email, 0, &[(1, "reject")]).await;
    f.message(&qualified, Channel::Sms, 1, &[(0, "approve"), (0, "send")])
        .await;
    f.message(&warm, Channel::Email, 1, &[(1, "cancel")]).await;
    f.message(&won, Channel::Call, 0, &[(2, "approve")]).await;
    f.delete(&gone).await;

    let refresh = async || {
        crate::support::eventually(
            "a refresh",
            std::time::Duration::from_secs(60),
            async || {
                s.analytics
                    .refresh()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "another refresh holds the lock".to_owned())
            },
        )
        .await
    };
    if postgres {
        refresh().await;
    } else {
        assert_eq!(
            s.analytics.refresh().await.unwrap(),
            None,
            "SQLite has nothing to refresh"
        );
    }
    let (leads, approvals) = f.read_back().await;
    let first_truth = truth(&agents, &leads, &approvals, range);
    // The history reaches every figure.
    assert!(first_truth.funnel.len() >= 5, "{first_truth:?}");
    assert!(
        first_truth
            .agents
            .values()
            .filter(|a| a.5.is_some())
            .count()
            == 2,
        "{first_truth:?}"
    );
    let (new_leads, new_converted) = first_truth.conversion["new"];
    assert!(
        new_converted > 0 && new_converted < new_leads,
        "{first_truth:?}"
    );
    assert!(
        first_truth.activity.keys().any(|k| k.1 == "linkedin"),
        "{first_truth:?}"
    );
    let (first, first_as_of) = reported(&app, &key, range).await;
    assert_matches(&first, &first_truth, "after the first refresh");

    // More history: a new agent's leads and messages.
    let fresh = f.lead("Fay", New, Some(2)).await;
    let fresh = f.backdate(&fresh, 3).await;
    f.moves(&fresh, &[Contacted]).await;
    f.touch(&fresh, Call, Outbound, 1, json!({})).await;
    f.message(&fresh, Channel::Email, 2, &[(0, "approve")])
        .await;
    f.lead("Flo", Nurturing, Some(2)).await;
    let (leads, approvals) = f.read_back().await;
    let second_truth = truth(&agents, &leads, &approvals, range);
    assert_ne!(
        second_truth, first_truth,
        "the second round changed the figures"
    );

    let (before, before_as_of) = reported(&app, &key, range).await;
    if postgres {
        // Served from the views: as of the last refresh, unchanged.
        assert_eq!(before_as_of, first_as_of);
        assert_matches(&before, &first_truth, "before the second refresh");
        refresh().await;
        let (after, after_as_of) = reported(&app, &key, range).await;
        assert!(
            after_as_of[0] > first_as_of[0],
            "{after_as_of:?} after {first_as_of:?}"
        );
        assert_matches(&after, &second_truth, "after the second refresh");
    } else {
        assert_matches(&before, &second_truth, "SQLite counts when asked");
    }

    // Weeks are the days' sums, Monday to Sunday.
    let q = format!("from={}&to={}&interval=week", range.0, range.1);
    let (status, weekly) = get(&app, &key, &format!("/v1/analytics/funnel?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{weekly}");
    let mut weeks: BTreeMap<(NaiveDate, String), u64> = BTreeMap::new();
    for ((day, status), n) in &second_truth.funnel {
        let monday = *day - Days::new(u64::from(day.weekday().num_days_from_monday()));
        *weeks.entry((monday, status.clone())).or_default() += n;
    }
    for bucket in weekly["intervals"].as_array().unwrap() {
        let start: NaiveDate = bucket["start"].as_str().unwrap().parse().unwrap();
        assert_eq!(start.weekday(), chrono::Weekday::Mon, "{bucket}");
        for stage in bucket["stages"].as_array().unwrap() {
            let key = (start, stage["status"].as_str().unwrap().to_owned());
            assert_eq!(
                stage["entered"].as_u64(),
                Some(weeks.remove(&key).unwrap_or(0)),
                "{key:?}"
            );
        }
    }
    assert!(weeks.is_empty(), "weeks not reported: {weeks:?}");

    // A default range never reaches before year 1; the agents report
    // takes no parameters.
    let (status, early) = get(&app, &key, "/v1/analytics/funnel?to=0001-01-05").await;
    assert_eq!(
        (status, early["from"].as_str()),
        (StatusCode::OK, Some("0001-01-01")),
        "{early}"
    );
    let (status, body) = get(&app, &key, "/v1/analytics/agents?foo=1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("foo"), "{body}");
    // Every field at fault is named, not only the first.
    let (status, body) = get(
        &app,
        &key,
        "/v1/analytics/funnel?from=abc&to=xyz&interval=month",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["interval", "to", "from"], "{body}");
    // Bad ranges are refused, naming the field.
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-12-02&to=2026-12-01", "to"),
        ("from=2000-01-01&to=2026-12-01", "to"),
        ("interval=month", "interval"),
        ("from=+2026-12-01", "from"),
        ("since=2026-12-01", "since"),
        // `to` defaults to today: the field at fault is the one sent.
        ("from=9999-12-31", "from"),
    ] {
        let (status, body) = get(&app, &key, &format!("/v1/analytics/activity?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
}

const DENIED: &str = "42501";

/// The service role reads analytics only through the tenant-filtering
/// views: the materialized views themselves, their refresh and the
/// refresh time are out of its reach, and each tenant sees its own rows.
#[tokio::test]
async fn the_service_role_sees_only_its_tenants_figures() {
    let (_owner, service_url) = crate::support::isolated_pg("leadline_analytics_walls").await;
    let s = services(crate::support::store_at(&service_url).await);
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    for tenant in [a, b] {
        s.leads.create(tenant, &lead_req("Ana")).await.unwrap();
    }
    assert!(s.analytics.refresh().await.unwrap().is_some());

    let mut conn = sqlx::PgConnection::connect(&service_url).await.unwrap();
    for sql in [
        "SELECT count(*) FROM analytics_status_entries_mv",
        "SELECT count(*) FROM analytics_agents_mv",
        "SELECT count(*) FROM analytics_event_counts_mv",
        "SELECT count(*) FROM analytics_cohorts_mv",
        "REFRESH MATERIALIZED VIEW analytics_status_entries_mv",
        "UPDATE analytics_refreshed SET as_of = now()",
        "DELETE FROM analytics_refreshed",
        "DROP VIEW analytics_agents",
        "CREATE OR REPLACE VIEW analytics_agents AS SELECT * FROM analytics_agents_mv",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some(DENIED), "{sql}: {err}");
    }

    let seen =
        async |conn: &mut sqlx::PgConnection, context: Option<TenantId>| -> Vec<uuid::Uuid> {
            let mut tx = conn.begin().await.unwrap();
            if let Some(t) = context {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(t.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let rows = sqlx::query(
                "SELECT tenant_id FROM analytics_status_entries \
             UNION ALL SELECT tenant_id FROM analytics_event_counts \
             UNION ALL SELECT tenant_id FROM analytics_agents \
             UNION ALL SELECT tenant_id FROM analytics_cohorts",
            )
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        };
    assert!(
        seen(&mut conn, None).await.is_empty(),
        "no context, no rows"
    );
    for (me, other) in [(a, b), (b, a)] {
        let rows = seen(&mut conn, Some(me)).await;
        assert!(!rows.is_empty(), "{me}'s own lead is counted");
        assert!(
            rows.iter().all(|t| *t == me.as_uuid()),
            "{me} sees only itself"
        );
        assert!(!rows.contains(&other.as_uuid()));
    }
}

/// The refresher's start (a fresh instance refreshes at once only if no
/// instance did within a turn) reads the figures' age by the database's
/// clock: the time since `analytics_refreshed.as_of`, and an `as_of` ahead
/// of that clock as no refresh at all.
#[tokio::test]
async fn figures_age_is_the_time_since_the_last_refresh_by_the_databases_clock() {
    use leadline_ports::AnalyticsRepository as _;
    use std::time::Duration;

    let (sqlite, _path) = crate::support::sqlite_file_store().await;
    assert_eq!(sqlite.figures_age().await.unwrap(), None, "SQLite");

    let (owner, service_url) = crate::support::isolated_pg("leadline_analytics_age").await;
    let store = crate::support::store_at(&service_url).await;
    let mut conn = sqlx::PgConnection::connect(&owner).await.unwrap();
    // as_of = now() + offset seconds.
    for (offset, low, high) in [
        (-3_600.0, 3_600, 3_660),
        (-10.0, 10, 70),
        (3_600.0, u64::MAX, u64::MAX),
    ] {
        sqlx::query("UPDATE analytics_refreshed SET as_of = now() + make_interval(secs => $1)")
            .bind(offset)
            .execute(&mut conn)
            .await
            .unwrap();
        let age = store
            .figures_age()
            .await
            .unwrap()
            .expect("PostgreSQL's age");
        let secs = if age == Duration::MAX {
            u64::MAX
        } else {
            age.as_secs()
        };
        assert!(
            (low..=high).contains(&secs),
            "as_of = now() + {offset} s: {age:?}"
        );
    }
    let s = services(store.clone());
    assert!(s.analytics.refresh().await.unwrap().is_some());
    let age = store
        .figures_age()
        .await
        .unwrap()
        .expect("PostgreSQL's age");
    assert!(age < Duration::from_secs(60), "after a refresh: {age:?}");
}
