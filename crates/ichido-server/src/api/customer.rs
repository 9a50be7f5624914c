//! The customer API: self-registration (利用開始登録), activation, resync (同期ズレ補正).

use axum::extract::State;
use axum::http::StatusCode;
use ichido_domain::model::{TokenKind, TokenState};
use ichido_otp::base32;

use super::views::*;
use crate::error::{AppError, ErrorBody, Json, Path};
use crate::AppState;

type Result<T> = std::result::Result<T, AppError>;

#[utoipa::path(post, path = "/api/v1/registrations", tag = "customer", request_body = RegistrationBody,
    responses((status = 201, description = "a pending token; its secret is shown this once", body = RegistrationResponse),
        (status = 400, body = ErrorBody), (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 409, description = "token_exists", body = ErrorBody), (status = 423, description = "user_locked", body = ErrorBody)))]
pub async fn register(
    State(s): State<AppState>,
    Json(b): Json<RegistrationBody>,
) -> Result<(StatusCode, Json<RegistrationResponse>)> {
    s.limits.user(&b.contract_no, &b.user_id)?;
    let kind: TokenKind = b.kind.parse()?;
    let reg = s
        .ichido
        .register(&b.contract_no, &b.user_id, &b.login_password, kind)
        .await?;
    let t = &reg.token;
    Ok((
        StatusCode::CREATED,
        Json(RegistrationResponse {
            token_id: t.token_id.to_string(),
            kind: t.kind.as_str().to_owned(),
            secret: base32::encode(&reg.secret),
            algorithm: t.algorithm.as_str().to_owned(),
            digits: t.digits.get(),
            period: (t.kind == TokenKind::Time).then_some(t.period),
            counter: (t.kind == TokenKind::Event).then_some(t.counter),
            otpauth_uri: reg.otpauth_uri.to_string(),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/registrations/{token_id}/activate", tag = "customer",
    params(("token_id" = String, Path)), request_body = OtpBody,
    responses((status = 200, body = StateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn activate(
    State(s): State<AppState>,
    Path(token_id): Path<String>,
    Json(b): Json<OtpBody>,
) -> Result<Json<StateResponse>> {
    let t = s.ichido.activate(&token_id, &b.otp).await?;
    Ok(Json(StateResponse {
        state: t.state.as_str().to_owned(),
    }))
}

#[utoipa::path(post, path = "/api/v1/token/resync", tag = "customer", request_body = ResyncBody,
    responses((status = 200, body = StateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 423, body = ErrorBody)))]
pub async fn resync(
    State(s): State<AppState>,
    Json(b): Json<ResyncBody>,
) -> Result<Json<StateResponse>> {
    s.ichido
        .resync(
            &b.contract_no,
            &b.user_id,
            &b.login_password,
            &b.otp1,
            &b.otp2,
        )
        .await?;
    Ok(Json(StateResponse {
        state: TokenState::Active.as_str().to_owned(),
    }))
}
