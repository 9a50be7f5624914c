//! The authenticator-app key URI `otpauth://TYPE/LABEL?PARAMETERS`: strict, panic-free parsing and canonical output.
//!
//! Invariant: for every `KeyUri` that `parse` returns, `parse(&k.to_uri()) == Ok(k)`.
//! Parsing is canonical: a HOTP URI always has `counter: Some(_)` and the default
//! period (a `period` parameter is validated but meaningless for HOTP); a TOTP URI
//! always has `counter: None` (a `counter` parameter is validated but ignored).

use std::collections::HashSet;
use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

use crate::{base32, Algorithm, Digits, Key, OtpError};

/// TOTP period used when the URI has no `period` parameter.
pub const DEFAULT_PERIOD: u64 = 30;

/// Longest URI accepted. A QR code holds at most 4296 characters, so this is generous
/// and bounds the work done on hostile input.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// Everything but RFC 3986 unreserved characters is percent-encoded (spaces as `%20`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URI's TYPE: counter-based or time-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtpKind {
    /// `otpauth://hotp/...` (RFC 4226).
    Hotp,
    /// `otpauth://totp/...` (RFC 6238).
    Totp,
}

impl OtpKind {
    /// "hotp" or "totp".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OtpKind::Hotp => "hotp",
            OtpKind::Totp => "totp",
        }
    }
}

/// A parsed key URI. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyUri {
    /// HOTP or TOTP.
    pub kind: OtpKind,
    /// The provider, from the label prefix and/or the `issuer` parameter (never `Some("")`
    /// after parsing; should contain no `:` to fit in the label).
    pub issuer: Option<String>,
    /// The account name (after parsing: non-empty, no leading space, and without `:`
    /// when there is no issuer).
    pub account: String,
    /// The raw secret bytes (decoded from base32).
    pub secret: Zeroizing<Vec<u8>>,
    /// HMAC hash; default SHA1.
    pub algorithm: Algorithm,
    /// Code length; default 6.
    pub digits: Digits,
    /// TOTP time step in seconds; default 30.
    pub period: u64,
    /// HOTP initial counter: required when parsing a HOTP URI.
    pub counter: Option<u64>,
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyUri")
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("account", &self.account)
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("counter", &self.counter)
            .finish()
    }
}

/// The recognised parameters, each at most once.
#[derive(Default)]
struct Params<'a> {
    secret: Option<&'a str>,
    issuer: Option<&'a str>,
    algorithm: Option<&'a str>,
    digits: Option<&'a str>,
    period: Option<&'a str>,
    counter: Option<&'a str>,
}

impl<'a> Params<'a> {
    /// Splits the query; unknown parameters (e.g. `image`) are ignored, but no name
    /// (after percent-decoding, ASCII case-insensitively) may appear twice.
    fn collect(query: &'a str) -> Result<Params<'a>, OtpError> {
        let mut params = Params::default();
        let mut others: HashSet<String> = HashSet::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_text(raw_name, false)?.to_ascii_lowercase();
            let slot = match name.as_str() {
                "secret" => (&mut params.secret, "secret"),
                "issuer" => (&mut params.issuer, "issuer"),
                "algorithm" => (&mut params.algorithm, "algorithm"),
                "digits" => (&mut params.digits, "digits"),
                "period" => (&mut params.period, "period"),
                "counter" => (&mut params.counter, "counter"),
                _ => {
                    if !others.insert(name) {
                        return Err(OtpError::DuplicateParameter("(unrecognised)"));
                    }
                    continue;
                }
            };
            if slot.0.replace(value).is_some() {
                return Err(OtpError::DuplicateParameter(slot.1));
            }
        }
        Ok(params)
    }
}

