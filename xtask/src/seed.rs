//! `cargo xtask db seed`: fills a database with realistic tenants, agents
//! and leads, and is safe to re-run.
//!
//! Re-running converges instead of duplicating: tenants `seed-001`, … have
//! ids derived from their slugs (see [`crate::generate`]), so each run looks
//! them up by id (the only lookup row-level security allows without a
//! tenant context); agents have fixed emails, so a duplicate email means
//! "already there"; leads are topped up to `--leads` per tenant, never
//! beyond. Rows go through the app's services and the store's repositories,
//! so the seed exercises the same validation and RLS context as the API.

use std::{
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use leadline::config::Config;
use leadline::{Composition, compose};
use leadline_domain::{AgentId, CreateLeadRequest, PageLimit};
use leadline_ports::{CreateAgentError, CreateTenantError, GetTenantError};
use tokio::task::JoinHandle;

use crate::generate::SeedTenant;

/// Leads per `create_many` call. Each call is one transaction, so a failure
/// loses at most one batch and a re-run fills the gap.
const BATCH: u64 = 1_000;

/// What to seed.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Seed tenants to ensure: seed-001 … seed-NNN.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub tenants: u32,
    /// Leads per tenant; only the missing ones are written.
    #[arg(long, default_value_t = 1_000)]
    pub leads: u64,
    /// Agents per tenant (agent-01 is the admin).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=999))]
    pub agents: u32,
    /// Also issue (and print) a new API key for tenants that already exist.
    /// New tenants always print their first key.
    #[arg(long)]
    pub issue_keys: bool,
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    tenants_created: u32,
    tenants_existing: u32,
    agents_created: u32,
    agents_existing: u32,
    leads_written: u64,
    leads_elapsed: Duration,
}

/// One `create_many` call's worth of leads for one tenant.
#[derive(Clone)]
struct Batch {
    tenant: SeedTenant,
    agents: Arc<[AgentId]>,
    rows: Range<u64>,
}

impl Batch {
    /// Generates the batch on a blocking thread, so the next batch is being
    /// built while the previous one is written: in a debug build generation
    /// costs about as much as the insert, and the pipeline nearly halves the
    /// seed time.
    fn generate(self) -> JoinHandle<anyhow::Result<(Self, Vec<CreateLeadRequest>)>> {
        tokio::task::spawn_blocking(move || {
            let leads = self
                .rows
                .clone()
                .map(|row| self.tenant.lead(row, &self.agents))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((self, leads))
        })
    }
}

/// Seeds the configured database (applying pending migrations first, as
/// `leadline serve` would) and prints what it did.
///
/// # Errors
/// Connection and store failures, a `seed-NNN` slug taken by a tenant the
/// seeder did not create, or a generator bug (an invalid value).
pub async fn seed(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let composition = compose(&config.database, true).await?;
    let result = run(&composition, args).await;
    // Release the pool on failure too: on SQLite that checkpoints the WAL.
    composition.shutdown().await;
    let summary = result?;

    let elapsed = started.elapsed();
    println!(
        "tenants: {} created, {} existing; agents: {} created, {} existing",
        summary.tenants_created,
        summary.tenants_existing,
        summary.agents_created,
        summary.agents_existing
    );
    let secs = summary.leads_elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        summary.leads_written as f64 / secs
    } else {
        0.0
    };
    println!(
        "leads: {} written in {:.2}s ({rate:.0} rows/s); total {:.2}s",
        summary.leads_written,
        secs,
        elapsed.as_secs_f64()
    );
    Ok(())
}

