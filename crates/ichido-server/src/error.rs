//! One error type for every handler: the contract's error body
//! `{"error":{"code":"…","message":"…"}}`. Internal detail is logged, never sent.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ichido_domain::DomainError;
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The code (see the contract) and a human-readable message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "invalid_otp")]
    pub code: &'static str,
    pub message: String,
}

/// A handler's failure.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// The HTTP status of each contract code.
pub fn status_of(e: &DomainError) -> StatusCode {
    match e {
        DomainError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        DomainError::Unauthorized
        | DomainError::InvalidCredentials
        | DomainError::InvalidOtp
        | DomainError::OtpReplayed
        | DomainError::OtpRequired => StatusCode::UNAUTHORIZED,
        DomainError::OtpRegistrationRequired
        | DomainError::TokenSuspended
        | DomainError::TokenRevoked
        | DomainError::TokenPending
        | DomainError::Forbidden => StatusCode::FORBIDDEN,
        DomainError::NotFound(_) => StatusCode::NOT_FOUND,
        DomainError::TokenExists | DomainError::Conflict(_) => StatusCode::CONFLICT,
        DomainError::TokenLocked | DomainError::UserLocked => StatusCode::LOCKED,
        DomainError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        DomainError::Unavailable | DomainError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
        DomainError::Entry { source, .. } => status_of(source),
    }
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        let message = match &e {
            DomainError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "the service is temporarily unavailable".to_owned()
            }
            other => other.to_string(),
        };
        let mut out = AppError::new(status_of(&e), e.code(), message);
        if matches!(e, DomainError::RateLimited) {
            out.retry_after = Some(1);
        }
        out
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "request body too large",
                )
            }
            JsonRejection::MissingJsonContentType(_) => AppError::invalid_request(
                "expected a JSON body with Content-Type: application/json",
            ),
            other => AppError::invalid_request(json_message(&other.body_text())),
        }
    }
}

/// serde's message names the field and the problem; keep that, but never echo
/// the offending value (it may be a password or a code).
pub fn json_message(text: &str) -> String {
    let t = text
        .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        .trim_start_matches("Failed to parse the request body as JSON: ");
    let mut out = String::new();
    let mut rest = t;
    for marker in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(i) = rest.find(marker) {
            out.push_str(&rest[..i + marker.len()]);
            rest = &rest[i + marker.len()..];
            match rest.find(", expected") {
                Some(j) => {
                    out.push_str("(value withheld)");
                    rest = &rest[j..];
                }
                None => rest = "",
            }
        }
    }
    out.push_str(rest);
    let out: String = out.chars().take(200).collect();
    format!("malformed JSON body: {out}")
}

impl From<PathRejection> for AppError {
    fn from(_: PathRejection) -> Self {
        AppError::invalid_request("malformed path parameter")
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::invalid_request(format!(
            "malformed query string: {}",
            r.body_text().chars().take(200).collect::<String>()
        ))
    }
}

/// `axum::Json` whose rejections answer with the contract's error body.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with the contract's error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with the contract's error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

use axum::extract::FromRequestParts;

/// Fallback for unknown routes.
pub async fn not_found(_req: Request) -> AppError {
    AppError::not_found()
}

#[cfg(test)]
mod tests {
    use super::json_message;

    #[test]
    fn values_are_not_echoed() {
        let m = json_message(
            "otp: invalid type: integer `123456`, expected a string at line 1 column 15",
        );
        assert!(!m.contains("123456"), "{m}");
        assert!(m.contains("expected a string"), "{m}");
        let m = json_message("missing field `otp` at line 1 column 2");
        assert!(m.contains("missing field `otp`"), "{m}");
    }
}
