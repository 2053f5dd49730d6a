//! [`PrivacyRepository`] on the store: a person's data, found by email, read
//! or erased in one transaction with the request's audit record.

use async_trait::async_trait;
use leadline_domain::{
    Approval, Delivery, Email, Erasure, ErasureReport, Event, Lead, PersonData, TenantId,
    audit::changes_digest, erasure::ERASED,
};
use leadline_ports::{PrivacyError, PrivacyRepository, audit_context};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::{
    Backend, Store,
    entity::{approvals, events, leads, outbox},
    errors::{Failure, common},
    params::Params,
    tx::transaction,
};

/// Ids per `IN (…)` list.
const CHUNK: usize = 500;

#[async_trait]
impl PrivacyRepository for Store {
    async fn export(&self, tenant: TenantId, email: &Email) -> Result<PersonData, PrivacyError> {
        let backend = self.backend();
        let person = uuid::Uuid::now_v7();
        let result: Result<PersonData, Failure> =
            transaction!(self, "privacy.export", tenant, Write, |txn| {
                let data = gather(txn, backend, tenant, email, false).await?;
                let record = data.export_record(tenant, person, &audit_context());
                crate::audit::record(txn, &[record]).await?;
                Ok(data)
            });
        result.map_err(|f| common!(f, PrivacyError))
    }

    async fn erase(&self, tenant: TenantId, email: &Email) -> Result<ErasureReport, PrivacyError> {
        let backend = self.backend();
        let id = uuid::Uuid::now_v7();
        let result: Result<ErasureReport, Failure> =
            transaction!(self, "privacy.erase", tenant, Write, |txn| {
                let data = gather(txn, backend, tenant, email, true).await?;
                let erasure = Erasure::of(&data, id, crate::now());
                for lead in &erasure.leads {
                    leads::Entity::update_many()
                        .set(leads::ActiveModel::from(lead))
                        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(leads::Column::Id.eq(lead.id.as_uuid()))
                        .exec(txn)
                        .await?;
                }
                for approval in &erasure.approvals {
                    approvals::Entity::update_many()
                        .set(approvals::ActiveModel::from(approval))
                        .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(approvals::Column::Id.eq(approval.id.as_uuid()))
                        .exec(txn)
                        .await?;
                }
                // The tombstone first: PostgreSQL's privacy_erase scrubs
                // nothing for an erasure that is not on the trail.
                crate::audit::record_always(txn, &[erasure.record(tenant, &audit_context())])
                    .await?;
                let mut other = scrub_outbox(txn, backend, tenant, &erasure).await?;
                let (audited, scrubbed) = match backend {
                    Backend::Postgres => scrub_postgres(txn, tenant, &erasure).await?,
                    Backend::Sqlite => scrub_sqlite(txn, tenant, &erasure, &data.audit).await?,
                };
                other += scrubbed;
                other += forget_responses(txn, backend, tenant, &erasure).await?;
                // After the scrub, so that what they say stays.
                crate::changes::record(txn, &erasure.changes()).await?;
                Ok(erasure.report(audited, other))
            });
        let report = result.map_err(|f| common!(f, PrivacyError))?;
        self.truncate_sqlite_log().await;
        Ok(report)
    }
}

