//! Row-level security, attacked directly: raw SQL as the service role, with
//! two tenants, on every tenant-scoped table. The application's own
//! `WHERE tenant_id = …` is deliberately absent from these statements, so
//! only the policies stand between tenants.

use leadline_domain::TenantId;
use leadline_migrations::TENANT_TABLES;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::support::{SERVICE, agent_req, lead_req, new_tenant, pg, pg_store, services};

/// Marks SQL built from this file's constant table and column names (never
/// from input) as safe to send: sqlx 0.9 insists on the audit.
fn trusted(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// The column that carries the tenant in each table.
fn tenant_column(table: &str) -> &'static str {
    if table == "tenants" {
        "id"
    } else {
        "tenant_id"
    }
}

async fn service_conn() -> PgConnection {
    PgConnection::connect(&pg().await.service_url)
        .await
        .expect("service role connects")
}

async fn begin_as(conn: &mut PgConnection, tenant: Option<TenantId>) {
    conn.execute("BEGIN").await.unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

async fn count_rows(conn: &mut PgConnection, table: &str, tenant: TenantId) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM {table} WHERE {} = $1",
        tenant_column(table)
    );
    sqlx::query(trusted(sql))
        .bind(tenant.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0)
}

/// A tenant with rows in every table.
struct Populated {
    tenant: TenantId,
    agent: uuid::Uuid,
    lead: uuid::Uuid,
    approval: uuid::Uuid,
    import: uuid::Uuid,
    delivery: uuid::Uuid,
    webhook: uuid::Uuid,
    user: uuid::Uuid,
    slug: String,
}

