//! Criterion benches: code generation per hash, and verify/resync cost against the bare-HMAC floor (goal: window-10 verify <= 1.1x 11 bare HMACs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use ichido_otp::{
    resync_hotp, verify_hotp, verify_totp, Algorithm, Code, Digits, HotpVerdict, Key, TotpVerdict,
};
use sha1::Sha1;

const SECRET: &[u8] = b"12345678901234567890";

/// A 6-digit code that matches no counter in `counters`.
fn wrong_code(key: &Key, counters: std::ops::RangeInclusive<u64>) -> Code {
    (0..1_000_000u32)
        .map(|v| Code::parse(&format!("{v:06}")).unwrap())
        .find(|c| counters.clone().all(|n| !key.hotp(n, Digits::SIX).ct_eq(c)))
        .unwrap()
}

fn generation(c: &mut Criterion) {
    for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
        let key = Key::new(algorithm, SECRET).unwrap();
        c.bench_function(&format!("hotp {algorithm}"), |b| {
            b.iter(|| key.hotp(black_box(1_234_567), Digits::SIX))
        });
    }
}

fn verification(c: &mut Criterion) {
    let schedule = <Hmac<Sha1> as hmac::digest::KeyInit>::new_from_slice(SECRET).unwrap();
    c.bench_function("bare HMAC-SHA1 x11", |b| {
        b.iter(|| {
            for counter in 1000u64..=1010 {
                let mut mac = schedule.clone();
                mac.update(&black_box(counter).to_be_bytes());
                black_box(mac.finalize().into_bytes());
            }
        })
    });

    let key = Key::new(Algorithm::Sha1, SECRET).unwrap();
    let wrong = wrong_code(&key, 990..=1010);
    assert_eq!(
        verify_hotp(&key, Digits::SIX, &wrong, 1000, 10, 0),
        HotpVerdict::Rejected
    );
    c.bench_function("verify_hotp window 10, wrong code", |b| {
        b.iter(|| verify_hotp(&key, Digits::SIX, black_box(&wrong), black_box(1000), 10, 0))
    });

    let verdict = verify_totp(&key, Digits::SIX, &wrong, 1000, 0, 1, None);
    assert_eq!(verdict, TotpVerdict::Rejected);
    c.bench_function("verify_totp window 1, wrong code", |b| {
        b.iter(|| {
            verify_totp(
                &key,
                Digits::SIX,
                black_box(&wrong),
                black_box(1000),
                0,
                1,
                None,
            )
        })
    });
}

fn resync(c: &mut Criterion) {
    let key = Key::new(Algorithm::Sha1, SECRET).unwrap();
    // A pair that never occurs, so the whole window is scanned (1001 HMACs).
    let (a, b) = (key.hotp(5000, Digits::SIX), key.hotp(7000, Digits::SIX));
    assert_eq!(resync_hotp(&key, Digits::SIX, &a, &b, 0, 1000), None);
    c.bench_function("resync_hotp search 1000", |bench| {
        bench.iter(|| resync_hotp(&key, Digits::SIX, black_box(&a), black_box(&b), 0, 1000))
    });
}

criterion_group!(benches, generation, verification, resync);
criterion_main!(benches);
