//! [`LeadRepository`] on the store.

use async_trait::async_trait;

use leadline_domain::{
    ApprovalStatus, Change, ChangeType, CreateLeadRequest, DuplicateGroup, DuplicatesQuery, Email,
    Lead, LeadId, ListLeadsQuery, Page, SearchHit, SearchLeadsQuery, TenantId, UpdateLeadRejected,
    UpdateLeadRequest, search::SearchPlan,
};
use leadline_ports::{
    CreateLeadError, DeleteLeadError, GetLeadError, IdempotentRequest, LeadRepository,
    ListLeadsError, RestoreLeadError, UpdateLeadError,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait as _, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Expr,
};

use crate::{
    Backend, Store,
    effects::{self, recover},
    entity::{approvals, leads},
    errors::{Failure, common},
    repo_agents::takes_new_work,
    tx::{ScopedSql, scoped_sql, transaction},
};

/// A lead by key as one statement ([`scoped_sql!`]): the primary-key probe
/// runs inside the lateral subquery, after `scope` set the tenant.
const GET_SQL: ScopedSql = scoped_sql!(
    "SELECT l.* FROM scope CROSS JOIN LATERAL (SELECT * FROM leads \
     WHERE leads.tenant_id = $1::uuid AND leads.tenant_id = scope.tenant_id \
     AND leads.id = $2 AND leads.deleted_at IS NULL \
     OFFSET 0) l"
);

/// [`GET_SQL`]'s probe on SQLite ([`by_key`] as written by hand): a fixed
/// statement, where building it through sea-query on every request was 7 %
/// of a point read's CPU (docs/backends.md, "What bounds SQLite").
const GET_SQLITE_SQL: &str =
    "SELECT * FROM leads WHERE id = ?1 AND tenant_id = ?2 AND deleted_at IS NULL";

/// The tenant's live leads with any of the emails in the JSON array `$2`,
/// on PostgreSQL: one probe of `leads_email_idx` per email, whatever the
/// planner believes about the tenant. As `email IN (…)` the plan rested on
/// the statistics, and while an import fills a new tenant faster than
/// autovacuum analyzes it, they said the tenant had a dozen leads: the
/// planner then read all of the tenant's emails for every lookup (a
/// 200k-row import into an empty database took 100 s instead of 31 s).
/// `OFFSET 0` keeps the subquery from being pulled up into a join the
/// planner could reorder.
const FIND_BY_EMAILS_SQL: &str = "SELECT l.* FROM jsonb_array_elements_text(CAST($2 AS jsonb)) AS e(email) \
     CROSS JOIN LATERAL (SELECT * FROM leads \
     WHERE leads.tenant_id = $1 AND leads.email = e.email AND leads.deleted_at IS NULL \
     OFFSET 0) l \
     ORDER BY l.id";

fn by_key(tenant: TenantId, id: LeadId) -> sea_orm::Select<leads::Entity> {
    live()
        .filter(leads::Column::Id.eq(id.as_uuid()))
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
}

/// Leads that are not deleted: every read starts here, so a deleted lead is
/// hidden everywhere until it is restored.
pub(crate) fn live() -> sea_orm::Select<leads::Entity> {
    leads::Entity::find().filter(leads::Column::DeletedAt.is_null())
}

#[async_trait]
impl LeadRepository for Store {
    async fn create(
        &self,
        tenant: TenantId,
        req: &CreateLeadRequest,
    ) -> Result<Lead, CreateLeadError> {
        recover!(tenant, CreateLeadError, |effect| LeadRepository::get(
            self,
            tenant,
            LeadId::from_uuid(effect)
        ));
        let lead = Lead::new(tenant, req, crate::now());
        let result: Result<Result<(), CreateLeadError>, Failure> =
            transaction!(self, "leads.create", tenant, Write, |txn| {
                if let Some(agent) = lead.assigned_agent_id {
                    match takes_new_work(txn, self.backend(), tenant, agent).await? {
                        None => return Ok(Err(CreateLeadError::AgentNotFound)),
                        Some(false) => return Ok(Err(CreateLeadError::AgentInactive)),
                        Some(true) => {}
                    }
                }
                leads::Entity::insert(leads::ActiveModel::from(&lead))
                    .exec_without_returning(txn)
                    .await?;
                crate::changes::record(txn, &[Change::lead(ChangeType::LeadCreated, &lead)])
                    .await?;
                effects::record(txn, tenant, lead.id.as_uuid()).await?;
                Ok(Ok(()))
            });
        match result {
            Ok(Ok(())) => Ok(lead),
            Ok(Err(e)) => Err(e),
            // The composite key (tenant_id, assigned_agent_id) only matches
            // an agent of this tenant, so another tenant's agent id lands here.
            Err(Failure::ForeignKey(_)) => Err(CreateLeadError::AgentNotFound),
            Err(f) => Err(common!(f, CreateLeadError)),
        }
    }

