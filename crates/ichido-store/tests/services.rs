#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Domain + storage conformance suite: the token rules of the contract, driven
//! through `ichido_domain::Ichido` over a real store with a fixed clock (no sleeps).
//!
//! Every test runs on SQLite and on PostgreSQL (`sqlite::…` and `postgres::…`, see
//! `harness::conformance!`); the stores are built in `harness::store` /
//! `harness::FileDb::open` only. Every test ends by checking the audit
//! chain and that no secret, code or password was logged.

#[macro_use]
#[path = "services/harness.rs"]
mod harness;
#[path = "services/console.rs"]
mod console;
#[path = "services/import.rs"]
mod import;
#[path = "services/keys.rs"]
mod keys;

use std::sync::Arc;

use console::*;
use harness::*;
use ichido_domain::audit::AuditFilter;
use ichido_domain::model::{TokenKind, TokenState};
use ichido_domain::seal::MasterKey;
use ichido_domain::store::Acceptance;
use ichido_domain::store::MetaStore;
use ichido_domain::{DomainError, FixedClock, Policy};
use ichido_otp::uri::{KeyUri, OtpKind};
use ichido_otp::{base32, Algorithm, Digits, Key};
use ichido_store::{PgStore, StoreOptions};
use import::*;
use keys::*;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const C: &str = "C-1001";

// ---------------------------------------------------------------------------
// 1. Registration
// ---------------------------------------------------------------------------

async fn registration_gives_a_pending_token_with_a_luhn_id_and_a_matching_uri() {
    let c = Center::new().await;
    for (user, kind) in [("taro", TokenKind::Event), ("hanako", TokenKind::Time)] {
        c.user(C, user).await;
        let t = c.register(C, user, kind).await;

        // Token ID: 4 capital letters, 8 digits, the last a Luhn check digit.
        let id = t.token_id.as_str();
        assert_eq!(id.len(), 12, "{id}");
        assert!(id[..4].bytes().all(|b| b.is_ascii_uppercase()), "{id}");
        assert!(id[4..].bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(luhn_ok(&id[4..]), "bad Luhn check digit: {id}");

        // Stored pending with the contract's defaults.
        let tok = c.stored(&t).await;
        assert_eq!(tok.state, TokenState::Pending);
        assert_eq!(tok.kind, kind);
        assert_eq!(tok.algorithm, Algorithm::Sha1);
        assert_eq!(tok.digits, Digits::SIX);
        assert_eq!(tok.period, 30);
        assert_eq!(tok.counter, 0);
        assert_eq!(tok.failures, 0);
        assert_eq!(tok.created_at, T0);
        assert_eq!(tok.activated_at, None);
        let live = c.live(&t).await.expect("pending token is the live one");
        assert_eq!(live.token_id.as_str(), id);
        assert_eq!(live.state, TokenState::Pending);

        // The secret round-trips through base32 and is 20 bytes (RFC 4226).
        assert_eq!(t.secret.len(), 20);
        assert_eq!(base32::decode(&t.secret_b32).unwrap(), t.secret);
        assert!(!t.secret_b32.contains('='), "base32 without padding");

        // The otpauth URI carries the same secret and parameters.
        let uri = KeyUri::parse(&t.otpauth_uri).expect("otpauth URI parses");
        assert_eq!(&uri.secret[..], &t.secret[..]);
        assert!(t.otpauth_uri.contains(&format!("secret={}", t.secret_b32)));
        assert_eq!(uri.issuer.as_deref(), Some("ichido"));
        assert_eq!(uri.account, format!("{C}/{user}"));
        assert_eq!(uri.algorithm, Algorithm::Sha1);
        assert_eq!(uri.digits, Digits::SIX);
        assert_eq!(uri.period, 30);
        match kind {
            TokenKind::Event => {
                assert_eq!(uri.kind, OtpKind::Hotp);
                assert_eq!(uri.counter, Some(0));
            }
            TokenKind::Time => {
                assert_eq!(uri.kind, OtpKind::Totp);
                assert_eq!(uri.counter, None);
            }
        }
        let uri_key = uri.key().unwrap();
        assert_eq!(
            uri_key.hotp(0, Digits::SIX).to_string(),
            t.key.hotp(0, Digits::SIX).to_string()
        );

        // A pending token validates nothing.
        assert_err!(c.validate(&t, &t.hotp(0)).await, DomainError::TokenPending);
    }
    let events = c.audit().await;
    assert!(has_event(&events, "token.register", "ok: event"));
    assert!(has_event(&events, "token.register", "ok: time"));
    c.assert_audit_clean().await;
}

async fn registration_refuses_wrong_password_unknown_user_and_unknown_contract_alike() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    let attempts = [
        (C, "taro", WRONG_PASSWORD),
        (C, "nobody", PASSWORD),
        ("C-9999", "taro", PASSWORD),
    ];
    let mut messages = Vec::new();
    for (contract, user, pw) in attempts {
        let r = c
            .ichido
            .register(contract, user, pw, TokenKind::Event)
            .await;
        match r {
            Err(e @ DomainError::InvalidCredentials) => {
                assert_eq!(e.code(), "invalid_credentials");
                messages.push(e.to_string());
            }
            other => panic!("expected InvalidCredentials, got {:?}", other.map(|_| ())),
        }
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "identical answers"
    );
    let view = c.ichido.user_view(C, "taro").await.unwrap();
    assert!(view.token.is_none(), "no token was created");
    assert!(!view.locked);
    let events = c.audit().await;
    assert_eq!(
        count_events(&events, "token.register", "invalid_credentials"),
        3
    );
    c.assert_audit_clean().await;
}

async fn registration_with_a_live_token_is_token_exists() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Event).await;
    assert_err!(
        c.ichido
            .register(C, "taro", PASSWORD, TokenKind::Time)
            .await,
        DomainError::TokenExists
    );
    // Suspended and locked tokens are live too.
    c.ichido.suspend(&c.op, C, "taro", Some(0)).await.unwrap();
    assert_err!(
        c.ichido
            .register(C, "taro", PASSWORD, TokenKind::Event)
            .await,
        DomainError::TokenExists
    );
    let live = c.live(&t).await.unwrap();
    assert_eq!(live.token_id.as_str(), t.token_id);
    assert_eq!(live.state, TokenState::Suspended);
    let events = c.audit().await;
    assert_eq!(count_events(&events, "token.register", "token_exists"), 2);
    c.assert_audit_clean().await;
}

async fn registration_while_pending_replaces_the_pending_token() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    let old = c.register(C, "taro", TokenKind::Event).await;
    c.clock.advance(5);
    let new = c.register(C, "taro", TokenKind::Time).await;
    assert_ne!(old.token_id, new.token_id);
    assert_ne!(old.secret, new.secret);

    let old_tok = c.stored(&old).await;
    assert_eq!(old_tok.state, TokenState::Revoked);
    assert!(old_tok.sealed_secret.is_empty(), "secret destroyed");
    let live = c.live(&new).await.unwrap();
    assert_eq!(live.token_id.as_str(), new.token_id);
    assert_eq!(live.state, TokenState::Pending);
    assert_eq!(live.kind, TokenKind::Time);

    // The replaced token can no longer be activated; the new one can.
    assert_err!(
        c.ichido.activate(&old.token_id, &old.hotp(0)).await,
        DomainError::TokenRevoked
    );
    c.activate(&new).await;

    let events = c.token_audit(&old).await;
    assert!(has_event(
        &events,
        "token.discard",
        "replaced by a new registration"
    ));
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 2. Activation
// ---------------------------------------------------------------------------

async fn event_token_activates_with_the_code_of_counter_zero() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    let t = c.register(C, "taro", TokenKind::Event).await;
    c.clock.advance(42);
    let tok = c
        .ichido
        .activate(&t.token_id, &t.hotp(0))
        .await
        .expect("activate");
    assert_eq!(tok.state, TokenState::Active);
    assert_eq!(tok.counter, 1, "the next expected counter");
    assert_eq!(tok.failures, 0);
    assert_eq!(tok.activated_at, Some(T0 + 42));
    // Activating twice is refused; the first code is spent.
    assert_err!(
        c.ichido.activate(&t.token_id, &t.hotp(1)).await,
        DomainError::InvalidRequest(_)
    );
    assert_err!(c.validate(&t, &t.hotp(0)).await, DomainError::OtpReplayed);
    assert_eq!(
        c.validate(&t, &t.hotp(1)).await.unwrap(),
        Acceptance::Event { counter: 1 }
    );
    assert!(has_event(&c.token_audit(&t).await, "token.activate", "ok"));
    c.assert_audit_clean().await;
}

