//! The bank's customer flows over HTTP (the real router and SQLite, driven with
//! `oneshot`), with a fake clock so that idle sessions and suspension grace can
//! expire without sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "flows/harness.rs"]
mod harness;

use axum::http::StatusCode;
use harness::{Bank, Reg};
use serde_json::json;

const C: &str = "1234567890";

#[tokio::test]
async fn roles_log_in_with_and_without_tokens() {
    let b = Bank::new().await;
    for (user, role) in [
        ("admin", "administrator"),
        ("appr", "approver"),
        ("appl", "applicant"),
        ("view", "viewer"),
    ] {
        b.user(C, user, role).await;
    }
    // No token: administrators and approvers must register first; others use passwords.
    for user in ["admin", "appr"] {
        b.assert_err(
            b.login(C, user, None, None).await,
            403,
            "otp_registration_required",
        );
    }
    for user in ["appl", "view"] {
        let (s, v) = b.login(C, user, None, None).await;
        assert_eq!(
            (s, v["method"].as_str(), v["expires_in"].as_u64()),
            (StatusCode::OK, Some("password"), Some(300)),
            "{v}"
        );
    }
    // A pending token is not yet a token.
    let pending = b.register(C, "appr", "event").await;
    b.assert_err(
        b.login(C, "appr", None, None).await,
        403,
        "otp_registration_required",
    );
    b.activate(&pending).await;
    // With an active token every role needs the OTP (applicant and viewer too, once registered).
    let mut regs = vec![("appr", pending)];
    for user in ["admin", "appl", "view"] {
        let r = b
            .register(C, user, if user == "view" { "time" } else { "event" })
            .await;
        b.activate(&r).await;
        regs.push((user, r));
    }
    for (user, reg) in &regs {
        b.assert_err(b.login(C, user, None, None).await, 401, "otp_required");
        let code = reg.next_code(&b);
        let (s, v) = b.login(C, user, Some(&reg.token_id), Some(&code)).await;
        assert_eq!(
            (s, v["method"].as_str()),
            (StatusCode::OK, Some("otp")),
            "{user}: {v}"
        );
        assert!(v["session"].as_str().unwrap().starts_with("ichido_s_"));
        // The same code again fails, and looks like any other failure.
        b.assert_err(
            b.login(C, user, Some(&reg.token_id), Some(&code)).await,
            401,
            "invalid_credentials",
        );
    }
    // Device binding: another user's token ID (with a right code of it) is refused.
    let (_, appr) = &regs[0];
    let (_, admin) = &regs[1];
    let code = admin.next_code(&b);
    b.assert_err(
        b.login(C, "appr", Some(&admin.token_id), Some(&code)).await,
        401,
        "invalid_credentials",
    );
    // A wrong code and a wrong password look alike.
    let wrong_otp = b
        .login(C, "appr", Some(&appr.token_id), Some("000000"))
        .await;
    let wrong_pw = b
        .login_with(
            C,
            "appr",
            "not-the-password",
            Some(&appr.token_id),
            Some("000000"),
        )
        .await;
    let unknown = b
        .login_with(C, "nobody", "not-the-password", None, None)
        .await;
    assert_eq!(wrong_otp, wrong_pw);
    assert_eq!(wrong_pw, unknown);
    b.assert_err(unknown, 401, "invalid_credentials");
}

#[tokio::test]
async fn locked_suspended_grace_revoked_and_reregistered() {
    let b = Bank::new().await;
    b.user(C, "appr", "approver").await;
    b.user(C, "view", "viewer").await;
    let reg = b.token(C, "appr", "event").await;
    let vreg = b.token(C, "view", "event").await;
    // Locked after 5 wrong codes: token_locked even with the right one.
    for _ in 0..5 {
        b.login(C, "appr", Some(&reg.token_id), Some("000000"))
            .await;
    }
    let code = reg.next_code(&b);
    b.assert_err(
        b.login(C, "appr", Some(&reg.token_id), Some(&code)).await,
        423,
        "token_locked",
    );
    b.op_post(
        &format!("/contracts/{C}/users/appr/token/unlock"),
        json!({}),
    )
    .await;
    let code = reg.next_code(&b);
    assert_eq!(
        b.login(C, "appr", Some(&reg.token_id), Some(&code)).await.0,
        StatusCode::OK
    );

    // Suspended with 30 days' grace: passwords alone, method "password".
    let (s, t) = b
        .op_post(
            &format!("/contracts/{C}/users/appr/token/suspend"),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, t["state"].as_str()),
        (StatusCode::OK, Some("suspended"))
    );
    let (s, v) = b.login(C, "appr", None, None).await;
    assert_eq!(
        (s, v["method"].as_str()),
        (StatusCode::OK, Some("password")),
        "{v}"
    );
    // Grace over: approvers are refused until resumed; viewers keep passwords.
    b.op_post(
        &format!("/contracts/{C}/users/view/token/suspend"),
        json!({}),
    )
    .await;
    b.clock.advance(30 * 86_400 + 1);
    b.assert_err(b.login(C, "appr", None, None).await, 403, "token_suspended");
    assert_eq!(b.login(C, "view", None, None).await.1["method"], "password");
    b.op_post(
        &format!("/contracts/{C}/users/appr/token/resume"),
        json!({}),
    )
    .await;
    b.assert_err(b.login(C, "appr", None, None).await, 401, "otp_required");
    let code = reg.next_code(&b);
    assert_eq!(
        b.login(C, "appr", Some(&reg.token_id), Some(&code)).await.1["method"],
        "otp"
    );

    // Revoked: an approver must register again; then the new token works.
    b.op_delete(&format!("/contracts/{C}/users/appr/token"))
        .await;
    b.assert_err(
        b.login(C, "appr", None, None).await,
        403,
        "otp_registration_required",
    );
    let again = b.token(C, "appr", "time").await;
    b.assert_err(
        b.login(C, "appr", Some(&reg.token_id), Some(&again.next_code(&b)))
            .await,
        401,
        "invalid_credentials",
    );
    let code = again.next_code(&b);
    assert_eq!(
        b.login(C, "appr", Some(&again.token_id), Some(&code))
            .await
            .1["method"],
        "otp"
    );
    drop(vreg);
}

