//! `ichido bench`: the project's load generator. Creates users and tokens
//! through the bulk import API (secrets made here, 1,000 per request), then
//! drives `POST /api/v1/validate` with fresh codes, each token owned by one
//! worker so its codes arrive in order, and reports validations/s, latency
//! percentiles and errors by code. It checks what it measures: a 200 for a
//! code it knows to be wrong, or a second 200 for one code, is a correctness
//! failure, reported loudly and with exit status 1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ichido_domain::password::{PasswordParams, Passwords};
use ichido_otp::{base32, time_step, Algorithm, Digits, Key};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
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

/// The order in which the workers use the tokens.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// An order unrelated to the import's, as a bank's customers log in:
    /// each validation finds its token's row wherever it happens to be.
    Shuffled,
    /// The import's order: at any moment the workers use tokens imported
    /// next to each other, whose rows a store may keep side by side (the
    /// order of `ichido bench` before it had this option; it flatters a
    /// store that keeps rows in insertion order).
    Imported,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Shuffled => "shuffled",
            Order::Imported => "imported",
        }
    }
}

/// Options of `ichido bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Root URL of a running server (plain http: the validation workers keep
    /// one HTTP/1.1 connection each).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Operator API key (from `ichido operator create`).
    #[arg(long, env = "ICHIDO_OPERATOR_KEY", hide_env_values = true)]
    key: String,
    /// Tokens to create before the run (imported 1,000 per request; a million works).
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run (measured).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds to validate before the measured run, not measured: the
    /// server's background work after the import (the audit index filing
    /// and merging the import's events, the kernel writing the import's
    /// pages to disk) then has a head start, and the figure is closer to
    /// the steady state's. Correctness is checked throughout.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Print, every S seconds of the measured run, that interval's
    /// validations/s and this machine's CPU time taken by the hypervisor
    /// (steal) and left idle (0: only the whole run's). On a virtual
    /// machine, steal is what makes identical runs differ: an interval
    /// with much of it is not the server's figure.
    #[arg(long, default_value_t = 0)]
    interval: u64,
    /// Token kind. Time tokens accept one code per 30 s step each, so they need
    /// many tokens for a high rate.
    #[arg(long, value_enum, default_value = "event")]
    kind: Kind,
    /// Success or failure path.
    #[arg(long, value_enum, default_value = "valid")]
    mode: Mode,
    /// The order in which the tokens are used. Each worker owns its tokens
    /// and uses them in turn, one code each per round.
    #[arg(long, value_enum, default_value = "shuffled")]
    order: Order,
    /// Failure path: after this many failures (wrong codes and refused replay
    /// probes) a token gets one right code, so it stays below the lock
    /// threshold (right codes are not measured).
    /// Keep it below the server's --token-lock-threshold (5 by default); raise
    /// both (e.g. threshold 100, --reset-every 99) to measure wrong codes alone.
    #[arg(long, default_value_t = 4)]
    reset_every: u32,
    /// Resend an accepted code every N validations; it must be refused.
    #[arg(long, default_value_t = 100)]
    replay_probe_every: u64,
    /// The contract the bench creates for its users (契約者番号). It must not
    /// exist yet. Default: `bench-` and eight random hex digits. A fixed one
    /// lets a prepared database hold history for the same users (see
    /// scripts/grow-audit-index.py).
    #[arg(long)]
    contract_no: Option<String>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// One bench token, compact (56 bytes, so a million fit in ~56 MB): the key
/// schedule is derived from the secret at each use, which costs about a
/// microsecond of the client's time.
struct BenchToken {
    token_id: [u8; 12],
    secret: [u8; SECRET_LEN],
    /// Event: the next counter to use. Time: the last step used (0 = none yet).
    position: u64,
    /// The last code the server accepted (for replay probes).
    last_accepted: Option<u32>,
    wrong_sent: u32,
    /// The codes a wrong one must avoid, and where the token stood when they
    /// were computed (kept so each wrong code costs no HMAC; boxed, so a
    /// million tokens of the success path pay 8 bytes each).
    wrong_window: Option<Box<(u64, [u32; WRONG_WINDOW])>>,
}

/// Codes either side of a token's position that a wrong code avoids: the
/// server's look-ahead (10) and look-behind, with room to spare.
const WRONG_SIDE: u64 = 12;
const WRONG_WINDOW: usize = 2 * WRONG_SIDE as usize + 1;

