//! The one OTP check shared by validation, activation and log-in.
//!
//! Invariant: a code is accepted only through the store's conditional write, so
//! an accepted code (and every earlier one) is never accepted again; wrong codes
//! and replays each count one failure, durably, toward the token lock.

use std::sync::Arc;

use ichido_otp::{time_step, verify_hotp, verify_totp, Code, HotpVerdict, Key, TotpVerdict};

use super::{state_error, Actor, Ichido};
use crate::error::DomainError;
use crate::ids::TokenId;
use crate::model::{Token, TokenKind, TokenState};
use crate::store::{Accept, Acceptance, FailureCount, Position};

/// What the check decided, before it is written.
enum Verdict {
    Accepted(Acceptance),
    Replayed,
    Wrong,
}

impl Ichido {
    /// Parses a code as the contract defines it: 6–8 ASCII digits.
    pub(crate) fn parse_code(field: &'static str, otp: &str) -> Result<Code, DomainError> {
        Code::parse(otp).map_err(|_| {
            DomainError::InvalidRequest(format!("{field} must be a string of 6 to 8 digits"))
        })
    }

    /// The HMAC key of a token: from the key cache, else opened from its
    /// sealed secret (and cached, keyed by the sealed bytes it came from).
    pub(crate) fn token_key(&self, token: &Token) -> Result<Arc<Key>, DomainError> {
        self.keys
            .get_or_open(&token.token_id, &token.sealed_secret, || {
                let secret = self
                    .master
                    .open(&token.token_id, &token.sealed_secret)
                    .map_err(|e| DomainError::Internal(format!("token {}: {e}", token.token_id)))?;
                Key::new(token.algorithm, &secret)
                    .map_err(|e| DomainError::Internal(format!("token {}: {e}", token.token_id)))
            })
    }

    fn decide(&self, token: &Token, key: &Key, code: &Code) -> Verdict {
        if code.digits() != token.digits {
            return Verdict::Wrong;
        }
        match token.kind {
            TokenKind::Event => match verify_hotp(
                key,
                token.digits,
                code,
                token.counter,
                self.policy.event_look_ahead,
                self.policy.event_look_behind,
            ) {
                HotpVerdict::Accepted { counter } => {
                    Verdict::Accepted(Acceptance::Event { counter })
                }
                HotpVerdict::Spent { .. } => Verdict::Replayed,
                HotpVerdict::Rejected => Verdict::Wrong,
            },
            TokenKind::Time => {
                let now = u64::try_from(self.clock.now()).unwrap_or(0);
                let current = time_step(now, u64::from(token.period));
                match verify_totp(
                    key,
                    token.digits,
                    code,
                    current,
                    token.time_offset,
                    self.policy.time_window,
                    token.last_step,
                ) {
                    TotpVerdict::Accepted(m) => {
                        let limit = i64::try_from(self.policy.resync_time_steps(token.period))
                            .unwrap_or(i64::MAX);
                        let offset = m.offset.clamp(-limit, limit);
                        Verdict::Accepted(Acceptance::Time {
                            step: m.step,
                            offset,
                        })
                    }
                    TotpVerdict::Spent(_) => Verdict::Replayed,
                    TotpVerdict::Rejected => Verdict::Wrong,
                }
            }
        }
    }

    /// Checks `otp` for `token`, which must be in state `from`; on success the
    /// token is left in `to`. Counts a failure for a wrong or replayed code.
    pub(crate) async fn check_code(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        code: &Code,
        from: TokenState,
        to: TokenState,
    ) -> Result<Acceptance, DomainError> {
        if token.state != from {
            let err = state_error(token.state);
            self.store
                .append_audit(self.token_record(actor, action, token, err.code()))
                .await?;
            return Err(err);
        }
        let key = self.token_key(token)?;
        let verdict = self.decide(token, &key, code);
        self.settle(actor, action, token, verdict, from, to).await
    }

    /// Validation's fast path: decides on the cached entry of an active token
    /// (see [`crate::tokencache`]) and writes the decision conditionally: a
    /// right code with the same conditional write as always, a wrong or spent
    /// one as a failure counted only if the row still stands where the entry
    /// says. `None` when the entry has nothing to say (no entry, a write that
    /// changed no row): the caller then decides on the row read from the
    /// store, and nothing has been counted or written.
    pub(crate) async fn check_cached(
        &self,
        actor: &Actor,
        action: &'static str,
        token_id: &TokenId,
        code: &Code,
    ) -> Option<Result<Acceptance, DomainError>> {
        let token = self.tokens.get(token_id)?;
        let key = self.token_key(&token).ok()?;
        let acceptance = match self.decide(&token, &key, code) {
            Verdict::Accepted(acceptance) => acceptance,
            Verdict::Replayed => {
                return self
                    .fail_cached(actor, action, &token, DomainError::OtpReplayed)
                    .await
            }
            Verdict::Wrong => {
                return self
                    .fail_cached(actor, action, &token, DomainError::InvalidOtp)
                    .await
            }
        };
        let now = self.clock.now();
        let accept = Accept {
            acceptance,
            from: TokenState::Active,
            to: TokenState::Active,
            now,
        };
        let audit = self.token_record(actor, action, &token, "ok");
        match self.store.accept(&token.token_id, accept, audit).await {
            Ok(true) => {
                tracing::debug!(token_id = %token.token_id, "code accepted");
                self.tokens.put(&advanced(token, acceptance, now));
                Some(Ok(acceptance))
            }
            Ok(false) => {
                self.tokens.forget(token_id);
                None
            }
            Err(e) => {
                self.tokens.forget(token_id);
                Some(Err(e.into()))
            }
        }
    }

