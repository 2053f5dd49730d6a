//! Approvals, the timeline and the lead context on the store.

use async_trait::async_trait;
use leadline_domain::{
    Agent, AppendEventRequest, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery,
    ApprovalStatus, Direction, DraftApprovalRequest, Event, EventId, EventKind, Lead, LeadContext,
    LeadId, Metadata, Page, TenantId, TimelineQuery,
};
use leadline_ports::{
    AppendEventError, ApprovalRepository, DraftApprovalError, EventRepository, GetApprovalError,
    GetLeadError, IdempotentRequest, LeadContextRepository, ListApprovalsError, ListLeadsError,
    TimelineError, TransitionApprovalError,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::json;

use crate::{
    Store,
    effects::{self, recover},
    entity::{agents, approvals, events, leads, outbox},
    errors::{Failure, common},
    tx::{ScopedSql, scoped_sql, transaction},
};

/// How many open approvals a context shows (pending and approved; more is a
/// backlog problem, not a context).
const CONTEXT_OPEN_APPROVALS: u64 = 50;
/// How many closed approvals a context shows.
const CONTEXT_RECENT_APPROVALS: u64 = 10;

/// The rows a lead context is made of.
struct ContextRows {
    lead: leads::Model,
    agent: Option<agents::Model>,
    open: Vec<approvals::Model>,
    recent: Vec<approvals::Model>,
    events: Vec<events::Model>,
}

const OPEN_STATUSES: [ApprovalStatus; 2] = [ApprovalStatus::Pending, ApprovalStatus::Approved];
const CLOSED_STATUSES: [ApprovalStatus; 3] = [
    ApprovalStatus::Sent,
    ApprovalStatus::Rejected,
    ApprovalStatus::Cancelled,
];

/// The context's five reads as five queries: the portable form (SQLite).
async fn context_rows(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    lead: LeadId,
    events_limit: u16,
) -> Result<Option<ContextRows>, Failure> {
    let Some(lead_row) = crate::repo_leads::live()
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(lead.as_uuid()))
        .one(txn)
        .await?
    else {
        return Ok(None);
    };
    let agent = match lead_row.assigned_agent_id {
        Some(agent) => {
            agents::Entity::find()
                .filter(agents::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agents::Column::Id.eq(agent))
                .one(txn)
                .await?
        }
        None => None,
    };
    let of_lead = |statuses: &[ApprovalStatus], limit: u64| {
        approvals::Entity::find()
            .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
            .filter(approvals::Column::LeadId.eq(lead.as_uuid()))
            .filter(approvals::Column::Status.is_in(statuses.iter().map(|s| s.as_str())))
            .order_by_desc(approvals::Column::Id)
            .limit(limit)
    };
    let open = of_lead(&OPEN_STATUSES, CONTEXT_OPEN_APPROVALS)
        .all(txn)
        .await?;
    let recent = of_lead(&CLOSED_STATUSES, CONTEXT_RECENT_APPROVALS)
        .all(txn)
        .await?;
    let events = events::Entity::find()
        .filter(events::Column::TenantId.eq(tenant.as_uuid()))
        .filter(events::Column::LeadId.eq(lead.as_uuid()))
        .order_by_desc(events::Column::OccurredAt)
        .order_by_desc(events::Column::Id)
        .limit(u64::from(events_limit))
        .all(txn)
        .await?;
    Ok(Some(ContextRows {
        lead: lead_row,
        agent,
        open,
        recent,
        events,
    }))
}

