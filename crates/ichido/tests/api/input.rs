//! Bad input gets 400 `invalid_request` with the contract's body, loses nothing
//! (no failure is counted) and never takes the server down.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, Server};

#[tokio::test]
async fn malformed_requests_are_refused_cleanly() {
    let server = Server::start(&[]);
    let api = server.api("ops");
    api.user("6000000001", "taro", "approver").await;
    let reg = api.token("6000000001", "taro", "event").await;
    let url = format!("{}/api/v1/validate", server.base);

    // Codes: 6-8 ASCII digits as a JSON string, nothing else.
    for otp in [
        json!("12345"),
        json!("123456789"),
        json!(" 123456"),
        json!("12345a"),
        json!("１２３４５６"),
        json!(123456),
        json!(null),
        json!(""),
        json!("+12345"),
    ] {
        let got = api
            .post("/validate", json!({"token_id": reg.token_id, "otp": otp}))
            .await;
        assert_error(&got, 400, "invalid_request");
        assert!(
            !got.1.to_string().contains("123456"),
            "the code is not echoed: {}",
            got.1
        );
    }
    // Token IDs: malformed is invalid_request; well-formed but unknown is not_found.
    for id in [
        "",
        "ABCD1234567",
        "abcd12345678",
        "ABCD12345670X",
        "../../etc",
    ] {
        assert_error(&api.validate(id, "123456").await, 400, "invalid_request");
    }
    let mut unknown = reg.token_id.clone();
    unknown.replace_range(
        0..4,
        if &unknown[0..4] == "ZZZZ" {
            "YYYY"
        } else {
            "ZZZZ"
        },
    );
    assert_error(&api.validate(&unknown, "123456").await, 404, "not_found");
    // Bodies: not JSON, wrong shape, unknown fields, wrong content type, too large.
    let raw = |body: &'static str, ctype: &'static str| {
        let http = api.http.clone();
        let (url, key) = (url.clone(), api.key.clone());
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_error(&raw("{", "application/json").await, 400, "invalid_request");
    assert_error(&raw("[]", "application/json").await, 400, "invalid_request");
    assert_error(
        &raw(
            "{\"token_id\":\"A\",\"otp\":\"123456\",\"x\":1}",
            "application/json",
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &raw("{\"token_id\":\"A\",\"otp\":\"123456\"}", "text/plain").await,
        400,
        "invalid_request",
    );
    let big = format!(
        "{{\"token_id\":\"{}\",\"otp\":\"{}\"}}",
        reg.token_id,
        "1".repeat(100_000)
    );
    // The server answers before reading the rest and closes the connection,
    // saying so, so the shared client does not reuse it (below).
    let r = api
        .http
        .post(&url)
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request"
    );
    for _ in 0..3 {
        assert_error(&raw("{", "application/json").await, 400, "invalid_request");
    }
    // Other endpoints.
    assert_error(
        &api.post("/contracts", json!({"contract_no": "bad no", "name": "x"}))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &api.post("/contracts", json!({"contract_no": "7", "name": ""}))
            .await,
        400,
        "invalid_request",
    );
    let bad_role = json!({"user_id": "x", "name": "x", "role": "king", "login_password": "password-1", "transaction_password": "password-2"});
    assert_error(
        &api.post("/contracts/6000000001/users", bad_role).await,
        400,
        "invalid_request",
    );
    let short = json!({"user_id": "x", "name": "x", "role": "viewer", "login_password": "short", "transaction_password": "password-2"});
    assert_error(
        &api.post("/contracts/6000000001/users", short).await,
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(
            "/contracts/6000000001/users/taro/token/suspend",
            json!({"grace_days": -1}),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(
            "/contracts/6000000001/users/taro/token/suspend",
            json!({"grace_days": 100000}),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(&api.get("/audit?limit=5000").await, 400, "invalid_request");
    assert_error(&api.get("/audit?limit=abc").await, 400, "invalid_request");
    assert_error(
        &api.get("/contracts/6000000001/users/nobody").await,
        404,
        "not_found",
    );
    assert_error(&api.post_anon("/registrations", json!({"contract_no": "6000000001", "user_id": "taro", "login_password": "x", "kind": "sms"})).await, 400, "invalid_request");
    assert_error(
        &api.post_anon(
            &format!("/registrations/{}/activate", reg.token_id),
            json!({"otp": "12"}),
        )
        .await,
        400,
        "invalid_request",
    );
    let r = api
        .http
        .get(format!("{}/api/v1/validate", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request"
    );
    let r = api
        .http
        .get(format!("{}/no/such/path", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    // None of that counted against the token, and the server still answers.
    let t = api.token_state("6000000001", "taro").await;
    assert_eq!(
        (t["state"].as_str(), t["failures"].as_u64()),
        (Some("active"), Some(0)),
        "{t}"
    );
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(1)).await.0,
        StatusCode::OK
    );
    assert!(api
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
}

#[tokio::test]
async fn service_endpoints() {
    let server = Server::start(&[]);
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let doc: Value = http
        .get(format!("{}/api/v1/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/validate",
        "/api/v1/registrations",
        "/api/v1/audit",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi lacks {p}");
    }
    let api = server.api("ops");
    api.user("7000000001", "taro", "approver").await;
    let reg = api.token("7000000001", "taro", "event").await;
    api.validate(&reg.token_id, &reg.hotp(1)).await;
    api.validate(&reg.token_id, &reg.hotp(1)).await;
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ichido_validations_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ichido_validations_total{outcome=\"otp_replayed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ichido_validation_duration_seconds_bucket"));
    assert!(
        metrics.contains("route=\"/api/v1/validate\""),
        "labelled by matched route"
    );
    // The audit index's lag: a gauge, set at the scrape.
    let lag = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ichido_audit_index_lag_events "))
        .unwrap_or_else(|| panic!("no audit index lag: {metrics}"));
    assert!(lag.parse::<u64>().is_ok(), "{lag}");
}
