//! Moving one tenant between deployments: from SQLite into PostgreSQL and
//! back, every id kept; the moved tenant serves the same leads, contexts
//! and key, its audit chain verifies, and nobody else moves with it. A
//! second import, or a damaged file, is refused and writes nothing.

use leadline_app::Services;
use leadline_domain::{
    ApprovalAction, Channel, DraftApprovalRequest, Email, LeadContext, LeadId, ListLeadsQuery,
    MessageBody, PageLimit, RetentionAction, RetentionPolicy, TenantId,
};
use leadline_store::{backup::BackupError, transfer};

use crate::support::{agent_req, lead_req, new_tenant, services, sqlite_file_store, sqlite_url};

async fn leads(s: &Services, tenant: TenantId) -> Vec<leadline_domain::Lead> {
    s.leads
        .list(
            tenant,
            &ListLeadsQuery {
                limit: PageLimit::new(200).unwrap(),
                ..ListLeadsQuery::default()
            },
        )
        .await
        .unwrap()
        .items
}

async fn contexts(s: &Services, tenant: TenantId, ids: &[LeadId]) -> Vec<LeadContext> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            s.context
                .context(tenant, *id)
                .await
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    out
}

async fn verifies(s: &Services, tenant: TenantId) -> u64 {
    match s.audit.verify(tenant, None).await.unwrap() {
        leadline_app::Verdict::Intact(state) => state.sealed + state.unsealed,
        other => panic!("the moved chain does not verify: {other:?}"),
    }
}

