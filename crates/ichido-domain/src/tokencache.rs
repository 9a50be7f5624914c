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
//!   entries older than [`TTL`] are not used;
//! - it holds at most `capacity` entries (a full shard drops an arbitrary
//!   one), no secret in the clear (a token's secret stays sealed), and its
//!   `Debug` shows sizes only.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ids::TokenId;
use crate::model::{Token, TokenState};

/// How long an entry may be used after it was read or written.
pub const TTL: Duration = Duration::from_secs(30);

/// Shards, so concurrent validations rarely wait on one lock.
const SHARDS: usize = 16;

/// One shard: tokens by ID, with when they were read or written.
type Shard = HashMap<TokenId, (Token, Instant)>;

/// Active tokens by ID. A capacity of 0 disables it.
pub struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity >= SHARDS * 16 { SHARDS } else { 1 };
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(shards),
        }
    }

    fn shard(&self, id: &TokenId) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(id) as usize) % self.shards.len();
        // A panic under the lock leaves at worst a missing entry: go on.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry of an active token, if fresh.
    pub fn get(&self, id: &TokenId) -> Option<Token> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(id);
        match shard.get(id) {
            Some((token, at)) if at.elapsed() < TTL => Some(token.clone()),
            Some(_) => {
                shard.remove(id);
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
        let mut shard = self.shard(&token.token_id);
        if token.state != TokenState::Active {
            shard.remove(&token.token_id);
            return;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&token.token_id) {
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(token.token_id.clone(), (token.clone(), Instant::now()));
    }

    pub fn forget(&self, id: &TokenId) {
        if self.per_shard > 0 {
            self.shard(id).remove(id);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
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
            .field("capacity", &(self.per_shard * self.shards.len()))
            .finish()
    }
}
