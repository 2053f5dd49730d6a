//! Who may do what: roles, the scopes they grant, and what a caller holds.
//!
//! Every operation of the API needs exactly one [`Scope`]. A caller holds
//! either a [`Role`], which grants a fixed set of scopes, or an explicit
//! [`ScopeSet`] (an integration that only logs events needs no more than
//! `events:write`). The roles nest: each grants everything the one below
//! it does, so the least role that allows an operation is well defined and
//! is what the API documentation names.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{ApiKeyId, Tenant};

/// A permission an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Read the tenant's data: leads, agents, approvals, the timeline,
    /// deliveries, imports, the change feed.
    #[serde(rename = "read")]
    Read,
    /// Create, change, delete and import leads.
    #[serde(rename = "leads:write")]
    LeadsWrite,
    /// Log events on a lead's timeline.
    #[serde(rename = "events:write")]
    EventsWrite,
    /// Draft approvals and cancel them.
    #[serde(rename = "approvals:draft")]
    ApprovalsDraft,
    /// Approve, reject and send approvals; retry a failed delivery.
    #[serde(rename = "approvals:decide")]
    ApprovalsDecide,
    /// Manage the tenant: agents, API keys, webhooks, settings, the cache.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in a fixed order (the storage order of a [`ScopeSet`]).
    pub const ALL: [Self; 6] = [
        Self::Read,
        Self::LeadsWrite,
        Self::EventsWrite,
        Self::ApprovalsDraft,
        Self::ApprovalsDecide,
        Self::Admin,
    ];

    /// Its name, as the API and storage spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::LeadsWrite => "leads:write",
            Self::EventsWrite => "events:write",
            Self::ApprovalsDraft => "approvals:draft",
            Self::ApprovalsDecide => "approvals:decide",
            Self::Admin => "admin",
        }
    }

    /// The least role that grants it.
    #[must_use]
    pub const fn least_role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::LeadsWrite | Self::EventsWrite | Self::ApprovalsDraft => Role::Agent,
            Self::ApprovalsDecide => Role::Approver,
            Self::Admin => Role::Admin,
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownAccess;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or(UnknownAccess)
    }
}

/// What a person or key is trusted with. Each role grants everything the
/// one before it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Works leads: creates and changes them, imports, logs events, drafts
    /// approvals.
    Agent,
    /// An agent who also decides approvals and sends them.
    Approver,
    /// Everything, and manages users, keys, webhooks and settings.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Self; 4] = [Self::Viewer, Self::Agent, Self::Approver, Self::Admin];

    /// Its name, as the API and storage spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Agent => "agent",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// Whether it grants `scope`.
    #[must_use]
    pub fn allows(self, scope: Scope) -> bool {
        self >= scope.least_role()
    }

    /// Every scope it grants.
    #[must_use]
    pub fn scopes(self) -> ScopeSet {
        ScopeSet(
            Scope::ALL
                .into_iter()
                .filter(|s| self.allows(*s))
                .fold(0, |bits, s| bits | s.bit()),
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownAccess;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or(UnknownAccess)
    }
}

/// A role or scope name that is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown role or scope")]
pub struct UnknownAccess;

/// A non-empty set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeSetError {
    /// No scope at all: a key that can do nothing.
    #[error("must name at least one scope")]
    Empty,
    /// A name that is not a scope.
    #[error(
        "`{0}` is not a scope (one of: read, leads:write, events:write, approvals:draft, approvals:decide, admin)"
    )]
    Unknown(String),
}

impl ScopeSet {
    /// The set of `scopes` (duplicates collapse).
    ///
    /// # Errors
    /// [`ScopeSetError::Empty`] for no scopes.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, ScopeSetError> {
        let bits = scopes.into_iter().fold(0, |bits, s| bits | s.bit());
        if bits == 0 {
            Err(ScopeSetError::Empty)
        } else {
            Ok(Self(bits))
        }
    }

    /// Parses scope names.
    ///
    /// # Errors
    /// [`ScopeSetError`]: an unknown name, or none.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeSetError> {
        let scopes = names
            .into_iter()
            .map(|n| n.parse().map_err(|_| ScopeSetError::Unknown(n.to_owned())))
            .collect::<Result<Vec<Scope>, _>>()?;
        Self::new(scopes)
    }

    /// Whether `scope` is in the set.
    #[must_use]
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The comma-separated names, in a fixed order: how storage keeps it.
    #[must_use]
    pub fn to_text(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// What a caller holds: a role, or explicit scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A role and everything it grants.
    Role(Role),
    /// Exactly these scopes.
    Scopes(ScopeSet),
}

impl Access {
    /// Whether it allows an operation needing `scope`.
    #[must_use]
    pub fn allows(self, scope: Scope) -> bool {
        match self {
            Self::Role(role) => role.allows(scope),
            Self::Scopes(set) => set.contains(scope),
        }
    }

    /// Every scope it grants.
    #[must_use]
    pub fn scope_set(self) -> ScopeSet {
        match self {
            Self::Role(role) => role.scopes(),
            Self::Scopes(set) => set,
        }
    }

