//! `leadline export leads --tenant SLUG [--out FILE]`: a tenant's leads as
//! CSV, the columns `leadline import leads` maps back.

use std::path::PathBuf;

use futures::StreamExt as _;
use leadline_app::{ExportQuery, Services};
use leadline_domain::{LeadStatus, ListLeadsQuery, SearchText, Slug, Tag};
use tokio::io::AsyncWriteExt as _;

/// What `export leads` was asked to do.
#[derive(Debug, Default)]
pub struct ExportArgs {
    /// The tenant's slug.
    pub tenant: String,
    /// Where to write (default: standard output).
    pub out: Option<PathBuf>,
    /// Only leads matching this search, best first.
    pub q: Option<String>,
    /// Only leads in this status.
    pub status: Option<String>,
    /// Only leads with this tag.
    pub tag: Option<String>,
}

/// Writes the export; returns how many bytes were written.
///
/// # Errors
/// An unknown tenant, a bad filter (naming its flag), the store's failure,
/// or the output's.
pub async fn export_leads(services: &Services, args: &ExportArgs) -> anyhow::Result<u64> {
    let slug = Slug::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let tenant = services
        .tenants
        .find_by_slug(&slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant has the slug {slug}"))?;
    let status = args
        .status
        .as_deref()
        .map(str::parse::<LeadStatus>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--status: {e}"))?;
    let tag = args
        .tag
        .as_deref()
        .map(Tag::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tag: {e}"))?;
    let query = match &args.q {
        Some(q) => ExportQuery::Search(Box::new(leadline_domain::SearchLeadsQuery {
            text: SearchText::parse(q).map_err(|e| anyhow::anyhow!("--q: {e}"))?,
            status,
            assigned_agent_id: None,
            tag,
            created_after: None,
            created_before: None,
            updated_after: None,
            updated_before: None,
            metadata: None,
            limit: leadline_domain::PageLimit::DEFAULT,
            after: None,
        })),
        None => ExportQuery::List(ListLeadsQuery {
            status,
            tag,
            ..ListLeadsQuery::default()
        }),
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &args.out {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut chunks = std::pin::pin!(services.exports.csv(tenant.id, query).await?);
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    out.flush().await?;
    Ok(written)
}
