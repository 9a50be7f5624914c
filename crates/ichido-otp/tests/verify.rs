//! Edge cases of verification and resync: window boundaries, replays, u64/i64 extremes, wrong lengths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use ichido_otp::{
    resync_hotp, resync_totp, verify_hotp, verify_totp, Algorithm, Code, Digits, HotpVerdict, Key,
    TotpMatch, TotpVerdict,
};

const MAX: u64 = u64::MAX;

fn key() -> Key {
    Key::new(Algorithm::Sha1, b"ichido verify edge-case key!").unwrap()
}

fn code(key: &Key, counter: u64) -> Code {
    key.hotp(counter, Digits::EIGHT)
}

fn hotp(key: &Key, counter: u64, next: u64, ahead: u64, behind: u64) -> HotpVerdict {
    verify_hotp(key, Digits::EIGHT, &code(key, counter), next, ahead, behind)
}

fn totp(
    key: &Key,
    step: u64,
    current: u64,
    offset: i64,
    window: u64,
    last: Option<u64>,
) -> TotpVerdict {
    verify_totp(
        key,
        Digits::EIGHT,
        &code(key, step),
        current,
        offset,
        window,
        last,
    )
}

fn accepted(step: u64, current: u64) -> TotpVerdict {
    TotpVerdict::Accepted(TotpMatch::new(step, current))
}

#[test]
fn hotp_look_ahead_boundary() {
    let k = key();
    assert_eq!(
        hotp(&k, 10, 10, 5, 0),
        HotpVerdict::Accepted { counter: 10 }
    );
    assert_eq!(
        hotp(&k, 15, 10, 5, 0),
        HotpVerdict::Accepted { counter: 15 }
    );
    assert_eq!(hotp(&k, 16, 10, 5, 0), HotpVerdict::Rejected);
    assert_eq!(
        hotp(&k, 10, 10, 0, 0),
        HotpVerdict::Accepted { counter: 10 }
    );
    assert_eq!(hotp(&k, 11, 10, 0, 0), HotpVerdict::Rejected);
}

#[test]
fn hotp_spent_detection() {
    let k = key();
    assert_eq!(hotp(&k, 9, 10, 5, 1), HotpVerdict::Spent { counter: 9 });
    assert_eq!(hotp(&k, 7, 10, 5, 3), HotpVerdict::Spent { counter: 7 });
    assert_eq!(hotp(&k, 6, 10, 5, 3), HotpVerdict::Rejected);
    assert_eq!(hotp(&k, 9, 10, 5, 0), HotpVerdict::Rejected);
    // Look-behind never goes below zero.
    assert_eq!(hotp(&k, 0, 2, 0, MAX), HotpVerdict::Spent { counter: 0 });
    assert_eq!(hotp(&k, 5, 0, 0, MAX), HotpVerdict::Rejected);
}

#[test]
fn hotp_near_u64_max() {
    let k = key();
    assert_eq!(
        hotp(&k, MAX, MAX - 2, 10, 0),
        HotpVerdict::Accepted { counter: MAX }
    );
    assert_eq!(
        hotp(&k, MAX, MAX, MAX, 0),
        HotpVerdict::Accepted { counter: MAX }
    );
    assert_eq!(
        hotp(&k, MAX - 1, MAX, MAX, 1),
        HotpVerdict::Spent { counter: MAX - 1 }
    );
    assert_eq!(hotp(&k, 0, MAX, MAX, 3), HotpVerdict::Rejected);
}

#[test]
fn hotp_digits_mismatch_rejected() {
    let k = key();
    let eight = k.hotp(3, Digits::EIGHT);
    assert_eq!(
        verify_hotp(&k, Digits::SIX, &eight, 3, 0, 0),
        HotpVerdict::Rejected
    );
    let six = k.hotp(3, Digits::SIX);
    assert_eq!(
        verify_hotp(&k, Digits::SIX, &six, 3, 0, 0),
        HotpVerdict::Accepted { counter: 3 }
    );
    assert_eq!(
        verify_hotp(&k, Digits::SEVEN, &six, 3, 0, 0),
        HotpVerdict::Rejected
    );
    // Same value, one more leading zero: still a different code.
    let padded = Code::parse(&format!("0{six}")).unwrap();
    assert_eq!(
        verify_hotp(&k, Digits::SEVEN, &padded, 3, 0, 0),
        HotpVerdict::Rejected
    );
}

