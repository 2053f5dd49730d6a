//! Exporting leads as CSV: the use case behind `GET /v1/leads/export` and
//! `leadline export leads`.
//!
//! The columns are the ones the importer maps by name, so importing an
//! export recreates its leads: names, email, phone, company, source,
//! status, the owner's email, tags (comma-separated), and the metadata as
//! one JSON object. The lead's id and times come along in `leadline_*`
//! columns, which the importer ignores.

use std::collections::HashMap;

use futures::{Stream, StreamExt as _, stream};
use leadline_domain::{
    AgentId, Email, Lead, LeadId, ListLeadsQuery, PageLimit, SearchCursor, SearchLeadsQuery,
    TenantId,
};
use leadline_ports::{ListAgentsError, ListLeadsError};

use crate::{AgentService, LeadService};

/// The export's columns, in order.
pub const COLUMNS: [&str; 13] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "source",
    "status",
    "owner",
    "tags",
    "metadata",
    "leadline_id",
    "leadline_created_at",
    "leadline_updated_at",
];

/// Which leads to export: a filtered list, or a search's hits.
#[derive(Debug, Clone)]
pub enum ExportQuery {
    /// Every lead the filters let through, newest first.
    List(ListLeadsQuery),
    /// A search's hits, best first.
    Search(Box<SearchLeadsQuery>),
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading leads failed.
    #[error(transparent)]
    Leads(#[from] ListLeadsError),
    /// Reading agents failed.
    #[error(transparent)]
    Agents(#[from] ListAgentsError),
    /// Encoding failed (a bug).
    #[error("CSV encoding failed: {0}")]
    Encode(String),
}

/// The export use case.
#[derive(Clone)]
pub struct ExportService {
    leads: LeadService,
    agents: AgentService,
}

impl std::fmt::Debug for ExportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportService").finish_non_exhaustive()
    }
}

/// One CSV line of `fields`.
fn line(fields: &[&str]) -> Result<Vec<u8>, ExportError> {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::with_capacity(256));
    writer
        .write_record(fields)
        .map_err(|e| ExportError::Encode(e.to_string()))?;
    writer
        .into_inner()
        .map_err(|e| ExportError::Encode(e.to_string()))
}

/// A lead as its CSV fields.
fn fields(lead: &Lead, owners: &HashMap<AgentId, Email>) -> Vec<String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    vec![
        lead.first_name.to_string(),
        lead.last_name.to_string(),
        opt(lead.email.as_ref().map(ToString::to_string)),
        opt(lead.phone.as_ref().map(|p| p.as_str().to_owned())),
        opt(lead.company.as_ref().map(ToString::to_string)),
        opt(lead.source.as_ref().map(ToString::to_string)),
        lead.status.as_str().to_owned(),
        opt(lead
            .assigned_agent_id
            .and_then(|a| owners.get(&a))
            .map(ToString::to_string)),
        lead.tags
            .as_slice()
            .iter()
            .map(leadline_domain::Tag::as_str)
            .collect::<Vec<_>>()
            .join(","),
        serde_json::Value::Object(lead.metadata.as_map().clone()).to_string(),
        lead.id.to_string(),
        lead.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        lead.updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ]
}

/// Where the next page starts.
#[derive(Debug, Clone, Copy)]
enum Position {
    Start,
    AfterLead(LeadId),
    AfterHit(SearchCursor),
    Done,
}

impl ExportService {
    /// Wraps the lead and agent use cases.
    #[must_use]
    pub fn new(leads: LeadService, agents: AgentService) -> Self {
        Self { leads, agents }
    }

    /// Every agent's email by id, for the owner column.
    async fn owners(&self, tenant: TenantId) -> Result<HashMap<AgentId, Email>, ExportError> {
        let mut owners = HashMap::new();
        let mut after = None;
        loop {
            let page = self
                .agents
                .list(
                    tenant,
                    PageLimit::new(200).unwrap_or(PageLimit::DEFAULT),
                    after,
                )
                .await?;
            after = page.items.last().map(|a| a.id);
            owners.extend(page.items.into_iter().map(|a| (a.id, a.email)));
            if !page.has_more {
                return Ok(owners);
            }
        }
    }

    /// The export as CSV chunks (the header, then a chunk per page of up to
    /// 200 leads), read page by page as the consumer pulls: nothing is held
    /// whole.
    ///
    /// # Errors
    /// The stream yields an error when a page cannot be read; the owners
    /// are read before the first chunk.
    pub async fn csv(
        &self,
        tenant: TenantId,
        query: ExportQuery,
    ) -> Result<impl Stream<Item = Result<Vec<u8>, ExportError>> + Send + 'static, ExportError>
    {
        let owners = self.owners(tenant).await?;
        let header = stream::once(async { line(&COLUMNS) });
        let this = self.clone();
        let pages = stream::unfold(
            (Position::Start, this, owners, query),
            move |(position, this, owners, query)| async move {
                if matches!(position, Position::Done) {
                    return None;
                }
                let page = this.page(tenant, &query, position).await;
                let (leads, next) = match page {
                    Ok(page) => page,
                    Err(e) => return Some((Err(e), (Position::Done, this, owners, query))),
                };
                let mut chunk = Vec::with_capacity(leads.len() * 160);
                for lead in &leads {
                    let row = fields(lead, &owners);
                    let refs: Vec<&str> = row.iter().map(String::as_str).collect();
                    match line(&refs) {
                        Ok(bytes) => chunk.extend(bytes),
                        Err(e) => return Some((Err(e), (Position::Done, this, owners, query))),
                    }
                }
                Some((Ok(chunk), (next, this, owners, query)))
            },
        );
        Ok(header.chain(pages))
    }

    /// One page at `position`, and where the next starts.
    async fn page(
        &self,
        tenant: TenantId,
        query: &ExportQuery,
        position: Position,
    ) -> Result<(Vec<Lead>, Position), ExportError> {
        let limit = PageLimit::new(200).unwrap_or(PageLimit::DEFAULT);
        match query {
            ExportQuery::List(q) => {
                let mut q = q.clone();
                q.limit = limit;
                q.after = match position {
                    Position::AfterLead(id) => Some(id),
                    _ => None,
                };
                let page = self.leads.list(tenant, &q).await?;
                let next = match page.items.last() {
                    Some(last) if page.has_more => Position::AfterLead(last.id),
                    _ => Position::Done,
                };
                Ok((page.items, next))
            }
            ExportQuery::Search(q) => {
                let mut q = (**q).clone();
                q.limit = limit;
                q.after = match position {
                    Position::AfterHit(cursor) => Some(cursor),
                    _ => None,
                };
                let page = self.leads.search(tenant, &q).await?;
                let next = match page.items.last() {
                    Some(last) if page.has_more => Position::AfterHit(q.cursor_after(last)),
                    _ => Position::Done,
                };
                Ok((page.items.into_iter().map(|h| h.lead).collect(), next))
            }
        }
    }

    /// The whole export in memory, for tests and small tenants.
    ///
    /// # Errors
    /// As [`Self::csv`].
    pub async fn csv_bytes(
        &self,
        tenant: TenantId,
        query: ExportQuery,
    ) -> Result<Vec<u8>, ExportError> {
        let mut out = Vec::new();
        let mut chunks = std::pin::pin!(self.csv(tenant, query).await?);
        while let Some(chunk) = chunks.next().await {
            out.extend(chunk?);
        }
        Ok(out)
    }
}
