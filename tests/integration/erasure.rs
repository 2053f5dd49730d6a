//! Privacy erasure against real databases and a real Redis: after
//! `POST /v1/privacy/erase`, no row of the database (a `pg_dump`, or every
//! row of every SQLite table and the SQLite file and its log byte for
//! byte), no Redis value and no search finds the
//! person's email, name or phone; the counts analytics show are unchanged;
//! the audit chain still verifies; someone else's data is untouched.

use std::sync::Arc;

use axum::{
    Router,
    http::{Method, StatusCode},
};
use leadline::Composition;
use leadline_app::{RecallSettings, Services};
use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_domain::{
    AppendEventRequest, ApprovalAction, Channel, DateRange, Direction, DraftApprovalRequest, Email,
    EventContent, EventKind, Interval, LeadStatus, MessageBody, Metadata, RetentionAction,
    RetentionPolicy, Subject, TenantId, UpdateLeadRequest,
};
use leadline_http::{AppState, router};
use serde_json::{Value, json};
use sqlx::{Column as _, Row as _};

use crate::support::{Owner, agent_req, lead_req, new_tenant};

/// Where the test's database is, to dump it whole.
enum Dump {
    /// A database of the test's own on the shared server: `pg_dump` as
    /// the superuser, past every policy.
    Postgres { database: String },
    /// The SQLite file: every row of every table, then the file and its
    /// write-ahead log byte for byte (an old value left in free space or
    /// in the log is still on the disk).
    Sqlite {
        url: String,
        path: std::path::PathBuf,
    },
}

