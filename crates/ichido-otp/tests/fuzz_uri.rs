//! Stable-toolchain fuzzing of `KeyUri::parse` (and `base32::decode`): arbitrary strings and mutations of the seed corpus in `fuzz/corpus/otpauth_uri`.
//!
//! Properties: nothing panics; every accepted URI re-serializes with `to_uri` and
//! re-parses to an equal value. `ICHIDO_FUZZ_CASES` sets the number of cases per
//! test (default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ichido_otp::base32;
use ichido_otp::uri::KeyUri;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn cases() -> u32 {
    std::env::var("ICHIDO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2000)
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/otpauth_uri")
}

/// The seed corpus as (file name, bytes), sorted by name.
fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = corpus_dir();
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        seeds
    })
}

/// The fuzz property for one input.
fn check(input: &str) -> Result<(), TestCaseError> {
    let _ = base32::decode(input);
    match KeyUri::parse(input) {
        Ok(parsed) => {
            let uri = parsed.to_uri();
            prop_assert_eq!(KeyUri::parse(&uri), Ok(parsed), "{}", uri);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

/// Fragments that steer mutations towards the parser's interesting paths.
const TOKENS: &[&str] = &[
    "%",
    "%3A",
    "%3a",
    "%20",
    "%E9",
    "%C3%A9",
    "%FF",
    "%%",
    ":",
    "?",
    "&",
    "=",
    "#",
    "/",
    "+",
    " ",
    "-",
    "\u{0}",
    "é",
    "\u{FFFD}",
    "otpauth://",
    "totp",
    "hotp",
    "secret=",
    "&secret=MZXW6YTBOI",
    "&counter=",
    "&counter=18446744073709551615",
    "&counter=18446744073709551616",
    "&period=0",
    "&period=30",
    "&digits=6",
    "&digits=9",
    "&digits=8",
    "&issuer=",
    "&issuer=Bank",
    "&algorithm=SHA256",
    "&algorithm=sha-512",
    "&algorithm=MD5",
    "==",
    "======",
    "MZXW6YTBOI",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert {
        at: usize,
        token: usize,
    },
    InsertByte {
        at: usize,
        byte: u8,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Replace {
        at: usize,
        byte: u8,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Splice {
        at: usize,
        seed: usize,
        from: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        3 => (at, 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        2 => (at, any::<u8>()).prop_map(|(at, byte)| Mutation::InsertByte { at, byte }),
        2 => (at, 1usize..12).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        1 => (at, 1usize..40).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => (at, any::<usize>(), any::<usize>(), 1usize..60)
            .prop_map(|(at, seed, from, len)| Mutation::Splice { at, seed, from, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    let seeds = corpus();
    for m in mutations {
        let n = bytes.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match *m {
            Mutation::Insert { at, token } => {
                let p = pos(at);
                bytes.splice(p..p, TOKENS[token].bytes());
            }
            Mutation::InsertByte { at, byte } => bytes.insert(pos(at), byte),
            Mutation::Delete { at, len } => {
                let p = pos(at);
                bytes.drain(p..(p + len).min(n));
            }
            Mutation::Replace { at, byte } => {
                if n > 0 {
                    bytes[at % n] = byte;
                }
            }
            Mutation::Duplicate { at, len } => {
                let p = pos(at);
                let chunk = bytes[p..(p + len).min(n)].to_vec();
                bytes.splice(p..p, chunk);
            }
            Mutation::Splice {
                at,
                seed,
                from,
                len,
            } => {
                let other = &seeds[seed % seeds.len()].1;
                let start = if other.is_empty() {
                    0
                } else {
                    from % other.len()
                };
                let chunk = other[start..(start + len).min(other.len())].to_vec();
                let p = pos(at);
                bytes.splice(p..p, chunk);
            }
        }
    }
    bytes
}

/// Label pieces for [`structured_uri`].
#[rustfmt::skip]
const LABEL_PIECES: &[&str] = &[
    "Bank", "Caf%C3%A9", "Café", " ", "%20", "alice", "a b", "+", "/", "%2F", "%25", "é", "x",
    "%00", "=", "%3A", ":", "alice", "Bank", "bob", "ACME%20Co", "x.y@z", "alice",
];

/// (names, values, percent chance of being present) for [`structured_uri`]; mostly
/// valid values so that many URIs parse.
#[rustfmt::skip]
const PARAMS: &[(&[&str], &[&str], u32)] = &[
    (&["secret", "secret", "SECRET", "s%65cret"],
     &["MZXW6YTBOI", "mzxw 6ytb-oi==", "GEZDGNBVGY3TQOJQ", "JBSWY3DPEHPK3PXP", "MZXW6YTB0I", "%4Dzxw6ytboi"], 95),
    (&["issuer", "Issuer"],
     &["Bank", "Caf%C3%A9+Bank", "%20Bank", "Bank%3A", "+", "%2B", "", "a%3Ab", "%E9", "Bank"], 50),
    (&["algorithm"], &["SHA1", "sha-256", "SHA512", "SHA256", "MD5", ""], 40),
    (&["digits"], &["6", "7", "8", "6", "8", "06", "%36", "9", ""], 40),
    (&["period"], &["30", "1", "60", "18446744073709551615", "30", "0", "-1"], 40),
    (&["counter"], &["0", "7", "18446744073709551615", "42", "18446744073709551616", "+1"], 80),
    (&["image", "x", ""], &["https%3A%2F%2Fx%2Fy.png", "", "%"], 30),
    (&["secret", "digits", "issuer", "x"], &["MZXW6YTBOI", "6", "Bank", ""], 5),
];

/// Schemes and types for [`structured_uri`], mostly valid.
const SCHEMES: &[&str] = &[
    "otpauth", "otpauth", "otpauth", "otpauth", "OTPAUTH", "otpAuth", "otpauth:",
];
const KINDS: &[&str] = &[
    "totp", "hotp", "totp", "hotp", "totp", "hotp", "TOTP", "Hotp", "xotp",
];

/// URIs assembled from plausible pieces in random order, so that many of them
/// parse and the round-trip property is exercised on unusual but accepted inputs.
fn structured_uri() -> impl Strategy<Value = String> {
    let pick = |items: &'static [&'static str]| prop::sample::select(items);
    let label = (
        prop::collection::vec(pick(LABEL_PIECES), 0..3),
        pick(&["", ":", "%3A", ": ", "%3a%20", ":", "::"]),
        prop::collection::vec(pick(LABEL_PIECES), 1..4),
    )
        .prop_map(|(issuer, sep, account)| match issuer.concat() {
            issuer if issuer.is_empty() => account.concat(),
            issuer => format!("{issuer}{sep}{}", account.concat()),
        });
    let params: Vec<_> = PARAMS
        .iter()
        .map(|&(names, values, percent)| {
            let pair = (pick(names), pick(values)).prop_map(|(n, v)| format!("{n}={v}"));
            prop::option::weighted(f64::from(percent) / 100.0, pair)
        })
        .collect();
    let params = params
        .prop_map(|present| present.into_iter().flatten().collect::<Vec<String>>())
        .prop_shuffle();
    (
        pick(SCHEMES),
        pick(KINDS),
        label,
        params,
        pick(&["", "&", "&&"]),
    )
        .prop_map(|(scheme, kind, label, params, tail)| {
            format!("{scheme}://{kind}/{label}?{}{tail}", params.join("&"))
        })
}

#[test]
fn seed_corpus_expectations() {
    let valid = [
        "hotp_basic",
        "hotp_counter_max",
        "totp_all_params",
        "totp_google_example",
        "totp_lenient_forms",
        "totp_sha256_encoded_colon",
        "totp_sha512_seven_digits",
    ];
    let seeds = corpus();
    assert!(seeds.len() >= 15, "seed corpus has {} files", seeds.len());
    for (name, bytes) in seeds {
        let text = String::from_utf8_lossy(bytes);
        let parsed = KeyUri::parse(&text);
        assert_eq!(
            parsed.is_ok(),
            valid.contains(&name.as_str()),
            "{name}: {parsed:?}"
        );
        check(&text).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn fuzz_arbitrary_strings(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn fuzz_uri_shaped_strings(s in "(?i:otpauth)://(totp|hotp|TOTP|x)?/[ -~\u{e9}]{0,30}(\\?[ -~\u{e9}]{0,80})?") {
        check(&s)?;
    }

    #[test]
    fn fuzz_structured_uris(s in structured_uri()) {
        check(&s)?;
    }

    #[test]
    fn fuzz_mutated_seeds(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let seeds = corpus();
        let original = seeds[seed.index(seeds.len())].1.clone();
        let mutated = apply(original, &mutations);
        check(&String::from_utf8_lossy(&mutated))?;
    }
}
