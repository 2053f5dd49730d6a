//! At-least-once delivery, proven on the real `leadline relay` process:
//! killed with SIGKILL after the SMTP server acknowledged a message's DATA
//! but before the relay recorded it, the relay's successor delivers the
//! message again with the same `Message-ID`, and the lead's timeline still
//! shows one delivery. On SQLite (a file) and PostgreSQL.
//!
//! The window is held open from outside, without a hook in the relay: the
//! SMTP server (aiosmtpd, scripted by `leadline-testsupport`) stores a
//! `hold…@` message and keeps its `250` back until released; meanwhile the
//! test locks what the relay's record must write (the outbox row on
//! PostgreSQL, the whole database on SQLite), then releases the reply, and
//! kills the relay once it logs that the destination accepted the message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use leadline::config::Config;
use leadline_domain::{
    AgentRole, ApprovalAction, Channel, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest,
    DeliveryStatus, DisplayName, DraftApprovalRequest, Email, EventKind, LeadStatus, MessageBody,
    Metadata, PageLimit, PersonName, Slug, Subject, Tags, TenantId, TimelineQuery,
};
use leadline_store::StoreSettings;
use leadline_testsupport::{SmtpOptions, SmtpServer, smtp_server};
use sqlx::{Connection, Executor};

mod common;

use common::{BIN, Running};

fn relay(db: &str, smtp: &SmtpServer) -> Running {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("LEADLINE_SMTP__URL", smtp.url())
        .env("LEADLINE_SMTP__FROM", "relay@leadline.example")
        .env("LEADLINE_RELAY__LEASE_SECS", "1")
        .env("LEADLINE_RELAY__POLL_INTERVAL_MS", "50")
        .env("LEADLINE_LOG__FILTER", "info")
        .arg("relay");
    Running::start(command)
}

struct Sent {
    tenant: TenantId,
    lead: leadline_domain::LeadId,
}

async fn send_one(config: &Config) -> Sent {
    let composition = leadline::run::composition(config).await.unwrap();
    let s = &composition.services;
    let tenant = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&format!("kill-{}", uuid::Uuid::new_v4().simple())).unwrap(),
            name: DisplayName::new("Kill").unwrap(),
        })
        .await
        .unwrap()
        .tenant
        .id;
    // One agent drafts and sends: the rule that keeps a drafter from
    // approving is not what this test is about.
    s.tenants
        .set_separation_of_duties(tenant, false)
        .await
        .unwrap();
    let agent = s
        .agents
        .create(
            tenant,
            &CreateAgentRequest {
                name: DisplayName::new("Ada").unwrap(),
                email: Email::parse("ada@example.com").unwrap(),
                role: AgentRole::Agent,
            },
        )
        .await
        .unwrap()
        .id;
    let lead = s
        .leads
        .create(
            tenant,
            &CreateLeadRequest {
                first_name: PersonName::new("Grace").unwrap(),
                last_name: PersonName::new("Hopper").unwrap(),
                email: Some(Email::parse("hold@example.com").unwrap()),
                phone: None,
                company: None,
                source: None,
                status: LeadStatus::New,
                assigned_agent_id: None,
                tags: Tags::default(),
                metadata: Metadata::default(),
            },
        )
        .await
        .unwrap()
        .id;
    let approval = s
        .approvals
        .draft(
            tenant,
            lead,
            &DraftApprovalRequest {
                channel: Channel::Email,
                subject: Some(Subject::new("Once").unwrap()),
                body: MessageBody::new("Delivered at least once, recorded once.").unwrap(),
                requested_by: agent,
            },
        )
        .await
        .unwrap();
    for action in [
        ApprovalAction::Approve { by: agent },
        ApprovalAction::MarkSent { by: agent },
    ] {
        s.approvals.act(tenant, approval.id, &action).await.unwrap();
    }
    composition.shutdown().await;
    Sent { tenant, lead }
}

async fn delivery_state(config: &Config, sent: &Sent) -> (DeliveryStatus, u32, usize) {
    let composition = leadline::run::composition(config).await.unwrap();
    let s = &composition.services;
    let d = s
        .deliveries
        .list(sent.tenant, None, None, PageLimit::new(5).unwrap())
        .await
        .unwrap()
        .items
        .remove(0);
    let delivered_events = s
        .timeline
        .timeline(sent.tenant, sent.lead, &TimelineQuery::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.kind == EventKind::EmailDelivered)
        .count();
    composition.shutdown().await;
    (d.status, d.attempts, delivered_events)
}

/// What the test holds while the relay waits to record.
enum Lock {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn redelivered_after_kill(db: &str, lock_db: &str, postgres: bool) {
    let config = Config {
        database: StoreSettings::for_url(db),
        ..Config::default()
    };
    let smtp = smtp_server(SmtpOptions::default());
    let sent = send_one(&config).await;

    let first = relay(db, &smtp);
    let got = smtp.wait_for(1, Duration::from_secs(30));
    // The server holds its 250 now; lock what the relay's record writes.
    let mut lock = if postgres {
        let mut conn = sqlx::PgConnection::connect(lock_db).await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("SELECT 1 FROM outbox FOR UPDATE")
            .await
            .unwrap();
        Lock::Pg(conn)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(lock_db).await.unwrap();
        conn.execute("BEGIN IMMEDIATE").await.unwrap();
        Lock::Sqlite(conn)
    };
    smtp.release();
    first.wait_for_line("accepted by the destination", Duration::from_secs(30));
    drop(first); // SIGKILL, then reaped.
    match &mut lock {
        Lock::Pg(conn) => conn.execute("ROLLBACK").await.map(drop).unwrap(),
        Lock::Sqlite(conn) => conn.execute("ROLLBACK").await.map(drop).unwrap(),
    }
    drop(lock);
    assert_eq!(
        delivery_state(&config, &sent).await,
        (DeliveryStatus::Pending, 0, 0),
        "killed before recording: nothing recorded"
    );

    let second = relay(db, &smtp);
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = delivery_state(&config, &sent).await;
        if state.0 == DeliveryStatus::Delivered || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        state,
        (DeliveryStatus::Delivered, 1, 1),
        "redelivered and recorded once"
    );
    drop(second);
    let all = smtp.wait_for(2, Duration::from_secs(5));
    assert_eq!(all.len(), 2, "the message went out twice");
    let id = got[0].header("Message-ID").unwrap();
    assert!(id.starts_with("<approval-"), "{id}");
    assert_eq!(
        all[1].header("Message-ID").unwrap(),
        id,
        "with the same Message-ID"
    );
}

#[tokio::test]
async fn sqlite_a_killed_relay_redelivers_with_the_same_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.db");
    let db = format!("sqlite://{}?mode=rwc", path.display());
    common::migrate_up(&db);
    redelivered_after_kill(&db, &format!("sqlite://{}", path.display()), false).await;
}

#[tokio::test]
async fn postgres_a_killed_relay_redelivers_with_the_same_message_id() {
    let server = leadline_testsupport::postgres();
    let database = server
        .create_database("leadline_kill", None)
        .await
        .expect("create a database");
    let url = server.admin_url(&database);
    common::migrate_up(&url);
    redelivered_after_kill(&url, &url, true).await;
}
