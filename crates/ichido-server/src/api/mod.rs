//! The HTTP API under `/api/v1`: handlers parse, call one domain function, and
//! map the result. No rule of the validation center lives here.

pub mod customer;
pub mod import;
pub mod operator;
pub mod service;
pub mod session;
pub mod views;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use ichido_domain::model::Operator;
use ichido_domain::services::{Actor, Authenticated};

use crate::error::AppError;
use crate::AppState;

/// An operator authenticated by `Authorization: Bearer <API key>`.
pub struct OperatorAuth(pub Operator);

impl OperatorAuth {
    pub fn actor(&self) -> Actor {
        Actor::Operator(self.0.name.clone())
    }
}

/// The bearer credential of a request, if well-formed.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|s| !s.is_empty())
}

/// 401 with `WWW-Authenticate: Bearer`.
pub struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut r = AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer credential is required",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(key) = bearer(parts) else {
            return Err(Unauthorized.into_response());
        };
        match state.ichido.authenticate_operator(key).await {
            Ok(op) => Ok(OperatorAuth(op)),
            Err(ichido_domain::DomainError::Unauthorized) => Err(Unauthorized.into_response()),
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}

/// The client's address as the socket saw it (a load balancer's, behind one).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Middleware: the per-address rate limit of the customer endpoints.
pub async fn limit_by_address(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if let Err(e) = state.limits.address(addr.ip()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// A customer authenticated by `Authorization: Bearer <session>`.
pub struct CustomerAuth(pub Authenticated);

impl FromRequestParts<AppState> for CustomerAuth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = bearer(parts) else {
            return Err(Unauthorized.into_response());
        };
        match state.ichido.authenticate_session(secret).await {
            Ok(a) => Ok(CustomerAuth(a)),
            Err(ichido_domain::DomainError::Unauthorized) => Err(Unauthorized.into_response()),
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}