#[tokio::test]
async fn transfers_are_approved_once_realtime_or_deferred() {
    let b = Bank::new().await;
    b.user(C, "appl", "applicant").await;
    b.user(C, "appr", "approver").await;
    b.user(C, "view", "viewer").await;
    b.user("9999999999", "other", "approver").await;
    let reg = b.token(C, "appr", "event").await;
    let other = b.token("9999999999", "other", "event").await;
    let applicant = b.session(C, "appl", None).await;
    let viewer = b.session(C, "view", None).await;
    let approver = b.session(C, "appr", Some(&reg)).await;
    let outsider = b.session("9999999999", "other", Some(&other)).await;

    // Viewers cannot prepare transfers; applicants can.
    b.assert_err(
        b.post(
            &viewer,
            "/transactions",
            json!({"kind": "transfer", "payee": "Tanaka Shoji", "amount": 150000}),
        )
        .await,
        403,
        "forbidden",
    );
    let (s, t) = b
        .post(
            &applicant,
            "/transactions",
            json!({"kind": "transfer", "payee": "Tanaka Shoji", "amount": 150000}),
        )
        .await;
    assert_eq!(
        (s, t["state"].as_str()),
        (StatusCode::CREATED, Some("pending_approval")),
        "{t}"
    );
    let id = t["id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"kind": "transfer", "payee": "x", "amount": 0}),
        json!({"kind": "transfer", "payee": "x", "amount": 1.5}),
        json!({"kind": "cash", "payee": "x", "amount": 1}),
        json!({"kind": "transfer", "payee": "", "amount": 1}),
    ] {
        b.assert_err(
            b.post(&applicant, "/transactions", bad).await,
            400,
            "invalid_request",
        );
    }
    let approve = |tx_pw: &'static str, otp: Option<String>| json!({"transaction_password": tx_pw, "otp": otp});
    // Wrong role, other contract, missing OTP, wrong transaction password, wrong OTP.
    b.assert_err(
        b.post(
            &applicant,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, None),
        )
        .await,
        403,
        "forbidden",
    );
    b.assert_err(
        b.post(
            &outsider,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, Some(other.next_code(&b))),
        )
        .await,
        404,
        "not_found",
    );
    b.assert_err(
        b.post(
            &approver,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, None),
        )
        .await,
        401,
        "otp_required",
    );
    b.assert_err(
        b.post(
            &approver,
            &format!("/transactions/{id}/approve"),
            approve("wrong-tx-pass", Some(reg.next_code(&b))),
        )
        .await,
        401,
        "invalid_credentials",
    );
    b.assert_err(
        b.post(
            &approver,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, Some("000000".into())),
        )
        .await,
        401,
        "invalid_credentials",
    );
    // Right: executed in real time.
    let (s, t) = b
        .post(
            &approver,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, Some(reg.next_code(&b))),
        )
        .await;
    assert_eq!(
        (s, t["state"].as_str(), t["execution"].as_str()),
        (StatusCode::OK, Some("executed"), Some("realtime")),
        "{t}"
    );
    assert_eq!(t["approved_by"], "appr");
    // Twice: refused, even with a fresh right code.
    b.assert_err(
        b.post(
            &approver,
            &format!("/transactions/{id}/approve"),
            approve(harness::TX_PASSWORD, Some(reg.next_code(&b))),
        )
        .await,
        409,
        "conflict",
    );

    // Suspended with grace: the approval needs no OTP and is deferred.
    let (_, t) = b
        .post(
            &applicant,
            "/transactions",
            json!({"kind": "transfer", "payee": "Sato Denki", "amount": 98000}),
        )
        .await;
    let id2 = t["id"].as_str().unwrap().to_owned();
    b.op_post(
        &format!("/contracts/{C}/users/appr/token/suspend"),
        json!({"grace_days": 10}),
    )
    .await;
    let (s, t) = b
        .post(
            &approver,
            &format!("/transactions/{id2}/approve"),
            approve(harness::TX_PASSWORD, None),
        )
        .await;
    assert_eq!(
        (s, t["execution"].as_str()),
        (StatusCode::OK, Some("deferred")),
        "{t}"
    );
    // The list shows both, newest first.
    let (s, list) = b.get(&applicant, "/transactions").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["transactions"].as_array().unwrap().len(), 2);
    // Audit: creation and approvals with their outcomes.
    let (_, log) = b
        .op_get(&format!("/audit?contract_no={C}&limit=1000"))
        .await;
    let text = log.to_string();
    assert!(
        text.contains("transaction.create")
            && text.contains("ok realtime")
            && text.contains("ok deferred"),
        "{text}"
    );
    assert!(!text.contains(harness::TX_PASSWORD) && !text.contains(harness::PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_of_one_transaction_cannot_both_execute() {
    let b = Bank::new().await;
    b.user(C, "appl", "applicant").await;
    b.user(C, "a1", "approver").await;
    b.user(C, "a2", "administrator").await;
    let r1 = b.token(C, "a1", "event").await;
    let r2 = b.token(C, "a2", "event").await;
    let applicant = b.session(C, "appl", None).await;
    let s1 = b.session(C, "a1", Some(&r1)).await;
    let s2 = b.session(C, "a2", Some(&r2)).await;
    for _ in 0..5 {
        let (_, t) = b
            .post(
                &applicant,
                "/transactions",
                json!({"kind": "transfer", "payee": "Race Co", "amount": 1000}),
            )
            .await;
        let id = t["id"].as_str().unwrap().to_owned();
        let body1 = json!({"transaction_password": harness::TX_PASSWORD, "otp": r1.next_code(&b)});
        let body2 = json!({"transaction_password": harness::TX_PASSWORD, "otp": r2.next_code(&b)});
        let path = format!("/transactions/{id}/approve");
        let (x, y) = tokio::join!(b.post(&s1, &path, body1), b.post(&s2, &path, body2));
        let oks = [&x, &y].iter().filter(|r| r.0 == StatusCode::OK).count();
        assert_eq!(oks, 1, "{x:?} {y:?}");
        let loser = if x.0 == StatusCode::OK { &y } else { &x };
        assert_eq!(loser.1["error"]["code"], "conflict", "{loser:?}");
    }
}

#[tokio::test]
async fn resync_over_http_for_event_and_time_tokens() {
    let b = Bank::new().await;
    b.user(C, "ev", "approver").await;
    b.user(C, "tm", "approver").await;
    let ev = b.token(C, "ev", "event").await;
    // The customer pressed "generate" 50 times without using the codes.
    let ahead = ev.counter.get() + 50;
    let code_far = ev.hotp(ahead);
    b.assert_err(
        b.login(C, "ev", Some(&ev.token_id), Some(&code_far)).await,
        401,
        "invalid_credentials",
    );
    let (s, v) = b.anon_post("/token/resync", json!({"contract_no": C, "user_id": "ev", "login_password": harness::PASSWORD, "otp1": ev.hotp(ahead + 1), "otp2": ev.hotp(ahead + 2)})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"state": "active"})));
    ev.counter.set(ahead + 3);
    let code = ev.next_code(&b);
    assert_eq!(
        b.login(C, "ev", Some(&ev.token_id), Some(&code)).await.1["method"],
        "otp"
    );
    // Non-consecutive codes are refused and counted.
    b.assert_err(b.anon_post("/token/resync", json!({"contract_no": C, "user_id": "ev", "login_password": harness::PASSWORD, "otp1": ev.hotp(ahead + 10), "otp2": ev.hotp(ahead + 12)})).await, 401, "invalid_otp");

    // A PC clock 5 minutes fast.
    let tm = b.token(C, "tm", "time").await;
    let skew = 300;
    let now = u64::try_from(b.now()).unwrap();
    let fast = |secs: u64| tm.totp(now + skew + secs);
    b.assert_err(
        b.login(C, "tm", Some(&tm.token_id), Some(&fast(0))).await,
        401,
        "invalid_credentials",
    );
    b.clock.advance(30);
    let (s, v) = b.anon_post("/token/resync", json!({"contract_no": C, "user_id": "tm", "login_password": harness::PASSWORD, "otp1": fast(0), "otp2": fast(30)})).await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"state": "active"})),
        "resync"
    );
    b.clock.advance(30);
    let (s, v) = b.login(C, "tm", Some(&tm.token_id), Some(&fast(60))).await;
    assert_eq!(
        (s, v["method"].as_str()),
        (StatusCode::OK, Some("otp")),
        "the drift is learned: {v}"
    );
}