    /// Whether it grants everything `other` does: a key may only issue or
    /// rotate keys it covers, so that no key hands out more than it has.
    #[must_use]
    pub fn covers(self, other: Self) -> bool {
        let (mine, theirs) = (self.scope_set().0, other.scope_set().0);
        theirs & !mine == 0
    }

    /// The role, if it is one.
    #[must_use]
    pub fn role(self) -> Option<Role> {
        match self {
            Self::Role(role) => Some(role),
            Self::Scopes(_) => None,
        }
    }

    /// The explicit scopes, if they are that.
    #[must_use]
    pub fn scopes(self) -> Option<ScopeSet> {
        match self {
            Self::Role(_) => None,
            Self::Scopes(set) => Some(set),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Role(role) => write!(f, "role {role}"),
            Self::Scopes(set) => write!(f, "scopes {}", set.to_text()),
        }
    }
}

/// An authenticated caller: the tenant, the key it came with, and what
/// that key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant every call of this caller is scoped to.
    pub tenant: Tenant,
    /// The API key it presented.
    pub key_id: ApiKeyId,
    /// What the key allows.
    pub access: Access,
}

impl Caller {
    /// Whether the caller may do what needs `scope`.
    ///
    /// # Errors
    /// [`Forbidden`] naming the scope and the least role that has it.
    pub fn require(&self, scope: Scope) -> Result<(), Forbidden> {
        if self.access.allows(scope) {
            Ok(())
        } else {
            Err(Forbidden {
                needed: scope,
                held: self.access,
            })
        }
    }
}

/// A caller asked for something its access does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this needs the `{needed}` scope (role {} or above); the API key has {held}",
    needed.least_role()
)]
pub struct Forbidden {
    /// What the operation needs.
    pub needed: Scope,
    /// What the caller has.
    pub held: Access,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_each_scope_has_a_least_role() {
        for scope in Scope::ALL {
            let least = scope.least_role();
            for role in Role::ALL {
                assert_eq!(role.allows(scope), role >= least, "{role} {scope}");
            }
        }
        assert!(Role::Admin.allows(Scope::Admin));
        assert!(!Role::Approver.allows(Scope::Admin));
        assert!(Role::Approver.allows(Scope::ApprovalsDecide));
        assert!(!Role::Agent.allows(Scope::ApprovalsDecide));
        assert!(Role::Agent.allows(Scope::EventsWrite));
        assert!(!Role::Viewer.allows(Scope::LeadsWrite));
        assert!(Role::Viewer.allows(Scope::Read));
    }

    #[test]
    fn names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::json!(scope.as_str())
            );
        }
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("Admin".parse::<Role>(), Err(UnknownAccess));
        assert_eq!("write".parse::<Scope>(), Err(UnknownAccess));
    }

    #[test]
    fn scope_sets_are_non_empty_known_and_stored_in_one_order() {
        let set = ScopeSet::parse(["events:write", "read", "events:write"]).unwrap();
        assert_eq!(set.to_text(), "read,events:write");
        assert_eq!(ScopeSet::parse(set.to_text().split(',')), Ok(set));
        assert!(set.contains(Scope::Read) && !set.contains(Scope::LeadsWrite));
        assert_eq!(ScopeSet::parse([]), Err(ScopeSetError::Empty));
        assert_eq!(
            ScopeSet::parse(["read", "root"]),
            Err(ScopeSetError::Unknown("root".into()))
        );
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["read", "events:write"])
        );
    }

    #[test]
    fn access_covers_only_what_it_grants() {
        let admin = Access::Role(Role::Admin);
        let only_admin = Access::Scopes(ScopeSet::new([Scope::Admin]).unwrap());
        let agent = Access::Role(Role::Agent);
        let events = Access::Scopes(ScopeSet::new([Scope::EventsWrite]).unwrap());
        assert!(admin.covers(admin) && admin.covers(only_admin) && admin.covers(events));
        assert!(
            !only_admin.covers(admin),
            "the admin scope alone is not the admin role"
        );
        assert!(only_admin.covers(only_admin));
        assert!(agent.covers(events) && agent.covers(Access::Role(Role::Viewer)));
        assert!(!agent.covers(Access::Role(Role::Approver)));
        assert!(!events.covers(agent));
        assert_eq!(Role::Viewer.scopes(), ScopeSet::new([Scope::Read]).unwrap());
    }

    #[test]
    fn explicit_scopes_allow_exactly_themselves() {
        let access = Access::Scopes(ScopeSet::new([Scope::EventsWrite]).unwrap());
        for scope in Scope::ALL {
            assert_eq!(access.allows(scope), scope == Scope::EventsWrite);
        }
    }

    #[test]
    fn a_refusal_names_the_scope_and_the_least_role() {
        let caller = Caller {
            tenant: crate::fixtures::tenant(),
            key_id: ApiKeyId::new(),
            access: Access::Role(Role::Agent),
        };
        let refused = caller.require(Scope::ApprovalsDecide).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("approvals:decide"), "{text}");
        assert!(text.contains("approver"), "{text}");
        assert!(text.contains("role agent"), "{text}");
        assert!(caller.require(Scope::LeadsWrite).is_ok());
    }
}
