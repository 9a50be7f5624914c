//! Key URI examples: what `KeyUri::parse` accepts, what it rejects (and why), and the canonical `to_uri` form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ichido_otp::uri::{KeyUri, OtpKind, DEFAULT_PERIOD, MAX_URI_LEN};
use ichido_otp::{base32, Algorithm, Digits, OtpError};
use zeroize::Zeroizing;

fn parse(s: &str) -> KeyUri {
    KeyUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> OtpError {
    KeyUri::parse(s).expect_err(s)
}

#[test]
fn google_example() {
    let k = parse("otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example");
    assert_eq!(k.kind, OtpKind::Totp);
    assert_eq!(k.issuer.as_deref(), Some("Example"));
    assert_eq!(k.account, "alice@google.com");
    assert_eq!(*k.secret, base32::decode("JBSWY3DPEHPK3PXP").unwrap());
    assert_eq!(
        (k.algorithm, k.digits, k.period, k.counter),
        (Algorithm::Sha1, Digits::SIX, 30, None)
    );
    assert_eq!(
        k.to_uri(),
        "otpauth://totp/Example:alice%40google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example&algorithm=SHA1&digits=6&period=30"
    );
}

#[test]
fn every_parameter_is_honoured() {
    let k = parse("otpauth://totp/ACME%20Co:john.doe?secret=MZXW6YTBOI&issuer=ACME%20Co&algorithm=SHA512&digits=8&period=60");
    assert_eq!(k.issuer.as_deref(), Some("ACME Co"));
    assert_eq!(k.account, "john.doe");
    assert_eq!(*k.secret, b"foobar");
    assert_eq!(
        (k.algorithm, k.digits, k.period),
        (Algorithm::Sha512, Digits::EIGHT, 60)
    );
    assert_eq!(
        k.to_uri(),
        "otpauth://totp/ACME%20Co:john.doe?secret=MZXW6YTBOI&issuer=ACME%20Co&algorithm=SHA512&digits=8&period=60"
    );
    let h =
        parse("otpauth://hotp/Bank:bob?secret=MZXW6YTBOI&counter=42&digits=7&algorithm=sha-256");
    assert_eq!(h.kind, OtpKind::Hotp);
    assert_eq!(
        (h.counter, h.digits, h.algorithm),
        (Some(42), Digits::SEVEN, Algorithm::Sha256)
    );
    assert_eq!(h.to_uri(), "otpauth://hotp/Bank:bob?secret=MZXW6YTBOI&issuer=Bank&algorithm=SHA256&digits=7&counter=42");
    assert_eq!(h.key().unwrap().algorithm(), Algorithm::Sha256);
}

#[test]
fn label_forms() {
    let k = parse("otpauth://totp/alice?secret=MZXW6YTBOI");
    assert_eq!((k.issuer, k.account.as_str()), (None, "alice"));
    let k = parse("otpauth://totp/Bank%3A%20%20alice?secret=MZXW6YTBOI");
    assert_eq!(
        (k.issuer.as_deref(), k.account.as_str()),
        (Some("Bank"), "alice")
    );
    let k = parse("otpauth://totp/alice?secret=MZXW6YTBOI&issuer=Caf%C3%A9+Bank");
    assert_eq!(
        (k.issuer.as_deref(), k.account.as_str()),
        (Some("Café Bank"), "alice")
    );
    let k = parse("otpauth://totp/Bank:a:b%2Fc?secret=MZXW6YTBOI&issuer=Bank");
    assert_eq!(k.account, "a:b/c");
    // Leading spaces of the account are dropped with or without a label issuer, so
    // the value reads the same after `to_uri` moves the issuer into the label.
    let k = parse("otpauth://totp/%20alice?secret=MZXW6YTBOI&issuer=Bank");
    assert_eq!(
        (k.issuer.as_deref(), k.account.as_str()),
        (Some("Bank"), "alice")
    );
    assert_eq!(KeyUri::parse(&k.to_uri()), Ok(k));
    let k = parse("otpauth://totp/alice?secret=MZXW6YTBOI&issuer=");
    assert_eq!((k.issuer, k.account.as_str()), (None, "alice"));
}

#[test]
fn lenient_but_unambiguous_forms() {
    let k =
        parse("OTPAUTH://TOTP/alice?SECRET=mzxw%206ytb-oi======&image=https%3A%2F%2Fx%2Fy.png&&");
    assert_eq!(*k.secret, b"foobar");
    let k = parse("otpauth://hotp/a?secret=MZXW6YTBOI&counter=18446744073709551615&period=15");
    assert_eq!((k.counter, k.period), (Some(u64::MAX), DEFAULT_PERIOD));
    let k = parse("otpauth://totp/a?secret=MZXW6YTBOI&counter=7&digits=%36");
    assert_eq!((k.counter, k.digits), (None, Digits::SIX));
}

#[test]
fn rejections() {
    use OtpError::*;
    let s = "secret=MZXW6YTBOI";
    let cases: Vec<(String, OtpError)> = vec![
        (
            format!("https://totp/a?{s}"),
            InvalidUri("scheme must be otpauth://"),
        ),
        (
            format!("otpauth:/totp/a?{s}"),
            InvalidUri("scheme must be otpauth://"),
        ),
        (
            format!("otpauth://motp/a?{s}"),
            InvalidUri("type must be totp or hotp"),
        ),
        (format!("otpauth://totp?{s}"), InvalidUri("missing label")),
        (
            format!("otpauth://totp/?{s}"),
            InvalidUri("missing account name"),
        ),
        (
            format!("otpauth://totp/Bank:?{s}"),
            InvalidUri("missing account name"),
        ),
        (
            format!("otpauth://totp/a?{s}#x"),
            InvalidUri("fragment not allowed"),
        ),
        ("otpauth://totp/a".to_owned(), MissingParameter("secret")),
        ("otpauth://totp/a?secret=".to_owned(), EmptySecret),
        (
            "otpauth://totp/a?secret=MZXW6YTB0I".to_owned(),
            InvalidBase32("invalid character"),
        ),
        (format!("otpauth://hotp/a?{s}"), MissingParameter("counter")),
        (
            format!("otpauth://hotp/a?{s}&counter="),
            InvalidParameter("counter"),
        ),
        (
            format!("otpauth://hotp/a?{s}&counter=-1"),
            InvalidParameter("counter"),
        ),
        (
            format!("otpauth://hotp/a?{s}&counter=+1"),
            InvalidParameter("counter"),
        ),
        (
            format!("otpauth://hotp/a?{s}&counter=18446744073709551616"),
            InvalidParameter("counter"),
        ),
        (
            format!("otpauth://totp/a?{s}&period=0"),
            InvalidParameter("period"),
        ),
        (
            format!("otpauth://totp/a?{s}&period=%2030"),
            InvalidParameter("period"),
        ),
        (format!("otpauth://totp/a?{s}&digits=5"), InvalidDigits),
        (format!("otpauth://totp/a?{s}&digits=9"), InvalidDigits),
        (format!("otpauth://totp/a?{s}&digits=262"), InvalidDigits),
        (
            format!("otpauth://totp/a?{s}&digits=six"),
            InvalidParameter("digits"),
        ),
        (
            format!("otpauth://totp/a?{s}&algorithm=MD5"),
            UnsupportedAlgorithm,
        ),
        (
            format!("otpauth://totp/a?{s}&secret=JBSWY3DPEHPK3PXP"),
            DuplicateParameter("secret"),
        ),
        (
            format!("otpauth://totp/a?{s}&Digits=6&digits=6"),
            DuplicateParameter("digits"),
        ),
        (
            format!("otpauth://totp/a?{s}&s%65cret=MZXW6YTBOI"),
            DuplicateParameter("secret"),
        ),
        (
            format!("otpauth://totp/a?{s}&image=x&image=y"),
            DuplicateParameter("(unrecognised)"),
        ),
        (
            format!("otpauth://totp/Bank:a?{s}&issuer=Other"),
            IssuerMismatch,
        ),
        (
            format!("otpauth://totp/a%ZZ?{s}"),
            InvalidUri("malformed percent-encoding"),
        ),
        (
            format!("otpauth://totp/a%4?{s}"),
            InvalidUri("malformed percent-encoding"),
        ),
        (
            format!("otpauth://totp/a%E9?{s}"),
            InvalidUri("invalid UTF-8 after percent-decoding"),
        ),
        (
            format!("otpauth://totp/a?{s}&issuer=%C3"),
            InvalidUri("invalid UTF-8 after percent-decoding"),
        ),
        (
            format!("otpauth://totp/a?{s}&x={}", "y".repeat(MAX_URI_LEN)),
            InvalidUri("too long"),
        ),
    ];
    for (uri, expected) in cases {
        assert_eq!(KeyUri::parse(&uri), Err(expected), "{uri}");
    }
    assert_eq!(
        err("otpauth://totp/a?secret=%FF"),
        InvalidBase32("not UTF-8")
    );
}

#[test]
fn errors_and_debug_never_show_the_secret() {
    let uri = "otpauth://totp/Bank:alice?secret=KRSXG5CTMVRXEZLU&issuer=Other";
    assert!(!err(uri).to_string().contains("KRSX"));
    let bad = "otpauth://totp/Bank:alice?secret=KRSXG5CTMVRXEZL!";
    assert!(!err(bad).to_string().contains("KRSX"));
    let k = parse("otpauth://totp/Bank:alice?secret=KRSXG5CTMVRXEZLU");
    let dbg = format!("{k:?}");
    assert!(dbg.contains("redacted") && dbg.contains("alice"), "{dbg}");
    assert!(!dbg.contains("KRSX") && !dbg.contains("84, 101"), "{dbg}");
}

#[test]
fn to_uri_encodes_special_characters() {
    let k = KeyUri {
        kind: OtpKind::Hotp,
        issuer: Some("Bänk & Co+".to_owned()),
        account: "a b:c?d#e%f".to_owned(),
        secret: Zeroizing::new(vec![1, 2, 3, 4, 5]),
        algorithm: Algorithm::Sha1,
        digits: Digits::SIX,
        period: DEFAULT_PERIOD,
        counter: Some(9),
    };
    let uri = k.to_uri();
    assert_eq!(
        uri,
        "otpauth://hotp/B%C3%A4nk%20%26%20Co%2B:a%20b%3Ac%3Fd%23e%25f?secret=AEBAGBAF&issuer=B%C3%A4nk%20%26%20Co%2B&algorithm=SHA1&digits=6&counter=9"
    );
    assert_eq!(KeyUri::parse(&uri), Ok(k.clone()));
    // An issuer containing ':' cannot sit in the label: it is only a parameter.
    let colon = KeyUri {
        issuer: Some("A:B".to_owned()),
        account: "x".to_owned(),
        ..k
    };
    assert!(colon.to_uri().starts_with("otpauth://hotp/x?"));
    assert_eq!(KeyUri::parse(&colon.to_uri()), Ok(colon));
}
