//! Micro-benchmarks of the domain's hot pure paths: the API-key check every
//! request makes, and the lead context's JSON (serialized on every context
//! response and every L1/L2 fill, parsed on every L2 hit).
//!
//! Run in process by `cargo xtask bench` (and `cargo xtask bench --micro-only`), which
//! copies the figures into docs/benchmarks.md.

#![allow(
    clippy::expect_used,
    reason = "a benchmark's fixtures are constants; failing loudly is right"
)]

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::Criterion;
use leadline_domain::{
    Agent, AgentId, AgentRole, ApiKeyToken, Approval, ApprovalId, ApprovalStatus, Channel,
    CompanyName, Direction, DisplayName, Email, Event, EventContent, EventId, EventKind, Lead,
    LeadContext, LeadId, LeadStatus, MessageBody, Metadata, PersonName, Phone, Source, Subject,
    Tags, TenantId,
};

/// A context shaped like the benchmark data set's: an assigned agent, one
/// open and two closed approvals, and the default 20 latest events.
fn sample_context(events: usize) -> LeadContext {
    let tenant = TenantId::new();
    let lead_id = LeadId::new();
    let agent_id = AgentId::new();
    let now = Utc::now();
    let lead = Lead {
        id: lead_id,
        tenant_id: tenant,
        first_name: PersonName::new("Grace").expect("valid"),
        last_name: PersonName::new("Hopper").expect("valid"),
        email: Some(Email::parse("grace.hopper42@navy.example").expect("valid")),
        phone: Some(Phone::parse("+15550123456").expect("valid")),
        company: Some(CompanyName::new("US Navy Research").expect("valid")),
        source: Some(Source::new("referral").expect("valid")),
        status: LeadStatus::Qualified,
        assigned_agent_id: Some(agent_id),
        tags: Tags::parse(&["vip", "b2b"]).expect("valid"),
        metadata: Metadata::new(serde_json::json!({"score": 87, "region": "amer", "seed_row": 42}))
            .expect("valid"),
        created_at: now - Duration::days(90),
        updated_at: now - Duration::days(3),
        version: 4,
    };
    let agent = Agent {
        id: agent_id,
        tenant_id: tenant,
        name: DisplayName::new("Ada Lovelace").expect("valid"),
        email: Email::parse("ada@acme.example").expect("valid"),
        role: AgentRole::Agent,
        active: true,
        created_at: now - Duration::days(400),
        updated_at: now - Duration::days(400),
        version: 1,
    };
    let approval = |status: ApprovalStatus, days: i64| Approval {
        id: ApprovalId::new(),
        tenant_id: tenant,
        lead_id,
        channel: Channel::Email,
        subject: Some(Subject::new("Following up on our call").expect("valid")),
        body: MessageBody::new(
            "Hi Grace, do you have 15 minutes this week to talk about your pipeline? \
             Happy to share what similar teams did.",
        )
        .expect("valid"),
        requested_by: agent_id,
        status,
        decided_by: (status != ApprovalStatus::Pending).then_some(agent_id),
        decided_at: (status != ApprovalStatus::Pending).then(|| now - Duration::days(days)),
        rejection_reason: None,
        sent_by: (status == ApprovalStatus::Sent).then_some(agent_id),
        sent_at: (status == ApprovalStatus::Sent).then(|| now - Duration::days(days)),
        created_at: now - Duration::days(days + 1),
        updated_at: now - Duration::days(days),
        revision: 1,
        edited_by: None,
        edited_at: None,
    };
    let events = (0..events)
        .map(|i| Event {
            id: EventId::new(),
            tenant_id: tenant,
            lead_id,
            kind: EventKind::EmailSent,
            direction: Direction::Outbound,
            content: Some(
                EventContent::new("Discovery call: three teams, evaluating two vendors.")
                    .expect("valid"),
            ),
            occurred_at: now - Duration::hours(i as i64 * 3),
            actor: Some(agent_id),
            metadata: Metadata::new(serde_json::json!({"seq": i})).expect("valid"),
            created_at: now - Duration::hours(i as i64 * 3),
        })
        .collect();
    LeadContext {
        lead,
        assigned_agent: Some(agent),
        open_approvals: vec![approval(ApprovalStatus::Pending, 1)],
        recent_approvals: vec![
            approval(ApprovalStatus::Sent, 10),
            approval(ApprovalStatus::Sent, 20),
        ],
        events,
    }
}

fn api_key(c: &mut Criterion) {
    let token = ApiKeyToken::from_random(TenantId::new(), [42; 24]);
    let text = token.expose().to_owned();
    let mut group = c.benchmark_group("api_key");
    group.bench_function("parse_and_hash", |b| {
        b.iter(|| {
            let token = ApiKeyToken::parse(black_box(&text)).expect("own format");
            black_box(token.hash())
        });
    });
    group.bench_function("hash", |b| b.iter(|| black_box(token.hash())));
    group.finish();
}

fn context_json(c: &mut Criterion) {
    let context = sample_context(20);
    let bytes = serde_json::to_vec(&context).expect("serializable");
    let mut group = c.benchmark_group("context_json");
    group.throughput(criterion::Throughput::Bytes(bytes.len() as u64));
    group.bench_function("serialize_20_events", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&context)).expect("serializable")));
    });
    group.bench_function("deserialize_20_events", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<LeadContext>(black_box(&bytes)).expect("parses"))
        });
    });
    group.finish();
}

/// Every route with an id parses it from the path.
fn ids(c: &mut Criterion) {
    let text = LeadId::new().to_string();
    c.bench_function("ids/parse_lead_id", |b| {
        b.iter(|| black_box(black_box(&text).parse::<LeadId>().expect("valid")));
    });
}

/// Every benchmark of this module.
pub fn run(c: &mut Criterion) {
    api_key(c);
    context_json(c);
    ids(c);
}
