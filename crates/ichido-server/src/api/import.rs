//! `POST /api/v1/import` (operator): migration of users and token seeds from
//! another validation center, up to 1,000 per request, all or nothing.
//!
//! The body carries password *hashes* and token secrets: it has no `Debug`, its
//! secrets are wiped when it is dropped, and no refusal repeats a value.

use axum::extract::State;
use axum::http::StatusCode;
use ichido_domain::services::{ImportEntry, ImportToken, MAX_IMPORT_ENTRIES};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::{Zeroize, Zeroizing};

use super::OperatorAuth;
use crate::error::{AppError, ErrorBody, Json};
use crate::AppState;

/// The largest import request body, in bytes (1,000 entries fit with room).
pub const IMPORT_BODY_LIMIT: usize = 2 * 1024 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// 1–1,000 users, imported together or not at all.
    pub entries: Vec<ImportEntryBody>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportEntryBody {
    /// An existing contract.
    #[schema(example = "1234567890")]
    pub contract_no: String,
    /// A user who does not exist yet.
    #[schema(example = "taro")]
    pub user_id: String,
    pub name: String,
    /// `administrator`, `approver`, `applicant` or `viewer`.
    #[schema(example = "approver")]
    pub role: String,
    /// argon2id PHC string (v=19) of the login password; at least OWASP's
    /// minimum cost (e.g. m=19456,t=2), at most m=262144,t=16,p=16.
    #[schema(example = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$...")]
    pub login_password_hash: String,
    /// argon2id PHC string of the transaction password (another hash than the login one).
    pub transaction_password_hash: String,
    /// The user's token seed, imported `active`; null or absent for none.
    pub token: Option<ImportTokenBody>,
}

impl Drop for ImportEntryBody {
    fn drop(&mut self) {
        self.login_password_hash.zeroize();
        self.transaction_password_hash.zeroize();
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportTokenBody {
    /// `event` (HOTP) or `time` (TOTP).
    #[schema(example = "event")]
    pub kind: String,
    /// The secret, base32 (RFC 4648), 16–64 bytes.
    pub secret: String,
    /// `SHA1` (default), `SHA256` or `SHA512`.
    pub algorithm: Option<String>,
    /// 6 (default), 7 or 8.
    pub digits: Option<u8>,
    /// Time tokens only: the step in seconds (default 30, 1–300).
    pub period: Option<u32>,
    /// Event tokens only: the next counter the generator will use (default 0).
    pub counter: Option<u64>,
}

impl Drop for ImportTokenBody {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

#[derive(Serialize, ToSchema)]
pub struct ImportResponse {
    /// How many users were created.
    pub imported: usize,
    /// One per entry, in the order of the request.
    pub entries: Vec<ImportedView>,
}

#[derive(Serialize, ToSchema)]
pub struct ImportedView {
    pub contract_no: String,
    pub user_id: String,
    /// The token ID the server assigned (4 letters, 8 digits, Luhn), or null.
    #[schema(example = "ABCD12345674")]
    pub token_id: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/import", tag = "operator", security(("operator_key" = [])),
    request_body = ImportBody,
    responses((status = 201, description = "every entry imported", body = ImportResponse),
        (status = 400, description = "invalid_request: the message names the first bad entry as `entries[i]`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "not_found: an entry's contract does not exist", body = ErrorBody),
        (status = 409, description = "conflict: an entry's user exists already", body = ErrorBody),
        (status = 413, description = "body over 2 MiB", body = ErrorBody)))]
pub async fn import(
    State(s): State<AppState>,
    op: OperatorAuth,
    Json(mut b): Json<ImportBody>,
) -> Result<(StatusCode, Json<ImportResponse>), AppError> {
    if b.entries.len() > MAX_IMPORT_ENTRIES {
        return Err(AppError::invalid_request(format!(
            "entries must hold 1-{MAX_IMPORT_ENTRIES} users"
        )));
    }
    let entries = b
        .entries
        .iter_mut()
        .map(|e| ImportEntry {
            contract_no: std::mem::take(&mut e.contract_no),
            user_id: std::mem::take(&mut e.user_id),
            name: std::mem::take(&mut e.name),
            role: std::mem::take(&mut e.role),
            login_password_hash: std::mem::take(&mut e.login_password_hash),
            transaction_password_hash: std::mem::take(&mut e.transaction_password_hash),
            token: e.token.as_mut().map(|t| ImportToken {
                kind: std::mem::take(&mut t.kind),
                secret: Zeroizing::new(std::mem::take(&mut t.secret)),
                algorithm: t.algorithm.take(),
                digits: t.digits,
                period: t.period,
                counter: t.counter,
            }),
        })
        .collect();
    let imported = s.ichido.import(&op.actor(), entries).await?;
    let entries: Vec<ImportedView> = imported
        .into_iter()
        .map(|i| ImportedView {
            contract_no: i.contract_no,
            user_id: i.user_id,
            token_id: i.token.map(|t| t.token_id.to_string()),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(ImportResponse {
            imported: entries.len(),
            entries,
        }),
    ))
}