impl Dump {
    async fn text(&self) -> String {
        match self {
            Self::Postgres { database } => {
                let url = leadline_testsupport::postgres().admin_url(database);
                let out = std::process::Command::new(
                    leadline_testsupport::pg_tool("pg_dump").expect("pg_dump is installed"),
                )
                .args(["--data-only", "--no-owner", "-d", &url])
                .output()
                .expect("pg_dump runs");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Self::Sqlite { url, path } => {
                use sqlx::Connection as _;
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut out = String::new();
                for table in tables {
                    let rows =
                        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
                            .fetch_all(&mut conn)
                            .await
                            .unwrap();
                    for row in rows {
                        out.push_str(&table);
                        for column in row.columns() {
                            let i = column.ordinal();
                            let text = row
                                .try_get::<Option<String>, _>(i)
                                .ok()
                                .flatten()
                                .or_else(|| {
                                    row.try_get::<Option<Vec<u8>>, _>(i)
                                        .ok()
                                        .flatten()
                                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                                })
                                .unwrap_or_default();
                            out.push('\t');
                            out.push_str(&text);
                        }
                        out.push('\n');
                    }
                }
                let mut log = path.clone().into_os_string();
                log.push("-wal");
                for file in [path.clone(), log.into()] {
                    if let Ok(bytes) = std::fs::read(&file) {
                        out.push_str(&String::from_utf8_lossy(&bytes));
                        out.push('\n');
                    }
                }
                out
            }
        }
    }
}

#[tokio::test]
async fn sqlite_erasure_leaves_nothing_of_the_person() {
    let (store, path) = crate::support::sqlite_file_store().await;
    let url = crate::support::sqlite_url(&path);
    erasure_leaves_nothing_of_the_person(
        store,
        Dump::Sqlite {
            url: url.clone(),
            path,
        },
        Owner::Sqlite(url),
    )
    .await;
}

#[tokio::test]
async fn postgres_erasure_leaves_nothing_of_the_person() {
    let (owner, service) = crate::support::isolated_pg("leadline_erasure").await;
    let database = owner
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .unwrap()
        .to_owned();
    erasure_leaves_nothing_of_the_person(
        crate::support::store_at(&service).await,
        Dump::Postgres { database },
        Owner::Postgres(owner),
    )
    .await;
}

/// Calls the API, each write under a fresh idempotency key (so its answer
/// is stored, as a careful client's would be).
async fn call(
    app: &Router,
    key: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let idem = uuid::Uuid::now_v7().to_string();
    let answer = crate::support::call(
        app,
        key,
        method,
        uri,
        body.as_ref(),
        &[("idempotency-key", idem.as_str())],
    )
    .await;
    (answer.status, answer.body)
}

/// Every string value in Redis under the service's prefix.
async fn redis_text() -> String {
    let mut conn = redis::Client::open(leadline_testsupport::redis().url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut out = String::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("leadline:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push_str(&key);
            out.push('\t');
            if kind == "string" {
                let value: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                out.push_str(&String::from_utf8_lossy(&value.unwrap_or_default()));
            }
            out.push('\n');
        }
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// What analytics counts for `tenant` (fresh figures on PostgreSQL).
async fn figures(s: &Services, tenant: TenantId) -> Value {
    s.analytics.refresh().await.unwrap();
    let today = chrono::Utc::now().date_naive();
    let range = DateRange::new(today - chrono::Days::new(90), today).unwrap();
    let funnel = s
        .analytics
        .funnel(tenant, range, Interval::Week)
        .await
        .unwrap();
    let agents = s.analytics.agents(tenant).await.unwrap();
    json!({
        "stages": serde_json::to_value(&funnel.stages).unwrap(),
        "conversion": serde_json::to_value(&funnel.conversion).unwrap(),
        "agents": serde_json::to_value(&agents.agents).unwrap(),
    })
}

async fn erasure_leaves_nothing_of_the_person(
    store: leadline_store::Store,
    dump: Dump,
    owner: Owner,
) {
    let cache = Arc::new(
        TwoTierCache::connect(&CacheSettings {
            redis_url: Some(leadline_testsupport::redis().url()),
            ..CacheSettings::default()
        })
        .await
        .expect("cache starts"),
    );
    let s = Composition::from_parts(store, cache, RecallSettings::default()).services;
    let app = router(AppState::new(s.clone()));
    let (tenant, key) = new_tenant(&s).await;
    let slug = s.tenants.get(tenant).await.unwrap().slug.to_string();
    let agent = s
        .agents
        .create(tenant, &agent_req("rep@acme.example"))
        .await
        .unwrap();

    // A person nobody else could be: every mark of them is unique.
    let mark: String = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let last = format!("Quixley{mark}");
    let email = format!("zeb.{mark}@example.com");
    let city = format!("Springfield{mark}");
    let company = format!("Quix{mark} Corp");
    let digits = format!(
        "{:07}",
        u32::from_str_radix(&mark[..6], 16).unwrap() % 10_000_000
    );
    // The same number as a CRM writes it.
    let written = format!("+1 (555) {}-{}", &digits[..3], &digits[3..]);
    let (status, created) = call(
        &app,
        &key,
        Method::POST,
        "/v1/leads",
        Some(json!({
            "first_name": "Zebulon", "last_name": last, "email": email,
            "phone": format!("+1 555 {digits}"), "company": company,
            "metadata": {"city": city}, "assigned_agent_id": agent.id,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let lead: leadline_domain::LeadId = created["id"].as_str().unwrap().parse().unwrap();
    let phone = created["phone"].as_str().unwrap().to_owned();
    let moved = s
        .leads
        .update(
            tenant,
            lead,
            &UpdateLeadRequest {
                expected_version: 1,
                status: Some(LeadStatus::Contacted),
                ..UpdateLeadRequest::default()
            },
        )
        .await
        .unwrap();
    let event = |kind, direction, content: &str, metadata: Value| AppendEventRequest {
        kind,
        direction,
        content: Some(EventContent::new(content).unwrap()),
        occurred_at: None,
        actor: Some(agent.id),
        metadata: Metadata::new(metadata).unwrap(),
    };
    s.timeline
        .append(
            tenant,
            lead,
            &event(
                EventKind::Note,
                Direction::Internal,
                &format!("Zebulon {last} called"),
                json!({}),
            ),
        )
        .await
        .unwrap();
    s.timeline
        .append(
            tenant,
            lead,
            &event(
                EventKind::EmailReceived,
                Direction::Inbound,
                "Re: hello",
                json!({"from": email, "channel": "email"}),
            ),
        )
        .await
        .unwrap();
    // A message sent (an approval, a delivery) and one still waiting.
    let draft = |body: String| DraftApprovalRequest {
        channel: Channel::Email,
        subject: Some(Subject::new(&format!("For {last}")).unwrap()),
        body: MessageBody::new(&body).unwrap(),
        requested_by: agent.id,
    };
    let sent = s
        .approvals
        .draft(
            tenant,
            lead,
            &draft(format!("Dear Zebulon {last}, at {email}")),
        )
        .await
        .unwrap();
    for action in [
        ApprovalAction::Approve { by: agent.id },
        ApprovalAction::MarkSent { by: agent.id },
    ] {
        s.approvals.act(tenant, sent.id, &action).await.unwrap();
    }
    // Drafted over HTTP under an idempotency key: the stored answer holds
    // the name but neither email nor phone.
    let (status, waiting) = call(
        &app,
        &key,
        Method::POST,
        &format!("/v1/leads/{lead}/approvals"),
        Some(
            json!({"channel": "email", "body": format!("Hello again {last}"),
                    "requested_by": agent.id}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{waiting}");
    let waiting: leadline_domain::ApprovalId = waiting["id"].as_str().unwrap().parse().unwrap();
    // An older lead of theirs, with a note the retention policy archived,
    // then deleted.
    let mut older = lead_req("Zebulon");
    older.last_name = leadline_domain::PersonName::new(&last).unwrap();
    older.email = Some(Email::parse(&email.to_uppercase()).unwrap());
    let older = s.leads.create(tenant, &older).await.unwrap();
    s.timeline
        .append(
            tenant,
            older.id,
            &event(
                EventKind::Note,
                Direction::Internal,
                &format!("met {last} in {city}"),
                json!({}),
            ),
        )
        .await
        .unwrap();
    owner.backdate(tenant, &older, 60).await;
    s.retention
        .set_policy(
            tenant,
            Some(RetentionPolicy::new(30, RetentionAction::Archive).unwrap()),
        )
        .await
        .unwrap();
    assert!(
        s.retention.apply_tenant(tenant, 10).await.unwrap().0 >= 1,
        "the note archived"
    );
    s.leads.delete(tenant, older.id).await.unwrap();
    // A CSV line of theirs that an import rejected (its owner is unknown).
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("crm.csv");
    std::fs::write(
        &csv,
        format!(
            "First Name,Last Name,Email,Phone,Contact owner\n\
             Zebulon,{last},{email},,nobody@acme.example\n\
             Zeb,Q,zeb.typo@exmaple.com,{written},nobody@acme.example\n"
        ),
    )
    .unwrap();
    let run = leadline::import::import_leads(
        &s,
        &leadline::import::ImportArgs {
            file: csv,
            tenant: slug.clone(),
            map: Vec::new(),
            on_duplicate: "create".to_owned(),
            rejected: None,
            quiet: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(run.counts.rejected, 2, "{run:?}");
    // Someone else, who must keep everything.
    let sam_email = format!("sam.{}@example.com", uuid::Uuid::now_v7().simple());
    let mut sam = lead_req("Sam");
    sam.email = Some(Email::parse(&sam_email).unwrap());
    let sam = s.leads.create(tenant, &sam).await.unwrap();
    // The person's context in both cache tiers.
    let context = s.context.context(tenant, lead).await.unwrap();
    assert!(
        String::from_utf8_lossy(context.bytes()).contains(&email),
        "cached with the email"
    );

    // The checks below can see the person before.
    let personal = [
        written.as_str(),
        email.as_str(),
        last.as_str(),
        phone.as_str(),
        city.as_str(),
        company.as_str(),
    ];
    let before = dump.text().await;
    for mark in personal {
        assert!(before.contains(mark), "the dump holds {mark} before");
    }
    assert!(
        redis_text().await.contains(&email),
        "Redis holds the context before"
    );
    let figures_before = figures(&s, tenant).await;

    let (status, report) = call(
        &app,
        &key,
        Method::POST,
        "/v1/privacy/erase",
        Some(json!({"email": email.to_uppercase()})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let mut leads: Vec<&str> = report["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    leads.sort_unstable();
    let mut expected = [lead.to_string(), older.id.to_string()];
    expected.sort_unstable();
    assert_eq!(leads, expected, "{report}");
    assert_eq!(report["cancelled_approvals"], 1, "{report}");
    assert_eq!(report["approvals"], 2, "{report}");
    assert_eq!(report["deliveries"], 1, "{report}");
    assert_eq!(report["archived_events"], 1, "{report}");
    assert!(report["audit_records"].as_u64().unwrap() >= 8, "{report}");
    let report_text = report.to_string();
    assert!(
        !report_text.contains(&email) && !report_text.contains(&last),
        "{report}"
    );

    // No row, no Redis value holds them.
    // Case folded: search indexes keep words folded.
    let after = dump.text().await.to_lowercase();
    for mark in personal.map(str::to_lowercase) {
        let found: Vec<&str> = after.lines().filter(|l| l.contains(&mark)).collect();
        assert!(found.is_empty(), "{mark} is still held: {found:#?}");
    }
    assert!(after.contains(&sam_email), "Sam's data stays");
    let cached = redis_text().await;
    for mark in personal {
        assert!(!cached.contains(mark), "Redis still holds {mark}");
    }

    // What the API shows: the lead anonymised, from the cache too; no
    // search finds them, exactly or by a typo; nothing to export.
    let context: Value =
        serde_json::from_slice(s.context.context(tenant, lead).await.unwrap().bytes()).unwrap();
    assert_eq!(context["lead"]["first_name"], "[erased]", "{context}");
    assert_eq!(context["lead"]["email"], Value::Null, "{context}");
    assert_eq!(context["lead"]["status"], "contacted", "{context}");
    assert_eq!(context["lead"]["version"], moved.version + 1, "{context}");
    for q in [
        last.clone(),
        format!("Quixle{mark}"),
        email.clone(),
        city.clone(),
    ] {
        let (status, hits) = call(
            &app,
            &key,
            Method::GET,
            &format!("/v1/leads/search?q={}", urlencode(&q)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{hits}");
        assert_eq!(hits["items"], json!([]), "{q}: {hits}");
    }
    // A word Sam's address shares with theirs stays in the vocabulary: Sam
    // is found by it, and by a typo of it.
    for q in ["example", "exampel"] {
        let (status, hits) = call(
            &app,
            &key,
            Method::GET,
            &format!("/v1/leads/search?q={q}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{hits}");
        let found: Vec<&str> = hits["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["lead"]["id"].as_str())
            .collect();
        assert_eq!(found, [sam.id.to_string()], "{q}: {hits}");
    }
    let (status, export) = call(
        &app,
        &key,
        Method::POST,
        "/v1/privacy/export",
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["leads"], json!([]), "{export}");
    let waiting = s.approvals.get(tenant, waiting).await.unwrap();
    assert_eq!(waiting.status, leadline_domain::ApprovalStatus::Cancelled);
    assert_eq!(waiting.body.as_str(), "[erased]");

    // Counts stay; the chain verifies, with the tombstone on it; Sam is
    // untouched.
    assert_eq!(
        figures(&s, tenant).await,
        figures_before,
        "analytics unchanged"
    );
    match s.audit.verify(tenant, None).await.unwrap() {
        leadline_app::Verdict::Intact(state) => assert!(state.sealed > 10, "{state:?}"),
        other => panic!("the chain does not verify after an erasure: {other:?}"),
    }
    let page = s
        .audit
        .list(
            tenant,
            &leadline_domain::AuditQuery::about(
                "person",
                None,
                leadline_domain::PageLimit::DEFAULT,
            ),
        )
        .await
        .unwrap();
    let tombstone = page
        .items
        .iter()
        .find(|e| e.record.action == "person.erased")
        .expect("a tombstone");
    assert!(tombstone.record.changes.contains(&lead.to_string()));
    assert!(!tombstone.record.changes.contains(&email));
    let sam_now = s.leads.get(tenant, sam.id).await.unwrap();
    assert_eq!(sam_now, sam, "someone else's lead is untouched");

    // Erasing again, or someone never held, is an erasure of nothing; the
    // command says the same.
    let again = leadline::privacy::erase(&s, &slug, &email).await.unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["leads"], json!([]), "{again}");
    let (status, problem) = call(
        &app,
        &key,
        Method::POST,
        "/v1/privacy/erase",
        Some(json!({"email": "nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The owner's `privacy_erase` does nothing the service role could not
/// justify: never for another tenant than its transaction's, never with
/// anything but an erasure marker, and never to a lead the transaction did
/// not anonymise first (its history keeps what it said).
#[tokio::test]
async fn postgres_privacy_erase_refuses_what_no_erasure_does() {
    use sqlx::Connection as _;
    let s = crate::support::services(crate::support::pg_store().await);
    let (tenant, _) = new_tenant(&s).await;
    let (other, _) = new_tenant(&s).await;
    let mut req = lead_req("Kept");
    req.email = Some(Email::parse("kept@example.com").unwrap());
    let lead = s.leads.create(tenant, &req).await.unwrap();
    let marker = json!({"erased": uuid::Uuid::now_v7()}).to_string();
    let plan = |marker: &str| {
        json!({"marker": marker, "leads": [lead.id], "events": [], "archived_events": [],
               "needles": ["kept@example.com"], "words": ["kept"]})
        .to_string()
    };
    let service = &crate::support::pg().await.service_url;
    // (the tenant the call names, its marker, the SQLSTATE expected)
    let cases = [
        ("another tenant", other, marker.clone(), Some("42501")),
        (
            "a marker saying more",
            tenant,
            json!({"erased": uuid::Uuid::now_v7(), "email": "x"}).to_string(),
            Some("22023"),
        ),
        (
            "fields for a marker",
            tenant,
            json!({"email": {"old": "a", "new": "b"}}).to_string(),
            Some("22023"),
        ),
        (
            "no person.erased record in its transaction",
            tenant,
            marker.clone(),
            Some("42501"),
        ),
    ];
    for (name, named, marker, refused) in cases {
        let mut conn = sqlx::PgConnection::connect(service).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let outcome: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT audit_records, other_rows FROM privacy_erase($1, CAST($2 AS jsonb))",
        )
        .bind(named.as_uuid())
        .bind(plan(&marker))
        .fetch_one(&mut *tx)
        .await;
        match (refused, outcome) {
            (Some(code), Err(sqlx::Error::Database(e))) => {
                assert_eq!(e.code().as_deref(), Some(code), "{name}: {e}");
            }
            (None, Ok(counts)) => {
                assert_eq!(counts, (0, 0), "{name}: nothing is scrubbed");
                tx.commit().await.unwrap();
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
    }
    // With its tombstone written, on a lead not anonymised it scrubs
    // nothing; on one it anonymised, the plan may only drop an event's
    // metadata keys, never add or change one. (Rolled back.)
    let event = s
        .timeline
        .append(
            tenant,
            lead.id,
            &AppendEventRequest {
                kind: EventKind::Note,
                direction: Direction::Internal,
                content: Some(EventContent::new("a note").unwrap()),
                occurred_at: None,
                actor: None,
                metadata: Metadata::new(json!({"channel": "sms", "mood": "fine"})).unwrap(),
            },
        )
        .await
        .unwrap();
    let erasure = uuid::Uuid::now_v7();
    let marker = json!({"erased": erasure}).to_string();
    for anonymise in [false, true] {
        let mut conn = sqlx::PgConnection::connect(service).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let run = |sql: &'static str| sqlx::query(sql);
        run("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        run("INSERT INTO audit_log (tenant_id, at, entity, entity_id, action, changes, content_hash) \
             VALUES ($1::text::uuid, now(), 'person', $2::text::uuid, 'person.erased', '{}', \
                     decode(repeat('00', 32), 'hex'))")
        .bind(tenant.to_string())
        .bind(erasure.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
        if anonymise {
            run(
                "UPDATE leads SET first_name = '[erased]', last_name = '[erased]', email = NULL, \
                 phone = NULL, company = NULL WHERE id = $1::text::uuid",
            )
            .bind(lead.id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        let injected = json!({"marker": marker, "leads": [lead.id], "archived_events": [],
            "events": [{"id": event.id, "metadata": {"channel": "sms", "to": "won"}}],
            "needles": [], "words": []});
        let (audit, _): (i64, i64) = sqlx::query_as(
            "SELECT audit_records, other_rows FROM privacy_erase($1::text::uuid, CAST($2 AS jsonb))",
        )
        .bind(tenant.to_string())
        .bind(injected.to_string())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let metadata: String =
            sqlx::query_scalar("SELECT metadata::text FROM events WHERE id = $1::text::uuid")
                .bind(event.id.to_string())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        if anonymise {
            assert!(audit > 0, "an anonymised lead's history is scrubbed");
            assert_eq!(metadata, r#"{"channel": "sms"}"#, "keys only dropped");
        } else {
            assert_eq!(audit, 0, "nothing of a lead not anonymised");
            assert!(metadata.contains("mood"), "{metadata}");
        }
        tx.rollback().await.unwrap();
    }
    let page = s
        .audit
        .list(
            tenant,
            &leadline_domain::AuditQuery::about(
                "lead",
                Some(lead.id.as_uuid()),
                leadline_domain::PageLimit::DEFAULT,
            ),
        )
        .await
        .unwrap();
    assert!(
        page.items
            .iter()
            .any(|e| e.record.changes.contains("kept@example.com")),
        "the lead's history keeps what it said"
    );
    assert_eq!(s.leads.get(tenant, lead.id).await.unwrap(), lead);
}
