//! Single-flight: one filler per key, however many callers wait.
//!
//! Why not moka's `entry().or_insert_with`: the port wants a value loaded
//! during an invalidation returned but not kept, and wants each error handed
//! back as the loader's typed error; moka's initialisers always insert and
//! share errors only as `Arc<E>`. So flights live in a small map of their
//! own, each entry removed when its flight ends (no growth past the keys in
//! flight).
//!
//! A caller joins a flight only if no invalidation of the key happened since
//! the flight started (same [`Stamp`]); otherwise it starts a new one, so a
//! read that begins after a write never gets a value loaded before it. If a
//! leader is cancelled (its caller dropped the future), its followers see the
//! channel close and retry, one of them becoming the new leader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use leadline_ports::{ContextJson, GetLeadError, Unavailable};
use tokio::sync::watch;

use crate::local::{Key, Stamp};

/// What a flight hands to every caller.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) value: ContextJson,
    /// Served from a copy past its freshness because the loader was
    /// unavailable.
    pub(crate) stale: bool,
}

/// A loader error in a form every follower can have a copy of.
#[derive(Debug, Clone)]
pub(crate) enum SharedError {
    NotFound,
    Unavailable(String),
    /// Followers get the cause chain as text; the leader keeps the original.
    Unknown(Arc<str>),
}

impl SharedError {
    pub(crate) fn of(error: &GetLeadError) -> Self {
        match error {
            GetLeadError::NotFound => Self::NotFound,
            GetLeadError::Unavailable(Unavailable(why)) => Self::Unavailable(why.clone()),
            GetLeadError::Unknown(cause) => Self::Unknown(format!("{cause:#}").into()),
        }
    }

    pub(crate) fn to_error(&self) -> GetLeadError {
        match self {
            Self::NotFound => GetLeadError::NotFound,
            Self::Unavailable(why) => GetLeadError::Unavailable(Unavailable(why.clone())),
            Self::Unknown(cause) => GetLeadError::Unknown(anyhow::anyhow!("{cause}")),
        }
    }
}

pub(crate) type Outcome = Result<Served, SharedError>;
type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Debug)]
struct Flight {
    id: u64,
    stamp: Stamp,
    outcome: Slot,
}

/// The flights in progress.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Key, Flight>>,
    next_id: AtomicU64,
}

/// What a caller does for its key.
pub(crate) enum Role<'a> {
    /// Fill the key, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader's outcome.
    Follower(Slot),
}

/// The right and duty to fill a key. Dropping it ends the flight, with or
/// without an outcome.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Key,
    id: u64,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Flights {
    pub(crate) fn join(&self, key: Key, stamp: Stamp) -> Role<'_> {
        // A poisoned lock only means another caller panicked while holding
        // it; the map is still consistent (every change is one call).
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(&key)
            && flight.stamp == stamp
        {
            return Role::Follower(flight.outcome.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        // Replaces a flight that started before an invalidation: its callers
        // keep waiting on it, new ones wait on this one.
        map.insert(
            key,
            Flight {
                id,
                stamp,
                outcome: receiver,
            },
        );
        Role::Leader(Leader {
            flights: self,
            key,
            id,
            outcome: sender,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Leader<'_> {
    /// Hands `outcome` to every follower and ends the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only our own flight: a newer one may have replaced it.
        if map
            .get(&self.key)
            .is_some_and(|flight| flight.id == self.id)
        {
            map.remove(&self.key);
        }
    }
}

/// The leader's outcome, or `None` if the leader went away without one.
pub(crate) async fn wait(mut slot: Slot) -> Option<Outcome> {
    slot.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|outcome| outcome.clone())
}

#[cfg(test)]
mod tests {
    use leadline_domain::{LeadId, TenantId};

    use super::*;
    use crate::local::Local;

    fn stamps() -> (Local, Key) {
        let stats = Arc::default();
        let local = Local::new(
            1 << 20,
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
            &stats,
        );
        (local, (TenantId::new(), LeadId::new()))
    }

    #[tokio::test]
    async fn followers_join_only_a_flight_of_the_same_generation() {
        let (local, key) = stamps();
        let flights = Flights::default();
        let stamp = local.stamp(&key);
        let Role::Leader(first) = flights.join(key, stamp) else {
            panic!("the first caller leads");
        };
        assert!(matches!(flights.join(key, stamp), Role::Follower(_)));
        local.drop_key(&key).await;
        let Role::Leader(second) = flights.join(key, local.stamp(&key)) else {
            panic!("after an invalidation a new flight starts");
        };
        drop(first);
        assert_eq!(
            flights.len(),
            1,
            "the old leader leaves the new flight alone"
        );
        drop(second);
        assert_eq!(flights.len(), 0, "nothing stays behind");
    }

    #[tokio::test]
    async fn followers_of_a_cancelled_leader_are_released() {
        let (local, key) = stamps();
        let flights = Flights::default();
        let stamp = local.stamp(&key);
        let leader = flights.join(key, stamp);
        let Role::Follower(slot) = flights.join(key, stamp) else {
            panic!("second caller follows");
        };
        drop(leader);
        assert!(wait(slot).await.is_none());
    }

    #[test]
    fn errors_are_shared_with_their_kind() {
        let unknown = GetLeadError::Unknown(anyhow::anyhow!("inner").context("outer"));
        let copied = SharedError::of(&unknown).to_error();
        assert!(matches!(&copied, GetLeadError::Unknown(e) if e.to_string() == "outer: inner"));
        let unavailable = GetLeadError::Unavailable(Unavailable("down".to_owned()));
        assert!(matches!(
            SharedError::of(&unavailable).to_error(),
            GetLeadError::Unavailable(Unavailable(why)) if why == "down"
        ));
        assert!(matches!(
            SharedError::of(&GetLeadError::NotFound).to_error(),
            GetLeadError::NotFound
        ));
    }
}
