//! The router driven without a socket (`oneshot`): error shapes and headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ichido_domain::password::PasswordParams;
use ichido_domain::seal::MasterKey;
use ichido_domain::{FixedClock, Ichido, Policy};
use ichido_server::{app, AppState};
use ichido_store::{SqliteStore, StoreOptions};
use tower::ServiceExt;

async fn state() -> AppState {
    let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    let fast = PasswordParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let ichido = Ichido::new(
        Arc::new(store),
        Arc::new(FixedClock::new(1_700_000_000)),
        Policy::default(),
        MasterKey::generate(),
        fast,
    )
    .unwrap();
    AppState::new(Arc::new(ichido))
}

async fn call(
    state: &AppState,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn operator_api_needs_a_bearer_key() {
    let s = state().await;
    let req = Request::post("/api/v1/validate")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, body) = call(&s, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn customer_errors_have_the_contract_shape() {
    let s = state().await;
    let req = Request::post("/api/v1/registrations")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"contract_no":"1","user_id":"u","login_password":"whatever-pw","kind":"event"}"#,
        ))
        .unwrap();
    let (status, _, body) = call(&s, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_credentials");
    let req = Request::post("/api/v1/registrations")
        .header("content-type", "application/json")
        .body(Body::from("nope"))
        .unwrap();
    let (status, _, body) = call(&s, req).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test]
async fn health_answers_when_the_store_does() {
    let s = state().await;
    let (status, _, body) = call(&s, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn every_request_is_counted_by_method_matched_route_and_status() {
    let s = state().await;
    for _ in 0..2 {
        let req = Request::post("/api/v1/validate")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(call(&s, req).await.0, StatusCode::UNAUTHORIZED);
    }
    let req = Request::delete("/api/v1/contracts/1/users/u/token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, req).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::get("/no/such/page").body(Body::empty()).unwrap();
    assert_eq!(call(&s, req).await.0, StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method("PROPFIND")
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, req).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let text = s.metrics.render();
    for line in [
        r#"ichido_http_requests_total{method="POST",route="/api/v1/validate",status="401"} 2"#,
        r#"ichido_http_requests_total{method="DELETE",route="/api/v1/contracts/{contract_no}/users/{user_id}/token",status="401"} 1"#,
        r#"ichido_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"ichido_http_requests_total{method="PROPFIND",route="/healthz",status="405"} 1"#,
        r#"ichido_http_request_duration_seconds_count{route="/api/v1/validate"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}
