//! Storage traits, split by capability. Implementations live in `ichido-store`.
//!
//! Every method that changes state also appends its audit record in the same
//! transaction, so the log and the data cannot disagree. Acceptance of a code
//! is one conditional write ([`TokenStore::accept`]): two callers carrying the
//! same code can never both see `true`.

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::error::StoreError;
use crate::ids::TokenId;
use crate::model::{Contract, Execution, Operator, Session, Token, TokenState, Transaction, User};

pub type StoreResult<T> = Result<T, StoreError>;

/// How an accepted code moves a token forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Event token: the code of `counter` matched; the next expected counter
    /// becomes `counter + 1`. Applies only while the stored counter is `<= counter`.
    Event { counter: u64 },
    /// Time token: the code of `step` matched with clock drift `offset` steps.
    /// Applies only while the last accepted step is below `step` (or none).
    Time { step: u64, offset: i64 },
}

/// The conditional write of an acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub acceptance: Acceptance,
    /// The state the token must be in (`active`, or `pending` for activation).
    pub from: TokenState,
    /// The state it is left in (`active`).
    pub to: TokenState,
    pub now: i64,
}

/// Where a token's row stood when a code was decided on it. A failure counted
/// with a position is written only if the row still stands there (so a
/// decision made on a cached row never counts a failure that the row as it
/// is now would not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub counter: u64,
    pub last_step: Option<u64>,
    pub time_offset: i64,
}

/// The result of counting one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    pub failures: u32,
    pub state: TokenState,
}

/// What a check decided on a token's row: the write that goes with the
/// decision (see [`TokenStore::decide_on_row`]).
#[derive(Debug)]
pub enum RowWrite {
    /// The conditional write of an accepted code ([`TokenStore::accept`]).
    Accept { accept: Accept, audit: AuditRecord },
    /// One failure, counted if the token is still in `state`
    /// ([`TokenStore::record_failure`] without a position).
    Failure {
        state: TokenState,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    },
    /// A refusal that changes no row, audited.
    Audit(AuditRecord),
    /// Nothing (no such token, or nothing the check could decide).
    Nothing,
}

/// What became of a [`RowWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowWritten {
    /// Whether the acceptance won its conditional write.
    Accept(bool),
    /// The failure as counted; `None` if the token had left the state.
    Failure(Option<FailureCount>),
    Audit,
    Nothing,
}

/// Decides on a token's row as it stands (`None`: no such token) what to
/// write. A store may run it inside its write transaction: it must be
/// short, free of I/O, and must not panic.
pub type RowDecide = Box<dyn FnOnce(Option<&Token>) -> RowWrite + Send>;

/// An operator's change of a token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenChange {
    /// active → suspended, with an optional grace end (unix seconds).
    Suspend { grace_until: Option<i64> },
    /// suspended → active.
    Resume,
    /// locked (or active) → active with no failures.
    Unlock,
    /// any non-revoked → revoked; the sealed secret is destroyed.
    Revoke,
}

impl TokenChange {
    /// The states this change applies to.
    pub fn from_states(self) -> &'static [TokenState] {
        match self {
            TokenChange::Suspend { .. } => &[TokenState::Active],
            TokenChange::Resume => &[TokenState::Suspended],
            TokenChange::Unlock => &[TokenState::Locked, TokenState::Active],
            TokenChange::Revoke => &[
                TokenState::Pending,
                TokenState::Active,
                TokenState::Suspended,
                TokenState::Locked,
            ],
        }
    }
}

