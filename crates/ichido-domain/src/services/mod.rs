//! The use cases of the validation center, one module each. Handlers call one
//! function here; every function records its decision in the audit log.

mod audit_log;
mod check;
mod console;
mod directory;
mod import;
mod login;
mod registration;
mod resync;
mod token_admin;
mod transactions;
mod validate;

use std::sync::Arc;

use crate::audit::AuditRecord;
use crate::clock::Clock;
use crate::error::DomainError;
use crate::keycache::{KeyCache, DEFAULT_KEY_CACHE_CAPACITY};
use crate::model::Token;
use crate::password::{PasswordParams, Passwords};
use crate::policy::Policy;
use crate::seal::MasterKey;
use crate::store::Store;
use crate::tokencache::TokenCache;

pub use audit_log::ChainReport;
pub use console::{ConsoleSignIn, CONSOLE_LOCK_THRESHOLD, CONSOLE_SESSION_PREFIX};
pub use directory::{NewUser, OperatorKey};
pub use import::{check_password_hash, ImportEntry, ImportToken, Imported, MAX_IMPORT_ENTRIES};
pub use login::{Authenticated, LoginOutcome};
pub use registration::Registration;
pub use transactions::NewTransaction;

/// Who is acting, as written in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Operator(String),
    Customer {
        contract_no: String,
        user_id: String,
    },
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Operator(name) => format!("operator:{name}"),
            Actor::Customer {
                contract_no,
                user_id,
            } => format!("user:{contract_no}/{user_id}"),
            Actor::System => "system".to_owned(),
        }
    }
}

/// The validation center: store, clock, policy, master key and password hasher.
pub struct Ichido {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Arc<Policy>,
    master: Arc<MasterKey>,
    passwords: Arc<Passwords>,
    /// Opened token keys (see [`crate::keycache`]).
    keys: Arc<KeyCache<ichido_otp::Key>>,
    /// Active tokens recently seen by validation (see [`crate::tokencache`]).
    tokens: TokenCache,
    /// Operators found by API key (see [`directory::OperatorCache`]).
    operators: directory::OperatorCache,
}

impl Ichido {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        master: MasterKey,
        password_params: PasswordParams,
    ) -> Result<Self, DomainError> {
        policy.validate().map_err(DomainError::InvalidRequest)?;
        let passwords = Arc::new(Passwords::new(password_params)?);
        Ok(Self {
            store,
            clock,
            policy: Arc::new(policy),
            master: Arc::new(master),
            passwords,
            keys: Arc::new(KeyCache::new(DEFAULT_KEY_CACHE_CAPACITY)),
            tokens: TokenCache::new(DEFAULT_KEY_CACHE_CAPACITY),
            operators: directory::OperatorCache::default(),
        })
    }

    /// Caches the keys, and the rows for validation's fast path, of at most
    /// `capacity` tokens (0: open every secret and read every row each time).
    #[must_use]
    pub fn with_key_cache(mut self, capacity: usize) -> Self {
        self.keys = Arc::new(KeyCache::new(capacity));
        self.tokens = TokenCache::new(capacity).with_ttl(self.tokens.ttl());
        self
    }

    /// Decides a validation on a token's row as last read or written for at
    /// most `ttl` (see [`TokenCache`]; a hint, never an authority).
    #[must_use]
    pub fn with_token_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.tokens = self.tokens.with_ttl(ttl);
        self
    }

    /// The cache of opened token keys.
    pub fn key_cache(&self) -> &KeyCache<ichido_otp::Key> {
        &self.keys
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Checks that the master key is the one the data was sealed with; records
    /// it on first start. A wrong key would make every token unusable.
    pub async fn check_master_key(&self) -> Result<(), DomainError> {
        let fp = self.master.fingerprint();
        let stored = self.store.meta_init("master_key_fingerprint", &fp).await?;
        if stored == fp {
            Ok(())
        } else {
            Err(DomainError::InvalidRequest(
                "the master key does not match the one this database was created with".into(),
            ))
        }
    }

    /// argon2id verifications run so far (for tests and metrics).
    pub fn password_verifications(&self) -> u64 {
        self.passwords.verifications()
    }

    /// Answers when the store answers.
    pub async fn health(&self) -> Result<(), DomainError> {
        self.store.ping().await.map_err(DomainError::from)
    }

    /// Audit events not yet in the store's look-up index, if it keeps one.
    pub async fn audit_index_lag(&self) -> Result<Option<u64>, DomainError> {
        self.store
            .audit_index_lag()
            .await
            .map_err(DomainError::from)
    }

    fn record(
        &self,
        actor: &Actor,
        action: &'static str,
        contract_no: Option<&str>,
        user_id: Option<&str>,
        token: Option<&str>,
        outcome: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            at: self.clock.now(),
            actor: actor.label(),
            action,
            contract_no: contract_no.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
            token_id: token.map(str::to_owned),
            outcome: outcome.into(),
        }
    }

    fn token_record(
        &self,
        actor: &Actor,
        action: &'static str,
        t: &Token,
        outcome: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord::of_token(self.clock.now(), actor.label(), action, t, outcome)
    }

    /// Runs password hashing off the async workers.
    async fn hash_password(
        &self,
        field: &'static str,
        password: &str,
    ) -> Result<String, DomainError> {
        let p = Arc::clone(&self.passwords);
        let pw = zeroize::Zeroizing::new(password.to_owned());
        tokio::task::spawn_blocking(move || p.hash(field, &pw))
            .await
            .map_err(|e| DomainError::Internal(format!("hashing task: {e}")))?
    }

    async fn verify_password(
        &self,
        hash: Option<String>,
        password: &str,
    ) -> Result<bool, DomainError> {
        let p = Arc::clone(&self.passwords);
        let pw = zeroize::Zeroizing::new(password.to_owned());
        tokio::task::spawn_blocking(move || p.verify(hash.as_deref(), &pw))
            .await
            .map_err(|e| DomainError::Internal(format!("hashing task: {e}")))
    }
}

/// The error for a token that is not in the state an operation needs.
pub(crate) fn state_error(state: crate::model::TokenState) -> DomainError {
    use crate::model::TokenState as S;
    match state {
        S::Pending => DomainError::TokenPending,
        S::Suspended => DomainError::TokenSuspended,
        S::Locked => DomainError::TokenLocked,
        S::Revoked => DomainError::TokenRevoked,
        // Reached when a pending token was activated by a concurrent request:
        // answer as a sequential repeat of the activation does.
        S::Active => DomainError::InvalidRequest("the token is already active".into()),
    }
}
