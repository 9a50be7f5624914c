//! Code lengths (`Digits`, always 6..=8) and OTP values (`Code`, always < 10^digits), compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::OtpError;

/// Number of decimal digits of a code. Invariant: 6, 7 or 8 (RFC 4226 §5.3 requires
/// at least 6; more than 8 would exceed the 31-bit truncated value's useful range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digits(u8);

impl Digits {
    /// Six digits, the usual length.
    pub const SIX: Digits = Digits(6);
    /// Seven digits.
    pub const SEVEN: Digits = Digits(7);
    /// Eight digits.
    pub const EIGHT: Digits = Digits(8);

    /// `n` digits; only 6, 7 and 8 are accepted.
    pub fn new(n: u8) -> Result<Digits, OtpError> {
        match n {
            6..=8 => Ok(Digits(n)),
            _ => Err(OtpError::InvalidDigits),
        }
    }

    /// The number of digits (6, 7 or 8).
    #[must_use]
    pub fn get(self) -> u8 {
        self.0
    }

    /// 10^digits: every code of this length is below it.
    #[must_use]
    pub(crate) fn modulus(self) -> u32 {
        match self.0 {
            6 => 1_000_000,
            7 => 10_000_000,
            _ => 100_000_000,
        }
    }
}

impl Default for Digits {
    fn default() -> Self {
        Digits::SIX
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A one-time password: a value below 10^digits together with its length, so that
/// "012345" (6 digits) and "0012345" (7 digits) are different codes.
///
/// `PartialEq` is derived for convenience in tests; verification uses [`Code::ct_eq`].
/// `Debug` never shows the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code {
    value: u32,
    digits: Digits,
}

impl Code {
    /// Parses exactly 6 to 8 ASCII digits; leading zeros are significant. Anything
    /// else (spaces, signs, non-ASCII digits, other lengths) is [`OtpError::InvalidCode`].
    pub fn parse(s: &str) -> Result<Code, OtpError> {
        let bytes = s.as_bytes();
        let len = u8::try_from(bytes.len()).map_err(|_| OtpError::InvalidCode)?;
        let digits = Digits::new(len).map_err(|_| OtpError::InvalidCode)?;
        let mut value: u32 = 0;
        for &b in bytes {
            if !b.is_ascii_digit() {
                return Err(OtpError::InvalidCode);
            }
            // At most 8 digits: 99_999_999 fits comfortably in u32.
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u32::from(b - b'0')))
                .ok_or(OtpError::InvalidCode)?;
        }
        Ok(Code { value, digits })
    }

    /// Builds a code from a value already reduced modulo 10^digits.
    pub(crate) fn from_truncated(truncated: u32, digits: Digits) -> Code {
        Code {
            value: truncated % digits.modulus(),
            digits,
        }
    }

    /// The code's length.
    #[must_use]
    pub fn digits(&self) -> Digits {
        self.digits
    }

    /// The numeric value (below 10^digits).
    #[must_use]
    pub fn value(&self) -> u32 {
        self.value
    }

    /// Constant-time comparison of the values; the (public) lengths must match too.
    #[must_use]
    pub fn ct_eq(&self, other: &Code) -> bool {
        let same_digits = self.digits.0.ct_eq(&other.digits.0);
        (same_digits & self.value.ct_eq(&other.value)).into()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:0width$}",
            self.value,
            width = usize::from(self.digits.0)
        )
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(******)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn digits_bounds() {
        for n in 0..=255u8 {
            assert_eq!(Digits::new(n).is_ok(), (6..=8).contains(&n), "{n}");
        }
        assert_eq!(Digits::SIX.get(), 6);
        assert_eq!(Digits::SEVEN.get(), 7);
        assert_eq!(Digits::EIGHT.get(), 8);
    }

    #[test]
    fn parse_accepts_exact_ascii_digits() {
        let c = Code::parse("012345").unwrap();
        assert_eq!((c.value(), c.digits()), (12_345, Digits::SIX));
        assert_eq!(c.to_string(), "012345");
        let c = Code::parse("0012345").unwrap();
        assert_eq!((c.value(), c.digits().get()), (12_345, 7));
        let c = Code::parse("99999999").unwrap();
        assert_eq!((c.value(), c.digits()), (99_999_999, Digits::EIGHT));
        assert_eq!(Code::parse("000000").unwrap().to_string(), "000000");
    }

    #[test]
    fn parse_rejects_everything_else() {
        for bad in [
            "",
            "12345",
            "123456789",
            " 123456",
            "123456 ",
            "+123456",
            "-123456",
            "12 3456",
            "１２３４５６",
            "١٢٣٤٥٦",
            "12345a",
            "0x1234",
            "123\u{0}456",
            "1234567\n",
        ] {
            assert_eq!(Code::parse(bad), Err(OtpError::InvalidCode), "{bad:?}");
        }
    }

    #[test]
    fn ct_eq_needs_same_length_and_value() {
        let a = Code::parse("012345").unwrap();
        let b = Code::parse("0012345").unwrap();
        assert!(a.ct_eq(&a));
        assert!(!a.ct_eq(&b));
        assert!(!a.ct_eq(&Code::parse("012346").unwrap()));
    }

    #[test]
    fn debug_hides_value() {
        let c = Code::parse("424242").unwrap();
        assert_eq!(format!("{c:?}"), "Code(******)");
    }
}
