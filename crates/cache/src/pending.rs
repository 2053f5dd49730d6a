//! Invalidations that could not reach Redis, kept until they are replayed.
//!
//! When `invalidate` gets no answer from Redis, Redis may still hold the old
//! value (it was unreachable, not emptied) and the other instances never
//! heard of the write. The key is kept here; the replayer (see
//! [`crate::replay`]) sends the invalidation again as soon as Redis answers.
//! Until then this instance treats L2 as a miss for the key, so it never
//! serves the value its own write was meant to remove.
//!
//! The set is bounded: past [`MAX_PENDING`] keys it forgets them and
//! remembers only that it overflowed; the replay then deletes every cached
//! context in Redis instead, and until that is done L2 is skipped for every
//! key.
//!
//! Each key carries the sequence number of its latest failure, so a replay
//! that raced with a newer failure of the same key does not clear it: the
//! newer write may have committed after the replayed `DEL` ran.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::local::Key;

/// At most this many keys are kept for replay (about 0.5 MiB); an outage
/// that misses more than this ends with a sweep of all cached contexts.
pub(crate) const MAX_PENDING: usize = 10_000;

/// What the replayer has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    /// Replay these invalidations; each key with its sequence number, to
    /// hand back to [`Pending::replayed`].
    Keys(Vec<(Key, u64)>),
    /// Delete every cached context and tell every instance to clear L1;
    /// then [`Pending::swept`] with this sequence number.
    Sweep(u64),
}

#[derive(Debug, Default)]
struct State {
    /// Each key with the sequence number of its latest failed invalidation.
    keys: HashMap<Key, u64>,
    /// While overflowed: the sequence number of the latest failure. Only a
    /// sweep that began after it may clear it.
    overflowed: Option<u64>,
    last: u64,
}

impl State {
    fn is_empty(&self) -> bool {
        self.overflowed.is_none() && self.keys.is_empty()
    }
}

/// The pending invalidations of one cache instance.
#[derive(Debug)]
pub(crate) struct Pending {
    state: Mutex<State>,
    /// `!state.is_empty()`, readable without the lock: every L1 miss asks,
    /// and nearly always the answer is "nothing pending".
    any: AtomicBool,
    wake: Notify,
    capacity: usize,
}

impl Default for Pending {
    fn default() -> Self {
        Self::with_capacity(MAX_PENDING)
    }
}

impl Pending {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            any: AtomicBool::new(false),
            wake: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `key` for replay, after its invalidation could not reach Redis.
    pub(crate) fn add(&self, key: Key) {
        let mut state = self.lock();
        state.last += 1;
        let sequence = state.last;
        if state.overflowed.is_some() {
            state.overflowed = Some(sequence);
        } else if state.keys.len() >= self.capacity && !state.keys.contains_key(&key) {
            state.keys = HashMap::new();
            state.overflowed = Some(sequence);
            tracing::warn!(
                capacity = self.capacity,
                "cache: too many invalidations could not reach Redis to replay them one by one; \
                 every cached context in Redis will be deleted when it answers again, and Redis \
                 is skipped until then"
            );
        } else {
            state.keys.insert(key, sequence);
        }
        // SeqCst, like the L1 generations: an invalidation queues its key and
        // then bumps the key's generation, and a filler that stamped after
        // that bump must see the key here (see `TwoTierCache::invalidate`).
        let had_work = self.any.swap(true, Ordering::SeqCst);
        drop(state);
        if !had_work {
            // Only on the first one: while the replayer is already retrying,
            // more failures must not make it retry faster.
            self.wake.notify_one();
        }
    }

