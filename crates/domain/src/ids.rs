//! Typed identifiers. Every id is a UUID v7, so ids sort by creation time,
//! which keeps B-tree inserts append-mostly and gives keyset pagination a
//! stable, meaningful order for free.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id (expected a UUID)")]
pub struct ParseIdError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (as read back from storage).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError)
            }
        }
    };
}

id_type!(
    /// Identifies a tenant: the unit of isolation. Every tenant-scoped row carries it.
    TenantId
);
id_type!(
    /// Identifies an agent within a tenant.
    AgentId
);
id_type!(
    /// Identifies a lead within a tenant.
    LeadId
);
id_type!(
    /// Identifies a webhook endpoint within a tenant.
    WebhookId
);
id_type!(
    /// Identifies an API key within a tenant.
    ApiKeyId
);
id_type!(
    /// Identifies an approval within a tenant.
    ApprovalId
);
id_type!(
    /// Identifies a timeline event within a tenant.
    EventId
);
id_type!(
    /// Identifies an import run within a tenant.
    ImportId
);
id_type!(
    /// Identifies a delivery (an outbox row: one message to deliver) within a tenant.
    DeliveryId
);
id_type!(
    /// Identifies a user (a person who signs in to the console) within a tenant.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered() {
        let a = LeadId::new();
        let b = LeadId::new();
        assert!(a < b, "v7 ids created later must sort later");
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let id = TenantId::new();
        assert_eq!(id.to_string().parse::<TenantId>(), Ok(id));
        assert_eq!("not-a-uuid".parse::<TenantId>(), Err(ParseIdError));
    }
}
