//! Admission to a full cache: a token gets in on its second sighting, not
//! its first (the "doorkeeper" of TinyLFU).
//!
//! With more tokens in use than a cache holds (a bank's million customers,
//! each logging in once a day or so), nearly every look-up misses, and
//! inserting each newcomer evicts an entry that was just as likely to come
//! back: the insert and the eviction touch cold memory twice and keep
//! nothing useful. A newcomer is therefore only remembered as seen (one bit),
//! and a token seen again before the bits are cleared is admitted. While a
//! cache has room, everything is admitted at once.
//!
//! The bits: 16 per entry of the cache (a second sighting is missed only
//! when the bits were cleared in between), cleared once as many first
//! sightings as the cache's capacity were counted, so a set bit stands for a
//! sighting within about the time the cache turns over. A bit set by another
//! token (a hash collision) admits a newcomer early: at most about one in
//! sixteen, and harmless (the cache then works as it did without admission).

/// The bits of one shard of a cache; kept under the shard's lock.
pub(crate) struct Doorkeeper {
    bits: Box<[u64]>,
    /// Bit index mask (the number of bits, a power of two, minus one).
    mask: u64,
    /// First sightings since the bits were last cleared.
    fresh: usize,
    /// Clear the bits after this many first sightings.
    reset_after: usize,
}

impl Doorkeeper {
    /// For a shard of `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let bits = (capacity.max(1) * 16).next_power_of_two().max(64);
        Self {
            bits: vec![0; bits / 64].into_boxed_slice(),
            mask: bits as u64 - 1,
            fresh: 0,
            reset_after: capacity.max(1),
        }
    }

    /// Whether a token not held by a cache should be kept: always while
    /// the cache `has_room`, else on its second sighting (see
    /// [`Self::seen_before`]).
    pub(crate) fn admits(&mut self, has_room: bool, hash: u64) -> bool {
        has_room || self.seen_before(hash)
    }

    /// Whether `hash` was seen since the bits were last cleared; it is
    /// marked as seen either way. `hash` should be a keyed hash of the
    /// token (the caches' own); its high half picks the bit, so that a
    /// shard chosen by the low bits still uses all of its bits.
    pub(crate) fn seen_before(&mut self, hash: u64) -> bool {
        let bit = ((hash >> 32) ^ hash.rotate_left(17)) & self.mask;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if self.bits[word] & mask != 0 {
            return true;
        }
        self.fresh += 1;
        if self.fresh >= self.reset_after {
            self.bits.fill(0);
            self.fresh = 0;
        } else {
            self.bits[word] |= mask;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sighting_is_admitted_and_a_first_is_not() {
        use std::hash::BuildHasher;
        let keyed = std::collections::hash_map::RandomState::new();
        let mut door = Doorkeeper::new(1000);
        let hashes: Vec<u64> = (0..500u64).map(|i| keyed.hash_one(i)).collect();
        let early = hashes.iter().filter(|&&h| door.seen_before(h)).count();
        // 16,384 bits for 500 hashes: about 8 collisions expected.
        assert!(early <= 25, "{early} of 500 newcomers admitted at once");
        assert!(hashes.iter().all(|&h| door.seen_before(h)));
    }

    #[test]
    fn the_bits_are_cleared_as_the_cache_would_turn_over() {
        let mut door = Doorkeeper::new(100);
        let hash = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert!(!door.seen_before(hash(0)));
        assert!(door.seen_before(hash(0)));
        // A hundred first sightings clear the bits: the old one is a
        // newcomer again.
        let mut n = 1;
        while door.fresh != 0 {
            door.seen_before(hash(n));
            n += 1;
            assert!(n <= 200, "the bits were not cleared");
        }
        assert!(!door.seen_before(hash(0)));
    }

    #[test]
    fn a_tiny_cache_still_has_bits() {
        let mut door = Doorkeeper::new(0);
        assert!(!door.seen_before(7));
        assert!(!door.seen_before(7), "a capacity of one clears at once");
        let mut door = Doorkeeper::new(2);
        assert!(!door.seen_before(7));
        assert!(door.seen_before(7));
    }
}
