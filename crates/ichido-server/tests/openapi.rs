//! The committed `docs/openapi.json` is the document the server serves.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test -p ichido-server --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = format!("{}\n", ichido_server::openapi::json());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test -p ichido-server --test openapi"
    );
}

#[test]
fn every_contract_endpoint_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&ichido_server::openapi::json()).unwrap();
    for (method, path) in [
        ("post", "/api/v1/contracts"),
        ("post", "/api/v1/contracts/{contract_no}/users"),
        ("get", "/api/v1/contracts/{contract_no}/users/{user_id}"),
        (
            "post",
            "/api/v1/contracts/{contract_no}/users/{user_id}/token/suspend",
        ),
        (
            "post",
            "/api/v1/contracts/{contract_no}/users/{user_id}/token/resume",
        ),
        (
            "post",
            "/api/v1/contracts/{contract_no}/users/{user_id}/token/unlock",
        ),
        (
            "delete",
            "/api/v1/contracts/{contract_no}/users/{user_id}/token",
        ),
        (
            "post",
            "/api/v1/contracts/{contract_no}/users/{user_id}/unlock",
        ),
        ("get", "/api/v1/audit"),
        ("post", "/api/v1/validate"),
        ("post", "/api/v1/registrations"),
        ("post", "/api/v1/registrations/{token_id}/activate"),
        ("post", "/api/v1/token/resync"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert!(doc["components"]["securitySchemes"]["operator_key"].is_object());
}