async fn time_token_activates_with_the_current_code() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    let t = c.register(C, "taro", TokenKind::Time).await;
    let code = t.totp(c.now());
    let tok = c.ichido.activate(&t.token_id, &code).await.unwrap();
    assert_eq!(tok.state, TokenState::Active);
    assert_eq!(tok.last_step, Some(step_of(T0)));
    assert_eq!(tok.time_offset, 0);
    assert_eq!(tok.activated_at, Some(T0));
    // The activation code is spent.
    assert_err!(c.validate(&t, &code).await, DomainError::OtpReplayed);
    c.assert_audit_clean().await;
}

async fn wrong_activation_code_is_invalid_otp_and_five_discard_the_pending_token() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    let t = c.register(C, "taro", TokenKind::Event).await;
    assert_err!(
        c.ichido.activate(&t.token_id, &t.wrong_code(0)).await,
        DomainError::InvalidOtp
    );
    let tok = c.stored(&t).await;
    assert_eq!(tok.state, TokenState::Pending);
    assert_eq!(tok.failures, 1);
    // The right code still activates, and clears the failures.
    let tok = c.ichido.activate(&t.token_id, &t.hotp(0)).await.unwrap();
    assert_eq!(tok.state, TokenState::Active);
    assert_eq!(tok.failures, 0);

    // Five wrong codes on a pending token discard it.
    c.user(C, "hanako").await;
    let p = c.register(C, "hanako", TokenKind::Time).await;
    for i in 1..=5 {
        assert_err!(
            c.ichido
                .activate(&p.token_id, &p.wrong_code(step_of(c.now())))
                .await,
            DomainError::InvalidOtp
        );
        let tok = c.stored(&p).await;
        assert_eq!(tok.failures, i);
    }
    let tok = c.stored(&p).await;
    assert_eq!(tok.state, TokenState::Revoked);
    assert!(tok.sealed_secret.is_empty());
    assert_err!(
        c.ichido.activate(&p.token_id, &p.totp(c.now())).await,
        DomainError::TokenRevoked
    );
    let events = c.token_audit(&p).await;
    assert_eq!(count_events(&events, "token.activate", "invalid_otp"), 5);
    assert!(has_event(&events, "token.discard", "revoked after 5"));
    c.assert_audit_clean().await;
}

async fn pending_token_expires_after_ten_minutes() {
    let c = Center::new().await;

    // Exactly 600 s old: still activatable.
    c.user(C, "edge").await;
    let edge = c.register(C, "edge", TokenKind::Time).await;
    c.clock.advance(600);
    c.activate(&edge).await;

    // 601 s old: the sweep discards it.
    c.user(C, "swept").await;
    let swept = c.register(C, "swept", TokenKind::Event).await;
    c.clock.advance(601);
    assert_eq!(c.ichido.discard_expired_pending().await.unwrap(), 1);
    let tok = c.stored(&swept).await;
    assert_eq!(tok.state, TokenState::Revoked);
    assert!(tok.sealed_secret.is_empty());
    assert!(c.live(&swept).await.is_none());
    assert_err!(
        c.ichido.activate(&swept.token_id, &swept.hotp(0)).await,
        DomainError::TokenRevoked
    );
    assert_eq!(c.ichido.discard_expired_pending().await.unwrap(), 0);
    // The active token of "edge" is not touched by the sweep.
    assert_eq!(c.live(&edge).await.unwrap().state, TokenState::Active);

    // 601 s old at activation: refused even with the right code.
    c.user(C, "late").await;
    let late = c.register(C, "late", TokenKind::Event).await;
    c.clock.advance(601);
    assert_err!(
        c.ichido.activate(&late.token_id, &late.hotp(0)).await,
        DomainError::TokenRevoked
    );
    assert_eq!(c.stored(&late).await.state, TokenState::Revoked);
    assert!(c.live(&late).await.is_none());
    // The user may register anew.
    let again = c.register(C, "late", TokenKind::Event).await;
    c.activate(&again).await;

    for t in [&swept, &late] {
        assert!(has_event(
            &c.token_audit(t).await,
            "token.discard",
            "not activated in time"
        ));
    }
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 3. Event tokens
// ---------------------------------------------------------------------------

async fn event_token_accepts_each_code_once_within_the_look_ahead() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Event).await;
    assert_eq!(c.live(&t).await.unwrap().counter, 1);

    assert_eq!(
        c.validate(&t, &t.hotp(1)).await.unwrap(),
        Acceptance::Event { counter: 1 }
    );
    assert_eq!(c.failures(&t).await, 0);
    // The same code again, and an earlier one: replays, each counted.
    assert_err!(c.validate(&t, &t.hotp(1)).await, DomainError::OtpReplayed);
    assert_eq!(c.failures(&t).await, 1);
    assert_err!(c.validate(&t, &t.hotp(0)).await, DomainError::OtpReplayed);
    assert_eq!(c.failures(&t).await, 2);

    // Look-ahead boundary: next counter is 2, so counter 12 is the last accepted.
    assert_eq!(
        c.validate(&t, &t.hotp(12)).await.unwrap(),
        Acceptance::Event { counter: 12 }
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.counter, 13);
    assert_eq!(tok.failures, 0, "a success resets the failures");
    // The skipped codes 2..=11 are superseded.
    assert_err!(c.validate(&t, &t.hotp(5)).await, DomainError::OtpReplayed);
    // One beyond the look-ahead (13 + 11 = 24) is wrong, and leaves the counter.
    assert_err!(c.validate(&t, &t.hotp(24)).await, DomainError::InvalidOtp);
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.counter, 13);
    assert_eq!(tok.failures, 2);
    assert_err!(
        c.validate(&t, &t.wrong_code(13)).await,
        DomainError::InvalidOtp
    );
    assert_eq!(c.failures(&t).await, 3);
    // A code of the wrong length is well-formed but wrong; a malformed one is a bad request.
    assert_err!(c.validate(&t, "1234567").await, DomainError::InvalidOtp);
    assert_eq!(c.failures(&t).await, 4);
    for bad in ["12345", "12 456", "abcdef", "", "123456789"] {
        assert_err!(c.validate(&t, bad).await, DomainError::InvalidRequest(_));
    }
    assert_eq!(c.failures(&t).await, 4, "malformed codes are not counted");
    assert_eq!(
        c.validate(&t, &t.hotp(13)).await.unwrap(),
        Acceptance::Event { counter: 13 }
    );
    assert_eq!(c.failures(&t).await, 0);

    // Unknown and malformed token IDs.
    assert_err!(
        c.ichido.validate(&c.op, "ABCD12345674", &t.hotp(14)).await,
        DomainError::NotFound(_)
    );
    assert_err!(
        c.ichido.validate(&c.op, "ABCD12345678", &t.hotp(14)).await,
        DomainError::InvalidRequest(_)
    );

    let events = c.token_audit(&t).await;
    assert_eq!(count_events(&events, "token.validate", "ok"), 3);
    assert_eq!(count_events(&events, "token.validate", "otp_replayed"), 3);
    assert_eq!(count_events(&events, "token.validate", "invalid_otp"), 3);
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 4. Time tokens
// ---------------------------------------------------------------------------

async fn time_token_accepts_each_step_once_within_one_step() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Time).await;
    let s0 = step_of(T0);

    // The current code, once.
    c.clock.advance(30);
    let code = t.totp(c.now());
    assert_eq!(
        c.validate(&t, &code).await.unwrap(),
        Acceptance::Time {
            step: s0 + 1,
            offset: 0
        }
    );
    assert_err!(c.validate(&t, &code).await, DomainError::OtpReplayed);
    // The activation code (previous step) is spent as well.
    assert_err!(
        c.validate(&t, &t.step_code(s0)).await,
        DomainError::OtpReplayed
    );
    assert_eq!(c.failures(&t).await, 2);

    // A never-used code of the previous step, after the current one was accepted: spent.
    c.clock.advance(60); // step s0 + 3
    assert_eq!(
        c.validate(&t, &t.step_code(s0 + 3)).await.unwrap(),
        Acceptance::Time {
            step: s0 + 3,
            offset: 0
        }
    );
    assert_eq!(c.failures(&t).await, 0);
    assert_err!(
        c.validate(&t, &t.step_code(s0 + 2)).await,
        DomainError::OtpReplayed
    );
    // Two steps away either side: outside the window.
    assert_err!(
        c.validate(&t, &t.step_code(s0 + 5)).await,
        DomainError::InvalidOtp
    );
    assert_err!(
        c.validate(&t, &t.step_code(s0 + 1)).await,
        DomainError::InvalidOtp
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.failures, 3);
    assert_eq!(tok.last_step, Some(s0 + 3));

    // One step behind is accepted (and learned as drift -1).
    c.clock.advance(90); // step s0 + 6
    assert_eq!(
        c.validate(&t, &t.step_code(s0 + 5)).await.unwrap(),
        Acceptance::Time {
            step: s0 + 5,
            offset: -1
        }
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.time_offset, -1);
    assert_eq!(tok.failures, 0);
    assert_eq!(tok.last_step, Some(s0 + 5));
    c.assert_audit_clean().await;
}

