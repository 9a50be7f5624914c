//! Recently seen active tokens, so that a validation with a right code does
//! not read the token's row before writing it.
//!
//! The cache is a *hint*, never an authority:
//! - a code is still accepted only by the store's conditional write
//!   (`counter <= n`, `last_step < n`, `state = 'active'`), which compares
//!   against the row as it is in the database, so a stale entry can never get
//!   a code accepted twice or a suspended, locked or revoked token used;
//! - only a *right* code is decided on an entry. Anything else (a code the
//!   entry calls wrong or spent, a write that changed no row) is decided
//!   again on the row read from the store, so a stale entry can never count
//!   a failure that the row would not count;
//! - only active tokens are held; a validation that wins its write replaces
//!   the entry with the row as written, any other outcome drops it, and
//!   entries older than the cache's time to live (by default
//!   [`DEFAULT_TTL`]) are not used;
//! - it holds at most `capacity` entries (a full shard drops an arbitrary
//!   one; once full, a token is admitted on its second sighting, not its
//!   first: see [`crate::admission`]), no secret in the clear (a token's
//!   secret stays sealed), and its `Debug` shows sizes only.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::admission::Doorkeeper;
use crate::ids::TokenId;
use crate::model::{Token, TokenState};

/// How long an entry may be used after it was read or written, unless
/// [`TokenCache::with_ttl`] says otherwise. The entry is a hint (see the
/// module's head), so its age bounds only how often a validation on a token
/// that another instance or an operator moved on wastes a write that changes
/// nothing. Ten minutes keeps the entries of tokens that come back within
/// minutes (a log-in, then an approval); it was 30 s, which measured the
/// same with a million tokens in use (docs/performance.md, "Nineteenth
/// machine": the gain there was the caches' size).
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Shards, so concurrent validations rarely wait on one lock.
const SHARDS: usize = 16;

/// One shard: tokens by ID, with when they were read or written, and the
/// admission of newcomers once it is full.
struct Shard {
    map: HashMap<TokenId, (Token, Instant)>,
    door: Doorkeeper,
}

/// Active tokens by ID. A capacity of 0 disables it.
pub struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    capacity: usize,
    ttl: Duration,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity >= SHARDS * 16 { SHARDS } else { 1 };
        let per_shard = capacity.div_ceil(shards);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        door: Doorkeeper::new(per_shard),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard,
            capacity,
            ttl: DEFAULT_TTL,
        }
    }

    /// The same cache with entries used for at most `ttl` after they were
    /// read or written (0: never used).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most entries it holds, as asked of [`TokenCache::new`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long an entry is used after it was read or written.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The shard of `id`, locked, and the hash of `id`.
    fn shard(&self, id: &TokenId) -> (MutexGuard<'_, Shard>, u64) {
        let hash = self.hasher.hash_one(id);
        let i = (hash as usize) % self.shards.len();
        // A panic under the lock leaves at worst a missing entry: go on.
        let shard = self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (shard, hash)
    }

    /// The entry of an active token, if fresh.
    pub fn get(&self, id: &TokenId) -> Option<Token> {
        if self.per_shard == 0 {
            return None;
        }
        let (mut shard, _) = self.shard(id);
        match shard.map.get(id) {
            Some((token, at)) if at.elapsed() < self.ttl => Some(token.clone()),
            Some(_) => {
                shard.map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Remembers `token` as read or written now; a token that is not active
    /// is forgotten instead.
    pub fn put(&self, token: &Token) {
        if self.per_shard == 0 {
            return;
        }
        let (mut shard, hash) = self.shard(&token.token_id);
        if token.state != TokenState::Active {
            shard.map.remove(&token.token_id);
            return;
        }
        let has_room = shard.map.len() < self.per_shard || shard.map.contains_key(&token.token_id);
        if !shard.door.admits(has_room, hash) {
            return;
        }
        if !has_room {
            if let Some(victim) = shard.map.keys().next().cloned() {
                shard.map.remove(&victim);
            }
        }
        shard
            .map
            .insert(token.token_id.clone(), (token.clone(), Instant::now()));
    }

    pub fn forget(&self, id: &TokenId) {
        if self.per_shard > 0 {
            self.shard(id).0.map.remove(id);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use ichido_otp::{Algorithm, Digits};

    use super::*;
    use crate::model::TokenKind;

    fn token(state: TokenState) -> Token {
        Token {
            token_id: TokenId::random(),
            contract_no: "c".into(),
            user_id: "u".into(),
            kind: TokenKind::Event,
            state,
            algorithm: Algorithm::Sha1,
            digits: Digits::SIX,
            period: 30,
            counter: 0,
            last_step: None,
            time_offset: 0,
            failures: 0,
            sealed_secret: vec![1, 2, 3],
            created_at: 0,
            activated_at: None,
            grace_until: None,
            updated_at: 0,
        }
    }

    #[test]
    fn only_active_tokens_are_held_and_forget_drops_them() {
        let cache = TokenCache::new(8);
        let active = token(TokenState::Active);
        cache.put(&active);
        assert_eq!(cache.get(&active.token_id).unwrap().counter, 0);
        let mut locked = active.clone();
        locked.state = TokenState::Locked;
        cache.put(&locked);
        assert!(
            cache.get(&active.token_id).is_none(),
            "a locked token is dropped"
        );
        cache.put(&active);
        cache.forget(&active.token_id);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_admits_a_newcomer_on_its_second_sighting() {
        let cache = TokenCache::new(2);
        let old: Vec<Token> = (0..2).map(|_| token(TokenState::Active)).collect();
        for t in &old {
            cache.put(t);
        }
        let newcomer = token(TokenState::Active);
        cache.put(&newcomer);
        assert!(
            cache.get(&newcomer.token_id).is_none(),
            "kept on first sight"
        );
        assert!(old.iter().all(|t| cache.get(&t.token_id).is_some()));
        cache.put(&newcomer);
        assert!(
            cache.get(&newcomer.token_id).is_some(),
            "not kept on second sight"
        );
        assert_eq!(cache.len(), 2, "the capacity is a hard bound");
        // An entry already held is updated in place, full or not.
        let mut moved = newcomer.clone();
        moved.counter = 5;
        cache.put(&moved);
        assert_eq!(cache.get(&newcomer.token_id).unwrap().counter, 5);
    }

    #[test]
    fn an_entry_is_used_only_within_the_time_to_live() {
        let t = token(TokenState::Active);
        let fresh = TokenCache::new(8);
        assert_eq!(fresh.ttl(), DEFAULT_TTL);
        fresh.put(&t);
        assert!(fresh.get(&t.token_id).is_some());

        let stale = TokenCache::new(8).with_ttl(Duration::from_millis(30));
        stale.put(&t);
        assert!(stale.get(&t.token_id).is_some(), "used while fresh");
        std::thread::sleep(Duration::from_millis(60));
        assert!(stale.get(&t.token_id).is_none(), "not used once older");
        assert!(stale.is_empty(), "and dropped when found old");

        let never = TokenCache::new(8).with_ttl(Duration::ZERO);
        never.put(&t);
        assert!(never.get(&t.token_id).is_none());
        assert_eq!(never.capacity(), 8);
    }

    #[test]
    fn a_capacity_of_zero_holds_nothing() {
        let cache = TokenCache::new(0);
        let t = token(TokenState::Active);
        cache.put(&t);
        cache.put(&t);
        assert!(cache.get(&t.token_id).is_none());
        assert!(cache.is_empty());
    }
}
