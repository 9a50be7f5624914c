//! The customer's session endpoints: log-in, log-out, transactions and their approval.

use axum::extract::State;
use axum::http::StatusCode;
use ichido_domain::model::TransactionKind;
use ichido_domain::services::NewTransaction;

use super::views::*;
use super::CustomerAuth;
use crate::error::{AppError, ErrorBody, Json, Path, Query};
use crate::AppState;

type Result<T> = std::result::Result<T, AppError>;

#[utoipa::path(post, path = "/api/v1/login", tag = "customer", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody),
        (status = 401, description = "invalid_credentials (any wrong element) or otp_required", body = ErrorBody),
        (status = 403, description = "otp_registration_required or token_suspended", body = ErrorBody),
        (status = 423, description = "user_locked or token_locked", body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(s): State<AppState>,
    Json(b): Json<LoginBody>,
) -> Result<Json<LoginResponse>> {
    s.limits.user(&b.contract_no, &b.user_id)?;
    let out = s
        .ichido
        .login(
            &b.contract_no,
            &b.user_id,
            &b.login_password,
            b.token_id.as_deref(),
            b.otp.as_deref(),
        )
        .await?;
    Ok(Json(LoginResponse {
        session: out.session.to_string(),
        method: out.method.as_str().to_owned(),
        expires_in: out.expires_in,
    }))
}

#[utoipa::path(post, path = "/api/v1/logout", tag = "customer", security(("session" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(s): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Json<LogoutResponse>> {
    let secret = super::bearer(&parts)
        .ok_or_else(|| AppError::from(ichido_domain::DomainError::Unauthorized))?;
    s.ichido.logout(secret).await?;
    Ok(Json(LogoutResponse { logged_out: true }))
}

#[utoipa::path(post, path = "/api/v1/transactions", tag = "customer", security(("session" = [])), request_body = TransactionBody,
    responses((status = 201, body = TransactionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "viewers cannot prepare transactions", body = ErrorBody)))]
pub async fn create_transaction(
    State(s): State<AppState>,
    CustomerAuth(who): CustomerAuth,
    Json(b): Json<TransactionBody>,
) -> Result<(StatusCode, Json<TransactionView>)> {
    let kind: TransactionKind = b.kind.parse()?;
    let t = s
        .ichido
        .create_transaction(
            &who,
            NewTransaction {
                kind,
                payee: b.payee,
                amount: b.amount,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(TransactionView::from(&t))))
}

#[utoipa::path(get, path = "/api/v1/transactions", tag = "customer", security(("session" = [])), params(ListQuery),
    responses((status = 200, body = TransactionList), (status = 401, body = ErrorBody)))]
pub async fn list_transactions(
    State(s): State<AppState>,
    CustomerAuth(who): CustomerAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<TransactionList>> {
    let list = s.ichido.transactions(&who, q.limit.unwrap_or(100)).await?;
    Ok(Json(TransactionList {
        transactions: list.iter().map(TransactionView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/transactions/{id}", tag = "customer", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 200, body = TransactionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_transaction(
    State(s): State<AppState>,
    CustomerAuth(who): CustomerAuth,
    Path(id): Path<String>,
) -> Result<Json<TransactionView>> {
    let t = s.ichido.transaction(&who, &id).await?;
    Ok(Json(TransactionView::from(&t)))
}

#[utoipa::path(post, path = "/api/v1/transactions/{id}/approve", tag = "customer", security(("session" = [])), params(("id" = String, Path)), request_body = ApproveBody,
    responses((status = 200, description = "executed: realtime with an OTP, deferred with passwords alone in a suspension grace", body = TransactionView),
        (status = 400, body = ErrorBody), (status = 401, description = "invalid_credentials or otp_required", body = ErrorBody),
        (status = 403, description = "forbidden (role), token_suspended, otp_registration_required", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "conflict: already executed", body = ErrorBody), (status = 423, body = ErrorBody)))]
pub async fn approve(
    State(s): State<AppState>,
    CustomerAuth(who): CustomerAuth,
    Path(id): Path<String>,
    Json(b): Json<ApproveBody>,
) -> Result<Json<TransactionView>> {
    let t = s
        .ichido
        .approve_transaction(&who, &id, &b.transaction_password, b.otp.as_deref())
        .await?;
    Ok(Json(TransactionView::from(&t)))
}
