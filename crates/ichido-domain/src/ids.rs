//! Identifiers: contract numbers, user IDs, token IDs (4 capital letters, 8 digits,
//! the last a Luhn check digit over the 7 before it).

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::error::DomainError;

/// The longest contract number or user ID accepted.
pub const MAX_ID_LEN: usize = 64;
/// The longest display name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a contract number (契約者番号): 1–64 ASCII letters, digits or `-`.
pub fn check_contract_no(s: &str) -> Result<(), DomainError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidRequest(
            "contract_no must be 1-64 ASCII letters, digits or '-'".into(),
        ))
    }
}

/// Checks a user ID (利用者ID): 1–64 ASCII letters, digits or `.`, `_`, `-`, `@`.
pub fn check_user_id(s: &str) -> Result<(), DomainError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidRequest(
            "user_id must be 1-64 ASCII letters, digits or '.', '_', '-', '@'".into(),
        ))
    }
}

/// Checks a display name: 1–200 characters, no control characters.
pub fn check_name(field: &'static str, s: &str) -> Result<(), DomainError> {
    let n = s.chars().count();
    if n == 0 || n > MAX_NAME_LEN || s.chars().any(char::is_control) || s.trim().is_empty() {
        return Err(DomainError::InvalidRequest(format!(
            "{field} must be 1-{MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(())
}

/// A token ID such as `ABCD12345674`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

impl TokenId {
    /// A fresh random token ID with a valid Luhn check digit.
    pub fn random() -> Self {
        let mut rng = rand::thread_rng();
        let mut s = String::with_capacity(12);
        for _ in 0..4 {
            s.push(char::from(rng.gen_range(b'A'..=b'Z')));
        }
        let mut digits = [0u8; 7];
        for d in &mut digits {
            *d = rng.gen_range(0..10);
            s.push(char::from(b'0' + *d));
        }
        s.push(char::from(b'0' + luhn_check_digit(&digits)));
        TokenId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID as a number, one to one with the ID: its four letters read as
    /// base-26 digits (`A` = 0), followed by its eight digits. `AAAA00000000`
    /// is 0 and `ZZZZ99999997`, the highest, is 26⁴ × 10⁸ − 3 (below 2⁴⁶), so distinct
    /// IDs have distinct numbers. SQLite keeps a token's row under this
    /// number (its table's integer key: one B-tree search finds the row);
    /// the store's migration 0006 computes the same number in SQL.
    pub fn number(&self) -> i64 {
        // A `TokenId` is only made by `random` or `from_str`, so its bytes
        // are `[A-Z]{4}[0-9]{8}`; wrapping arithmetic keeps this panic-free
        // regardless.
        let b = self.0.as_bytes();
        let letters = b.iter().take(4).fold(0i64, |n, &c| {
            n.wrapping_mul(26)
                .wrapping_add(i64::from(c.wrapping_sub(b'A')))
        });
        let digits = b.iter().skip(4).fold(0i64, |n, &c| {
            n.wrapping_mul(10)
                .wrapping_add(i64::from(c.wrapping_sub(b'0')))
        });
        letters.wrapping_mul(100_000_000).wrapping_add(digits)
    }
}

/// The Luhn check digit for `digits` (most significant first).
pub fn luhn_check_digit(digits: &[u8]) -> u8 {
    // Double every second digit counting from the right-most payload digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    // sum % 10 < 10, so the cast is exact.
    ((10 - sum % 10) % 10) as u8
}

impl FromStr for TokenId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            DomainError::InvalidRequest(
                "token_id must be 4 capital letters and 8 digits with a valid check digit".into(),
            )
        };
        let b = s.as_bytes();
        if b.len() != 12
            || !b[..4].iter().all(u8::is_ascii_uppercase)
            || !b[4..].iter().all(u8::is_ascii_digit)
        {
            return Err(bad());
        }
        let digits: Vec<u8> = b[4..11].iter().map(|c| c - b'0').collect();
        if luhn_check_digit(&digits) != b[11] - b'0' {
            return Err(bad());
        }
        Ok(TokenId(s.to_owned()))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_numbers_read_the_letters_in_base_26_then_the_digits() {
        let n = |s: &str| s.parse::<TokenId>().unwrap().number();
        assert_eq!(n("AAAA00000000"), 0);
        assert_eq!(n("AAAA00000018"), 18);
        assert_eq!(n("AAAB00000000"), 100_000_000);
        assert_eq!(n("BAAA00000000"), 26 * 26 * 26 * 100_000_000);
        // The highest ID (its check digit is 7).
        assert_eq!(n("ZZZZ99999997"), 26 * 26 * 26 * 26 * 100_000_000 - 3);
        assert!(n("ZZZZ99999997") < 1 << 46);
        assert_eq!(
            n("ABCD12345674"),
            (26 * 26 + 2 * 26 + 3) * 100_000_000 + 12_345_674
        );
    }

    #[test]
    fn luhn_known_values() {
        // 7992739871 has check digit 3 (the classic example).
        assert_eq!(luhn_check_digit(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1]), 3);
        assert_eq!(luhn_check_digit(&[0, 0, 0, 0, 0, 0, 0]), 0);
    }

    #[test]
    fn parse_rejects_bad_ids() {
        for s in [
            "",
            "ABC123456789",
            "abcd12345678",
            "ABCD1234567",
            "ABCD123456789",
            "ABCD1234567X",
            "ＡBCD12345678",
        ] {
            assert!(s.parse::<TokenId>().is_err(), "{s}");
        }
        let id = TokenId::random();
        let mut wrong = id.as_str().to_owned();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '9' {
            '0'
        } else {
            char::from(last as u8 + 1)
        });
        assert!(wrong.parse::<TokenId>().is_err());
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_contract_no("1234567890").is_ok());
        assert!(check_contract_no("").is_err());
        assert!(check_contract_no("12 34").is_err());
        assert!(check_user_id("taro.yamada@acme").is_ok());
        assert!(check_user_id("taro;drop").is_err());
        assert!(check_name("name", "山田 太郎").is_ok());
        assert!(check_name("name", " ").is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
    }

    proptest! {
        #[test]
        fn random_ids_round_trip(_seed in 0u32..1000) {
            let id = TokenId::random();
            prop_assert_eq!(id.as_str().parse::<TokenId>().unwrap(), id);
        }

        /// The number gives the ID back: no two IDs share one.
        #[test]
        fn a_token_number_gives_its_id_back(_seed in 0u32..1000) {
            let id = TokenId::random();
            let n = id.number();
            let (mut letters, digits) = (n / 100_000_000, n % 100_000_000);
            let mut s = format!("{digits:08}");
            for _ in 0..4 {
                s.insert(0, char::from(b'A' + u8::try_from(letters % 26).unwrap()));
                letters /= 26;
            }
            prop_assert_eq!(letters, 0);
            prop_assert_eq!(s, id.as_str());
        }

        #[test]
        fn single_digit_errors_are_caught(pos in 4usize..12, delta in 1u8..10) {
            let id = TokenId::random();
            let mut b = id.as_str().as_bytes().to_vec();
            b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
            let s = String::from_utf8(b).unwrap();
            prop_assert!(s.parse::<TokenId>().is_err());
        }
    }
}