/// A uuid as a SQLite export writes it.
fn hex_of(tenant: TenantId) -> String {
    let hex: String = tenant
        .as_uuid()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{{\"hex\":\"{hex}\"}}")
}

fn rows(manifest: &leadline_domain::backup::TenantManifest) -> Vec<(String, u64)> {
    manifest
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect()
}

#[tokio::test]
async fn a_tenant_moves_from_sqlite_to_postgres_and_back_with_every_id() {
    let (store, path) = sqlite_file_store().await;
    let source_url = sqlite_url(&path);
    let s = services(store);
    let (tenant, key) = new_tenant(&s).await;
    let (stays, _) = new_tenant(&s).await;
    let slug = s.tenants.get(tenant).await.unwrap().slug.to_string();
    let agent = s
        .agents
        .create(tenant, &agent_req("mover@acme.example"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["Ada", "Grace", "Edsger"] {
        let mut req = lead_req(name);
        req.email = Some(Email::parse(&format!("{name}@example.com")).unwrap());
        req.assigned_agent_id = Some(agent.id);
        req.metadata =
            leadline_domain::Metadata::new(serde_json::json!({"city": "Zürich", "n": 3})).unwrap();
        ids.push(s.leads.create(tenant, &req).await.unwrap().id);
    }
    let draft = DraftApprovalRequest {
        channel: Channel::Email,
        subject: None,
        body: MessageBody::new("Hello").unwrap(),
        requested_by: agent.id,
    };
    let sent = s.approvals.draft(tenant, ids[0], &draft).await.unwrap();
    for action in [
        ApprovalAction::Approve { by: agent.id },
        ApprovalAction::MarkSent { by: agent.id },
    ] {
        s.approvals.act(tenant, sent.id, &action).await.unwrap();
    }
    s.approvals.draft(tenant, ids[1], &draft).await.unwrap();
    // A webhook whose cursor sits among the tenant's changes.
    let hooks =
        s.webhooks
            .clone()
            .with_sealer(std::sync::Arc::new(leadline_outbound::ChaChaBox::new(
                &[3; 32],
            )));
    hooks
        .create(
            tenant,
            &leadline_domain::CreateWebhookRequest {
                url: leadline_domain::WebhookUrl::parse("https://hooks.example.com/moved").unwrap(),
                types: leadline_domain::ChangeFilter::parse("lead").unwrap(),
                changes: true,
                channels: leadline_domain::MessageChannels::default(),
                active: true,
            },
        )
        .await
        .unwrap();
    drop(hooks);
    s.leads
        .create(tenant, &lead_req("AfterHook"))
        .await
        .unwrap();
    let passed_in_source = {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&source_url).await.unwrap();
        let id = tenant.as_uuid().as_bytes().to_vec();
        let (passed, total): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM changes c WHERE c.tenant_id = w.tenant_id \
                       AND c.seq <= w.after_seq), \
                    (SELECT count(*) FROM changes c WHERE c.tenant_id = w.tenant_id) \
               FROM webhooks w WHERE w.tenant_id = ?",
        )
        .bind(id.clone())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(passed > 0 && passed < total, "{passed} of {total}");
        // Two dead letters, as the relay writes them: one of the tenant's
        // second change, and one of a change retention has removed since
        // (none sits at position 0).
        for sql in [
            "INSERT INTO webhook_dead_letters \
               (tenant_id, webhook_id, tx, seq, type, entity_id, attempts, reason, at) \
             SELECT c.tenant_id, w.id, 0, c.seq, c.type, c.entity_id, 3, 'HTTP 410', c.at \
               FROM changes c JOIN webhooks w ON w.tenant_id = c.tenant_id \
              WHERE c.tenant_id = ?1 ORDER BY c.seq LIMIT 1 OFFSET 1",
            "INSERT INTO webhook_dead_letters \
               (tenant_id, webhook_id, tx, seq, type, entity_id, attempts, reason, at) \
             SELECT w.tenant_id, w.id, 0, 0, 'lead.created', w.id, 1, 'HTTP 400', \
                    (SELECT at FROM changes WHERE tenant_id = ?1 LIMIT 1) \
               FROM webhooks w WHERE w.tenant_id = ?1",
        ] {
            let written = sqlx::query(sql)
                .bind(id.clone())
                .execute(&mut conn)
                .await
                .unwrap();
            assert_eq!(written.rows_affected(), 1, "{sql}");
        }
        passed
    };
    s.retention
        .set_policy(
            tenant,
            Some(RetentionPolicy::new(400, RetentionAction::Archive).unwrap()),
        )
        .await
        .unwrap();
    s.leads.create(stays, &lead_req("Stays")).await.unwrap();
    let before_leads = leads(&s, tenant).await;
    let before_contexts = contexts(&s, tenant, &ids).await;
    let before_chain = verifies(&s, tenant).await;

    // SQLite → PostgreSQL.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenant.export");
    let exported = transfer::export_tenant(&source_url, &slug, &file)
        .await
        .unwrap();
    assert_eq!(exported.tenant_id, tenant.as_uuid());
    let (owner, service) = crate::support::isolated_pg("leadline_move").await;
    let imported = transfer::import_tenant(&file, &owner).await.unwrap();
    assert_eq!(imported, exported);
    let pg = services(crate::support::store_at(&service).await);
    {
        use sqlx::Connection as _;
        let database = owner.rsplit('/').next().unwrap().split('?').next().unwrap();
        let admin = leadline_testsupport::postgres().admin_url(database);
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let passed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM changes c JOIN webhooks w ON w.tenant_id = c.tenant_id \
              WHERE w.tenant_id = $1::text::uuid \
                AND (c.tx::text::bigint, c.seq) <= (w.after_tx, w.after_seq)",
        )
        .bind(tenant.to_string())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(passed, passed_in_source, "the webhook resumes where it was");
        let letters: (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(c.seq) FROM webhook_dead_letters d \
               LEFT JOIN changes c ON c.tenant_id = d.tenant_id \
                AND (c.tx::text::bigint, c.seq) = (d.tx, d.seq) \
                AND c.type = d.type AND c.entity_id = d.entity_id \
              WHERE d.tenant_id = $1::text::uuid",
        )
        .bind(tenant.to_string())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            letters,
            (1, 1),
            "the dead letter of a change still held names that change there; the other is left behind"
        );
    }
    assert_eq!(
        leads(&pg, tenant).await,
        before_leads,
        "the same leads, ids and all"
    );
    assert_eq!(contexts(&pg, tenant, &ids).await, before_contexts);
    assert_eq!(verifies(&pg, tenant).await, before_chain);
    let caller = pg.keys.authenticate(&key).await.unwrap();
    assert_eq!(caller.tenant.id, tenant, "its key works there");
    assert!(pg.tenants.get(stays).await.is_err(), "nobody else moved");
    // Writes go on there, on the same chain.
    pg.leads.create(tenant, &lead_req("After")).await.unwrap();
    assert_eq!(verifies(&pg, tenant).await, before_chain + 1);
    assert!(
        matches!(
            transfer::import_tenant(&file, &owner).await,
            Err(BackupError::Target(_))
        ),
        "an import never overwrites"
    );

    // PostgreSQL → a new SQLite database.
    let back = dir.path().join("back.export");
    let again = transfer::export_tenant(&owner, &slug, &back).await.unwrap();
    let mut expected = rows(&exported);
    for (table, n) in &mut expected {
        // The lead written there, its change and its audit record.
        if matches!(table.as_str(), "leads" | "changes" | "audit_log") {
            *n += 1;
        }
    }
    assert_eq!(rows(&again), expected);
    let target = dir.path().join("target.db");
    let target_url = sqlite_url(&target);
    let fresh = leadline_store::Store::connect(&crate::support::settings(&target_url))
        .await
        .unwrap();
    fresh.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    transfer::import_tenant(&back, &target_url).await.unwrap();
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&target_url).await.unwrap();
        let letters: (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(c.seq) FROM webhook_dead_letters d \
               LEFT JOIN changes c ON c.tenant_id = d.tenant_id AND c.seq = d.seq \
                AND c.type = d.type AND c.entity_id = d.entity_id \
              WHERE d.tenant_id = ?1",
        )
        .bind(tenant.as_uuid().as_bytes().to_vec())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            letters,
            (1, 1),
            "the dead letter names its change back home"
        );
    }
    let lite = services(fresh);
    let moved_back = leads(&lite, tenant).await;
    assert_eq!(moved_back.len(), before_leads.len() + 1);
    for lead in &before_leads {
        assert!(moved_back.contains(lead), "{lead:?} came back unchanged");
    }
    assert_eq!(contexts(&lite, tenant, &ids).await, before_contexts);
    assert_eq!(verifies(&lite, tenant).await, before_chain + 1);

    // A file written before dead letters carried their change's rank still
    // imports, each dead letter at the position it held in the source.
    let text = std::fs::read_to_string(&file).unwrap();
    let old = dir.path().join("old.export");
    std::fs::write(&old, without_dead_letter_ranks(&text)).unwrap();
    let old_url = sqlite_url(&dir.path().join("old.db"));
    let store = leadline_store::Store::connect(&crate::support::settings(&old_url))
        .await
        .unwrap();
    store.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    transfer::import_tenant(&old, &old_url).await.unwrap();
    {
        use sqlx::Connection as _;
        let id = tenant.as_uuid().as_bytes().to_vec();
        let sql = "SELECT seq FROM webhook_dead_letters WHERE tenant_id = ?1 AND seq > 0";
        let mut source = sqlx::SqliteConnection::connect(&source_url).await.unwrap();
        let held: Vec<i64> = sqlx::query_scalar(sql)
            .bind(id.clone())
            .fetch_all(&mut source)
            .await
            .unwrap();
        let mut target = sqlx::SqliteConnection::connect(&old_url).await.unwrap();
        let landed: Vec<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_all(&mut target)
            .await
            .unwrap();
        assert_eq!(landed, held, "where the source held it");
    }

    // A damaged line is refused, and nothing of it stays.
    let damaged = dir.path().join("damaged.export");
    std::fs::write(&damaged, text.replacen("Grace", "Grate", 1)).unwrap();
    let empty = dir.path().join("empty.db");
    let empty_url = sqlite_url(&empty);
    let store = leadline_store::Store::connect(&crate::support::settings(&empty_url))
        .await
        .unwrap();
    store.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    match transfer::import_tenant(&damaged, &empty_url).await {
        Err(BackupError::Refused(why)) => assert!(why.contains("leads"), "{why}"),
        other => panic!("a damaged export was imported: {other:?}"),
    }
    // A row of another tenant slipped in is refused too.
    let intruder = text.replacen(
        &format!("\"tenant_id\":{}", hex_of(tenant)),
        &format!("\"tenant_id\":{}", hex_of(stays)),
        1,
    );
    assert_ne!(
        intruder, text,
        "the export names the tenant as the test expects"
    );
    std::fs::write(&damaged, intruder).unwrap();
    match transfer::import_tenant(&damaged, &empty_url).await {
        Err(BackupError::Refused(why)) => assert!(why.contains("another tenant"), "{why}"),
        other => panic!("a row of another tenant was imported: {other:?}"),
    }
    let none = services(store);
    assert!(
        none.tenants.get(tenant).await.is_err(),
        "nothing was written"
    );
}

/// `text`, a tenant export, as the version before dead letters carried
/// their change's rank wrote it: the note taken out of their lines, and the
/// manifest's digest of them made again.
fn without_dead_letter_ranks(text: &str) -> String {
    use sha2::Digest as _;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut hash = sha2::Sha256::new();
    for line in lines.iter_mut().skip(2) {
        let mut parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        if parsed["table"] != "webhook_dead_letters" {
            continue;
        }
        let row = parsed["row"].as_object_mut().unwrap();
        assert!(row.remove("changes_passed").is_some(), "{line}");
        *line = parsed.to_string();
        hash.update(line.as_bytes());
        hash.update(b"\n");
    }
    let mut manifest: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let digest = manifest["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["table"] == "webhook_dead_letters")
        .unwrap();
    digest["sha256"] = leadline_domain::audit::hex(&hash.finalize()).into();
    lines[1] = manifest.to_string();
    lines.join("\n") + "\n"
}