/// The same five reads as one statement ([`scoped_sql!`]), each part a JSON
/// document: one round trip in all, where the five queries in a transaction
/// cost eight (`BEGIN`, `set_config`, five queries, `COMMIT`). Every subquery
/// is the portable form's query, with its index and its RLS policy, and is
/// correlated with `scope`, so it runs after the tenant is set;
/// `row_to_json` names fields by column, as the entities do.
const CONTEXT_SQL: ScopedSql = scoped_sql!(
    r#"
SELECT
  (SELECT row_to_json(l)::text FROM leads l
    WHERE l.tenant_id = scope.tenant_id AND l.id = $2 AND l.deleted_at IS NULL) AS lead,
  (SELECT row_to_json(a)::text FROM leads l
    JOIN agents a ON a.tenant_id = l.tenant_id AND a.id = l.assigned_agent_id
    WHERE l.tenant_id = scope.tenant_id AND l.id = $2 AND l.deleted_at IS NULL) AS agent,
  (SELECT coalesce(json_agg(o ORDER BY o.id DESC), '[]')::text FROM (
    SELECT * FROM approvals
    WHERE tenant_id = scope.tenant_id AND lead_id = $2 AND status IN ($3, $4)
    ORDER BY id DESC LIMIT $5) o) AS open,
  (SELECT coalesce(json_agg(r ORDER BY r.id DESC), '[]')::text FROM (
    SELECT * FROM approvals
    WHERE tenant_id = scope.tenant_id AND lead_id = $2 AND status IN ($6, $7, $8)
    ORDER BY id DESC LIMIT $9) r) AS recent,
  (SELECT coalesce(json_agg(e ORDER BY e.occurred_at DESC, e.id DESC), '[]')::text FROM (
    SELECT * FROM events
    WHERE tenant_id = scope.tenant_id AND lead_id = $2
    ORDER BY occurred_at DESC, id DESC LIMIT $10) e) AS events
FROM scope
"#
);

/// [`CONTEXT_SQL`]'s values after the tenant and the lead (`$3`…`$10`).
fn context_values(events_limit: u16) -> [sea_orm::Value; 8] {
    let [pending, approved] = OPEN_STATUSES.map(|s| s.as_str());
    let [sent, rejected, cancelled] = CLOSED_STATUSES.map(|s| s.as_str());
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        pending.into(),
        approved.into(),
        to_i64(CONTEXT_OPEN_APPROVALS).into(),
        sent.into(),
        rejected.into(),
        cancelled.into(),
        to_i64(CONTEXT_RECENT_APPROVALS).into(),
        i64::from(events_limit).into(),
    ]
}

/// The cache-cold context statement exactly as the store sends it on
/// PostgreSQL, with the values of `$3`…`$10` as SQL literals (`$1` is the
/// tenant, `$2` the lead). For the benchmark harness, which runs the same
/// statement under pgbench to show what the statement alone costs; nothing
/// else should need it.
#[doc(hidden)]
#[must_use]
pub fn context_statement_for_pgbench(events_limit: u16) -> (&'static str, Vec<String>) {
    let literals = context_values(events_limit)
        .into_iter()
        .map(|value| match value {
            sea_orm::Value::String(Some(s)) => format!("'{s}'"),
            other => other.to_string(),
        })
        .collect();
    (CONTEXT_SQL.as_str(), literals)
}

/// The context's rows from [`CONTEXT_SQL`]; `Ok(Err(part))` when a part's
/// JSON does not decode into its entity, for the caller to read it the
/// portable way.
async fn context_rows_in_one_query(
    store: &Store,
    tenant: TenantId,
    lead: LeadId,
    events_limit: u16,
) -> Result<Result<Option<ContextRows>, &'static str>, Failure> {
    let rows = store
        .scoped_statement(
            "context.load",
            tenant,
            CONTEXT_SQL,
            std::iter::once(lead.as_uuid().into()).chain(context_values(events_limit)),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Ok(None));
    };
    let Some(lead_json) = row.try_get::<Option<String>>("", "lead")? else {
        return Ok(Ok(None));
    };
    let agent_json = row.try_get::<Option<String>>("", "agent")?;
    let [open_json, recent_json, events_json] =
        ["open", "recent", "events"].map(|name| row.try_get::<String>("", name));
    let (open_json, recent_json, events_json) = (open_json?, recent_json?, events_json?);
    // serde's message may quote a value (personal data): only the part's
    // name leaves this function.
    fn decode<T: serde::de::DeserializeOwned>(
        json: &str,
        part: &'static str,
    ) -> Result<T, &'static str> {
        serde_json::from_str(json).map_err(|_| part)
    }
    let rows = (|| {
        Ok(ContextRows {
            lead: decode(&lead_json, "lead")?,
            agent: agent_json
                .as_deref()
                .map(|json| decode(json, "agent"))
                .transpose()?,
            open: decode(&open_json, "open approvals")?,
            recent: decode(&recent_json, "recent approvals")?,
            events: decode(&events_json, "events")?,
        })
    })();
    Ok(rows.map(Some))
}

