//! `ichido bench`: the project's load generator. Creates tokens through the
//! API, then drives `POST /api/v1/validate` with fresh codes and reports
//! throughput and latency. It checks what it measures: a 200 for a code it
//! knows to be wrong, or a second 200 for one code, is a correctness failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ichido_otp::{base32, time_step, Algorithm, Digits, Key};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Event,
    Time,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Right codes: the success path.
    Valid,
    /// Wrong codes: the failure path (each failure is counted by the server).
    Wrong,
}

/// Options of `ichido bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Root URL of a running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Operator API key (from `ichido operator create`).
    #[arg(long, env = "ICHIDO_OPERATOR_KEY", hide_env_values = true)]
    key: String,
    /// Tokens to create before the run.
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Token kind. Time tokens accept one code per 30 s step each, so they need
    /// many tokens for a high rate.
    #[arg(long, value_enum, default_value = "event")]
    kind: Kind,
    /// Success or failure path.
    #[arg(long, value_enum, default_value = "valid")]
    mode: Mode,
    /// Failure path: after this many wrong codes a token gets one right code,
    /// so it stays below the lock threshold (right codes are not counted).
    #[arg(long, default_value_t = 4)]
    reset_every: u32,
    /// Resend an accepted code every N validations; it must be refused.
    #[arg(long, default_value_t = 100)]
    replay_probe_every: u64,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    json: bool,
}

struct BenchToken {
    kind: Kind,
    token_id: String,
    key: Key,
    /// Event: the next counter to use. Time: the last step used.
    position: u64,
    last_accepted: Option<String>,
    wrong_sent: u32,
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    correctness_failures: u64,
    extra_requests: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let mut req = client.post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Creates one user and an activated token for it.
async fn create_token(
    client: &reqwest::Client,
    args: &BenchArgs,
    contract: &str,
    i: usize,
) -> anyhow::Result<BenchToken> {
    let api = format!("{}/api/v1", args.url);
    let password = format!("bench-password-{i}");
    let user = format!("u{i}");
    let (s, b) = post(
        client,
        &format!("{api}/contracts/{contract}/users"),
        Some(&args.key),
        &json!({"user_id": user, "name": "bench", "role": "approver", "login_password": password, "transaction_password": format!("bench-tx-{i}-x")}),
    )
    .await?;
    if s != 201 {
        bail!("creating user {user}: {s} {b}");
    }
    let kind = if args.kind == Kind::Event {
        "event"
    } else {
        "time"
    };
    let (s, b) = post(client, &format!("{api}/registrations"), None, &json!({"contract_no": contract, "user_id": user, "login_password": password, "kind": kind})).await?;
    if s != 201 {
        bail!("registering {user}: {s} {b}");
    }
    let secret = base32::decode(b["secret"].as_str().unwrap_or_default()).context("secret")?;
    let algorithm: Algorithm = b["algorithm"]
        .as_str()
        .unwrap_or("SHA1")
        .parse()
        .context("algorithm")?;
    let digits = Digits::new(u8::try_from(b["digits"].as_u64().unwrap_or(6)).unwrap_or(6))
        .context("digits")?;
    if digits != Digits::SIX {
        bail!("the bench expects 6-digit tokens");
    }
    let key = Key::new(algorithm, &secret).context("key")?;
    let token_id = b["token_id"].as_str().unwrap_or_default().to_owned();
    let (first, position) = match args.kind {
        Kind::Event => (key.hotp(0, digits), 1),
        Kind::Time => {
            let now = unix_now();
            (key.totp(now, 30, digits), time_step(now, 30))
        }
    };
    let (s, b) = post(
        client,
        &format!("{api}/registrations/{token_id}/activate"),
        None,
        &json!({"otp": first.to_string()}),
    )
    .await?;
    if s != 200 {
        bail!("activating {token_id}: {s} {b}");
    }
    Ok(BenchToken {
        kind: args.kind,
        token_id,
        key,
        position,
        last_accepted: None,
        wrong_sent: 0,
    })
}

impl BenchToken {
    /// The next right code, or `None` if a time token has no fresh step yet.
    fn next_right(&mut self) -> Option<String> {
        match self.kind {
            Kind::Time => {
                let now_step = time_step(unix_now(), 30);
                // Within the ±1 window: the current step, or the next one.
                let step = match self.position {
                    p if p < now_step => now_step,
                    p if p == now_step => now_step + 1,
                    _ => return None,
                };
                self.position = step;
                // A TOTP code is the HOTP code of its time step.
                Some(self.key.hotp(step, Digits::SIX).to_string())
            }
            Kind::Event => {
                let c = self.position;
                self.position = c + 1;
                Some(self.key.hotp(c, Digits::SIX).to_string())
            }
        }
    }