/// Two tenants, each with at least one row in every tenant table: an agent,
/// a lead, an approval taken through approve and send (events, outbox), and
/// an idempotency key.
async fn two_populated_tenants() -> (Populated, Populated) {
    use leadline_domain::import::{ImportBatch, OnDuplicate, RejectedRow};
    use leadline_domain::{
        ApprovalAction, Channel, DraftApprovalRequest, IdempotencyKey, MessageBody,
    };
    use leadline_ports::{IdempotencyStore, ImportRepository};
    let store = pg_store().await;
    let s = services(store.clone());
    let mut out = Vec::new();
    for _ in 0..2 {
        let (t, _) = new_tenant(&s).await;
        let agent = s
            .agents
            .create(t, &agent_req("rls@example.com"))
            .await
            .unwrap();
        let mut lead = lead_req("Rls");
        lead.assigned_agent_id = Some(agent.id);
        let lead = s.leads.create(t, &lead).await.unwrap();
        let draft = DraftApprovalRequest {
            channel: Channel::Email,
            subject: None,
            body: MessageBody::new("hi").unwrap(),
            requested_by: agent.id,
        };
        let approval = s.approvals.draft(t, lead.id, &draft).await.unwrap();
        s.approvals
            .act(t, approval.id, &ApprovalAction::Approve { by: agent.id })
            .await
            .unwrap();
        s.approvals
            .act(t, approval.id, &ApprovalAction::MarkSent { by: agent.id })
            .await
            .unwrap();
        store
            .begin(t, &IdempotencyKey::new("rls-key").unwrap(), [7; 32])
            .await
            .unwrap();
        // An import with one rejected row.
        let run = ImportRepository::start(
            &store,
            t,
            &"cd".repeat(32),
            "rls.csv",
            &["name".to_owned()],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
        ImportRepository::commit(
            &store,
            t,
            run.id,
            &ImportBatch {
                runner: uuid::Uuid::now_v7(),
                claims: true,
                from_line: 0,
                to_line: 2,
                creates: Vec::new(),
                rows: 1,
                updated: Vec::new(),
                skipped: 0,
                rejects: vec![RejectedRow {
                    line: 2,
                    errors: Vec::new(),
                    fields: vec!["x".to_owned()],
                }],
            },
        )
        .await
        .unwrap();
        // The sender, and one recorded delivery attempt.
        s.deliveries
            .set_sender(
                t,
                &leadline_domain::SenderIdentity {
                    from_email: leadline_domain::Email::parse("rls@example.com").unwrap(),
                    from_name: None,
                    reply_to: None,
                    unsubscribe: None,
                },
            )
            .await
            .unwrap();
        let delivery = s
            .deliveries
            .list(t, None, None, leadline_domain::PageLimit::new(1).unwrap())
            .await
            .unwrap()
            .items[0]
            .id
            .as_uuid();
        let mut conn = service_conn().await;
        begin_as(&mut conn, Some(t)).await;
        sqlx::query(
            "INSERT INTO delivery_attempts (tenant_id, delivery_id, attempt, started_at, finished_at, outcome) \
             VALUES ($1, $2, 1, now(), now(), 'transient')",
        )
        .bind(t.as_uuid())
        .bind(delivery)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.execute("COMMIT").await.unwrap();
        // A webhook endpoint (its secret sealed as the store keeps it),
        // with one dead letter.
        let webhook = leadline_ports::WebhookRepository::create(
            &store,
            t,
            &leadline_domain::Webhook::new(
                t,
                &leadline_domain::CreateWebhookRequest {
                    url: leadline_domain::WebhookUrl::parse("https://hooks.example.com/rls")
                        .unwrap(),
                    types: leadline_domain::ChangeFilter::default(),
                    changes: true,
                    channels: leadline_domain::MessageChannels::default(),
                    active: true,
                },
                chrono::Utc::now(),
            )
            .unwrap(),
            &leadline_ports::SealedSecret(vec![1; 57]),
        )
        .await
        .unwrap()
        .id
        .as_uuid();
        let mut conn = service_conn().await;
        begin_as(&mut conn, Some(t)).await;
        sqlx::query(
            "INSERT INTO webhook_dead_letters (tenant_id, webhook_id, tx, seq, type, entity_id, attempts, reason, at) \
             VALUES ($1, $2, 1, 1, 'lead.created', $3, 1, 'HTTP 400', now())",
        )
        .bind(t.as_uuid())
        .bind(webhook)
        .bind(lead.id.as_uuid())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.execute("COMMIT").await.unwrap();
        // A retention horizon, as pruning leaves it (the owner's function
        // writes it; the service role only reads it).
        let mut owner = PgConnection::connect(&pg().await.owner_url).await.unwrap();
        sqlx::query("INSERT INTO change_horizons (tenant_id, tx, seq) VALUES ($1, '1', 1)")
            .bind(t.as_uuid())
            .execute(&mut owner)
            .await
            .unwrap();
        // A retention policy, and one archived event (as the owner's
        // retention function leaves it; the service role only reads it).
        s.retention
            .set_policy(
                t,
                Some(
                    leadline_domain::RetentionPolicy::new(
                        3650,
                        leadline_domain::RetentionAction::Archive,
                    )
                    .unwrap(),
                ),
            )
            .await
            .unwrap();
        let mut tx = owner.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO events_archive (tenant_id, id, lead_id, kind, direction, occurred_at, \
             metadata, created_at, archived_at) \
             VALUES ($1, gen_random_uuid(), $2, 'note', 'internal', now(), '{}', now(), now())",
        )
        .bind(t.as_uuid())
        .bind(lead.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let slug = s.tenants.get(t).await.unwrap().slug.to_string();
        // A user (and the agent made for them), their used login link, a
        // session, and a failed sign-in.
        let invited = s
            .people
            .invite(
                t,
                leadline_domain::Email::parse("rls-user@example.com").unwrap(),
                leadline_domain::DisplayName::new("Rls User").unwrap(),
                leadline_domain::Role::Admin,
            )
            .await
            .unwrap();
        s.people
            .redeem_link(invited.link.expose(), "a long enough password")
            .await
            .unwrap();
        assert!(
            s.people
                .sign_in(
                    &slug,
                    "rls-user@example.com",
                    "not the password",
                    "10.9.9.9"
                )
                .await
                .is_err()
        );
        out.push(Populated {
            user: invited.user.id.as_uuid(),
            delivery,
            webhook,
            tenant: t,
            agent: agent.id.as_uuid(),
            lead: lead.id.as_uuid(),
            approval: approval.id.as_uuid(),
            import: run.id.as_uuid(),
            slug,
        });
    }
    let b = out.pop().unwrap();
    let a = out.pop().unwrap();
    (a, b)
}

async fn counts_as(conn: &mut PgConnection, who: TenantId, of: TenantId) -> Vec<i64> {
    begin_as(conn, Some(who)).await;
    let mut counts = Vec::new();
    for table in TENANT_TABLES {
        counts.push(count_rows(conn, table, of).await);
    }
    conn.execute("COMMIT").await.unwrap();
    counts
}

/// Runs one statement in A's context, in a transaction of its own, and
/// requires that it touched nothing: zero rows, or refused for lack of a
/// privilege (the service role may not UPDATE the append-only timeline, for
/// instance).
async fn attack(conn: &mut PgConnection, a: TenantId, sql: String, b: TenantId, table: &str) {
    begin_as(conn, Some(a)).await;
    match sqlx::query(trusted(sql.clone()))
        .bind(b.as_uuid())
        .execute(&mut *conn)
        .await
    {
        Ok(done) => assert_eq!(done.rows_affected(), 0, "{table}: {sql} touched B's rows"),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
        Err(e) => panic!("{table}: {sql}: unexpected error {e}"),
    }
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn another_tenants_rows_cannot_be_read_changed_or_deleted() {
    let (a, b) = two_populated_tenants().await;
    let (a, b) = (a.tenant, b.tenant);
    let mut conn = service_conn().await;
    let b_before = counts_as(&mut conn, b, b).await;
    assert!(
        b_before.iter().all(|&n| n >= 1),
        "B has rows in every table: {b_before:?}"
    );
    assert!(
        counts_as(&mut conn, a, b).await.iter().all(|&n| n == 0),
        "A reads none of B's rows"
    );
    let a_own = counts_as(&mut conn, a, a).await;

    for (i, table) in TENANT_TABLES.iter().enumerate() {
        let col = tenant_column(table);
        begin_as(&mut conn, Some(a)).await;
        let all: i64 = sqlx::query(trusted(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            all, a_own[i],
            "{table}: an unfiltered SELECT under A's context sees A's rows only"
        );
        conn.execute("COMMIT").await.unwrap();

        attack(
            &mut conn,
            a,
            format!("UPDATE {table} SET {col} = {col} WHERE {col} = $1"),
            b,
            table,
        )
        .await;
        attack(
            &mut conn,
            a,
            format!("DELETE FROM {table} WHERE {col} = $1"),
            b,
            table,
        )
        .await;

        // Moving A's own rows into B is refused by WITH CHECK (or by the
        // missing UPDATE privilege on append-only tables).
        begin_as(&mut conn, Some(a)).await;
        let moved = sqlx::query(trusted(format!(
            "UPDATE {table} SET {col} = $1 WHERE {col} = $2"
        )))
        .bind(b.as_uuid())
        .bind(a.as_uuid())
        .execute(&mut conn)
        .await;
        assert_rls_violation(moved, table);
        conn.execute("ROLLBACK").await.unwrap();
    }
    assert_eq!(
        counts_as(&mut conn, b, b).await,
        b_before,
        "B's rows all survived"
    );
}

fn assert_rls_violation(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, table: &str) {
    match result {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(
                e.code().as_deref(),
                Some("42501"),
                "{table}: expected an RLS violation, got {e}"
            );
        }
        other => panic!("{table}: expected an RLS violation, got {other:?}"),
    }
}

#[tokio::test]
async fn inserting_a_row_for_another_tenant_is_refused() {
    let (a, b) = two_populated_tenants().await;
    let mut conn = service_conn().await;
    let now = "now()";
    // Every row below references B's real rows, so row-level security is
    // the only thing that can refuse it.
    let inserts = [
        (
            "tenants",
            format!(
                "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, 'x-{}', 'X', {now})",
                uuid::Uuid::new_v4().simple()
            ),
        ),
        (
            "api_keys",
            format!(
                "INSERT INTO api_keys (tenant_id, id, key_hash, created_at) VALUES ($1, gen_random_uuid(), decode(repeat('ab', 32), 'hex'), {now})"
            ),
        ),
        (
            "agents",
            format!(
                "INSERT INTO agents (tenant_id, id, name, email, role, active, created_at, updated_at, version) VALUES ($1, gen_random_uuid(), 'M', 'm@example.com', 'agent', true, {now}, {now}, 1)"
            ),
        ),
        (
            "leads",
            format!(
                "INSERT INTO leads (tenant_id, id, first_name, last_name, status, created_at, updated_at, version) VALUES ($1, gen_random_uuid(), 'M', 'X', 'new', {now}, {now}, 1)"
            ),
        ),
        (
            "approvals",
            format!(
                "INSERT INTO approvals (tenant_id, id, lead_id, channel, body, requested_by, status, created_at, updated_at) VALUES ($1, gen_random_uuid(), '{}', 'email', 'x', '{}', 'pending', {now}, {now})",
                b.lead, b.agent
            ),
        ),
        (
            "events",
            format!(
                "INSERT INTO events (tenant_id, id, lead_id, kind, direction, occurred_at, created_at) VALUES ($1, gen_random_uuid(), '{}', 'note', 'internal', {now}, {now})",
                b.lead
            ),
        ),
        (
            "outbox",
            format!(
                "INSERT INTO outbox (tenant_id, id, approval_id, lead_id, channel, payload, created_at) VALUES ($1, gen_random_uuid(), '{}', '{}', 'email', '{{}}', {now})",
                b.approval, b.lead
            ),
        ),
        (
            "idempotency_keys",
            format!(
                "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, created_at) VALUES ($1, 'attack', decode(repeat('ab', 32), 'hex'), {now})"
            ),
        ),
        (
            "imports",
            format!(
                "INSERT INTO imports (tenant_id, id, file_sha256, source_name, headers, on_duplicate, status, created_at, updated_at) VALUES ($1, gen_random_uuid(), repeat('e', 64), 'x.csv', '[]', 'skip', 'running', {now}, {now})"
            ),
        ),
        (
            "import_rejects",
            format!(
                "INSERT INTO import_rejects (tenant_id, import_id, line, errors, fields) VALUES ($1, '{}', 99, '[]', '[]')",
                b.import
            ),
        ),
        (
            "delivery_attempts",
            format!(
                "INSERT INTO delivery_attempts (tenant_id, delivery_id, attempt, started_at, finished_at, outcome) VALUES ($1, '{}', 99, {now}, {now}, 'delivered')",
                b.delivery
            ),
        ),
        (
            "email_senders",
            "INSERT INTO email_senders (tenant_id, from_email, updated_at) VALUES ($1, 'x@example.com', now()) \
             ON CONFLICT (tenant_id) DO UPDATE SET from_email = 'pwned@example.com'"
                .to_owned(),
        ),
        (
            "changes",
            format!(
                "INSERT INTO changes (tenant_id, type, entity_id, at, data) VALUES ($1, 'lead.created', '{}', {now}, '{{}}')",
                b.lead
            ),
        ),
        (
            "change_horizons",
            "INSERT INTO change_horizons (tenant_id, tx, seq) VALUES ($1, '99', 99)".to_owned(),
        ),
        (
            "search_words",
            "INSERT INTO search_words (tenant_id, word) VALUES ($1, 'planted')".to_owned(),
        ),
        (
            "webhooks",
            format!(
                "INSERT INTO webhooks (tenant_id, id, url, active, secret, after_tx, after_seq, created_at, updated_at, version) VALUES ($1, gen_random_uuid(), 'https://evil.example/', true, '\\x00', 0, 0, {now}, {now}, 1)"
            ),
        ),
        (
            "webhook_dead_letters",
            format!(
                "INSERT INTO webhook_dead_letters (tenant_id, webhook_id, tx, seq, type, entity_id, attempts, reason, at) VALUES ($1, '{}', 9, 9, 'lead.created', '{}', 1, 'x', {now})",
                b.webhook, b.lead
            ),
        ),
        (
            "users",
            format!(
                "INSERT INTO users (tenant_id, id, email, name, role, created_at, updated_at, version) VALUES ($1, gen_random_uuid(), 'planted@example.com', 'P', 'admin', {now}, {now}, 1)"
            ),
        ),
        (
            "sessions",
            format!(
                "INSERT INTO sessions (tenant_id, token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) VALUES ($1, decode(repeat('ab', 32), 'hex'), '{}', repeat('a', 64), {now}, {now}, {now} + interval '1 hour')",
                b.user
            ),
        ),
        (
            "login_links",
            format!(
                "INSERT INTO login_links (tenant_id, token_hash, user_id, created_at, expires_at) VALUES ($1, decode(repeat('cd', 32), 'hex'), '{}', {now}, {now} + interval '1 hour')",
                b.user
            ),
        ),
        (
            "login_attempts",
            format!(
                "INSERT INTO login_attempts (tenant_id, id, email, address, succeeded, at) VALUES ($1, gen_random_uuid(), 'rls-user@example.com', '10.0.0.1', true, {now})"
            ),
        ),
        (
            "audit_log",
            format!(
                "INSERT INTO audit_log (tenant_id, at, entity, entity_id, action, changes, content_hash) VALUES ($1, {now}, 'lead', gen_random_uuid(), 'lead.created', '{{}}', decode(repeat('ab', 32), 'hex'))"
            ),
        ),
        (
            "retention_policies",
            format!(
                "INSERT INTO retention_policies (tenant_id, events_days, action, updated_at) VALUES ($1, 1, 'delete', {now})"
            ),
        ),
        (
            "events_archive",
            format!(
                "INSERT INTO events_archive (tenant_id, id, lead_id, kind, direction, occurred_at, metadata, created_at, archived_at) VALUES ($1, gen_random_uuid(), '{}', 'note', 'internal', {now}, '{{}}', {now}, {now})",
                b.lead
            ),
        ),
    ];
    assert_eq!(
        inserts.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        TENANT_TABLES,
        "every tenant table is attacked"
    );
    for (table, sql) in &inserts {
        // `tenants` is keyed by id: B's own id is taken, so use a fresh one.
        let target = if *table == "tenants" {
            TenantId::new()
        } else {
            b.tenant
        };
        begin_as(&mut conn, Some(a.tenant)).await;
        let result = sqlx::query(trusted(sql.clone()))
            .bind(target.as_uuid())
            .execute(&mut conn)
            .await;
        assert_rls_violation(result, table);
        conn.execute("ROLLBACK").await.unwrap();
    }
}

/// Naming a tenant's slug (as commands do) shows that tenant's row and
/// nothing else of it: no other table, no change.
#[tokio::test]
async fn a_slug_reveals_its_tenant_row_only() {
    let (a, b) = two_populated_tenants().await;
    let mut conn = service_conn().await;
    begin_as(&mut conn, Some(a.tenant)).await;
    sqlx::query("SELECT set_config('app.tenant_slug', $1, true)")
        .bind(&b.slug)
        .execute(&mut conn)
        .await
        .unwrap();
    let visible: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut expected = vec![a.tenant.as_uuid(), b.tenant.as_uuid()];
    expected.sort();
    assert_eq!(visible, expected, "A's own row and the named one");
    for table in TENANT_TABLES.iter().filter(|t| **t != "tenants") {
        let col = tenant_column(table);
        let n: i64 = sqlx::query(trusted(format!(
            "SELECT count(*) FROM {table} WHERE {col} = $1"
        )))
        .bind(b.tenant.as_uuid())
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        assert_eq!(n, 0, "{table}: the slug opens nothing but the tenant row");
    }
    let renamed = sqlx::query("UPDATE tenants SET name = 'pwned' WHERE id = $1")
        .bind(b.tenant.as_uuid())
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0, "reading is all the slug allows");
    conn.execute("ROLLBACK").await.unwrap();
    // Without a tenant context, the slug alone shows just that row.
    begin_as(&mut conn, None).await;
    sqlx::query("SELECT set_config('app.tenant_slug', $1, true)")
        .bind(&b.slug)
        .execute(&mut conn)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn without_a_tenant_context_nothing_is_visible_and_nothing_errors() {
    let (a, _) = two_populated_tenants().await;
    let a = a.tenant;
    let mut conn = service_conn().await;
    for table in TENANT_TABLES {
        let n: i64 = sqlx::query(trusted(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}: no context, no rows (outside a transaction)");
    }
    // A transaction-local context does not outlive its transaction on a
    // pooled connection: the next transaction starts with none.
    begin_as(&mut conn, Some(a)).await;
    assert_eq!(count_rows(&mut conn, "leads", a).await, 1);
    conn.execute("COMMIT").await.unwrap();
    for table in TENANT_TABLES {
        let n: i64 = sqlx::query(trusted(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}: the context did not leak past COMMIT");
    }
    // An empty or garbage setting is no context either way, never an error
    // for the empty case.
    begin_as(&mut conn, None).await;
    sqlx::query("SELECT set_config('app.tenant_id', '', true)")
        .execute(&mut conn)
        .await
        .unwrap();
    let n: i64 = sqlx::query("SELECT count(*) FROM leads")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn the_service_role_cannot_escape_the_policies() {
    let (a, _) = two_populated_tenants().await;
    let a = a.tenant;
    let mut conn = service_conn().await;
    let attempts = [
        "TRUNCATE leads",
        "ALTER TABLE leads DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE leads NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON leads",
        "CREATE TABLE sneaky (id int)",
        "SET ROLE leadline_owner",
    ];
    for sql in attempts {
        let err = conn.execute(sql).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert!(
            matches!(code.as_deref(), Some("42501")),
            "{sql}: expected insufficient_privilege, got {err}"
        );
    }
    // row_security = off does not bypass for a role without BYPASSRLS: the
    // query errors instead of returning other tenants' rows.
    conn.execute("SET row_security = off").await.unwrap();
    assert!(
        sqlx::query("SELECT count(*) FROM leads")
            .fetch_one(&mut conn)
            .await
            .is_err()
    );
    conn.execute("RESET row_security").await.unwrap();
    begin_as(&mut conn, Some(a)).await;
    assert_eq!(
        count_rows(&mut conn, "leads", a).await,
        1,
        "data intact after the attempts"
    );
    conn.execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn catalog_shows_forced_rls_and_a_powerless_service_role() {
    let mut conn = PgConnection::connect(&pg().await.owner_url).await.unwrap();
    for table in TENANT_TABLES {
        let row = sqlx::query(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, \
             (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies, \
             (SELECT string_agg(pg_get_expr(p.polqual, p.polrelid) || ' / ' || pg_get_expr(p.polwithcheck, p.polrelid), ';') \
                FROM pg_policy p WHERE p.polrelid = c.oid) AS exprs \
             FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(row.get::<bool, _>(0), "{table}: RLS enabled");
        assert!(row.get::<bool, _>(1), "{table}: RLS forced");
        assert!(row.get::<i64, _>(2) >= 1, "{table}: has a policy");
        let exprs: String = row.get(3);
        assert!(
            exprs.contains("current_setting('app.tenant_id'"),
            "{table}: policy reads the tenant context: {exprs}"
        );
        assert_eq!(
            exprs.matches("current_setting").count(),
            2,
            "{table}: USING and WITH CHECK both set: {exprs}"
        );
    }
    let role = sqlx::query(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, \
         (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) \
         + (SELECT count(*) FROM pg_database WHERE datdba = r.oid) AS owned \
         FROM pg_roles r WHERE rolname = $1",
    )
    .bind(SERVICE)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!role.get::<bool, _>(0), "not a superuser");
    assert!(!role.get::<bool, _>(1), "no BYPASSRLS");
    assert!(
        !role.get::<bool, _>(2) && !role.get::<bool, _>(3),
        "cannot create roles or databases"
    );
    assert_eq!(role.get::<i64, _>(4), 0, "owns nothing");
    let truncate: bool = sqlx::query("SELECT bool_or(has_table_privilege($1, c.oid, 'TRUNCATE')) FROM pg_class c WHERE c.relname = ANY($2)")
        .bind(SERVICE)
        .bind(TENANT_TABLES.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(!truncate, "no TRUNCATE on any tenant table");
}

#[tokio::test]
async fn verify_passes_the_service_role_and_flags_an_unsafe_one() {
    let owner = leadline_store::Store::connect_for_migrations(
        &pg().await.owner_url,
        &leadline_store::StoreSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        owner.verify_service_login(SERVICE).await.unwrap(),
        Vec::<String>::new()
    );

    // The owner itself is a bad choice: it owns every table.
    let problems = owner
        .verify_service_login(crate::support::OWNER)
        .await
        .unwrap();
    assert!(problems.iter().any(|p| p.contains("owns")), "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("not a member")),
        "{problems:?}"
    );
    // The owner reads backups through leadline_backup, whose policies show
    // every tenant: a login that can do the same is no service login.
    assert!(
        problems.iter().any(|p| p.contains("leadline_backup")),
        "{problems:?}"
    );
    let missing = owner.verify_service_login("no_such_role").await.unwrap();
    assert!(
        missing.iter().any(|p| p.contains("does not exist")),
        "{missing:?}"
    );
    owner.close().await;
}

/// The tenants `relay_due_tenants` names as having due email.
async fn relay_due_tenants(conn: &mut PgConnection) -> Vec<uuid::Uuid> {
    let rows: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT tenant_id, due FROM relay_due_tenants(ARRAY['email'], now() + interval '1 hour', 100000)",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    rows.into_iter().map(|(t, _)| t).collect()
}

/// The relay's scan reads across tenants only through two functions that
/// answer tenant ids, due times and counts: the service role itself still
/// reads no other tenant's outbox row, whatever it sets, and cannot write
/// one; a finished delivery is not due work.
#[tokio::test]
async fn the_relay_scan_answers_tenant_ids_and_counts_and_opens_no_row() {
    let (a, b) = two_populated_tenants().await;
    let mut conn = service_conn().await;
    for context in [None, Some(a.tenant)] {
        begin_as(&mut conn, context).await;
        // A setting that once opened the scan opens nothing now.
        sqlx::query("SELECT set_config('app.relay_scan', 'on', true)")
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(
            relay_due_tenants(&mut conn)
                .await
                .contains(&b.tenant.as_uuid()),
            "B has due work, and the scan says so"
        );
        let (pending, _, _): (i64, i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
            "SELECT pending, due, oldest_due FROM relay_queue_depth(ARRAY['email'], now())",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            pending >= 2,
            "both tenants' deliveries are counted: {pending}"
        );
        for table in TENANT_TABLES {
            let n = count_rows(&mut conn, table, b.tenant).await;
            assert_eq!(n, 0, "{table}: nothing of B is readable");
        }
        for sql in [
            "UPDATE outbox SET status = 'failed', dispatched_at = now() WHERE tenant_id = $1",
            "DELETE FROM outbox WHERE tenant_id = $1",
        ] {
            match sqlx::query(sql)
                .bind(b.tenant.as_uuid())
                .execute(&mut conn)
                .await
            {
                Ok(done) => assert_eq!(done.rows_affected(), 0, "{sql}"),
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
                Err(e) => panic!("{sql}: {e}"),
            }
        }
        conn.execute("ROLLBACK").await.unwrap();
    }
    // The functions answer nothing but ids, times and counts.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_function_result(p.oid) FROM pg_proc p \
         WHERE p.proname IN ('relay_due_tenants', 'relay_queue_depth') ORDER BY p.proname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            "TABLE(tenant_id uuid, due timestamp with time zone)",
            "TABLE(pending bigint, due bigint, oldest_due timestamp with time zone)"
        ]
    );
    // Once B's delivery is finished, B has no due work.
    begin_as(&mut conn, Some(b.tenant)).await;
    sqlx::query(
        "UPDATE outbox SET status = 'failed', dispatched_at = now() WHERE tenant_id = $1 AND id = $2",
    )
    .bind(b.tenant.as_uuid())
    .bind(b.delivery)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.execute("COMMIT").await.unwrap();
    assert!(
        !relay_due_tenants(&mut conn)
            .await
            .contains(&b.tenant.as_uuid())
    );
}

/// The leads `search_lead_ids` gives for `word` under `owner`'s key
/// (migration 32): another tenant asking with that key must get none.
async fn search_ids(conn: &mut PgConnection, owner: TenantId, word: &str) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(
        "SELECT id FROM search_lead_ids(CAST(quote_literal(search_key($1, $2)) AS tsquery)) AS f (id)",
    )
    .bind(owner.as_uuid())
    .bind(word)
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn search_words(conn: &mut PgConnection, word: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT w FROM search_words_like($1) AS f (w)")
        .bind(format!("{word}%"))
        .fetch_all(conn)
        .await
        .unwrap()
}

/// The search lookups that run as the owner (so that their indexes serve
/// the service role: migration 11) answer for the transaction's tenant
/// only, and nothing without one.
#[tokio::test]
async fn the_search_functions_answer_only_the_transactions_tenant() {
    let (a, b) = two_populated_tenants().await;
    let mut conn = service_conn().await;
    begin_as(&mut conn, Some(b.tenant)).await;
    let text: String =
        sqlx::query_scalar("SELECT search_text FROM leads WHERE tenant_id = $1 AND id = $2")
            .bind(b.tenant.as_uuid())
            .bind(b.lead)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let word = text
        .split(' ')
        .find(|w| !w.is_empty())
        .expect("B's lead has words")
        .to_owned();
    assert!(
        search_ids(&mut conn, b.tenant, &word)
            .await
            .contains(&b.lead),
        "B finds its lead"
    );
    assert!(
        search_words(&mut conn, &word).await.contains(&word),
        "and its word"
    );
    conn.execute("ROLLBACK").await.unwrap();

    begin_as(&mut conn, Some(a.tenant)).await;
    assert!(
        !search_ids(&mut conn, b.tenant, &word)
            .await
            .contains(&b.lead),
        "A never gets B's lead"
    );
    conn.execute("ROLLBACK").await.unwrap();
    begin_as(&mut conn, None).await;
    assert!(
        search_ids(&mut conn, b.tenant, &word).await.is_empty(),
        "no tenant, no ids"
    );
    assert!(
        search_words(&mut conn, &word).await.is_empty(),
        "no tenant, no words"
    );
    conn.execute("ROLLBACK").await.unwrap();

    // They answer nothing but ids and words.
    let results: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_function_result(p.oid) FROM pg_proc p \
         WHERE p.proname IN ('search_lead_ids', 'search_words_like') ORDER BY p.proname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(results, ["SETOF uuid", "SETOF text"]);
}
