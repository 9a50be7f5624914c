//! The web pages driven without a socket (`oneshot`): security headers,
//! cookie flags, CSRF refusals that change nothing, identical log-in failures,
//! and the secret shown once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use ichido_domain::model::{Role, TokenKind};
use ichido_domain::password::PasswordParams;
use ichido_domain::seal::MasterKey;
use ichido_domain::services::{Actor, NewUser};
use ichido_domain::{FixedClock, Ichido, Policy};
use ichido_server::web::{cookies, csrf, CSP};
use ichido_server::{app, AppState};
use ichido_store::{SqliteStore, StoreOptions};
use tower::ServiceExt;
use zeroize::Zeroizing;

const HOST: &str = "bank.example";

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
    let ops = Actor::Operator("ops".into());
    ichido.create_contract(&ops, "C-1", "Acme").await.unwrap();
    ichido
        .create_user(
            &ops,
            "C-1",
            NewUser {
                user_id: "taro".into(),
                name: "Taro".into(),
                role: Role::Approver,
                login_password: Zeroizing::new("login-password-1".into()),
                transaction_password: Zeroizing::new("tx-password-1".into()),
            },
        )
        .await
        .unwrap();
    AppState::new(Arc::new(ichido))
}

async fn send(s: &AppState, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn post(path: &str, cookie: &str, form: &str) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header("sec-fetch-site", "same-origin")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A browser's pre-session cookie and the matching form token.
fn pre() -> (String, String) {
    let secret = "ab".repeat(32);
    (
        format!("{}={secret}", cookies::PRE),
        csrf::token(csrf::PRE, &secret),
    )
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_set_httponly_strict_cookies() {
    let s = state().await;
    for path in ["/", "/register", "/resync", "/console"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let (status, h, body) = send(&s, req).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert!(CSP.contains("default-src 'none'") && !CSP.contains("script-src"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(!body.contains("<script"), "{path}: no script");
        for c in set_cookies(&h) {
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                "{c}"
            );
            assert!(!c.contains("Secure"), "plain HTTP: {c}");
        }
    }
    // Behind a TLS proxy the cookies are Secure; so with the configured flag.
    let req = Request::get("/")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let (_, h, _) = send(&s, req).await;
    assert!(set_cookies(&h).iter().all(|c| c.contains("; Secure")));
    let secure = s.clone().with_secure_cookies(true);
    let (_, h, _) = send(&secure, Request::get("/").body(Body::empty()).unwrap()).await;
    assert!(set_cookies(&h).iter().all(|c| c.contains("; Secure")));
    // The stylesheet is served by ichido itself.
    let (status, h, css) = send(
        &s,
        Request::get("/assets/ichido.css")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(css.contains("body"));
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_change_nothing() {
    let s = state().await;
    let (cookie, token) = pre();
    let form = "contract_no=C-1&user_id=taro&login_password=login-password-1&kind=event";
    // No token, a wrong token, a token of another browser, another site.
    for (cookie, csrf_field, origin_ok) in [
        (cookie.as_str(), String::new(), true),
        (cookie.as_str(), "00".repeat(32), true),
        ("ichido_pre=cdcd", token.clone(), true),
        (cookie.as_str(), token.clone(), false),
    ] {
        let mut req = post("/register", cookie, &format!("csrf={csrf_field}&{form}"));
        if !origin_ok {
            req.headers_mut()
                .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
            req.headers_mut()
                .insert("sec-fetch-site", "cross-site".parse().unwrap());
        }
        let (status, _, body) = send(&s, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("有効期限"), "explained");
        assert!(!body.contains("token-id"), "nothing registered");
    }
    let view = s.ichido.user_view("C-1", "taro").await.unwrap();
    assert!(view.token.is_none(), "no token was registered");

    // The right token registers; the secret and its QR code are in this answer only.
    let (status, h, body) = send(
        &s,
        post("/register", &cookie, &format!("csrf={token}&{form}")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        body.contains("data:image/svg+xml;base64,"),
        "QR code inline"
    );
    assert!(
        h.get(header::LOCATION).is_none(),
        "no redirect: no secret in a URL"
    );
    let view = s.ichido.user_view("C-1", "taro").await.unwrap();
    assert_eq!(view.token.unwrap().kind, TokenKind::Event);
    // A wrong activation code shows the form again, without the secret.
    let token_id = s
        .ichido
        .user_view("C-1", "taro")
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id
        .to_string();
    let (_, _, body) = send(
        &s,
        post(
            "/register/activate",
            &cookie,
            &format!("csrf={token}&token_id={token_id}&otp=000000"),
        ),
    )
    .await;
    assert!(body.contains("id=\"notice\""));
    assert!(!body.contains("id=\"secret\"") && !body.contains("data:image"));
}

#[tokio::test]
async fn failed_log_ins_look_the_same_and_never_echo_secrets() {
    let s = state().await;
    let (cookie, token) = pre();
    let mut pages = Vec::new();
    for (c, u, pw) in [
        ("C-1", "taro", "wrong-password-9"),
        ("C-1", "nobody", "wrong-password-9"),
        ("C-9", "taro", "wrong-password-9"),
    ] {
        let (status, h, body) = send(
            &s,
            post(
                "/login",
                &cookie,
                &format!("csrf={token}&contract_no={c}&user_id={u}&login_password={pw}&token_id=&otp=123456"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(set_cookies(&h)
            .iter()
            .all(|c| !c.starts_with(cookies::SESSION)));
        assert!(
            !body.contains(pw) && !body.contains("123456"),
            "nothing secret echoed"
        );
        let notice = body
            .split("id=\"notice\">")
            .nth(1)
            .and_then(|r| r.split("</div>").next())
            .unwrap()
            .to_owned();
        pages.push(notice);
    }
    assert!(pages.iter().all(|p| p == &pages[0]), "{pages:?}");

    // The right password logs an approver without a token nowhere but to the
    // registration advice; a session cookie only on success.
    let (status, _, body) = send(
        &s,
        post(
            "/login",
            &cookie,
            &format!("csrf={token}&contract_no=C-1&user_id=taro&login_password=login-password-1"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("利用開始登録"));
}

#[tokio::test]
async fn session_pages_need_a_session_and_console_pages_a_console_sign_in() {
    let s = state().await;
    let (status, h, _) = send(&s, Request::get("/home").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/");
    let (status, _, body) = send(
        &s,
        Request::get("/console/audit")
            .header(header::COOKIE, "ichido_console=ichido_c_forged")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("sign-in") && !body.contains("id=\"audit\""));
    // A malformed form (no page of ours sends one) is answered with a page.
    let (status, h, body) = send(&s, post("/login", "", "%%%&login_password")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("id=\"notice\""));
    // A console form without a session changes nothing.
    let (status, _, _) = send(
        &s,
        post(
            "/console/action",
            "",
            "csrf=x&contract_no=C-1&user_id=taro&action=unlock_user",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
