//! `leadline keys …`: an operator's API-key management, beside the admin
//! API's `/v1/keys`. Useful first of all when no admin key is at hand: a
//! key issued here needs only database access. Running instances see a
//! revocation within a second, like one made through the API.

use chrono::{DateTime, Utc};
use leadline_app::{IssuedKey, Services};
use leadline_domain::{
    Access, ApiKey, ApiKeyId, ApiKeyToken, DisplayName, NewApiKey, PageLimit, ScopeSet, Slug,
    TenantId,
};

/// What `keys create` was asked for.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    /// The tenant's slug.
    pub tenant: String,
    /// The key's name.
    pub name: String,
    /// Its role, or `None` with `scopes`.
    pub role: Option<String>,
    /// Comma-separated explicit scopes.
    pub scopes: Option<String>,
    /// RFC 3339 expiry.
    pub expires_at: Option<String>,
}

/// The tenant a `--tenant` slug names.
///
/// # Errors
/// A bad slug or no such tenant, naming `--tenant`.
pub async fn tenant_of(services: &Services, slug: &str) -> anyhow::Result<TenantId> {
    let slug = Slug::parse(slug).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    Ok(services
        .tenants
        .find_by_slug(&slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant has the slug {slug}"))?
        .id)
}

/// Issues a key.
///
/// # Errors
/// A bad argument (naming its flag), an unknown tenant, the store's failure.
pub async fn create(services: &Services, args: &CreateArgs) -> anyhow::Result<IssuedKey> {
    let tenant = tenant_of(services, &args.tenant).await?;
    let name = DisplayName::new(&args.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let access = match (&args.role, &args.scopes) {
        (Some(role), None) => Access::Role(role.parse().map_err(|_| {
            anyhow::anyhow!("--role: {role:?} is not a role (viewer, agent, approver, admin)")
        })?),
        (None, Some(scopes)) => Access::Scopes(
            ScopeSet::parse(scopes.split(',').map(str::trim))
                .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?,
        ),
        (Some(_), Some(_)) => anyhow::bail!("--scopes: give --role or --scopes, not both"),
        (None, None) => {
            anyhow::bail!("--role: give --role (viewer, agent, approver, admin) or --scopes")
        }
    };
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|e| anyhow::anyhow!("--expires-at: {raw:?} is not an RFC 3339 time: {e}"))
        })
        .transpose()?;
    let key = NewApiKey::new(name, access, expires_at, Utc::now())
        .map_err(|e| anyhow::anyhow!("--expires-at: {e}"))?;
    Ok(services.keys.issue(tenant, &key).await?)
}

/// Every key of the tenant, oldest first.
///
/// # Errors
/// An unknown tenant, the store's failure.
pub async fn list(services: &Services, tenant: &str) -> anyhow::Result<Vec<ApiKey>> {
    let tenant = tenant_of(services, tenant).await?;
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = services
            .keys
            .list(tenant, PageLimit::new(u32::from(PageLimit::MAX))?, after)
            .await?;
        let more = page.has_more;
        after = page.items.last().map(|k| k.id);
        keys.extend(page.items);
        if !more {
            return Ok(keys);
        }
    }
}

fn key_id(raw: &str) -> anyhow::Result<ApiKeyId> {
    raw.parse()
        .map_err(|_| anyhow::anyhow!("ID: {raw:?} is not a key id (see `leadline keys list`)"))
}

/// Revokes a key.
///
/// # Errors
/// An unknown tenant or key, the store's failure.
pub async fn revoke(services: &Services, tenant: &str, id: &str) -> anyhow::Result<ApiKey> {
    let tenant = tenant_of(services, tenant).await?;
    Ok(services.keys.revoke(tenant, key_id(id)?).await?)
}

/// Rotates a key: returns the successor and its token.
///
/// # Errors
/// An unknown tenant or key, a revoked key, an overlap past 7 days.
pub async fn rotate(
    services: &Services,
    tenant: &str,
    id: &str,
    overlap_seconds: u32,
) -> anyhow::Result<(ApiKey, ApiKey, ApiKeyToken)> {
    let tenant = tenant_of(services, tenant).await?;
    let overlap = chrono::Duration::seconds(i64::from(overlap_seconds));
    let (rotated, token) = services
        .keys
        .rotate(tenant, key_id(id)?, overlap)
        .await
        .map_err(|e| match e {
            leadline_ports::KeyError::Refused(r) => anyhow::anyhow!("{r}"),
            other => other.into(),
        })?;
    Ok((rotated.old, rotated.new, token))
}

/// One line per key, for `keys list`.
#[must_use]
pub fn describe(key: &ApiKey, now: DateTime<Utc>) -> String {
    let access = match key.access {
        Access::Role(role) => format!("role={role}"),
        Access::Scopes(set) => format!("scopes={}", set.to_text()),
    };
    let state = if key.revoked_at.is_some() {
        "revoked"
    } else if key.is_live(now) {
        "active"
    } else {
        "expired"
    };
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    format!(
        "{}  {:<8}  {:<8}  {:<24}  expires={}  last_used={}  {}",
        key.id,
        state,
        key.prefix.as_ref().map_or("-", |p| p.as_str()),
        access,
        time(key.expires_at),
        time(key.last_used_at),
        key.name,
    )
}