fn approval_by_key(tenant: TenantId, id: ApprovalId) -> sea_orm::Select<approvals::Entity> {
    approvals::Entity::find()
        .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
        .filter(approvals::Column::Id.eq(id.as_uuid()))
}

async fn lead_exists(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    lead: LeadId,
) -> Result<bool, Failure> {
    let found = crate::repo_leads::live()
        .select_only()
        .column(leads::Column::Id)
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(lead.as_uuid()))
        .into_tuple::<uuid::Uuid>()
        .one(txn)
        .await?;
    Ok(found.is_some())
}

/// Whether `lead` is live, share-locking its row on PostgreSQL so that a
/// concurrent delete waits for this transaction (and one that went first
/// makes this read find the lead deleted).
async fn live_lead_shared(
    txn: &DatabaseTransaction,
    backend: crate::Backend,
    tenant: TenantId,
    lead: LeadId,
) -> Result<bool, Failure> {
    let mut select = crate::repo_leads::live()
        .select_only()
        .column(leads::Column::Id)
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(lead.as_uuid()));
    if backend == crate::Backend::Postgres {
        select = select.lock_shared();
    }
    Ok(select.into_tuple::<uuid::Uuid>().one(txn).await?.is_some())
}

/// The event an approval transition leaves on the timeline.
fn transition_event(approval: &Approval, action: &ApprovalAction) -> Event {
    let now = approval.updated_at;
    let (kind, direction, content, metadata) = match action {
        ApprovalAction::MarkSent { .. } => (
            EventKind::sent_on(approval.channel),
            Direction::Outbound,
            Some(approval.body.as_str()),
            json!({ "approval_id": approval.id, "channel": approval.channel, "subject": approval.subject }),
        ),
        ApprovalAction::Reject { reason, .. } => (
            EventKind::ApprovalDecided,
            Direction::Internal,
            Some(reason.as_str()),
            json!({ "approval_id": approval.id, "channel": approval.channel, "decision": approval.status }),
        ),
        ApprovalAction::Approve { .. } | ApprovalAction::Cancel { .. } => (
            EventKind::ApprovalDecided,
            Direction::Internal,
            None,
            json!({ "approval_id": approval.id, "channel": approval.channel, "decision": approval.status }),
        ),
    };
    Event {
        id: EventId::new(),
        tenant_id: approval.tenant_id,
        lead_id: approval.lead_id,
        kind,
        direction,
        // Message texts fit event content by construction (same bound).
        content: content.and_then(|c| leadline_domain::EventContent::new(c).ok()),
        occurred_at: now,
        actor: Some(action.actor()),
        metadata: Metadata::new(metadata).unwrap_or_default(),
        created_at: now,
    }
}