impl KeyUri {
    /// Parses `otpauth://TYPE/LABEL?PARAMETERS`; see the module docs for the rules.
    ///
    /// Scheme and TYPE are case-insensitive. LABEL is `Issuer:Account` or `Account`,
    /// percent-decoded, split at the first `:` (or `%3A`); leading spaces of the
    /// account are dropped, an empty issuer or account is refused. Parameters:
    /// `secret` (base32, required), `issuer` (must equal the label issuer when both
    /// are present; `+` means space; empty means absent), `algorithm`, `digits`
    /// (6..=8), `period` (> 0), `counter` (required for HOTP); unknown parameters are
    /// ignored. Rejects other schemes and types, fragments, malformed
    /// percent-encoding, invalid UTF-8, repeated parameters and URIs longer than
    /// [`MAX_URI_LEN`]. Never panics.
    pub fn parse(s: &str) -> Result<KeyUri, OtpError> {
        if s.len() > MAX_URI_LEN {
            return Err(OtpError::InvalidUri("too long"));
        }
        let rest = strip_prefix_ignore_case(s, "otpauth://")
            .ok_or(OtpError::InvalidUri("scheme must be otpauth://"))?;
        if rest.contains('#') {
            return Err(OtpError::InvalidUri("fragment not allowed"));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (kind, raw_label) = path
            .split_once('/')
            .ok_or(OtpError::InvalidUri("missing label"))?;
        let kind = if kind.eq_ignore_ascii_case("totp") {
            OtpKind::Totp
        } else if kind.eq_ignore_ascii_case("hotp") {
            OtpKind::Hotp
        } else {
            return Err(OtpError::InvalidUri("type must be totp or hotp"));
        };

        let label = decode_text(raw_label, false)?;
        let (label_issuer, account) = match label.split_once(':') {
            Some((issuer, account)) => (Some(issuer), account),
            None => (None, label.as_str()),
        };
        // Spaces may follow the colon; dropped in every case so that the account
        // reads the same whether or not `to_uri` puts an issuer before it.
        let account = account.trim_start_matches(' ');
        if account.is_empty() {
            return Err(OtpError::InvalidUri("missing account name"));
        }
        if label_issuer.is_some_and(str::is_empty) {
            // ":alice" would leave no way to tell issuer-less "a:b" accounts apart.
            return Err(OtpError::InvalidUri("empty issuer in label"));
        }

        let params = Params::collect(query)?;
        let secret = decode_secret(params.secret.ok_or(OtpError::MissingParameter("secret"))?)?;
        let issuer = match params.issuer {
            Some(raw) => Some(decode_text(raw, true)?).filter(|i| !i.is_empty()),
            None => None,
        };
        let issuer = match (label_issuer, issuer) {
            (Some(from_label), Some(param)) if from_label != param => {
                return Err(OtpError::IssuerMismatch)
            }
            (_, Some(param)) => Some(param),
            (from_label, None) => from_label.map(str::to_owned),
        };
        let algorithm = match params.algorithm {
            Some(raw) => decode_text(raw, false)?.parse()?,
            None => Algorithm::default(),
        };
        let digits = match params.digits {
            Some(raw) => {
                let n = parse_number(raw, "digits")?;
                Digits::new(u8::try_from(n).map_err(|_| OtpError::InvalidDigits)?)?
            }
            None => Digits::default(),
        };
        let period = match params.period {
            Some(raw) => match parse_number(raw, "period")? {
                0 => return Err(OtpError::InvalidParameter("period")),
                p => p,
            },
            None => DEFAULT_PERIOD,
        };
        let counter = match params.counter {
            Some(raw) => Some(parse_number(raw, "counter")?),
            None => None,
        };
        let (period, counter) = match kind {
            OtpKind::Hotp => (
                DEFAULT_PERIOD,
                Some(counter.ok_or(OtpError::MissingParameter("counter"))?),
            ),
            OtpKind::Totp => (period, None),
        };
        Ok(KeyUri {
            kind,
            issuer,
            account: account.to_owned(),
            secret,
            algorithm,
            digits,
            period,
            counter,
        })
    }

    /// Canonical URI, e.g.
    /// `otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30`;
    /// HOTP has `&counter=N` (0 if `None`) and no period. Label parts and the issuer are
    /// percent-encoded (spaces as `%20`). An empty issuer is omitted; an issuer
    /// containing `:` cannot be in the label and is written only as the parameter.
    ///
    /// The result contains the secret: treat it as secret material.
    #[must_use]
    pub fn to_uri(&self) -> String {
        let issuer = self.issuer.as_deref().filter(|i| !i.is_empty());
        let mut out = String::with_capacity(
            96 + self.account.len() * 3
                + issuer.map_or(0, str::len) * 6
                + self.secret.len().saturating_mul(8) / 5,
        );
        out.push_str("otpauth://");
        out.push_str(self.kind.as_str());
        out.push('/');
        if let Some(issuer) = issuer.filter(|i| !i.contains(':')) {
            out.extend(utf8_percent_encode(issuer, COMPONENT));
            out.push(':');
        }
        out.extend(utf8_percent_encode(&self.account, COMPONENT));
        out.push_str("?secret=");
        base32::encode_append(&self.secret, &mut out);
        if let Some(issuer) = issuer {
            out.push_str("&issuer=");
            out.extend(utf8_percent_encode(issuer, COMPONENT));
        }
        out.push_str("&algorithm=");
        out.push_str(self.algorithm.as_str());
        out.push_str("&digits=");
        out.push_str(&self.digits.get().to_string());
        match self.kind {
            OtpKind::Totp => {
                out.push_str("&period=");
                out.push_str(&self.period.to_string());
            }
            OtpKind::Hotp => {
                out.push_str("&counter=");
                out.push_str(&self.counter.unwrap_or(0).to_string());
            }
        }
        out
    }

    /// The HMAC key of this URI's secret and algorithm.
    pub fn key(&self) -> Result<Key, OtpError> {
        Key::new(self.algorithm, &self.secret)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Rejects a `%` not followed by two hex digits (instead of passing it through).
fn check_percent_escapes(raw: &str) -> Result<(), OtpError> {
    let bytes = raw.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == b'%') {
        let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return Err(OtpError::InvalidUri("malformed percent-encoding"));
        }
    }
    Ok(())
}

/// Percent-decodes a label, name or non-secret value, which must then be UTF-8.
fn decode_text(raw: &str, plus_is_space: bool) -> Result<String, OtpError> {
    check_percent_escapes(raw)?;
    let decoded: Vec<u8> = if plus_is_space && raw.contains('+') {
        percent_decode_str(&raw.replace('+', " ")).collect()
    } else {
        percent_decode_str(raw).collect()
    };
    String::from_utf8(decoded)
        .map_err(|_| OtpError::InvalidUri("invalid UTF-8 after percent-decoding"))
}

/// Percent-decodes then base32-decodes the secret, keeping every copy zeroizing.
fn decode_secret(raw: &str) -> Result<Zeroizing<Vec<u8>>, OtpError> {
    check_percent_escapes(raw)?;
    let mut text = Zeroizing::new(Vec::with_capacity(raw.len()));
    text.extend(percent_decode_str(raw));
    let text = std::str::from_utf8(&text).map_err(|_| OtpError::InvalidBase32("not UTF-8"))?;
    let secret = Zeroizing::new(base32::decode(text)?);
    if secret.is_empty() {
        return Err(OtpError::EmptySecret);
    }
    Ok(secret)
}

/// A percent-decoded run of ASCII digits (no sign, no spaces) that fits in `u64`.
fn parse_number(raw: &str, name: &'static str) -> Result<u64, OtpError> {
    let text = decode_text(raw, false)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OtpError::InvalidParameter(name));
    }
    text.parse().map_err(|_| OtpError::InvalidParameter(name))
}
