//! [`AgentRepository`] on the store.

use async_trait::async_trait;

use leadline_domain::{
    Agent, AgentId, CreateAgentRequest, Email, Page, PageLimit, TenantId, UpdateAgentRequest,
};
use leadline_ports::{
    AgentRepository, CreateAgentError, GetAgentError, ListAgentsError, UpdateAgentError,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{
    Backend, Store,
    effects::{self, recover},
    entity::agents,
    errors::{Failure, common},
    tx::transaction,
};

/// Select one agent of `tenant`; the explicit tenant filter is the first
/// wall, RLS the second.
fn by_key(tenant: TenantId, id: AgentId) -> sea_orm::Select<agents::Entity> {
    agents::Entity::find()
        .filter(agents::Column::TenantId.eq(tenant.as_uuid()))
        .filter(agents::Column::Id.eq(id.as_uuid()))
}

/// Whether `agent` may take new work (a lead, a draft), read inside the
/// caller's transaction: `None` when it is not an agent of `tenant`. On
/// PostgreSQL the row is share-locked, so a concurrent deactivation waits
/// for this transaction instead of slipping in between check and write.
pub(crate) async fn takes_new_work(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    agent: AgentId,
) -> Result<Option<bool>, Failure> {
    let mut select = by_key(tenant, agent);
    if backend == Backend::Postgres {
        select = select.lock_shared();
    }
    match select.one(txn).await? {
        Some(model) => Ok(Some(Agent::try_from(model)?.takes_new_work())),
        None => Ok(None),
    }
}

#[async_trait]
impl AgentRepository for Store {
    async fn create(
        &self,
        tenant: TenantId,
        req: &CreateAgentRequest,
    ) -> Result<Agent, CreateAgentError> {
        recover!(tenant, CreateAgentError, |effect| AgentRepository::get(
            self,
            tenant,
            AgentId::from_uuid(effect)
        ));
        let agent = Agent::new(tenant, req, crate::now());
        let result: Result<(), Failure> =
            transaction!(self, "agents.create", tenant, Write, |txn| {
                agents::Entity::insert(agents::ActiveModel::from(&agent))
                    .exec_without_returning(txn)
                    .await?;
                crate::changes::record(
                    txn,
                    &[leadline_domain::Change::agent(
                        leadline_domain::ChangeType::AgentCreated,
                        &agent,
                    )],
                )
                .await?;
                effects::record(txn, tenant, agent.id.as_uuid()).await?;
                Ok(())
            });
        match result {
            Ok(()) => Ok(agent),
            Err(Failure::Unique(_)) => Err(CreateAgentError::DuplicateEmail),
            // The tenant row is missing (or invisible): nothing to attach to.
            Err(Failure::ForeignKey(m)) => Err(CreateAgentError::Unknown(anyhow::anyhow!(
                "tenant missing: {m}"
            ))),
            Err(f) => Err(common!(f, CreateAgentError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: AgentId) -> Result<Agent, GetAgentError> {
        let result: Result<Option<agents::Model>, Failure> =
            transaction!(self, "agents.get", tenant, Read, |txn| {
                let model = by_key(tenant, id).one(txn).await?;
                Ok(model)
            });
        match result {
            Ok(Some(m)) => Agent::try_from(m).map_err(GetAgentError::Unknown),
            Ok(None) => Err(GetAgentError::NotFound),
            Err(f) => Err(common!(f, GetAgentError)),
        }
    }

    async fn find_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<Agent>, GetAgentError> {
        let result: Result<Option<agents::Model>, Failure> =
            transaction!(self, "agents.find_by_email", tenant, Read, |txn| {
                // Served by agents_email_key.
                let model = agents::Entity::find()
                    .filter(agents::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(agents::Column::Email.eq(email.to_string()))
                    .one(txn)
                    .await?;
                Ok(model)
            });
        match result {
            Ok(model) => model
                .map(Agent::try_from)
                .transpose()
                .map_err(GetAgentError::Unknown),
            Err(f) => Err(common!(f, GetAgentError)),
        }
    }

    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<AgentId>,
    ) -> Result<Page<Agent>, ListAgentsError> {
        let result: Result<Vec<agents::Model>, Failure> =
            transaction!(self, "agents.list", tenant, ReplicaRead, |txn| {
                let mut query =
                    agents::Entity::find().filter(agents::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(after) = after {
                    query = query.filter(agents::Column::Id.gt(after.as_uuid()));
                }
                let rows = query
                    .order_by_asc(agents::Column::Id)
                    .limit(u64::from(limit.get()) + 1)
                    .all(txn)
                    .await?;
                Ok(rows)
            });
        let rows = result.map_err(|f| common!(f, ListAgentsError))?;
        let agents = rows
            .into_iter()
            .map(Agent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(agents, limit))
    }

    async fn update(
        &self,
        tenant: TenantId,
        id: AgentId,
        req: &UpdateAgentRequest,
    ) -> Result<Agent, UpdateAgentError> {
        recover!(tenant, UpdateAgentError, |effect| AgentRepository::get(
            self,
            tenant,
            AgentId::from_uuid(effect)
        ));
        let result: Result<Result<Agent, UpdateAgentError>, Failure> =
            transaction!(self, "agents.update", tenant, Write, |txn| {
                let mut select = by_key(tenant, id);
                if self.backend() == Backend::Postgres {
                    select = select.lock_exclusive();
                }
                let Some(current) = select.one(txn).await? else {
                    return Ok(Err(UpdateAgentError::NotFound));
                };
                let current = Agent::try_from(current)?;
                let next = match current.apply(req, crate::now()) {
                    Ok(next) => next,
                    Err(stale) => {
                        return Ok(Err(UpdateAgentError::Conflict {
                            current: stale.current,
                        }));
                    }
                };
                // The version predicate makes the write conditional even where
                // the row lock is not available (SQLite serialises instead).
                let updated = agents::Entity::update_many()
                    .set(agents::ActiveModel::from(&next))
                    .filter(agents::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(agents::Column::Id.eq(id.as_uuid()))
                    .filter(agents::Column::Version.eq(current.version))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Ok(Err(UpdateAgentError::Conflict {
                        current: current.version,
                    }));
                }
                crate::changes::record(
                    txn,
                    &[leadline_domain::Change::agent(
                        leadline_domain::ChangeType::AgentUpdated,
                        &next,
                    )
                    .was(&current)],
                )
                .await?;
                effects::record(txn, tenant, id.as_uuid()).await?;
                Ok(Ok(next))
            });
        match result {
            Ok(outcome) => outcome,
            Err(Failure::Unique(_)) => Err(UpdateAgentError::DuplicateEmail),
            Err(f) => Err(common!(f, UpdateAgentError)),
        }
    }
}