#[async_trait]
impl ApprovalRepository for Store {
    async fn draft(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &DraftApprovalRequest,
    ) -> Result<Approval, DraftApprovalError> {
        recover!(
            tenant,
            DraftApprovalError,
            |effect| ApprovalRepository::get(self, tenant, ApprovalId::from_uuid(effect))
        );
        let now = crate::now();
        let approval = Approval {
            id: ApprovalId::new(),
            tenant_id: tenant,
            lead_id: lead,
            channel: req.channel,
            subject: req.subject.clone(),
            body: req.body.clone(),
            requested_by: req.requested_by,
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            rejection_reason: None,
            sent_by: None,
            sent_at: None,
            created_at: now,
            updated_at: now,
        };
        let result: Result<Result<(), DraftApprovalError>, Failure> =
            transaction!(self, "approvals.draft", tenant, Write, |txn| {
                // Two foreign keys can fail; say which without guessing from
                // constraint names.
                if !live_lead_shared(txn, self.backend(), tenant, lead).await? {
                    return Ok(Err(DraftApprovalError::LeadNotFound));
                }
                match crate::repo_agents::takes_new_work(
                    txn,
                    self.backend(),
                    tenant,
                    approval.requested_by,
                )
                .await?
                {
                    None => return Ok(Err(DraftApprovalError::AgentNotFound)),
                    Some(false) => return Ok(Err(DraftApprovalError::AgentInactive)),
                    Some(true) => {}
                }
                approvals::Entity::insert(approvals::ActiveModel::from(&approval))
                    .exec_without_returning(txn)
                    .await?;
                effects::record(txn, tenant, approval.id.as_uuid()).await?;
                Ok(Ok(()))
            });
        match result {
            Ok(Ok(())) => Ok(approval),
            Ok(Err(e)) => Err(e),
            Err(Failure::ForeignKey(_)) => Err(DraftApprovalError::AgentNotFound),
            Err(f) => Err(common!(f, DraftApprovalError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: ApprovalId) -> Result<Approval, GetApprovalError> {
        let result: Result<Option<approvals::Model>, Failure> =
            transaction!(self, "approvals.get", tenant, Read, |txn| {
                let model = approval_by_key(tenant, id).one(txn).await?;
                Ok(model)
            });
        match result {
            Ok(Some(m)) => Approval::try_from(m).map_err(GetApprovalError::Unknown),
            Ok(None) => Err(GetApprovalError::NotFound),
            Err(f) => Err(common!(f, GetApprovalError)),
        }
    }

    async fn transition(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        action: &ApprovalAction,
    ) -> Result<Approval, TransitionApprovalError> {
        recover!(tenant, TransitionApprovalError, |effect| {
            ApprovalRepository::get(self, tenant, ApprovalId::from_uuid(effect))
        });
        let result: Result<Result<Approval, TransitionApprovalError>, Failure> =
            transaction!(self, "approvals.transition", tenant, Write, |txn| {
                let now = crate::now();
                let by = action.actor().as_uuid();
                // The conditional update is the whole concurrency story: the row
                // moves only if it is still in the starting status, so exactly
                // one of any number of concurrent callers gets a row back.
                let mut update = approvals::Entity::update_many()
                    .col_expr(
                        approvals::Column::Status,
                        Expr::value(action.to_status().as_str()),
                    )
                    .col_expr(approvals::Column::UpdatedAt, Expr::value(now))
                    .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(approvals::Column::Id.eq(id.as_uuid()))
                    .filter(approvals::Column::Status.eq(action.from_status().as_str()));
                update = match action {
                    ApprovalAction::Approve { .. } | ApprovalAction::Cancel { .. } => update
                        .col_expr(approvals::Column::DecidedBy, Expr::value(by))
                        .col_expr(approvals::Column::DecidedAt, Expr::value(now)),
                    ApprovalAction::Reject { reason, .. } => update
                        .col_expr(approvals::Column::DecidedBy, Expr::value(by))
                        .col_expr(approvals::Column::DecidedAt, Expr::value(now))
                        .col_expr(
                            approvals::Column::RejectionReason,
                            Expr::value(reason.as_str()),
                        ),
                    ApprovalAction::MarkSent { .. } => update
                        .col_expr(approvals::Column::SentBy, Expr::value(by))
                        .col_expr(approvals::Column::SentAt, Expr::value(now)),
                };
                let Some(model) = update.exec_with_returning(txn).await?.into_iter().next() else {
                    let current = approval_by_key(tenant, id).one(txn).await?;
                    return Ok(match current {
                        None => Err(TransitionApprovalError::NotFound),
                        Some(m) => Err(TransitionApprovalError::Conflict {
                            current: m.status.parse().map_err(anyhow::Error::new)?,
                        }),
                    });
                };
                let approval = Approval::try_from(model)?;
                let event = transition_event(&approval, action);
                events::Entity::insert(events::ActiveModel::from(&event))
                    .exec_without_returning(txn)
                    .await?;
                if let ApprovalAction::MarkSent { .. } = action {
                    let row = outbox::ActiveModel {
                        tenant_id: Set(tenant.as_uuid()),
                        id: Set(uuid::Uuid::now_v7()),
                        approval_id: Set(approval.id.as_uuid()),
                        lead_id: Set(approval.lead_id.as_uuid()),
                        channel: Set(approval.channel.as_str().to_owned()),
                        payload: Set(json!({
                            "approval_id": approval.id,
                            "lead_id": approval.lead_id,
                            "channel": approval.channel,
                            "subject": approval.subject,
                            "body": approval.body,
                        })),
                        created_at: Set(now),
                        dispatched_at: Set(None),
                    };
                    outbox::Entity::insert(row)
                        .exec_without_returning(txn)
                        .await?;
                }
                effects::record(txn, tenant, approval.id.as_uuid()).await?;
                Ok(Ok(approval))
            });
        match result {
            Ok(outcome) => outcome,
            Err(Failure::ForeignKey(_)) => Err(TransitionApprovalError::AgentNotFound),
            Err(f) => Err(common!(f, TransitionApprovalError)),
        }
    }

    async fn list(
        &self,
        tenant: TenantId,
        q: &ApprovalQueueQuery,
    ) -> Result<Page<Approval>, ListApprovalsError> {
        let result: Result<Vec<approvals::Model>, Failure> =
            transaction!(self, "approvals.list", tenant, ReplicaRead, |txn| {
                let mut query = approvals::Entity::find()
                    .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(approvals::Column::Status.eq(q.status.as_str()));
                if let Some(agent) = q.requested_by {
                    query = query.filter(approvals::Column::RequestedBy.eq(agent.as_uuid()));
                }
                if let Some(after) = q.after {
                    query = query.filter(approvals::Column::Id.gt(after.as_uuid()));
                }
                let rows = query
                    .order_by_asc(approvals::Column::Id)
                    .limit(u64::from(q.limit.get()) + 1)
                    .all(txn)
                    .await?;
                Ok(rows)
            });
        let rows = result.map_err(|f| common!(f, ListApprovalsError))?;
        let items = rows
            .into_iter()
            .map(Approval::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, q.limit))
    }
}

/// An event's append as one statement ([`scoped_sql!`]): the implicit
/// transaction commits with it, in the one round trip. The row's id is
/// chosen before the first attempt, so a rerun after a connection broke
/// mid-statement finds the first attempt's row, if it committed, and writes
/// nothing (`ON CONFLICT DO NOTHING`); if that attempt is still running, the
/// rerun waits on the primary key until it ends. Exactly one row either way.
/// No row back means the id was taken: [`EventRepository::append`] then
/// reads that row and accepts it only if it is this event.
const APPEND_SQL: ScopedSql = scoped_sql!(
    "INSERT INTO events (tenant_id, id, lead_id, kind, direction, content, occurred_at, actor, \
     metadata, created_at) SELECT scope.tenant_id, $2::uuid, $3::uuid, $4::text, $5::text, \
     $6::text, $7::timestamptz, $8::uuid, $9::jsonb, $10::timestamptz FROM scope \
     WHERE NOT EXISTS (SELECT 1 FROM leads d WHERE d.tenant_id = scope.tenant_id \
     AND d.id = $3::uuid AND (d.deleted_at IS NOT NULL OR d.created_at > $7::timestamptz)) \
     ON CONFLICT (tenant_id, id) DO NOTHING RETURNING id"
);

impl Store {
    /// One event by id, for recovering an idempotent append.
    async fn event_by_id(&self, tenant: TenantId, id: EventId) -> Result<Event, Failure> {
        let stored: Option<events::Model> =
            transaction!(self, "events.by_id", tenant, Read, |txn| {
                Ok(events::Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await?)
            })?;
        let model = stored
            .ok_or_else(|| Failure::from(anyhow::anyhow!("the recorded event {id} is gone")))?;
        Ok(Event::try_from(model)?)
    }

    /// After [`APPEND_SQL`] wrote nothing: the id was taken, by an earlier
    /// attempt of this same append whose answer was lost (accepted), or, in
    /// theory only (ids are v7 UUIDs drawn here), by another event (refused
    /// rather than reported as written).
    async fn confirm_appended(
        &self,
        event: &Event,
    ) -> Result<Result<(), AppendEventError>, Failure> {
        let tenant = event.tenant_id;
        let (stored, refused) = transaction!(self, "events.append_confirm", tenant, Read, |txn| {
            let stored = events::Entity::find_by_id((tenant.as_uuid(), event.id.as_uuid()))
                .one(txn)
                .await?;
            let refused = match stored {
                Some(_) => None,
                None => refusal(txn, tenant, event).await?,
            };
            Ok((stored, refused))
        })?;
        let Some(stored) = stored else {
            // The statement wrote nothing: its NOT EXISTS refused the row.
            return match refused {
                Some(refused) => Ok(Err(refused)),
                None => Err(Failure::from(anyhow::anyhow!(
                    "the append of event {} wrote nothing, for no reason found",
                    event.id
                ))),
            };
        };
        let ours = stored.lead_id == event.lead_id.as_uuid()
            && stored.created_at == event.created_at
            && stored.kind == event.kind.as_str()
            && stored.content.as_deref() == event.content.as_ref().map(|c| c.as_str());
        if ours {
            Ok(Ok(()))
        } else {
            Err(Failure::from(anyhow::anyhow!(
                "event id {} is already taken by another event",
                event.id
            )))
        }
    }
}

/// Why `event` may not be appended to its lead, read in `txn`: the lead is
/// missing or deleted, or the event predates it ([`Event::predates`]).
async fn refusal(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    event: &Event,
) -> Result<Option<AppendEventError>, Failure> {
    let created = crate::repo_leads::live()
        .select_only()
        .column(leads::Column::CreatedAt)
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(event.lead_id.as_uuid()))
        .into_tuple::<chrono::DateTime<chrono::Utc>>()
        .one(txn)
        .await?;
    Ok(match created {
        None => Some(AppendEventError::LeadNotFound),
        Some(lead_created_at) if event.predates(lead_created_at) => {
            Some(AppendEventError::PredatesLead { lead_created_at })
        }
        Some(_) => None,
    })
}

/// [`APPEND_SQL`]'s values after the tenant, as [`events::ActiveModel`]
/// converts them.
fn append_values(event: &Event) -> [sea_orm::Value; 9] {
    [
        event.id.as_uuid().into(),
        event.lead_id.as_uuid().into(),
        event.kind.as_str().into(),
        event.direction.as_str().into(),
        event.content.as_ref().map(|c| c.as_str().to_owned()).into(),
        event.occurred_at.into(),
        event.actor.map(|a| a.as_uuid()).into(),
        serde_json::Value::Object(event.metadata.as_map().clone()).into(),
        event.created_at.into(),
    ]
}

#[async_trait]
impl EventRepository for Store {
    async fn append(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
    ) -> Result<Event, AppendEventError> {
        let now = crate::now();
        let event = Event {
            id: EventId::new(),
            tenant_id: tenant,
            lead_id: lead,
            kind: req.kind,
            direction: req.direction,
            content: req.content.clone(),
            occurred_at: req.occurred_at.map_or(now, |t| {
                use chrono::SubsecRound;
                t.trunc_subsecs(6)
            }),
            actor: req.actor,
            metadata: req.metadata.clone(),
            created_at: now,
        };
        if let Some(effect) = IdempotentRequest::recovering(tenant) {
            return self
                .event_by_id(tenant, EventId::from_uuid(effect))
                .await
                .map_err(|f| common!(f, AppendEventError));
        }
        // Under an idempotency key the append records itself on the key in
        // its own transaction, so the one-statement path is for plain calls.
        let one_statement =
            self.backend() == crate::Backend::Postgres && IdempotentRequest::current().is_none();
        // The one statement asks nothing first: its NOT EXISTS refuses a
        // deleted lead or an event that predates its lead, and the composite
        // foreign key (tenant_id, lead_id) a missing one or another
        // tenant's, at no extra round trip; only a refused append reads why.
        let result: Result<Result<(), AppendEventError>, Failure> = if one_statement {
            match self
                .scoped_statement("events.append", tenant, APPEND_SQL, append_values(&event))
                .await
            {
                Ok(rows) if rows.is_empty() => self.confirm_appended(&event).await,
                Ok(_) => Ok(Ok(())),
                Err(f) => Err(f),
            }
        } else {
            transaction!(self, "events.append", tenant, Write, |txn| {
                if let Some(refused) = refusal(txn, tenant, &event).await? {
                    return Ok(Err(refused));
                }
                events::Entity::insert(events::ActiveModel::from(&event))
                    .exec_without_returning(txn)
                    .await?;
                effects::record(txn, tenant, event.id.as_uuid()).await?;
                Ok(Ok(()))
            })
        };
        match result {
            Ok(Ok(())) => Ok(event),
            Ok(Err(refused)) => Err(refused),
            // Without an actor the lead is the only reference. With one,
            // PostgreSQL names the key (its default name for the column
            // list); SQLite names none, so ask, on this rare path only.
            Err(Failure::ForeignKey(_)) if event.actor.is_none() => {
                Err(AppendEventError::LeadNotFound)
            }
            Err(Failure::ForeignKey(key)) if key.contains("events_tenant_id_lead_id_fkey") => {
                Err(AppendEventError::LeadNotFound)
            }
            Err(Failure::ForeignKey(key)) if key.contains("events_tenant_id_actor_fkey") => {
                Err(AppendEventError::AgentNotFound)
            }
            Err(Failure::ForeignKey(_)) => {
                let exists: Result<bool, Failure> =
                    transaction!(self, "events.append_refused", tenant, Read, |txn| {
                        lead_exists(txn, tenant, lead).await
                    });
                match exists {
                    Ok(true) => Err(AppendEventError::AgentNotFound),
                    Ok(false) => Err(AppendEventError::LeadNotFound),
                    Err(f) => Err(common!(f, AppendEventError)),
                }
            }
            Err(f) => Err(common!(f, AppendEventError)),
        }
    }

