//! Service endpoints: health, Prometheus metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::AppError;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, body = Health), (status = 503, description = "the database does not answer", body = crate::error::ErrorBody)))]
pub async fn healthz(State(s): State<AppState>) -> Result<axum::Json<Health>, AppError> {
    s.ichido.health().await?;
    Ok(axum::Json(Health { status: "ok" }))
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    // A store that does not answer leaves the gauge as it was: /healthz
    // reports that.
    if let Ok(lag) = s.ichido.audit_index_lag().await {
        let lag = lag.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        s.metrics.audit_index_lag.set(lag);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    axum::Json(crate::openapi::ApiDoc::openapi())
}
