//! The operator console's sign-in: operator name, password and a TOTP code of
//! the operator's own token, then a console session kept in the store.
//!
//! Invariants: the TOTP secret is stored only sealed (bound to `operator:NAME`);
//! a code's time step is accepted once, by one conditional write, so a code seen
//! over an operator's shoulder is worthless; every attempt is counted before it
//! is checked, and a wrong name, password or code answer alike.

use ichido_otp::uri::{KeyUri, OtpKind};
use ichido_otp::{time_step, verify_totp, Algorithm, Digits, Key, TotpVerdict};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Actor, Ichido};
use crate::error::DomainError;
use crate::ids::check_name;
use crate::model::Operator;
use crate::store::OperatorAttempt;

/// Prefix of console session secrets (distinct from customers' `ichido_s_`).
pub const CONSOLE_SESSION_PREFIX: &str = "ichido_c_";

/// Consecutive failed sign-ins that lock an operator out of the console.
pub const CONSOLE_LOCK_THRESHOLD: u32 = 5;

/// Console TOTP parameters: what every authenticator app expects.
const CONSOLE_PERIOD: u64 = 30;
const CONSOLE_WINDOW: u64 = 1;
const CONSOLE_SECRET_BYTES: usize = 20;

/// A console session: the bearer secret is shown once (it goes in a cookie).
pub struct ConsoleSignIn {
    pub operator: Operator,
    pub session: Zeroizing<String>,
    pub expires_in: u64,
}

fn console_aad(name: &str) -> Vec<u8> {
    format!("operator:{name}").into_bytes()
}

fn session_hash(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ichido console session v1\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

impl Ichido {
    /// Gives an existing operator console credentials (or replaces them): the
    /// password and a new TOTP secret, whose otpauth URI is returned, once.
    /// Clears the console lock and ends the operator's console sessions.
    pub async fn set_console_credentials(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Zeroizing<String>, DomainError> {
        check_name("name", name)?;
        if !(8..=256).contains(&password.len()) {
            return Err(DomainError::InvalidRequest(
                "the console password must be 8 to 256 bytes".into(),
            ));
        }
        if self.store.operator(name).await?.is_none() {
            return Err(DomainError::NotFound("operator"));
        }
        let hash = self.hash_password("password", password).await?;
        let mut secret = Zeroizing::new(vec![0u8; CONSOLE_SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let sealed = self
            .master
            .seal_bound(&console_aad(name), &secret)
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let audit = self.record(
            &Actor::System,
            "operator.console_credentials",
            None,
            None,
            None,
            format!("ok: {name}"),
        );
        self.store
            .set_operator_credentials(name, &hash, &sealed, self.clock.now(), audit)
            .await?;
        let uri = KeyUri {
            kind: OtpKind::Totp,
            issuer: Some(format!("{} console", self.policy.issuer)),
            account: name.to_owned(),
            secret,
            algorithm: Algorithm::Sha1,
            digits: Digits::SIX,
            period: CONSOLE_PERIOD,
            counter: None,
        };
        Ok(Zeroizing::new(uri.to_uri()))
    }

    /// Signs an operator in to the console. Any wrong element answers
    /// `invalid_credentials`; `user_locked` after too many failures.
    pub async fn console_sign_in(
        &self,
        name: &str,
        password: &str,
        otp: &str,
    ) -> Result<ConsoleSignIn, DomainError> {
        let code = Self::parse_code("otp", otp)?;
        if name.is_empty() || name.len() > 200 {
            return Err(DomainError::InvalidCredentials);
        }
        let actor = Actor::Operator(name.to_owned());
        let refuse = |outcome: &'static str| {
            self.record(&actor, "operator.sign_in", None, None, None, outcome)
        };
        let attempt = self
            .store
            .operator_attempt(name, CONSOLE_LOCK_THRESHOLD)
            .await?;
        let creds = match attempt {
            OperatorAttempt::Counted => self.store.operator_credentials(name).await?,
            OperatorAttempt::Locked | OperatorAttempt::Unknown => None,
        };
        // The same argon2id work whether or not the operator exists.
        let password_ok = self
            .verify_password(creds.as_ref().map(|c| c.password_hash.clone()), password)
            .await?;
        if attempt == OperatorAttempt::Locked {
            self.store.append_audit(refuse("user_locked")).await?;
            return Err(DomainError::UserLocked);
        }
        let (Some(creds), true) = (creds, password_ok) else {
            if attempt == OperatorAttempt::Counted {
                self.store
                    .append_audit(refuse("invalid_credentials"))
                    .await?;
            }
            return Err(DomainError::InvalidCredentials);
        };
        let secret = self
            .master
            .open_bound(&console_aad(name), &creds.sealed_secret)
            .map_err(|e| DomainError::Internal(format!("operator {name}: {e}")))?;
        let key = Key::new(Algorithm::Sha1, &secret)
            .map_err(|e| DomainError::Internal(format!("operator {name}: {e}")))?;
        let now = self.clock.now();
        let current = time_step(u64::try_from(now).unwrap_or(0), CONSOLE_PERIOD);
        let step = match verify_totp(
            &key,
            Digits::SIX,
            &code,
            current,
            0,
            CONSOLE_WINDOW,
            creds.last_step,
        ) {
            TotpVerdict::Accepted(m) => m.step,
            TotpVerdict::Spent(_) | TotpVerdict::Rejected => {
                self.store
                    .append_audit(refuse("invalid_credentials"))
                    .await?;
                return Err(DomainError::InvalidCredentials);
            }
        };
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut raw[..]);
        let session = Zeroizing::new(format!("{CONSOLE_SESSION_PREFIX}{}", hex::encode(&raw[..])));
        let idle = i64::try_from(self.policy.session_idle_secs).unwrap_or(300);
        let won = self
            .store
            .operator_sign_in(
                name,
                step,
                &session_hash(&session),
                now,
                now.saturating_add(idle),
                self.record(&actor, "operator.sign_in", None, None, None, "ok"),
            )
            .await?;
        if !won {
            // Another sign-in used this very code first.
            self.store
                .append_audit(refuse("invalid_credentials"))
                .await?;
            return Err(DomainError::InvalidCredentials);
        }
        let operator = self
            .store
            .operator(name)
            .await?
            .ok_or(DomainError::Unauthorized)?;
        Ok(ConsoleSignIn {
            operator,
            session,
            expires_in: self.policy.session_idle_secs,
        })
    }

    /// The operator of a live console session; its idle expiry moves forward.
    pub async fn console_session(&self, secret: &str) -> Result<Operator, DomainError> {
        if !secret.starts_with(CONSOLE_SESSION_PREFIX) || secret.len() > 200 {
            return Err(DomainError::Unauthorized);
        }
        let now = self.clock.now();
        let idle = i64::try_from(self.policy.session_idle_secs).unwrap_or(300);
        let name = self
            .store
            .touch_operator_session(&session_hash(secret), now, now.saturating_add(idle))
            .await?
            .ok_or(DomainError::Unauthorized)?;
        self.store
            .operator(&name)
            .await?
            .ok_or(DomainError::Unauthorized)
    }

    /// Ends a console session.
    pub async fn console_sign_out(&self, secret: &str) -> Result<(), DomainError> {
        let op = self.console_session(secret).await?;
        let audit = self.record(
            &Actor::Operator(op.name.clone()),
            "operator.sign_out",
            None,
            None,
            None,
            "ok",
        );
        self.store
            .delete_operator_session(&session_hash(secret), audit)
            .await?;
        Ok(())
    }
}
