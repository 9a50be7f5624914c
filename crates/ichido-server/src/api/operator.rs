//! The operator API (`Authorization: Bearer <operator API key>`): contracts,
//! users, the token forms, the audit log and `POST /validate`.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use ichido_domain::audit::AuditFilter;
use ichido_domain::model::Role;
use ichido_domain::services::NewUser;
use zeroize::Zeroizing;

use super::views::*;
use super::OperatorAuth;
use crate::error::{AppError, ErrorBody, Json, Path, Query};
use crate::AppState;

type Result<T> = std::result::Result<T, AppError>;

#[utoipa::path(post, path = "/api/v1/contracts", tag = "operator", security(("operator_key" = [])),
    request_body = NewContract,
    responses((status = 201, body = ContractView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, description = "conflict: the contract exists", body = ErrorBody)))]
pub async fn create_contract(
    State(s): State<AppState>,
    op: OperatorAuth,
    Json(b): Json<NewContract>,
) -> Result<(StatusCode, Json<ContractView>)> {
    let c = s
        .ichido
        .create_contract(&op.actor(), &b.contract_no, &b.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ContractView {
            contract_no: c.contract_no,
            name: c.name,
            created_at: rfc3339(c.created_at),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/contracts/{contract_no}/users", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path)), request_body = NewUserBody,
    responses((status = 201, body = UserResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path(contract_no): Path<String>,
    Json(b): Json<NewUserBody>,
) -> Result<(StatusCode, Json<UserResponse>)> {
    let role: Role = b.role.parse()?;
    let new = NewUser {
        user_id: b.user_id,
        name: b.name,
        role,
        login_password: Zeroizing::new(b.login_password),
        transaction_password: Zeroizing::new(b.transaction_password),
    };
    let user = s.ichido.create_user(&op.actor(), &contract_no, new).await?;
    let view = s.ichido.user_view(&contract_no, &user.user_id).await?;
    Ok((StatusCode::CREATED, Json(UserResponse::from(&view))))
}

#[utoipa::path(get, path = "/api/v1/contracts/{contract_no}/users/{user_id}", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(s): State<AppState>,
    _op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
) -> Result<Json<UserResponse>> {
    let view = s.ichido.user_view(&c, &u).await?;
    Ok(Json(UserResponse::from(&view)))
}

#[utoipa::path(post, path = "/api/v1/contracts/{contract_no}/users/{user_id}/unlock", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "password lock cleared", body = UserResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unlock_user(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
) -> Result<Json<UserResponse>> {
    let view = s.ichido.unlock_user(&op.actor(), &c, &u).await?;
    Ok(Json(UserResponse::from(&view)))
}

#[utoipa::path(post, path = "/api/v1/contracts/{contract_no}/users/{user_id}/token/suspend", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)), request_body(content = Option<SuspendBody>),
    responses((status = 200, body = TokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 423, body = ErrorBody)))]
pub async fn suspend(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<TokenView>> {
    // The body is optional: none (or empty) means the configured grace.
    let grace = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<SuspendBody>(&body)
            .map_err(|e| AppError::invalid_request(crate::error::json_message(&e.to_string())))?
            .grace_days
    };
    let t = s.ichido.suspend(&op.actor(), &c, &u, grace).await?;
    Ok(Json(TokenView::from(&t)))
}

#[utoipa::path(post, path = "/api/v1/contracts/{contract_no}/users/{user_id}/token/resume", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = TokenView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 423, body = ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
) -> Result<Json<TokenView>> {
    let t = s.ichido.resume(&op.actor(), &c, &u).await?;
    Ok(Json(TokenView::from(&t)))
}

#[utoipa::path(post, path = "/api/v1/contracts/{contract_no}/users/{user_id}/token/unlock", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = TokenView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unlock_token(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
) -> Result<Json<TokenView>> {
    let t = s.ichido.unlock_token(&op.actor(), &c, &u).await?;
    Ok(Json(TokenView::from(&t)))
}

#[utoipa::path(delete, path = "/api/v1/contracts/{contract_no}/users/{user_id}/token", tag = "operator", security(("operator_key" = [])),
    params(("contract_no" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the token, now revoked", body = TokenView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(s): State<AppState>,
    op: OperatorAuth,
    Path((c, u)): Path<(String, String)>,
) -> Result<Json<TokenView>> {
    let t = s.ichido.revoke(&op.actor(), &c, &u).await?;
    Ok(Json(TokenView::from(&t)))
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "operator", security(("operator_key" = [])), params(AuditQuery),
    responses((status = 200, body = AuditResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn audit(
    State(s): State<AppState>,
    _op: OperatorAuth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditResponse>> {
    let filter = AuditFilter {
        contract_no: q.contract_no.filter(|s| !s.is_empty()),
        user_id: q.user_id.filter(|s| !s.is_empty()),
        token_id: q.token_id.filter(|s| !s.is_empty()),
        before_seq: q.before,
        limit: q.limit.unwrap_or(100),
    };
    let events = s.ichido.audit_events(filter).await?;
    Ok(Json(AuditResponse {
        events: events.into_iter().map(AuditEventView::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/validate", tag = "validation", security(("operator_key" = [])), request_body = ValidateBody,
    responses((status = 200, body = ValidateResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_otp, otp_replayed or unauthorized", body = ErrorBody),
        (status = 403, description = "token_suspended, token_revoked or token_pending", body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody),
        (status = 423, description = "token_locked", body = ErrorBody),
        (status = 503, description = "store unavailable: never valid", body = ErrorBody)))]
pub async fn validate(
    State(s): State<AppState>,
    op: OperatorAuth,
    Json(b): Json<ValidateBody>,
) -> Result<Json<ValidateResponse>> {
    let started = Instant::now();
    let result = s.ichido.validate(&op.actor(), &b.token_id, &b.otp).await;
    match result {
        Ok(_) => {
            s.metrics.record_validation("ok", started);
            Ok(Json(ValidateResponse { valid: true }))
        }
        Err(e) => {
            s.metrics.record_validation(e.code(), started);
            Err(e.into())
        }
    }
}
