//! The whole life of a token over HTTP: operator → contract → user →
//! registration → activation → validation, locks and the operator forms.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, now, Server};

#[tokio::test]
async fn event_token_life() {
    let server = Server::start(&[]);
    let api = server.api("branch-ops");
    api.user("1234567890", "taro", "approver").await;

    let reg = api.register("1234567890", "taro", "event").await;
    let b = &reg.body;
    assert_eq!(b["kind"], "event");
    assert_eq!(b["algorithm"], "SHA1");
    assert_eq!(b["digits"], 6);
    assert_eq!(b["counter"], 0);
    assert!(b["period"].is_null());
    assert!(!reg.secret_b32.contains('='), "base32 without padding");
    let uri = ichido_otp::uri::KeyUri::parse(b["otpauth_uri"].as_str().unwrap()).unwrap();
    assert_eq!(
        &uri.secret[..],
        &ichido_otp::base32::decode(&reg.secret_b32).unwrap()[..]
    );
    assert_eq!(uri.counter, Some(0));
    assert_eq!(
        api.token_state("1234567890", "taro").await["state"],
        "pending"
    );
    // A pending token cannot validate.
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(0)).await,
        403,
        "token_pending",
    );

    let activated = api
        .post_anon(
            &format!("/registrations/{}/activate", reg.token_id),
            json!({"otp": reg.hotp(0)}),
        )
        .await;
    assert_eq!(activated, (StatusCode::OK, json!({"state": "active"})));

    // Accepted once; the same code again is a replay; so is an earlier one.
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(1)).await,
        (StatusCode::OK, json!({"valid": true}))
    );
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(1)).await,
        401,
        "otp_replayed",
    );
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(0)).await,
        401,
        "otp_replayed",
    );
    // Next expected counter is 2: 2..=12 is the look-ahead; 13 is beyond it.
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(13)).await,
        401,
        "invalid_otp",
    );
    assert_eq!(api.token_state("1234567890", "taro").await["failures"], 3);
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(12)).await.0,
        StatusCode::OK,
        "look-ahead edge"
    );
    assert_eq!(
        api.token_state("1234567890", "taro").await["failures"],
        0,
        "success resets failures"
    );
    // Codes skipped by the look-ahead are spent too.
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(5)).await,
        401,
        "otp_replayed",
    );

    // Five wrong codes lock the token; from then on even the right code answers token_locked.
    for i in 0..4 {
        assert_error(
            &api.validate(&reg.token_id, &reg.hotp(1000 + i)).await,
            401,
            "invalid_otp",
        );
    }
    let t = api.token_state("1234567890", "taro").await;
    assert_eq!(
        (t["state"].as_str(), t["failures"].as_u64()),
        (Some("locked"), Some(5)),
        "{t}"
    );
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(13)).await,
        423,
        "token_locked",
    );
    assert_error(
        &api.validate(&reg.token_id, "000000").await,
        423,
        "token_locked",
    );

    // Operator unlock (閉塞解除).
    let (s, t) = api
        .post("/contracts/1234567890/users/taro/token/unlock", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (t["state"].as_str(), t["failures"].as_u64()),
        (Some("active"), Some(0))
    );
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(13)).await.0,
        StatusCode::OK
    );

    // Suspend (一時停止) with grace, then resume (一時停止解除).
    let before = now();
    let (s, t) = api
        .post(
            "/contracts/1234567890/users/taro/token/suspend",
            json!({"grace_days": 7}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["state"], "suspended");
    let grace = t["grace_until"].as_str().unwrap();
    let grace =
        time::OffsetDateTime::parse(grace, &time::format_description::well_known::Rfc3339).unwrap();
    let expect = i64::try_from(before).unwrap() + 7 * 86_400;
    assert!(
        (grace.unix_timestamp() - expect).abs() <= 5,
        "grace_until {grace}"
    );
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(14)).await,
        403,
        "token_suspended",
    );
    let (s, t) = api
        .post("/contracts/1234567890/users/taro/token/resume", json!({}))
        .await;
    assert_eq!((s, t["state"].as_str()), (StatusCode::OK, Some("active")));
    assert!(t["grace_until"].is_null());
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(14)).await.0,
        StatusCode::OK
    );
    // Suspension with no body uses the configured grace (30 days); grace_days 0 means none.
    let (_, t) = api
        .post(
            "/contracts/1234567890/users/taro/token/suspend",
            json!({"grace_days": 0}),
        )
        .await;
    assert!(t["grace_until"].is_null(), "{t}");
    api.post("/contracts/1234567890/users/taro/token/resume", json!({}))
        .await;

    // Deregister (登録解除): revoked for good; the user may register anew.
    let (s, t) = api.delete("/contracts/1234567890/users/taro/token").await;
    assert_eq!((s, t["state"].as_str()), (StatusCode::OK, Some("revoked")));
    assert!(api.token_state("1234567890", "taro").await.is_null());
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(15)).await,
        403,
        "token_revoked",
    );
    let again = api.token("1234567890", "taro", "event").await;
    assert_ne!(again.token_id, reg.token_id);
    assert_eq!(
        api.validate(&again.token_id, &again.hotp(1)).await.0,
        StatusCode::OK
    );

    // Every step is in the audit log, never with a code or the secret.
    let (s, log) = api
        .get("/audit?contract_no=1234567890&user_id=taro&limit=1000")
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = log["events"].as_array().unwrap();
    let has = |action: &str, outcome: &str| {
        events.iter().any(|e| {
            e["action"] == action
                && e["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(outcome))
        })
    };
    for (action, outcome) in [
        ("user.create", "ok"),
        ("token.register", "ok"),
        ("token.activate", "ok"),
        ("token.validate", "ok"),
        ("token.validate", "otp_replayed"),
        ("token.validate", "invalid_otp"),
        ("token.validate", "token_locked"),
        ("token.lock", "locked"),
        ("token.unlock", "ok"),
        ("token.suspend", "ok"),
        ("token.resume", "ok"),
        ("token.revoke", "ok"),
    ] {
        assert!(
            has(action, outcome),
            "missing audit event {action} {outcome}"
        );
    }
    let text = log.to_string();
    assert!(
        !text.contains(&reg.secret_b32) && !text.contains(&reg.hotp(13)),
        "audit leaks a secret or code"
    );
    assert!(events
        .iter()
        .all(|e| e["actor"].as_str().is_some() && e["at"].as_str().is_some()));

    // The chain is intact, as `ichido audit verify` checks.
    let out = std::process::Command::new(crate::common::BIN)
        .args(["audit", "verify", "--database", &server.db_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
}

#[tokio::test]
async fn time_token_life() {
    let server = Server::start(&[]);
    let api = server.api("ops");
    api.user("2000000001", "hanako", "administrator").await;
    let reg = api.register("2000000001", "hanako", "time").await;
    assert_eq!(reg.body["period"], 30);
    assert!(reg.body["counter"].is_null());
    let t0 = now();
    let first = reg.totp_at(t0);
    assert_eq!(
        api.post_anon(
            &format!("/registrations/{}/activate", reg.token_id),
            json!({"otp": first})
        )
        .await
        .0,
        StatusCode::OK
    );
    // The activation code's step is spent.
    assert_error(
        &api.validate(&reg.token_id, &first).await,
        401,
        "otp_replayed",
    );
    // The next step's code is inside the ±1 window and not yet spent.
    let next = reg.totp_at(t0 + 30);
    assert_eq!(
        api.validate(&reg.token_id, &next).await,
        (StatusCode::OK, json!({"valid": true}))
    );
    assert_error(
        &api.validate(&reg.token_id, &next).await,
        401,
        "otp_replayed",
    );
    // Far outside the window.
    assert_error(
        &api.validate(&reg.token_id, &reg.totp_at(t0 + 600)).await,
        401,
        "invalid_otp",
    );
    let t = api.token_state("2000000001", "hanako").await;
    assert_eq!(
        (t["kind"].as_str(), t["failures"].as_u64()),
        (Some("time"), Some(2))
    );
}

#[tokio::test]
async fn registration_rules() {
    let server = Server::start(&[]);
    let api = server.api("ops");
    api.user("3000000001", "jiro", "viewer").await;
    // Unknown contract, unknown user and wrong password answer alike.
    let bad = [
        json!({"contract_no": "9999999999", "user_id": "jiro", "login_password": crate::common::PASSWORD, "kind": "event"}),
        json!({"contract_no": "3000000001", "user_id": "nobody", "login_password": crate::common::PASSWORD, "kind": "event"}),
        json!({"contract_no": "3000000001", "user_id": "jiro", "login_password": "wrong-password", "kind": "event"}),
    ];
    let mut bodies = Vec::new();
    for b in bad {
        let got = api.post_anon("/registrations", b).await;
        assert_error(&got, 401, "invalid_credentials");
        bodies.push(got.1);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical bodies: {bodies:?}"
    );
    // One token per user.
    let reg = api.token("3000000001", "jiro", "time").await;
    let dup = api
        .post_anon("/registrations", json!({"contract_no": "3000000001", "user_id": "jiro", "login_password": crate::common::PASSWORD, "kind": "event"}))
        .await;
    assert_error(&dup, 409, "token_exists");
    assert_eq!(
        api.token_state("3000000001", "jiro").await["token_id"],
        reg.token_id.as_str()
    );
    // Operator API needs a key.
    let anon = api
        .post_anon("/contracts", json!({"contract_no": "1", "name": "x"}))
        .await;
    assert_error(&anon, 401, "unauthorized");
    let wrong = crate::common::Api::new(&server.base, "ichido_op_0000")
        .post("/contracts", json!({"contract_no": "1", "name": "x"}))
        .await;
    assert_error(&wrong, 401, "unauthorized");
    // Existing contract / user.
    assert_error(
        &api.post(
            "/contracts",
            json!({"contract_no": "3000000001", "name": "again"}),
        )
        .await,
        409,
        "conflict",
    );
}
