//! RFC 4648 base32 for OTP secrets: upper-case unpadded output, forgiving input (case, padding, spaces, dashes).

use std::sync::OnceLock;

use data_encoding::{DecodeKind, Encoding, Specification, BASE32_NOPAD};
use zeroize::Zeroizing;

use crate::OtpError;

/// Encodes `bytes` with the RFC 4648 alphabet, upper case, without `=` padding (the
/// form authenticator apps expect in key URIs).
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes)
}

/// Appends the encoding of `bytes` to `out` (no intermediate copy of the secret).
pub(crate) fn encode_append(bytes: &[u8], out: &mut String) {
    BASE32_NOPAD.encode_append(bytes, out);
}

/// Decodes RFC 4648 base32 as people type it: lower case is accepted, trailing `=`
/// padding is optional, spaces and `-` (digit grouping) are ignored. Any other
/// character, padding before the end or an impossible length is an error. Unused
/// trailing bits of the last symbol are ignored. The error never contains the input.
///
/// The result is secret material: wrap it in `Zeroizing` (as `uri` does).
pub fn decode(s: &str) -> Result<Vec<u8>, OtpError> {
    let mut cleaned = Zeroizing::new(Vec::with_capacity(s.len()));
    cleaned.extend(
        s.bytes()
            .filter(|b| !matches!(b, b' ' | b'-'))
            .map(|b| b.to_ascii_uppercase()),
    );
    let unpadded = cleaned
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |last| last + 1);
    let body = cleaned.get(..unpadded).unwrap_or_default();
    lenient()?.decode(body).map_err(|e| {
        OtpError::InvalidBase32(match e.kind {
            DecodeKind::Symbol => "invalid character",
            DecodeKind::Length => "invalid length",
            DecodeKind::Padding => "misplaced padding",
            DecodeKind::Trailing => "non-zero trailing bits",
        })
    })
}

/// Upper-case RFC 4648 alphabet, no padding, trailing bits not checked.
fn lenient() -> Result<&'static Encoding, OtpError> {
    static LENIENT: OnceLock<Option<Encoding>> = OnceLock::new();
    LENIENT
        .get_or_init(|| {
            let mut spec = Specification::new();
            spec.symbols.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
            spec.check_trailing_bits = false;
            spec.encoding().ok()
        })
        .as_ref()
        .ok_or(OtpError::InvalidBase32("decoder unavailable"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let table = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, coded) in table {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode("MZXW6YQ=").unwrap(), b"foob");
        assert_eq!(decode("MY======").unwrap(), b"f");
    }

    #[test]
    fn forgiving_input() {
        let key = b"12345678901234567890";
        let coded = encode(key);
        assert_eq!(coded, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(decode(&coded.to_lowercase()).unwrap(), key);
        assert_eq!(
            decode("gezd gnbv-gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            key
        );
        // Unused trailing bits are tolerated ("MZ" would be canonical for "f").
        assert_eq!(decode("MZ").unwrap(), b"f");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "M", "MZX", "MZXW6Y", "MZ=XW", "MZ1", "MZ8", "MZ_", "MZ\tX", "MÝ", "=MZ",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let err = decode("SECRETSECRET1").unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
