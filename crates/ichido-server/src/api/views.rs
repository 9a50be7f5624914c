//! The JSON shapes of the API. Request bodies refuse unknown fields, so a
//! misspelt field is an error rather than silently ignored.

use ichido_domain::audit::AuditEvent;
use ichido_domain::model::{Token, UserView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContract {
    #[schema(example = "1234567890")]
    pub contract_no: String,
    #[schema(example = "Acme Trading Co., Ltd.")]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ContractView {
    pub contract_no: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    #[schema(example = "taro")]
    pub user_id: String,
    pub name: String,
    /// `administrator`, `approver`, `applicant` or `viewer`.
    #[schema(example = "approver")]
    pub role: String,
    /// 8–256 bytes.
    pub login_password: String,
    /// 8–256 bytes, different from the login password.
    pub transaction_password: String,
}

/// A user's non-revoked token.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    #[schema(example = "ABCD12345674")]
    pub token_id: String,
    /// `event` or `time`.
    pub kind: String,
    /// `pending`, `active`, `suspended`, `locked` or `revoked`.
    pub state: String,
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// End of the suspension grace (RFC 3339), if suspended with grace.
    pub grace_until: Option<String>,
    pub algorithm: String,
    pub digits: u8,
    pub created_at: String,
    pub activated_at: Option<String>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        Self {
            token_id: t.token_id.to_string(),
            kind: t.kind.as_str().to_owned(),
            state: t.state.as_str().to_owned(),
            failures: t.failures,
            grace_until: t.grace_until.map(rfc3339),
            algorithm: t.algorithm.as_str().to_owned(),
            digits: t.digits.get(),
            created_at: rfc3339(t.created_at),
            activated_at: t.activated_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub contract_no: String,
    pub user_id: String,
    pub name: String,
    pub role: String,
    /// Locked after too many wrong passwords.
    pub locked: bool,
    pub token: Option<TokenView>,
}

impl From<&UserView> for UserResponse {
    fn from(v: &UserView) -> Self {
        Self {
            contract_no: v.user.contract_no.clone(),
            user_id: v.user.user_id.clone(),
            name: v.user.name.clone(),
            role: v.user.role.as_str().to_owned(),
            locked: v.locked,
            token: v.token.as_ref().map(TokenView::from),
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// Days the user may log in with passwords alone; 0 = no grace; default from configuration (30).
    pub grace_days: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    #[schema(example = "ABCD12345674")]
    pub token_id: String,
    /// 6–8 ASCII digits, as a string.
    #[schema(example = "755224")]
    pub otp: String,
}

#[derive(Serialize, ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub contract_no: Option<String>,
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    /// Only events older than this sequence number (paging).
    pub before: Option<i64>,
    /// At most 1000; default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub contract_no: Option<String>,
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    pub outcome: String,
    /// SHA-256 chain hash of this event (hex).
    pub hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            contract_no: e.contract_no,
            user_id: e.user_id,
            token_id: e.token_id,
            outcome: e.outcome,
            hash: e.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditResponse {
    pub events: Vec<AuditEventView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    pub contract_no: String,
    pub user_id: String,
    pub login_password: String,
    /// `event` (HOTP) or `time` (TOTP).
    #[schema(example = "time")]
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
pub struct RegistrationResponse {
    pub token_id: String,
    pub kind: String,
    /// Base32 without padding. Shown once.
    pub secret: String,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    pub digits: u8,
    /// Time tokens: the step in seconds; null for event tokens.
    pub period: Option<u32>,
    /// Event tokens: the generator's first counter; null for time tokens.
    pub counter: Option<u64>,
    pub otpauth_uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpBody {
    pub otp: String,
}

#[derive(Serialize, ToSchema)]
pub struct StateResponse {
    #[schema(example = "active")]
    pub state: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncBody {
    pub contract_no: String,
    pub user_id: String,
    pub login_password: String,
    /// The first of two consecutive codes.
    pub otp1: String,
    /// The code after it.
    pub otp2: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub contract_no: String,
    pub user_id: String,
    pub login_password: String,
    /// The token ID stored on this PC (device binding); checked when given.
    pub token_id: Option<String>,
    /// Required when the user has an active token.
    pub otp: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer secret of the session.
    pub session: String,
    /// `otp` or `password`.
    pub method: String,
    /// Idle seconds before the session ends.
    pub expires_in: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    pub logged_out: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionBody {
    /// `transfer`.
    pub kind: String,
    pub payee: String,
    /// Integer amount in the account currency's minor unit.
    pub amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionView {
    pub id: String,
    pub kind: String,
    pub payee: String,
    pub amount: i64,
    /// `pending_approval` or `executed`.
    pub state: String,
    pub created_by: String,
    pub created_at: String,
    pub approved_by: Option<String>,
    /// `realtime` or `deferred`, once executed.
    pub execution: Option<String>,
    pub executed_at: Option<String>,
}

impl From<&ichido_domain::model::Transaction> for TransactionView {
    fn from(t: &ichido_domain::model::Transaction) -> Self {
        Self {
            id: t.id.clone(),
            kind: t.kind.as_str().to_owned(),
            payee: t.payee.clone(),
            amount: t.amount,
            state: t.state.as_str().to_owned(),
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            approved_by: t.approved_by.clone(),
            execution: t.execution.map(|e| e.as_str().to_owned()),
            executed_at: t.executed_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TransactionList {
    pub transactions: Vec<TransactionView>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most 1000; default 100.
    pub limit: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// 取引パスワード.
    pub transaction_password: String,
    /// Required whenever the approver has an active token.
    pub otp: Option<String>,
}
