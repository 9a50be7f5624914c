//! Rows as stored, and their conversion into domain records. Shared by backends.

use std::collections::HashMap;
use std::str::FromStr;

use ichido_domain::audit::{AuditEvent, AuditRecord, GENESIS_HASH};
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Contract, Operator, Role, Token, TokenKind, TokenState, User};
use ichido_domain::store::FailureCount;
use ichido_otp::{Algorithm, Digits};

/// One counted failure as a batch answers it: pushes the job's own audit
/// record, then — when the count moved the token out of `from` — the system's
/// record of the lock (or of a pending token's discard).
pub(crate) fn counted_failure(
    audit: &AuditRecord,
    from: TokenState,
    failures: i64,
    now: TokenState,
    records: &mut Vec<AuditRecord>,
) -> FailureCount {
    records.push(audit.clone());
    if now != from {
        let mut lock = audit.clone();
        lock.actor = "system".into();
        lock.action = if now == TokenState::Revoked {
            "token.discard"
        } else {
            "token.lock"
        };
        lock.outcome = format!("{} after {failures} consecutive failures", now.as_str());
        records.push(lock);
    }
    FailureCount {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        state: now,
    }
}

/// The rows a set-based failure count returned (token ID, failures, state),
/// by token ID. A state that cannot be read back aborts the batch rather than
/// commit a count whose outcome nobody can report.
pub(crate) fn counted_rows(
    rows: Vec<(String, i64, String)>,
) -> Result<HashMap<String, (i64, TokenState)>, StoreError> {
    rows.into_iter()
        .map(|(id, failures, state)| {
            let state = TokenState::from_str(&state).map_err(|_| corrupt("token state"))?;
            Ok((id, (failures, state)))
        })
        .collect()
}

/// A counter or step as a signed column holds it; one beyond its range
/// matches no stored row, so a write conditioned on it changes nothing.
pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A stored integer that must fit an unsigned domain value.
pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt("counter out of range"))
}

/// One audit event's place in the chain: its sequence number, the hash it
/// follows and its own.
pub(crate) struct Link {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// The links of `records` chained in order after `head` (the last event's
/// sequence number and hash; `None` for an empty log).
pub(crate) fn links(records: &[AuditRecord], head: Option<(i64, String)>) -> Vec<Link> {
    let (mut seq, mut prev) = match head {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_owned()),
    };
    records
        .iter()
        .map(|r| {
            let hash = r.hash_after(&prev, seq);
            let link = Link {
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            };
            seq += 1;
            link
        })
        .collect()
}

/// The head of the audit chain, as [`links`] takes it.
pub(crate) const CHAIN_HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// The columns of an audit event, as inserted.
pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO audit_events (seq, at, actor, action, contract_no, user_id, token_id, outcome, prev_hash, hash)";

/// Maps a driver error: uniqueness → `Conflict`, decoding → `Corrupt`, else `Unavailable`.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Maps an error of the SQLite writer's own connection, as [`db_err`] does.
pub(crate) fn lite_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub token_id: String,
    pub contract_no: String,
    pub user_id: String,
    pub kind: String,
    pub state: String,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub counter: i64,
    pub last_step: Option<i64>,
    pub time_offset: i64,
    pub failures: i64,
    pub sealed_secret: Vec<u8>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub grace_until: Option<i64>,
    pub updated_at: i64,
}

/// SQLite's read of token rows by number (a JSON array of
/// [`TokenId::number`]s bound as the one parameter, see
/// `sqlite::reads::json_numbers`), by the writer's own connection and by
/// the read pool: its columns are named as [`TokenRow`]'s fields (for
/// sqlx) and in the order [`TokenRow::from_lite`] reads them.
pub(crate) const LITE_TOKENS_BY_NUMBER: &str =
    "SELECT token_id, contract_no, user_id, kind, state, \
     algorithm, digits, period, counter, last_step, time_offset, failures, sealed_secret, \
     created_at, activated_at, grace_until, updated_at \
     FROM tokens WHERE token_no IN (SELECT value FROM json_each(?))";