#[test]
fn totp_window_and_order() {
    let k = key();
    assert_eq!(totp(&k, 100, 100, 0, 0, None), accepted(100, 100));
    assert_eq!(totp(&k, 101, 100, 0, 0, None), TotpVerdict::Rejected);
    assert_eq!(totp(&k, 99, 100, 0, 1, None), accepted(99, 100));
    assert_eq!(totp(&k, 101, 100, 0, 1, None), accepted(101, 100));
    assert_eq!(totp(&k, 102, 100, 0, 1, None), TotpVerdict::Rejected);
    // The learned offset moves the centre; the reported offset is from current_step.
    assert_eq!(totp(&k, 104, 100, 3, 1, None), accepted(104, 100));
    assert_eq!(
        totp(&k, 104, 100, 3, 1, None),
        TotpVerdict::Accepted(TotpMatch {
            step: 104,
            offset: 4
        })
    );
    assert_eq!(totp(&k, 101, 100, 3, 1, None), TotpVerdict::Rejected);
    assert_eq!(
        totp(&k, 96, 100, -3, 1, None),
        TotpVerdict::Accepted(TotpMatch {
            step: 96,
            offset: -4
        })
    );
}

#[test]
fn totp_step_zero_and_negative_offsets() {
    let k = key();
    assert_eq!(totp(&k, 0, 0, -5, 0, None), accepted(0, 0));
    assert_eq!(totp(&k, 1, 0, -5, 1, None), accepted(1, 0));
    assert_eq!(totp(&k, 2, 0, -5, 1, None), TotpVerdict::Rejected);
    assert_eq!(totp(&k, 0, 0, i64::MIN, 2, None), accepted(0, 0));
    assert_eq!(
        totp(&k, 0, 3, i64::MIN, 0, None),
        TotpVerdict::Accepted(TotpMatch {
            step: 0,
            offset: -3
        })
    );
    assert_eq!(
        totp(&k, 1, 2, -1, 0, None),
        TotpVerdict::Accepted(TotpMatch {
            step: 1,
            offset: -1
        })
    );
}

#[test]
fn totp_near_u64_max() {
    let k = key();
    assert_eq!(totp(&k, MAX, MAX, 0, 3, None), accepted(MAX, MAX));
    assert_eq!(
        totp(&k, MAX, MAX - 1, i64::MAX, 0, None),
        accepted(MAX, MAX - 1)
    );
    assert_eq!(totp(&k, MAX - 3, MAX, 0, 3, None), accepted(MAX - 3, MAX));
    let top = i64::MAX.unsigned_abs();
    let far = totp(&k, top, 0, i64::MAX, 0, None);
    assert_eq!(
        far,
        TotpVerdict::Accepted(TotpMatch {
            step: top,
            offset: i64::MAX
        })
    );
    assert_eq!(
        totp(&k, MAX - 2, MAX, i64::MAX, 2, None),
        accepted(MAX - 2, MAX)
    );
    assert_eq!(
        totp(&k, MAX - 3, MAX, i64::MAX, 2, None),
        TotpVerdict::Rejected
    );
}

#[test]
fn totp_last_accepted_step_excludes() {
    let k = key();
    let at = |step, last| totp(&k, step, 100, 0, 2, last);
    assert_eq!(
        at(100, Some(100)),
        TotpVerdict::Spent(TotpMatch::new(100, 100))
    );
    assert_eq!(
        at(99, Some(100)),
        TotpVerdict::Spent(TotpMatch::new(99, 100))
    );
    assert_eq!(at(101, Some(100)), accepted(101, 100));
    assert_eq!(at(100, Some(99)), accepted(100, 100));
    assert_eq!(
        at(102, Some(MAX)),
        TotpVerdict::Spent(TotpMatch::new(102, 100))
    );
    assert_eq!(at(98, Some(0)), accepted(98, 100));
}

