//! Property tests: round trips (base32, Code, KeyUri), verify/resync find what they generated, no panics at u64/i64 extremes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ichido_otp::uri::{KeyUri, OtpKind, DEFAULT_PERIOD};
use ichido_otp::{
    base32, resync_hotp, resync_totp, time_step, verify_hotp, verify_totp, Algorithm, Code, Digits,
    HotpVerdict, Key, TotpMatch, TotpVerdict,
};
use proptest::prelude::*;
use zeroize::Zeroizing;

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Sha1),
        Just(Algorithm::Sha256),
        Just(Algorithm::Sha512)
    ]
}

fn digits() -> impl Strategy<Value = Digits> {
    (6u8..=8).prop_map(|n| Digits::new(n).unwrap())
}

fn key() -> impl Strategy<Value = Key> {
    (algorithm(), prop::collection::vec(any::<u8>(), 1..80))
        .prop_map(|(alg, secret)| Key::new(alg, &secret).unwrap())
}

/// Any u64, with the edges well represented.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..64,
        (0u64..64).prop_map(|d| u64::MAX - d),
        (0u64..64).prop_map(|d| (1u64 << 63).wrapping_add(d).wrapping_sub(32)),
    ]
}

fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -64i64..64, Just(i64::MIN), Just(i64::MAX)]
}

/// A `KeyUri` of the kind `parse` produces (see the invariant in `uri`'s docs).
fn key_uri() -> impl Strategy<Value = KeyUri> {
    let issuer = prop::option::of("[^:]{1,20}");
    let account = "[^ ][^\u{0}]{0,20}";
    (
        prop_oneof![Just(OtpKind::Totp), Just(OtpKind::Hotp)],
        issuer,
        account,
        prop::collection::vec(any::<u8>(), 1..70),
        algorithm(),
        digits(),
        1u64..=u64::MAX,
        any::<u64>(),
    )
        .prop_filter(
            "an account without issuer must not contain ':'",
            |(_, i, a, ..)| i.is_some() || !a.contains(':'),
        )
        .prop_map(
            |(kind, issuer, account, secret, algorithm, digits, period, counter)| {
                let hotp = kind == OtpKind::Hotp;
                KeyUri {
                    kind,
                    issuer,
                    account,
                    secret: Zeroizing::new(secret),
                    algorithm,
                    digits,
                    period: if hotp { DEFAULT_PERIOD } else { period },
                    counter: hotp.then_some(counter),
                }
            },
        )
}

