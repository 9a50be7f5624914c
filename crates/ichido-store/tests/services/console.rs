//! The operator console's sign-in on both stores: name, password and a TOTP
//! code of the operator's own token; a code opens one session only; failures
//! lock; reissuing clears the lock and ends sessions; the secret is sealed.

use std::sync::Arc;

use ichido_domain::services::{CONSOLE_LOCK_THRESHOLD, CONSOLE_SESSION_PREFIX};
use ichido_domain::DomainError;
use ichido_otp::uri::KeyUri;
use ichido_otp::{Digits, Key};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::harness::*;

const PW: &str = "console-password-1";

async fn operator_with_console(c: &Center, name: &str) -> Key {
    c.ichido.create_operator(name).await.unwrap();
    let uri = c.ichido.set_console_credentials(name, PW).await.unwrap();
    let parsed = KeyUri::parse(&uri).unwrap();
    assert_eq!(parsed.account, name);
    assert_eq!(parsed.period, 30);
    parsed.key().unwrap()
}

fn code(key: &Key, unix: i64) -> String {
    key.totp(u64::try_from(unix).unwrap(), 30, Digits::SIX)
        .to_string()
}

pub async fn console_sign_in_needs_password_and_a_fresh_code_and_opens_a_session() {
    let c = Center::new().await;
    let key = operator_with_console(&c, "branch-ops").await;
    let now = c.now();

    // Wrong password, wrong code, unknown operator: one answer.
    for (name, pw, otp) in [
        ("branch-ops", "wrong-password-1", code(&key, now)),
        ("branch-ops", PW, code(&key, now + 600)),
        ("nobody", PW, code(&key, now)),
    ] {
        let e = c
            .ichido
            .console_sign_in(name, pw, &otp)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, DomainError::InvalidCredentials), "{e:?}");
    }

    let out = c
        .ichido
        .console_sign_in("branch-ops", PW, &code(&key, now))
        .await
        .unwrap();
    assert!(out.session.starts_with(CONSOLE_SESSION_PREFIX));
    assert_eq!(out.operator.name, "branch-ops");
    let op = c.ichido.console_session(&out.session).await.unwrap();
    assert_eq!(op.name, "branch-ops");

    // The same code again is spent; so is the previous step's.
    let e = c
        .ichido
        .console_sign_in("branch-ops", PW, &code(&key, now))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, DomainError::InvalidCredentials));
    let e = c
        .ichido
        .console_sign_in("branch-ops", PW, &code(&key, now - 30))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, DomainError::InvalidCredentials));

    // Idle sessions end; signing out ends them at once.
    c.clock.advance(30);
    let out2 = c
        .ichido
        .console_sign_in("branch-ops", PW, &code(&key, c.now()))
        .await
        .unwrap();
    c.ichido.console_sign_out(&out2.session).await.unwrap();
    assert!(matches!(
        c.ichido.console_session(&out2.session).await,
        Err(DomainError::Unauthorized)
    ));
    c.clock.advance(301);
    assert!(matches!(
        c.ichido.console_session(&out.session).await,
        Err(DomainError::Unauthorized)
    ));
    // A customer session secret is no console session.
    assert!(matches!(
        c.ichido.console_session("ichido_s_00").await,
        Err(DomainError::Unauthorized)
    ));

    let audit = c.audit().await;
    assert!(has_event(&audit, "operator.sign_in", "ok"));
    assert!(has_event(&audit, "operator.sign_in", "invalid_credentials"));
    assert!(has_event(&audit, "operator.sign_out", "ok"));
    assert!(has_event(
        &audit,
        "operator.console_credentials",
        "ok: branch-ops"
    ));
    c.assert_audit_clean().await;
}

pub async fn console_failures_lock_until_the_credentials_are_reissued() {
    let c = Center::new().await;
    let key = operator_with_console(&c, "ops-2").await;
    for _ in 0..CONSOLE_LOCK_THRESHOLD {
        let e = c
            .ichido
            .console_sign_in("ops-2", "wrong-password-1", &code(&key, c.now()))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, DomainError::InvalidCredentials), "{e:?}");
    }
    // Locked: even everything right is refused, unchecked.
    let e = c
        .ichido
        .console_sign_in("ops-2", PW, &code(&key, c.now()))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, DomainError::UserLocked), "{e:?}");

    // Reissuing gives a new token (the old one's codes are refused) and clears the lock.
    let new_uri = c.ichido.set_console_credentials("ops-2", PW).await.unwrap();
    let new_key = KeyUri::parse(&new_uri).unwrap().key().unwrap();
    c.clock.advance(30);
    let old = code(&key, c.now());
    let new = code(&new_key, c.now());
    if old != new {
        let e = c
            .ichido
            .console_sign_in("ops-2", PW, &old)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, DomainError::InvalidCredentials));
    }
    c.ichido
        .console_sign_in("ops-2", PW, &new)
        .await
        .expect("the new token signs in");

    // Credentials only for operators that exist; passwords 8–256 bytes.
    assert!(matches!(
        c.ichido.set_console_credentials("ghost", PW).await,
        Err(DomainError::NotFound("operator"))
    ));
    assert!(matches!(
        c.ichido.set_console_credentials("ops-2", "short").await,
        Err(DomainError::InvalidRequest(_))
    ));
    c.assert_audit_clean().await;
}

pub async fn console_secret_is_stored_sealed_and_bound_to_the_operator() {
    let c = Center::new().await;
    let key = operator_with_console(&c, "ops-3").await;
    let creds = c
        .store
        .operator_credentials("ops-3")
        .await
        .unwrap()
        .unwrap();
    assert!(creds.password_hash.starts_with("$argon2id$"));
    assert!(!creds.password_hash.contains(PW));
    assert_eq!(creds.failures, 0);
    assert_eq!(creds.last_step, None);
    // Another operator's row with this sealed secret does not open.
    let uri = c.ichido.set_console_credentials("ops-3", PW).await.unwrap();
    assert!(!uri.is_empty());
    c.ichido.create_operator("ops-4").await.unwrap();
    let creds3 = c
        .store
        .operator_credentials("ops-3")
        .await
        .unwrap()
        .unwrap();
    let audit = c.ichido.now();
    c.store
        .set_operator_credentials(
            "ops-4",
            &creds3.password_hash,
            &creds3.sealed_secret,
            audit,
            ichido_domain::audit::AuditRecord {
                at: audit,
                actor: "system".into(),
                action: "operator.console_credentials",
                contract_no: None,
                user_id: None,
                token_id: None,
                outcome: "ok: ops-4".into(),
            },
        )
        .await
        .unwrap();
    let now = c.now();
    let e = c
        .ichido
        .console_sign_in("ops-4", PW, &code(&key, now))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e, DomainError::Internal(_)),
        "a moved secret must not open: {e:?}"
    );
}

pub async fn one_console_code_opens_one_session_under_concurrency() {
    let c = Arc::new(Center::new().await);
    let key = operator_with_console(&c, "ops-race").await;
    let otp = code(&key, c.now());
    let barrier = Arc::new(Barrier::new(8));
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let (c, otp, barrier) = (Arc::clone(&c), otp.clone(), Arc::clone(&barrier));
        set.spawn(async move {
            barrier.wait().await;
            c.ichido.console_sign_in("ops-race", PW, &otp).await.is_ok()
        });
    }
    let mut won = 0;
    while let Some(r) = set.join_next().await {
        won += usize::from(r.unwrap());
    }
    assert_eq!(won, 1, "one code, one session");
}