#[tokio::test]
async fn password_lockout_and_operator_unlock() {
    let b = Bank::new().await;
    b.user(C, "appl", "applicant").await;
    for _ in 0..5 {
        b.assert_err(
            b.login_with(C, "appl", "wrong-password", None, None).await,
            401,
            "invalid_credentials",
        );
    }
    b.assert_err(b.login(C, "appl", None, None).await, 423, "user_locked");
    let (_, u) = b.op_get(&format!("/contracts/{C}/users/appl")).await;
    assert_eq!(u["locked"], true);
    // The same for a user that does not exist: locked tells nothing.
    for _ in 0..5 {
        b.login_with(C, "ghost", "wrong-password", None, None).await;
    }
    b.assert_err(
        b.login_with(C, "ghost", "wrong-password", None, None).await,
        423,
        "user_locked",
    );
    let (s, u) = b
        .op_post(&format!("/contracts/{C}/users/appl/unlock"), json!({}))
        .await;
    assert_eq!((s, u["locked"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(b.login(C, "appl", None, None).await.0, StatusCode::OK);
    // Wrong transaction passwords count toward the same lock.
    b.user(C, "appr", "approver").await;
    let reg = b.token(C, "appr", "event").await;
    let s = b.session(C, "appr", Some(&reg)).await;
    let applicant = b.session(C, "appl", None).await;
    let (_, t) = b
        .post(
            &applicant,
            "/transactions",
            json!({"kind": "transfer", "payee": "X", "amount": 5}),
        )
        .await;
    let path = format!("/transactions/{}/approve", t["id"].as_str().unwrap());
    for _ in 0..4 {
        b.assert_err(
            b.post(
                &s,
                &path,
                json!({"transaction_password": "wrong-tx-pw", "otp": reg.next_code(&b)}),
            )
            .await,
            401,
            "invalid_credentials",
        );
    }
    b.login_with(C, "appr", "wrong-password", None, None).await;
    b.assert_err(
        b.login(C, "appr", Some(&reg.token_id), Some(&reg.next_code(&b)))
            .await,
        423,
        "user_locked",
    );
}

#[tokio::test]
async fn sessions_end_after_five_idle_minutes_and_on_logout() {
    let b = Bank::new().await;
    b.user(C, "appl", "applicant").await;
    let s = b.session(C, "appl", None).await;
    // Used every 4 minutes it stays alive.
    for _ in 0..3 {
        b.clock.advance(240);
        assert_eq!(b.get(&s, "/transactions").await.0, StatusCode::OK);
    }
    b.clock.advance(301);
    b.assert_err(b.get(&s, "/transactions").await, 401, "unauthorized");
    let s = b.session(C, "appl", None).await;
    assert_eq!(b.post(&s, "/logout", json!({})).await.0, StatusCode::OK);
    b.assert_err(b.get(&s, "/transactions").await, 401, "unauthorized");
    b.assert_err(
        b.get("ichido_s_forged", "/transactions").await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn unknown_users_cost_the_same_password_work() {
    let b = Bank::new().await;
    b.user(C, "appl", "applicant").await;
    let mut costs = Vec::new();
    for (contract, user, password) in [
        (C, "appl", "wrong-password"),
        (C, "nobody", "wrong-password"),
        ("5555555555", "appl", "wrong-password"),
        (C, "appl", harness::PASSWORD),
    ] {
        let before = b.ichido.password_verifications();
        b.login_with(contract, user, password, None, None).await;
        costs.push(b.ichido.password_verifications() - before);
    }
    assert_eq!(
        costs,
        vec![1, 1, 1, 1],
        "one argon2id verification on every path"
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let b = Bank::with_rate(ichido_server::limits::RateSettings {
        per_address: 0,
        per_user: 3,
        validate_per_address: 0,
    })
    .await;
    b.user(C, "appl", "applicant").await;
    for _ in 0..3 {
        assert_eq!(b.login(C, "appl", None, None).await.0, StatusCode::OK);
    }
    let (s, h, v) = b
        .raw(
            "POST",
            "/api/v1/login",
            None,
            json!({"contract_no": C, "user_id": "appl", "login_password": harness::PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another user is not affected.
    b.user(C, "other", "viewer").await;
    assert_eq!(b.login(C, "other", None, None).await.0, StatusCode::OK);
}

#[allow(dead_code)]
fn _uses(_: Reg) {}
