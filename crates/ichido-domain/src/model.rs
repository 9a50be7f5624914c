//! The records of the validation center: operators, contracts, users, tokens.
//! A token's secret exists here only sealed (see [`crate::seal`]).

use std::fmt;
use std::str::FromStr;

use ichido_otp::{Algorithm, Digits};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::TokenId;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(DomainError::InvalidRequest(format!(
                        concat!(stringify!($name), " must be one of: {}"),
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A user's authority within a contract.
    Role {
        /// サービス管理責任者: must use OTP.
        Administrator = "administrator",
        /// 承認権限: approves transactions; must use OTP.
        Approver = "approver",
        /// 申請権限: prepares transfer data only.
        Applicant = "applicant",
        /// 照会権限: balances and statements.
        Viewer = "viewer",
    }
}

string_enum! {
    /// The generator kind of a token.
    TokenKind {
        /// HOTP (RFC 4226): each press of "generate" advances a counter.
        Event = "event",
        /// TOTP (RFC 6238): a new code every period.
        Time = "time",
    }
}

string_enum! {
    /// Where a token is in its life.
    TokenState {
        Pending = "pending",
        Active = "active",
        Suspended = "suspended",
        Locked = "locked",
        Revoked = "revoked",
    }
}

impl Role {
    /// Administrators and approvers must authenticate with an OTP.
    pub fn requires_otp(self) -> bool {
        matches!(self, Role::Administrator | Role::Approver)
    }
}

/// A bank operator (or relying party) that uses the operator API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub created_at: i64,
}

/// A customer company, identified by its contract number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub contract_no: String,
    pub name: String,
    pub created_at: i64,
}

/// A user of a contract. Password hashes are argon2id PHC strings.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub contract_no: String,
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub login_hash: String,
    pub transaction_hash: String,
    pub created_at: i64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("contract_no", &self.contract_no)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A soft token. `counter` is the next HOTP counter the server expects (event);
/// `last_step` the last accepted TOTP time step and `time_offset` the learned
/// clock drift in steps (time).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token_id: TokenId,
    pub contract_no: String,
    pub user_id: String,
    pub kind: TokenKind,
    pub state: TokenState,
    pub algorithm: Algorithm,
    pub digits: Digits,
    pub period: u32,
    pub counter: u64,
    pub last_step: Option<u64>,
    pub time_offset: i64,
    pub failures: u32,
    pub sealed_secret: Vec<u8>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub grace_until: Option<i64>,
    pub updated_at: i64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token_id", &self.token_id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// What the operator API shows of a user.
#[derive(Debug, Clone)]
pub struct UserView {
    pub user: User,
    pub locked: bool,
    pub token: Option<Token>,
}

string_enum! {
    /// How a session was authenticated.
    LoginMethod {
        /// Passwords and a one-time password.
        Otp = "otp",
        /// Passwords alone (no token required, or suspension grace).
        Password = "password",
    }
}

string_enum! {
    /// What a transaction is.
    TransactionKind {
        /// A funds transfer (振込).
        Transfer = "transfer",
    }
}

string_enum! {
    /// Where a transaction is.
    TransactionState {
        PendingApproval = "pending_approval",
        Executed = "executed",
    }
}

string_enum! {
    /// How an approved transaction runs (R8).
    Execution {
        /// Approved with an OTP: executed at once.
        Realtime = "realtime",
        /// Approved with passwords alone (suspension grace): executed later.
        Deferred = "deferred",
    }
}

/// A customer's session. Only the hash of its bearer secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub contract_no: String,
    pub user_id: String,
    pub method: LoginMethod,
    pub created_at: i64,
    /// Idle expiry: moved forward by each use.
    pub expires_at: i64,
}

/// A transaction awaiting or past approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    pub contract_no: String,
    pub created_by: String,
    pub kind: TransactionKind,
    pub payee: String,
    /// In the account currency's minor unit.
    pub amount: i64,
    pub state: TransactionState,
    pub approved_by: Option<String>,
    pub execution: Option<Execution>,
    pub created_at: i64,
    pub executed_at: Option<i64>,
}
