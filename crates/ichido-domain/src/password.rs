//! Passwords with argon2id. Unknown users are checked against a dummy hash made
//! with the same parameters, so every check costs the same work.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

use crate::error::DomainError;

/// The longest password accepted (bytes), so hashing cost stays bounded.
pub const MAX_PASSWORD_LEN: usize = 256;
/// The shortest password accepted at creation.
pub const MIN_PASSWORD_LEN: usize = 8;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP's recommended argon2id minimum: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes and checks passwords with fixed parameters.
pub struct Passwords {
    argon: Argon2<'static>,
    dummy: String,
    verifications: std::sync::atomic::AtomicU64,
}

impl Passwords {
    pub fn new(p: PasswordParams) -> Result<Self, DomainError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| DomainError::Internal(format!("argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(b"ichido dummy password", &salt)
            .map_err(|e| DomainError::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            argon,
            dummy,
            verifications: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Hashes a new password after checking its length.
    pub fn hash(&self, field: &'static str, password: &str) -> Result<String, DomainError> {
        if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
            return Err(DomainError::InvalidRequest(format!(
                "{field} must be {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} bytes long"
            )));
        }
        let salt = SaltString::generate(&mut OsRng);
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
    }

    /// How many argon2id verifications have run (the same for every kind of
    /// failed log-in: that is what makes them indistinguishable in time).
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks `password` against `hash`, or against the dummy hash when `hash` is
    /// `None` (unknown user) — same work, always false.
    pub fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = hash.unwrap_or(&self.dummy);
        // Over-long input is refused after the same work as a wrong password.
        let candidate = if password.len() > MAX_PASSWORD_LEN {
            ""
        } else {
            password
        };
        let ok = match PasswordHash::new(target) {
            Ok(parsed) => self
                .argon
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        };
        ok && hash.is_some() && password.len() <= MAX_PASSWORD_LEN
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fast() -> Passwords {
        Passwords::new(PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hash_and_verify() {
        let p = fast();
        let h = p.hash("login_password", "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify(Some(&h), "correct horse"));
        assert!(!p.verify(Some(&h), "wrong horse!"));
        assert!(!p.verify(None, "correct horse"));
        assert!(!p.verify(Some("not a hash"), "x"));
        assert!(p.hash("login_password", "short").is_err());
        assert!(!p.verify(Some(&h), &"x".repeat(10_000)));
    }
}
