//! `leadline audit verify [--tenant SLUG] [--anchors FILE]`: walks each
//! tenant's audit trail and checks its hash chain, naming the first record
//! that was edited, deleted under or moved; with `--anchors`, also that
//! the record each tenant's last verification ended at is still there
//! (a chain alone cannot show its newest records deleted), then records
//! where this one ended.

use std::{collections::BTreeMap, path::Path};

use leadline_app::{Services, Verdict};
use leadline_domain::{Anchor, TenantId, audit::hex};

/// Each tenant's anchor, as the file keeps them.
pub type Anchors = BTreeMap<TenantId, Anchor>;

/// The anchors in `path`; none when it does not exist yet.
///
/// # Errors
/// It cannot be read, or is not an anchors file.
pub fn read_anchors(path: &Path) -> anyhow::Result<Anchors> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("--anchors {}: not an anchors file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Anchors::new()),
        Err(e) => Err(anyhow::anyhow!("--anchors {}: {e}", path.display())),
    }
}

/// Writes `anchors` to `path`, replacing it whole (a new file renamed over
/// the old one, so a crash leaves one or the other).
///
/// # Errors
/// The file cannot be written.
pub fn write_anchors(path: &Path, anchors: &Anchors) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(anchors)?;
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("--anchors {}: {e}", path.display()))
}

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
            Verdict::Truncated { anchor, state } => format!(
                "{name}: BROKEN: audit entry {} (hash {}), where the last verification ended after \
                 {} records, is gone or changed; {} records chain now: records were deleted from \
                 the end of the trail, or it was rewritten",
                anchor.position, anchor.hash, anchor.sealed, state.sealed
            ),
        }
    }

    /// Whether the trail is not as written.
    #[must_use]
    pub fn is_broken(&self) -> bool {
        !matches!(self.verdict, Verdict::Intact(_))
    }
}

/// Verifies `tenant`'s trail, or every tenant's, against `anchors`, which
/// it moves on for every trail that verifies.
///
/// # Errors
/// An unknown `--tenant`, the store's failures.
pub async fn verify(
    services: &Services,
    tenant: Option<&str>,
    anchors: &mut Anchors,
) -> anyhow::Result<Vec<Checked>> {
    let tenants = match tenant {
        Some(slug) => vec![crate::keys::tenant_of(services, slug).await?],
        None => services.audit.tenants().await?,
    };
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let verdict = services.audit.verify(tenant, anchors.get(&tenant)).await?;
        // A tenant whose trail does not verify keeps the anchor it had.
        if let Verdict::Intact(state) = &verdict
            && let Some(anchor) = Anchor::of(state)
        {
            anchors.insert(tenant, anchor);
        }
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
