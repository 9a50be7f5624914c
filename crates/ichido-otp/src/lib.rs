//! ichido-otp: pure HOTP (RFC 4226) / TOTP (RFC 6238) generation, verification and resync — no I/O, no clock, no unsafe.
//!
//! Time and counters are always parameters. Keys hold a precomputed HMAC key
//! schedule; codes are compared in constant time; verification reports *what*
//! matched (a counter, or a step and its offset), never a bare bool. Every window
//! computation saturates at the `u64` edges, so no input can overflow or panic.
//!
//! ```
//! use ichido_otp::{verify_hotp, Algorithm, Code, Digits, HotpVerdict, Key};
//!
//! let key = Key::new(Algorithm::Sha1, b"12345678901234567890")?;
//! assert_eq!(key.hotp(1, Digits::SIX).to_string(), "287082");
//! let code = Code::parse("359152")?;
//! let verdict = verify_hotp(&key, Digits::SIX, &code, 0, 5, 0);
//! assert_eq!(verdict, HotpVerdict::Accepted { counter: 2 });
//! # Ok::<(), ichido_otp::OtpError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod algorithm;
pub mod base32;
mod code;
mod error;
mod key;
mod resync;
pub mod uri;
mod verify;

pub use algorithm::Algorithm;
pub use code::{Code, Digits};
pub use error::OtpError;
pub use key::{time_step, Key};
pub use resync::{resync_hotp, resync_totp};
pub use verify::{verify_hotp, verify_totp, HotpVerdict, TotpMatch, TotpVerdict};