async fn time_token_learns_its_clock_offset_and_recentres_the_window() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Time).await;
    let s0 = step_of(T0);

    // One step ahead is accepted; the drift +1 is learned.
    c.clock.advance(30); // step s0 + 1
    assert_eq!(
        c.validate(&t, &t.step_code(s0 + 2)).await.unwrap(),
        Acceptance::Time {
            step: s0 + 2,
            offset: 1
        }
    );
    assert_eq!(c.live(&t).await.unwrap().time_offset, 1);

    // Now the window is centred one step ahead: current - 1 is outside it
    // (wrong, not a replay) and current + 2 is inside it.
    c.clock.advance(30); // step s0 + 2, centre s0 + 3
    assert_err!(
        c.validate(&t, &t.step_code(s0 + 1)).await,
        DomainError::InvalidOtp
    );
    assert_eq!(
        c.validate(&t, &t.step_code(s0 + 4)).await.unwrap(),
        Acceptance::Time {
            step: s0 + 4,
            offset: 2
        }
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.time_offset, 2);
    assert_eq!(tok.last_step, Some(s0 + 4));
    c.assert_audit_clean().await;
}

async fn time_token_works_beyond_2038() {
    let c = Center::new().await;
    c.clock.set(20_000_000_000);
    let t = c.active(C, "taro", TokenKind::Time).await;
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.last_step, Some(20_000_000_000 / 30));
    c.clock.advance(30);
    let code = t.totp(c.now());
    assert_eq!(
        c.validate(&t, &code).await.unwrap(),
        Acceptance::Time {
            step: 20_000_000_030 / 30,
            offset: 0
        }
    );
    assert_err!(c.validate(&t, &code).await, DomainError::OtpReplayed);
    assert_eq!(
        c.live(&t).await.unwrap().last_step,
        Some(20_000_000_030 / 30)
    );
    c.assert_audit_clean().await;
}

async fn bank_configured_algorithm_and_code_length_apply_to_new_tokens() {
    let configs = [
        (Algorithm::Sha256, Digits::EIGHT),
        (Algorithm::Sha512, Digits::EIGHT),
        (Algorithm::Sha512, Digits::SIX),
    ];
    for (algorithm, digits) in configs {
        let policy = Policy {
            algorithm,
            digits,
            ..Policy::default()
        };
        let c = Center::with_policy(
            store().await,
            Arc::new(FixedClock::new(T0)),
            MasterKey::generate(),
            policy,
        );
        let e = c.active(C, "taro", TokenKind::Event).await;
        let t = c.active(C, "hanako", TokenKind::Time).await;
        for tok in [&e, &t] {
            let stored = c.stored(tok).await;
            assert_eq!((stored.algorithm, stored.digits), (algorithm, digits));
            let uri = KeyUri::parse(&tok.otpauth_uri).unwrap();
            assert_eq!((uri.algorithm, uri.digits), (algorithm, digits));
            // What an authenticator app computes from the URI is what the center expects.
            let app = uri.key().unwrap();
            assert_eq!(
                app.hotp(7, digits).to_string(),
                Key::new(algorithm, &tok.secret)
                    .unwrap()
                    .hotp(7, digits)
                    .to_string()
            );
        }
        // A SHA-1 code of the same secret is wrong.
        let sha1 = Key::new(Algorithm::Sha1, &e.secret).unwrap();
        assert_err!(
            c.validate(&e, &sha1.hotp(1, digits).to_string()).await,
            DomainError::InvalidOtp
        );
        let right = e.hotp(1);
        assert_eq!(right.len(), usize::from(digits.get()));
        if digits == Digits::EIGHT {
            // The last six digits of the right code are a different, wrong code.
            assert_err!(c.validate(&e, &right[2..]).await, DomainError::InvalidOtp);
        }
        assert_eq!(
            c.validate(&e, &right).await.unwrap(),
            Acceptance::Event { counter: 1 }
        );
        c.clock.advance(30);
        assert!(matches!(
            c.validate(&t, &t.totp(c.now())).await.unwrap(),
            Acceptance::Time { offset: 0, .. }
        ));
        c.assert_audit_clean().await;
    }
}

// ---------------------------------------------------------------------------
// 5. Lock, suspend, revoke
// ---------------------------------------------------------------------------

async fn five_failures_lock_the_token_until_an_operator_unlocks_it() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Event).await;
    for i in 1..=4 {
        assert_err!(
            c.validate(&t, &t.wrong_code(1)).await,
            DomainError::InvalidOtp
        );
        let tok = c.live(&t).await.unwrap();
        assert_eq!((tok.state, tok.failures), (TokenState::Active, i));
    }
    assert_err!(
        c.validate(&t, &t.wrong_code(1)).await,
        DomainError::InvalidOtp
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!((tok.state, tok.failures), (TokenState::Locked, 5));

    // No oracle: the right code answers "locked" too, and is not consumed.
    let right = t.hotp(1);
    assert_err!(c.validate(&t, &right).await, DomainError::TokenLocked);
    assert_err!(
        c.validate(&t, &t.wrong_code(1)).await,
        DomainError::TokenLocked
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.counter, 1);
    assert_eq!(tok.failures, 5);

    let tok = c.ichido.unlock_token(&c.op, C, "taro").await.unwrap();
    assert_eq!((tok.state, tok.failures), (TokenState::Active, 0));
    assert_eq!(
        c.validate(&t, &right).await.unwrap(),
        Acceptance::Event { counter: 1 }
    );

    let events = c.token_audit(&t).await;
    let lock = events
        .iter()
        .find(|e| e.action == "token.lock")
        .expect("token.lock event");
    assert_eq!(lock.actor, "system");
    assert!(lock.outcome.starts_with("locked after 5"));
    assert_eq!(count_events(&events, "token.validate", "token_locked"), 2);
    assert!(has_event(&events, "token.unlock", "ok"));
    c.assert_audit_clean().await;
}

async fn suspended_token_answers_suspended_until_resumed() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Time).await;

    let tok = c.ichido.suspend(&c.op, C, "taro", Some(0)).await.unwrap();
    assert_eq!(tok.state, TokenState::Suspended);
    assert_eq!(tok.grace_until, None, "0 days means no grace");
    c.clock.advance(30);
    let code = t.totp(c.now());
    assert_err!(c.validate(&t, &code).await, DomainError::TokenSuspended);
    // Suspending again is idempotent.
    let again = c.ichido.suspend(&c.op, C, "taro", Some(0)).await.unwrap();
    assert_eq!(again.state, TokenState::Suspended);

    let tok = c.ichido.resume(&c.op, C, "taro").await.unwrap();
    assert_eq!(tok.state, TokenState::Active);
    assert_eq!(tok.grace_until, None);
    assert_eq!(tok.failures, 0, "refusals while suspended are not failures");
    assert!(matches!(
        c.validate(&t, &code).await.unwrap(),
        Acceptance::Time { .. }
    ));
    // Resuming an active token is idempotent.
    assert_eq!(
        c.ichido.resume(&c.op, C, "taro").await.unwrap().state,
        TokenState::Active
    );

    // Default grace: 30 days from now.
    let tok = c.ichido.suspend(&c.op, C, "taro", None).await.unwrap();
    assert_eq!(tok.grace_until, Some(c.now() + 30 * 86_400));
    c.ichido.resume(&c.op, C, "taro").await.unwrap();
    let tok = c.ichido.suspend(&c.op, C, "taro", Some(7)).await.unwrap();
    assert_eq!(tok.grace_until, Some(c.now() + 7 * 86_400));
    assert_err!(
        c.ichido.suspend(&c.op, C, "taro", Some(100_000)).await,
        DomainError::InvalidRequest(_)
    );
    // Operators act on existing users only.
    assert_err!(
        c.ichido.suspend(&c.op, C, "nobody", None).await,
        DomainError::NotFound(_)
    );

    let events = c.token_audit(&t).await;
    assert_eq!(
        count_events(&events, "token.validate", "token_suspended"),
        1
    );
    assert!(has_event(&events, "token.suspend", "ok"));
    assert!(has_event(&events, "token.resume", "ok"));
    c.assert_audit_clean().await;
}

