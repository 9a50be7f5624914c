//! Self-service resync (同期ズレ補正) with two consecutive codes.
//!
//! Invariant: resync moves a token only forward past codes never accepted
//! (RFC 4226 §7.4, RFC 6238 §6); the replay rule survives it.

use ichido_otp::{resync_hotp, resync_totp, time_step};

use super::{Actor, Ichido};
use crate::error::DomainError;
use crate::model::{TokenKind, TokenState};
use crate::store::{Accept, Acceptance};

impl Ichido {
    /// Re-aligns the user's token with two consecutive codes `otp1`, `otp2`.
    pub async fn resync(
        &self,
        contract_no: &str,
        user_id: &str,
        login_password: &str,
        otp1: &str,
        otp2: &str,
    ) -> Result<(), DomainError> {
        let code1 = Self::parse_code("otp1", otp1)?;
        let code2 = Self::parse_code("otp2", otp2)?;
        let user = self
            .check_login_password("token.resync", contract_no, user_id, login_password)
            .await?;
        let actor = Actor::Customer {
            contract_no: user.contract_no.clone(),
            user_id: user.user_id.clone(),
        };
        let token = self
            .store
            .user_token(contract_no, user_id)
            .await?
            .ok_or(DomainError::OtpRegistrationRequired)?;
        if token.state != TokenState::Active {
            let err = super::state_error(token.state);
            self.store
                .append_audit(self.token_record(&actor, "token.resync", &token, err.code()))
                .await?;
            return Err(err);
        }
        let key = self.token_key(&token)?;
        let found = if code1.digits() != token.digits || code2.digits() != token.digits {
            None
        } else {
            match token.kind {
                TokenKind::Event => resync_hotp(
                    &key,
                    token.digits,
                    &code1,
                    &code2,
                    token.counter,
                    self.policy.resync_event_search,
                )
                .map(|counter| Acceptance::Event { counter }),
                TokenKind::Time => {
                    let now = u64::try_from(self.clock.now()).unwrap_or(0);
                    let current = time_step(now, u64::from(token.period));
                    resync_totp(
                        &key,
                        token.digits,
                        &code1,
                        &code2,
                        current,
                        self.policy.resync_time_steps(token.period),
                        token.last_step,
                    )
                    .map(|m| Acceptance::Time {
                        step: m.step,
                        offset: m.offset,
                    })
                }
            }
        };
        let Some(acceptance) = found else {
            return self
                .count_failure(
                    &actor,
                    "token.resync",
                    &token,
                    TokenState::Active,
                    DomainError::InvalidOtp,
                )
                .await
                .map(|_| ());
        };
        let accept = Accept {
            acceptance,
            from: TokenState::Active,
            to: TokenState::Active,
            now: self.clock.now(),
        };
        let audit = self.token_record(&actor, "token.resync", &token, "ok");
        self.tokens.forget(&token.token_id);
        if self.store.accept(&token.token_id, accept, audit).await? {
            Ok(())
        } else {
            self.count_failure(
                &actor,
                "token.resync",
                &token,
                TokenState::Active,
                DomainError::OtpReplayed,
            )
            .await
            .map(|_| ())
        }
    }
}