/// Everything `tenant` holds about the person with `email`, read in `txn`;
/// `lock` takes their leads' rows (PostgreSQL) for an erasure.
async fn gather(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    email: &Email,
    lock: bool,
) -> Result<PersonData, Failure> {
    // Deleted leads too: they are still held.
    let mut select = leads::Entity::find()
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Email.eq(email.as_str()))
        .order_by_asc(leads::Column::CreatedAt)
        .order_by_asc(leads::Column::Id);
    if lock && backend == Backend::Postgres {
        select = select.lock_exclusive();
    }
    let leads: Vec<Lead> = select
        .all(txn)
        .await?
        .into_iter()
        .map(Lead::try_from)
        .collect::<Result<_, _>>()?;
    let ids: Vec<uuid::Uuid> = leads.iter().map(|l| l.id.as_uuid()).collect();
    let mut events: Vec<Event> = Vec::new();
    let mut archived_events: Vec<Event> = Vec::new();
    let mut approvals: Vec<Approval> = Vec::new();
    let mut deliveries: Vec<Delivery> = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        for m in events::Entity::find()
            .filter(events::Column::TenantId.eq(tenant.as_uuid()))
            .filter(events::Column::LeadId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            events.push(Event::try_from(m)?);
        }
        for m in archived(txn, backend, tenant, chunk).await? {
            archived_events.push(Event::try_from(m)?);
        }
        for m in approvals::Entity::find()
            .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
            .filter(approvals::Column::LeadId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            approvals.push(Approval::try_from(m)?);
        }
        for m in outbox::Entity::find()
            .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
            .filter(outbox::Column::LeadId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            deliveries.push(Delivery::try_from(&m)?);
        }
    }
    events.sort_by_key(|e| (e.occurred_at, e.id));
    archived_events.sort_by_key(|e| (e.occurred_at, e.id));
    approvals.sort_by_key(|a| (a.created_at, a.id));
    deliveries.sort_by_key(|d| (d.created_at, d.id));
    let mut data = PersonData {
        email: email.clone(),
        exported_at: crate::now(),
        leads,
        events,
        archived_events,
        approvals,
        deliveries,
        audit: Vec::new(),
    };
    data.audit = crate::audit::about(txn, backend, tenant, &data.entity_ids()).await?;
    Ok(data)
}

/// The person's deliveries lose their texts; one still waiting is given
/// up (there is nobody left to deliver it to), and its lease dropped so
/// that a relay holding it cannot finish it. Rows changed.
async fn scrub_outbox(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    erasure: &Erasure,
) -> Result<u64, Failure> {
    let mut changed = 0;
    for chunk in erasure.deliveries.chunks(CHUNK) {
        let mut p = Params::new(backend);
        let marker = match backend {
            Backend::Postgres => format!("CAST({} AS jsonb)", p.push(erasure.marker())),
            Backend::Sqlite => p.push(erasure.marker()),
        };
        let erased = p.push(ERASED);
        let now = p.push(erasure.at);
        let tenant = p.push(tenant.as_uuid());
        let ids = p.list(chunk);
        let sql = format!(
            "UPDATE outbox SET payload = {marker}, \
                    last_error = CASE WHEN status = 'pending' OR last_error IS NOT NULL \
                                      THEN {erased} END, \
                    status = CASE WHEN status = 'pending' THEN 'dead' ELSE status END, \
                    dispatched_at = coalesce(dispatched_at, {now}), \
                    lease_token = NULL, updated_at = {now} \
              WHERE tenant_id = {tenant} AND id IN ({ids})"
        );
        changed += txn.execute_raw(p.statement(sql)).await?.rows_affected();
    }
    Ok(changed)
}

