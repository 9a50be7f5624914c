//! The bank's flows on the real binary: log-in with an OTP, a transfer approved
//! once, and the per-address rate limit seen from a real socket.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Server, PASSWORD};

#[tokio::test]
async fn login_and_approve_a_transfer() {
    let server = Server::start(&[]);
    let api = server.api("ops");
    api.user("8000000001", "hanako", "applicant").await;
    api.user("8000000001", "taro", "approver").await;
    let reg = api.token("8000000001", "taro", "event").await;

    let login = |user: &'static str, token: Option<(String, String)>| {
        let api = api.clone();
        async move {
            let mut body =
                json!({"contract_no": "8000000001", "user_id": user, "login_password": PASSWORD});
            if let Some((t, otp)) = token {
                body["token_id"] = json!(t);
                body["otp"] = json!(otp);
            }
            api.post_anon("/login", body).await
        }
    };
    assert_error(&login("taro", None).await, 401, "otp_required");
    let (s, taro) = login("taro", Some((reg.token_id.clone(), reg.hotp(1)))).await;
    assert_eq!(
        (s, taro["method"].as_str()),
        (StatusCode::OK, Some("otp")),
        "{taro}"
    );
    let (s, hanako) = login("hanako", None).await;
    assert_eq!(
        (s, hanako["method"].as_str()),
        (StatusCode::OK, Some("password"))
    );

    let session = |v: &serde_json::Value| v["session"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1{p}", server.base);
    let r = http
        .post(url("/transactions"))
        .bearer_auth(session(&hanako))
        .json(&json!({"kind": "transfer", "payee": "Suzuki Kogyo", "amount": 250000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: serde_json::Value = r.json().await.unwrap();
    assert_eq!(t["state"], "pending_approval");
    let approve = url(&format!(
        "/transactions/{}/approve",
        t["id"].as_str().unwrap()
    ));
    let r = http
        .post(&approve)
        .bearer_auth(session(&taro))
        .json(&json!({"transaction_password": "tx-password-1", "otp": reg.hotp(2)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (done["state"].as_str(), done["execution"].as_str()),
        (Some("executed"), Some("realtime"))
    );
    let r = http
        .post(&approve)
        .bearer_auth(session(&taro))
        .json(&json!({"transaction_password": "tx-password-1", "otp": reg.hotp(3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "approved once only");
    let r = http
        .post(url("/logout"))
        .bearer_auth(session(&taro))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(url("/transactions"))
        .bearer_auth(session(&taro))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn customer_endpoints_are_rate_limited_per_address() {
    let server = Server::start(&["--rate-limit-per-address", "5"]);
    let api = server.api("ops");
    let http = reqwest::Client::new();
    let mut limited = None;
    for i in 0..20 {
        let r = http
            .post(format!("{}/api/v1/login", server.base))
            .json(&json!({"contract_no": "1", "user_id": format!("u{i}"), "login_password": "whatever-pw"}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the sixth request within a second is refused");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Relying parties on POST /validate are not limited by address by default.
    for _ in 0..20 {
        let got = api.validate("ABCD12345674", "123456").await;
        assert_ne!(got.0, StatusCode::TOO_MANY_REQUESTS);
    }
}