#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Fails with `Conflict` if the name is taken.
    async fn create_operator(
        &self,
        op: &Operator,
        key_hash: &[u8; 32],
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn operator_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Operator>>;
    /// Fails with `Conflict` if the contract exists.
    async fn create_contract(&self, c: &Contract, audit: AuditRecord) -> StoreResult<()>;
    async fn contract(&self, contract_no: &str) -> StoreResult<Option<Contract>>;
    /// Fails with `Conflict` if the user exists.
    async fn create_user(&self, u: &User, audit: AuditRecord) -> StoreResult<()>;
    async fn user(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<User>>;
}

#[async_trait]
pub trait PasswordLockStore: Send + Sync {
    /// Whether (contract_no, user_id) is locked — kept whether or not the user exists.
    async fn password_locked(&self, contract_no: &str, user_id: &str) -> StoreResult<bool>;
    /// Counts one attempt *before* the password is checked, so that concurrent
    /// guesses are bounded too. `false` if the user is locked or `threshold`
    /// unconfirmed attempts are already counted: the attempt must be refused.
    async fn password_attempt(
        &self,
        contract_no: &str,
        user_id: &str,
        threshold: u32,
    ) -> StoreResult<bool>;
    /// After a wrong password: locks once the count has reached `threshold`.
    /// Returns whether the user is now locked.
    async fn password_failure(
        &self,
        contract_no: &str,
        user_id: &str,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool>;
    /// After a right password: clears the count.
    async fn password_success(&self, contract_no: &str, user_id: &str) -> StoreResult<()>;
    /// Operator unlock. Returns whether there was anything to clear.
    async fn password_unlock(
        &self,
        contract_no: &str,
        user_id: &str,
        audit: AuditRecord,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn token(&self, token_id: &TokenId) -> StoreResult<Option<Token>>;
    /// The user's one non-revoked token.
    async fn user_token(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<Token>>;
    /// Inserts a new token. First discards the user's pending token if it was
    /// created before `replace_pending_before`; fails with `Conflict` if the user
    /// still has a non-revoked token.
    async fn insert_token(
        &self,
        t: &Token,
        replace_pending_before: i64,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    /// The one conditional write that accepts a code. `true` if this call won.
    /// On success the failure count returns to 0.
    async fn accept(
        &self,
        token_id: &TokenId,
        accept: Accept,
        audit: AuditRecord,
    ) -> StoreResult<bool>;
    /// Counts one failure if the token is in `state` (and, given `seen`, its
    /// row still stands at that position); reaching `threshold` moves it to
    /// `locked` (or `revoked` when pending). `None` if the token was not in
    /// `state` or had moved from `seen`: nothing is written then.
    async fn record_failure(
        &self,
        token_id: &TokenId,
        state: TokenState,
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<FailureCount>>;
    /// Reads the token's row, lets `decide` say what to write, and writes it
    /// (with the same conditional writes as [`Self::accept`] and
    /// [`Self::record_failure`]); returns the row as read and what became of
    /// the write. A store may do all of it in one write transaction, so that
    /// the row decided on is the row written (SQLite: inside the writer's
    /// batch, with no read of its own); another may read first and write
    /// after, when the conditional write alone decides.
    async fn decide_on_row(
        &self,
        token_id: &TokenId,
        decide: RowDecide,
    ) -> StoreResult<(Option<Token>, RowWritten)>;
    /// Applies an operator change if the token is in one of its `from_states`.
    /// Returns the token after the change, or `None` if it was not applicable.
    async fn change(
        &self,
        token_id: &TokenId,
        change: TokenChange,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<Token>>;
    /// Discards pending tokens created before `created_before`. Returns how many.
    async fn discard_pending(&self, created_before: i64, now: i64, actor: &str)
        -> StoreResult<u64>;
}

/// One user of a bulk import, with its token if it brought one.
pub struct ImportRecord {
    pub user: User,
    pub token: Option<Token>,
}

/// Why the store refused a bulk import; the index is the record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportConflict {
    /// The user exists already.
    UserExists(usize),
    /// The token ID is taken: a random collision, to retry with another ID.
    TokenIdTaken(usize),
}

#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Inserts every user and token, and `audit` (in order, after them), in one
    /// transaction: all or nothing. Users must not exist yet; their contracts
    /// must. `Ok(Err(_))` names the first record that could not be inserted,
    /// and nothing was written.
    async fn import(
        &self,
        records: &[ImportRecord],
        audit: &[AuditRecord],
    ) -> StoreResult<Result<(), ImportConflict>>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one record on its own (decisions that change no other state).
    async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()>;
    /// Newest first, filtered.
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
    /// Oldest first, `seq > after_seq`, for chain verification.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// How many events of the log a look-up index kept beside it has yet
    /// to take in (look-ups find them by scanning the log's tail); `None`
    /// for a store whose look-ups need no such index.
    async fn audit_index_lag(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(
        &self,
        id_hash: &[u8; 32],
        s: &Session,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    /// The session, if not expired at `now`; its idle expiry moves to `expires_at`.
    async fn touch_session(
        &self,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<Session>>;
    /// Ends a session. Returns whether it existed.
    async fn delete_session(&self, id_hash: &[u8; 32], audit: AuditRecord) -> StoreResult<bool>;
    /// Removes sessions expired before `now`.
    async fn purge_sessions(&self, now: i64) -> StoreResult<u64>;
}

#[async_trait]
pub trait TransactionStore: Send + Sync {
    async fn create_transaction(&self, t: &Transaction, audit: AuditRecord) -> StoreResult<()>;
    async fn transaction(&self, contract_no: &str, id: &str) -> StoreResult<Option<Transaction>>;
    /// Newest first.
    async fn transactions(&self, contract_no: &str, limit: u32) -> StoreResult<Vec<Transaction>>;
    /// The one conditional write that executes a transaction: `true` only for
    /// the call that moved it from `pending_approval`.
    async fn execute_transaction(
        &self,
        contract_no: &str,
        id: &str,
        approved_by: &str,
        execution: Execution,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool>;
}

/// An operator's console credentials: an argon2id password hash and a TOTP
/// secret sealed under the master key (bound to `operator:NAME`).
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorCredentials {
    pub name: String,
    pub password_hash: String,
    pub sealed_secret: Vec<u8>,
    /// The last accepted TOTP step: codes at or before it are spent.
    pub last_step: Option<u64>,
    /// Sign-in attempts counted since the last success.
    pub failures: u32,
}

impl std::fmt::Debug for OperatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorCredentials")
            .field("name", &self.name)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Whether a console sign-in attempt may be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAttempt {
    /// Counted; go on and check the password and the code.
    Counted,
    /// The operator has reached the failure threshold: refused unchecked.
    Locked,
    /// No such operator, or one without console credentials.
    Unknown,
}

/// The operator console's sign-in (name, password, TOTP) and its sessions.
#[async_trait]
pub trait OperatorConsoleStore: Send + Sync {
    async fn operator(&self, name: &str) -> StoreResult<Option<Operator>>;
    /// Sets or replaces the operator's console credentials: failures and the
    /// last step are cleared and the operator's console sessions end.
    async fn set_operator_credentials(
        &self,
        name: &str,
        password_hash: &str,
        sealed_secret: &[u8],
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn operator_credentials(&self, name: &str) -> StoreResult<Option<OperatorCredentials>>;
    /// Counts one attempt *before* anything is checked (so concurrent guesses
    /// are bounded), unless `threshold` attempts are already counted.
    async fn operator_attempt(&self, name: &str, threshold: u32) -> StoreResult<OperatorAttempt>;
    /// The one conditional write of a sign-in: moves the last step to `step`
    /// only if it is below it, clears the failures, opens the session and
    /// removes expired ones. `false` if the step was already spent.
    #[allow(clippy::too_many_arguments)]
    async fn operator_sign_in(
        &self,
        name: &str,
        step: u64,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool>;
    /// The operator of a live console session; its idle expiry moves to `expires_at`.
    async fn touch_operator_session(
        &self,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<String>>;
    /// Ends a console session. Returns whether it existed.
    async fn delete_operator_session(
        &self,
        id_hash: &[u8; 32],
        audit: AuditRecord,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Stores `value` under `key` unless a value is there; returns the stored value.
    async fn meta_init(&self, key: &str, value: &str) -> StoreResult<String>;
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Answers when the database answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Everything the validation center needs from a store.
pub trait Store:
    DirectoryStore
    + PasswordLockStore
    + TokenStore
    + ImportStore
    + SessionStore
    + TransactionStore
    + AuditStore
    + MetaStore
    + HealthStore
    + OperatorConsoleStore
{
}
impl<T> Store for T where
    T: DirectoryStore
        + PasswordLockStore
        + TokenStore
        + ImportStore
        + SessionStore
        + TransactionStore
        + AuditStore
        + MetaStore
        + HealthStore
        + OperatorConsoleStore
{
}