async fn revoked_token_is_gone_for_good_and_the_user_may_register_again() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Event).await;
    let tok = c.ichido.revoke(&c.op, C, "taro").await.unwrap();
    assert_eq!(tok.state, TokenState::Revoked);
    assert!(tok.sealed_secret.is_empty(), "the secret is destroyed");
    assert!(c.live(&t).await.is_none());
    assert_err!(c.validate(&t, &t.hotp(1)).await, DomainError::TokenRevoked);
    assert_err!(
        c.ichido.revoke(&c.op, C, "taro").await,
        DomainError::NotFound(_)
    );
    assert_err!(
        c.ichido.unlock_token(&c.op, C, "taro").await,
        DomainError::NotFound(_)
    );

    let again = c.register(C, "taro", TokenKind::Time).await;
    assert_ne!(again.token_id, t.token_id);
    c.activate(&again).await;
    // The old token stays revoked.
    assert_err!(c.validate(&t, &t.hotp(2)).await, DomainError::TokenRevoked);

    let events = c.token_audit(&t).await;
    assert!(has_event(&events, "token.revoke", "ok"));
    assert_eq!(count_events(&events, "token.validate", "token_revoked"), 2);
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 6. Resync
// ---------------------------------------------------------------------------

async fn resync_catches_up_an_event_token_fifty_codes_ahead() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Event).await;
    let server = c.live(&t).await.unwrap().counter;
    assert_eq!(server, 1);
    let (c50, c51) = (t.hotp(server + 50), t.hotp(server + 51));
    // Too far ahead for validation.
    assert_err!(c.validate(&t, &c50).await, DomainError::InvalidOtp);
    assert_eq!(c.failures(&t).await, 1);
    // Resync needs the password.
    assert_err!(
        c.ichido.resync(C, "taro", WRONG_PASSWORD, &c50, &c51).await,
        DomainError::InvalidCredentials
    );

    c.ichido
        .resync(C, "taro", PASSWORD, &c50, &c51)
        .await
        .expect("resync");
    let tok = c.live(&t).await.unwrap();
    assert_eq!(tok.counter, server + 52);
    assert_eq!(tok.failures, 0);
    assert_eq!(tok.state, TokenState::Active);

    assert_eq!(
        c.validate(&t, &t.hotp(server + 52)).await.unwrap(),
        Acceptance::Event {
            counter: server + 52
        }
    );
    assert_err!(c.validate(&t, &c50).await, DomainError::OtpReplayed);
    assert_err!(c.validate(&t, &c51).await, DomainError::OtpReplayed);
    // The same pair cannot resync twice.
    assert_err!(
        c.ichido.resync(C, "taro", PASSWORD, &c50, &c51).await,
        DomainError::InvalidOtp
    );
    assert!(has_event(&c.token_audit(&t).await, "token.resync", "ok"));
    c.assert_audit_clean().await;
}

async fn resync_learns_a_time_token_five_minutes_ahead() {
    let c = Center::new().await;
    let t = c.active(C, "taro", TokenKind::Time).await;
    c.clock.advance(30);
    let now = c.now();
    let s = step_of(now);
    let (a, b) = (t.totp(now + 300), t.totp(now + 330));
    assert_err!(c.validate(&t, &a).await, DomainError::InvalidOtp);

    c.ichido
        .resync(C, "taro", PASSWORD, &a, &b)
        .await
        .expect("resync");
    let tok = c.live(&t).await.unwrap();
    // The offset is that of the SECOND code (resync_totp's documented match).
    assert_eq!(tok.time_offset, 11);
    assert_eq!(tok.last_step, Some(s + 11));
    assert_eq!(tok.failures, 0);
    assert_err!(c.validate(&t, &b).await, DomainError::OtpReplayed);
    assert_err!(c.validate(&t, &a).await, DomainError::OtpReplayed);

    // 30 s later the client (still 5 minutes ahead) shows the step of b: spent.
    c.clock.advance(30);
    assert_err!(
        c.validate(&t, &t.totp(c.now() + 300)).await,
        DomainError::OtpReplayed
    );
    // 30 s after that its next code validates at the same skew.
    c.clock.advance(30);
    assert_eq!(
        c.validate(&t, &t.totp(c.now() + 300)).await.unwrap(),
        Acceptance::Time {
            step: s + 12,
            offset: 10
        }
    );
    assert_eq!(c.failures(&t).await, 0);
    c.assert_audit_clean().await;
}

async fn resync_with_non_consecutive_codes_is_invalid_otp_and_counts_a_failure() {
    let c = Center::new().await;
    let e = c.active(C, "taro", TokenKind::Event).await;
    let t = c.active(C, "hanako", TokenKind::Time).await;

    assert_err!(
        c.ichido
            .resync(C, "taro", PASSWORD, &e.hotp(51), &e.hotp(53))
            .await,
        DomainError::InvalidOtp
    );
    assert_err!(
        c.ichido
            .resync(C, "taro", PASSWORD, &e.hotp(52), &e.hotp(51))
            .await,
        DomainError::InvalidOtp
    );
    let tok = c.live(&e).await.unwrap();
    assert_eq!((tok.counter, tok.failures), (1, 2));

    let now = c.now();
    assert_err!(
        c.ichido
            .resync(
                C,
                "hanako",
                PASSWORD,
                &t.totp(now + 300),
                &t.totp(now + 360)
            )
            .await,
        DomainError::InvalidOtp
    );
    let tok = c.live(&t).await.unwrap();
    assert_eq!((tok.time_offset, tok.failures), (0, 1));
    assert_eq!(
        count_events(&c.token_audit(&e).await, "token.resync", "invalid_otp"),
        2
    );

    // A suspended token cannot resync; a user without a token must register.
    c.ichido.suspend(&c.op, C, "taro", Some(0)).await.unwrap();
    assert_err!(
        c.ichido
            .resync(C, "taro", PASSWORD, &e.hotp(50), &e.hotp(51))
            .await,
        DomainError::TokenSuspended
    );
    c.user(C, "jiro").await;
    assert_err!(
        c.ichido
            .resync(C, "jiro", PASSWORD, &e.hotp(50), &e.hotp(51))
            .await,
        DomainError::OtpRegistrationRequired
    );
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 7. Exactly once under concurrency
// ---------------------------------------------------------------------------

/// Runs `tasks` copies of `f(i)` at once and collects their answers.
async fn all_at_once<F, Fut, T>(tasks: usize, f: F) -> Vec<Result<T, DomainError>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, DomainError>> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(tasks));
    let mut set = JoinSet::new();
    for i in 0..tasks {
        let fut = f(i);
        let barrier = Arc::clone(&barrier);
        set.spawn(async move {
            barrier.wait().await;
            fut.await
        });
    }
    let mut out = Vec::with_capacity(tasks);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

/// Validates `code` from `tasks` concurrent tasks spread over `centers` (separate
/// pools on one database file, like several server processes).
async fn race(
    centers: &[&Center],
    token_id: &str,
    code: &str,
    tasks: usize,
) -> Vec<Result<Acceptance, DomainError>> {
    all_at_once(tasks, |i| {
        let center = centers[i % centers.len()];
        let ichido = Arc::clone(&center.ichido);
        let actor = center.op.clone();
        let (id, code) = (token_id.to_owned(), code.to_owned());
        async move { ichido.validate(&actor, &id, &code).await }
    })
    .await
}

/// Exactly one Ok; the losers are replays until the lock threshold, then "locked".
fn assert_exactly_once(results: &[Result<Acceptance, DomainError>], round: usize) {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let replayed = results
        .iter()
        .filter(|r| matches!(r, Err(DomainError::OtpReplayed)))
        .count();
    let locked = results
        .iter()
        .filter(|r| matches!(r, Err(DomainError::TokenLocked)))
        .count();
    assert_eq!(ok, 1, "round {round}: exactly one acceptance");
    assert_eq!(
        ok + replayed + locked,
        results.len(),
        "round {round}: unexpected answers: {:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|e| !matches!(e, DomainError::OtpReplayed | DomainError::TokenLocked))
            .collect::<Vec<_>>()
    );
    // Every replay is a durable failure; the fifth locks the token.
    assert_eq!(replayed, 5, "round {round}: failures counted exactly");
}

