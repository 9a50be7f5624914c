//! Self-registration (利用開始登録) and activation with the first code.
//!
//! Invariant: one non-revoked token per user; the secret leaves the server once,
//! in the registration answer, and is stored only sealed.

use ichido_otp::uri::{KeyUri, OtpKind};
use rand::RngCore;
use zeroize::Zeroizing;

use super::{Actor, Ichido};
use crate::error::{DomainError, StoreError};
use crate::ids::TokenId;
use crate::model::{Token, TokenKind, TokenState};

/// What the registrant receives, once.
pub struct Registration {
    pub token: Token,
    pub secret: Zeroizing<Vec<u8>>,
    pub otpauth_uri: Zeroizing<String>,
}

impl Ichido {
    /// Registers a new pending token for a user who proves contract number,
    /// user ID and login password. A pending token of the same user is replaced.
    pub async fn register(
        &self,
        contract_no: &str,
        user_id: &str,
        login_password: &str,
        kind: TokenKind,
    ) -> Result<Registration, DomainError> {
        let user = self
            .check_login_password("token.register", contract_no, user_id, login_password)
            .await?;
        let actor = Actor::Customer {
            contract_no: user.contract_no.clone(),
            user_id: user.user_id.clone(),
        };
        if let Some(t) = self.store.user_token(contract_no, user_id).await? {
            if t.state != TokenState::Pending {
                let audit = self.token_record(&actor, "token.register", &t, "token_exists");
                self.store.append_audit(audit).await?;
                return Err(DomainError::TokenExists);
            }
        }
        let mut secret = Zeroizing::new(vec![0u8; self.policy.secret_bytes]);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let now = self.clock.now();
        for _ in 0..4 {
            let token_id = TokenId::random();
            let sealed = self
                .master
                .seal(&token_id, &secret)
                .map_err(|e| DomainError::Internal(e.to_string()))?;
            let token = Token {
                token_id: token_id.clone(),
                contract_no: user.contract_no.clone(),
                user_id: user.user_id.clone(),
                kind,
                state: TokenState::Pending,
                algorithm: self.policy.algorithm,
                digits: self.policy.digits,
                period: self.policy.time_period,
                counter: 0,
                last_step: None,
                time_offset: 0,
                failures: 0,
                sealed_secret: sealed,
                created_at: now,
                activated_at: None,
                grace_until: None,
                updated_at: now,
            };
            let audit = self.token_record(&actor, "token.register", &token, format!("ok: {kind}"));
            match self.store.insert_token(&token, i64::MAX, audit).await {
                Ok(()) => {
                    let uri = self.key_uri(&token, &secret);
                    return Ok(Registration {
                        token,
                        secret,
                        otpauth_uri: uri,
                    });
                }
                Err(StoreError::Conflict) => {
                    // Either a live token appeared meanwhile, or the random ID collided.
                    if let Some(t) = self.store.user_token(contract_no, user_id).await? {
                        if t.state != TokenState::Pending {
                            return Err(DomainError::TokenExists);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::Internal(
            "could not allocate a token ID".into(),
        ))
    }

    fn key_uri(&self, token: &Token, secret: &[u8]) -> Zeroizing<String> {
        let uri = KeyUri {
            kind: match token.kind {
                TokenKind::Event => OtpKind::Hotp,
                TokenKind::Time => OtpKind::Totp,
            },
            issuer: Some(self.policy.issuer.clone()),
            account: format!("{}/{}", token.contract_no, token.user_id),
            secret: Zeroizing::new(secret.to_vec()),
            algorithm: token.algorithm,
            digits: token.digits,
            period: u64::from(token.period),
            counter: match token.kind {
                TokenKind::Event => Some(token.counter),
                TokenKind::Time => None,
            },
        };
        Zeroizing::new(uri.to_uri())
    }

    /// Activates a pending token with its first code.
    pub async fn activate(&self, token_id: &str, otp: &str) -> Result<Token, DomainError> {
        let token_id: TokenId = token_id.parse()?;
        let code = Self::parse_code("otp", otp)?;
        let token = self
            .store
            .token(&token_id)
            .await?
            .ok_or(DomainError::NotFound("token"))?;
        let actor = Actor::Customer {
            contract_no: token.contract_no.clone(),
            user_id: token.user_id.clone(),
        };
        if token.state == TokenState::Active {
            return Err(DomainError::InvalidRequest(
                "the token is already active".into(),
            ));
        }
        if token.state == TokenState::Pending
            && token.created_at < self.clock.now() - self.pending_ttl()
        {
            self.discard_expired_pending().await?;
            return Err(DomainError::TokenRevoked);
        }
        self.check_code(
            &actor,
            "token.activate",
            &token,
            &code,
            TokenState::Pending,
            TokenState::Active,
        )
        .await?;
        self.store
            .token(&token_id)
            .await?
            .ok_or(DomainError::NotFound("token"))
    }

    fn pending_ttl(&self) -> i64 {
        i64::try_from(self.policy.pending_ttl_secs).unwrap_or(i64::MAX)
    }

    /// Discards (revokes, destroying the secret) pending tokens older than the TTL.
    pub async fn discard_expired_pending(&self) -> Result<u64, DomainError> {
        let now = self.clock.now();
        let n = self
            .store
            .discard_pending(
                now.saturating_sub(self.pending_ttl()),
                now,
                &Actor::System.label(),
            )
            .await?;
        if n > 0 {
            tracing::info!(discarded = n, "discarded pending tokens never activated");
        }
        Ok(n)
    }
}
