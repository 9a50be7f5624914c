//! Operators, contracts and users; the password check with its lockout.
//!
//! Invariant: unknown contract, unknown user and wrong password give the same
//! answer after the same argon2id work; the lockout is kept per
//! (contract number, user ID) whether or not the user exists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Actor, Ichido};
use crate::error::{DomainError, StoreError};
use crate::ids::{check_contract_no, check_name, check_user_id};
use crate::model::{Contract, Operator, Role, User, UserView};

/// Prefix of operator API keys, so leaked keys are recognisable by scanners.
pub const OPERATOR_KEY_PREFIX: &str = "ichido_op_";

/// A newly created operator's API key: shown once, stored only as a hash.
pub struct OperatorKey(pub Zeroizing<String>);

/// The fields of a new user.
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub login_password: Zeroizing<String>,
    pub transaction_password: Zeroizing<String>,
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// How long a successful API-key lookup is remembered. Operators and their
/// keys are never changed or removed once created, so the cache only saves
/// the database read that every relying-party request would otherwise make;
/// the bound keeps a future key revocation effective within seconds.
const OPERATOR_CACHE_TTL: Duration = Duration::from_secs(10);
/// Remembered keys at most (a bank has a handful of operators and relying
/// parties); when full, the cache starts over.
const OPERATOR_CACHE_CAPACITY: usize = 256;

/// Operators found by the SHA-256 of their API key, for [`OPERATOR_CACHE_TTL`].
/// Failed lookups are not remembered, so random keys cannot fill it.
#[derive(Default)]
pub(crate) struct OperatorCache {
    found: Mutex<HashMap<[u8; 32], (Operator, Instant)>>,
}

impl OperatorCache {
    fn get(&self, hash: &[u8; 32]) -> Option<Operator> {
        let map = self.found.lock().ok()?;
        match map.get(hash) {
            Some((op, at)) if at.elapsed() < OPERATOR_CACHE_TTL => Some(op.clone()),
            _ => None,
        }
    }

    fn put(&self, hash: [u8; 32], op: Operator) {
        if let Ok(mut map) = self.found.lock() {
            if map.len() >= OPERATOR_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(hash, (op, Instant::now()));
        }
    }
}

impl Ichido {
    /// Creates an operator and returns its API key (shown once).
    pub async fn create_operator(
        &self,
        name: &str,
    ) -> Result<(Operator, OperatorKey), DomainError> {
        check_name("name", name)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut raw[..]);
        let key = Zeroizing::new(format!("{OPERATOR_KEY_PREFIX}{}", hex::encode(&raw[..])));
        let op = Operator {
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        let audit = self.record(
            &Actor::System,
            "operator.create",
            None,
            None,
            None,
            format!("ok: {name}"),
        );
        match self
            .store
            .create_operator(&op, &key_hash(&key), audit)
            .await
        {
            Ok(()) => Ok((op, OperatorKey(key))),
            Err(StoreError::Conflict) => Err(DomainError::Conflict("operator")),
            Err(e) => Err(e.into()),
        }
    }

    /// The operator holding `key`, or `unauthorized`.
    pub async fn authenticate_operator(&self, key: &str) -> Result<Operator, DomainError> {
        if !key.starts_with(OPERATOR_KEY_PREFIX) || key.len() > 200 {
            return Err(DomainError::Unauthorized);
        }
        // Looked up by the key's SHA-256: what the store holds, and no timing
        // of the comparison tells anything about the key itself.
        let hash = key_hash(key);
        if let Some(op) = self.operators.get(&hash) {
            return Ok(op);
        }
        match self.store.operator_by_key_hash(&hash).await? {
            Some(op) => {
                self.operators.put(hash, op.clone());
                Ok(op)
            }
            None => Err(DomainError::Unauthorized),
        }
    }