/// Many token reads at once (on SQLite gathered into shared statements) each
/// get their own token's row: known ids, an unknown one and the same id
/// asked for by several requests together; a read made after a validation
/// committed sees what it wrote.
async fn concurrent_token_reads_each_get_their_own_row() {
    let db = FileDb::new();
    let c = Center::on(
        db.open(4).await,
        Arc::new(FixedClock::new(T0)),
        MasterKey::generate(),
    );
    let mut tokens = Vec::new();
    for i in 0..12 {
        let kind = if i % 3 == 0 {
            TokenKind::Time
        } else {
            TokenKind::Event
        };
        tokens.push(c.active(C, &format!("reader{i}"), kind).await);
    }
    let unknown = loop {
        let id = ichido_domain::ids::TokenId::random();
        if !tokens.iter().any(|t| t.token_id == id.as_str()) {
            break id;
        }
    };
    let mut expected = Vec::new();
    for t in &tokens {
        expected.push(c.stored(t).await);
    }
    let ids: Vec<ichido_domain::ids::TokenId> =
        tokens.iter().map(|t| t.token_id.parse().unwrap()).collect();
    for round in 0..3 {
        let (store, ids_, expected_, unknown_) = (
            Arc::clone(&c.store),
            ids.clone(),
            expected.clone(),
            unknown.clone(),
        );
        let results = all_at_once(120, move |i| {
            let store = Arc::clone(&store);
            let (ids, expected, unknown) = (ids_.clone(), expected_.clone(), unknown_.clone());
            async move {
                if i % 13 == 12 {
                    let got = store.token(&unknown).await?;
                    assert!(
                        got.is_none(),
                        "round {round}: unknown id {unknown} was found"
                    );
                } else {
                    let k = i % ids.len();
                    let got = store.token(&ids[k]).await?;
                    let got = got.unwrap_or_else(|| panic!("round {round}: {} not found", ids[k]));
                    assert!(
                        got == expected[k],
                        "round {round}: {} read another row",
                        ids[k]
                    );
                }
                Ok(())
            }
        })
        .await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: a read failed"
        );
        // Move every event token on, all at once; each read-back, made after
        // its validation answered, shows the new counter.
        let moved = all_at_once(tokens.len(), |k| {
            let t = Arc::clone(&tokens[k]);
            let (ichido, op, store, id) = (
                Arc::clone(&c.ichido),
                c.op.clone(),
                Arc::clone(&c.store),
                ids[k].clone(),
            );
            let counter = expected[k].counter;
            async move {
                if t.kind == TokenKind::Event {
                    ichido.validate(&op, &t.token_id, &t.hotp(counter)).await?;
                    let row = store.token(&id).await?.expect("token");
                    assert_eq!(row.counter, counter + 1, "{id}: the read missed the write");
                }
                Ok(())
            }
        })
        .await;
        assert!(moved.iter().all(Result::is_ok), "round {round}: {moved:?}");
        for (k, t) in tokens.iter().enumerate() {
            expected[k] = c.stored(t).await;
        }
    }
    c.assert_audit_clean().await;
}

async fn two_instances(db: &FileDb) -> (Center, Center) {
    let clock = Arc::new(FixedClock::new(T0));
    let master = MasterKey::generate();
    let a = Center::on(db.open(8).await, Arc::clone(&clock), master.clone());
    let b = Center::on(db.open(8).await, clock, master);
    (a, b)
}

const TASKS: usize = 50;
const ROUNDS: usize = 4;

async fn an_event_code_is_accepted_exactly_once_under_concurrency() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let t = a.active(C, "taro", TokenKind::Event).await;
    for round in 0..ROUNDS {
        let counter = a.live(&t).await.unwrap().counter;
        let code = t.hotp(counter);
        let results = race(&[&a, &b], &t.token_id, &code, TASKS).await;
        assert_exactly_once(&results, round);
        let tok = b.live(&t).await.unwrap();
        assert_eq!(tok.counter, counter + 1, "round {round}");
        assert_eq!((tok.state, tok.failures), (TokenState::Locked, 5));
        b.ichido.unlock_token(&b.op, C, "taro").await.unwrap();
    }
    let events = a.token_audit(&t).await;
    assert_eq!(count_events(&events, "token.validate", "ok"), ROUNDS);
    assert_eq!(
        count_events(&events, "token.validate", "otp_replayed"),
        5 * ROUNDS
    );
    assert_eq!(
        events.iter().filter(|e| e.action == "token.lock").count(),
        ROUNDS
    );
    a.assert_audit_clean().await;
}

async fn a_time_code_is_accepted_exactly_once_under_concurrency() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let t = a.active(C, "taro", TokenKind::Time).await;
    for round in 0..ROUNDS {
        a.clock.advance(30);
        let code = t.totp(a.now());
        let results = race(&[&a, &b], &t.token_id, &code, TASKS).await;
        assert_exactly_once(&results, round);
        let tok = b.live(&t).await.unwrap();
        assert_eq!(tok.last_step, Some(step_of(a.now())), "round {round}");
        assert_eq!((tok.state, tok.failures), (TokenState::Locked, 5));
        a.ichido.unlock_token(&a.op, C, "taro").await.unwrap();
    }
    let events = a.token_audit(&t).await;
    assert_eq!(count_events(&events, "token.validate", "ok"), ROUNDS);
    a.assert_audit_clean().await;
}

/// Two instances validate the same codes of many tokens at once, each in the
/// opposite token order, so their group-commit batches hold the same rows:
/// every code is accepted exactly once and no batch fails (no deadlock
/// between batches that lock rows in different orders).
async fn many_tokens_across_instances_are_exactly_once_in_batches() {
    const TOKENS: usize = 24;
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let mut issued = Vec::new();
    for i in 0..TOKENS {
        issued.push(a.active(C, &format!("u{i}"), TokenKind::Event).await);
    }
    let issued = Arc::new(issued);
    for round in 0..3u64 {
        let results = all_at_once(2 * TOKENS, |i| {
            let center = if i < TOKENS { &a } else { &b };
            // Instance a walks the tokens forward, instance b backward.
            let n = if i < TOKENS { i } else { 2 * TOKENS - 1 - i };
            let ichido = Arc::clone(&center.ichido);
            let actor = center.op.clone();
            let t = Arc::clone(&issued[n]);
            // Activation used counter 0; round r uses counter r + 1.
            let code = t.hotp(round + 1);
            async move { ichido.validate(&actor, &t.token_id, &code).await.map(|_| n) }
        })
        .await;
        let mut won = vec![0usize; TOKENS];
        for r in &results {
            match r {
                Ok(n) => won[*n] += 1,
                Err(DomainError::OtpReplayed) => {}
                Err(e) => panic!("round {round}: unexpected answer {e:?}"),
            }
        }
        assert_eq!(
            won,
            vec![1; TOKENS],
            "round {round}: one acceptance per token"
        );
    }
    for t in issued.iter() {
        let tok = b.live(t).await.unwrap();
        // The last round's replay is the one failure since the last success.
        assert_eq!((tok.counter, tok.failures), (4, 1), "{}", t.token_id);
    }
    a.assert_audit_clean().await;
}

/// Validation decides a right code on the row it last saw (the fast path of
/// `ichido_domain::tokencache`), but only the store's conditional write
/// decides: while another instance moves the token on, the first one's stale
/// entry neither refuses a right code, nor accepts a spent one, nor counts a
/// failure the row would not count, nor lets a suspended token through.
async fn a_stale_validation_entry_never_decides_alone() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let t = a.active(C, "taro", TokenKind::Event).await;
    let v = |c: &Center, n: u64| {
        let code = t.hotp(n);
        let ichido = Arc::clone(&c.ichido);
        let (op, id) = (c.op.clone(), t.token_id.clone());
        async move { ichido.validate(&op, &id, &code).await }
    };
    // a accepts counter 1 and keeps the row (counter 2); b moves on to 16.
    assert!(v(&a, 1).await.is_ok());
    for n in 2..=15 {
        assert!(v(&b, n).await.is_ok(), "b, counter {n}");
    }
    // Beyond a's look-ahead from its entry (2 + 10), inside the row's: accepted,
    // with no failure counted on the way.
    assert_eq!(v(&a, 17).await.unwrap(), Acceptance::Event { counter: 17 });
    assert_eq!(b.failures(&t).await, 0);
    // a's entry says 18 is next; b spends 18..=20. A spent code a calls right
    // is refused as a replay, counted once.
    for n in 18..=20 {
        assert!(v(&b, n).await.is_ok(), "b, counter {n}");
    }
    assert!(matches!(v(&a, 19).await, Err(DomainError::OtpReplayed)));
    assert_eq!(b.failures(&t).await, 1);
    assert!(matches!(v(&a, 19).await, Err(DomainError::OtpReplayed)));
    assert_eq!(b.failures(&t).await, 2);
    // a keeps a fresh entry again; b suspends the token: a's next right code
    // answers with the state, and the code stays unspent.
    assert!(v(&a, 21).await.is_ok());
    b.ichido.suspend(&b.op, C, "taro", Some(0)).await.unwrap();
    assert!(matches!(v(&a, 22).await, Err(DomainError::TokenSuspended)));
    let tok = b.stored(&t).await;
    assert_eq!((tok.state, tok.counter), (TokenState::Suspended, 22));
    b.ichido.resume(&b.op, C, "taro").await.unwrap();
    assert_eq!(v(&a, 22).await.unwrap(), Acceptance::Event { counter: 22 });
    // A wrong code on a's current entry counts one failure; after b moved the
    // row on (and cleared the count), a wrong code on a's stale entry counts
    // one too, on the row — never zero, never two.
    let wrong = t.wrong_code(23);
    let w = |c: &Center| {
        let (ichido, op, id, code) = (
            Arc::clone(&c.ichido),
            c.op.clone(),
            t.token_id.clone(),
            wrong.clone(),
        );
        async move { ichido.validate(&op, &id, &code).await }
    };
    let before = b.failures(&t).await;
    assert!(matches!(w(&a).await, Err(DomainError::InvalidOtp)));
    assert_eq!(b.failures(&t).await, before + 1);
    assert!(v(&b, 23).await.is_ok());
    assert_eq!(b.failures(&t).await, 0);
    assert!(matches!(w(&a).await, Err(DomainError::InvalidOtp)));
    assert_eq!(b.failures(&t).await, 1);
    assert_eq!(v(&a, 24).await.unwrap(), Acceptance::Event { counter: 24 });
    a.assert_audit_clean().await;
}