    async fn timeline(
        &self,
        tenant: TenantId,
        lead: LeadId,
        q: &TimelineQuery,
    ) -> Result<Page<Event>, TimelineError> {
        let result: Result<Option<Vec<events::Model>>, Failure> =
            transaction!(self, "events.timeline", tenant, ReplicaRead, |txn| {
                // A missing or deleted lead has no timeline to show: one
                // primary-key probe, in the same transaction as the page.
                if !lead_exists(txn, tenant, lead).await? {
                    return Ok(None);
                }
                let mut query = events::Entity::find()
                    .filter(events::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(events::Column::LeadId.eq(lead.as_uuid()));
                if let Some(after) = q.after {
                    query = query.filter(
                        Condition::any()
                            .add(events::Column::OccurredAt.lt(after.occurred_at))
                            .add(
                                Condition::all()
                                    .add(events::Column::OccurredAt.eq(after.occurred_at))
                                    .add(events::Column::Id.lt(after.id.as_uuid())),
                            ),
                    );
                }
                let rows = query
                    .order_by_desc(events::Column::OccurredAt)
                    .order_by_desc(events::Column::Id)
                    .limit(u64::from(q.limit.get()) + 1)
                    .all(txn)
                    .await?;
                Ok(Some(rows))
            });
        match result {
            Ok(Some(rows)) => {
                let items = rows
                    .into_iter()
                    .map(Event::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::from_overfetch(items, q.limit))
            }
            Ok(None) => Err(TimelineError::LeadNotFound),
            Err(f) => Err(common!(f, TimelineError)),
        }
    }
}

#[async_trait]
impl LeadContextRepository for Store {
    async fn recently_active(
        &self,
        tenant: TenantId,
        limit: u16,
    ) -> Result<Vec<LeadId>, leadline_ports::ListLeadsError> {
        let result: Result<Vec<uuid::Uuid>, Failure> = transaction!(
            self,
            "context.recently_active",
            tenant,
            ReplicaRead,
            |txn| {
                // A backward scan of events_recent_idx. Several events may
                // belong to one lead, so read a few times the limit and keep
                // the first occurrence of each lead.
                let rows = events::Entity::find()
                    .select_only()
                    .column(events::Column::LeadId)
                    .filter(events::Column::TenantId.eq(tenant.as_uuid()))
                    .order_by_desc(events::Column::CreatedAt)
                    .limit(u64::from(limit) * 4)
                    .into_tuple::<uuid::Uuid>()
                    .all(txn)
                    .await?;
                Ok(rows)
            }
        );
        let rows = result.map_err(|f| common!(f, ListLeadsError))?;
        let mut seen = std::collections::HashSet::with_capacity(usize::from(limit));
        Ok(rows
            .into_iter()
            .filter(|id| seen.insert(*id))
            .take(usize::from(limit))
            .map(LeadId::from_uuid)
            .collect())
    }