    /// Whether anything waits for replay.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::SeqCst)
    }

    /// Whether L2 must not be used for `key`: Redis may still hold the value
    /// a pending invalidation was meant to delete.
    pub(crate) fn blocks_l2(&self, key: &Key) -> bool {
        if !self.any() {
            return false;
        }
        let state = self.lock();
        state.overflowed.is_some() || state.keys.contains_key(key)
    }

    /// What to replay next; `None` when nothing is pending.
    pub(crate) fn work(&self) -> Option<Work> {
        let state = self.lock();
        if let Some(sequence) = state.overflowed {
            return Some(Work::Sweep(sequence));
        }
        if state.keys.is_empty() {
            return None;
        }
        Some(Work::Keys(
            state.keys.iter().map(|(key, seq)| (*key, *seq)).collect(),
        ))
    }

    /// Forgets the keys whose invalidation reached Redis, unless one failed
    /// again since it was handed out.
    pub(crate) fn replayed(&self, done: &[(Key, u64)]) {
        let mut state = self.lock();
        for (key, sequence) in done {
            if state.keys.get(key) == Some(sequence) {
                state.keys.remove(key);
            }
        }
        self.any.store(!state.is_empty(), Ordering::SeqCst);
    }

    /// Ends the overflow after a sweep that began at `sequence`, unless an
    /// invalidation failed since.
    pub(crate) fn swept(&self, sequence: u64) {
        let mut state = self.lock();
        if state.overflowed == Some(sequence) {
            state.overflowed = None;
        }
        self.any.store(!state.is_empty(), Ordering::SeqCst);
    }

    /// How many keys wait, and whether the set overflowed; for logs.
    pub(crate) fn size(&self) -> (usize, bool) {
        let state = self.lock();
        (state.keys.len(), state.overflowed.is_some())
    }

    /// Wakes the replayer if anything is pending: Redis answers again.
    pub(crate) fn wake(&self) {
        if self.any() {
            self.wake.notify_one();
        }
    }

    /// Resolves after [`Pending::add`] found the set empty, or
    /// [`Pending::wake`] found it not.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use leadline_domain::{LeadId, TenantId};

    use super::*;

    fn key() -> Key {
        (TenantId::new(), LeadId::new())
    }

    #[test]
    fn keys_wait_until_replayed_and_block_l2_meanwhile() {
        let pending = Pending::with_capacity(10);
        let (a, b, other) = (key(), key(), key());
        assert!(!pending.any());
        assert_eq!(pending.work(), None);
        pending.add(a);
        pending.add(b);
        assert!(pending.any());
        assert!(pending.blocks_l2(&a) && pending.blocks_l2(&b));
        assert!(!pending.blocks_l2(&other), "other keys still use L2");
        let Some(Work::Keys(batch)) = pending.work() else {
            panic!("keys to replay");
        };
        assert_eq!(batch.len(), 2);
        pending.replayed(&batch);
        assert!(!pending.any());
        assert!(!pending.blocks_l2(&a));
        assert_eq!(pending.work(), None);
    }

    #[test]
    fn a_key_that_failed_again_during_its_replay_stays() {
        let pending = Pending::with_capacity(10);
        let (a, b) = (key(), key());
        pending.add(a);
        pending.add(b);
        let Some(Work::Keys(batch)) = pending.work() else {
            panic!("keys to replay");
        };
        pending.add(a);
        pending.replayed(&batch);
        assert!(
            pending.blocks_l2(&a),
            "a's newer failure is not replayed yet"
        );
        assert!(!pending.blocks_l2(&b));
        assert_eq!(pending.size(), (1, false));
    }

    #[test]
    fn overflow_forgets_keys_blocks_all_of_l2_and_needs_a_sweep() {
        let pending = Pending::with_capacity(2);
        let (a, b, c, other) = (key(), key(), key(), key());
        pending.add(a);
        pending.add(b);
        pending.add(a);
        assert_eq!(
            pending.size(),
            (2, false),
            "a key already kept costs nothing"
        );
        pending.add(c);
        assert_eq!(pending.size(), (0, true));
        assert!(pending.blocks_l2(&other), "every key skips L2");
        let Some(Work::Sweep(first)) = pending.work() else {
            panic!("a sweep");
        };
        // A failure during the sweep: the sweep may have passed its key.
        pending.add(a);
        pending.swept(first);
        let Some(Work::Sweep(second)) = pending.work() else {
            panic!("another sweep");
        };
        pending.swept(second);
        assert!(!pending.any());
        assert!(!pending.blocks_l2(&other));
        pending.add(a);
        assert_eq!(pending.size(), (1, false), "keys are kept again afterwards");
    }

    #[tokio::test]
    async fn only_the_first_failure_and_a_recovery_wake_the_replayer() {
        let pending = Pending::with_capacity(10);
        pending.wake();
        let woken = |pending: &Pending| {
            let notified = pending.woken();
            futures::FutureExt::now_or_never(notified).is_some()
        };
        assert!(!woken(&pending), "nothing pending, nothing to wake for");
        pending.add(key());
        pending.add(key());
        assert!(woken(&pending));
        assert!(!woken(&pending), "the second failure did not wake it again");
        pending.wake();
        assert!(woken(&pending));
    }
}
