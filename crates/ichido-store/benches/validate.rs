//! One validation through the domain (`Ichido::validate`) on a throwaway
//! SQLite store (`sqlite::memory:`: a temporary file without `fsync`): a right code (accepted, group-committed with its audit
//! record) and a wrong one (counted durably toward the lock). Only the
//! validation is timed; computing codes and keeping the token open are not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ichido_domain::model::{Role, TokenKind};
use ichido_domain::password::PasswordParams;
use ichido_domain::seal::MasterKey;
use ichido_domain::services::{Actor, NewUser};
use ichido_domain::{FixedClock, Ichido, Policy};
use ichido_otp::{Digits, Key};
use ichido_store::{SqliteStore, StoreOptions};
use tokio::runtime::Runtime;

const C: &str = "C-BENCH";
const PASSWORD: &str = "bench-login-pass";

struct Fixture {
    rt: Runtime,
    ichido: Ichido,
    op: Actor,
    token_id: String,
    key: Key,
    /// The next counter whose code is right.
    next: u64,
    /// Wrong codes counted since the last right one (kept below the lock).
    failures: u32,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (ichido, token_id, key) = rt.block_on(async {
            let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
                .await
                .expect("throwaway store");
            let policy = Policy {
                // Wrong codes keep the token open: a right one follows every 50.
                token_lock_threshold: 100,
                ..Policy::default()
            };
            let fast = PasswordParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            };
            let ichido = Ichido::new(
                Arc::new(store),
                Arc::new(FixedClock::new(1_750_000_000)),
                policy,
                MasterKey::generate(),
                fast,
            )
            .expect("ichido");
            let op = Actor::Operator("bench".into());
            ichido
                .create_contract(&op, C, "Bench")
                .await
                .expect("contract");
            let user = NewUser {
                user_id: "taro".into(),
                name: "Bench".into(),
                role: Role::Approver,
                login_password: PASSWORD.to_owned().into(),
                transaction_password: "bench-tx-pass-2".to_owned().into(),
            };
            ichido.create_user(&op, C, user).await.expect("user");
            let reg = ichido
                .register(C, "taro", PASSWORD, TokenKind::Event)
                .await
                .expect("register");
            let key = Key::new(reg.token.algorithm, &reg.secret).expect("key");
            let id = reg.token.token_id.to_string();
            ichido
                .activate(&id, &key.hotp(0, Digits::SIX).to_string())
                .await
                .expect("activate");
            (ichido, id, key)
        });
        Fixture {
            rt,
            ichido,
            op: Actor::Operator("relying-party".into()),
            token_id,
            key,
            next: 1,
            failures: 0,
        }
    }

    fn code(&self, counter: u64) -> String {
        self.key.hotp(counter, Digits::SIX).to_string()
    }

    /// Validates the next right code; returns the time it took.
    fn right(&mut self) -> Duration {
        let code = self.code(self.next);
        self.next += 1;
        let started = Instant::now();
        let r = self
            .rt
            .block_on(self.ichido.validate(&self.op, &self.token_id, &code));
        let took = started.elapsed();
        assert!(r.is_ok(), "a right code was refused: {r:?}");
        self.failures = 0;
        took
    }

    /// A code that matches nothing within the look-ahead and look-behind.
    fn wrong_code(&self) -> String {
        let near: Vec<String> = (self.next.saturating_sub(12)..self.next + 12)
            .map(|c| self.code(c))
            .collect();
        (0..1_000_000u32)
            .map(|v| format!("{v:06}"))
            .find(|c| !near.contains(c))
            .unwrap_or_default()
    }
}

fn validate(c: &mut Criterion) {
    let mut f = Fixture::new();
    let mut g = c.benchmark_group("validate_in_memory_sqlite");
    g.bench_function("right_code", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| f.right()).sum())
    });
    g.bench_function("wrong_code", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut wrong = f.wrong_code();
            for _ in 0..iters {
                if f.failures >= 50 {
                    // Clears the failure count (not timed), then a new wrong code.
                    f.right();
                    wrong = f.wrong_code();
                }
                let started = Instant::now();
                let r =
                    f.rt.block_on(f.ichido.validate(&f.op, &f.token_id, black_box(&wrong)));
                total += started.elapsed();
                f.failures += 1;
                assert!(
                    matches!(r, Err(ichido_domain::DomainError::InvalidOtp)),
                    "a wrong code must answer invalid_otp: {r:?}"
                );
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