/// Wrong codes for many tokens at once from two instances (on SQLite, in
/// shared batches where some tokens reach the lock threshold and others
/// only count): every failure is counted once, a token locks at exactly the
/// fifth, and the answers after it say "locked".
async fn concurrent_wrong_codes_are_counted_once_and_lock_at_the_threshold() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let mut tokens = Vec::new();
    for i in 0..8usize {
        let t = a.active(C, &format!("user{i}"), TokenKind::Event).await;
        let wrong = t.wrong_code(1);
        tokens.push((t, wrong, i + 2));
    }
    let jobs: Vec<(String, String)> = tokens
        .iter()
        .flat_map(|(t, wrong, tries)| {
            std::iter::repeat_n((t.token_id.clone(), wrong.clone()), *tries)
        })
        .collect();
    let results = all_at_once(jobs.len(), |i| {
        let center = if i % 2 == 0 { &a } else { &b };
        let (ichido, op) = (Arc::clone(&center.ichido), center.op.clone());
        let (id, code) = jobs[i].clone();
        async move {
            let r = ichido.validate(&op, &id, &code).await;
            Ok::<_, DomainError>((id, r))
        }
    })
    .await;
    for (t, _, tries) in &tokens {
        let counted = (*tries).min(5);
        let answers: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().unwrap())
            .filter(|(id, _)| *id == t.token_id)
            .map(|(_, r)| r)
            .collect();
        let invalid = answers
            .iter()
            .filter(|r| matches!(r, Err(DomainError::InvalidOtp)))
            .count();
        let locked = answers
            .iter()
            .filter(|r| matches!(r, Err(DomainError::TokenLocked)))
            .count();
        assert_eq!(
            (invalid, locked),
            (counted, tries - counted),
            "{tries} tries"
        );
        let tok = b.live(t).await.unwrap();
        let state = if *tries >= 5 {
            TokenState::Locked
        } else {
            TokenState::Active
        };
        assert_eq!((tok.state, tok.failures as usize), (state, counted));
        let events = a.token_audit(t).await;
        assert_eq!(
            count_events(&events, "token.validate", "invalid_otp"),
            counted
        );
        assert_eq!(
            events.iter().filter(|e| e.action == "token.lock").count(),
            usize::from(*tries >= 5)
        );
    }
    a.assert_audit_clean().await;
}

async fn activation_and_resync_are_exactly_once_under_concurrency() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let instances = [Arc::clone(&a.ichido), Arc::clone(&b.ichido)];
    a.user(C, "taro").await;

    // Concurrent registrations replace one another: one live token remains.
    // (At most the lock threshold of password checks may be in flight for one
    // user at once; more are refused as `user_locked` — see the guess test.)
    let results = all_at_once(5, |i| {
        let ichido = Arc::clone(&instances[i % 2]);
        async move { ichido.register(C, "taro", PASSWORD, TokenKind::Event).await }
    })
    .await;
    let issued: Vec<_> = results
        .into_iter()
        .map(|r| a.adopt(r.expect("each registration succeeds")))
        .collect();
    let live = db
        .raw_tokens()
        .await
        .into_iter()
        .filter(|r| r.contract_no == C && r.user_id == "taro" && r.state != "revoked")
        .count();
    assert_eq!(live, 1, "one non-revoked token per user");
    let live = a.ichido.user_view(C, "taro").await.unwrap().token.unwrap();
    let t = issued
        .iter()
        .find(|t| t.token_id == live.token_id.as_str())
        .expect("the live token is one of those issued")
        .clone();
    for other in issued.iter().filter(|o| o.token_id != t.token_id) {
        assert_eq!(a.stored(other).await.state, TokenState::Revoked);
    }

    let first = t.hotp(0);
    let results = all_at_once(20, |i| {
        let ichido = Arc::clone(&instances[i % 2]);
        let (id, code) = (t.token_id.clone(), first.clone());
        async move { ichido.activate(&id, &code).await.map(|_| ()) }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in &results {
        assert!(
            matches!(r, Ok(()) | Err(DomainError::InvalidRequest(_))),
            "a repeated activation answers \"already active\": {r:?}"
        );
    }
    let tok = a.live(&t).await.unwrap();
    assert_eq!(
        (tok.state, tok.counter, tok.failures),
        (TokenState::Active, 1, 0)
    );

    let (x, y) = (t.hotp(60), t.hotp(61));
    let results = all_at_once(20, |i| {
        let ichido = Arc::clone(&instances[i % 2]);
        let (x, y) = (x.clone(), y.clone());
        async move { ichido.resync(C, "taro", PASSWORD, &x, &y).await }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in &results {
        assert!(
            matches!(
                r,
                Ok(())
                    | Err(DomainError::OtpReplayed
                        | DomainError::InvalidOtp
                        | DomainError::TokenLocked
                        // more than the threshold of password checks in flight
                        | DomainError::UserLocked)
            ),
            "{r:?}"
        );
    }
    assert_eq!(a.live(&t).await.unwrap().counter, 62);
    let events = a.token_audit(&t).await;
    assert_eq!(count_events(&events, "token.activate", "ok"), 1);
    assert_eq!(count_events(&events, "token.resync", "ok"), 1);
    a.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 8. Password lockout
// ---------------------------------------------------------------------------

async fn five_wrong_passwords_lock_the_user_until_an_operator_unlocks() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    for i in 1..=5 {
        assert_err!(
            c.ichido
                .register(C, "taro", WRONG_PASSWORD, TokenKind::Event)
                .await,
            DomainError::InvalidCredentials
        );
        let locked = c.ichido.user_view(C, "taro").await.unwrap().locked;
        assert_eq!(locked, i == 5, "after {i} wrong passwords");
    }
    // Even the right password is refused now, for every password-checked action.
    assert_err!(
        c.ichido
            .register(C, "taro", PASSWORD, TokenKind::Event)
            .await,
        DomainError::UserLocked
    );
    assert_err!(
        c.ichido
            .resync(C, "taro", PASSWORD, "123456", "234567")
            .await,
        DomainError::UserLocked
    );

    let view = c.ichido.unlock_user(&c.op, C, "taro").await.unwrap();
    assert!(!view.locked);
    let t = c.register(C, "taro", TokenKind::Event).await;
    c.activate(&t).await;

    let events = c.audit().await;
    let lock = events
        .iter()
        .find(|e| e.action == "user.lock")
        .expect("user.lock");
    assert_eq!(lock.actor, "system");
    assert_eq!(lock.user_id.as_deref(), Some("taro"));
    assert_eq!(count_events(&events, "token.register", "user_locked"), 1);
    assert_eq!(count_events(&events, "token.resync", "user_locked"), 1);
    assert!(has_event(&events, "user.unlock", "ok"));
    c.assert_audit_clean().await;
}

async fn lockout_is_kept_for_unknown_users_and_contracts_too() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    for (contract, user) in [(C, "ghost"), ("C-404", "taro")] {
        for _ in 0..5 {
            assert_err!(
                c.ichido
                    .register(contract, user, PASSWORD, TokenKind::Time)
                    .await,
                DomainError::InvalidCredentials
            );
        }
        // Locked tells nothing: an unknown user answers exactly like a real one.
        assert_err!(
            c.ichido
                .register(contract, user, PASSWORD, TokenKind::Time)
                .await,
            DomainError::UserLocked
        );
    }
    // Operators can unlock only users that exist.
    assert_err!(
        c.ichido.unlock_user(&c.op, C, "ghost").await,
        DomainError::NotFound(_)
    );
    // The real user is unaffected.
    let t = c.register(C, "taro", TokenKind::Time).await;
    c.activate(&t).await;
    let events = c.audit().await;
    assert_eq!(events.iter().filter(|e| e.action == "user.lock").count(), 2);
    c.assert_audit_clean().await;
}

async fn only_consecutive_wrong_passwords_count() {
    let c = Center::new().await;
    c.user(C, "taro").await;
    for _ in 0..2 {
        for _ in 0..4 {
            assert_err!(
                c.ichido
                    .register(C, "taro", WRONG_PASSWORD, TokenKind::Event)
                    .await,
                DomainError::InvalidCredentials
            );
        }
        // A right password resets the count (and replaces the pending token).
        c.register(C, "taro", TokenKind::Event).await;
        assert!(!c.ichido.user_view(C, "taro").await.unwrap().locked);
    }
    c.assert_audit_clean().await;
}

async fn concurrent_wrong_passwords_are_all_counted() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let instances = [Arc::clone(&a.ichido), Arc::clone(&b.ichido)];
    a.user(C, "taro").await;
    let results = all_at_once(20, |i| {
        let ichido = Arc::clone(&instances[i % 2]);
        async move {
            ichido
                .register(C, "taro", WRONG_PASSWORD, TokenKind::Event)
                .await
                .map(|_| ())
        }
    })
    .await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(DomainError::InvalidCredentials)))
        .count();
    let locked = results
        .iter()
        .filter(|r| matches!(r, Err(DomainError::UserLocked)))
        .count();
    assert_eq!(refused + locked, 20, "{results:?}");
    assert!(refused >= 5);
    assert!(a.ichido.user_view(C, "taro").await.unwrap().locked);
    assert_err!(
        b.ichido
            .register(C, "taro", PASSWORD, TokenKind::Event)
            .await,
        DomainError::UserLocked
    );
    // Every refusal was counted and logged; the lock happened once.
    let events = a.audit().await;
    assert_eq!(
        count_events(&events, "token.register", "invalid_credentials"),
        refused
    );
    assert_eq!(events.iter().filter(|e| e.action == "user.lock").count(), 1);
    a.assert_audit_clean().await;
}

