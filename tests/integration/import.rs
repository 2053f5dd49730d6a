//! CSV import on both backends, through the command's own function: real
//! files (BOM, `;`, CRLF, quoted newlines, blank and ragged lines, 10,000
//! rows with rejects mixed in), duplicate policies, rejected rows offered
//! back, and resuming a run that stopped halfway.

use std::io::Write as _;

use leadline::import::{ImportArgs, import_leads};
use leadline_app::{CsvSource, ImportOptions, Services};
use leadline_domain::{
    ListLeadsQuery, PageLimit, Slug, TenantId,
    import::{ImportBatch, ImportStatus, OnDuplicate},
};
use leadline_store::Store;

use crate::support::{agent_req, both_backends, lead_req, services};

both_backends!(
    a_dirty_crm_export_imports_once_and_hands_back_its_rejects,
    ten_thousand_rows_with_rejects_mixed_in,
    duplicates_are_skipped_updated_or_created_as_asked,
    a_run_that_stopped_halfway_resumes_without_duplicates,
    two_runners_of_one_file_both_end_and_import_it_once,
    export_then_import_recreates_the_leads,
    an_email_of_the_batch_before_is_a_duplicate_in_the_next,
    a_batch_that_does_not_continue_the_run_writes_nothing,
    a_later_batch_continues_only_its_own_runners,
);

async fn tenant(s: &Services) -> (TenantId, String) {
    let slug = crate::support::unique_slug("imp");
    let created = s
        .tenants
        .create(&leadline_domain::CreateTenantRequest {
            slug: Slug::parse(&slug).unwrap(),
            name: leadline_domain::DisplayName::new("Importer").unwrap(),
        })
        .await
        .unwrap();
    (created.tenant.id, slug)
}

fn args(file: &std::path::Path, slug: &str, on_duplicate: &str) -> ImportArgs {
    ImportArgs {
        file: file.to_owned(),
        tenant: slug.to_owned(),
        map: Vec::new(),
        on_duplicate: on_duplicate.to_owned(),
        rejected: None,
        quiet: true,
    }
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

async fn all_leads(s: &Services, t: TenantId) -> Vec<leadline_domain::Lead> {
    let mut leads = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .leads
            .list(
                t,
                &ListLeadsQuery {
                    limit: PageLimit::new(200).unwrap(),
                    after,
                    ..ListLeadsQuery::default()
                },
            )
            .await
            .unwrap();
        leads.extend(page.items.iter().cloned());
        if !page.has_more {
            return leads;
        }
        after = page.items.last().map(|l| l.id);
    }
}

const HUBSPOT: &str = "\u{feff}First Name;Last Name;Email;Phone Number;Company Name;Contact owner;Lead Status;Favourite Colour\r\n\
Grace;Hopper;GRACE@navy.example;+1 555 0100;US Navy;owner@acme.example;Open Deal;\"blue;\r\nand gold\"\r\n\
Ada;Lovelace;ada@engines.example;;Analytical Engines;;contacted;green\r\n\
\r\n\
Bad;Email;not-an-email;;;;;red\r\n\
Ghost;Owner;ghost@example.com;;;nobody@acme.example;;\r\n\
Short;Row\r\n\
;;;;;;;\r\n\
Åsa;Gräns;asa@example.se;;Gräns AB;;won;\"quoted \"\"word\"\"\"\r\n";

