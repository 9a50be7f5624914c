//! OTP keys: the HMAC key schedule is derived once in `Key::new`, cloned per code, and wiped on drop (RFC 4226 HOTP, RFC 6238 TOTP).

use std::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::{Algorithm, Code, Digits, OtpError};

/// The precomputed inner/outer HMAC states for one hash.
#[derive(Clone)]
enum Schedule {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

/// An OTP secret ready for use: the HMAC key schedule (the hashed inner and outer
/// padded key blocks) is computed once here, so generating a code costs exactly one
/// state copy plus two compressions, with no key derivation and no allocation.
///
/// The raw secret bytes are not retained. `Debug` never shows key material.
#[derive(Clone)]
pub struct Key {
    schedule: Schedule,
}

impl Key {
    /// Derives the HMAC key schedule from `secret`. An empty secret is refused.
    pub fn new(algorithm: Algorithm, secret: &[u8]) -> Result<Key, OtpError> {
        if secret.is_empty() {
            return Err(OtpError::EmptySecret);
        }
        let schedule = match algorithm {
            Algorithm::Sha1 => Schedule::Sha1(init(secret)?),
            Algorithm::Sha256 => Schedule::Sha256(init(secret)?),
            Algorithm::Sha512 => Schedule::Sha512(init(secret)?),
        };
        Ok(Key { schedule })
    }

    /// The key's hash algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.schedule {
            Schedule::Sha1(_) => Algorithm::Sha1,
            Schedule::Sha256(_) => Algorithm::Sha256,
            Schedule::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The 31-bit dynamically truncated HMAC of `counter` (RFC 4226 §5.3, before
    /// the reduction modulo 10^digits).
    #[must_use]
    pub fn hotp_truncated(&self, counter: u64) -> u32 {
        match &self.schedule {
            Schedule::Sha1(mac) => truncated_mac(mac, counter),
            Schedule::Sha256(mac) => truncated_mac(mac, counter),
            Schedule::Sha512(mac) => truncated_mac(mac, counter),
        }
    }

    /// HOTP code for `counter` (RFC 4226 §5.3).
    #[must_use]
    pub fn hotp(&self, counter: u64, digits: Digits) -> Code {
        Code::from_truncated(self.hotp_truncated(counter), digits)
    }

    /// The first counter that `counters` yields whose code (of `code`'s length)
    /// is `code`, each compared in constant time; the rest of `counters` is
    /// left for a next call. The schedule's algorithm is matched once, not per
    /// counter, and the code's length once: each candidate costs one HMAC, the
    /// truncation and one comparison.
    pub(crate) fn find_counter(
        &self,
        counters: impl Iterator<Item = u64>,
        code: &Code,
    ) -> Option<u64> {
        match &self.schedule {
            Schedule::Sha1(mac) => find_in(mac, counters, code),
            Schedule::Sha256(mac) => find_in(mac, counters, code),
            Schedule::Sha512(mac) => find_in(mac, counters, code),
        }
    }

    /// TOTP code at `unix_secs` with time step `period` seconds and T0 = 0 (RFC 6238
    /// §4.2). A `period` of 0 is treated as 1 so this never fails.
    #[must_use]
    pub fn totp(&self, unix_secs: u64, period: u64, digits: Digits) -> Code {
        self.hotp(time_step(unix_secs, period), digits)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The TOTP time step of `unix_secs`: `unix_secs / period` with T0 = 0; a `period`
/// of 0 is treated as 1.
#[must_use]
pub fn time_step(unix_secs: u64, period: u64) -> u64 {
    unix_secs / period.max(1)
}

/// Every state a `Key` holds wipes itself when dropped: an `Hmac` is its inner
/// and outer hash cores, and with the `zeroize` feature of sha1/sha2 each core
/// zeroizes its chaining value in `Drop` (the workspace enables that feature).
impl zeroize::ZeroizeOnDrop for Key {}

fn init<M: Mac + hmac::digest::KeyInit>(secret: &[u8]) -> Result<M, OtpError> {
    <M as hmac::digest::KeyInit>::new_from_slice(secret).map_err(|_| OtpError::InvalidKey)
}

/// One HMAC over the big-endian counter from a cloned precomputed state, then
/// dynamic truncation.
#[inline]
fn truncated_mac<M: Mac + Clone>(schedule: &M, counter: u64) -> u32 {
    let mut mac = schedule.clone();
    mac.update(&counter.to_be_bytes());
    dynamic_truncation(&mac.finalize().into_bytes())
}

/// See [`Key::find_counter`].
#[inline]
fn find_in<M: Mac + Clone>(
    schedule: &M,
    counters: impl Iterator<Item = u64>,
    code: &Code,
) -> Option<u64> {
    let modulus = code.digits().modulus();
    let wanted = code.value();
    for counter in counters {
        let value = truncated_mac(schedule, counter) % modulus;
        if bool::from(value.ct_eq(&wanted)) {
            return Some(counter);
        }
    }
    None
}

/// RFC 4226 §5.3 DT: the low nibble of the last byte selects 4 bytes, whose top bit
/// is masked off. Every supported MAC is at least 20 bytes long, so the selected
/// range (at most bytes 15..19) always exists; the fallback is unreachable.
#[inline]
fn dynamic_truncation(mac: &[u8]) -> u32 {
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    match mac.get(offset..offset + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rfc4226_section_5_4_example() {
        let mac = [
            0x1f, 0x86, 0x98, 0x69, 0x0e, 0x02, 0xca, 0x16, 0x61, 0x85, 0x50, 0xef, 0x7f, 0x19,
            0xda, 0x8e, 0x94, 0x5b, 0x55, 0x5a,
        ];
        assert_eq!(dynamic_truncation(&mac), 0x50ef_7f19);
        assert_eq!(dynamic_truncation(&mac) % 1_000_000, 872_921);
    }

    #[test]
    fn empty_secret_refused_and_debug_redacts() {
        assert_eq!(
            Key::new(Algorithm::Sha1, b"").unwrap_err(),
            OtpError::EmptySecret
        );
        let key = Key::new(Algorithm::Sha256, b"super secret").unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("redacted") && dbg.contains("Sha256"), "{dbg}");
        assert!(!dbg.contains("super"));
        assert_eq!(key.algorithm(), Algorithm::Sha256);
    }

    #[test]
    fn time_step_edges() {
        assert_eq!(time_step(59, 30), 1);
        assert_eq!(time_step(59, 0), 59);
        assert_eq!(time_step(u64::MAX, 1), u64::MAX);
        assert_eq!(time_step(u64::MAX, u64::MAX), 1);
        let key = Key::new(Algorithm::Sha1, b"k").unwrap();
        assert_eq!(key.totp(59, 0, Digits::SIX), key.hotp(59, Digits::SIX));
    }
}
