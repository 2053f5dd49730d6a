//! Agents: the people (or bots) who work leads.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AgentId, DisplayName, Email, TenantId};

/// What an agent may do. Admins manage the tenant; agents work leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Manages the tenant.
    Admin,
    /// Works leads.
    Agent,
}

impl AgentRole {
    /// The stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for AgentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentRole {
    type Err = crate::ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "agent" => Ok(Self::Agent),
            _ => Err(crate::ValueError::Invalid("must be one of: admin, agent")),
        }
    }
}

/// An agent of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: DisplayName,
    /// Email, unique within the tenant.
    pub email: Email,
    /// Role.
    pub role: AgentRole,
    /// Inactive agents keep their history but get no new leads.
    pub active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, starting at 1.
    pub version: i64,
}

/// What it takes to create an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateAgentRequest {
    /// Display name.
    pub name: DisplayName,
    /// Email, unique within the tenant.
    pub email: Email,
    /// Role.
    pub role: AgentRole,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateAgentRequest {
    /// The version the caller read; a different current version is a conflict.
    pub expected_version: i64,
    /// New name.
    pub name: Option<DisplayName>,
    /// New email.
    pub email: Option<Email>,
    /// New role.
    pub role: Option<AgentRole>,
    /// Activate or deactivate.
    pub active: Option<bool>,
}

/// The stored version moved on since the caller read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stale version: the agent is at version {current}")]
pub struct StaleVersion {
    /// The version now stored.
    pub current: i64,
}

impl Agent {
    /// Applies `req`, bumping the version and `updated_at`.
    ///
    /// # Errors
    /// [`StaleVersion`] when `req.expected_version` is not the current version.
    pub fn apply(
        &self,
        req: &UpdateAgentRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, StaleVersion> {
        if req.expected_version != self.version {
            return Err(StaleVersion {
                current: self.version,
            });
        }
        let mut next = self.clone();
        if let Some(name) = &req.name {
            next.name = name.clone();
        }
        if let Some(email) = &req.email {
            next.email = email.clone();
        }
        if let Some(role) = req.role {
            next.role = role;
        }
        if let Some(active) = req.active {
            next.active = active;
        }
        next.version += 1;
        next.updated_at = now;
        Ok(next)
    }
}

impl Agent {
    /// A new agent from a request: active, version 1, created at `now`.
    #[must_use]
    pub fn new(tenant: TenantId, req: &CreateAgentRequest, now: DateTime<Utc>) -> Self {
        Self {
            id: AgentId::new(),
            tenant_id: tenant,
            name: req.name.clone(),
            email: req.email.clone(),
            role: req.role,
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// Whether the agent may take new work: be assigned a lead or draft a
    /// message. An inactive agent keeps its history and nothing more.
    #[must_use]
    pub const fn takes_new_work(&self) -> bool {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        let now = Utc::now();
        Agent {
            id: AgentId::new(),
            tenant_id: TenantId::new(),
            name: DisplayName::new("Ada").expect("valid"),
            email: Email::parse("ada@example.com").expect("valid"),
            role: AgentRole::Agent,
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    #[test]
    fn apply_bumps_version_and_changes_only_given_fields() {
        let a = agent();
        let req = UpdateAgentRequest {
            expected_version: 1,
            name: None,
            email: None,
            role: Some(AgentRole::Admin),
            active: Some(false),
        };
        let b = a.apply(&req, Utc::now()).expect("current version");
        assert_eq!(
            (b.version, b.role, b.active, &b.name),
            (2, AgentRole::Admin, false, &a.name)
        );
    }

    #[test]
    fn stale_version_is_refused() {
        let req = UpdateAgentRequest {
            expected_version: 7,
            name: None,
            email: None,
            role: None,
            active: None,
        };
        assert_eq!(
            agent().apply(&req, Utc::now()),
            Err(StaleVersion { current: 1 })
        );
    }

    #[test]
    fn role_parses() {
        assert_eq!("admin".parse::<AgentRole>(), Ok(AgentRole::Admin));
        assert!("root".parse::<AgentRole>().is_err());
    }
}