/// PostgreSQL: the rows the service role may not write, through the
/// owner's `privacy_erase` (migration 25). (Audit records, other rows.)
async fn scrub_postgres(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    erasure: &Erasure,
) -> Result<(u64, u64), Failure> {
    let metadata = |list: &[(uuid::Uuid, leadline_domain::Metadata)]| {
        list.iter()
            .map(|(id, m)| serde_json::json!({"id": id, "metadata": m}))
            .collect::<Vec<_>>()
    };
    let plan = serde_json::json!({
        "marker": erasure.marker(),
        "leads": erasure.leads.iter().map(|l| l.id.as_uuid()).collect::<Vec<_>>(),
        "events": metadata(&erasure.events),
        "archived_events": metadata(&erasure.archived_events),
        "needles": erasure.needles,
        "digits": erasure.digits,
        "words": erasure.words,
    });
    let mut p = Params::new(Backend::Postgres);
    let sql = format!(
        "SELECT audit_records, other_rows FROM privacy_erase({}, CAST({} AS jsonb))",
        p.push(tenant.as_uuid()),
        p.push(plan.to_string())
    );
    let row = txn
        .query_one_raw(p.statement(sql))
        .await?
        .ok_or_else(|| Failure::Other(anyhow::anyhow!("privacy_erase answered no row")))?;
    let count = |column: &str| -> Result<u64, Failure> {
        let n: i64 = row.try_get("", column)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok((count("audit_records")?, count("other_rows")?))
}

/// SQLite: what `privacy_erase` does on PostgreSQL, in this transaction,
/// with the append-only triggers opened for it alone. (Audit records,
/// other rows.)
async fn scrub_sqlite(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    erasure: &Erasure,
    audit: &[leadline_domain::AuditEntry],
) -> Result<(u64, u64), Failure> {
    let t = tenant.as_uuid();
    let run = |p: Params, sql: String| async move {
        Ok::<u64, Failure>(txn.execute_raw(p.statement(sql)).await?.rows_affected())
    };
    txn.execute_unprepared("INSERT INTO privacy_gate (one) VALUES (1)")
        .await?;
    let mut other = 0;
    for (table, list) in [
        ("events", &erasure.events),
        ("events_archive", &erasure.archived_events),
    ] {
        for (id, metadata) in list {
            let mut p = Params::new(Backend::Sqlite);
            let sql = format!(
                "UPDATE {table} SET content = NULL, metadata = {} WHERE tenant_id = {} AND id = {}",
                p.push(serde_json::Value::Object(metadata.as_map().clone()).to_string()),
                p.push(t),
                p.push(*id)
            );
            other += run(p, sql).await?;
        }
    }
    let mut audited = 0;
    for entry in audit.iter().filter(|e| e.erased_digest.is_none()) {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "UPDATE audit_log SET erased_digest = {}, changes = {} WHERE tenant_id = {} AND seq = {}",
            p.push(changes_digest(&entry.record.changes).to_vec()),
            p.push(erasure.marker()),
            p.push(t),
            p.push(i64::try_from(entry.position.seq).unwrap_or(i64::MAX))
        );
        audited += run(p, sql).await?;
    }
    for chunk in erasure.entities.chunks(CHUNK) {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "UPDATE changes SET data = {} WHERE tenant_id = {} AND entity_id IN ({})",
            p.push(erasure.marker()),
            p.push(t),
            p.list(chunk)
        );
        other += run(p, sql).await?;
    }
    for chunk in erasure.deliveries.chunks(CHUNK) {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "UPDATE delivery_attempts SET detail = {} \
              WHERE tenant_id = {} AND detail IS NOT NULL AND delivery_id IN ({})",
            p.push(ERASED),
            p.push(t),
            p.list(chunk)
        );
        other += run(p, sql).await?;
    }
    for needle in erasure.needles.iter().filter(|n| !n.is_empty()) {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "UPDATE import_rejects SET fields = '[]', errors = '[]' \
              WHERE tenant_id = {} AND (instr(lower(fields), lower({n})) > 0 \
                                     OR instr(lower(errors), lower({n})) > 0)",
            p.push(t),
            n = p.push(needle.clone())
        );
        other += run(p, sql).await?;
    }
    // A phone number however it was written: its last digits among the
    // line's digits (the separators a number is written with removed).
    let only_digits = |column: &str| {
        ["+", " ", "-", "(", ")", ".", "/", "\"", ","]
            .iter()
            .fold(column.to_owned(), |inner, sep| {
                format!("replace({inner}, '{sep}', '')")
            })
    };
    for digits in erasure.digits.iter().filter(|d| d.len() >= 7) {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "UPDATE import_rejects SET fields = '[]', errors = '[]' \
              WHERE tenant_id = {} AND (instr({}, {d}) > 0 OR instr({}, {d}) > 0)",
            p.push(t),
            only_digits("fields"),
            only_digits("errors"),
            d = p.push(digits.clone())
        );
        other += run(p, sql).await?;
    }
    for word in &erasure.words {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "DELETE FROM search_words WHERE tenant_id = {t} AND word = {w} \
               AND NOT EXISTS (SELECT 1 FROM leads WHERE tenant_id = {t} \
                                 AND instr(search_text, ' ' || {w} || ' ') > 0)",
            t = p.push(t),
            w = p.push(word.clone()),
        );
        other += run(p, sql).await?;
    }
    // Full-text indexes keep a changed row's old words in their older
    // segments (marked deleted) until a merge: merge them all now, so the
    // person's words leave the index's own tables too. It rewrites every
    // tenant's index: an erasure is rare, and SQLite has one writer.
    txn.execute_unprepared(
        "INSERT INTO lead_words (lead_words) VALUES ('optimize'); \
         INSERT INTO search_word_trigrams (search_word_trigrams) VALUES ('optimize')",
    )
    .await?;
    txn.execute_unprepared("DELETE FROM privacy_gate").await?;
    Ok((audited, other))
}