    async fn context(
        &self,
        tenant: TenantId,
        lead: LeadId,
        events_limit: u16,
    ) -> Result<LeadContext, GetLeadError> {
        let one_query = if self.backend() == crate::Backend::Postgres {
            context_rows_in_one_query(self, tenant, lead, events_limit).await
        } else {
            Ok(Err("not PostgreSQL"))
        };
        let rows: Result<Option<ContextRows>, Failure> = match one_query {
            Ok(Ok(rows)) => Ok(rows),
            // A value the JSON form cannot carry (a BC date renders as
            // "… BC", which no ISO parser reads): the five queries decode
            // binary columns and read it fine.
            Ok(Err(part)) => {
                if self.backend() == crate::Backend::Postgres {
                    tracing::debug!(part, "lead context: JSON undecodable, five queries");
                }
                transaction!(self, "context.load_rows", tenant, Read, |txn| {
                    context_rows(txn, tenant, lead, events_limit).await
                })
            }
            Err(f) => Err(f),
        };
        let result: Result<Option<LeadContext>, Failure> = rows.and_then(|rows| {
            let Some(rows) = rows else {
                return Ok(None);
            };
            let convert = |rows: Vec<approvals::Model>| {
                rows.into_iter()
                    .map(Approval::try_from)
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok(Some(LeadContext {
                lead: Lead::try_from(rows.lead)?,
                assigned_agent: rows.agent.map(Agent::try_from).transpose()?,
                open_approvals: convert(rows.open)?,
                recent_approvals: convert(rows.recent)?,
                events: rows
                    .events
                    .into_iter()
                    .map(Event::try_from)
                    .collect::<Result<Vec<_>, _>>()?,
            }))
        });
        match result {
            Ok(Some(ctx)) => Ok(ctx),
            Ok(None) => Err(GetLeadError::NotFound),
            Err(f) => Err(common!(f, GetLeadError)),
        }
    }
}

#[cfg(test)]
mod tests {
    /// pgbench gets the values the store binds, as literals it can parse.
    #[test]
    fn the_pgbench_form_of_the_context_statement_has_the_bound_values() {
        let (sql, literals) = super::context_statement_for_pgbench(20);
        assert!(sql.contains("$10") && sql.starts_with("WITH scope AS MATERIALIZED"));
        assert_eq!(
            literals,
            [
                "'pending'",
                "'approved'",
                "50",
                "'sent'",
                "'rejected'",
                "'cancelled'",
                "10",
                "20"
            ]
        );
    }
}
