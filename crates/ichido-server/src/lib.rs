//! ichido's HTTP server. `app(state)` builds the whole router, so tests can
//! drive it with `oneshot` and the binary serves it on a socket.

pub mod api;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod serve;
pub mod web;

use std::sync::Arc;

use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{delete, get, post};
use axum::Router;
use ichido_domain::Ichido;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::limits::{Limits, RateSettings};
use crate::metrics::Metrics;

/// The largest request body accepted, in bytes (except `POST /api/v1/import`).
pub const BODY_LIMIT: usize = 16 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub ichido: Arc<Ichido>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    /// Web cookies always get `Secure` (the server is behind TLS).
    pub secure_cookies: bool,
}

impl AppState {
    /// State with the default rate limits.
    pub fn new(ichido: Arc<Ichido>) -> Self {
        Self::with_limits(ichido, RateSettings::default())
    }

    pub fn with_limits(ichido: Arc<Ichido>, rate: RateSettings) -> Self {
        Self {
            ichido,
            metrics: Arc::new(Metrics::default()),
            limits: Arc::new(Limits::new(rate)),
            secure_cookies: false,
        }
    }

    /// Sends web cookies with `Secure` whatever the request says.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    use api::{customer, operator, service, session};
    // Full paths rather than `nest("/api/v1", …)`, which would box each
    // route once more and rewrite its URI for every request (see below).
    const USER: &str = "/api/v1/contracts/{contract_no}/users/{user_id}";
    let operator_api = Router::new()
        .route("/api/v1/contracts", post(operator::create_contract))
        .route(
            "/api/v1/contracts/{contract_no}/users",
            post(operator::create_user),
        )
        .route(USER, get(operator::get_user))
        .route(&format!("{USER}/unlock"), post(operator::unlock_user))
        .route(&format!("{USER}/token"), delete(operator::revoke))
        .route(&format!("{USER}/token/suspend"), post(operator::suspend))
        .route(&format!("{USER}/token/resume"), post(operator::resume))
        .route(
            &format!("{USER}/token/unlock"),
            post(operator::unlock_token),
        )
        .route("/api/v1/audit", get(operator::audit))
        .route("/api/v1/validate", post(operator::validate))
        .route("/api/v1/openapi.json", get(service::openapi));
    let customer_api = Router::new()
        .route("/api/v1/registrations", post(customer::register))
        .route(
            "/api/v1/registrations/{token_id}/activate",
            post(customer::activate),
        )
        .route("/api/v1/token/resync", post(customer::resync))
        .route("/api/v1/login", post(session::login))
        .route("/api/v1/logout", post(session::logout))
        .route(
            "/api/v1/transactions",
            post(session::create_transaction).get(session::list_transactions),
        )
        .route("/api/v1/transactions/{id}", get(session::get_transaction))
        .route("/api/v1/transactions/{id}/approve", post(session::approve))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::limit_by_address,
        ));
    let small_bodies = Router::new()
        .merge(operator_api)
        .merge(customer_api)
        .merge(web::router(state.clone()))
        .route("/healthz", get(service::healthz))
        .route("/metrics", get(service::metrics))
        .layer(body_limit(BODY_LIMIT));
    // Bulk import alone takes large bodies (1,000 entries per request).
    let bulk = Router::new()
        .route("/api/v1/import", post(api::import::import))
        .layer(body_limit(api::import::IMPORT_BODY_LIMIT));
    Router::new()
        .merge(small_bodies)
        .merge(bulk)
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // All in one `layer` call (outermost first): axum boxes every route
        // once more per call, and a request clones each box of its route
        // with every box inside it. A validation's route was nine boxes deep
        // (45 allocations a request); it is now three (6).
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("handler panicked");
                    axum::response::IntoResponse::into_response(error::AppError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "unavailable",
                        "internal error",
                    ))
                }))
                .layer(overriding(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(overriding(header::CACHE_CONTROL, "no-store"))
                .map_response(payload_too_large)
                .layer(metrics::TrackLayer(Arc::clone(&state.metrics))),
        )
        .with_state(state)
}

/// A body limit as one layer (one boxed level per route, see `app`): axum's
/// extractors' limit and the body's own, outermost first.
fn body_limit(max: usize) -> (axum::extract::DefaultBodyLimit, RequestBodyLimitLayer) {
    (
        axum::extract::DefaultBodyLimit::max(max),
        RequestBodyLimitLayer::new(max),
    )
}

/// Sets a response header, replacing any the handler set.
pub(crate) fn overriding(
    name: HeaderName,
    value: &'static str,
) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// The body-limit layer answers 413 in plain text; answer with the contract's
/// body. A 413 also closes the connection (`Connection: close`): the rest of
/// the refused body is still on its way, so the connection cannot carry a
/// next request, and a client must not put it back in its pool.
fn payload_too_large(resp: axum::response::Response) -> axum::response::Response {
    if resp.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut resp = if is_json {
        resp
    } else {
        axum::response::IntoResponse::into_response(error::AppError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request body too large",
        ))
    };
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

async fn method_not_allowed() -> error::AppError {
    error::AppError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method not allowed on this path",
    )
}
