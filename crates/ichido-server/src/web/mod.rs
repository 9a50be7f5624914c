//! The web pages: the customer portal (`/`) and the operator console
//! (`/console`), server-rendered HTML on top of the same domain services as the
//! JSON API. No business rule lives here: handlers parse a form, call one
//! domain function and render its answer.
//!
//! Invariants: every POST carries a CSRF token bound to the browser (see
//! [`csrf`]); cookies are HttpOnly and SameSite=Strict (Secure behind TLS);
//! every page is sent with a strict Content-Security-Policy and no script; no
//! secret ever appears in a URL.

pub mod console;
pub mod cookies;
pub mod csrf;
pub mod i18n;
pub mod portal;
pub mod transfers;

use askama::Template;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::{overriding, AppState};

/// The Content-Security-Policy of every page: nothing but our own stylesheet
/// and inline images (the QR code); no script at all; forms post only here.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The one stylesheet, compiled into the binary (no CDN).
const CSS: &str = include_str!("../../assets/ichido.css");

/// The portal's and the console's routes, with their security headers.
pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(portal::login_page))
        .route("/login", post(portal::login))
        .route("/logout", post(portal::logout))
        .route(
            "/register",
            get(portal::register_page).post(portal::register),
        )
        .route("/register/activate", post(portal::activate))
        .route("/resync", get(portal::resync_page).post(portal::resync))
        .route("/home", get(transfers::home))
        .route("/transfers", post(transfers::create_transfer))
        .route("/transfers/{id}", get(transfers::transfer_page))
        .route("/transfers/{id}/approve", post(transfers::approve))
        .route("/console", get(console::home))
        .route("/console/sign-in", post(console::sign_in))
        .route("/console/sign-out", post(console::sign_out))
        .route("/console/confirm", get(console::confirm))
        .route("/console/action", post(console::action))
        .route("/console/audit", get(console::audit))
        .route_layer(axum::middleware::from_fn_with_state(state, limit_pages))
        // One layer call: axum boxes each route once more per call.
        .layer(
            tower::ServiceBuilder::new()
                .layer(overriding(header::CONTENT_SECURITY_POLICY, CSP))
                .layer(overriding(header::X_FRAME_OPTIONS, "DENY"))
                .layer(overriding(header::REFERRER_POLICY, "same-origin"))
                .layer(overriding(
                    HeaderName::from_static("cross-origin-opener-policy"),
                    "same-origin",
                )),
        );
    pages.route("/assets/ichido.css", get(stylesheet))
}

/// The per-address rate limit of the customer endpoints, answered as a page.
async fn limit_pages(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::extract::ConnectInfo;
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        if state.limits.address(addr.ip()).is_err() {
            let mut r = portal::message(&i18n::rate_limited(), StatusCode::TOO_MANY_REQUESTS);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    }
    next.run(req).await
}

/// A form body as a page expects it; a malformed one (a client that is not
/// one of our pages) is answered with a page, never with a plain-text error.
pub struct WebForm<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for WebForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match axum::extract::Form::<T>::from_request(req, state).await {
            Ok(axum::extract::Form(v)) => Ok(WebForm(v)),
            Err(_) => Err(portal::message(
                &i18n::refusal(&ichido_domain::DomainError::InvalidRequest(String::new())),
                StatusCode::BAD_REQUEST,
            )),
        }
    }
}

async fn stylesheet() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        CSS,
    )
        .into_response()
}

/// Renders a page; a template failure is logged and answered with a plain 500.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "サービスを一時的に利用できません / The service is temporarily unavailable",
            )
                .into_response()
        }
    }
}

/// A redirect after a POST (303: the browser follows with GET).
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A message at the top of a page: what happened and what to do next, in
/// Japanese first and English below.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `ok`, `info` or `error` (the CSS class).
    pub kind: &'static str,
    pub ja: String,
    pub en: String,
}

impl Notice {
    pub fn ok(ja: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            ja: ja.into(),
            en: en.into(),
        }
    }

    pub fn info(ja: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            kind: "info",
            ja: ja.into(),
            en: en.into(),
        }
    }

    pub fn error(ja: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            kind: "error",
            ja: ja.into(),
            en: en.into(),
        }
    }
}
