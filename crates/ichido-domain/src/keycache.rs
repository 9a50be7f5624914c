//! A bounded cache of opened token keys, so that a validation does not open
//! the sealed secret (AES-256-GCM) and derive the HMAC key schedule each time.
//!
//! Invariants:
//! - an entry is keyed by token ID *and* the exact sealed-secret bytes it was
//!   opened from: a token whose secret was re-sealed, replaced or destroyed
//!   (revocation empties it) never gets the old key back — the entry is
//!   replaced on the next use;
//! - at most `capacity` entries are held (second-chance eviction per shard);
//!   once a shard is full, a token's key is admitted on its second use, not
//!   its first (see [`crate::admission`]): with more tokens in use than the
//!   cache holds, a key opened for a token that comes back once a day is
//!   used and dropped, and evicts nothing;
//! - a value leaves the cache by being dropped: [`ichido_otp::Key`] wipes its
//!   key schedule on drop, so evicted, replaced and forgotten keys are zeroized
//!   once the last in-flight user lets go of them;
//! - `Debug` shows sizes only, never a key or a token ID.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::admission::Doorkeeper;
use crate::ids::TokenId;

/// Default number of cached keys: about 64 thousand tokens in use, some tens
/// of megabytes at most.
pub const DEFAULT_KEY_CACHE_CAPACITY: usize = 65_536;

/// Shards, so concurrent validations rarely wait on one lock.
const SHARDS: usize = 16;

struct Slot<V> {
    sealed: Box<[u8]>,
    value: Arc<V>,
    /// Used since the eviction hand last passed (second chance).
    referenced: bool,
    /// Which ring entry is this slot's (older ones are skipped).
    generation: u64,
}

struct Shard<V> {
    map: HashMap<TokenId, Slot<V>>,
    /// Insertion order for the eviction hand: (token, generation).
    ring: VecDeque<(TokenId, u64)>,
    capacity: usize,
    next_generation: u64,
    /// Admission once the shard is full.
    door: Doorkeeper,
}

impl<V> Shard<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            ring: VecDeque::new(),
            capacity,
            next_generation: 0,
            door: Doorkeeper::new(capacity),
        }
    }

    /// Whether a value opened for `id` should be kept: always while there
    /// is room or when it replaces `id`'s stale entry, else on the token's
    /// second sighting (`hash` is the cache's hash of `id`).
    fn admits(&mut self, id: &TokenId, hash: u64) -> bool {
        let has_room = self.map.len() < self.capacity || self.map.contains_key(id);
        self.door.admits(has_room, hash)
    }

    /// Evicts until there is room for one more entry.
    fn make_room(&mut self) {
        while self.map.len() >= self.capacity {
            let Some((id, generation)) = self.ring.pop_front() else {
                return;
            };
            let Some(slot) = self.map.get_mut(&id) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back((id, generation));
            } else {
                // Dropping the value zeroizes it (see the module invariants).
                self.map.remove(&id);
            }
        }
    }

    fn insert(&mut self, id: &TokenId, sealed: &[u8], value: Arc<V>) {
        if !self.map.contains_key(id) {
            self.make_room();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = Slot {
            sealed: sealed.into(),
            value,
            referenced: false,
            generation,
        };
        // A replaced slot (stale secret) drops its old value here.
        self.map.insert(id.clone(), slot);
        self.ring.push_back((id.clone(), generation));
        // Ring entries of replaced or forgotten slots are skipped by the hand;
        // drop them in bulk before they outnumber the live ones.
        if self.ring.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.ring
                .retain(|(id, g)| map.get(id).is_some_and(|s| s.generation == *g));
        }
    }
}

/// Keys opened from sealed secrets, by token ID and sealed bytes. A capacity
/// of 0 disables the cache: every lookup opens the secret again.
pub struct KeyCache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    capacity: usize,
}

