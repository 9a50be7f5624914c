//! Log-in (R6): contract number, user ID, login password, and — where the user
//! has an active token — the token ID and an OTP. Sessions end after 5 idle minutes.
//!
//! Invariant: a wrong password, an unknown user or contract, a wrong or replayed
//! code and a foreign token ID all answer `invalid_credentials`, so a failure
//! never tells which element was wrong (PSD2 RTS Art. 4(3)(a)).

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Actor, Ichido};
use crate::error::DomainError;
use crate::ids::TokenId;
use crate::model::{LoginMethod, Role, Session, Token, TokenState, User};

/// Prefix of session bearer secrets.
pub const SESSION_PREFIX: &str = "ichido_s_";

/// A new session: the bearer secret is shown once.
pub struct LoginOutcome {
    pub session: Zeroizing<String>,
    pub method: LoginMethod,
    pub expires_in: u64,
}

/// The user behind a valid session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub session: Session,
}

impl Authenticated {
    pub fn actor(&self) -> Actor {
        Actor::Customer {
            contract_no: self.user.contract_no.clone(),
            user_id: self.user.user_id.clone(),
        }
    }
}

fn session_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What the user's token demands of a log-in or an approval.
pub(crate) enum Requirement {
    /// An OTP of this token.
    Otp(Token),
    /// Passwords alone suffice.
    PasswordOnly,
}

impl Ichido {
    /// The rule of R-"Who uses it", R10 and R11 for `user` with `token`.
    pub(crate) fn requirement(
        &self,
        user: &User,
        token: Option<Token>,
    ) -> Result<Requirement, DomainError> {
        let now = self.clock.now();
        match token {
            Some(t) if t.state == TokenState::Active => Ok(Requirement::Otp(t)),
            Some(t) if t.state == TokenState::Locked => Err(DomainError::TokenLocked),
            Some(t) if t.state == TokenState::Suspended => {
                let in_grace = t.grace_until.is_some_and(|g| now < g);
                if in_grace || !user.role.requires_otp() {
                    Ok(Requirement::PasswordOnly)
                } else {
                    Err(DomainError::TokenSuspended)
                }
            }
            // No token, or one still pending activation.
            _ if user.role.requires_otp() => Err(DomainError::OtpRegistrationRequired),
            _ => Ok(Requirement::PasswordOnly),
        }
    }

    /// Checks an OTP for a log-in or approval: the token must be the user's
    /// (device binding) and the code right; any failure is `invalid_credentials`.
    pub(crate) async fn second_factor(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        token_id: Option<&str>,
        otp: Option<&str>,
    ) -> Result<(), DomainError> {
        let Some(otp) = otp else {
            self.store
                .append_audit(self.token_record(actor, action, token, "otp_required"))
                .await?;
            return Err(DomainError::OtpRequired);
        };
        let code = Self::parse_code("otp", otp)?;
        if let Some(given) = token_id {
            let given: TokenId = given.parse()?;
            if given != token.token_id {
                // A token other than the user's: a failed attempt on the user's token.
                return match self
                    .count_failure(
                        actor,
                        action,
                        token,
                        TokenState::Active,
                        DomainError::InvalidOtp,
                    )
                    .await
                {
                    Err(DomainError::InvalidOtp) => Err(DomainError::InvalidCredentials),
                    other => other.map(|_| ()),
                };
            }
        }
        match self
            .check_code(
                actor,
                action,
                token,
                &code,
                TokenState::Active,
                TokenState::Active,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(DomainError::InvalidOtp | DomainError::OtpReplayed) => {
                Err(DomainError::InvalidCredentials)
            }
            Err(e) => Err(e),
        }
    }

    /// Logs a user in and opens a session.
    pub async fn login(
        &self,
        contract_no: &str,
        user_id: &str,
        login_password: &str,
        token_id: Option<&str>,
        otp: Option<&str>,
    ) -> Result<LoginOutcome, DomainError> {
        if let Some(otp) = otp {
            Self::parse_code("otp", otp)?;
        }
        if let Some(t) = token_id {
            t.parse::<TokenId>()?;
        }
        let user = self
            .check_login_password("login", contract_no, user_id, login_password)
            .await?;
        let actor = Actor::Customer {
            contract_no: user.contract_no.clone(),
            user_id: user.user_id.clone(),
        };
        let token = self.store.user_token(contract_no, user_id).await?;
        let token_ref = token.clone();
        let method = match self.requirement(&user, token) {
            Ok(Requirement::Otp(t)) => {
                self.second_factor(&actor, "login", &t, token_id, otp)
                    .await?;
                LoginMethod::Otp
            }
            Ok(Requirement::PasswordOnly) => LoginMethod::Password,
            Err(e) => {
                let r = self.record(
                    &actor,
                    "login",
                    Some(contract_no),
                    Some(user_id),
                    token_ref.as_ref().map(|t| t.token_id.as_str()),
                    e.code(),
                );
                self.store.append_audit(r).await?;
                return Err(e);
            }
        };
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut raw[..]);
        let secret = Zeroizing::new(format!("{SESSION_PREFIX}{}", hex::encode(&raw[..])));
        let now = self.clock.now();
        let idle = i64::try_from(self.policy.session_idle_secs).unwrap_or(300);
        let session = Session {
            contract_no: user.contract_no.clone(),
            user_id: user.user_id.clone(),
            method,
            created_at: now,
            expires_at: now.saturating_add(idle),
        };
        let r = self.record(
            &actor,
            "login",
            Some(contract_no),
            Some(user_id),
            token_ref.as_ref().map(|t| t.token_id.as_str()),
            format!("ok: {method}"),
        );
        self.store
            .create_session(&session_hash(&secret), &session, r)
            .await?;
        Ok(LoginOutcome {
            session: secret,
            method,
            expires_in: self.policy.session_idle_secs,
        })
    }

    /// The user of a live session; its idle expiry moves forward.
    pub async fn authenticate_session(&self, secret: &str) -> Result<Authenticated, DomainError> {
        if !secret.starts_with(SESSION_PREFIX) || secret.len() > 200 {
            return Err(DomainError::Unauthorized);
        }
        let now = self.clock.now();
        let idle = i64::try_from(self.policy.session_idle_secs).unwrap_or(300);
        let session = self
            .store
            .touch_session(&session_hash(secret), now, now.saturating_add(idle))
            .await?
            .ok_or(DomainError::Unauthorized)?;
        let user = self
            .store
            .user(&session.contract_no, &session.user_id)
            .await?
            .ok_or(DomainError::Unauthorized)?;
        Ok(Authenticated { user, session })
    }

    /// Ends a session.
    pub async fn logout(&self, secret: &str) -> Result<(), DomainError> {
        let who = self.authenticate_session(secret).await?;
        let r = self.record(
            &who.actor(),
            "logout",
            Some(&who.user.contract_no),
            Some(&who.user.user_id),
            None,
            "ok",
        );
        self.store.delete_session(&session_hash(secret), r).await?;
        Ok(())
    }

    /// Removes expired sessions (housekeeping).
    pub async fn purge_sessions(&self) -> Result<u64, DomainError> {
        Ok(self.store.purge_sessions(self.clock.now()).await?)
    }
}

/// Approvers and administrators may approve transactions.
pub(crate) fn may_approve(role: Role) -> bool {
    matches!(role, Role::Administrator | Role::Approver)
}