    pub async fn create_contract(
        &self,
        actor: &Actor,
        contract_no: &str,
        name: &str,
    ) -> Result<Contract, DomainError> {
        check_contract_no(contract_no)?;
        check_name("name", name)?;
        let c = Contract {
            contract_no: contract_no.to_owned(),
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        let audit = self.record(
            actor,
            "contract.create",
            Some(contract_no),
            None,
            None,
            "ok",
        );
        match self.store.create_contract(&c, audit).await {
            Ok(()) => Ok(c),
            Err(StoreError::Conflict) => Err(DomainError::Conflict("contract")),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_user(
        &self,
        actor: &Actor,
        contract_no: &str,
        new: NewUser,
    ) -> Result<User, DomainError> {
        check_contract_no(contract_no)?;
        check_user_id(&new.user_id)?;
        check_name("name", &new.name)?;
        if self.store.contract(contract_no).await?.is_none() {
            return Err(DomainError::NotFound("contract"));
        }
        if new.login_password.as_str() == new.transaction_password.as_str() {
            return Err(DomainError::InvalidRequest(
                "transaction_password must differ from login_password".into(),
            ));
        }
        let login_hash = self
            .hash_password("login_password", &new.login_password)
            .await?;
        let transaction_hash = self
            .hash_password("transaction_password", &new.transaction_password)
            .await?;
        let user = User {
            contract_no: contract_no.to_owned(),
            user_id: new.user_id.clone(),
            name: new.name,
            role: new.role,
            login_hash,
            transaction_hash,
            created_at: self.clock.now(),
        };
        let audit = self.record(
            actor,
            "user.create",
            Some(contract_no),
            Some(&new.user_id),
            None,
            format!("ok: {}", new.role),
        );
        match self.store.create_user(&user, audit).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict) => Err(DomainError::Conflict("user")),
            Err(e) => Err(e.into()),
        }
    }

    /// What an operator sees of a user: role, password lock, live token.
    pub async fn user_view(
        &self,
        contract_no: &str,
        user_id: &str,
    ) -> Result<UserView, DomainError> {
        check_contract_no(contract_no)?;
        check_user_id(user_id)?;
        let user = self
            .store
            .user(contract_no, user_id)
            .await?
            .ok_or(DomainError::NotFound("user"))?;
        let locked = self.store.password_locked(contract_no, user_id).await?;
        let token = self.store.user_token(contract_no, user_id).await?;
        Ok(UserView {
            user,
            locked,
            token,
        })
    }

    /// Operator: clears a user's password lock.
    pub async fn unlock_user(
        &self,
        actor: &Actor,
        contract_no: &str,
        user_id: &str,
    ) -> Result<UserView, DomainError> {
        check_contract_no(contract_no)?;
        check_user_id(user_id)?;
        if self.store.user(contract_no, user_id).await?.is_none() {
            return Err(DomainError::NotFound("user"));
        }
        let audit = self.record(
            actor,
            "user.unlock",
            Some(contract_no),
            Some(user_id),
            None,
            "ok",
        );
        self.store
            .password_unlock(contract_no, user_id, audit)
            .await?;
        self.user_view(contract_no, user_id).await
    }

    /// Checks a user's transaction password (取引パスワード); a wrong one counts
    /// toward the same lock as wrong login passwords.
    pub(crate) async fn check_transaction_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<User, DomainError> {
        let (c, u) = (user.contract_no.as_str(), user.user_id.as_str());
        let actor = Actor::Customer {
            contract_no: c.to_owned(),
            user_id: u.to_owned(),
        };
        if !self
            .store
            .password_attempt(c, u, self.policy.password_lock_threshold)
            .await?
        {
            self.store
                .append_audit(self.record(
                    &actor,
                    "transaction.password",
                    Some(c),
                    Some(u),
                    None,
                    "user_locked",
                ))
                .await?;
            return Err(DomainError::UserLocked);
        }
        if self
            .verify_password(Some(user.transaction_hash.clone()), password)
            .await?
        {
            self.store.password_success(c, u).await?;
            return Ok(user.clone());
        }
        let audit = self.record(
            &actor,
            "transaction.password",
            Some(c),
            Some(u),
            None,
            "invalid_credentials",
        );
        self.store
            .password_failure(
                c,
                u,
                self.policy.password_lock_threshold,
                self.clock.now(),
                audit,
            )
            .await?;
        Err(DomainError::InvalidCredentials)
    }

    /// Checks a login password: `invalid_credentials` for an unknown contract,
    /// unknown user or wrong password alike; `user_locked` after too many.
    pub(crate) async fn check_login_password(
        &self,
        action: &'static str,
        contract_no: &str,
        user_id: &str,
        password: &str,
    ) -> Result<User, DomainError> {
        check_contract_no(contract_no)?;
        check_user_id(user_id)?;
        let actor = Actor::Customer {
            contract_no: contract_no.to_owned(),
            user_id: user_id.to_owned(),
        };
        if !self
            .store
            .password_attempt(contract_no, user_id, self.policy.password_lock_threshold)
            .await?
        {
            self.store
                .append_audit(self.record(
                    &actor,
                    action,
                    Some(contract_no),
                    Some(user_id),
                    None,
                    "user_locked",
                ))
                .await?;
            return Err(DomainError::UserLocked);
        }
        let user = self.store.user(contract_no, user_id).await?;
        let ok = self
            .verify_password(user.as_ref().map(|u| u.login_hash.clone()), password)
            .await?;
        match user {
            Some(user) if ok => {
                self.store.password_success(contract_no, user_id).await?;
                Ok(user)
            }
            _ => {
                let audit = self.record(
                    &actor,
                    action,
                    Some(contract_no),
                    Some(user_id),
                    None,
                    "invalid_credentials",
                );
                let now = self.clock.now();
                let locked = self
                    .store
                    .password_failure(
                        contract_no,
                        user_id,
                        self.policy.password_lock_threshold,
                        now,
                        audit,
                    )
                    .await?;
                if locked {
                    tracing::info!(contract_no, user_id, "user locked after wrong passwords");
                }
                Err(DomainError::InvalidCredentials)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str) -> Operator {
        Operator {
            name: name.into(),
            created_at: 0,
        }
    }

    #[test]
    fn the_operator_cache_remembers_found_keys_and_stays_bounded() {
        let cache = OperatorCache::default();
        let (a, b) = (key_hash("ichido_op_a"), key_hash("ichido_op_b"));
        assert_eq!(cache.get(&a), None);
        cache.put(a, op("a"));
        assert_eq!(cache.get(&a), Some(op("a")));
        assert_eq!(cache.get(&b), None, "another key is not a hit");
        for i in 0..OPERATOR_CACHE_CAPACITY {
            cache.put(key_hash(&format!("ichido_op_{i}")), op("n"));
        }
        let len = cache.found.lock().unwrap().len();
        assert!(len <= OPERATOR_CACHE_CAPACITY, "bounded: {len}");
    }

    #[test]
    fn an_expired_entry_is_not_used() {
        let cache = OperatorCache::default();
        let a = key_hash("ichido_op_a");
        let old = Instant::now().checked_sub(OPERATOR_CACHE_TTL + Duration::from_secs(1));
        if let Some(old) = old {
            cache.found.lock().unwrap().insert(a, (op("a"), old));
            assert_eq!(cache.get(&a), None);
        }
    }
}
