//! Cross-check against the reference `oathtool` (OATH Toolkit, Debian package `oathtool`) for random keys, counters and times.
//!
//! If the program is missing, the test fails when `CI` is set and otherwise prints
//! a loud notice and passes (install it with `apt-get install -y oathtool`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use ichido_otp::{
    time_step, verify_hotp, verify_totp, Algorithm, Code, Digits, HotpVerdict, Key, TotpMatch,
    TotpVerdict,
};

/// Deterministic generator (SplitMix64) so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random secret of `min .. min + spread` bytes.
    fn secret(&mut self, min: u64, spread: u64) -> Vec<u8> {
        let len = min + self.below(spread);
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }

    fn digits(&mut self) -> Digits {
        Digits::new(6 + u8::try_from(self.below(3)).unwrap()).unwrap()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `oathtool` can run here; the CI policy for a missing program.
fn oathtool_available() -> bool {
    match Command::new("oathtool").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        other => {
            let why = match other {
                Ok(out) => format!("exited with {}", out.status),
                Err(e) => e.to_string(),
            };
            if std::env::var_os("CI").is_some() {
                panic!("oathtool is required in CI but cannot run ({why}); install it with `apt-get install -y oathtool`");
            }
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!! SKIPPED: oathtool cross-check — oathtool cannot run ({why}).");
            eprintln!("!! Install it with `apt-get install -y oathtool` to run this test.");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            false
        }
    }
}

/// Runs oathtool and returns its output lines (one code per line).
fn oathtool(args: &[String]) -> Vec<String> {
    let out = Command::new("oathtool").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "oathtool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hotp_matches_oathtool() {
    if !oathtool_available() {
        return;
    }
    let mut rng = Rng(0x1C41_D0F7_4A11_0001);
    for round in 0..16 {
        let secret = rng.secret(10, 60);
        let digits = rng.digits();
        let counter = match round % 4 {
            0 => rng.below(1000),
            1 => rng.below(1 << 40),
            2 => u64::MAX - 10,
            _ => rng.next() >> 1,
        };
        let args = [
            "--hotp".to_owned(),
            format!("--digits={}", digits.get()),
            format!("--counter={counter}"),
            "--window=10".to_owned(),
            hex(&secret),
        ];
        let expected = oathtool(&args);
        assert_eq!(expected.len(), 11, "{args:?}");
        let key = Key::new(Algorithm::Sha1, &secret).unwrap();
        for (i, want) in (0u64..).zip(&expected) {
            let got = key.hotp(counter + i, digits);
            assert_eq!(&got.to_string(), want, "{args:?} (+{i})");
            let code = Code::parse(want).unwrap();
            let verdict = verify_hotp(&key, digits, &code, counter, 10, 0);
            // The first counter with this code (earlier ones may collide by chance).
            assert!(
                matches!(verdict, HotpVerdict::Accepted { counter: c } if c <= counter + i),
                "{args:?} (+{i}): {verdict:?}"
            );
        }
    }
}

#[test]
fn totp_matches_oathtool() {
    if !oathtool_available() {
        return;
    }
    let mut rng = Rng(0x1C41_D0F7_4A11_0002);
    let algorithms = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512];
    for round in 0..18 {
        let algorithm = algorithms[round % 3];
        let secret = rng.secret(16, 64);
        let digits = rng.digits();
        let period = [30, 60, 45, 1][round % 4];
        let time = match round % 3 {
            0 => 1_700_000_000 + rng.below(1 << 30),
            1 => rng.below(1 << 35),
            _ => rng.below(100),
        };
        let args = [
            format!("--totp={}", algorithm.as_str()),
            format!("--digits={}", digits.get()),
            format!("--time-step-size={period}s"),
            format!("--now=@{time}"),
            "--window=2".to_owned(),
            hex(&secret),
        ];
        let expected = oathtool(&args);
        assert_eq!(expected.len(), 3, "{args:?}");
        let key = Key::new(algorithm, &secret).unwrap();
        let step = time_step(time, period);
        assert_eq!(
            key.totp(time, period, digits).to_string(),
            expected[0],
            "{args:?}"
        );
        for (i, want) in (0u64..).zip(&expected) {
            assert_eq!(
                &key.hotp(step + i, digits).to_string(),
                want,
                "{args:?} (+{i})"
            );
        }
        let code = Code::parse(&expected[1]).unwrap();
        let verdict = verify_totp(&key, digits, &code, step, 0, 1, None);
        let expected_match = TotpMatch {
            step: step + 1,
            offset: 1,
        };
        assert!(
            verdict == TotpVerdict::Accepted(expected_match)
                || matches!(verdict, TotpVerdict::Accepted(m) if key.hotp(m.step, digits) == code),
            "{args:?}: {verdict:?}"
        );
    }
}