/// Stored responses of idempotent requests that show the person: any that
/// holds their email or phone, or names one of their leads or approvals
/// (every answer about a lead or a draft carries its id, however the rest
/// of it is escaped). Forgotten, so no replay can show them again. Rows
/// removed.
async fn forget_responses(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    erasure: &Erasure,
) -> Result<u64, Failure> {
    let needles: Vec<String> = erasure
        .needles
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .chain(erasure.leads.iter().map(|l| l.id.to_string()))
        .chain(erasure.approvals.iter().map(|a| a.id.to_string()))
        .collect();
    let mut removed = 0;
    for chunk in needles.chunks(CHUNK) {
        let mut p = Params::new(backend);
        let t = p.push(tenant.as_uuid());
        let list = p.push(serde_json::json!(chunk).to_string());
        let sql = match backend {
            Backend::Postgres => format!(
                "DELETE FROM idempotency_keys k WHERE k.tenant_id = {t} \
                   AND (k.response_body IS NOT NULL OR k.location IS NOT NULL) \
                   AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST({list} AS jsonb)) AS n (v) \
                                WHERE position(convert_to(n.v, 'UTF8') IN coalesce(k.response_body, '')) > 0 \
                                   OR strpos(coalesce(k.location, ''), n.v) > 0)"
            ),
            Backend::Sqlite => format!(
                "DELETE FROM idempotency_keys WHERE tenant_id = {t} \
                   AND (response_body IS NOT NULL OR location IS NOT NULL) \
                   AND EXISTS (SELECT 1 FROM json_each({list}) AS n \
                                WHERE instr(coalesce(response_body, X''), CAST(n.value AS BLOB)) > 0 \
                                   OR instr(coalesce(location, ''), n.value) > 0)"
            ),
        };
        removed += txn.execute_raw(p.statement(sql)).await?.rows_affected();
    }
    Ok(removed)
}

/// The archived events (retention, migration 24) of `leads`: rows of
/// `events_archive`, which has the columns of `events` and when each was
/// archived.
async fn archived(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    leads: &[uuid::Uuid],
) -> Result<Vec<events::Model>, Failure> {
    if leads.is_empty() {
        return Ok(Vec::new());
    }
    // `$1` (or `?`) is the tenant, then one per lead.
    let marks: Vec<String> = (1..=leads.len() + 1)
        .map(|i| match backend {
            crate::Backend::Postgres => format!("${i}"),
            crate::Backend::Sqlite => "?".to_owned(),
        })
        .collect();
    let sql = format!(
        "SELECT tenant_id, id, lead_id, kind, direction, content, occurred_at, actor, metadata, \
         created_at FROM events_archive WHERE tenant_id = {} AND lead_id IN ({})",
        marks[0],
        marks[1..].join(", ")
    );
    let mut values: Vec<sea_orm::Value> = vec![tenant.as_uuid().into()];
    values.extend(leads.iter().map(|id| sea_orm::Value::from(*id)));
    Ok(
        events::Model::find_by_statement(sea_orm::Statement::from_sql_and_values(
            backend.db(),
            sql,
            values,
        ))
        .all(txn)
        .await?,
    )
}
