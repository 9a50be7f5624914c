//! The domain's error: one variant per answer of the external contract.
//! Messages never contain a secret, a code or a password.

use thiserror::Error;

/// Failures of the storage layer, as the domain sees them.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (existing contract, user, live token, operator name).
    #[error("already exists")]
    Conflict,
    /// The database cannot be reached or answered with a transient failure.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back (corruption, unknown enum value).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// Every answer of the validation center that is not a success.
#[derive(Debug, Error)]
pub enum DomainError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("contract number, user ID or password is not correct")]
    InvalidCredentials,
    #[error("the one-time password is not correct")]
    InvalidOtp,
    #[error("this one-time password has already been used; wait for a new one")]
    OtpReplayed,
    #[error("a one-time password is required")]
    OtpRequired,
    #[error("this user must register a token before using this service")]
    OtpRegistrationRequired,
    #[error("the token is suspended")]
    TokenSuspended,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("the token has not been activated yet")]
    TokenPending,
    #[error("not allowed")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("this user already has a token; deregister it first")]
    TokenExists,
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("the token is locked after too many failures; ask the bank to unlock it")]
    TokenLocked,
    #[error("the user is locked after too many wrong passwords; ask the bank to unlock it")]
    UserLocked,
    #[error("too many requests")]
    RateLimited,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// A bug or corrupt data: logged in full, answered as `unavailable`.
    #[error("internal error: {0}")]
    Internal(String),
    /// One entry of a bulk request was refused (the whole request with it):
    /// answered with the entry's own code, its message naming the entry.
    #[error("entries[{index}]: {source}")]
    Entry {
        index: usize,
        source: Box<DomainError>,
    },
}

impl DomainError {
    /// The contract's error code for this answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidOtp => "invalid_otp",
            Self::OtpReplayed => "otp_replayed",
            Self::OtpRequired => "otp_required",
            Self::OtpRegistrationRequired => "otp_registration_required",
            Self::TokenSuspended => "token_suspended",
            Self::TokenRevoked => "token_revoked",
            Self::TokenPending => "token_pending",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::TokenExists => "token_exists",
            Self::Conflict(_) => "conflict",
            Self::TokenLocked => "token_locked",
            Self::UserLocked => "user_locked",
            Self::RateLimited => "rate_limited",
            Self::Unavailable | Self::Internal(_) => "unavailable",
            Self::Entry { source, .. } => source.code(),
        }
    }
}

impl DomainError {
    /// This error, as the answer about entry `index` of a bulk request.
    pub fn at_entry(self, index: usize) -> Self {
        DomainError::Entry {
            index,
            source: Box::new(self),
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => DomainError::Conflict("record"),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                DomainError::Unavailable
            }
            StoreError::Corrupt(detail) => DomainError::Internal(detail),
        }
    }
}