    /// A code known to be wrong: matches nothing the server could accept or call a replay.
    fn wrong(&self, salt: u64) -> String {
        let lo = self.position.saturating_sub(12);
        let hi = self.position.saturating_add(12);
        let window: Vec<String> = (lo..=hi)
            .map(|c| self.key.hotp(c, Digits::SIX).to_string())
            .collect();
        let mut candidate = salt % 1_000_000;
        loop {
            let s = format!("{candidate:06}");
            if !window.contains(&s) {
                return s;
            }
            candidate = (candidate + 1) % 1_000_000;
        }
    }
}

async fn worker(
    client: reqwest::Client,
    args: Arc<BenchArgs>,
    url: String,
    mut tokens: Vec<BenchToken>,
    stop: Arc<AtomicBool>,
) -> WorkerResult {
    let mut r = WorkerResult::default();
    let mut i = 0usize;
    let mut sent = 0u64;
    let mut idle_rounds = 0usize;
    while !stop.load(Ordering::Relaxed) && !tokens.is_empty() {
        let n = tokens.len();
        let t = &mut tokens[i % n];
        i = i.wrapping_add(1);
        let (mode, key, probe_every) = (args.mode, &args.key, args.replay_probe_every);
        let wrong = mode == Mode::Wrong && t.wrong_sent < args.reset_every;
        let otp = if wrong {
            t.wrong_sent += 1;
            Some(t.wrong(rand::random::<u64>()))
        } else {
            t.wrong_sent = 0;
            t.next_right()
        };
        let Some(otp) = otp else {
            idle_rounds += 1;
            if idle_rounds >= n {
                tokio::time::sleep(Duration::from_millis(200)).await;
                idle_rounds = 0;
            }
            continue;
        };
        idle_rounds = 0;
        let body = json!({"token_id": t.token_id, "otp": otp});
        let started = Instant::now();
        let res = post(&client, &url, Some(key), &body).await;
        let elapsed = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let measured = wrong || mode == Mode::Valid;
        match res {
            Ok((200, _)) if wrong => {
                r.correctness_failures += 1;
                eprintln!(
                    "CORRECTNESS FAILURE: a wrong code was accepted for {}",
                    t.token_id
                );
            }
            Ok((200, _)) => {
                t.last_accepted = Some(otp);
                if measured {
                    r.ok += 1;
                }
            }
            Ok((_, b)) => {
                let code = b["error"]["code"]
                    .as_str()
                    .unwrap_or("http_error")
                    .to_owned();
                if measured {
                    *r.errors.entry(code).or_default() += 1;
                }
            }
            Err(_) => *r.errors.entry("connection".into()).or_default() += 1,
        }
        if measured {
            r.latencies_us.push(elapsed);
        } else {
            r.extra_requests += 1;
        }
        sent += 1;
        if probe_every > 0 && sent.is_multiple_of(probe_every) {
            if let Some(code) = t.last_accepted.clone() {
                r.extra_requests += 1;
                if let Ok((200, _)) = post(
                    &client,
                    &url,
                    Some(key),
                    &json!({"token_id": t.token_id, "otp": code}),
                )
                .await
                {
                    r.correctness_failures += 1;
                    eprintln!(
                        "CORRECTNESS FAILURE: a code was accepted twice for {}",
                        t.token_id
                    );
                }
            }
        }
    }
    r
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    if args.tokens == 0 || args.concurrency == 0 {
        bail!("--tokens and --concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let health = client
        .get(format!("{}/healthz", args.url))
        .send()
        .await
        .context("cannot reach the server")?;
    if !health.status().is_success() {
        bail!("server is not healthy: {}", health.status());
    }
    let contract = format!("bench-{:08x}", rand::random::<u32>());
    let (s, b) = post(
        &client,
        &format!("{}/api/v1/contracts", args.url),
        Some(&args.key),
        &json!({"contract_no": contract, "name": "ichido bench"}),
    )
    .await?;
    if s != 201 {
        bail!("creating the bench contract: {s} {b}");
    }

    let bar = ProgressBar::new(args.tokens as u64);
    bar.set_style(
        ProgressStyle::with_template("creating tokens {bar:40} {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let args = Arc::new(args);
    let mut tokens = Vec::with_capacity(args.tokens);
    let mut next = 0usize;
    let parallel = args.concurrency.min(32);
    while next < args.tokens {
        let batch: Vec<_> = (next..(next + parallel).min(args.tokens))
            .map(|i| {
                let (client, args, contract) =
                    (client.clone(), Arc::clone(&args), contract.clone());
                tokio::spawn(async move { create_token(&client, &args, &contract, i).await })
            })
            .collect();
        for h in batch {
            tokens.push(h.await??);
            bar.inc(1);
        }
        next += parallel;
    }
    bar.finish_and_clear();

    let workers = args.concurrency.min(tokens.len());
    let mut shards: Vec<Vec<BenchToken>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, t) in tokens.into_iter().enumerate() {
        shards[i % workers].push(t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/api/v1/validate", args.url);
    let started = Instant::now();
    let handles: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            tokio::spawn(worker(
                client.clone(),
                Arc::clone(&args),
                url.clone(),
                shard,
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = WorkerResult::default();
    for h in handles {
        let r = h.await?;
        total.latencies_us.extend(r.latencies_us);
        total.ok += r.ok;
        total.correctness_failures += r.correctness_failures;
        total.extra_requests += r.extra_requests;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let measured = total.latencies_us.len() as f64;
    let per_sec = measured / secs;
    let (p50, p99, p999) = (
        percentile(&total.latencies_us, 0.5),
        percentile(&total.latencies_us, 0.99),
        percentile(&total.latencies_us, 0.999),
    );
    let mode = if args.mode == Mode::Valid {
        "valid"
    } else {
        "wrong"
    };
    let kind = if args.kind == Kind::Event {
        "event"
    } else {
        "time"
    };
    println!(
        "ichido bench: {kind} tokens, {mode} codes, {} tokens, {workers} connections, {secs:.1} s",
        args.tokens
    );
    println!(
        "  validations/s   {per_sec:.0}  ({} measured, {} accepted)",
        measured as u64, total.ok
    );
    println!("  latency ms      p50 {p50:.2}  p99 {p99:.2}  p99.9 {p999:.2}");
    println!("  errors          {:?}", total.errors);
    if total.correctness_failures > 0 {
        println!(
            "  !!! CORRECTNESS FAILURES: {} — the server accepted a wrong or replayed code !!!",
            total.correctness_failures
        );
    } else {
        println!(
            "  correctness     no wrong or replayed code accepted ({} probes and resets)",
            total.extra_requests
        );
    }
    if args.json {
        let out = json!({
            "validations_per_sec": per_sec,
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
            "errors": total.errors,
            "correctness_failures": total.correctness_failures,
            "accepted": total.ok,
            "measured": measured as u64,
            "tokens": args.tokens, "concurrency": workers, "duration_secs": secs,
            "kind": kind, "mode": mode,
        });
        println!("{out}");
    }
    Ok(total.correctness_failures == 0)
}