/// Each attempt is counted before the (slow) password check, so a burst of
/// concurrent guesses across instances is cut off at the threshold.
async fn concurrent_password_guesses_are_bounded_by_the_lock_threshold() {
    let db = FileDb::new();
    let (a, b) = two_instances(&db).await;
    let instances = [Arc::clone(&a.ichido), Arc::clone(&b.ichido)];
    a.user(C, "taro").await;
    let results = all_at_once(20, |i| {
        let ichido = Arc::clone(&instances[i % 2]);
        async move {
            ichido
                .register(C, "taro", WRONG_PASSWORD, TokenKind::Event)
                .await
                .map(|_| ())
        }
    })
    .await;
    let verified = results
        .iter()
        .filter(|r| matches!(r, Err(DomainError::InvalidCredentials)))
        .count();
    assert!(
        verified <= 5,
        "{verified} guesses were verified, more than the lock threshold"
    );
}

// ---------------------------------------------------------------------------
// 9. Audit
// ---------------------------------------------------------------------------

async fn every_decision_is_audited_without_secrets_and_the_chain_verifies() {
    let c = Center::new().await;
    let (_op, key) = c.ichido.create_operator("teller").await.unwrap();
    let t = c.active(C, "taro", TokenKind::Event).await;
    // validate: ok, replay, wrong.
    c.validate(&t, &t.hotp(1)).await.unwrap();
    c.validate(&t, &t.hotp(1)).await.unwrap_err();
    c.validate(&t, &t.wrong_code(2)).await.unwrap_err();
    // resync: ok and failed.
    c.ichido
        .resync(C, "taro", PASSWORD, &t.hotp(20), &t.hotp(21))
        .await
        .unwrap();
    c.ichido
        .resync(C, "taro", PASSWORD, &t.hotp(30), &t.hotp(40))
        .await
        .unwrap_err();
    // lock, locked, unlock.
    for _ in 0..5 {
        c.validate(&t, &t.wrong_code(22)).await.unwrap_err();
    }
    c.validate(&t, &t.hotp(22)).await.unwrap_err();
    c.ichido.unlock_token(&c.op, C, "taro").await.unwrap();
    // suspend, suspended, resume.
    c.ichido.suspend(&c.op, C, "taro", None).await.unwrap();
    c.validate(&t, &t.hotp(22)).await.unwrap_err();
    c.ichido.resume(&c.op, C, "taro").await.unwrap();
    // register refused while live, revoke, revoked.
    assert_err!(
        c.ichido
            .register(C, "taro", PASSWORD, TokenKind::Event)
            .await,
        DomainError::TokenExists
    );
    c.ichido.revoke(&c.op, C, "taro").await.unwrap();
    c.validate(&t, &t.hotp(22)).await.unwrap_err();
    // pending: refused validation, failed activation, replaced, discarded.
    let p1 = c.register(C, "taro", TokenKind::Time).await;
    c.validate(&p1, &p1.totp(c.now())).await.unwrap_err();
    c.ichido
        .activate(&p1.token_id, &p1.wrong_code(step_of(c.now())))
        .await
        .unwrap_err();
    let p2 = c.register(C, "taro", TokenKind::Time).await;
    c.clock.advance(601);
    assert_eq!(c.ichido.discard_expired_pending().await.unwrap(), 1);
    // password lockout and unlock.
    for _ in 0..6 {
        assert!(c
            .ichido
            .register(C, "taro", WRONG_PASSWORD, TokenKind::Event)
            .await
            .is_err());
    }
    c.ichido.unlock_user(&c.op, C, "taro").await.unwrap();

    let events = c.audit().await;
    let expected = [
        ("operator.create", "ok: teller"),
        ("contract.create", "ok"),
        ("user.create", "ok: approver"),
        ("token.register", "ok: event"),
        ("token.register", "ok: time"),
        ("token.register", "token_exists"),
        ("token.register", "invalid_credentials"),
        ("token.register", "user_locked"),
        ("token.activate", "ok"),
        ("token.activate", "invalid_otp"),
        ("token.validate", "ok"),
        ("token.validate", "otp_replayed"),
        ("token.validate", "invalid_otp"),
        ("token.validate", "token_locked"),
        ("token.validate", "token_suspended"),
        ("token.validate", "token_revoked"),
        ("token.validate", "token_pending"),
        ("token.resync", "ok"),
        ("token.resync", "invalid_otp"),
        ("token.lock", "locked after 5"),
        ("token.unlock", "ok"),
        ("token.suspend", "ok"),
        ("token.resume", "ok"),
        ("token.revoke", "ok"),
        ("token.discard", "replaced by a new registration"),
        ("token.discard", "not activated in time"),
        ("user.lock", "locked after 5"),
        ("user.unlock", "ok"),
    ];
    for (action, outcome) in expected {
        assert!(
            has_event(&events, action, outcome),
            "missing audit event {action} / {outcome}"
        );
    }
    // Who acted.
    let actor_of = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action)
            .map(|e| e.actor.clone())
            .unwrap()
    };
    assert_eq!(actor_of("token.validate"), "operator:ops");
    assert_eq!(actor_of("token.suspend"), "operator:ops");
    assert_eq!(actor_of("token.register"), format!("user:{C}/taro"));
    assert_eq!(actor_of("token.resync"), format!("user:{C}/taro"));
    assert_eq!(actor_of("token.lock"), "system");
    // Times come from the clock; sequence numbers are dense.
    assert_eq!(events.last().unwrap().at, c.now());
    assert!(events.iter().all(|e| e.at == T0 || e.at == T0 + 601));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
    }
    // The operator key is not logged either.
    assert!(events.iter().all(|e| !e.outcome.contains(key.0.as_str())));

    // Filters: newest first, by token, by user, paged, bounded.
    let by_token = c.token_audit(&p2).await;
    assert!(!by_token.is_empty());
    assert!(by_token
        .iter()
        .all(|e| e.token_id.as_deref() == Some(p2.token_id.as_str())));
    let newest = c
        .ichido
        .audit_events(AuditFilter {
            contract_no: Some(C.into()),
            user_id: Some("taro".into()),
            limit: 3,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 3);
    assert!(newest.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(newest.iter().all(|e| e.user_id.as_deref() == Some("taro")));
    let older = c
        .ichido
        .audit_events(AuditFilter {
            before_seq: Some(newest[2].seq),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(older[0].seq, newest[2].seq - 1);
    assert_eq!(
        c.ichido
            .audit_events(AuditFilter::default())
            .await
            .unwrap()
            .len(),
        100.min(events.len()),
        "limit 0 means the default page"
    );
    assert_err!(
        c.ichido
            .audit_events(AuditFilter {
                limit: 1001,
                ..AuditFilter::default()
            })
            .await,
        DomainError::InvalidRequest(_)
    );

    let report = c.ichido.verify_audit_chain(|_| {}).await.unwrap();
    assert_eq!(report.fault, None);
    assert_eq!(report.checked, events.len() as u64);
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 10. Master key and secrets at rest
// ---------------------------------------------------------------------------

async fn master_key_check_refuses_a_different_key_on_the_same_store() {
    let db = FileDb::new();
    let clock = Arc::new(FixedClock::new(T0));
    let master = MasterKey::generate();
    let a = Center::on(db.open(4).await, Arc::clone(&clock), master.clone());
    a.ichido.check_master_key().await.expect("first start");
    a.ichido.check_master_key().await.expect("same key again");
    let t = a.active(C, "taro", TokenKind::Event).await;

    // Another process with the same key.
    let same = Center::on(db.open(4).await, Arc::clone(&clock), master);
    same.ichido.check_master_key().await.expect("same key");
    assert_eq!(
        same.validate(&t, &t.hotp(1)).await.unwrap(),
        Acceptance::Event { counter: 1 }
    );

    // A different key is refused, and could not open the secrets anyway.
    let other = Center::on(db.open(4).await, clock, MasterKey::generate());
    assert_err!(
        other.ichido.check_master_key().await,
        DomainError::InvalidRequest(_)
    );
    assert_err!(
        other.validate(&t, &t.hotp(2)).await,
        DomainError::Internal(_)
    );
    // ... without consuming the code or counting a failure.
    let tok = a.live(&t).await.unwrap();
    assert_eq!((tok.counter, tok.failures), (2, 0));
    a.assert_audit_clean().await;
}

async fn token_secrets_are_stored_only_sealed() {
    let db = FileDb::new();
    let c = Center::on(
        db.open(4).await,
        Arc::new(FixedClock::new(T0)),
        MasterKey::generate(),
    );
    let e = c.active(C, "taro", TokenKind::Event).await;
    let t = c.active(C, "hanako", TokenKind::Time).await;
    c.user(C, "jiro").await;
    let p = c.register(C, "jiro", TokenKind::Event).await;

    let rows = db.raw_tokens().await;
    assert_eq!(rows.len(), 3);
    for tok in [&e, &t, &p] {
        let sealed = &rows
            .iter()
            .find(|r| r.token_id == tok.token_id)
            .expect("row")
            .sealed_secret;
        // version byte, 12-byte nonce, ciphertext of the 20-byte secret, 16-byte tag.
        assert_eq!(sealed.len(), 1 + 12 + 20 + 16);
        assert_eq!(sealed[0], 1);
        assert!(!contains_bytes(sealed, &tok.secret), "raw secret in row");
        assert!(!contains_bytes(sealed, tok.secret_b32.as_bytes()));
    }
    // Nowhere in the database either (SQLite: its files; PostgreSQL: every row).
    let files = db.all_bytes().await;
    for tok in [&e, &t, &p] {
        assert!(!contains_bytes(&files, &tok.secret), "raw secret on disk");
        assert!(!contains_bytes(&files, tok.secret_b32.as_bytes()));
        assert!(!contains_bytes(&files, to_hex(&tok.secret).as_bytes()));
    }
    // Nor any password.
    for pw in ALL_PASSWORDS {
        assert!(!contains_bytes(&files, pw.as_bytes()), "password on disk");
    }

    // Revoking destroys the sealed secret.
    c.ichido.revoke(&c.op, C, "taro").await.unwrap();
    let rows = db.raw_tokens().await;
    let revoked = rows.iter().find(|r| r.token_id == e.token_id).expect("row");
    assert_eq!(revoked.state, "revoked");
    assert!(revoked.sealed_secret.is_empty());
    c.assert_audit_clean().await;
}

// ---------------------------------------------------------------------------
// 11. PostgreSQL only: instances starting together
// ---------------------------------------------------------------------------

/// sqlx's PostgreSQL migrator holds an advisory lock while it runs: instances
/// starting at once on a fresh schema all come up, and migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_the_schema_once() {
    let Some(url) = postgres_or_skip().await else {
        return;
    };
    let schema = fresh_schema();
    let barrier = Arc::new(Barrier::new(4));
    let mut set = JoinSet::new();
    for _ in 0..4 {
        let (url, schema, barrier) = (url.clone(), schema.clone(), Arc::clone(&barrier));
        set.spawn(async move {
            barrier.wait().await;
            PgStore::open_in_schema(&url, &schema, &StoreOptions::default()).await
        });
    }
    let mut opened = Vec::new();
    while let Some(r) = set.join_next().await {
        opened.push(r.expect("task"));
    }
    // The URL's own `options` select the schema too (sqlx parses them).
    let sep = if url.contains('?') { '&' } else { '?' };
    let by_url = ichido_store::open(
        &format!("{url}{sep}options=-csearch_path%3D{schema}"),
        &StoreOptions::default(),
    )
    .await;
    let mut conn = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())])
        .connect()
        .await
        .unwrap();
    let applied: Result<(i64,), _> = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await;
    conn.close().await.unwrap();
    let mut values = Vec::new();
    for s in opened.iter().flatten() {
        values.push(s.meta_init("probe", "first").await);
    }
    if let Ok(s) = &by_url {
        values.push(s.meta_init("probe", "second").await);
    }
    for s in opened.iter().flatten() {
        s.close().await;
    }
    drop_schemas(&url, &[schema]).await;

    for r in &opened {
        assert!(r.is_ok(), "every instance opens: {:?}", r.as_ref().err());
    }
    assert!(by_url.is_ok(), "open by URL: {:?}", by_url.err());
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(
        usize::try_from(applied.unwrap().0).unwrap(),
        shipped,
        "each migration applied once"
    );
    assert_eq!(values.len(), 5);
    for v in values {
        assert_eq!(v.unwrap(), "first", "one schema seen by all");
    }
}

