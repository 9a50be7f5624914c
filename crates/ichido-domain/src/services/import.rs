//! Bulk import of users and token seeds from another validation center (a
//! bank migrating to ichido), up to [`MAX_IMPORT_ENTRIES`] per call.
//!
//! Invariants: a request is one transaction, all or nothing; a refusal names the
//! first bad entry by index and never repeats a secret, a password hash or a
//! value; passwords arrive only as argon2id hashes (checked, never logged);
//! secrets are stored only sealed under the master key, bound to a token ID the
//! server chose; every user and token created gets its audit record.

use std::collections::{HashMap, HashSet};

use argon2::password_hash::PasswordHash;
use argon2::Params;
use ichido_otp::{base32, Algorithm, Digits};
use zeroize::Zeroizing;

use super::{Actor, Ichido};
use crate::error::DomainError;
use crate::ids::{check_contract_no, check_name, check_user_id, TokenId};
use crate::model::{Role, Token, TokenKind, TokenState, User};
use crate::store::{ImportConflict, ImportRecord};

/// The most entries one import request may carry.
pub const MAX_IMPORT_ENTRIES: usize = 1000;
/// The longest password hash (PHC string) accepted.
pub const MAX_PHC_LEN: usize = 512;
/// Imported argon2id hashes must cost at least this much memory (KiB)...
pub const MIN_IMPORT_MEMORY_KIB: u32 = 7 * 1024;
/// ...and memory times passes at least this much (OWASP's argon2id minimum:
/// 7 MiB × 5, 9 MiB × 4, 12 MiB × 3, 19 MiB × 2 or 46 MiB × 1).
pub const MIN_IMPORT_MEMORY_PASSES: u64 = 7 * 1024 * 5;
/// And at most this much, so that one log-in cannot exhaust the server.
pub const MAX_IMPORT_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes and lanes of an imported hash.
pub const MAX_IMPORT_PASSES: u32 = 16;
pub const MAX_IMPORT_LANES: u32 = 16;
/// Secrets shorter than 128 bits are refused (RFC 4226 §4, NIST SP 800-63B).
pub const MIN_SECRET_BYTES: usize = 16;
pub const MAX_SECRET_BYTES: usize = 64;

/// A user to import, as the migrating bank sends it. Strings are checked here,
/// so that a refusal can name the entry.
pub struct ImportEntry {
    pub contract_no: String,
    pub user_id: String,
    pub name: String,
    pub role: String,
    /// argon2id PHC string of the login password.
    pub login_password_hash: String,
    /// argon2id PHC string of the transaction password.
    pub transaction_password_hash: String,
    pub token: Option<ImportToken>,
}

/// A token seed to import with its user; it is imported `active`.
pub struct ImportToken {
    /// `event` or `time`.
    pub kind: String,
    /// The secret in base32 (RFC 4648; case, padding, spaces and `-` tolerated).
    pub secret: Zeroizing<String>,
    /// `SHA1` (default), `SHA256` or `SHA512`.
    pub algorithm: Option<String>,
    /// 6 (default), 7 or 8.
    pub digits: Option<u8>,
    /// Time tokens: the step in seconds (default 30, at most 300).
    pub period: Option<u32>,
    /// Event tokens: the next counter the generator will use (default 0).
    pub counter: Option<u64>,
}

/// What one imported entry became.
#[derive(Debug, Clone)]
pub struct Imported {
    pub contract_no: String,
    pub user_id: String,
    /// The token the server created, with its new token ID.
    pub token: Option<Token>,
}

/// A token seed after checking: everything but its ID and seal.
struct Seed {
    kind: TokenKind,
    secret: Zeroizing<Vec<u8>>,
    algorithm: Algorithm,
    digits: Digits,
    period: u32,
    counter: u64,
}