impl<V> KeyCache<V> {
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity >= SHARDS * 16 { SHARDS } else { 1 };
        let per_shard = capacity.div_ceil(shards);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.shard(i).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash of `id` and the shard it picks.
    fn shard_of(&self, id: &TokenId) -> (u64, usize) {
        let hash = self.hasher.hash_one(id);
        (hash, (hash as usize) % self.shards.len())
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard<V>> {
        // A panic while holding the lock cannot leave a shard inconsistent in a
        // way that matters (worst case: a missing entry), so go on.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value for `id` opened from exactly `sealed`, else `open()`'s result
    /// (then cached, if admitted: see the module's invariants). `open` runs
    /// without any lock held.
    pub fn get_or_open<E>(
        &self,
        id: &TokenId,
        sealed: &[u8],
        open: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if self.capacity == 0 {
            return open().map(Arc::new);
        }
        let (hash, i) = self.shard_of(id);
        {
            let mut shard = self.shard(i);
            if let Some(slot) = shard.map.get_mut(id) {
                if *slot.sealed == *sealed {
                    slot.referenced = true;
                    return Ok(Arc::clone(&slot.value));
                }
            }
        }
        let value = Arc::new(open()?);
        let mut shard = self.shard(i);
        if shard.admits(id, hash) {
            shard.insert(id, sealed, Arc::clone(&value));
        }
        Ok(value)
    }

    /// Drops the entry of `id` (e.g. when its token is revoked).
    pub fn forget(&self, id: &TokenId) {
        let (_, i) = self.shard_of(id);
        let removed = self.shard(i).map.remove(id);
        drop(removed);
    }
}

impl<V> fmt::Debug for KeyCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A value that counts how many of its kind were dropped.
    struct Probe {
        n: u32,
        dropped: Arc<AtomicUsize>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ids(n: usize) -> Vec<TokenId> {
        let mut v: Vec<TokenId> = Vec::new();
        while v.len() < n {
            let id = TokenId::random();
            if !v.contains(&id) {
                v.push(id);
            }
        }
        v
    }

    fn probe(n: u32, dropped: &Arc<AtomicUsize>) -> Result<Probe, Infallible> {
        Ok(Probe {
            n,
            dropped: Arc::clone(dropped),
        })
    }

    #[test]
    fn hits_do_not_open_again() {
        let cache = KeyCache::new(8);
        let dropped = Arc::new(AtomicUsize::new(0));
        let id = TokenId::random();
        let a = cache
            .get_or_open(&id, b"sealed", || probe(1, &dropped))
            .unwrap();
        let b = cache
            .get_or_open(&id, b"sealed", || -> Result<Probe, Infallible> {
                unreachable!("a hit must not open the secret again")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn capacity_is_a_hard_bound_and_evicted_values_are_dropped() {
        let cache = KeyCache::new(4);
        let dropped = Arc::new(AtomicUsize::new(0));
        let ids = ids(10);
        for (n, id) in ids.iter().enumerate() {
            let v = cache
                .get_or_open(id, b"s", || probe(n as u32, &dropped))
                .unwrap();
            drop(v);
            assert!(
                cache.len() <= 4,
                "len {} after {} inserts",
                cache.len(),
                n + 1
            );
        }
        assert_eq!(cache.len(), 4);
        // Six entries left the cache, and with no one holding them, were dropped
        // (an `ichido_otp::Key` wipes itself when dropped).
        assert_eq!(dropped.load(Ordering::SeqCst), 6);
        drop(cache);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            10,
            "dropping the cache drops every value"
        );
    }

    #[test]
    fn recently_used_entries_get_a_second_chance() {
        let cache = KeyCache::new(3);
        let dropped = Arc::new(AtomicUsize::new(0));
        let ids = ids(4);
        for (n, id) in ids[..3].iter().enumerate() {
            cache
                .get_or_open(id, b"s", || probe(n as u32, &dropped))
                .unwrap();
        }
        // Use the oldest entry again: the hand passes it by and evicts the next.
        cache
            .get_or_open(&ids[0], b"s", || probe(99, &dropped))
            .unwrap();
        // A newcomer to a full cache is admitted on its second use.
        for n in [3, 4] {
            cache
                .get_or_open(&ids[3], b"s", || probe(n, &dropped))
                .unwrap();
        }
        let kept = cache
            .get_or_open(&ids[0], b"s", || probe(100, &dropped))
            .unwrap();
        assert_eq!(kept.n, 0, "the used entry stayed");
        let reopened = cache
            .get_or_open(&ids[1], b"s", || probe(101, &dropped))
            .unwrap();
        assert_eq!(reopened.n, 101, "the unused one was evicted");
    }

    #[test]
    fn a_full_cache_admits_a_newcomer_on_its_second_use() {
        let cache = KeyCache::new(2);
        let dropped = Arc::new(AtomicUsize::new(0));
        let ids = ids(3);
        for (n, id) in ids[..2].iter().enumerate() {
            cache
                .get_or_open(id, b"s", || probe(n as u32, &dropped))
                .unwrap();
        }
        // First use: opened, handed out, not kept, nothing evicted.
        let once = cache
            .get_or_open(&ids[2], b"s", || probe(20, &dropped))
            .unwrap();
        assert_eq!(once.n, 20);
        drop(once);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the newcomer's key wiped"
        );
        assert_eq!(cache.len(), 2);
        for (n, id) in ids[..2].iter().enumerate() {
            let kept = cache.get_or_open(id, b"s", || probe(99, &dropped)).unwrap();
            assert_eq!(kept.n, n as u32, "an old entry was evicted for a newcomer");
        }
        // Second use: kept, in place of an old entry.
        cache
            .get_or_open(&ids[2], b"s", || probe(21, &dropped))
            .unwrap();
        let hit = cache
            .get_or_open(&ids[2], b"s", || probe(22, &dropped))
            .unwrap();
        assert_eq!(hit.n, 21);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_changed_sealed_secret_is_never_served_the_old_key() {
        let cache = KeyCache::new(8);
        let dropped = Arc::new(AtomicUsize::new(0));
        let id = TokenId::random();
        let old = cache
            .get_or_open(&id, b"sealed-v1", || probe(1, &dropped))
            .unwrap();
        assert_eq!(old.n, 1);
        drop(old);
        let new = cache
            .get_or_open(&id, b"sealed-v2", || probe(2, &dropped))
            .unwrap();
        assert_eq!(new.n, 2, "a re-sealed secret is opened again");
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the stale key was dropped"
        );
        // A revoked token's destroyed (empty) secret does not match either.
        let gone: Result<Arc<Probe>, &str> = cache.get_or_open(&id, b"", || Err("cannot open"));
        assert!(gone.is_err());
        assert_eq!(
            cache
                .get_or_open(&id, b"sealed-v2", || probe(3, &dropped))
                .unwrap()
                .n,
            2
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn forget_drops_the_entry_and_churn_keeps_the_ring_bounded() {
        let cache = KeyCache::new(2);
        let dropped = Arc::new(AtomicUsize::new(0));
        let id = TokenId::random();
        for n in 0..1000 {
            cache.get_or_open(&id, b"s", || probe(n, &dropped)).unwrap();
            cache.forget(&id);
        }
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1000,
            "every forgotten value dropped"
        );
        assert!(cache.is_empty());
        let ring = cache.shard(0).ring.len();
        assert!(ring <= 5, "ring holds {ring} stale entries");
    }

    #[test]
    fn disabled_cache_always_opens_and_holds_nothing() {
        let cache = KeyCache::new(0);
        let dropped = Arc::new(AtomicUsize::new(0));
        let id = TokenId::random();
        let a = cache.get_or_open(&id, b"s", || probe(1, &dropped)).unwrap();
        let b = cache.get_or_open(&id, b"s", || probe(2, &dropped)).unwrap();
        assert_eq!((a.n, b.n, cache.len()), (1, 2, 0));
    }

    #[test]
    fn debug_shows_no_key_and_keys_zeroize_on_drop() {
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<ichido_otp::Key>();
        let cache = KeyCache::new(4);
        let id = TokenId::random();
        let key =
            ichido_otp::Key::new(ichido_otp::Algorithm::Sha1, b"12345678901234567890").unwrap();
        cache
            .get_or_open(&id, b"s", || Ok::<_, Infallible>(key))
            .unwrap();
        let dbg = format!("{cache:?}");
        assert_eq!(dbg, "KeyCache { capacity: 4, len: 1, .. }");
        assert!(!dbg.contains(id.as_str()));
    }
}