// Every test above, on both backends (see `harness::conformance!`).
conformance! {
    current: [
        registration_gives_a_pending_token_with_a_luhn_id_and_a_matching_uri,
        registration_refuses_wrong_password_unknown_user_and_unknown_contract_alike,
        registration_with_a_live_token_is_token_exists,
        registration_while_pending_replaces_the_pending_token,
        event_token_activates_with_the_code_of_counter_zero,
        time_token_activates_with_the_current_code,
        wrong_activation_code_is_invalid_otp_and_five_discard_the_pending_token,
        pending_token_expires_after_ten_minutes,
        event_token_accepts_each_code_once_within_the_look_ahead,
        time_token_accepts_each_step_once_within_one_step,
        time_token_learns_its_clock_offset_and_recentres_the_window,
        time_token_works_beyond_2038,
        bank_configured_algorithm_and_code_length_apply_to_new_tokens,
        five_failures_lock_the_token_until_an_operator_unlocks_it,
        suspended_token_answers_suspended_until_resumed,
        revoked_token_is_gone_for_good_and_the_user_may_register_again,
        resync_catches_up_an_event_token_fifty_codes_ahead,
        resync_learns_a_time_token_five_minutes_ahead,
        resync_with_non_consecutive_codes_is_invalid_otp_and_counts_a_failure,
        five_wrong_passwords_lock_the_user_until_an_operator_unlocks,
        lockout_is_kept_for_unknown_users_and_contracts_too,
        only_consecutive_wrong_passwords_count,
        every_decision_is_audited_without_secrets_and_the_chain_verifies,
        master_key_check_refuses_a_different_key_on_the_same_store,
        token_secrets_are_stored_only_sealed,
        console_sign_in_needs_password_and_a_fresh_code_and_opens_a_session,
        console_failures_lock_until_the_credentials_are_reissued,
        console_secret_is_stored_sealed_and_bound_to_the_operator,
        import_creates_users_and_active_tokens_that_validate,
        import_is_all_or_nothing_and_names_the_bad_entry,
        import_store_names_a_taken_user_or_token_id_and_writes_nothing,
        validation_keys_are_cached_and_revocation_forgets_them,
    ];
    multi: [
        one_console_code_opens_one_session_under_concurrency,
        an_event_code_is_accepted_exactly_once_under_concurrency,
        a_time_code_is_accepted_exactly_once_under_concurrency,
        activation_and_resync_are_exactly_once_under_concurrency,
        many_tokens_across_instances_are_exactly_once_in_batches,
        concurrent_wrong_codes_are_counted_once_and_lock_at_the_threshold,
        a_stale_validation_entry_never_decides_alone,
        concurrent_token_reads_each_get_their_own_row,
        concurrent_wrong_passwords_are_all_counted,
        concurrent_password_guesses_are_bounded_by_the_lock_threshold,
    ];
}