/// Checks that `phc` is an argon2id hash with parameters a bank should accept.
/// The message names the field, never the value.
pub fn check_password_hash(field: &'static str, phc: &str) -> Result<(), DomainError> {
    let bad = |why: &str| DomainError::InvalidRequest(format!("{field}: {why}"));
    if phc.len() > MAX_PHC_LEN {
        return Err(bad("too long for a password hash"));
    }
    let hash = PasswordHash::new(phc).map_err(|_| bad("not a PHC password hash string"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(bad("only argon2id hashes can be imported"));
    }
    if hash.version != Some(0x13) {
        return Err(bad("argon2id version must be 19 (v=19)"));
    }
    let params = Params::try_from(&hash).map_err(|_| bad("invalid argon2id parameters"))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    if m < MIN_IMPORT_MEMORY_KIB || u64::from(m) * u64::from(t) < MIN_IMPORT_MEMORY_PASSES {
        return Err(bad(
            "argon2id parameters are weaker than OWASP's minimum (e.g. m=19456,t=2)",
        ));
    }
    if m > MAX_IMPORT_MEMORY_KIB || t > MAX_IMPORT_PASSES || p > MAX_IMPORT_LANES {
        return Err(bad(
            "argon2id parameters are too costly (at most m=262144, t=16, p=16)",
        ));
    }
    match (&hash.salt, &hash.hash) {
        // 11 base64 characters carry 8 bytes of salt.
        (Some(salt), Some(out)) if salt.as_str().len() >= 11 && out.len() >= 16 => Ok(()),
        _ => Err(bad(
            "a salt of at least 8 bytes and a hash of at least 16 bytes are required",
        )),
    }
}

fn check_seed(t: &ImportToken, default_period: u32) -> Result<Seed, DomainError> {
    let bad = |why: String| DomainError::InvalidRequest(format!("token.{why}"));
    let kind: TokenKind = t
        .kind
        .parse()
        .map_err(|_| bad("kind must be event or time".into()))?;
    let secret = Zeroizing::new(
        base32::decode(&t.secret).map_err(|_| bad("secret must be base32 (RFC 4648)".into()))?,
    );
    if secret.len() < MIN_SECRET_BYTES || secret.len() > MAX_SECRET_BYTES {
        return Err(bad(format!(
            "secret must be {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes (128-512 bits)"
        )));
    }
    let algorithm: Algorithm = match &t.algorithm {
        None => Algorithm::Sha1,
        Some(a) => a
            .parse()
            .map_err(|_| bad("algorithm must be SHA1, SHA256 or SHA512".into()))?,
    };
    let digits =
        Digits::new(t.digits.unwrap_or(6)).map_err(|_| bad("digits must be 6, 7 or 8".into()))?;
    let (period, counter) = match kind {
        TokenKind::Event => {
            if t.period.is_some() {
                return Err(bad("period applies to time tokens only".into()));
            }
            let counter = t.counter.unwrap_or(0);
            if i64::try_from(counter).is_err() {
                return Err(bad("counter is out of range".into()));
            }
            (default_period, counter)
        }
        TokenKind::Time => {
            if t.counter.is_some() {
                return Err(bad("counter applies to event tokens only".into()));
            }
            let period = t.period.unwrap_or(30);
            if period == 0 || period > 300 {
                return Err(bad("period must be 1-300 seconds".into()));
            }
            (period, 0)
        }
    };
    Ok(Seed {
        kind,
        secret,
        algorithm,
        digits,
        period,
        counter,
    })
}

impl Ichido {
    /// Imports users (with their password hashes) and their token seeds, all or
    /// nothing. Answers in the order of `entries`, with the token IDs assigned.
    pub async fn import(
        &self,
        actor: &Actor,
        entries: Vec<ImportEntry>,
    ) -> Result<Vec<Imported>, DomainError> {
        if entries.is_empty() || entries.len() > MAX_IMPORT_ENTRIES {
            return Err(DomainError::InvalidRequest(format!(
                "entries must hold 1-{MAX_IMPORT_ENTRIES} users"
            )));
        }
        let now = self.clock.now();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(entries.len());
        let mut contracts: Vec<(&str, usize)> = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        let mut seeds = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (user, seed) = self.check_entry(e, now).map_err(|err| err.at_entry(i))?;
            if let Some(first) = seen.insert((&e.contract_no, &e.user_id), i) {
                return Err(DomainError::InvalidRequest(format!(
                    "the same user as entries[{first}]"
                ))
                .at_entry(i));
            }
            if !contracts.iter().any(|(c, _)| *c == e.contract_no) {
                contracts.push((&e.contract_no, i));
            }
            records.push(ImportRecord { user, token: None });
            seeds.push(seed);
        }
        for (contract_no, first) in contracts {
            if self.store.contract(contract_no).await?.is_none() {
                return Err(DomainError::NotFound("contract").at_entry(first));
            }
        }
        let mut ids = HashSet::with_capacity(entries.len());
        for (r, seed) in records.iter_mut().zip(&seeds) {
            if let Some(seed) = seed {
                r.token = Some(self.seed_token(&r.user, seed, &mut ids, now)?);
            }
        }
        // A random token ID may collide with a stored one: draw another, retry.
        for _ in 0..4 {
            let audit = self.import_audit(actor, &records);
            match self.store.import(&records, &audit).await? {
                Ok(()) => {
                    let tokens = records.iter().filter(|r| r.token.is_some()).count();
                    tracing::info!(users = records.len(), tokens, "imported users and tokens");
                    return Ok(records
                        .into_iter()
                        .map(|r| Imported {
                            contract_no: r.user.contract_no,
                            user_id: r.user.user_id,
                            token: r.token,
                        })
                        .collect());
                }
                Err(ImportConflict::UserExists(i)) => {
                    return Err(DomainError::Conflict("user").at_entry(i));
                }
                Err(ImportConflict::TokenIdTaken(i)) => {
                    let (Some(r), Some(Some(seed))) = (records.get_mut(i), seeds.get(i)) else {
                        return Err(DomainError::Internal(format!(
                            "import conflict names entry {i}, which has no token"
                        )));
                    };
                    r.token = Some(self.seed_token(&r.user, seed, &mut ids, now)?);
                }
            }
        }
        Err(DomainError::Internal(
            "could not allocate token IDs for the import".into(),
        ))
    }

    fn check_entry(&self, e: &ImportEntry, now: i64) -> Result<(User, Option<Seed>), DomainError> {
        check_contract_no(&e.contract_no)?;
        check_user_id(&e.user_id)?;
        check_name("name", &e.name)?;
        let role: Role = e.role.parse()?;
        check_password_hash("login_password_hash", &e.login_password_hash)?;
        check_password_hash("transaction_password_hash", &e.transaction_password_hash)?;
        if e.login_password_hash == e.transaction_password_hash {
            return Err(DomainError::InvalidRequest(
                "transaction_password_hash must differ from login_password_hash".into(),
            ));
        }
        let seed = e
            .token
            .as_ref()
            .map(|t| check_seed(t, self.policy.time_period))
            .transpose()?;
        let user = User {
            contract_no: e.contract_no.clone(),
            user_id: e.user_id.clone(),
            name: e.name.clone(),
            role,
            login_hash: e.login_password_hash.clone(),
            transaction_hash: e.transaction_password_hash.clone(),
            created_at: now,
        };
        Ok((user, seed))
    }

    /// An active token for `user` from `seed`, under a fresh token ID unused in
    /// this request, its secret sealed to that ID.
    fn seed_token(
        &self,
        user: &User,
        seed: &Seed,
        ids: &mut HashSet<TokenId>,
        now: i64,
    ) -> Result<Token, DomainError> {
        let token_id = loop {
            let id = TokenId::random();
            if ids.insert(id.clone()) {
                break id;
            }
        };
        let sealed = self
            .master
            .seal(&token_id, &seed.secret)
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        Ok(Token {
            token_id,
            contract_no: user.contract_no.clone(),
            user_id: user.user_id.clone(),
            kind: seed.kind,
            state: TokenState::Active,
            algorithm: seed.algorithm,
            digits: seed.digits,
            period: seed.period,
            counter: seed.counter,
            last_step: None,
            time_offset: 0,
            failures: 0,
            sealed_secret: sealed,
            created_at: now,
            activated_at: Some(now),
            grace_until: None,
            updated_at: now,
        })
    }

    fn import_audit(
        &self,
        actor: &Actor,
        records: &[ImportRecord],
    ) -> Vec<crate::audit::AuditRecord> {
        let mut out = Vec::with_capacity(records.len() * 2);
        for r in records {
            let u = &r.user;
            out.push(self.record(
                actor,
                "user.import",
                Some(&u.contract_no),
                Some(&u.user_id),
                None,
                format!("ok: {}", u.role),
            ));
            if let Some(t) = &r.token {
                out.push(self.token_record(actor, "token.import", t, format!("ok: {}", t.kind)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Argon2, Version};

    fn phc(m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon.hash_password(b"pw", &salt).unwrap().to_string()
    }

    #[test]
    fn password_hashes_must_be_argon2id_with_sane_parameters() {
        assert!(check_password_hash("h", &phc(19 * 1024, 2, 1)).is_ok());
        assert!(check_password_hash("h", &phc(7 * 1024, 5, 1)).is_ok());
        for weak in [phc(1024, 1, 1), phc(7 * 1024, 4, 1), phc(19 * 1024, 1, 1)] {
            let err = check_password_hash("h", &weak).unwrap_err().to_string();
            assert!(err.contains("weaker"), "{err}");
            assert!(!err.contains(&weak), "the hash is not echoed");
        }
        let argon2i = phc(19 * 1024, 2, 1).replacen("$argon2id$", "$argon2i$", 1);
        let err = check_password_hash("h", &argon2i).unwrap_err().to_string();
        assert!(err.contains("only argon2id"), "{err}");
        for junk in [
            "",
            "password",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$v=19$m=x",
        ] {
            assert!(check_password_hash("h", junk).is_err(), "{junk}");
        }
        let v16 = phc(19 * 1024, 2, 1).replacen("v=19", "v=16", 1);
        assert!(check_password_hash("h", &v16).is_err());
        let huge = phc(19 * 1024, 2, 1).replacen("m=19456", "m=4194304", 1);
        let err = check_password_hash("h", &huge).unwrap_err().to_string();
        assert!(err.contains("too costly"), "{err}");
        assert!(check_password_hash("h", &"$".repeat(600)).is_err());
    }

    fn seed(kind: &str) -> ImportToken {
        ImportToken {
            kind: kind.into(),
            secret: Zeroizing::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into()),
            algorithm: None,
            digits: None,
            period: None,
            counter: None,
        }
    }

    #[test]
    fn token_seeds_are_checked() {
        let s = check_seed(&seed("event"), 30).unwrap();
        assert_eq!(
            (s.kind, s.algorithm, s.digits),
            (TokenKind::Event, Algorithm::Sha1, Digits::SIX)
        );
        assert_eq!((s.period, s.counter), (30, 0));
        assert_eq!(&s.secret[..], b"12345678901234567890");
        let s = check_seed(
            &ImportToken {
                period: Some(60),
                algorithm: Some("SHA256".into()),
                digits: Some(8),
                ..seed("time")
            },
            30,
        )
        .unwrap();
        assert_eq!(
            (s.kind, s.period, s.algorithm, s.digits.get()),
            (TokenKind::Time, 60, Algorithm::Sha256, 8)
        );
        let refused = [
            ImportToken {
                secret: Zeroizing::new("GEZDGNBV".into()),
                ..seed("event")
            },
            ImportToken {
                secret: Zeroizing::new("not base32!".into()),
                ..seed("event")
            },
            ImportToken {
                algorithm: Some("MD5".into()),
                ..seed("event")
            },
            ImportToken {
                digits: Some(9),
                ..seed("event")
            },
            ImportToken {
                period: Some(30),
                ..seed("event")
            },
            ImportToken {
                counter: Some(u64::MAX),
                ..seed("event")
            },
            ImportToken {
                counter: Some(3),
                ..seed("time")
            },
            ImportToken {
                period: Some(0),
                ..seed("time")
            },
            seed("push"),
        ];
        for t in &refused {
            let err = check_seed(t, 30).err().unwrap().to_string();
            assert!(err.starts_with("token."), "{err}");
            assert!(!err.contains("GEZDGNBV"), "the secret is not echoed: {err}");
        }
    }
}