/// Bytes of each bench secret (160 bits, as RFC 4226 recommends).
const SECRET_LEN: usize = 20;
/// Entries per import request (the server's maximum).
const IMPORT_BATCH: usize = 1000;
/// Import requests in flight at once.
const IMPORTS_IN_FLIGHT: usize = 4;
/// The bench users' passwords (each hashed once, locally).
const BENCH_LOGIN_PASSWORD: &str = "bench-login-password";
const BENCH_TX_PASSWORD: &str = "bench-transaction-password";

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    correctness_failures: u64,
    extra_requests: u64,
    /// Replay probes not sent: the code is right again for a later counter.
    probes_skipped: u64,
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

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Event => "event",
        Kind::Time => "time",
    }
}

/// Creates `args.tokens` users with active tokens through `POST /api/v1/import`:
/// secrets made here, the two passwords hashed once, 1,000 entries per request
/// with a few requests in flight.
async fn create_tokens(
    client: &reqwest::Client,
    args: &Arc<BenchArgs>,
    contract: &str,
) -> anyhow::Result<Vec<BenchToken>> {
    let (login_hash, tx_hash) = tokio::task::spawn_blocking(|| {
        let p = Passwords::new(PasswordParams::default())?;
        Ok::<_, ichido_domain::DomainError>((
            p.hash("login_password", BENCH_LOGIN_PASSWORD)?,
            p.hash("transaction_password", BENCH_TX_PASSWORD)?,
        ))
    })
    .await??;
    let (login_hash, tx_hash) = (Arc::new(login_hash), Arc::new(tx_hash));
    let mut tokens: Vec<BenchToken> = (0..args.tokens)
        .map(|_| BenchToken {
            token_id: [0; 12],
            secret: rand::random(),
            position: 0,
            last_accepted: None,
            wrong_sent: 0,
            wrong_window: None,
        })
        .collect();
    let bar = ProgressBar::new(args.tokens as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "importing tokens {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let url = format!("{}/api/v1/import", args.url);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0usize;
    loop {
        while next < tokens.len() && in_flight.len() < IMPORTS_IN_FLIGHT {
            let end = (next + IMPORT_BATCH).min(tokens.len());
            let entries: Vec<Value> = (next..end)
                .map(|i| {
                    let mut token = json!({"kind": kind_name(args.kind), "secret": base32::encode(&tokens[i].secret)});
                    if args.kind == Kind::Event {
                        token["counter"] = json!(0);
                    }
                    json!({
                        "contract_no": contract, "user_id": format!("u{i}"), "name": "bench",
                        "role": "approver", "login_password_hash": *login_hash,
                        "transaction_password_hash": *tx_hash, "token": token,
                    })
                })
                .collect();
            let body = json!({ "entries": entries });
            let (client, url, key) = (client.clone(), url.clone(), args.key.clone());
            let start = next;
            in_flight.spawn(async move {
                let (s, b) = post(&client, &url, Some(&key), &body).await?;
                if s != 201 {
                    bail!("importing tokens {start}..: {s} {b}");
                }
                let ids: Vec<String> = b["entries"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e["token_id"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((start, ids))
            });
            next = end;
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let (start, ids) = done??;
        for (j, id) in ids.iter().enumerate() {
            let slot = tokens
                .get_mut(start + j)
                .context("the server answered more token IDs than entries sent")?;
            slot.token_id = id
                .as_bytes()
                .try_into()
                .context("the server answered a malformed token ID")?;
        }
        bar.inc(ids.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(i) = tokens.iter().position(|t| t.token_id == [0; 12]) {
        bail!("the server answered no token ID for entry {i}");
    }
    Ok(tokens)
}

impl BenchToken {
    /// The HMAC key schedule; fails only for an empty secret, which these never are.
    fn key(&self) -> Result<Key, ichido_otp::OtpError> {
        Key::new(Algorithm::Sha1, &self.secret)
    }

    fn id(&self) -> &str {
        std::str::from_utf8(&self.token_id).unwrap_or("?")
    }

    /// The next right code, or `None` if a time token has no fresh step yet.
    fn next_right(&mut self, kind: Kind, key: &Key) -> Option<u32> {
        match kind {
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
                Some(key.hotp(step, Digits::SIX).value())
            }
            Kind::Event => {
                let c = self.position;
                self.position = c + 1;
                Some(key.hotp(c, Digits::SIX).value())
            }
        }
    }

    /// A code known to be wrong: none of the codes the server could accept or
    /// call a replay (12 either side of where the token stands).
    fn wrong(&mut self, kind: Kind, key: &Key, salt: u32) -> u32 {
        let centre = match kind {
            Kind::Event => self.position,
            Kind::Time => self.position.max(time_step(unix_now(), 30)),
        };
        let codes_at = |centre: u64| {
            let mut codes = [0u32; WRONG_WINDOW];
            let first = centre.saturating_sub(WRONG_SIDE);
            for (slot, c) in codes.iter_mut().zip(first..) {
                *slot = key.hotp(c, Digits::SIX).value();
            }
            codes
        };
        let w = self
            .wrong_window
            .get_or_insert_with(|| Box::new((centre, codes_at(centre))));
        if w.0 != centre {
            **w = (centre, codes_at(centre));
        }
        let window = &w.1;
        let mut candidate = salt % 1_000_000;
        while window.contains(&candidate) {
            candidate = (candidate + 1) % 1_000_000;
        }
        candidate
    }

    /// Whether a replay probe may be sent for this token now. On the
    /// failure path a probe is one more failure in a row: after the
    /// token's last wrong code before its right one (`--reset-every` of
    /// them, probes included) it would be one too many, and a server whose
    /// lock threshold is one above `--reset-every` would lock the token
    /// (every later answer `token_locked`, no longer the failure path).
    fn has_room_for_a_probe(&self, mode: Mode, reset_every: u32) -> bool {
        mode == Mode::Valid || self.wrong_sent < reset_every
    }

    /// Whether `code` is also the code of a counter or step the server
    /// could still accept (the look-ahead from where the token stands, with
    /// room to spare). Six digits recur about once in a million codes, so
    /// about one replay probe in 100,000 resends a code that is right again
    /// for a later counter: the server rightly accepts it, and the probe
    /// would call that a replay. Such a probe is not sent.
    fn recurs_ahead(&self, kind: Kind, key: &Key, code: u32) -> bool {
        let (first, last) = match kind {
            Kind::Event => (self.position, self.position + WRONG_SIDE),
            Kind::Time => (
                self.position + 1,
                self.position.max(time_step(unix_now(), 30)) + WRONG_SIDE,
            ),
        };
        (first..=last).any(|c| key.hotp(c, Digits::SIX).value() == code)
    }
}

fn correctness_failure(r: &mut WorkerResult, what: &str, token: &BenchToken) {
    r.correctness_failures += 1;
    eprintln!(
        "!!! CORRECTNESS FAILURE: {what} for token {} !!!",
        token.id()
    );
}

/// A worker's own keep-alive HTTP/1.1 connection to the validation
/// endpoint, opened again after an error. Leaner than the shared client of
/// the setup (no pool to lock, no redirect or cookie handling, the body of a
/// 200 not parsed): the bench shares the machine with the server it
/// measures, and what it spends the server cannot.
struct Conn {
    addr: String,
    host: HeaderValue,
    path: String,
    auth: HeaderValue,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(url: &str, key: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).context("--url")?;
        if url.scheme() != "http" {
            bail!(
                "the bench's workers speak plain http to a server on this machine, not {}",
                url.scheme()
            );
        }
        let host = url.host_str().context("--url has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = format!("{host}:{port}");
        Ok(Self {
            host: HeaderValue::from_str(&addr).context("--url host")?,
            addr,
            path: url.path().to_owned(),
            auth: HeaderValue::from_str(&format!("Bearer {key}")).context("--key")?,
            sender: None,
        })
    }

    /// POSTs `body` (JSON); the status and, for a status other than 200, the
    /// body.
    async fn post(&mut self, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let sender = match &mut self.sender {
            Some(s) => s,
            None => {
                let stream = tokio::net::TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                self.sender.insert(sender)
            }
        };
        let req = Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, self.auth.clone())
            .body(Full::new(Bytes::from(body)))?;
        let sent = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        match sent {
            Ok((200, _)) => Ok((200, Value::Null)),
            Ok((status, body)) => {
                Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
            }
            Err(e) => {
                self.sender = None;
                Err(e)
            }
        }
    }
}

async fn worker(
    args: Arc<BenchArgs>,
    url: String,
    mut tokens: Vec<BenchToken>,
    measuring: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> WorkerResult {
    let mut r = WorkerResult::default();
    let mut conn = match Conn::new(&url, &args.key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ichido bench: {e:#}");
            *r.errors.entry("connection".into()).or_default() += 1;
            return r;
        }
    };
    let mut i = 0usize;
    let mut sent = 0u64;
    let mut idle_rounds = 0usize;
    let (mode, kind, probe_every) = (args.mode, args.kind, args.replay_probe_every);
    while !stop.load(Ordering::Relaxed) && !tokens.is_empty() {
        let n = tokens.len();
        let t = &mut tokens[i % n];
        i = i.wrapping_add(1);
        let Ok(hmac) = t.key() else {
            *r.errors.entry("client_key".into()).or_default() += 1;
            continue;
        };
        let wrong = mode == Mode::Wrong && t.wrong_sent < args.reset_every;
        let otp = if wrong {
            t.wrong_sent += 1;
            Some(t.wrong(kind, &hmac, rand::random::<u32>()))
        } else {
            t.next_right(kind, &hmac)
        };
        let Some(otp) = otp else {
            // A time token without a fresh step: try another one.
            idle_rounds += 1;
            if idle_rounds >= n {
                tokio::time::sleep(Duration::from_millis(200)).await;
                idle_rounds = 0;
            }
            continue;
        };
        if !wrong {
            t.wrong_sent = 0;
        }
        idle_rounds = 0;
        let body = validation(t.id(), otp);
        let started = Instant::now();
        let res = conn.post(body).await;
        let elapsed = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        // The failure path measures the wrong codes only; its right codes
        // (which keep the token below the lock threshold) are extra, and so
        // is everything sent during the warm-up.
        let measured = (wrong || mode == Mode::Valid) && measuring.load(Ordering::Relaxed);
        match res {
            Ok((200, _)) if wrong => correctness_failure(&mut r, "a WRONG code was accepted", t),
            Ok((200, _)) => {
                t.last_accepted = Some(otp);
                if measured {
                    r.ok += 1;
                }
            }
            Ok((status, b)) => {
                let code = b["error"]["code"]
                    .as_str()
                    .map_or_else(|| format!("http_{status}"), str::to_owned);
                if measured {
                    *r.errors.entry(code).or_default() += 1;
                }
            }
            Err(_) => *r.errors.entry("connection".into()).or_default() += 1,
        }
        if measured {
            r.latencies_us.push(elapsed);
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            r.extra_requests += 1;
        }
        sent += 1;
        if probe_every > 0
            && sent.is_multiple_of(probe_every)
            && t.has_room_for_a_probe(mode, args.reset_every)
        {
            if let Some(code) = t.last_accepted.filter(|&c| {
                let recurs = t.recurs_ahead(kind, &hmac, c);
                r.probes_skipped += u64::from(recurs);
                !recurs
            }) {
                r.extra_requests += 1;
                // The server counts the refused replay as a failure: on
                // the failure path it is one of the token's consecutive
                // failures, so the next right code comes one sooner.
                if mode == Mode::Wrong {
                    t.wrong_sent = t.wrong_sent.saturating_add(1);
                }
                if let Ok((200, _)) = conn.post(validation(t.id(), code)).await {
                    correctness_failure(&mut r, "a code was accepted TWICE", t);
                }
            }
        }
    }
    r
}

/// The body of one validation request.
fn validation(token_id: &str, otp: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"token_id": token_id, "otp": format!("{otp:06}")}))
        .unwrap_or_default()
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
        .pool_max_idle_per_host(args.concurrency.max(IMPORTS_IN_FLIGHT))
        .timeout(Duration::from_secs(120))
        .build()?;
    let health = client
        .get(format!("{}/healthz", args.url))
        .send()
        .await
        .context("cannot reach the server")?;
    if !health.status().is_success() {
        bail!("server is not healthy: {}", health.status());
    }
    let contract = args
        .contract_no
        .clone()
        .unwrap_or_else(|| format!("bench-{:08x}", rand::random::<u32>()));
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

    let args = Arc::new(args);
    let setup = Instant::now();
    let mut tokens = create_tokens(&client, &args, &contract).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!(
        "imported {} {} tokens in {setup_secs:.1} s ({:.0}/s)",
        tokens.len(),
        kind_name(args.kind),
        tokens.len() as f64 / setup_secs.max(1e-9)
    );

    if args.order == Order::Shuffled {
        tokens.shuffle(&mut rand::thread_rng());
    }
    let workers = args.concurrency.min(tokens.len());
    let mut shards: Vec<Vec<BenchToken>> = (0..workers)
        .map(|_| Vec::with_capacity(tokens.len() / workers + 1))
        .collect();
    // Each token belongs to one worker, so its codes arrive in order.
    for (i, t) in tokens.into_iter().enumerate() {
        shards[i % workers].push(t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(args.warmup == 0));
    let done = Arc::new(AtomicU64::new(0));
    let url = format!("{}/api/v1/validate", args.url);
    let handles: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            tokio::spawn(worker(
                Arc::clone(&args),
                url.clone(),
                shard,
                Arc::clone(&measuring),
                Arc::clone(&done),
                Arc::clone(&stop),
            ))
        })
        .collect();
    if args.warmup > 0 {
        eprintln!("warming up for {} s (not measured)", args.warmup);
        tokio::time::sleep(Duration::from_secs(args.warmup)).await;
        measuring.store(true, Ordering::Relaxed);
    }
    let started = Instant::now();
    let cpu_at_start = CpuTimes::now();
    let intervals = timeline(args.duration, args.interval, started, &done).await;
    let cpu = share(CpuTimes::now(), cpu_at_start);
    stop.store(true, Ordering::Relaxed);
    let mut total = WorkerResult::default();
    for h in handles {
        let r = h.await?;
        total.latencies_us.extend(r.latencies_us);
        total.ok += r.ok;
        total.correctness_failures += r.correctness_failures;
        total.extra_requests += r.extra_requests;
        total.probes_skipped += r.probes_skipped;
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
    let mode = match args.mode {
        Mode::Valid => "valid",
        Mode::Wrong => "wrong",
    };
    let kind = kind_name(args.kind);
    println!(
        "ichido bench: {kind} tokens, {mode} codes, {} tokens used in {} order, {workers} connections, {secs:.1} s",
        args.tokens,
        args.order.name()
    );
    println!(
        "  validations/s   {per_sec:.0}  ({} measured, {} accepted)",
        measured as u64, total.ok
    );
    println!("  latency ms      p50 {p50:.2}  p99 {p99:.2}  p99.9 {p999:.2}");
    let errors = if total.errors.is_empty() {
        "none".to_owned()
    } else {
        total
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  errors by code  {errors}");
    println!("  token import    {setup_secs:.1} s");
    if let Some(cpu) = cpu {
        println!(
            "  this machine    {:.1}% of its CPU time stolen by the hypervisor, {:.1}% idle{}",
            cpu.steal_pct,
            cpu.idle_pct,
            if cpu.steal_pct >= STEAL_WARN_PCT {
                " (much stolen: the figure is not the server's own; run again)"
            } else {
                ""
            }
        );
    }
    if args.warmup > 0 {
        println!(
            "  warm-up         {} s before the measured run",
            args.warmup
        );
    }
    if let Some(locked) = total.errors.get("token_locked") {
        // A locked token answers without a write: the figure is no longer
        // the failure path's.
        eprintln!(
            "warning: {locked} answers were token_locked: tokens reached the server's lock \
             threshold; keep --reset-every below --token-lock-threshold"
        );
    }
    if total.correctness_failures > 0 {
        let banner = format!(
            "  !!! CORRECTNESS FAILURES: {} — the server accepted a wrong or replayed code !!!",
            total.correctness_failures
        );
        println!("{banner}");
        eprintln!("{banner}");
    } else {
        println!(
            "  correctness     no wrong or replayed code accepted ({} probes and resets; \
             {} probes not sent: their code was right again for a later counter)",
            total.extra_requests, total.probes_skipped
        );
    }
    if args.json {
        let out = json!({
            "validations_per_sec": per_sec,
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
            "errors": total.errors,
            "correctness_failures": total.correctness_failures,
            "probes_skipped": total.probes_skipped,
            "accepted": total.ok,
            "measured": measured as u64,
            "tokens": args.tokens, "concurrency": workers, "duration_secs": secs,
            "setup_secs": setup_secs, "warmup_secs": args.warmup,
            "kind": kind, "mode": mode, "order": args.order.name(),
            "cpu_steal_pct": cpu.map(|c| c.steal_pct),
            "cpu_idle_pct": cpu.map(|c| c.idle_pct),
            "intervals": intervals,
        });
        println!("{out}");
    }
    Ok(total.correctness_failures == 0)
}

/// Steal (in percent of the machine's CPU time) from which the report
/// says a run's figure is not the server's own.
const STEAL_WARN_PCT: f64 = 5.0;

/// This machine's CPU time (all CPUs, in clock ticks) from `/proc/stat`:
/// in all, idle (with I/O wait) and stolen by the hypervisor.
#[derive(Clone, Copy)]
struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

/// The share of a span's CPU time that was stolen and idle, in percent.
#[derive(Clone, Copy, serde::Serialize)]
struct CpuShare {
    steal_pct: f64,
    idle_pct: f64,
}

impl CpuTimes {
    /// None where `/proc/stat` is not there (not Linux) or not understood.
    fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The `cpu` line: user nice system idle iowait irq softirq steal (guest
    /// time is counted in user's already).
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            return None;
        };
        Some(Self {
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            idle: idle + iowait,
            steal,
        })
    }
}

/// The share of the CPU time between two samples that was stolen and
/// idle; None without both samples or without time between them.
fn share(now: Option<CpuTimes>, then: Option<CpuTimes>) -> Option<CpuShare> {
    let (now, then) = (now?, then?);
    let total = now.total.checked_sub(then.total).filter(|&t| t > 0)? as f64;
    let pct = |a: u64, b: u64| 100.0 * a.saturating_sub(b) as f64 / total;
    Some(CpuShare {
        steal_pct: pct(now.steal, then.steal),
        idle_pct: pct(now.idle, then.idle),
    })
}

/// One interval of the measured run (`--interval`).
#[derive(serde::Serialize)]
struct Interval {
    /// Seconds from the measured run's start to the interval's end.
    end_secs: f64,
    validations_per_sec: f64,
    cpu: Option<CpuShare>,
}

/// Waits out the measured run (`--duration`), and with `--interval` reports
/// each interval as it ends, on stderr, and returns them.
async fn timeline(
    duration: u64,
    interval: u64,
    started: Instant,
    done: &AtomicU64,
) -> Vec<Interval> {
    let end = started + Duration::from_secs(duration);
    if interval == 0 {
        tokio::time::sleep_until(end.into()).await;
        return Vec::new();
    }
    let step = Duration::from_secs(interval);
    let mut intervals = Vec::new();
    let (mut at, mut count, mut cpu) = (started, 0, CpuTimes::now());
    while at < end {
        tokio::time::sleep_until((at + step).min(end).into()).await;
        // Each interval runs from where the last one was actually read to
        // now: a bench woken late (a loaded machine, or frozen with
        // SIGSTOP) reports the rate over the time that really passed, and
        // the next interval is a whole step again.
        let now = Instant::now();
        let (now_count, now_cpu) = (done.load(Ordering::Relaxed), CpuTimes::now());
        let secs = now.duration_since(at).as_secs_f64().max(1e-9);
        let interval = Interval {
            end_secs: now.duration_since(started).as_secs_f64(),
            validations_per_sec: (now_count - count) as f64 / secs,
            cpu: share(now_cpu, cpu),
        };
        let machine = interval.cpu.map_or_else(String::new, |c| {
            format!(", steal {:.1}%, idle {:.1}%", c.steal_pct, c.idle_pct)
        });
        eprintln!(
            "  at {:>5.0} s   {:>8.0} validations/s{machine}",
            interval.end_secs, interval.validations_per_sec
        );
        intervals.push(interval);
        (at, count, cpu) = (now, now_count, now_cpu);
    }
    intervals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: [u8; SECRET_LEN], position: u64) -> BenchToken {
        BenchToken {
            token_id: *b"ABCD12345678",
            secret,
            position,
            last_accepted: None,
            wrong_sent: 0,
            wrong_window: None,
        }
    }

    /// On the failure path a token's failures in a row (wrong codes and
    /// replay probes) stay at most `--reset-every`: no probe after its last
    /// wrong code. On the success path a probe is always allowed.
    #[test]
    fn a_probe_never_makes_one_failure_too_many() {
        let mut t = token([7; SECRET_LEN], 0);
        for sent in 0..99 {
            t.wrong_sent = sent;
            assert!(t.has_room_for_a_probe(Mode::Wrong, 99), "{sent}");
        }
        t.wrong_sent = 99;
        assert!(!t.has_room_for_a_probe(Mode::Wrong, 99));
        assert!(t.has_room_for_a_probe(Mode::Valid, 99));
    }

    /// A bench woken late (here: its runtime's only thread blocked for
    /// 1.5 s, as a frozen or starved bench would be) reports the interval's
    /// rate over the time that really passed, not over the nominal second.
    #[test]
    fn a_late_interval_is_divided_by_the_time_that_passed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let blocker = Arc::clone(&done);
        let intervals = rt.block_on(async {
            tokio::spawn(async move {
                blocker.store(3_000, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1_500));
            });
            timeline(3, 1, started, &done).await
        });
        let first = &intervals[0];
        assert!(first.end_secs >= 1.5, "{}", first.end_secs);
        // 3,000 validations over at least 1.5 s: at most 2,000/s (the
        // nominal one-second interval would have said 3,000/s).
        let rate = first.validations_per_sec;
        assert!(rate > 0.0 && rate <= 2_000.0, "{rate}");
        // The later intervals start where the one before was read, have
        // nothing done in them, and the last ends at the run's end.
        assert!(intervals[1..].iter().all(|i| i.validations_per_sec == 0.0));
        assert!(intervals.last().unwrap().end_secs >= 3.0);
    }

    /// Two counters of one key, `gap` apart (1..=WRONG_SIDE), with the same
    /// six-digit code: found by search, as the server would meet them (for
    /// the secret of the test, counters 73,129 and 73,139).
    fn recurring_pair(key: &Key) -> (u64, u64) {
        let codes: Vec<u32> = (0..100_000u64)
            .map(|c| key.hotp(c, Digits::SIX).value())
            .collect();
        for (c, code) in codes.iter().enumerate() {
            for gap in 1..=WRONG_SIDE as usize {
                if codes.get(c + gap) == Some(code) {
                    return (c as u64, (c + gap) as u64);
                }
            }
        }
        panic!("no code recurs within {WRONG_SIDE} counters in the first 100,000");
    }

    #[test]
    fn a_replay_probe_is_not_sent_for_a_code_right_again_ahead() {
        let t = token([7; SECRET_LEN], 0);
        let key = t.key().unwrap();
        let (first, again) = recurring_pair(&key);
        let code = key.hotp(first, Digits::SIX).value();
        // Accepted at `first`; the token now stands at `first + 1`, and the
        // same code is right for `again`, within the look-ahead.
        let t = token([7; SECRET_LEN], first + 1);
        assert!(t.recurs_ahead(Kind::Event, &key, code));
        // Once the token stands past `again`, the code is a plain replay
        // (for this secret it does not come back in the next counters).
        let t = token([7; SECRET_LEN], again + 1);
        assert!(!t.recurs_ahead(Kind::Event, &key, code));
    }

    #[test]
    fn steal_and_idle_are_shares_of_the_machine_s_cpu_time() {
        let then = CpuTimes::parse(
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n",
        );
        // 1,000 ticks later: 300 user, 100 system, 400 idle, 100 iowait, 100 steal.
        let now = CpuTimes::parse("cpu  400 0 150 1200 150 0 0 100 0 0\n");
        let share = share(now, then).unwrap();
        assert!((share.steal_pct - 10.0).abs() < 1e-9, "{}", share.steal_pct);
        assert!((share.idle_pct - 50.0).abs() < 1e-9, "{}", share.idle_pct);
        // No time between the samples, or a line not understood: no share.
        assert!(super::share(then, then).is_none());
        assert!(CpuTimes::parse("cpu  1 2 3\n").is_none());
        assert!(CpuTimes::parse("intr 1\n").is_none());
    }

    #[test]
    fn a_usual_replay_probe_is_sent() {
        let t = token([9; SECRET_LEN], 41);
        let key = t.key().unwrap();
        let last = key.hotp(40, Digits::SIX).value();
        let ahead: Vec<u32> = (41..=41 + WRONG_SIDE)
            .map(|c| key.hotp(c, Digits::SIX).value())
            .collect();
        assert!(!ahead.contains(&last), "pick another secret for this test");
        assert!(!t.recurs_ahead(Kind::Event, &key, last));
        // Any code of the look-ahead counts, the first and the last.
        assert!(t.recurs_ahead(Kind::Event, &key, ahead[0]));
        assert!(t.recurs_ahead(Kind::Event, &key, ahead[ahead.len() - 1]));
    }
}
