//! The one OTP check shared by validation, activation and log-in.
//!
//! Invariant: a code is accepted only through the store's conditional write, so
//! an accepted code (and every earlier one) is never accepted again; wrong codes
//! and replays each count one failure, durably, toward the token lock.

use std::sync::{Arc, Mutex, PoisonError};

use ichido_otp::{time_step, verify_hotp, verify_totp, Code, HotpVerdict, Key, TotpVerdict};

use super::{state_error, Actor, Ichido};
use crate::audit::AuditRecord;
use crate::clock::Clock;
use crate::error::DomainError;
use crate::ids::TokenId;
use crate::keycache::KeyCache;
use crate::model::{Token, TokenKind, TokenState};
use crate::policy::Policy;
use crate::seal::MasterKey;
use crate::store::{Accept, Acceptance, FailureCount, Position, RowWrite, RowWritten};

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
        open_key(&self.keys, &self.master, token)
    }

    fn decide(&self, token: &Token, key: &Key, code: &Code) -> Verdict {
        decide(&self.policy, self.clock.as_ref(), token, key, code)
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

    /// Validates `code` for the active token `token_id` on its row as the
    /// store holds it: the store reads the row, this check decides on it and
    /// the store writes the decision (SQLite: all inside the writer's batch,
    /// so the request needs no read of its own and the row decided on is the
    /// row written). Keeps the row for the fast path when the code was
    /// accepted or refused as wrong or spent (a failure does not move it).
    pub(crate) async fn check_on_row(
        &self,
        actor: &Actor,
        action: &'static str,
        token_id: &TokenId,
        code: &Code,
    ) -> Result<Acceptance, DomainError> {
        let check = RowCheck {
            keys: Arc::clone(&self.keys),
            master: Arc::clone(&self.master),
            clock: Arc::clone(&self.clock),
            policy: Arc::clone(&self.policy),
            actor: actor.label(),
            action,
            code: *code,
        };
        let slot: Arc<Mutex<Option<RowVerdict>>> = Arc::default();
        let verdict_of = Arc::clone(&slot);
        let decide = Box::new(move |row: Option<&Token>| {
            let (verdict, write) = check.run(row);
            *verdict_of.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
            write
        });
        let (token, written) = self.store.decide_on_row(token_id, decide).await?;
        let verdict = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mismatch = || DomainError::Internal("the store wrote another decision".into());
        match (verdict, token) {
            (Some(RowVerdict::NotFound), _) => Err(DomainError::NotFound("token")),
            (Some(RowVerdict::Refused(e) | RowVerdict::Broken(e)), _) => {
                self.tokens.forget(token_id);
                Err(e)
            }
            (Some(RowVerdict::Accepted(acceptance)), Some(token)) => match written {
                RowWritten::Accept(true) => {
                    tracing::debug!(token_id = %token.token_id, "code accepted");
                    self.tokens
                        .put(&advanced(token, acceptance, self.clock.now()));
                    Ok(acceptance)
                }
                RowWritten::Accept(false) => {
                    self.tokens.forget(token_id);
                    self.lost(actor, action, &token, TokenState::Active).await
                }
                _ => Err(mismatch()),
            },
            (Some(RowVerdict::Failed(failure)), Some(token)) => match written {
                RowWritten::Failure(Some(c)) => {
                    refused(&token, &c, &failure);
                    if c.state == TokenState::Active {
                        self.tokens.put(&token);
                    } else {
                        self.tokens.forget(token_id);
                    }
                    Err(failure)
                }
                RowWritten::Failure(None) => {
                    self.tokens.forget(token_id);
                    match self.store.token(token_id).await? {
                        Some(t) if t.state != TokenState::Active => Err(state_error(t.state)),
                        _ => Err(failure),
                    }
                }
                _ => Err(mismatch()),
            },
            _ => Err(mismatch()),
        }
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
                return self.lost(actor, action, token, from).await;
            }
            Verdict::Replayed => DomainError::OtpReplayed,
            Verdict::Wrong => DomainError::InvalidOtp,
        };
        self.count_failure(actor, action, token, from, failure)
            .await
    }

    /// Answers a right code whose conditional write changed no row: another
    /// request moved the token first, and either it used this very code (a
    /// replay, counted as a failure) or the token changed state meanwhile.
    async fn lost(
        &self,
        actor: &Actor,
        action: &'static str,
        token: &Token,
        from: TokenState,
    ) -> Result<Acceptance, DomainError> {
        match self.store.token(&token.token_id).await? {
            Some(now) if now.state != from => {
                let err = state_error(now.state);
                self.store
                    .append_audit(self.token_record(actor, action, token, err.code()))
                    .await?;
                Err(err)
            }
            _ => {
                self.count_failure(actor, action, token, from, DomainError::OtpReplayed)
                    .await
            }
        }
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

/// The HMAC key of `token`: from `keys`, else opened from its sealed secret
/// under `master` (and cached, keyed by the sealed bytes it came from).
fn open_key(
    keys: &KeyCache<Key>,
    master: &MasterKey,
    token: &Token,
) -> Result<Arc<Key>, DomainError> {
    keys.get_or_open(&token.token_id, &token.sealed_secret, || {
        let secret = master
            .open(&token.token_id, &token.sealed_secret)
            .map_err(|e| DomainError::Internal(format!("token {}: {e}", token.token_id)))?;
        Key::new(token.algorithm, &secret)
            .map_err(|e| DomainError::Internal(format!("token {}: {e}", token.token_id)))
    })
}

/// Is `code` right for `token` (whose key is `key`) now?
fn decide(policy: &Policy, clock: &dyn Clock, token: &Token, key: &Key, code: &Code) -> Verdict {
    if code.digits() != token.digits {
        return Verdict::Wrong;
    }
    match token.kind {
        TokenKind::Event => match verify_hotp(
            key,
            token.digits,
            code,
            token.counter,
            policy.event_look_ahead,
            policy.event_look_behind,
        ) {
            HotpVerdict::Accepted { counter } => Verdict::Accepted(Acceptance::Event { counter }),
            HotpVerdict::Spent { .. } => Verdict::Replayed,
            HotpVerdict::Rejected => Verdict::Wrong,
        },
        TokenKind::Time => {
            let now = u64::try_from(clock.now()).unwrap_or(0);
            let current = time_step(now, u64::from(token.period));
            match verify_totp(
                key,
                token.digits,
                code,
                current,
                token.time_offset,
                policy.time_window,
                token.last_step,
            ) {
                TotpVerdict::Accepted(m) => {
                    let limit =
                        i64::try_from(policy.resync_time_steps(token.period)).unwrap_or(i64::MAX);
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

/// What a check on the store's row decided, kept for the caller while the
/// store writes it (see [`Ichido::check_on_row`]).
enum RowVerdict {
    NotFound,
    /// The token is not active: its state answers, audited.
    Refused(DomainError),
    /// The secret could not be opened: nothing written.
    Broken(DomainError),
    Accepted(Acceptance),
    /// A wrong or spent code: one failure.
    Failed(DomainError),
}

/// Everything a validation needs to decide on a row where the store reads it:
/// shared parts of [`Ichido`] and the request.
struct RowCheck {
    keys: Arc<KeyCache<Key>>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    policy: Arc<Policy>,
    actor: String,
    action: &'static str,
    code: Code,
}

impl RowCheck {
    fn record(&self, token: &Token, outcome: &str) -> AuditRecord {
        AuditRecord::of_token(
            self.clock.now(),
            self.actor.clone(),
            self.action,
            token,
            outcome,
        )
    }

    /// The check of an active token's code, as [`Ichido::check_code`] makes
    /// it, and the write that goes with it.
    fn run(&self, row: Option<&Token>) -> (RowVerdict, RowWrite) {
        let Some(token) = row else {
            return (RowVerdict::NotFound, RowWrite::Nothing);
        };
        if token.state != TokenState::Active {
            let err = state_error(token.state);
            let audit = self.record(token, err.code());
            return (RowVerdict::Refused(err), RowWrite::Audit(audit));
        }
        let key = match open_key(&self.keys, &self.master, token) {
            Ok(key) => key,
            Err(e) => return (RowVerdict::Broken(e), RowWrite::Nothing),
        };
        let failure = match decide(&self.policy, self.clock.as_ref(), token, &key, &self.code) {
            Verdict::Accepted(acceptance) => {
                let accept = Accept {
                    acceptance,
                    from: TokenState::Active,
                    to: TokenState::Active,
                    now: self.clock.now(),
                };
                let audit = self.record(token, "ok");
                return (
                    RowVerdict::Accepted(acceptance),
                    RowWrite::Accept { accept, audit },
                );
            }
            Verdict::Replayed => DomainError::OtpReplayed,
            Verdict::Wrong => DomainError::InvalidOtp,
        };
        let write = RowWrite::Failure {
            state: TokenState::Active,
            threshold: self.policy.token_lock_threshold,
            now: self.clock.now(),
            audit: self.record(token, failure.code()),
        };
        (RowVerdict::Failed(failure), write)
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
