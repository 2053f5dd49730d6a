//! [`ApprovalRepository`] on the store: drafts, the conditional moves of
//! the approval lifecycle, their timeline events and the outbox.

use async_trait::async_trait;
use leadline_domain::{
    Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery, ApprovalStatus, DraftApprovalRequest,
    EditDraftRequest, LeadId, Page, TenantId,
};
use leadline_ports::{
    ApprovalRepository, DraftApprovalError, EditApprovalError, GetApprovalError,
    ListApprovalsError, TransitionApprovalError,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use crate::{
    Store,
    effects::{self, recover},
    entity::{approvals, outbox, tenants},
    errors::{Failure, common},
    tx::transaction,
};

fn approval_by_key(tenant: TenantId, id: ApprovalId) -> sea_orm::Select<approvals::Entity> {
    approvals::Entity::find()
        .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
        .filter(approvals::Column::Id.eq(id.as_uuid()))
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
        let approval = Approval::draft(tenant, lead, req, crate::now());
        let result: Result<Result<(), DraftApprovalError>, Failure> =
            transaction!(self, "approvals.draft", tenant, Write, |txn| {
                // Two foreign keys can fail; say which without guessing from
                // constraint names.
                if !crate::repo_leads::lead_exists_shared(txn, self.backend(), tenant, lead).await?
                {
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
                crate::changes::record(txn, &[leadline_domain::Change::approval(&approval)])
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
        at_revision: Option<i32>,
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
                if let Some(revision) = at_revision {
                    update = update.filter(approvals::Column::Revision.eq(revision));
                }
                if action.is_decision() {
                    // Separation of duties, in the same conditional update:
                    // a decision by the drafter or the last editor moves the
                    // row only where the tenant turned the rule off.
                    let lenient = Query::select()
                        .column(tenants::Column::Id)
                        .from(tenants::Entity)
                        .and_where(tenants::Column::Id.eq(tenant.as_uuid()))
                        .and_where(tenants::Column::SeparationOfDuties.eq(false))
                        .to_owned();
                    update = update.filter(
                        Condition::any()
                            .add(
                                Condition::all()
                                    .add(approvals::Column::RequestedBy.ne(by))
                                    .add(
                                        Condition::any()
                                            .add(approvals::Column::EditedBy.is_null())
                                            .add(approvals::Column::EditedBy.ne(by)),
                                    ),
                            )
                            .add(approvals::Column::TenantId.in_subquery(lenient)),
                    );
                }
                let Some(model) = update.exec_with_returning(txn).await?.into_iter().next() else {
                    let current = approval_by_key(tenant, id).one(txn).await?;
                    return Ok(match current {
                        None => Err(TransitionApprovalError::NotFound),
                        Some(m) => {
                            let status: leadline_domain::ApprovalStatus =
                                m.status.parse().map_err(anyhow::Error::new)?;
                            let drafter = leadline_domain::AgentId::from_uuid(m.requested_by);
                            let editor = m.edited_by.map(leadline_domain::AgentId::from_uuid);
                            // Still where the action starts, so the revision
                            // or the separation filter is what held it back.
                            if status != action.from_status() {
                                Err(TransitionApprovalError::Conflict { current: status })
                            } else if at_revision.is_some_and(|r| r != m.revision) {
                                Err(TransitionApprovalError::Edited {
                                    current_revision: m.revision,
                                })
                            } else if action.breaks_separation(drafter, editor, true) {
                                Err(TransitionApprovalError::SelfDecision)
                            } else {
                                Err(TransitionApprovalError::Conflict { current: status })
                            }
                        }
                    });
                };
                let approval = Approval::try_from(model)?;
                let event = approval.event_of(action);
                let mut change = leadline_domain::Change::approval(&approval);
                change.before = Some(leadline_domain::audit::approval_before(&approval, action));
                crate::changes::record_with_events(
                    txn,
                    std::slice::from_ref(&event),
                    &[change, leadline_domain::Change::event(&event)],
                )
                .await?;
                if let ApprovalAction::MarkSent { .. } = action {
                    let row = outbox::ActiveModel {
                        tenant_id: Set(tenant.as_uuid()),
                        id: Set(uuid::Uuid::now_v7()),
                        approval_id: Set(approval.id.as_uuid()),
                        lead_id: Set(approval.lead_id.as_uuid()),
                        channel: Set(approval.channel.as_str().to_owned()),
                        payload: Set(approval.outbox_payload()),
                        created_at: Set(now),
                        dispatched_at: Set(None),
                        status: Set(leadline_domain::DeliveryStatus::Pending.as_str().to_owned()),
                        attempts: Set(0),
                        round_start: Set(0),
                        next_attempt_at: Set(now),
                        lease_token: Set(None),
                        last_error: Set(None),
                        updated_at: Set(now),
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

    async fn edit(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        req: &EditDraftRequest,
    ) -> Result<Approval, EditApprovalError> {
        recover!(tenant, EditApprovalError, |effect| {
            ApprovalRepository::get(self, tenant, ApprovalId::from_uuid(effect))
        });
        let result: Result<Result<Approval, EditApprovalError>, Failure> =
            transaction!(self, "approvals.edit", tenant, Write, |txn| {
                // Checked here on both backends: SQLite has no foreign key
                // on `edited_by` (docs/backends.md).
                match crate::repo_agents::takes_new_work(txn, self.backend(), tenant, req.edited_by)
                    .await?
                {
                    None => return Ok(Err(EditApprovalError::AgentNotFound)),
                    // Writing a draft's words is drafting.
                    Some(false) => return Ok(Err(EditApprovalError::AgentInactive)),
                    Some(true) => {}
                }
                // The text as it was, for the audit trail: locked, so the
                // conditional update below moves exactly this revision.
                let mut prior = approval_by_key(tenant, id);
                if self.backend() == crate::Backend::Postgres {
                    prior = prior.lock_exclusive();
                }
                let prior = prior
                    .one(txn)
                    .await?
                    .and_then(|m| Approval::try_from(m).ok());
                let now = crate::now();
                // Like a move: the row changes only if it is still a pending
                // draft at the revision the editor read.
                let updated = approvals::Entity::update_many()
                    .col_expr(
                        approvals::Column::Subject,
                        Expr::value(req.subject.as_ref().map(|s| s.as_str().to_owned())),
                    )
                    .col_expr(approvals::Column::Body, Expr::value(req.body.as_str()))
                    .col_expr(
                        approvals::Column::Revision,
                        Expr::col(approvals::Column::Revision).add(1),
                    )
                    .col_expr(
                        approvals::Column::EditedBy,
                        Expr::value(req.edited_by.as_uuid()),
                    )
                    .col_expr(approvals::Column::EditedAt, Expr::value(now))
                    .col_expr(approvals::Column::UpdatedAt, Expr::value(now))
                    .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(approvals::Column::Id.eq(id.as_uuid()))
                    .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
                    .filter(approvals::Column::Revision.eq(req.revision))
                    .exec_with_returning(txn)
                    .await?;
                let Some(model) = updated.into_iter().next() else {
                    return Ok(match approval_by_key(tenant, id).one(txn).await? {
                        None => Err(EditApprovalError::NotFound),
                        Some(m) => {
                            let status: ApprovalStatus =
                                m.status.parse().map_err(anyhow::Error::new)?;
                            if status == ApprovalStatus::Pending {
                                Err(EditApprovalError::Stale {
                                    current_revision: m.revision,
                                })
                            } else {
                                Err(EditApprovalError::NotPending { current: status })
                            }
                        }
                    });
                };
                let approval = Approval::try_from(model)?;
                let mut change = leadline_domain::Change::approval_edited(&approval);
                if let Some(prior) = &prior {
                    change = change.was(prior);
                }
                crate::changes::record(txn, &[change]).await?;
                effects::record(txn, tenant, approval.id.as_uuid()).await?;
                Ok(Ok(approval))
            });
        match result {
            Ok(outcome) => outcome,
            Err(Failure::ForeignKey(_)) => Err(EditApprovalError::AgentNotFound),
            Err(f) => Err(common!(f, EditApprovalError)),
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
