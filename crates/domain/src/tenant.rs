//! Tenants: the unit of isolation. Everything else belongs to exactly one.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{DisplayName, Slug, TenantId};

/// A customer organisation using leadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its id; also the value of the row-level-security context.
    pub id: TenantId,
    /// Unique, URL-safe handle.
    pub slug: Slug,
    /// Human name.
    pub name: DisplayName,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Whether the agent who drafted an approval is kept from deciding it
    /// (on unless the tenant's admin turns it off).
    pub separation_of_duties: bool,
}

/// What it takes to create a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTenantRequest {
    /// The handle, unique across tenants.
    pub slug: Slug,
    /// The display name.
    pub name: DisplayName,
}
