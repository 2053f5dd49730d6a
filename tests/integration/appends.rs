//! Appends that arrive together share a turn to be written
//! (`crates/store/src/appends.rs`): on SQLite one transaction writes every
//! event queued by then, on PostgreSQL one statement per tenant. Each
//! request must still get the answer a write of its own would have given
//! it, on both.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use leadline_app::{AppendError, Services, Verdict};
use leadline_domain::{
    AgentId, AppendEventRequest, ChangePosition, ChangeType, Direction, EventContent, EventKind,
    LeadId, Metadata, PageLimit, TenantId, TimelineQuery,
};
use leadline_ports::{AppendEventError, ChangeLog as _};
use leadline_store::Store;

use crate::support::{agent_req, lead_req, new_tenant, services, sqlite_store};

// On several threads, as the service runs: the queue, the writer's turn and
// the batch's own task race there.
mod sqlite {
    use crate::support::{sqlite_store, sqlite_store_with};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_each_get_the_answer_of_their_own() {
        let store = sqlite_store().await;
        super::concurrent_appends_each_get_the_answer_of_their_own(store.clone(), true).await;
        assert!(
            store.largest_append_batch_for_tests() > 1,
            "appends sent together shared a transaction"
        );
    }

    /// With `database.audit = false` a batch writes no audit records, as a
    /// lone append writes none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_without_the_audit_trail() {
        let store = sqlite_store_with(|s| s.audit = false).await;
        super::concurrent_appends_each_get_the_answer_of_their_own(store.clone(), false).await;
        assert!(store.largest_append_batch_for_tests() > 1);
    }
}

mod postgres {
    use leadline_store::{Store, StoreSettings};

    use crate::support::{pg, pg_store, settings};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_each_get_the_answer_of_their_own() {
        let store = pg_store().await;
        super::concurrent_appends_each_get_the_answer_of_their_own(store.clone(), true).await;
        assert!(
            store.largest_append_batch_for_tests() > 1,
            "appends of one tenant sent together shared a statement"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_without_the_audit_trail() {
        let store = Store::connect(&StoreSettings {
            audit: false,
            ..settings(&pg().await.service_url)
        })
        .await
        .unwrap();
        super::concurrent_appends_each_get_the_answer_of_their_own(store.clone(), false).await;
        assert!(store.largest_append_batch_for_tests() > 1);
    }

    /// A tenant whose append waits (here on a lead another transaction holds
    /// `FOR UPDATE`, which the foreign key's check waits for) holds up no
    /// other tenant's appends: each tenant's appends queue and are written
    /// apart. Sharing one queue, the other tenant's append would wait for
    /// the first batch's turn and be answered unavailable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_tenant_holds_up_no_other_tenants_appends() {
        use std::time::Duration;

        use sqlx::{Connection as _, Executor as _};

        let s = crate::support::services(pg_store().await);
        let (a, _) = crate::support::new_tenant(&s).await;
        let (b, _) = crate::support::new_tenant(&s).await;
        let held = s
            .leads
            .create(a, &crate::support::lead_req("Held"))
            .await
            .unwrap()
            .id;
        let free = s
            .leads
            .create(b, &crate::support::lead_req("Free"))
            .await
            .unwrap()
            .id;
        let mut lock = sqlx::PgConnection::connect(&pg().await.service_url)
            .await
            .unwrap();
        lock.execute("BEGIN").await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(a.to_string())
            .execute(&mut lock)
            .await
            .unwrap();
        sqlx::query("SELECT 1 FROM leads WHERE id = $1::uuid FOR UPDATE")
            .bind(held.to_string())
            .execute(&mut lock)
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let s = s.clone();
            async move {
                s.timeline
                    .append(a, held, &super::note("waits", None, None))
                    .await
            }
        });
        crate::support::eventually(
            "the append waits on the lock",
            Duration::from_secs(10),
            async || {
                let (blocked,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
                )
                .fetch_one(&mut lock)
                .await?;
                if blocked > 0 {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("not yet"))
                }
            },
        )
        .await;
        s.timeline
            .append(b, free, &super::note("free", None, None))
            .await
            .expect("the other tenant's append is written while the first waits");
        assert!(!waiting.is_finished(), "the first still waits on the lock");
        lock.execute("ROLLBACK").await.unwrap();
        waiting
            .await
            .unwrap()
            .expect("written once the lock is gone");
    }

    /// A trigger of the schema's owner refuses one event's content.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_answers_each_append_alone() {
        let (owner, service) = crate::support::isolated_pg("leadline_appends_poison").await;
        let owner = crate::support::store_at(&owner).await;
        owner
            .execute_for_tests(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.content = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; \
                 RETURN NEW; END $$",
            )
            .await
            .unwrap();
        owner
            .execute_for_tests(
                "CREATE TRIGGER poison BEFORE INSERT ON events \
                 FOR EACH ROW EXECUTE FUNCTION poison()",
            )
            .await
            .unwrap();
        super::a_failed_batch_answers_each_append_alone(crate::support::store_at(&service).await)
            .await;
    }
}

