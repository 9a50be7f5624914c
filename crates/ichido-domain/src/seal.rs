//! Token secrets at rest: AES-256-GCM under the master key, the token ID as
//! associated data, so a sealed secret cannot be moved to another token.
//! Layout: `0x01 || nonce (12) || ciphertext || tag (16)`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use zeroize::{Zeroize, Zeroizing};

use crate::ids::TokenId;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a master key or sealed secret could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the master key must be 32 bytes written as 64 hexadecimal characters")]
    BadMasterKey,
    #[error("a sealed secret could not be opened (wrong master key or tampered data)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// The 256-bit key that seals every token secret. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let s = s.trim();
        let mut out = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s, &mut out[..]).map_err(|_| SealError::BadMasterKey)?;
        Ok(Self(out))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        let k = Self::from_bytes(bytes);
        bytes.zeroize();
        k
    }

    /// The key as 64 hex characters, for writing the key file once.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// A fingerprint that identifies the key without revealing it, stored with
    /// the data so a server started with the wrong key refuses to run.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"ichido master key fingerprint v1");
        h.update(&self.0[..]);
        hex::encode(&h.finalize()[..16])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0[..]).into())
    }

    /// Seals `secret` for `token_id`.
    pub fn seal(&self, token_id: &TokenId, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_bound(token_id.as_str().as_bytes(), secret)
    }

    /// Opens a sealed secret of `token_id`; the plaintext is zeroized when dropped.
    pub fn open(&self, token_id: &TokenId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.open_bound(token_id.as_str().as_bytes(), sealed)
    }

    /// Seals `secret` bound to `aad` (a token ID, or `operator:NAME` for an
    /// operator's console token: the two can never be confused, since token IDs
    /// hold no `:`).
    pub fn seal_bound(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(&nonce, Payload { msg: secret, aad })
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal_bound`] sealed with the same `aad`.
    pub fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = MasterKey::generate();
        let a = TokenId::random();
        let b = TokenId::random();
        let sealed = k.seal(&a, b"12345678901234567890").unwrap();
        assert!(!sealed.windows(20).any(|w| w == b"12345678901234567890"));
        assert_eq!(&k.open(&a, &sealed).unwrap()[..], b"12345678901234567890");
        assert_eq!(
            k.open(&b, &sealed),
            Err(SealError::Open),
            "bound to its token ID"
        );
        assert_eq!(
            MasterKey::generate().open(&a, &sealed),
            Err(SealError::Open)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(k.open(&a, &tampered), Err(SealError::Open));
        assert_eq!(k.open(&a, &[]), Err(SealError::Open));
    }

    #[test]
    fn hex_keys() {
        let k = MasterKey::generate();
        let again = MasterKey::from_hex(&k.to_hex()).unwrap();
        let id = TokenId::random();
        let sealed = k.seal(&id, b"x").unwrap();
        assert_eq!(&again.open(&id, &sealed).unwrap()[..], b"x");
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }
}