impl TokenRow {
    /// The row as the SQLite writer's own connection returns it, selected
    /// by [`LITE_TOKENS_BY_NUMBER`] (by position: a look-up by name compares the
    /// name with every column's, for every value of every row).
    pub fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            token_id: r.get(0)?,
            contract_no: r.get(1)?,
            user_id: r.get(2)?,
            kind: r.get(3)?,
            state: r.get(4)?,
            algorithm: r.get(5)?,
            digits: r.get(6)?,
            period: r.get(7)?,
            counter: r.get(8)?,
            last_step: r.get(9)?,
            time_offset: r.get(10)?,
            failures: r.get(11)?,
            sealed_secret: r.get(12)?,
            created_at: r.get(13)?,
            activated_at: r.get(14)?,
            grace_until: r.get(15)?,
            updated_at: r.get(16)?,
        })
    }
}

impl TryFrom<TokenRow> for Token {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> Result<Token, StoreError> {
        Ok(Token {
            token_id: TokenId::from_str(&r.token_id).map_err(|_| corrupt("token_id"))?,
            contract_no: r.contract_no,
            user_id: r.user_id,
            kind: TokenKind::from_str(&r.kind).map_err(|_| corrupt("token kind"))?,
            state: TokenState::from_str(&r.state).map_err(|_| corrupt("token state"))?,
            algorithm: Algorithm::from_str(&r.algorithm).map_err(|_| corrupt("token algorithm"))?,
            digits: u8::try_from(r.digits)
                .ok()
                .and_then(|d| Digits::new(d).ok())
                .ok_or_else(|| corrupt("token digits"))?,
            period: u32::try_from(r.period).map_err(|_| corrupt("token period"))?,
            counter: u64::try_from(r.counter).map_err(|_| corrupt("token counter"))?,
            last_step: r
                .last_step
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("token last_step"))?,
            time_offset: r.time_offset,
            failures: u32::try_from(r.failures).map_err(|_| corrupt("token failures"))?,
            sealed_secret: r.sealed_secret,
            created_at: r.created_at,
            activated_at: r.activated_at,
            grace_until: r.grace_until,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub contract_no: String,
    pub user_id: String,
    pub name: String,
    pub role: String,
    pub login_hash: String,
    pub transaction_hash: String,
    pub created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<User, StoreError> {
        Ok(User {
            contract_no: r.contract_no,
            user_id: r.user_id,
            name: r.name,
            role: Role::from_str(&r.role).map_err(|_| corrupt("user role"))?,
            login_hash: r.login_hash,
            transaction_hash: r.transaction_hash,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ContractRow {
    pub contract_no: String,
    pub name: String,
    pub created_at: i64,
}

impl From<ContractRow> for Contract {
    fn from(r: ContractRow) -> Contract {
        Contract {
            contract_no: r.contract_no,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OperatorRow {
    pub name: String,
    pub created_at: i64,
}

impl From<OperatorRow> for Operator {
    fn from(r: OperatorRow) -> Operator {
        Operator {
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
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

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> AuditEvent {
        AuditEvent {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            contract_no: r.contract_no,
            user_id: r.user_id,
            token_id: r.token_id,
            outcome: r.outcome,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The SQL `IN (...)` list of states, as literals (they are our own constants).
pub(crate) fn state_list(states: &[TokenState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub contract_no: String,
    pub user_id: String,
    pub method: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl TryFrom<SessionRow> for ichido_domain::model::Session {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        Ok(Self {
            contract_no: r.contract_no,
            user_id: r.user_id,
            method: r.method.parse().map_err(|_| corrupt("session method"))?,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TransactionRow {
    pub id: String,
    pub contract_no: String,
    pub created_by: String,
    pub kind: String,
    pub payee: String,
    pub amount: i64,
    pub state: String,
    pub approved_by: Option<String>,
    pub execution: Option<String>,
    pub created_at: i64,
    pub executed_at: Option<i64>,
}

impl TryFrom<TransactionRow> for ichido_domain::model::Transaction {
    type Error = StoreError;
    fn try_from(r: TransactionRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            contract_no: r.contract_no,
            created_by: r.created_by,
            kind: r.kind.parse().map_err(|_| corrupt("transaction kind"))?,
            payee: r.payee,
            amount: r.amount,
            state: r.state.parse().map_err(|_| corrupt("transaction state"))?,
            approved_by: r.approved_by,
            execution: r
                .execution
                .map(|e| e.parse())
                .transpose()
                .map_err(|_| corrupt("transaction execution"))?,
            created_at: r.created_at,
            executed_at: r.executed_at,
        })
    }
}
