//! HMAC hash algorithm selection (SHA1/SHA256/SHA512) and its canonical names.

use std::fmt;
use std::str::FromStr;

use crate::OtpError;

/// The HMAC hash of an OTP key (RFC 6238 §1.2). `Sha1` is the default of RFC 4226
/// and of authenticator apps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA-1 (20-byte MAC).
    #[default]
    Sha1,
    /// HMAC-SHA-256 (32-byte MAC).
    Sha256,
    /// HMAC-SHA-512 (64-byte MAC).
    Sha512,
}

impl Algorithm {
    /// Canonical name as used in key URIs: "SHA1", "SHA256" or "SHA512".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl FromStr for Algorithm {
    type Err = OtpError;

    /// Case-insensitive; accepts "SHA1"/"SHA-1", "SHA256"/"SHA-256", "SHA512"/"SHA-512".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: [(&str, Algorithm); 6] = [
            ("SHA1", Algorithm::Sha1),
            ("SHA-1", Algorithm::Sha1),
            ("SHA256", Algorithm::Sha256),
            ("SHA-256", Algorithm::Sha256),
            ("SHA512", Algorithm::Sha512),
            ("SHA-512", Algorithm::Sha512),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, alg)| alg)
            .ok_or(OtpError::UnsupportedAlgorithm)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!("sha-256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!("Sha-1".parse::<Algorithm>(), Ok(Algorithm::Sha1));
        assert_eq!("sha512".parse::<Algorithm>(), Ok(Algorithm::Sha512));
        for bad in ["", "MD5", "SHA", "SHA-1 ", " sha1", "SHA3-256", "SHA_1"] {
            assert_eq!(
                bad.parse::<Algorithm>(),
                Err(OtpError::UnsupportedAlgorithm)
            );
        }
        assert_eq!(Algorithm::default(), Algorithm::Sha1);
    }
}
