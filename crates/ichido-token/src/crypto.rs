//! Passphrase encryption of the store and of backups: argon2id derives a 256-bit key, AES-256-GCM seals the JSON.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The only key derivation written and read.
const KDF_NAME: &str = "argon2id";
/// argon2 version 1.3 (0x13).
const KDF_VERSION: u32 = 0x13;
/// The only cipher written and read.
const CIPHER_NAME: &str = "AES-256-GCM";
/// Parameters for new files: 64 MiB, 3 passes, 1 lane. The file is what an
/// attacker who copies it can try passphrases on, so this is above OWASP's
/// minimum for interactive logins.
const NEW_MEMORY_KIB: u32 = 64 * 1024;
const NEW_ITERATIONS: u32 = 3;
const NEW_PARALLELISM: u32 = 1;
/// Upper bounds accepted when reading, so a crafted file cannot make us
/// allocate or compute without limit.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

/// How the key was derived: everything but the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    pub algorithm: String,
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hex, 16 random bytes.
    pub salt: String,
}

/// A sealed payload as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub kdf: Kdf,
    pub cipher: String,
    /// Hex, 12 random bytes, new for every seal.
    pub nonce: String,
    /// Hex: ciphertext and 16-byte tag.
    pub ciphertext: String,
}

/// Why a sealed payload could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum SealError {
    /// Written with a KDF, cipher or parameters this version does not read.
    Unsupported(&'static str),
    /// Fields that are not what this program writes (bad hex, lengths).
    Malformed(&'static str),
    /// The tag did not verify: a wrong passphrase, or altered bytes.
    WrongPassphrase,
}

/// A derived key together with the parameters it came from.
pub struct SealKey {
    key: Zeroizing<[u8; 32]>,
    kdf: Kdf,
}

impl SealKey {
    /// Derives a key for a new file: fresh random salt, default parameters.
    pub fn derive_new(passphrase: &str) -> Result<SealKey, SealError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let kdf = Kdf {
            algorithm: KDF_NAME.to_owned(),
            version: KDF_VERSION,
            memory_kib: NEW_MEMORY_KIB,
            iterations: NEW_ITERATIONS,
            parallelism: NEW_PARALLELISM,
            salt: hex::encode(salt),
        };
        SealKey::derive(passphrase, &kdf)
    }

    /// Derives the key described by `kdf` (read from a file; bounds-checked).
    pub fn derive(passphrase: &str, kdf: &Kdf) -> Result<SealKey, SealError> {
        if kdf.algorithm != KDF_NAME || kdf.version != KDF_VERSION {
            return Err(SealError::Unsupported("key derivation"));
        }
        if kdf.memory_kib > MAX_MEMORY_KIB
            || kdf.iterations > MAX_ITERATIONS
            || kdf.parallelism > MAX_PARALLELISM
        {
            return Err(SealError::Unsupported("key derivation parameters"));
        }
        let salt = hex::decode(&kdf.salt).map_err(|_| SealError::Malformed("salt"))?;
        if salt.len() < 16 {
            return Err(SealError::Malformed("salt"));
        }
        let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
            .map_err(|_| SealError::Unsupported("key derivation parameters"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key[..])
            .map_err(|_| SealError::Unsupported("key derivation parameters"))?;
        Ok(SealKey {
            key,
            kdf: kdf.clone(),
        })
    }

    /// Encrypts `plaintext` bound to `aad` (the file kind), with a fresh nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        let cipher =
            Aes256Gcm::new_from_slice(&self.key[..]).map_err(|_| SealError::Malformed("key"))?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Malformed("plaintext"))?;
        Ok(Sealed {
            kdf: self.kdf.clone(),
            cipher: CIPHER_NAME.to_owned(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Decrypts `sealed`, which must have been sealed under this key and `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.cipher != CIPHER_NAME {
            return Err(SealError::Unsupported("cipher"));
        }
        let nonce = hex::decode(&sealed.nonce).map_err(|_| SealError::Malformed("nonce"))?;
        if nonce.len() != 12 {
            return Err(SealError::Malformed("nonce"));
        }
        let ciphertext =
            hex::decode(&sealed.ciphertext).map_err(|_| SealError::Malformed("ciphertext"))?;
        let cipher =
            Aes256Gcm::new_from_slice(&self.key[..]).map_err(|_| SealError::Malformed("key"))?;
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::WrongPassphrase)
    }
}

/// Derives the key of `sealed` from `passphrase` and opens it.
pub fn open_with(
    passphrase: &str,
    sealed: &Sealed,
    aad: &[u8],
) -> Result<(SealKey, Zeroizing<Vec<u8>>), SealError> {
    let key = SealKey::derive(passphrase, &sealed.kdf)?;
    let plain = key.open(sealed, aad)?;
    Ok((key, plain))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cheap() -> Kdf {
        Kdf {
            algorithm: KDF_NAME.to_owned(),
            version: KDF_VERSION,
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: hex::encode([7u8; 16]),
        }
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let key = SealKey::derive("correct horse", &cheap()).unwrap();
        let sealed = key.seal(b"{\"tokens\":[]}", b"aad").unwrap();
        let (_, plain) = open_with("correct horse", &sealed, b"aad").unwrap();
        assert_eq!(&plain[..], b"{\"tokens\":[]}");
        assert_eq!(
            open_with("wrong horse", &sealed, b"aad").err(),
            Some(SealError::WrongPassphrase)
        );
        // The associated data binds the file kind.
        assert_eq!(
            open_with("correct horse", &sealed, b"other").err(),
            Some(SealError::WrongPassphrase)
        );
        // A fresh nonce for every seal.
        let again = key.seal(b"{\"tokens\":[]}", b"aad").unwrap();
        assert_ne!(again.nonce, sealed.nonce);
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let mut kdf = cheap();
        kdf.memory_kib = u32::MAX;
        assert!(matches!(
            SealKey::derive("p", &kdf),
            Err(SealError::Unsupported(_))
        ));
        let mut kdf = cheap();
        kdf.algorithm = "scrypt".into();
        assert!(matches!(
            SealKey::derive("p", &kdf),
            Err(SealError::Unsupported(_))
        ));
        let mut kdf = cheap();
        kdf.salt = "zz".into();
        assert!(matches!(
            SealKey::derive("p", &kdf),
            Err(SealError::Malformed(_))
        ));
    }
}
