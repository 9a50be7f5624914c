//! Published test vectors: RFC 4226 Appendix D (HOTP) and RFC 6238 Appendix B (TOTP, all three hashes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ichido_otp::{time_step, verify_hotp, Algorithm, Code, Digits, HotpVerdict, Key};

const RFC4226_SECRET: &[u8] = b"12345678901234567890";

/// RFC 4226 Appendix D: (counter, truncated decimal, HOTP value).
const RFC4226_TABLE: [(u64, u32, &str); 10] = [
    (0, 1_284_755_224, "755224"),
    (1, 1_094_287_082, "287082"),
    (2, 137_359_152, "359152"),
    (3, 1_726_969_429, "969429"),
    (4, 1_640_338_314, "338314"),
    (5, 868_254_676, "254676"),
    (6, 1_918_287_922, "287922"),
    (7, 82_162_583, "162583"),
    (8, 673_399_871, "399871"),
    (9, 645_520_489, "520489"),
];

/// RFC 6238 Appendix B: (unix time, SHA1, SHA256, SHA512), 8 digits, period 30.
const RFC6238_TABLE: [(u64, &str, &str, &str); 6] = [
    (59, "94287082", "46119246", "90693936"),
    (1_111_111_109, "07081804", "68084774", "25091201"),
    (1_111_111_111, "14050471", "67062674", "99943326"),
    (1_234_567_890, "89005924", "91819424", "93441116"),
    (2_000_000_000, "69279037", "90698825", "38618901"),
    (20_000_000_000, "65353130", "77737706", "47863826"),
];

/// RFC 6238 Appendix B uses a seed of the hash's output length for each algorithm.
fn rfc6238_key(algorithm: Algorithm) -> Key {
    let seed: &[u8] = match algorithm {
        Algorithm::Sha1 => b"12345678901234567890",
        Algorithm::Sha256 => b"12345678901234567890123456789012",
        Algorithm::Sha512 => b"1234567890123456789012345678901234567890123456789012345678901234",
    };
    Key::new(algorithm, seed).unwrap()
}

#[test]
fn rfc4226_appendix_d() {
    let key = Key::new(Algorithm::Sha1, RFC4226_SECRET).unwrap();
    for (counter, truncated, expected) in RFC4226_TABLE {
        assert_eq!(key.hotp_truncated(counter), truncated, "counter {counter}");
        let code = key.hotp(counter, Digits::SIX);
        assert_eq!(code.to_string(), expected, "counter {counter}");
        assert_eq!(code, Code::parse(expected).unwrap());
    }
}

#[test]
fn rfc4226_appendix_d_verifies_in_sequence() {
    let key = Key::new(Algorithm::Sha1, RFC4226_SECRET).unwrap();
    let mut next = 0;
    for (counter, _, expected) in RFC4226_TABLE {
        let code = Code::parse(expected).unwrap();
        let verdict = verify_hotp(&key, Digits::SIX, &code, next, 0, 3);
        assert_eq!(verdict, HotpVerdict::Accepted { counter });
        next = counter + 1;
        let replay = verify_hotp(&key, Digits::SIX, &code, next, 2, 3);
        assert_eq!(replay, HotpVerdict::Spent { counter });
    }
}

#[test]
fn rfc6238_appendix_b() {
    for (time, sha1, sha256, sha512) in RFC6238_TABLE {
        for (algorithm, expected) in [
            (Algorithm::Sha1, sha1),
            (Algorithm::Sha256, sha256),
            (Algorithm::Sha512, sha512),
        ] {
            let key = rfc6238_key(algorithm);
            let code = key.totp(time, 30, Digits::EIGHT);
            assert_eq!(code.to_string(), expected, "{algorithm} at {time}");
            assert_eq!(
                key.hotp(time_step(time, 30), Digits::EIGHT),
                code,
                "{algorithm} at {time}"
            );
        }
    }
}

#[test]
fn rfc6238_time_steps() {
    // The "Value of T (hex)" column of Appendix B.
    let steps = [
        (59, 0x1),
        (1_111_111_109, 0x23523EC),
        (1_111_111_111, 0x23523ED),
        (1_234_567_890, 0x273EF07),
        (2_000_000_000, 0x3F940AA),
        (20_000_000_000, 0x27BC86AA),
    ];
    for (time, step) in steps {
        assert_eq!(time_step(time, 30), step);
    }
}
