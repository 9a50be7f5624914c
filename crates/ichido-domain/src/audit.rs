//! The audit log: every decision and state change, chained by SHA-256 so that a
//! removed or altered event breaks the chain. Never holds a secret, code or password.

use sha2::{Digest, Sha256};

/// An event as the domain records it; the store assigns `seq` and the chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: i64,
    pub actor: String,
    pub action: &'static str,
    pub contract_no: Option<String>,
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    pub outcome: String,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub contract_no: Option<String>,
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash that precedes the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Filters for reading the log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub contract_no: Option<String>,
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    /// Only events with `seq` below this (paging backwards).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

fn field(h: &mut Sha256, v: Option<&str>) {
    match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The chain hash of an event: SHA-256 over the previous hash and every field,
/// each length-prefixed so no two different events encode alike.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    contract_no: Option<&str>,
    user_id: Option<&str>,
    token_id: Option<&str>,
    outcome: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"ichido-audit-v1");
    field(&mut h, Some(prev_hash));
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    field(&mut h, Some(actor));
    field(&mut h, Some(action));
    field(&mut h, contract_no);
    field(&mut h, user_id);
    field(&mut h, token_id);
    field(&mut h, Some(outcome));
    hex::encode(h.finalize())
}

impl AuditRecord {
    /// A record of `action` on `token` by `actor` at `at`.
    pub fn of_token(
        at: i64,
        actor: String,
        action: &'static str,
        token: &crate::model::Token,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            at,
            actor,
            action,
            contract_no: Some(token.contract_no.clone()),
            user_id: Some(token.user_id.clone()),
            token_id: Some(token.token_id.as_str().to_owned()),
            outcome: outcome.into(),
        }
    }

    /// The hash this record gets when stored as `seq` after `prev_hash`.
    pub fn hash_after(&self, prev_hash: &str, seq: i64) -> String {
        chain_hash(
            prev_hash,
            seq,
            self.at,
            &self.actor,
            self.action,
            self.contract_no.as_deref(),
            self.user_id.as_deref(),
            self.token_id.as_deref(),
            &self.outcome,
        )
    }
}

impl AuditEvent {
    /// Recomputes this event's hash from its fields.
    pub fn recompute(&self) -> String {
        chain_hash(
            &self.prev_hash,
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            self.contract_no.as_deref(),
            self.user_id.as_deref(),
            self.token_id.as_deref(),
            &self.outcome,
        )
    }
}

/// Where a chain check stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The event's stored hash does not match its fields.
    Altered { seq: i64 },
    /// The event does not link to the one before it (removed or reordered events).
    Broken { seq: i64 },
}

/// Incremental chain checker, fed events in `seq` order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    last_hash: String,
    pub checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainFault> {
        if e.prev_hash != self.last_hash {
            return Err(ChainFault::Broken { seq: e.seq });
        }
        if e.recompute() != e.hash {
            return Err(ChainFault::Altered { seq: e.seq });
        }
        self.last_hash.clone_from(&e.hash);
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(outcome: &str) -> AuditRecord {
        AuditRecord {
            at: 1,
            actor: "op".into(),
            action: "token.validate",
            contract_no: Some("C1".into()),
            user_id: None,
            token_id: Some("ABCD12345674".into()),
            outcome: outcome.into(),
        }
    }

    fn store(prev: &str, seq: i64, r: &AuditRecord) -> AuditEvent {
        AuditEvent {
            seq,
            at: r.at,
            actor: r.actor.clone(),
            action: r.action.into(),
            contract_no: r.contract_no.clone(),
            user_id: r.user_id.clone(),
            token_id: r.token_id.clone(),
            outcome: r.outcome.clone(),
            prev_hash: prev.into(),
            hash: r.hash_after(prev, seq),
        }
    }

    #[test]
    fn chain_detects_alteration_and_removal() {
        let a = store(GENESIS_HASH, 1, &rec("ok"));
        let b = store(&a.hash, 2, &rec("invalid_otp"));
        let c = store(&b.hash, 3, &rec("ok"));
        let mut v = ChainVerifier::default();
        for e in [&a, &b, &c] {
            assert_eq!(v.push(e), Ok(()));
        }
        let mut altered = b.clone();
        altered.outcome = "ok".into();
        let mut v = ChainVerifier::default();
        assert_eq!(v.push(&a), Ok(()));
        assert_eq!(v.push(&altered), Err(ChainFault::Altered { seq: 2 }));
        let mut v = ChainVerifier::default();
        assert_eq!(v.push(&a), Ok(()));
        assert_eq!(v.push(&c), Err(ChainFault::Broken { seq: 3 }));
        // Field boundaries matter: moving bytes between fields changes the hash.
        assert_ne!(
            chain_hash("p", 1, 1, "ab", "c", None, None, None, "o"),
            chain_hash("p", 1, 1, "a", "bc", None, None, None, "o")
        );
    }
}