proptest! {
    #[test]
    fn base32_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let coded = base32::encode(&bytes);
        prop_assert!(!coded.contains('='));
        prop_assert_eq!(&base32::decode(&coded).unwrap(), &bytes);
        prop_assert_eq!(&base32::decode(&coded.to_lowercase()).unwrap(), &bytes);
        let grouped: String = coded.chars().enumerate()
            .flat_map(|(i, c)| (i % 4 == 0 && i > 0).then_some(' ').into_iter().chain([c]))
            .collect();
        prop_assert_eq!(&base32::decode(&grouped).unwrap(), &bytes);
        let padded = format!("{coded}{}", "=".repeat((8 - coded.len() % 8) % 8));
        prop_assert_eq!(&base32::decode(&padded).unwrap(), &bytes);
    }

    #[test]
    fn base32_decode_never_panics(s in any::<String>()) {
        let _ = base32::decode(&s);
    }

    #[test]
    fn code_display_parse_round_trip(text in "[0-9]{6,8}") {
        let code = Code::parse(&text).unwrap();
        prop_assert_eq!(code.to_string(), text.clone());
        prop_assert_eq!(usize::from(code.digits().get()), text.len());
        prop_assert_eq!(Code::parse(&code.to_string()).unwrap(), code);
    }

    #[test]
    fn code_parse_never_panics(s in any::<String>()) {
        if let Ok(code) = Code::parse(&s) {
            prop_assert_eq!(code.to_string(), s);
        }
    }

    #[test]
    fn key_uri_round_trip(k in key_uri()) {
        let uri = k.to_uri();
        prop_assert_eq!(KeyUri::parse(&uri), Ok(k), "{}", uri);
    }

    #[test]
    fn verify_hotp_finds_generated_counter(
        k in key(), d in digits(), next in edgy_u64(), ahead in 0u64..20, pick in 0u64..20,
    ) {
        let target = next.saturating_add(pick.min(ahead));
        let code = k.hotp(target, d);
        match verify_hotp(&k, d, &code, next, ahead, 0) {
            // An earlier counter may share the code by chance (probability ~ ahead/10^digits).
            HotpVerdict::Accepted { counter } => {
                prop_assert!(counter == target || (counter >= next && counter < target && k.hotp(counter, d) == code));
            }
            other => prop_assert!(false, "{other:?}"),
        }
        // Seen again from the counter after it, the same code is spent.
        if let Some(after) = target.checked_add(1) {
            let again = verify_hotp(&k, d, &code, after, 0, pick + 1);
            let ok = match again {
                HotpVerdict::Spent { counter } => counter <= target,
                HotpVerdict::Accepted { counter } => k.hotp(counter, d) == code, // chance collision
                HotpVerdict::Rejected => false,
            };
            prop_assert!(ok, "{:?}", again);
        }
    }

    #[test]
    fn verify_totp_stays_in_window(
        k in key(), d in digits(), current in edgy_u64(), offset in edgy_i64(),
        window in 0u64..6, delta in -8i64..8, last in prop::option::of(edgy_u64()),
    ) {
        let centre = current.saturating_add_signed(offset);
        let code = k.hotp(centre.saturating_add_signed(delta), d);
        let (lo, hi) = (centre.saturating_sub(window), centre.saturating_add(window));
        match verify_totp(&k, d, &code, current, offset, window, last) {
            TotpVerdict::Accepted(m) => {
                prop_assert!((lo..=hi).contains(&m.step));
                prop_assert_eq!(m, TotpMatch::new(m.step, current));
                prop_assert!(last.is_none_or(|l| m.step > l));
                prop_assert!(k.hotp(m.step, d).ct_eq(&code));
            }
            TotpVerdict::Spent(m) => {
                prop_assert!((lo..=hi).contains(&m.step));
                prop_assert!(last.is_some_and(|l| m.step <= l));
                prop_assert!(k.hotp(m.step, d).ct_eq(&code));
            }
            TotpVerdict::Rejected => {
                // The generating step is either outside the window or would have matched.
                let s = centre.saturating_add_signed(delta);
                prop_assert!(!(lo..=hi).contains(&s));
            }
        }
    }

    #[test]
    fn no_panic_on_extreme_inputs(
        k in key(), d in digits(), code in "[0-9]{6,8}", a in edgy_u64(), b in edgy_u64(),
        offset in edgy_i64(), small in 0u64..16, last in prop::option::of(edgy_u64()),
    ) {
        let code = Code::parse(&code).unwrap();
        let _ = verify_hotp(&k, d, &code, a, small, small);
        let _ = verify_totp(&k, d, &code, a, offset, small, last);
        let _ = resync_hotp(&k, d, &code, &code, a, small);
        let _ = resync_totp(&k, d, &code, &code, a, small, last);
        let _ = k.totp(a, b, d);
        prop_assert!(time_step(a, b) <= a);
    }

    #[test]
    fn resync_hotp_finds_generated_pair(
        k in key(), d in digits(), from in edgy_u64(), pick in 0u64..40, extra in 1u64..40,
    ) {
        let first = from.saturating_add(pick);
        prop_assume!(first < u64::MAX);
        let (c1, c2) = (k.hotp(first, d), k.hotp(first + 1, d));
        let found = resync_hotp(&k, d, &c1, &c2, from, pick + extra);
        prop_assert_eq!(found, Some(first + 1));
    }

    #[test]
    fn resync_totp_finds_generated_pair(
        k in key(), d in digits(), current in edgy_u64(), delta in -30i64..30,
        search in 30u64..40, last in prop::option::of(0u64..1000),
    ) {
        let first = current.saturating_add_signed(delta);
        prop_assume!(first < u64::MAX);
        let (c1, c2) = (k.hotp(first, d), k.hotp(first + 1, d));
        let found = resync_totp(&k, d, &c1, &c2, current, search, last);
        if last.is_some_and(|l| first < l) {
            prop_assert!(found.is_none_or(|m| m.step > last.unwrap_or(0)));
        } else {
            prop_assert_eq!(found, Some(TotpMatch::new(first + 1, current)));
        }
    }
}