async fn run(composition: &Composition, args: &SeedArgs) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut batches = Vec::new();
    for n in 1..=args.tenants {
        let tenant = SeedTenant::numbered(n)?;
        ensure_tenant(composition, &tenant, args.issue_keys, &mut summary).await?;
        let agents: Arc<[AgentId]> = ensure_agents(composition, &tenant, args.agents, &mut summary)
            .await?
            .into();
        let existing = composition
            .services
            .leads
            .count(tenant.id())
            .await
            .with_context(|| format!("counting leads of {}", tenant.slug()))?;
        // Rows are numbered from the current count, so a top-up continues
        // the sequence (and the emails) where the last run stopped.
        let mut row = existing;
        while row < args.leads {
            let upto = args.leads.min(row + BATCH);
            batches.push(Batch {
                tenant: tenant.clone(),
                agents: agents.clone(),
                rows: row..upto,
            });
            row = upto;
        }
    }

    let total: u64 = batches.iter().map(|b| b.rows.end - b.rows.start).sum();
    let bar = ProgressBar::new(total).with_style(ProgressStyle::with_template(
        "{msg:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} leads ({per_sec:0}, eta {eta})",
    )?);
    let started = Instant::now();
    let mut pending = batches.into_iter();
    let mut next = pending.next().map(Batch::generate);
    while let Some(generating) = next.take() {
        let (batch, leads) = generating.await.context("lead generator task failed")??;
        next = pending.next().map(Batch::generate);
        bar.set_message(batch.tenant.slug().to_string());
        let written = composition
            .services
            .leads
            .create_many(batch.tenant.id(), &leads)
            .await
            .with_context(|| {
                format!(
                    "writing leads {}..={} of {}",
                    batch.rows.start + 1,
                    batch.rows.end,
                    batch.tenant.slug()
                )
            })?;
        summary.leads_written += written;
        bar.inc(written);
    }
    summary.leads_elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(summary)
}

/// Creates the tenant under its derived id unless it exists, printing its
/// API key when one is minted (the only time it can be shown).
async fn ensure_tenant(
    composition: &Composition,
    tenant: &SeedTenant,
    issue_key: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let id = tenant.id();
    match composition.services.tenants.get(id).await {
        Ok(_) => {
            summary.tenants_existing += 1;
            if issue_key {
                let key = composition
                    .services
                    .keys
                    .issue(id, &leadline_domain::NewApiKey::first())
                    .await?
                    .token;
                println!(
                    "{}  {id}  exists   new API key: {}",
                    tenant.slug(),
                    key.expose()
                );
            } else {
                println!(
                    "{}  {id}  exists   (--issue-keys prints a new API key)",
                    tenant.slug()
                );
            }
            Ok(())
        }
        Err(GetTenantError::NotFound(_)) => {
            match composition
                .services
                .tenants
                .create_with_id(id, &tenant.create_request()?)
                .await
            {
                Ok(created) => {
                    summary.tenants_created += 1;
                    println!(
                        "{}  {id}  created  API key: {}",
                        tenant.slug(),
                        created.api_key.expose()
                    );
                    Ok(())
                }
                Err(CreateTenantError::DuplicateSlug) => bail!(
                    "slug {} belongs to a tenant the seeder did not create (its id is not {id}); delete or rename it, or seed another database",
                    tenant.slug()
                ),
                Err(e) => Err(e).with_context(|| format!("creating tenant {}", tenant.slug())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("looking up tenant {}", tenant.slug())),
    }
}

/// Ensures agents 1..=`count` exist and returns their ids in that order.
async fn ensure_agents(
    composition: &Composition,
    tenant: &SeedTenant,
    count: u32,
    summary: &mut Summary,
) -> anyhow::Result<Vec<AgentId>> {
    let agents = &composition.services.agents;
    let mut ids: Vec<Option<AgentId>> = Vec::with_capacity(count as usize);
    for n in 1..=count {
        match agents.create(tenant.id(), &tenant.agent(n)?).await {
            Ok(agent) => {
                summary.agents_created += 1;
                ids.push(Some(agent.id));
            }
            Err(CreateAgentError::DuplicateEmail) => {
                summary.agents_existing += 1;
                ids.push(None);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating agent {n} of {}", tenant.slug()));
            }
        }
    }
    if ids.iter().all(Option::is_some) {
        return Ok(ids.into_iter().flatten().collect());
    }

    // Some already existed: there is no lookup by email, so page through the
    // tenant's agents and match the seed emails.
    let emails = (1..=count)
        .map(|n| tenant.agent_email(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limit = PageLimit::new(u32::from(PageLimit::MAX))?;
    let mut after = None;
    loop {
        let page = agents
            .list(tenant.id(), limit, after)
            .await
            .with_context(|| format!("listing agents of {}", tenant.slug()))?;
        for agent in &page.items {
            if let Some(i) = emails.iter().position(|e| *e == agent.email) {
                ids[i] = Some(agent.id);
            }
        }
        after = page.items.last().map(|a| a.id);
        if !page.has_more || ids.iter().all(Option::is_some) {
            break;
        }
    }
    ids.into_iter()
        .zip(&emails)
        .map(|(id, email)| {
            id.with_context(|| format!("agent {email} was reported as existing but is not listed"))
        })
        .collect()
}
