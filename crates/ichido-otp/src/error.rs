//! The single error type of the crate; messages never contain secret material (keys, codes).

/// Everything that can go wrong while building keys, parsing codes, base32 text or key URIs.
///
/// Messages are meant for operators: they name the offending field but never echo a
/// secret, a base32 key or an OTP code.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OtpError {
    /// Algorithm name other than SHA1, SHA256 or SHA512.
    #[error("unsupported algorithm (expected SHA1, SHA256 or SHA512)")]
    UnsupportedAlgorithm,
    /// Number of digits outside 6..=8.
    #[error("number of digits must be 6, 7 or 8")]
    InvalidDigits,
    /// A code that is not exactly 6 to 8 ASCII digits.
    #[error("code must be 6 to 8 ASCII digits")]
    InvalidCode,
    /// An empty HMAC secret.
    #[error("secret must not be empty")]
    EmptySecret,
    /// The HMAC implementation refused the key (cannot happen for HMAC; kept for safety).
    #[error("secret cannot be used as an HMAC key")]
    InvalidKey,
    /// Base32 text that cannot be decoded; the reason names the problem, not the text.
    #[error("secret is not valid base32: {0}")]
    InvalidBase32(&'static str),
    /// A key URI that is malformed; the reason names the problem.
    #[error("invalid otpauth URI: {0}")]
    InvalidUri(&'static str),
    /// A required key URI parameter is absent.
    #[error("otpauth URI lacks required parameter `{0}`")]
    MissingParameter(&'static str),
    /// A key URI parameter given more than once.
    #[error("otpauth URI repeats parameter `{0}`")]
    DuplicateParameter(&'static str),
    /// A key URI parameter whose value is unusable.
    #[error("otpauth URI has an invalid value for parameter `{0}`")]
    InvalidParameter(&'static str),
    /// The issuer in the label differs from the `issuer` parameter.
    #[error("otpauth URI issuer in label and issuer parameter differ")]
    IssuerMismatch,
}