    async fn create_many(
        &self,
        tenant: TenantId,
        reqs: &[CreateLeadRequest],
    ) -> Result<u64, CreateLeadError> {
        if reqs.is_empty() {
            return Ok(0);
        }
        let backend = self.backend();
        let reqs: Vec<&CreateLeadRequest> = reqs.iter().collect();
        let result: Result<Result<u64, CreateLeadError>, Failure> = transaction!(
            self,
            "leads.create_many",
            tenant,
            Write,
            rows = reqs.len(),
            |txn| {
                Ok(insert_many(txn, backend, tenant, &reqs)
                    .await?
                    .map(|leads| leads.len() as u64))
            }
        );
        match result {
            Ok(outcome) => outcome,
            Err(Failure::ForeignKey(_)) => Err(CreateLeadError::AgentNotFound),
            Err(f) => Err(common!(f, CreateLeadError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: LeadId) -> Result<Lead, GetLeadError> {
        let result: Result<Option<leads::Model>, Failure> = if self.backend() == Backend::Postgres {
            self.scoped_statement("leads.get", tenant, GET_SQL, [id.as_uuid().into()])
                .await
                .and_then(|rows| {
                    rows.first()
                        .map(|row| leads::Model::from_query_result(row, ""))
                        .transpose()
                        .map_err(Failure::from)
                })
        } else {
            self.sqlite_read_one(
                "leads.get",
                Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    GET_SQLITE_SQL,
                    [id.as_uuid().into(), tenant.as_uuid().into()],
                ),
            )
            .await
            .and_then(|row| {
                row.map(|row| leads::Model::from_query_result(&row, ""))
                    .transpose()
                    .map_err(Failure::from)
            })
        };
        match result {
            Ok(Some(m)) => Lead::try_from(m).map_err(GetLeadError::Unknown),
            Ok(None) => Err(GetLeadError::NotFound),
            Err(f) => Err(common!(f, GetLeadError)),
        }
    }

    async fn ids_assigned_to(
        &self,
        tenant: TenantId,
        agent: leadline_domain::AgentId,
    ) -> Result<Vec<LeadId>, ListLeadsError> {
        let result: Result<Vec<uuid::Uuid>, Failure> =
            transaction!(self, "leads.ids_assigned_to", tenant, Read, |txn| {
                // Served by leads_agent_idx; ids only, however many there are.
                let ids = leads::Entity::find()
                    .select_only()
                    .column(leads::Column::Id)
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(leads::Column::AssignedAgentId.eq(agent.as_uuid()))
                    .into_tuple::<uuid::Uuid>()
                    .all(txn)
                    .await?;
                Ok(ids)
            });
        result
            .map(|ids| ids.into_iter().map(LeadId::from_uuid).collect())
            .map_err(|f| common!(f, ListLeadsError))
    }

    async fn find_by_emails(
        &self,
        tenant: TenantId,
        emails: &[Email],
    ) -> Result<Vec<Lead>, ListLeadsError> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend();
        let result: Result<Vec<leads::Model>, Failure> =
            transaction!(self, "leads.find_by_emails", tenant, Read, |txn| {
                if backend == Backend::Postgres {
                    let emails: Vec<&str> = emails.iter().map(Email::as_str).collect();
                    let emails =
                        serde_json::to_string(&emails).map_err(|e| Failure::Other(e.into()))?;
                    let rows = txn
                        .query_all_raw(sea_orm::Statement::from_sql_and_values(
                            sea_orm::DbBackend::Postgres,
                            FIND_BY_EMAILS_SQL,
                            [tenant.as_uuid().into(), emails.into()],
                        ))
                        .await?;
                    return rows
                        .iter()
                        .map(|row| leads::Model::from_query_result(row, "").map_err(Failure::from))
                        .collect();
                }
                let mut found = Vec::new();
                // Served by leads_email_idx; chunks keep the IN list bounded.
                for chunk in emails.chunks(500) {
                    let rows = live()
                        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(leads::Column::Email.is_in(chunk.iter().map(ToString::to_string)))
                        .order_by_asc(leads::Column::Id)
                        .all(txn)
                        .await?;
                    found.extend(rows);
                }
                Ok(found)
            });
        let rows = result.map_err(|f| common!(f, ListLeadsError))?;
        Ok(rows
            .into_iter()
            .map(Lead::try_from)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn duplicates(
        &self,
        tenant: TenantId,
        q: &DuplicatesQuery,
    ) -> Result<Page<DuplicateGroup>, ListLeadsError> {
        let result: Result<Page<DuplicateGroup>, Failure> =
            transaction!(self, "leads.duplicates", tenant, ReplicaRead, |txn| {
                crate::repo_duplicates::page(txn, tenant, q).await
            });
        result.map_err(|f| common!(f, ListLeadsError))
    }

    async fn count(&self, tenant: TenantId) -> Result<u64, ListLeadsError> {
        let result: Result<u64, Failure> =
            transaction!(self, "leads.count", tenant, ReplicaRead, |txn| {
                let n = live()
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .count(txn)
                    .await?;
                Ok(n)
            });
        result.map_err(|f| common!(f, ListLeadsError))
    }

    async fn list(
        &self,
        tenant: TenantId,
        q: &ListLeadsQuery,
    ) -> Result<Page<Lead>, ListLeadsError> {
        let backend = self.backend();
        let result: Result<Vec<leads::Model>, Failure> = transaction!(
            self,
            "leads.list",
            tenant,
            ReplicaRead,
            |txn| {
                let mut query = live().filter(leads::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(status) = q.status {
                    query = query.filter(leads::Column::Status.eq(status.as_str()));
                }
                if let Some(agent) = q.assigned_agent_id {
                    query = query.filter(leads::Column::AssignedAgentId.eq(agent.as_uuid()));
                }
                if let Some(tag) = &q.tag {
                    let needle = serde_json::json!([tag.as_str()]).to_string();
                    query = query.filter(match backend {
                    // Served by the GIN index leads_tags_idx.
                    Backend::Postgres => Expr::cust_with_values(r#""leads"."tags" @> $1::jsonb"#, [needle]),
                    Backend::Sqlite => Expr::cust_with_values(
                        r#"EXISTS (SELECT 1 FROM json_each("leads"."tags") WHERE json_each.value = ?)"#,
                        [tag.as_str().to_owned()],
                    ),
                });
                }
                if let Some(after) = q.after {
                    query = query.filter(leads::Column::Id.lt(after.as_uuid()));
                }
                let rows = query
                    .order_by_desc(leads::Column::Id)
                    .limit(u64::from(q.limit.get()) + 1)
                    .all(txn)
                    .await?;
                Ok(rows)
            }
        );
        let rows = result.map_err(|f| common!(f, ListLeadsError))?;
        let leads = rows
            .into_iter()
            .map(Lead::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(leads, q.limit))
    }

    async fn search(
        &self,
        tenant: TenantId,
        q: &SearchLeadsQuery,
    ) -> Result<Page<SearchHit>, ListLeadsError> {
        let backend = self.backend();
        let result: Result<(Vec<(leads::Model, u32)>, SearchPlan), Failure> =
            transaction!(self, "leads.search", tenant, ReplicaRead, |txn| {
                crate::repo_search::page(txn, backend, tenant, q).await
            });
        let (rows, plan) = result.map_err(|f| common!(f, ListLeadsError))?;
        Ok(crate::repo_search::hits(rows, &plan, q)?)
    }

    async fn update(
        &self,
        tenant: TenantId,
        id: LeadId,
        req: &UpdateLeadRequest,
    ) -> Result<Lead, UpdateLeadError> {
        recover!(tenant, UpdateLeadError, |effect| LeadRepository::get(
            self,
            tenant,
            LeadId::from_uuid(effect)
        ));
        let result: Result<Result<Lead, UpdateLeadError>, Failure> =
            transaction!(self, "leads.update", tenant, Write, |txn| {
                let mut select = by_key(tenant, id);
                if self.backend() == Backend::Postgres {
                    select = select.lock_exclusive();
                }
                let Some(current) = select.one(txn).await? else {
                    return Ok(Err(UpdateLeadError::NotFound));
                };
                // A row that no longer decodes is read with the patch's
                // fields written over it: setting the broken field repairs it.
                let current = match Lead::try_from(current.clone()) {
                    Ok(lead) => lead,
                    Err(broken) => {
                        Lead::try_from(leads::patched(current, req)).map_err(|_| broken)?
                    }
                };
                let next = match current.apply(req, crate::now()) {
                    Ok(next) => next,
                    Err(UpdateLeadRejected::StaleVersion { current }) => {
                        return Ok(Err(UpdateLeadError::Conflict { current }));
                    }
                    Err(UpdateLeadRejected::InvalidTransition { from, to }) => {
                        return Ok(Err(UpdateLeadError::InvalidTransition { from, to }));
                    }
                };
                if let Some(agent) = next.assigned_agent_id
                    && next.assigned_agent_id != current.assigned_agent_id
                {
                    match takes_new_work(txn, self.backend(), tenant, agent).await? {
                        None => return Ok(Err(UpdateLeadError::AgentNotFound)),
                        Some(false) => return Ok(Err(UpdateLeadError::AgentInactive)),
                        Some(true) => {}
                    }
                }
                let updated = leads::Entity::update_many()
                    .set(leads::ActiveModel::from(&next))
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(leads::Column::Id.eq(id.as_uuid()))
                    .filter(leads::Column::Version.eq(current.version))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Ok(Err(UpdateLeadError::Conflict {
                        current: current.version,
                    }));
                }
                // Every touch is on the timeline, status moves included, in
                // the same transaction as the move.
                let mut changes = vec![Change::lead(ChangeType::LeadUpdated, &next).was(&current)];
                let event = current.status_event(&next);
                if let Some(event) = &event {
                    changes.push(Change::event(event));
                }
                crate::changes::record_with_events(txn, event.as_slice(), &changes).await?;
                effects::record(txn, tenant, id.as_uuid()).await?;
                Ok(Ok(next))
            });
        match result {
            Ok(outcome) => outcome,
            Err(Failure::ForeignKey(_)) => Err(UpdateLeadError::AgentNotFound),
            Err(f) => Err(common!(f, UpdateLeadError)),
        }
    }

    async fn delete(&self, tenant: TenantId, id: LeadId) -> Result<(), DeleteLeadError> {
        if IdempotentRequest::recovering(tenant).is_some() {
            // An earlier run of this request deleted it, and said so on its
            // idempotency key in the same transaction.
            return Ok(());
        }
        let result: Result<Result<(), DeleteLeadError>, Failure> =
            transaction!(self, "leads.delete", tenant, Write, |txn| {
                let mut select = by_key(tenant, id);
                if self.backend() == Backend::Postgres {
                    select = select.lock_exclusive();
                }
                let Some(current) = select.one(txn).await? else {
                    return Ok(Err(DeleteLeadError::NotFound));
                };
                // A draft share-locks the live lead row before it inserts,
                // so with the row locked here (PostgreSQL; SQLite has one
                // writer) no approval can appear between this count and the
                // delete, and a draft that waited finds the lead deleted.
                let open = approvals::Entity::find()
                    .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(approvals::Column::LeadId.eq(id.as_uuid()))
                    .filter(
                        approvals::Column::Status.is_in(
                            ApprovalStatus::ALL
                                .iter()
                                .filter(|s| s.is_open())
                                .map(|s| s.as_str()),
                        ),
                    )
                    .count(txn)
                    .await?;
                if open > 0 {
                    return Ok(Err(DeleteLeadError::OpenApprovals { open }));
                }
                let now = crate::now();
                leads::Entity::update_many()
                    .col_expr(leads::Column::DeletedAt, Expr::value(now))
                    .col_expr(leads::Column::UpdatedAt, Expr::value(now))
                    .col_expr(leads::Column::Version, Expr::value(current.version + 1))
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(leads::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                let was = Lead::try_from(current)?;
                let mut gone = was.clone();
                gone.updated_at = now;
                gone.version += 1;
                crate::changes::record(
                    txn,
                    &[Change::lead(ChangeType::LeadDeleted, &gone).was(&was)],
                )
                .await?;
                effects::record(txn, tenant, id.as_uuid()).await?;
                Ok(Ok(()))
            });
        result.unwrap_or_else(|f| Err(common!(f, DeleteLeadError)))
    }

    async fn restore(&self, tenant: TenantId, id: LeadId) -> Result<Lead, RestoreLeadError> {
        recover!(tenant, RestoreLeadError, |effect| LeadRepository::get(
            self,
            tenant,
            LeadId::from_uuid(effect)
        ));
        let result: Result<Option<leads::Model>, Failure> =
            transaction!(self, "leads.restore", tenant, Write, |txn| {
                let now = crate::now();
                let restored = leads::Entity::update_many()
                    .col_expr(
                        leads::Column::DeletedAt,
                        Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
                    )
                    .col_expr(leads::Column::UpdatedAt, Expr::value(now))
                    .col_expr(
                        leads::Column::Version,
                        sea_orm::sea_query::ExprTrait::add(Expr::col(leads::Column::Version), 1),
                    )
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(leads::Column::Id.eq(id.as_uuid()))
                    .filter(leads::Column::DeletedAt.is_not_null())
                    .exec_with_returning(txn)
                    .await?
                    .into_iter()
                    .next();
                if let Some(model) = &restored {
                    let lead = Lead::try_from(model.clone())?;
                    // Restoring moves only the version (and the hidden
                    // deletion time): the rest is as it was.
                    let mut was = lead.clone();
                    was.version -= 1;
                    crate::changes::record(
                        txn,
                        &[Change::lead(ChangeType::LeadRestored, &lead).was(&was)],
                    )
                    .await?;
                    effects::record(txn, tenant, id.as_uuid()).await?;
                }
                Ok(restored)
            });
        match result {
            Ok(Some(model)) => Lead::try_from(model).map_err(RestoreLeadError::Unknown),
            Ok(None) => Err(RestoreLeadError::NotFound),
            Err(f) => Err(common!(f, RestoreLeadError)),
        }
    }
}

/// Inserts `reqs` as new leads in `txn`, after checking that every assigned
/// agent exists and takes new work; returns how many were written.
pub(crate) async fn insert_many(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    reqs: &[&CreateLeadRequest],
) -> Result<Result<Vec<Lead>, CreateLeadError>, Failure> {
    let mut agents: Vec<_> = reqs.iter().filter_map(|r| r.assigned_agent_id).collect();
    agents.sort_unstable();
    agents.dedup();
    for agent in agents {
        match takes_new_work(txn, backend, tenant, agent).await? {
            None => return Ok(Err(CreateLeadError::AgentNotFound)),
            Some(false) => return Ok(Err(CreateLeadError::AgentInactive)),
            Some(true) => {}
        }
    }
    let mut written = Vec::with_capacity(reqs.len());
    let bulk = backend == Backend::Postgres && reqs.len() >= crate::bulk::MIN_ROWS;
    // One statement for all on PostgreSQL (one JSON parameter), else one
    // multi-row INSERT per chunk (18 columns).
    let per_statement = if bulk {
        reqs.len()
    } else {
        crate::rows_per_insert(18)
    };
    for chunk in reqs.chunks(per_statement) {
        let now = crate::now();
        let leads: Vec<Lead> = chunk.iter().map(|r| Lead::new(tenant, r, now)).collect();
        if bulk {
            crate::bulk::leads(txn, &leads).await?;
        } else {
            leads::Entity::insert_many(leads.iter().map(leads::ActiveModel::from))
                .exec_without_returning(txn)
                .await?;
        }
        let changes: Vec<Change> = leads
            .iter()
            .map(|l| Change::lead(ChangeType::LeadCreated, l))
            .collect();
        crate::changes::record(txn, &changes).await?;
        written.extend(leads);
    }
    Ok(Ok(written))
}

/// Whether `lead` is a live lead of `tenant`, read in `txn`.
pub(crate) async fn lead_exists(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
    lead: LeadId,
) -> Result<bool, Failure> {
    live_id(by_key(tenant, lead), txn).await
}

/// Whether `lead` is live, share-locking its row on PostgreSQL so that a
/// concurrent delete waits for this transaction (and one that went first
/// makes this read find the lead deleted).
pub(crate) async fn lead_exists_shared(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    lead: LeadId,
) -> Result<bool, Failure> {
    let mut select = by_key(tenant, lead);
    if backend == Backend::Postgres {
        select = select.lock_shared();
    }
    live_id(select, txn).await
}

async fn live_id(
    select: sea_orm::Select<leads::Entity>,
    txn: &sea_orm::DatabaseTransaction,
) -> Result<bool, Failure> {
    let found = select
        .select_only()
        .column(leads::Column::Id)
        .into_tuple::<uuid::Uuid>()
        .one(txn)
        .await?;
    Ok(found.is_some())
}