#[test]
fn totp_digits_mismatch_rejected() {
    let k = key();
    let six = k.hotp(50, Digits::SIX);
    assert_eq!(
        verify_totp(&k, Digits::EIGHT, &six, 50, 0, 1, None),
        TotpVerdict::Rejected
    );
    assert_eq!(
        verify_totp(&k, Digits::SIX, &six, 50, 0, 1, None),
        accepted(50, 50)
    );
}

/// Two steps sharing a 6-digit code (found by brute force) show that an Accepted
/// match wins over a Spent one, even when the Spent one is tried first.
#[test]
fn totp_prefers_accepted_over_spent() {
    let k = key();
    let mut seen: HashMap<u32, u64> = HashMap::new();
    let (early, late) = (0..20_000u64)
        .find_map(|s| {
            let v = k.hotp(s, Digits::SIX).value();
            seen.insert(v, s).map(|earlier| (earlier, s))
        })
        .expect("a 6-digit collision within 20000 steps");
    let c = k.hotp(early, Digits::SIX);
    // Centre on the early (spent) step so it is tried first.
    let window = late - early;
    let verdict = verify_totp(&k, Digits::SIX, &c, early, 0, window, Some(early));
    assert_eq!(verdict, accepted(late, early));
    // With both steps spent, the first tried (closest to the centre) is reported.
    let verdict = verify_totp(&k, Digits::SIX, &c, early, 0, window, Some(late));
    assert_eq!(verdict, TotpVerdict::Spent(TotpMatch::new(early, early)));
    // HOTP: the look-ahead match wins over the look-behind one.
    let verdict = verify_hotp(&k, Digits::SIX, &c, early + 1, window, window);
    assert_eq!(verdict, HotpVerdict::Accepted { counter: late });
}

#[test]
fn resync_hotp_bounds() {
    let k = key();
    let pair = |c: u64| (code(&k, c), code(&k, c + 1));
    let (a, b) = pair(500);
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 0, 1000), Some(501));
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 0, 501), Some(501));
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 0, 500), None);
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 500, 1), Some(501));
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 501, 1000), None);
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, 500, 0), None);
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &b, &a, 0, 1000), None);
    assert_eq!(resync_hotp(&k, Digits::SIX, &a, &b, 0, 1000), None);
    let (a, b) = pair(MAX - 1);
    assert_eq!(
        resync_hotp(&k, Digits::EIGHT, &a, &b, MAX - 5, MAX),
        Some(MAX)
    );
    assert_eq!(resync_hotp(&k, Digits::EIGHT, &a, &b, MAX, MAX), None);
}

#[test]
fn resync_totp_bounds() {
    let k = key();
    let pair = |s: u64| (code(&k, s), code(&k, s + 1));
    let (a, b) = pair(995);
    let expect = Some(TotpMatch {
        step: 996,
        offset: -4,
    });
    assert_eq!(
        resync_totp(&k, Digits::EIGHT, &a, &b, 1000, 10, None),
        expect
    );
    assert_eq!(
        resync_totp(&k, Digits::EIGHT, &a, &b, 1000, 5, None),
        expect
    );
    assert_eq!(resync_totp(&k, Digits::EIGHT, &a, &b, 1000, 4, None), None);
    assert_eq!(
        resync_totp(&k, Digits::EIGHT, &a, &b, 1000, 10, Some(995)),
        expect
    );
    assert_eq!(
        resync_totp(&k, Digits::EIGHT, &a, &b, 1000, 10, Some(996)),
        None
    );
    assert_eq!(resync_totp(&k, Digits::EIGHT, &b, &a, 1000, 10, None), None);
    assert_eq!(resync_totp(&k, Digits::SIX, &a, &b, 1000, 10, None), None);
    let (a, b) = pair(0);
    let expect = Some(TotpMatch { step: 1, offset: 1 });
    assert_eq!(resync_totp(&k, Digits::EIGHT, &a, &b, 0, MAX, None), expect);
    let (a, b) = pair(MAX - 1);
    let expect = Some(TotpMatch {
        step: MAX,
        offset: 0,
    });
    assert_eq!(resync_totp(&k, Digits::EIGHT, &a, &b, MAX, 3, None), expect);
    assert_eq!(
        resync_totp(&k, Digits::EIGHT, &a, &b, MAX, 3, Some(MAX)),
        None
    );
}
