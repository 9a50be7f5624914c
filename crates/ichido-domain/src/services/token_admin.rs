//! Operators' token forms: suspend (一時停止), resume (一時停止解除), unlock
//! (閉塞解除), deregister (登録解除). Each is one conditional state change.

use super::{state_error, Actor, Ichido};
use crate::error::DomainError;
use crate::ids::{check_contract_no, check_user_id};
use crate::model::{Token, TokenState};
use crate::store::TokenChange;

/// The longest suspension grace an operator may grant.
pub const MAX_GRACE_DAYS: u32 = 3650;

impl Ichido {
    async fn live_token(&self, contract_no: &str, user_id: &str) -> Result<Token, DomainError> {
        check_contract_no(contract_no)?;
        check_user_id(user_id)?;
        if self.store.user(contract_no, user_id).await?.is_none() {
            return Err(DomainError::NotFound("user"));
        }
        self.store
            .user_token(contract_no, user_id)
            .await?
            .ok_or(DomainError::NotFound("token"))
    }

    async fn apply(
        &self,
        actor: &Actor,
        action: &'static str,
        token: Token,
        change: TokenChange,
    ) -> Result<Token, DomainError> {
        let audit = self.token_record(actor, action, &token, "ok");
        // The entry of the validation fast path would only be a worse hint now.
        self.tokens.forget(&token.token_id);
        match self
            .store
            .change(&token.token_id, change, self.clock.now(), audit)
            .await?
        {
            Some(t) => Ok(t),
            None => {
                // Not applicable: answer idempotently when already there, else with the state.
                let now = self
                    .store
                    .token(&token.token_id)
                    .await?
                    .ok_or(DomainError::NotFound("token"))?;
                let already = matches!(
                    (change, now.state),
                    (TokenChange::Suspend { .. }, TokenState::Suspended)
                        | (TokenChange::Resume, TokenState::Active)
                );
                if already {
                    return Ok(now);
                }
                let err = match now.state {
                    TokenState::Revoked => DomainError::NotFound("token"),
                    s => state_error(s),
                };
                self.store
                    .append_audit(self.token_record(actor, action, &now, err.code()))
                    .await?;
                Err(err)
            }
        }
    }

    /// Suspends the user's token; for `grace_days` (default: policy) the user may
    /// use passwords alone. 0 means no grace.
    pub async fn suspend(
        &self,
        actor: &Actor,
        contract_no: &str,
        user_id: &str,
        grace_days: Option<u32>,
    ) -> Result<Token, DomainError> {
        let days = grace_days.unwrap_or(self.policy.suspension_grace_days);
        if days > MAX_GRACE_DAYS {
            return Err(DomainError::InvalidRequest(format!(
                "grace_days must be at most {MAX_GRACE_DAYS}"
            )));
        }
        let token = self.live_token(contract_no, user_id).await?;
        let grace_until =
            (days > 0).then(|| self.clock.now().saturating_add(i64::from(days) * 86_400));
        self.apply(
            actor,
            "token.suspend",
            token,
            TokenChange::Suspend { grace_until },
        )
        .await
    }

    pub async fn resume(
        &self,
        actor: &Actor,
        contract_no: &str,
        user_id: &str,
    ) -> Result<Token, DomainError> {
        let token = self.live_token(contract_no, user_id).await?;
        self.apply(actor, "token.resume", token, TokenChange::Resume)
            .await
    }

    pub async fn unlock_token(
        &self,
        actor: &Actor,
        contract_no: &str,
        user_id: &str,
    ) -> Result<Token, DomainError> {
        let token = self.live_token(contract_no, user_id).await?;
        self.apply(actor, "token.unlock", token, TokenChange::Unlock)
            .await
    }

    /// Deregisters the token: revoked for good, its sealed secret destroyed.
    pub async fn revoke(
        &self,
        actor: &Actor,
        contract_no: &str,
        user_id: &str,
    ) -> Result<Token, DomainError> {
        let token = self.live_token(contract_no, user_id).await?;
        let id = token.token_id.clone();
        let revoked = self
            .apply(actor, "token.revoke", token, TokenChange::Revoke)
            .await;
        // Its key is never needed again: wipe it now rather than at eviction.
        self.keys.forget(&id);
        revoked
    }
}
