//! One stored token: who it belongs to (server, contract, user), its secret and where its codes stand.

use std::fmt;

use ichido_otp::{base32, Algorithm, Code, Digits, Key};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Event (HOTP, a new code per press) or time (TOTP, a new code every period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Event,
    Time,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Time => "time",
        }
    }
}

/// A token secret in base32: wiped from memory when dropped, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub fn new(base32: String) -> Secret {
        Secret(base32)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A token as kept in the store. Unique per (server, contract_no, user_id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The server's root URL, normalised (see `api::normalize_server`).
    pub server: String,
    pub contract_no: String,
    pub user_id: String,
    pub token_id: String,
    pub kind: Kind,
    /// Base32 without padding.
    pub secret: Secret,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    pub digits: u8,
    /// Time tokens: the step in seconds; null for event tokens.
    pub period: Option<u32>,
    /// Event tokens: the NEXT counter to show; null for time tokens.
    pub counter: Option<u64>,
    /// True between registration and a confirmed activation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl Token {
    /// Checks that the entry can produce codes; the error names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.key()?;
        self.digits()?;
        match self.kind {
            Kind::Event if self.counter.is_none() => Err("an event token without a counter".into()),
            Kind::Time if self.period.is_none_or(|p| p == 0) => {
                Err("a time token without a period".into())
            }
            _ if self.token_id.is_empty()
                || self.contract_no.is_empty()
                || self.user_id.is_empty() =>
            {
                Err("a token without its ID, contract number or user ID".into())
            }
            _ => Ok(()),
        }
    }

    pub fn key(&self) -> Result<Key, String> {
        let algorithm: Algorithm = self
            .algorithm
            .parse()
            .map_err(|_| format!("unknown algorithm {:?}", self.algorithm))?;
        let secret = Zeroizing::new(
            base32::decode(self.secret.expose()).map_err(|_| "a damaged secret".to_owned())?,
        );
        Key::new(algorithm, &secret).map_err(|_| "an empty secret".to_owned())
    }

    pub fn digits(&self) -> Result<Digits, String> {
        Digits::new(self.digits).map_err(|_| format!("{} digits", self.digits))
    }

    /// The TOTP period in seconds (30 if unset, which `check` refuses anyway).
    pub fn period(&self) -> u64 {
        u64::from(self.period.unwrap_or(30).max(1))
    }

    /// The event code for `counter`.
    pub fn hotp(&self, counter: u64) -> Result<Code, String> {
        Ok(self.key()?.hotp(counter, self.digits()?))
    }

    /// The time code at `unix` seconds.
    pub fn totp(&self, unix: u64) -> Result<Code, String> {
        Ok(self.key()?.totp(unix, self.period(), self.digits()?))
    }

    /// "contract 1234567890, user taro at https://bank.example".
    pub fn describe(&self) -> String {
        format!(
            "contract {}, user {} at {}",
            self.contract_no, self.user_id, self.server
        )
    }

    pub fn same_owner(&self, other: &Token) -> bool {
        self.server == other.server
            && self.contract_no == other.contract_no
            && self.user_id == other.user_id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    pub fn sample(kind: Kind) -> Token {
        Token {
            server: "https://bank.example".into(),
            contract_no: "1234567890".into(),
            user_id: "taro".into(),
            token_id: "ABCD12345678".into(),
            kind,
            secret: Secret::new(base32::encode(b"12345678901234567890")),
            algorithm: "SHA1".into(),
            digits: 6,
            period: (kind == Kind::Time).then_some(30),
            counter: (kind == Kind::Event).then_some(0),
            pending: false,
        }
    }

    #[test]
    fn codes_follow_rfc_vectors() {
        let t = sample(Kind::Event);
        t.check().unwrap();
        assert_eq!(t.hotp(1).unwrap().to_string(), "287082");
        let t = sample(Kind::Time);
        t.check().unwrap();
        // RFC 6238 appendix B, SHA1 at T=59, 8 digits 94287082 → 6 digits.
        assert_eq!(t.totp(59).unwrap().to_string(), "287082");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = sample(Kind::Event);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(t.secret.expose()), "{dbg}");
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let mut t = sample(Kind::Event);
        t.counter = None;
        assert!(t.check().is_err());
        let mut t = sample(Kind::Time);
        t.period = Some(0);
        assert!(t.check().is_err());
        let mut t = sample(Kind::Time);
        t.secret = Secret::new("not base32!".into());
        assert!(t.check().is_err());
        let mut t = sample(Kind::Time);
        t.digits = 9;
        assert!(t.check().is_err());
    }
}