async fn a_dirty_crm_export_imports_once_and_hands_back_its_rejects(store: Store) {
    let s = services(store);
    let (t, slug) = tenant(&s).await;
    s.agents
        .create(t, &agent_req("owner@acme.example"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "hubspot.csv", HUBSPOT.as_bytes());

    let run = import_leads(&s, &args(&file, &slug, "skip")).await.unwrap();
    assert_eq!(run.status, ImportStatus::Done);
    assert_eq!(
        (run.counts.rows, run.counts.created, run.counts.rejected),
        (6, 4, 2),
        "{run:?}"
    );
    let leads = all_leads(&s, t).await;
    let grace = leads
        .iter()
        .find(|l| l.first_name.as_str() == "Grace")
        .unwrap();
    assert_eq!(
        grace.email.as_ref().unwrap().to_string(),
        "grace@navy.example"
    );
    assert!(
        grace.assigned_agent_id.is_some(),
        "the owner resolved by email"
    );
    assert_eq!(
        grace.metadata.as_map()["Favourite Colour"],
        "blue;\r\nand gold"
    );
    assert_eq!(grace.metadata.as_map()["Lead Status"], "Open Deal");
    let ada = leads
        .iter()
        .find(|l| l.first_name.as_str() == "Ada")
        .unwrap();
    assert_eq!(ada.status, leadline_domain::LeadStatus::Contacted);
    let asa = leads
        .iter()
        .find(|l| l.last_name.as_str() == "Gräns")
        .unwrap();
    assert_eq!(asa.metadata.as_map()["Favourite Colour"], "quoted \"word\"");
    assert!(
        leads.iter().any(|l| l.first_name.as_str() == "Short"),
        "ragged rows pad"
    );

    let rejects = s.imports.rejects(t, run.id).await.unwrap();
    let lines: Vec<(u64, String)> = rejects
        .iter()
        .map(|r| (r.line, r.errors[0].column.clone()))
        .collect();
    assert_eq!(
        lines,
        [(6, "Email".to_owned()), (7, "Contact owner".to_owned())]
    );
    let rejected = std::fs::read_to_string(dir.path().join("hubspot.csv.rejected.csv")).unwrap();
    assert!(
        rejected.starts_with("First Name,Last Name,Email,"),
        "{rejected}"
    );
    assert!(rejected.contains("leadline_errors"), "{rejected}");
    assert!(
        rejected.contains("line 6: Email: must be an email address"),
        "{rejected}"
    );

    // The same file again: the same run, nothing new.
    let again = import_leads(&s, &args(&file, &slug, "skip")).await.unwrap();
    assert_eq!(again.id, run.id);
    assert_eq!(all_leads(&s, t).await.len(), 4);

    // The rejected rows, fixed, import on their own (the reasons column is
    // ignored by name).
    let fixed = rejected
        .replace("not-an-email", "bad@example.com")
        .replace("nobody@acme.example", "owner@acme.example");
    let fixed = write(&dir, "fixed.csv", fixed.as_bytes());
    let run = import_leads(&s, &args(&fixed, &slug, "skip"))
        .await
        .unwrap();
    assert_eq!((run.counts.created, run.counts.rejected), (2, 0), "{run:?}");
    assert_eq!(all_leads(&s, t).await.len(), 6);
}

async fn ten_thousand_rows_with_rejects_mixed_in(store: Store) {
    let s = services(store);
    let (t, slug) = tenant(&s).await;
    let mut csv = String::from("email,first_name,last_name,company,tags\n");
    let mut bad = 0;
    for i in 0..10_000 {
        if i % 97 == 0 {
            bad += 1;
            csv.push_str(&format!("broken{i},Row,{i},Co,\n"));
        } else {
            csv.push_str(&format!(
                "p{i}@example.com,Row,\"{i}\",\"Co, {}\",\"a, b\"\n",
                i % 10
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "big.csv", csv.as_bytes());
    let run = import_leads(&s, &args(&file, &slug, "skip")).await.unwrap();
    assert_eq!(
        (run.counts.rows, run.counts.created, run.counts.rejected),
        (10_000, 10_000 - bad, bad)
    );
    assert_eq!(s.leads.count(t).await.unwrap(), 10_000 - bad);
    let rejects = s.imports.rejects(t, run.id).await.unwrap();
    assert_eq!(rejects.len() as u64, bad);
    assert!(
        rejects.iter().all(|r| (r.line - 2) % 97 == 0),
        "line numbers"
    );
}

async fn duplicates_are_skipped_updated_or_created_as_asked(store: Store) {
    let s = services(store);
    let (t, slug) = tenant(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        &dir,
        "first.csv",
        b"email,name,company,tags\na@example.com,Ann Able,Old Co,x\nb@example.com,Bob Baker,Old Co,\n",
    );
    import_leads(&s, &args(&first, &slug, "skip"))
        .await
        .unwrap();
    let second = write(
        &dir,
        "second.csv",
        b"email,name,company,tags\nA@Example.com,Ann Able,New Co,y\nc@example.com,Cy Cole,,\n",
    );
    let run = import_leads(&s, &args(&second, &slug, "skip"))
        .await
        .unwrap();
    assert_eq!((run.counts.created, run.counts.skipped), (1, 1));
    let leads = all_leads(&s, t).await;
    let ann = with_email(&leads, "a@example.com");
    // Every lead an import created has its event; a skipped row adds none.
    for lead in &leads {
        assert_eq!(imported(&s, t, lead.id).await, ["created"], "{lead:?}");
    }
    // Ann's context is cached before the update run...
    let before = s.context.context(t, ann.id).await.unwrap().parse().unwrap();
    assert_eq!(before.events.len(), 1);
    let run = import_leads(&s, &args(&second, &slug, "update"))
        .await
        .unwrap();
    // Cy, created from this very row by the run before, is already as it
    // says: skipped, not updated.
    assert_eq!(
        (run.counts.created, run.counts.updated, run.counts.skipped),
        (0, 1, 1),
        "{run:?}"
    );
    assert_eq!(imported(&s, t, ann.id).await, ["updated", "created"]);
    // ...and shows the update and its event after it.
    let after = s.context.context(t, ann.id).await.unwrap().parse().unwrap();
    assert_eq!(after.events.len(), 2, "{after:?}");
    assert_eq!(after.lead.company.as_ref().unwrap().to_string(), "New Co");
    let ann = with_email(&all_leads(&s, t).await, "a@example.com");
    assert_eq!(ann.company.as_ref().unwrap().to_string(), "New Co");
    let tags: Vec<&str> = ann.tags.as_slice().iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["x", "y"], "tags are added");
    // The same rows again (another file: the same file is recognised and
    // not read twice) change nothing: no new version, no new event.
    let same_rows = write(
        &dir,
        "same-rows.csv",
        b"email,name,company,tags
c@example.com,Cy Cole,,
a@example.com,Ann Able,New Co,y
",
    );
    let run = import_leads(&s, &args(&same_rows, &slug, "update"))
        .await
        .unwrap();
    assert_eq!((run.counts.updated, run.counts.skipped), (0, 2), "{run:?}");
    let again = with_email(&all_leads(&s, t).await, "a@example.com");
    assert_eq!(again.version, ann.version);
    assert_eq!(imported(&s, t, ann.id).await, ["updated", "created"]);
    let run = import_leads(&s, &args(&second, &slug, "create"))
        .await
        .unwrap();
    assert_eq!(run.counts.created, 2);
    assert_eq!(all_leads(&s, t).await.len(), 5);
}

/// The lead of `leads` with `email`.
fn with_email(leads: &[leadline_domain::Lead], email: &str) -> leadline_domain::Lead {
    leads
        .iter()
        .find(|l| l.email.as_ref().is_some_and(|e| e.to_string() == email))
        .unwrap_or_else(|| panic!("no lead with {email}"))
        .clone()
}

/// The `action` of each `imported` event on `lead`'s timeline, newest first.
async fn imported(s: &Services, t: TenantId, lead: leadline_domain::LeadId) -> Vec<String> {
    s.timeline
        .timeline(t, lead, &leadline_domain::TimelineQuery::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.kind == leadline_domain::EventKind::Imported)
        .map(|e| e.metadata.as_map()["action"].as_str().unwrap().to_owned())
        .collect()
}

/// A reader that fails after `left` bytes, as a crash or a cut upload would
/// stop an import.
struct Cut {
    bytes: std::io::Cursor<Vec<u8>>,
    left: usize,
}

impl std::io::Read for Cut {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.left);
        let n = self.bytes.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

async fn a_run_that_stopped_halfway_resumes_without_duplicates(store: Store) {
    let s = services(store);
    let (t, _) = tenant(&s).await;
    // No emails: only the run's position keeps a re-run from duplicating.
    let rows = 4 * leadline_app::BATCH_ROWS as u64;
    let mut csv = String::from("first_name,last_name\n");
    for i in 0..rows {
        csv.push_str(&format!("Nomail,Person{i}\n"));
    }
    let bytes = csv.into_bytes();
    let sha = "ab".repeat(32);
    let options = ImportOptions {
        on_duplicate: OnDuplicate::Skip,
        mapping: Vec::new(),
    };
    let cut = Cut {
        bytes: std::io::Cursor::new(bytes.clone()),
        left: bytes.len() * 3 / 5,
    };
    let source = CsvSource::open(cut).await.unwrap();
    let failed = s
        .imports
        .run(t, &sha, "people.csv", source, &options, |_| {})
        .await
        .expect_err("the reader broke");
    assert!(failed.to_string().contains("connection reset"), "{failed}");
    let partial = s.leads.count(t).await.unwrap();
    assert!(
        partial > 0 && partial < rows && partial % leadline_app::BATCH_ROWS as u64 == 0,
        "whole batches only: {partial}"
    );

    let source = CsvSource::open(std::io::Cursor::new(bytes)).await.unwrap();
    let run = s
        .imports
        .run(t, &sha, "people.csv", source, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(run.status, ImportStatus::Done);
    assert_eq!(run.counts.created, rows);
    assert_eq!(s.leads.count(t).await.unwrap(), rows, "nothing twice");
}

/// The same file posted twice while its run goes on (two uploads, two
/// instances): one runner owns the run, the other stops at a batch that
/// finds the run taken (never continuing the owner's batches), and both
/// calls return (a runner that stopped must not leave its
/// reader waiting, holding the upload's spool file); every row lands once.
async fn two_runners_of_one_file_both_end_and_import_it_once(store: Store) {
    let s = services(store);
    let (t, _) = tenant(&s).await;
    let rows = 6 * leadline_app::BATCH_ROWS as u64;
    let mut csv = String::from("first_name,last_name\n");
    for i in 0..rows {
        csv.push_str(&format!("Twice,Person{i}\n"));
    }
    let bytes = csv.into_bytes();
    let sha = "cd".repeat(32);
    let options = ImportOptions {
        on_duplicate: OnDuplicate::Skip,
        mapping: Vec::new(),
    };
    let runner = |bytes: Vec<u8>| {
        let (s, options, sha) = (s.clone(), options.clone(), sha.clone());
        tokio::spawn(async move {
            let source = CsvSource::open(std::io::Cursor::new(bytes)).await.unwrap();
            s.imports
                .run(t, &sha, "twice.csv", source, &options, |_| {})
                .await
        })
    };
    let (a, b) = (runner(bytes.clone()), runner(bytes));
    let both = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        (a.await.unwrap(), b.await.unwrap())
    })
    .await
    .expect("both runners return");
    for outcome in [both.0, both.1] {
        outcome.expect("neither fails");
    }
    assert_eq!(s.leads.count(t).await.unwrap(), rows, "every row once");
}

/// Rows whose emails repeat rows of the batch before: on PostgreSQL that
/// batch may still be being written when the next is decided, so the next
/// waits for it, and finds its leads.
async fn an_email_of_the_batch_before_is_a_duplicate_in_the_next(store: Store) {
    let s = services(store);
    let (t, slug) = tenant(&s).await;
    let batch = leadline_app::BATCH_ROWS;
    let mut csv = String::from("email,first_name,last_name\n");
    // Batch 1: people 0..batch. Batch 2: every other row one of batch 1's
    // people again, else someone new. Batch 3: new people.
    for i in 0..batch {
        csv.push_str(&format!("p{i}@example.com,Person,{i}\n"));
    }
    for i in 0..batch {
        let who = if i % 2 == 0 { i } else { batch + i };
        csv.push_str(&format!("p{who}@example.com,Person,{who}\n"));
    }
    for i in 2 * batch..3 * batch {
        csv.push_str(&format!("p{i}@example.com,Person,{i}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "repeats.csv", csv.as_bytes());
    let run = import_leads(&s, &args(&file, &slug, "skip")).await.unwrap();
    let (rows, repeats) = (3 * batch as u64, batch as u64 / 2);
    assert_eq!(
        (run.counts.rows, run.counts.created, run.counts.skipped),
        (rows, rows - repeats, repeats),
        "{run:?}"
    );
    assert_eq!(
        s.leads.count(t).await.unwrap(),
        rows - repeats,
        "no email twice"
    );
}

/// The port's own guard: a batch from a line the run is not at (another
/// process moved it, or the batch before it did not commit) is rolled back
/// whole, its leads included, although the run is moved as its last write.
async fn a_batch_that_does_not_continue_the_run_writes_nothing(store: Store) {
    use leadline_ports::ImportRepository as _;
    let s = services(store.clone());
    let (t, _) = tenant(&s).await;
    let run = s
        .imports
        .start(t, &"ab".repeat(32), "guard.csv", &[], OnDuplicate::Skip)
        .await
        .unwrap();
    let ahead = one_lead_batch(5, 6, "Ahead");
    let refused = store
        .commit(t, run.id, &ahead)
        .await
        .expect_err("not at line 5");
    assert!(
        matches!(
            refused,
            leadline_ports::ImportError::Moved { committed_line: 0 }
        ),
        "{refused:?}"
    );
    assert_eq!(s.leads.count(t).await.unwrap(), 0, "nothing of it written");
    let run = store
        .commit(t, run.id, &one_lead_batch(0, 1, "First"))
        .await
        .unwrap();
    assert_eq!((run.committed_line, run.counts.created), (1, 1));
    assert_eq!(s.leads.count(t).await.unwrap(), 1);
}

/// Two runners of one file: a runner's later batch continues only its own
/// runner's batches (as when the runner's first batch lost to the other
/// runner's while its second was being written); a runner's first batch
/// takes the run over from wherever it stands.
async fn a_later_batch_continues_only_its_own_runners(store: Store) {
    use leadline_ports::ImportRepository as _;
    let s = services(store.clone());
    let (t, _) = tenant(&s).await;
    let run = s
        .imports
        .start(t, &"ac".repeat(32), "runners.csv", &[], OnDuplicate::Skip)
        .await
        .unwrap();
    let mine = one_lead_batch(0, 2, "Mine");
    let runner = mine.runner;
    store.commit(t, run.id, &mine).await.unwrap();
    // Another runner's second batch, from where this runner left the run.
    let stray = ImportBatch {
        claims: false,
        ..one_lead_batch(2, 4, "Stray")
    };
    let refused = store
        .commit(t, run.id, &stray)
        .await
        .expect_err("not its run");
    assert!(
        matches!(
            refused,
            leadline_ports::ImportError::Moved { committed_line: 2 }
        ),
        "{refused:?}"
    );
    let next = ImportBatch {
        runner,
        claims: false,
        ..one_lead_batch(2, 4, "Next")
    };
    assert_eq!(
        store.commit(t, run.id, &next).await.unwrap().committed_line,
        4
    );
    // A new runner (a re-run after this one stopped) takes it over.
    let takeover = one_lead_batch(4, 6, "Takeover");
    assert_eq!(
        store
            .commit(t, run.id, &takeover)
            .await
            .unwrap()
            .committed_line,
        6
    );
    let late = ImportBatch {
        runner,
        claims: false,
        ..one_lead_batch(6, 8, "Late")
    };
    let refused = store
        .commit(t, run.id, &late)
        .await
        .expect_err("the new runner's run");
    assert!(
        matches!(
            refused,
            leadline_ports::ImportError::Moved { committed_line: 6 }
        ),
        "{refused:?}"
    );
    let mut names: Vec<String> = all_leads(&s, t)
        .await
        .iter()
        .map(|l| l.first_name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Mine", "Next", "Takeover"]);
}

/// A batch of one new lead named `name`, from `from` to `to`, by a runner
/// of its own that claims the run.
fn one_lead_batch(from: u64, to: u64, name: &str) -> ImportBatch {
    ImportBatch {
        runner: uuid::Uuid::now_v7(),
        claims: true,
        from_line: from,
        to_line: to,
        creates: vec![(to, lead_req(name))],
        rows: 1,
        updated: Vec::new(),
        skipped: 0,
        rejects: Vec::new(),
    }
}

/// What lets two batches be written at once on PostgreSQL: a batch's move
/// waits for the batch before it, holding the run's row, to end. Here a
/// superuser transaction plays that batch (the run moved, not yet
/// committed). When it commits, the waiting batch commits from where it
/// left the run; when it rolls back, the waiting batch writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_after_the_one_before_it_or_not_at_all() {
    use leadline_ports::ImportRepository as _;
    use sqlx::{Connection as _, Executor as _};
    let store = crate::support::pg_store().await;
    let s = services(store.clone());
    let (t, _) = tenant(&s).await;
    let run = s
        .imports
        .start(t, &"ef".repeat(32), "ordered.csv", &[], OnDuplicate::Skip)
        .await
        .unwrap();
    let admin = leadline_testsupport::postgres().admin_url(&crate::support::pg().await.database);
    // (the run's line, where the batch before moves it, where the next
    // batch moves it, whether the batch before commits)
    for (at, before, after, commits) in [(0_i64, 2_i64, 9_u64, true), (9, 11, 12, false)] {
        let mut holder = sqlx::PgConnection::connect(&admin).await.unwrap();
        let pid = crate::support::backend_pid(&mut holder).await;
        holder.execute("BEGIN").await.unwrap();
        sqlx::query("UPDATE imports SET committed_line = $1 WHERE id = $2 AND committed_line = $3")
            .bind(before)
            .bind(run.id.as_uuid())
            .bind(at)
            .execute(&mut holder)
            .await
            .unwrap();
        let name = if commits { "After" } else { "Orphan" };
        let next = one_lead_batch(u64::try_from(before).unwrap(), after, name);
        let writer = tokio::spawn({
            let store = store.clone();
            async move { store.commit(t, run.id, &next).await }
        });
        crate::support::until_lock_waiters(pid, 1).await;
        assert!(
            !writer.is_finished(),
            "the next batch waits for the one before"
        );
        holder
            .execute(if commits { "COMMIT" } else { "ROLLBACK" })
            .await
            .unwrap();
        let outcome = writer.await.unwrap();
        let names: Vec<String> = all_leads(&s, t)
            .await
            .iter()
            .map(|l| l.first_name.to_string())
            .collect();
        if commits {
            let moved = outcome.expect("commits after the batch before");
            assert_eq!((moved.committed_line, moved.counts.created), (after, 1));
            assert_eq!(names, ["After"]);
        } else {
            assert!(
                matches!(
                    outcome,
                    Err(leadline_ports::ImportError::Moved { committed_line: 9 })
                ),
                "{outcome:?}"
            );
            assert!(!names.iter().any(|n| n == "Orphan"), "{names:?}");
        }
    }
}

/// Two batches written at once (PostgreSQL): the one after, done first,
/// waits for the one before to commit, and then commits from where it left
/// the run, instead of finding the run behind and being written again. The
/// batch before is held at its leads' `INSERT` by a lock on `leads` taken
/// from outside, in a database of its own (other tests write leads); the
/// batch after has only rejected rows, so it gets to its end meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_after_waits_for_the_one_before_to_commit() {
    use leadline_ports::ImportRepository as _;
    use sqlx::{Connection as _, Executor as _};
    let (owner_url, url) = crate::support::isolated_pg("leadline_import_order").await;
    let store = crate::support::store_at(&url).await;
    let s = services(store.clone());
    let (t, _) = tenant(&s).await;
    let run = s
        .imports
        .start(t, &"fe".repeat(32), "pair.csv", &[], OnDuplicate::Skip)
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(&owner_url).await.unwrap();
    let pid = crate::support::backend_pid(&mut holder).await;
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE leads IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let commit = |batch: ImportBatch| {
        let store = store.clone();
        tokio::spawn(async move { store.commit(t, run.id, &batch).await })
    };
    let before = one_lead_batch(0, 2, "Before");
    let runner = before.runner;
    let before = commit(before);
    crate::support::until_lock_waiters(pid, 1).await;
    let after = commit(ImportBatch {
        runner,
        claims: false,
        from_line: 2,
        to_line: 4,
        creates: Vec::new(),
        rows: 1,
        updated: Vec::new(),
        skipped: 0,
        rejects: vec![leadline_domain::import::RejectedRow {
            line: 3,
            errors: Vec::new(),
            fields: vec!["bad".to_owned()],
        }],
    });
    // Queued behind the batch before, which is queued behind the holder.
    crate::support::until_lock_waiters(pid, 2).await;
    holder.execute("COMMIT").await.unwrap();
    let before = before.await.unwrap().expect("the batch before commits");
    assert_eq!(before.committed_line, 2);
    let after = after
        .await
        .unwrap()
        .expect("the batch after commits after it");
    assert_eq!(
        (
            after.committed_line,
            after.counts.created,
            after.counts.rejected
        ),
        (4, 1, 1)
    );
    store.close().await;
}

/// The store's imports with a pass's first batch held back until its
/// second batch's commit has returned: the second gets to its move first.
struct FirstHeldBack {
    store: Store,
    second_returned: tokio::sync::Notify,
    commits: std::sync::Mutex<Vec<Result<u64, String>>>,
}

#[async_trait::async_trait]
impl leadline_ports::ImportRepository for FirstHeldBack {
    async fn start(
        &self,
        tenant: TenantId,
        file_sha256: &str,
        source_name: &str,
        headers: &[String],
        on_duplicate: OnDuplicate,
    ) -> Result<leadline_domain::import::ImportRun, leadline_ports::ImportError> {
        self.store
            .start(tenant, file_sha256, source_name, headers, on_duplicate)
            .await
    }

    async fn commit(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
        batch: &ImportBatch,
    ) -> Result<leadline_domain::import::ImportRun, leadline_ports::ImportError> {
        if batch.claims {
            self.second_returned.notified().await;
        }
        let outcome = self.store.commit(tenant, run, batch).await;
        self.commits.lock().unwrap().push(match &outcome {
            Ok(run) => Ok(run.committed_line),
            Err(e) => Err(format!("{e:?}")),
        });
        if !batch.claims {
            self.second_returned.notify_one();
        }
        outcome
    }

    fn concurrent_batches(&self) -> usize {
        self.store.concurrent_batches()
    }

    async fn finish(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
        status: ImportStatus,
        failure: Option<String>,
    ) -> Result<leadline_domain::import::ImportRun, leadline_ports::ImportError> {
        self.store.finish(tenant, run, status, failure).await
    }

    async fn get(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
    ) -> Result<leadline_domain::import::ImportRun, leadline_ports::ImportError> {
        self.store.get(tenant, run).await
    }

    async fn rejects(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
        after_line: u64,
        limit: u32,
    ) -> Result<Vec<leadline_domain::import::RejectedRow>, leadline_ports::ImportError> {
        self.store.rejects(tenant, run, after_line, limit).await
    }
}

/// A batch that gets to its move before the batch before it has committed
/// (here: before that one even started) is rolled back and written again
/// once that one has committed: every row lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_done_before_the_one_before_it_is_written_again() {
    let store = crate::support::pg_store().await;
    let s = services(store.clone());
    let (t, _) = tenant(&s).await;
    let held = std::sync::Arc::new(FirstHeldBack {
        store: store.clone(),
        second_returned: tokio::sync::Notify::new(),
        commits: std::sync::Mutex::new(Vec::new()),
    });
    let shared = std::sync::Arc::new(store.clone());
    let imports = leadline_app::ImportService::new(
        held.clone(),
        shared.clone(),
        shared.clone(),
        leadline_app::LeadService::new(
            shared,
            std::sync::Arc::new(leadline_cache::NullCache::new()),
        ),
    );
    let rows = 2 * leadline_app::BATCH_ROWS as u64;
    let mut csv = String::from("first_name,last_name\n");
    for i in 0..rows {
        csv.push_str(&format!("Held,Person{i}\n"));
    }
    let source = CsvSource::open(std::io::Cursor::new(csv.into_bytes()))
        .await
        .unwrap();
    let options = ImportOptions {
        on_duplicate: OnDuplicate::Skip,
        mapping: Vec::new(),
    };
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        imports.run(t, &"ba".repeat(32), "held.csv", source, &options, |_| {}),
    )
    .await
    .expect("the import ends")
    .unwrap();
    assert_eq!(
        (run.status, run.counts.created, run.committed_line),
        (ImportStatus::Done, rows, rows + 1)
    );
    assert_eq!(s.leads.count(t).await.unwrap(), rows, "every row once");
    let commits = held.commits.lock().unwrap().clone();
    let first_end = leadline_app::BATCH_ROWS as u64 + 1;
    assert_eq!(commits.len(), 3, "{commits:?}");
    assert!(
        commits[0].as_ref().is_err_and(|e| e.contains("Moved")),
        "{commits:?}"
    );
    assert_eq!(commits[1], Ok(first_end), "{commits:?}");
    assert_eq!(commits[2], Ok(rows + 1), "{commits:?}");
}

/// The fields an import can recreate (not ids or times).
fn portable(l: &leadline_domain::Lead, owners: &[(leadline_domain::AgentId, String)]) -> String {
    let owner = l
        .assigned_agent_id
        .and_then(|a| owners.iter().find(|(id, _)| *id == a))
        .map(|(_, e)| e.clone());
    format!(
        "{:?}",
        (
            l.first_name.as_str(),
            l.last_name.as_str(),
            l.email.as_ref().map(ToString::to_string),
            l.phone.as_ref().map(|p| p.as_str().to_owned()),
            l.company.as_ref().map(ToString::to_string),
            l.source.as_ref().map(ToString::to_string),
            l.status,
            owner,
            &l.tags,
            &l.metadata,
        )
    )
}

async fn export_then_import_recreates_the_leads(store: Store) {
    use leadline_domain::{
        CompanyName, CreateLeadRequest, Email, LeadStatus, Metadata, PersonName, Phone, Source,
        Tags,
    };
    let s = services(store);
    let (from, from_slug) = tenant(&s).await;
    let (to, to_slug) = tenant(&s).await;
    let agent_from = s
        .agents
        .create(from, &agent_req("owner@acme.example"))
        .await
        .unwrap();
    let agent_to = s
        .agents
        .create(to, &agent_req("owner@acme.example"))
        .await
        .unwrap();
    let people = [
        (
            "Zoë",
            "O'Brien, \"Jr\"",
            Some("zoe@example.ie"),
            Some("+353 1 555 0100"),
            Some("Café \"Crème\", Ltd"),
            true,
        ),
        ("李", "小龙", None, None, Some("功夫; Inc"), false),
        (
            "Ada",
            "Lovelace",
            Some("ada@engines.example"),
            None,
            None,
            true,
        ),
    ];
    for (i, (first, last, email, phone, company, owned)) in people.into_iter().enumerate() {
        let req = CreateLeadRequest {
            first_name: PersonName::new(first).unwrap(),
            last_name: PersonName::new(last).unwrap(),
            email: email.map(|e| Email::parse(e).unwrap()),
            phone: phone.map(|p| Phone::parse(p).unwrap()),
            company: company.map(|c| CompanyName::new(c).unwrap()),
            source: Some(Source::new("trade fair, 2026").unwrap()),
            status: [LeadStatus::New, LeadStatus::Contacted, LeadStatus::Won][i],
            assigned_agent_id: owned.then_some(agent_from.id),
            tags: Tags::parse(&["vip", "q4:emea"][..=i.min(1)]).unwrap(),
            metadata: Metadata::new(serde_json::json!({
                "note": "line one\nline \"two\", with commas",
                "nested": {"n": [1, 2.5, null, true]},
                "emoji": "🚀",
            }))
            .unwrap(),
        };
        s.leads.create(from, &req).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    let written = leadline::export::export_leads(
        &s,
        &leadline::export::ExportArgs {
            tenant: from_slug,
            out: Some(file.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(written > 0);
    let run = import_leads(&s, &args(&file, &to_slug, "skip"))
        .await
        .unwrap();
    assert_eq!((run.counts.created, run.counts.rejected), (3, 0), "{run:?}");

    let mut before: Vec<String> = all_leads(&s, from)
        .await
        .iter()
        .map(|l| portable(l, &[(agent_from.id, "owner@acme.example".to_owned())]))
        .collect();
    let mut after: Vec<String> = all_leads(&s, to)
        .await
        .iter()
        .map(|l| portable(l, &[(agent_to.id, "owner@acme.example".to_owned())]))
        .collect();
    before.sort();
    after.sort();
    assert_eq!(before, after);

    // The export of the copy is the same file but for ids and times.
    let strip = |csv: Vec<u8>| -> Vec<String> {
        let text = String::from_utf8(csv).unwrap();
        let mut rows: Vec<String> = csv_reader(&text)
            .iter()
            .map(|r| r[..10].join("\u{1}"))
            .collect();
        rows.sort();
        rows
    };
    let a = s
        .exports
        .csv_bytes(
            from,
            leadline_app::ExportQuery::List(ListLeadsQuery::default()),
        )
        .await
        .unwrap();
    let b = s
        .exports
        .csv_bytes(
            to,
            leadline_app::ExportQuery::List(ListLeadsQuery::default()),
        )
        .await
        .unwrap();
    assert_eq!(strip(a), strip(b));
}

/// Every record of a CSV text, header included, parsed by an independent
/// reader (the one the service uses to read files, on its own).
fn csv_reader(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut row = Vec::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    out
}