    /// Counts `failure` for a code decided on the cached entry `token`, only
    /// if the row still stands where the entry says (then the row would
    /// decide alike); else `None`, nothing written.
    async fn fail_cached(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        failure: DomainError,
    ) -> Option<Result<Acceptance, DomainError>> {
        let seen = Position {
            counter: token.counter,
            last_step: token.last_step,
            time_offset: token.time_offset,
        };
        let counted = self
            .store
            .record_failure(
                &token.token_id,
                TokenState::Active,
                Some(seen),
                self.policy.token_lock_threshold,
                self.clock.now(),
                self.token_record(actor, action, token, failure.code()),
            )
            .await;
        match counted {
            Ok(Some(c)) => {
                refused(token, &c, &failure);
                if c.state != TokenState::Active {
                    self.tokens.forget(&token.token_id);
                }
                Some(Err(failure))
            }
            Ok(None) => {
                self.tokens.forget(&token.token_id);
                None
            }
            Err(e) => {
                self.tokens.forget(&token.token_id);
                Some(Err(e.into()))
            }
        }
    }

    /// Validates `otp` for `token` as read from the store (state `Active`),
    /// and keeps the row for the fast path when the code was accepted or
    /// refused as wrong or spent (a failure does not move the row).
    pub(crate) async fn check_read(
        &self,
        actor: &Actor,
        action: &'static str,
        token: Token,
        code: &Code,
    ) -> Result<Acceptance, DomainError> {
        let checked = self
            .check_code(
                actor,
                action,
                &token,
                code,
                TokenState::Active,
                TokenState::Active,
            )
            .await;
        match &checked {
            Ok(acceptance) => self
                .tokens
                .put(&advanced(token, *acceptance, self.clock.now())),
            Err(DomainError::InvalidOtp | DomainError::OtpReplayed) => self.tokens.put(&token),
            Err(_) => self.tokens.forget(&token.token_id),
        }
        checked
    }

    /// Writes what [`Self::check_code`] decided: the conditional write of an
    /// accepted code, else one failure.
    async fn settle(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        verdict: Verdict,
        from: TokenState,
        to: TokenState,
    ) -> Result<Acceptance, DomainError> {
        let failure = match verdict {
            Verdict::Accepted(acceptance) => {
                let accept = Accept {
                    acceptance,
                    from,
                    to,
                    now: self.clock.now(),
                };
                let won = self
                    .store
                    .accept(
                        &token.token_id,
                        accept,
                        self.token_record(actor, action, token, "ok"),
                    )
                    .await?;
                if won {
                    tracing::debug!(token_id = %token.token_id, "code accepted");
                    return Ok(acceptance);
                }
                // Another request moved the token first: either it used this very
                // code (a replay), or the token changed state meanwhile.
                match self.store.token(&token.token_id).await? {
                    Some(now) if now.state != from => {
                        let err = state_error(now.state);
                        self.store
                            .append_audit(self.token_record(actor, action, token, err.code()))
                            .await?;
                        return Err(err);
                    }
                    _ => DomainError::OtpReplayed,
                }
            }
            Verdict::Replayed => DomainError::OtpReplayed,
            Verdict::Wrong => DomainError::InvalidOtp,
        };
        self.count_failure(actor, action, token, from, failure)
            .await
    }

    /// Counts one failure and answers with `failure`, or with the state error if
    /// the token left `from` meanwhile.
    pub(crate) async fn count_failure(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        from: TokenState,
        failure: DomainError,
    ) -> Result<Acceptance, DomainError> {
        let counted = self
            .store
            .record_failure(
                &token.token_id,
                from,
                None,
                self.policy.token_lock_threshold,
                self.clock.now(),
                self.token_record(actor, action, token, failure.code()),
            )
            .await?;
        match counted {
            Some(c) => {
                refused(token, &c, &failure);
                Err(failure)
            }
            None => match self.store.token(&token.token_id).await? {
                Some(t) if t.state != from => Err(state_error(t.state)),
                _ => Err(failure),
            },
        }
    }
}

/// Logs a refused code once its failure is counted (never the code itself).
fn refused(token: &Token, c: &FailureCount, failure: &DomainError) {
    tracing::info!(token_id = %token.token_id, failures = c.failures, state = %c.state, outcome = failure.code(), "code refused");
}

/// `token` as the conditional write of `acceptance` at `now` left its row.
fn advanced(mut token: Token, acceptance: Acceptance, now: i64) -> Token {
    match acceptance {
        Acceptance::Event { counter } => token.counter = counter.saturating_add(1),
        Acceptance::Time { step, offset } => {
            token.last_step = Some(step);
            token.time_offset = offset;
        }
    }
    token.failures = 0;
    token.updated_at = now;
    token
}
