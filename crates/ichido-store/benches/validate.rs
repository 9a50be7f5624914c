//! One validation through the domain (`Ichido::validate`) on a throwaway
//! SQLite store (`sqlite::memory:`: a temporary file without `fsync`): a right code (accepted, group-committed with its audit
//! record) and a wrong one (counted durably toward the lock). Only the
//! validation is timed; computing codes and keeping the token open are not.
//!
//! `validate_cold_tokens` validates right codes of a million imported
//! tokens in turn (`ICHIDO_BENCH_COLD_TOKENS` sets another number): far
//! more than the domain's token and key caches hold, so nearly every
//! validation takes the cold path, as with a million customers: the writer
//! reads the token's row, opens its key and checks the code there. Its
//! ratio to `validate_in_memory_sqlite/right_code` of the same run is the
//! store's and the domain's part of a million tokens' cost, without the
//! HTTP stack and the machine's pace between two runs. Setting it up
//! imports the tokens (a minute or so); it is built only when its
//! benchmark is selected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ichido_domain::model::{Role, TokenKind};
use ichido_domain::password::PasswordParams;
use ichido_domain::password::Passwords;
use ichido_domain::seal::MasterKey;
use ichido_domain::services::{Actor, ImportEntry, ImportToken, NewUser, MAX_IMPORT_ENTRIES};
use ichido_domain::{FixedClock, Ichido, Policy};
use ichido_otp::{base32, Algorithm, Digits, Key};
use ichido_store::{SqliteStore, StoreOptions};
use tokio::runtime::Runtime;

const C: &str = "C-BENCH";
const PASSWORD: &str = "bench-login-pass";
const TX_PASSWORD: &str = "bench-tx-pass-2";

/// A runtime of one thread for a fixture's calls.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The domain on a throwaway SQLite store with the contract `C`, and the
/// operator who made it.
async fn throwaway(policy: Policy, passwords: PasswordParams) -> (Ichido, Actor) {
    let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("throwaway store");
    let ichido = Ichido::new(
        Arc::new(store),
        Arc::new(FixedClock::new(1_750_000_000)),
        policy,
        MasterKey::generate(),
        passwords,
    )
    .expect("ichido");
    let op = Actor::Operator("bench".into());
    ichido
        .create_contract(&op, C, "Bench")
        .await
        .expect("contract");
    (ichido, op)
}

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
        let rt = runtime();
        let (ichido, token_id, key) = rt.block_on(async {
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
            let (ichido, op) = throwaway(policy, fast).await;
            let user = NewUser {
                user_id: "taro".into(),
                name: "Bench".into(),
                role: Role::Approver,
                login_password: PASSWORD.to_owned().into(),
                transaction_password: TX_PASSWORD.to_owned().into(),
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

/// Tokens of the cold benchmark by default: as the million.
const COLD_TOKENS: usize = 1_000_000;
/// Entries per import call (the domain's maximum).
const IMPORT_BATCH: usize = MAX_IMPORT_ENTRIES;

/// Many imported tokens, validated in turn.
struct Cold {
    rt: Runtime,
    ichido: Ichido,
    op: Actor,
    /// Token ID, secret, next counter.
    tokens: Vec<(String, [u8; 20], u64)>,
    at: usize,
}

impl Cold {
    fn new(count: usize) -> Cold {
        let rt = runtime();
        let started = Instant::now();
        let (ichido, tokens) = rt.block_on(async {
            let (ichido, op) = throwaway(Policy::default(), PasswordParams::default()).await;
            // One pair of hashes for every user: the import checks their
            // form, and no one logs in here.
            let passwords = Passwords::new(PasswordParams::default()).expect("params");
            let login = passwords.hash("login_password", PASSWORD).expect("hash");
            let transaction = passwords
                .hash("transaction_password", TX_PASSWORD)
                .expect("hash");
            let mut tokens = Vec::with_capacity(count);
            for first in (0..count).step_by(IMPORT_BATCH) {
                let secrets: Vec<[u8; 20]> = (first..count.min(first + IMPORT_BATCH))
                    .map(|_| rand::random())
                    .collect();
                let entries = secrets
                    .iter()
                    .enumerate()
                    .map(|(i, secret)| ImportEntry {
                        contract_no: C.into(),
                        user_id: format!("u{:07}", first + i),
                        name: "Bench".into(),
                        role: "approver".into(),
                        login_password_hash: login.clone(),
                        transaction_password_hash: transaction.clone(),
                        token: Some(ImportToken {
                            kind: "event".into(),
                            secret: base32::encode(secret).into(),
                            algorithm: None,
                            digits: None,
                            period: None,
                            counter: None,
                        }),
                    })
                    .collect();
                let imported = ichido.import(&op, entries).await.expect("import");
                for (done, secret) in imported.into_iter().zip(secrets) {
                    let token = done.token.expect("a token per entry");
                    tokens.push((token.token_id.to_string(), secret, 0));
                }
            }
            (ichido, tokens)
        });
        eprintln!(
            "validate_cold_tokens: {} tokens imported in {:.0} s",
            tokens.len(),
            started.elapsed().as_secs_f64()
        );
        Cold {
            rt,
            ichido,
            op: Actor::Operator("relying-party".into()),
            tokens,
            at: 0,
        }
    }

    /// Validates the next token's next right code; returns the time it took.
    fn right(&mut self) -> Duration {
        let n = self.tokens.len();
        let (id, secret, counter) = &mut self.tokens[self.at % n];
        self.at += 1;
        let key = Key::new(Algorithm::Sha1, secret).expect("key");
        let code = key.hotp(*counter, Digits::SIX).to_string();
        *counter += 1;
        let started = Instant::now();
        let r = self.rt.block_on(self.ichido.validate(&self.op, id, &code));
        let took = started.elapsed();
        assert!(r.is_ok(), "a right code was refused: {r:?}");
        took
    }
}

fn validate_cold(c: &mut Criterion) {
    let count = std::env::var("ICHIDO_BENCH_COLD_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(COLD_TOKENS);
    let mut cold: Option<Cold> = None;
    let mut g = c.benchmark_group("validate_cold_tokens");
    g.bench_function("right_code", |b| {
        let f = cold.get_or_insert_with(|| Cold::new(count));
        b.iter_custom(|iters| (0..iters).map(|_| f.right()).sum())
    });
    g.finish();
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

criterion_group!(benches, validate, validate_cold);
criterion_main!(benches);