/// What one append must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Written,
    LeadNotFound,
    PredatesLead,
    AgentNotFound,
}

fn note(
    text: &str,
    occurred_at: Option<DateTime<Utc>>,
    actor: Option<AgentId>,
) -> AppendEventRequest {
    AppendEventRequest {
        kind: EventKind::Note,
        direction: Direction::Internal,
        content: Some(EventContent::new(text).unwrap()),
        occurred_at,
        actor,
        metadata: Metadata::default(),
    }
}

/// The contents on a lead's timeline.
async fn timeline(s: &Services, tenant: TenantId, lead: LeadId) -> BTreeSet<String> {
    let page = s
        .timeline
        .timeline(
            tenant,
            lead,
            &TimelineQuery {
                limit: PageLimit::new(200).unwrap(),
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(!page.has_more, "the test writes fewer than a page");
    page.items
        .into_iter()
        .map(|e| e.content.unwrap().as_str().to_owned())
        .collect()
}

/// How many records the tenant's trail holds, checking that it verifies.
async fn trail_len(s: &Services, tenant: TenantId) -> u64 {
    match s.audit.verify(tenant, None).await.unwrap() {
        Verdict::Intact(state) => state.sealed + state.unsealed,
        other => panic!("the trail verifies: {other:?}"),
    }
}

/// The events logged in the tenant's change log after `from`.
async fn logged_events(store: &Store, tenant: TenantId, from: ChangePosition) -> usize {
    let span = store.after(tenant, from, 10_000).await.unwrap();
    span.items
        .iter()
        .filter(|c| c.change.kind == ChangeType::EventRecorded)
        .count()
}

/// Appends of three tenants, written and refused for every reason, all
/// sent at once, three rounds: each gets its own answer, exactly the written
/// ones are on the timelines, in the change logs and (when `audited`) in
/// the audit trails, both trails still verify, and the tenants whose logs
/// grew are woken (on SQLite, where wake-ups are this process's alone, only
/// they: tenant `c`'s one append is refused).
async fn concurrent_appends_each_get_the_answer_of_their_own(store: Store, audited: bool) {
    let s = services(store.clone());
    let (a, _) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let (c, _) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(a, &agent_req("ada@example.com"))
        .await
        .unwrap()
        .id;
    let lead = s.leads.create(a, &lead_req("Grace")).await.unwrap();
    let gone = s.leads.create(a, &lead_req("Gone")).await.unwrap().id;
    s.leads.delete(a, gone).await.unwrap();
    let other = s.leads.create(b, &lead_req("Linus")).await.unwrap().id;
    let late = s.leads.create(c, &lead_req("Late")).await.unwrap();
    let before = lead.created_at - chrono::Duration::microseconds(1);
    let before_late = late.created_at - chrono::Duration::microseconds(1);

    let (trail_a, trail_b) = (trail_len(&s, a).await, trail_len(&s, b).await);
    let (log_a, log_b) = (s_head(&store, a).await, s_head(&store, b).await);

    let mut wakeups = store.wakeups();
    let mut cases: Vec<(TenantId, LeadId, AppendEventRequest, Expect)> = Vec::new();
    for round in 0..3 {
        for i in 0..8 {
            let text = |who: &str| format!("{who} {round}.{i}");
            cases.push((a, lead.id, note(&text("a"), None, None), Expect::Written));
            cases.push((
                a,
                lead.id,
                note(&text("a by"), None, Some(agent)),
                Expect::Written,
            ));
            cases.push((b, other, note(&text("b"), None, None), Expect::Written));
        }
        let text = |why: &str| format!("{why} {round}");
        let refused = [
            (
                a,
                gone,
                note(&text("deleted lead"), None, None),
                Expect::LeadNotFound,
            ),
            (
                a,
                LeadId::new(),
                note(&text("no lead"), None, None),
                Expect::LeadNotFound,
            ),
            (
                a,
                other,
                note(&text("foreign lead"), None, None),
                Expect::LeadNotFound,
            ),
            (
                b,
                lead.id,
                note(&text("foreign both"), None, Some(agent)),
                Expect::LeadNotFound,
            ),
            (
                a,
                lead.id,
                note(&text("predates"), Some(before), None),
                Expect::PredatesLead,
            ),
            (
                a,
                lead.id,
                note(&text("no agent"), None, Some(AgentId::new())),
                Expect::AgentNotFound,
            ),
            (
                b,
                other,
                note(&text("foreign agent"), None, Some(agent)),
                Expect::AgentNotFound,
            ),
        ];
        // Spread among the written ones, so they share batches with them.
        for (n, case) in refused.into_iter().enumerate() {
            let at = cases.len() - 3 * n;
            cases.insert(at, case);
        }
    }

    // Among the others, so that on SQLite it shares their batch.
    cases.insert(
        cases.len() / 2,
        (
            c,
            late.id,
            note("too early", Some(before_late), None),
            Expect::PredatesLead,
        ),
    );
    let answers = join_all(
        cases
            .iter()
            .map(|(tenant, lead, req, _)| s.timeline.append(*tenant, *lead, req)),
    )
    .await;
    for ((tenant, lead_id, req, expect), answer) in cases.iter().zip(answers) {
        let text = req.content.as_ref().unwrap().as_str();
        let got = match answer {
            Ok(event) => {
                assert_eq!(
                    (event.tenant_id, event.lead_id),
                    (*tenant, *lead_id),
                    "{text}"
                );
                assert_eq!(event.actor, req.actor, "{text}");
                Expect::Written
            }
            Err(AppendError::Store(AppendEventError::LeadNotFound)) => Expect::LeadNotFound,
            Err(AppendError::Store(AppendEventError::PredatesLead { lead_created_at })) => {
                let created = if *tenant == c {
                    late.created_at
                } else {
                    lead.created_at
                };
                assert_eq!(lead_created_at, created, "{text}");
                Expect::PredatesLead
            }
            Err(AppendError::Store(AppendEventError::AgentNotFound)) => Expect::AgentNotFound,
            Err(other) => panic!("{text}: {other:?}"),
        };
        assert_eq!(got, *expect, "{text}");
    }

    let written = |tenant: TenantId| -> BTreeSet<String> {
        cases
            .iter()
            .filter(|(t, _, _, e)| *t == tenant && *e == Expect::Written)
            .map(|(_, _, req, _)| req.content.as_ref().unwrap().as_str().to_owned())
            .collect()
    };
    let (written_a, written_b) = (written(a), written(b));
    assert_eq!(timeline(&s, a, lead.id).await, written_a);
    assert_eq!(timeline(&s, b, other).await, written_b);
    assert_eq!(logged_events(&store, a, log_a).await, written_a.len());
    assert_eq!(logged_events(&store, b, log_b).await, written_b.len());
    let recorded = |written: &BTreeSet<String>| if audited { written.len() as u64 } else { 0 };
    assert_eq!(trail_len(&s, a).await, trail_a + recorded(&written_a));
    assert_eq!(trail_len(&s, b).await, trail_b + recorded(&written_b));

    if store.backend() == leadline_store::Backend::Sqlite {
        let mut woken = HashSet::new();
        while let Ok(tenant) = wakeups.try_recv() {
            woken.insert(tenant);
        }
        assert!(woken.contains(&a) && woken.contains(&b), "{woken:?}");
        assert!(
            !woken.contains(&c),
            "a refused append wakes nobody: {woken:?}"
        );
    }
}

async fn s_head(store: &Store, tenant: TenantId) -> ChangePosition {
    store.head(tenant).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_answers_each_append_alone_on_sqlite() {
    let store = sqlite_store().await;
    store
        .execute_for_tests(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.content = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .await
        .unwrap();
    a_failed_batch_answers_each_append_alone(store).await;
}

/// A batch that fails in a way that may be one event's (here a trigger
/// refuses one event's content) is halved until that event is alone: it
/// fails, every other event is written.
async fn a_failed_batch_answers_each_append_alone(store: Store) {
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let lead = s.leads.create(tenant, &lead_req("Grace")).await.unwrap().id;
    let trail = trail_len(&s, tenant).await;
    let texts: Vec<String> = (0..40)
        .map(|i| {
            if i == 25 {
                "poison".to_owned()
            } else {
                format!("note {i}")
            }
        })
        .collect();
    let requests: Vec<_> = texts.iter().map(|t| note(t, None, None)).collect();
    let answers = join_all(
        requests
            .iter()
            .map(|req| s.timeline.append(tenant, lead, req)),
    )
    .await;
    for (text, answer) in texts.iter().zip(answers) {
        match answer {
            Err(AppendError::Store(AppendEventError::Unknown(e))) if text == "poison" => {
                assert!(format!("{e:#}").contains("poisoned"), "{e:#}");
            }
            Ok(_) if text != "poison" => {}
            other => panic!("{text}: {other:?}"),
        }
    }
    let written: BTreeSet<String> = texts.into_iter().filter(|t| t != "poison").collect();
    assert_eq!(timeline(&s, tenant, lead).await, written);
    assert_eq!(trail_len(&s, tenant).await, trail + written.len() as u64);
    assert!(
        store.largest_append_batch_for_tests() > 1,
        "the poisoned event was in a batch with others"
    );
}
