//! `leadline audit verify [--tenant SLUG]`: walks each tenant's audit
//! trail and checks its hash chain, naming the first record that was
//! edited, deleted under or moved.

use leadline_app::{Services, Verdict};
use leadline_domain::{TenantId, audit::hex};

/// One tenant's outcome, as printed.
#[derive(Debug)]
pub struct Checked {
    /// Who.
    pub tenant: TenantId,
    /// Its slug, when the tenant still reads.
    pub slug: Option<String>,
    /// What the walk found.
    pub verdict: Verdict,
}

impl Checked {
    /// One line for the operator.
    #[must_use]
    pub fn describe(&self) -> String {
        let name = self.slug.clone().unwrap_or_else(|| self.tenant.to_string());
        match &self.verdict {
            Verdict::Intact(state) => format!(
                "{name}: ok, {} records chained, {} awaiting their seal, head {}",
                state.sealed,
                state.unsealed,
                hex(&state.head)
            ),
            Verdict::Broken(broken) => format!("{name}: BROKEN at {broken}"),
        }
    }
}

/// Verifies `tenant`'s trail, or every tenant's.
///
/// # Errors
/// An unknown `--tenant`, the store's failures.
pub async fn verify(services: &Services, tenant: Option<&str>) -> anyhow::Result<Vec<Checked>> {
    let tenants = match tenant {
        Some(slug) => vec![crate::keys::tenant_of(services, slug).await?],
        None => services.audit.tenants().await?,
    };
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let verdict = services.audit.verify(tenant).await?;
        let slug = services
            .tenants
            .get(tenant)
            .await
            .ok()
            .map(|t| t.slug.to_string());
        out.push(Checked {
            tenant,
            slug,
            verdict,
        });
    }
    Ok(out)
}
