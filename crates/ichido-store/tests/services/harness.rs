//! Fixtures of the domain + storage conformance suite: a validation center on a
//! real store with a [`FixedClock`], tokens whose codes the test can compute, and
//! the checks every test ends with (audit chain intact, nothing secret logged).
//!
//! Every test runs on both backends: [`conformance!`] instantiates it once in
//! `mod sqlite` and once in `mod postgres`, and [`run`] makes the backend known to
//! [`store`] and [`FileDb`] for the test's duration (a task-local). PostgreSQL
//! tests use `ICHIDO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each store in a fresh schema with a
//! random name, dropped when the test ends. If the server does not answer, the
//! test fails when `CI` is set and is skipped with a loud notice otherwise.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ichido_domain::audit::{AuditEvent, AuditFilter};
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Role, Token, TokenKind, TokenState};
use ichido_domain::password::PasswordParams;
use ichido_domain::seal::MasterKey;
use ichido_domain::services::{Actor, NewUser, Registration};
use ichido_domain::store::{Acceptance, Store};
use ichido_domain::{DomainError, FixedClock, Ichido, Policy};
use ichido_otp::{base32, Code, Digits, Key};
use ichido_store::{PgStore, SqliteStore, StoreOptions};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;

/// The right login password of every user the fixtures create.
pub const PASSWORD: &str = "login-pass-0001";
/// The transaction password of every user the fixtures create.
pub const TX_PASSWORD: &str = "txn-pass-0002";
/// A wrong login password.
pub const WRONG_PASSWORD: &str = "not-the-pass-0003";
/// Every password a test uses: none of them may ever reach the audit log.
pub const ALL_PASSWORDS: [&str; 3] = [PASSWORD, TX_PASSWORD, WRONG_PASSWORD];

/// The suite's "now": 5 seconds into a 30-second step (so ±5 minutes stays aligned).
pub const T0: i64 = 30 * 58_333_333 + 5;

/// Fast argon2id: the suite checks rules, not hashing cost.
pub const FAST: PasswordParams = PasswordParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// The backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each listed test (a plain `async fn name()`) once per backend:
/// `sqlite::name` and `postgres::name`. `current` tests run on a current-thread
/// runtime, `multi` ones on two worker threads.
macro_rules! conformance {
    (current: [$($c:ident),* $(,)?]; multi: [$($m:ident),* $(,)?];) => {
        conformance!(@backend sqlite, Sqlite, [$($c),*], [$($m),*]);
        conformance!(@backend postgres, Postgres, [$($c),*], [$($m),*]);
    };
    (@backend $module:ident, $backend:ident, [$($c:ident),*], [$($m:ident),*]) => {
        mod $module {
            use super::harness::{run, Backend};
            $(
                #[tokio::test]
                async fn $c() {
                    run(Backend::$backend, super::$c).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $m() {
                    run(Backend::$backend, super::$m).await
                }
            )*
        }
    };
}

/// The PostgreSQL server of the tests.
pub fn postgres_url() -> String {
    std::env::var("ICHIDO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The server's URL if it answers. If not: panics when `CI` is set, else prints
/// a loud notice and returns `None` (the caller skips its test).
pub async fn postgres_or_skip() -> Option<String> {
    let url = postgres_url();
    let options = PgConnectOptions::from_str(&url).expect("ICHIDO_TEST_POSTGRES_URL parses");
    let connected =
        tokio::time::timeout(std::time::Duration::from_secs(5), options.connect()).await;
    let err = match connected {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Some(url);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    let msg = format!(
        "PostgreSQL does not answer at {} ({err}): start it (scripts/test.sh does) \
         or set ICHIDO_TEST_POSTGRES_URL",
        ichido_store::redact_url(&url)
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED on PostgreSQL: {msg} !!!!!!!!!!\n");
    None
}

/// A new, unused schema name.
pub fn fresh_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "ichido_test_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops schemas made by a test (best effort).
pub async fn drop_schemas(url: &str, schemas: &[String]) {
    if schemas.is_empty() {
        return;
    }
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return;
    };
    let Ok(mut conn) = options.connect().await else {
        return;
    };
    for s in schemas {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
}

/// What a running test's stores are made on.
struct TestDb {
    /// `None` on SQLite.
    pg_url: Option<String>,
    /// PostgreSQL schemas handed out, to drop at the end.
    schemas: Mutex<Vec<String>>,
}

impl TestDb {
    fn schema(&self) -> String {
        let s = fresh_schema();
        self.schemas.lock().unwrap().push(s.clone());
        s
    }
}

tokio::task_local! {
    static TEST_DB: Arc<TestDb>;
}

fn test_db() -> Arc<TestDb> {
    TEST_DB
        .try_with(Arc::clone)
        .expect("stores are made inside harness::run (see conformance!)")
}

/// A future that turns a panic of `F` into an `Err`, so the schemas of a failed
/// test are dropped too.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Runs one test on `backend`.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let pg_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match postgres_or_skip().await {
            Some(url) => Some(url),
            None => return,
        },
    };
    let db = Arc::new(TestDb {
        pg_url,
        schemas: Mutex::new(Vec::new()),
    });
    let outcome = CatchUnwind(Box::pin(TEST_DB.scope(Arc::clone(&db), test()))).await;
    if let Some(url) = &db.pg_url {
        let schemas = db.schemas.lock().unwrap().clone();
        drop_schemas(url, &schemas).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A fresh, empty, migrated store (the backend under test).
pub async fn store() -> Arc<dyn Store> {
    let db = test_db();
    match &db.pg_url {
        None => Arc::new(
            SqliteStore::open("sqlite::memory:", &StoreOptions::default())
                .await
                .expect("open in-memory SQLite store"),
        ),
        Some(url) => Arc::new(
            PgStore::open_in_schema(url, &db.schema(), &StoreOptions::default())
                .await
                .expect("open PostgreSQL store"),
        ),
    }
}

/// A token row as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct RawToken {
    pub token_id: String,
    pub contract_no: String,
    pub user_id: String,
    pub state: String,
    pub sealed_secret: Vec<u8>,
}

/// One database shared by several pools ("server instances"), for races and
/// for looking at the raw rows: a file on SQLite, a schema on PostgreSQL.
pub struct FileDb {
    inner: SharedDb,
}

enum SharedDb {
    Sqlite { dir: TempDir, path: PathBuf },
    Postgres { url: String, schema: String },
}

impl FileDb {
    pub fn new() -> FileDb {
        let db = test_db();
        let inner = match &db.pg_url {
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("ichido.db");
                SharedDb::Sqlite { dir, path }
            }
            Some(url) => SharedDb::Postgres {
                url: url.clone(),
                schema: db.schema(),
            },
        };
        FileDb { inner }
    }

    /// One more independent pool on the same database.
    pub async fn open(&self, max_connections: u32) -> Arc<dyn Store> {
        let opts = StoreOptions {
            max_connections,
            ..StoreOptions::default()
        };
        match &self.inner {
            SharedDb::Sqlite { path, .. } => Arc::new(
                SqliteStore::open(&format!("sqlite://{}", path.display()), &opts)
                    .await
                    .expect("open file SQLite store"),
            ),
            SharedDb::Postgres { url, schema } => Arc::new(
                PgStore::open_in_schema(url, schema, &opts)
                    .await
                    .expect("open PostgreSQL store"),
            ),
        }
    }

    fn pg_options(url: &str, schema: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(url)
            .expect("postgres URL")
            .options([("search_path", schema)])
    }

    /// Every token row, by token ID, read with a plain connection.
    pub async fn raw_tokens(&self) -> Vec<RawToken> {
        const SQL: &str = "SELECT token_id, contract_no, user_id, state, sealed_secret \
                           FROM tokens ORDER BY token_id";
        match &self.inner {
            SharedDb::Sqlite { path, .. } => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .expect("raw sqlx pool");
                let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
            SharedDb::Postgres { url, schema } => {
                let mut conn = Self::pg_options(url, schema).connect().await.unwrap();
                let rows = sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
        }
    }

    /// Everything stored. SQLite: every byte of every file of the database (main
    /// file, WAL, shared memory). PostgreSQL (whose files belong to the server):
    /// every row of every table as JSON text, and the raw bytes of every BYTEA.
    pub async fn all_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.inner {
            SharedDb::Sqlite { dir, .. } => {
                for entry in std::fs::read_dir(dir.path()).expect("read temp dir") {
                    let p = entry.expect("dir entry").path();
                    out.extend(std::fs::read(&p).expect("read db file"));
                }
            }
            SharedDb::Postgres { url, schema } => {
                let mut conn = Self::pg_options(url, schema).connect().await.unwrap();
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                )
                .bind(schema)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                assert!(tables.len() >= 9, "the schema's tables: {tables:?}");
                for (t,) in &tables {
                    let (text,): (String,) = sqlx::query_as(&format!(
                        "SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{t}\" t"
                    ))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                    out.extend(text.into_bytes());
                }
                for sql in [
                    "SELECT sealed_secret FROM tokens",
                    "SELECT key_hash FROM operators",
                    "SELECT id_hash FROM sessions",
                ] {
                    let blobs: Vec<(Vec<u8>,)> =
                        sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
                    for (b,) in blobs {
                        out.extend(b);
                    }
                }
                conn.close().await.unwrap();
            }
        }
        out
    }
}

/// Whether `needle` occurs in `haystack` (byte-wise).
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Luhn check computed independently of the domain's implementation.
pub fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.rem_euclid(10) == 0
}

/// Asserts that `$e` is `Err($p)`, showing what it was otherwise.
macro_rules! assert_err {
    ($e:expr, $p:pat) => {
        match $e {
            Err($p) => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($p),
                other.map(|_| "Ok(..)")
            ),
        }
    };
}

/// A registered token as its holder knows it: the secret, and every code the test
/// computed from it (so the audit log can be checked never to contain one).
pub struct Issued {
    pub token_id: String,
    pub kind: TokenKind,
    pub contract_no: String,
    pub user_id: String,
    pub secret: Vec<u8>,
    pub secret_b32: String,
    pub otpauth_uri: String,
    pub key: Key,
    pub digits: Digits,
    pub period: u64,
    codes: Mutex<Vec<String>>,
}

impl Issued {
    fn remember(&self, code: Code) -> String {
        let s = code.to_string();
        self.codes.lock().unwrap().push(s.clone());
        s
    }

    /// The HOTP code of `counter` (also the TOTP code of time step `counter`).
    pub fn hotp(&self, counter: u64) -> String {
        self.remember(self.key.hotp(counter, self.digits))
    }

    /// The TOTP code at `unix` seconds.
    pub fn totp(&self, unix: i64) -> String {
        let t = u64::try_from(unix).unwrap();
        self.remember(self.key.totp(t, self.period, self.digits))
    }

    /// The code of time step `step`.
    pub fn step_code(&self, step: u64) -> String {
        self.hotp(step)
    }

    /// A well-formed code that matches no counter/step within 50 of `around`.
    pub fn wrong_code(&self, around: u64) -> String {
        let near: Vec<u32> = (around.saturating_sub(50)..=around + 50)
            .map(|c| self.key.hotp(c, self.digits).value())
            .collect();
        let modulus = 10u32.pow(u32::from(self.digits.get()));
        let mut v = self.key.hotp(around, self.digits).value();
        loop {
            v = (v + 7919) % modulus;
            if !near.contains(&v) {
                let s = format!("{v:0width$}", width = usize::from(self.digits.get()));
                self.codes.lock().unwrap().push(s.clone());
                return s;
            }
        }
    }

    pub fn codes(&self) -> Vec<String> {
        self.codes.lock().unwrap().clone()
    }
}

/// The time step of `unix` for a 30-second period.
pub fn step_of(unix: i64) -> u64 {
    u64::try_from(unix).unwrap() / 30
}

/// A validation center under test.
pub struct Center {
    pub ichido: Arc<Ichido>,
    pub clock: Arc<FixedClock>,
    pub store: Arc<dyn Store>,
    pub op: Actor,
    issued: Mutex<Vec<Arc<Issued>>>,
}

impl Center {
    /// A center on a fresh store, its clock at [`T0`].
    pub async fn new() -> Center {
        Center::on(
            store().await,
            Arc::new(FixedClock::new(T0)),
            MasterKey::generate(),
        )
    }

    pub fn on(store: Arc<dyn Store>, clock: Arc<FixedClock>, master: MasterKey) -> Center {
        Center::with_policy(store, clock, master, Policy::default())
    }

    pub fn with_policy(
        store: Arc<dyn Store>,
        clock: Arc<FixedClock>,
        master: MasterKey,
        policy: Policy,
    ) -> Center {
        let ichido =
            Ichido::new(Arc::clone(&store), clock.clone(), policy, master, FAST).expect("ichido");
        Center {
            ichido: Arc::new(ichido),
            clock,
            store,
            op: Actor::Operator("ops".into()),
            issued: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> i64 {
        self.ichido.now()
    }

    /// Creates the contract unless it exists.
    pub async fn contract(&self, contract_no: &str) {
        match self
            .ichido
            .create_contract(&self.op, contract_no, "Acme Trading")
            .await
        {
            Ok(_) | Err(DomainError::Conflict(_)) => {}
            Err(e) => panic!("create contract {contract_no}: {e:?}"),
        }
    }

    /// Creates an approver (and its contract if needed) with [`PASSWORD`].
    pub async fn user(&self, contract_no: &str, user_id: &str) {
        self.contract(contract_no).await;
        self.ichido
            .create_user(
                &self.op,
                contract_no,
                NewUser {
                    user_id: user_id.to_owned(),
                    name: "Taro Yamada".to_owned(),
                    role: Role::Approver,
                    login_password: PASSWORD.to_owned().into(),
                    transaction_password: TX_PASSWORD.to_owned().into(),
                },
            )
            .await
            .expect("create user");
    }

    /// Registers a pending token for an existing user.
    pub async fn register(&self, contract_no: &str, user_id: &str, kind: TokenKind) -> Arc<Issued> {
        let reg = self
            .ichido
            .register(contract_no, user_id, PASSWORD, kind)
            .await
            .expect("register");
        self.adopt(reg)
    }

    /// Takes over a registration made elsewhere (e.g. in a spawned task).
    pub fn adopt(&self, reg: Registration) -> Arc<Issued> {
        let secret = reg.secret.to_vec();
        let issued = Arc::new(Issued {
            token_id: reg.token.token_id.as_str().to_owned(),
            kind: reg.token.kind,
            contract_no: reg.token.contract_no.clone(),
            user_id: reg.token.user_id.clone(),
            secret_b32: base32::encode(&secret),
            otpauth_uri: reg.otpauth_uri.to_string(),
            key: Key::new(reg.token.algorithm, &secret).expect("key"),
            digits: reg.token.digits,
            period: u64::from(reg.token.period),
            secret,
            codes: Mutex::new(Vec::new()),
        });
        self.issued.lock().unwrap().push(Arc::clone(&issued));
        issued
    }

    /// Takes over a token whose secret the test chose (e.g. an imported one).
    pub fn adopt_token(&self, token: &Token, secret: &[u8]) -> Arc<Issued> {
        let issued = Arc::new(Issued {
            token_id: token.token_id.as_str().to_owned(),
            kind: token.kind,
            contract_no: token.contract_no.clone(),
            user_id: token.user_id.clone(),
            secret_b32: base32::encode(secret),
            otpauth_uri: String::new(),
            key: Key::new(token.algorithm, secret).expect("key"),
            digits: token.digits,
            period: u64::from(token.period),
            secret: secret.to_vec(),
            codes: Mutex::new(Vec::new()),
        });
        self.issued.lock().unwrap().push(Arc::clone(&issued));
        issued
    }

    /// Activates with the first code: counter 0 (event) or the current step (time).
    pub async fn activate(&self, t: &Issued) -> Token {
        let code = match t.kind {
            TokenKind::Event => t.hotp(0),
            TokenKind::Time => t.totp(self.now()),
        };
        let token = self
            .ichido
            .activate(&t.token_id, &code)
            .await
            .expect("activate");
        assert_eq!(token.state, TokenState::Active);
        token
    }

    /// A new user with an active token.
    pub async fn active(&self, contract_no: &str, user_id: &str, kind: TokenKind) -> Arc<Issued> {
        self.user(contract_no, user_id).await;
        let t = self.register(contract_no, user_id, kind).await;
        self.activate(&t).await;
        t
    }

    pub async fn validate(&self, t: &Issued, code: &str) -> Result<Acceptance, DomainError> {
        self.ichido.validate(&self.op, &t.token_id, code).await
    }

    /// The token as stored, whatever its state.
    pub async fn stored(&self, t: &Issued) -> Token {
        let id: TokenId = t.token_id.parse().unwrap();
        self.store.token(&id).await.unwrap().expect("token stored")
    }

    /// The user's live token as the operator API shows it.
    pub async fn live(&self, t: &Issued) -> Option<Token> {
        self.ichido
            .user_view(&t.contract_no, &t.user_id)
            .await
            .unwrap()
            .token
    }

    /// Failures of the user's live token.
    pub async fn failures(&self, t: &Issued) -> u32 {
        self.live(t).await.expect("live token").failures
    }

    /// The whole audit log, oldest first.
    pub async fn audit(&self) -> Vec<AuditEvent> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .ichido
                .audit_events(AuditFilter {
                    before_seq: before,
                    limit: 1000,
                    ..AuditFilter::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            all.extend(page);
        }
        all.reverse();
        all
    }

    /// Events of one token, oldest first.
    pub async fn token_audit(&self, t: &Issued) -> Vec<AuditEvent> {
        let mut v = self
            .ichido
            .audit_events(AuditFilter {
                token_id: Some(t.token_id.clone()),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        v.reverse();
        v
    }

    /// The check every test ends with: the audit chain verifies end to end, and
    /// no event holds a secret (base32 or hex), a code or a password.
    pub async fn assert_audit_clean(&self) {
        let events = self.audit().await;
        assert!(!events.is_empty(), "the audit log is empty");
        let report = self.ichido.verify_audit_chain(|_| {}).await.unwrap();
        assert_eq!(report.fault, None, "audit chain fault");
        assert_eq!(report.checked, events.len() as u64);
        let issued = self.issued.lock().unwrap().clone();
        let token_ids: Vec<&str> = issued.iter().map(|t| t.token_id.as_str()).collect();
        for e in &events {
            let text_fields = [
                Some(e.actor.as_str()),
                Some(e.action.as_str()),
                e.contract_no.as_deref(),
                e.user_id.as_deref(),
                Some(e.outcome.as_str()),
            ];
            let all_fields = text_fields
                .iter()
                .copied()
                .chain([
                    e.token_id.as_deref(),
                    Some(e.prev_hash.as_str()),
                    Some(e.hash.as_str()),
                ])
                .flatten()
                .collect::<Vec<_>>();
            if let Some(id) = &e.token_id {
                assert!(
                    token_ids.contains(&id.as_str()),
                    "event {} names a token never issued: {id}",
                    e.seq
                );
            }
            for f in &all_fields {
                for pw in ALL_PASSWORDS {
                    assert!(!f.contains(pw), "event {} holds a password", e.seq);
                }
                for t in &issued {
                    assert!(
                        !f.contains(&t.secret_b32),
                        "event {} holds a base32 secret",
                        e.seq
                    );
                    assert!(
                        !f.to_ascii_lowercase().contains(&to_hex(&t.secret)),
                        "event {} holds a hex secret",
                        e.seq
                    );
                }
            }
            // Codes are short digit strings: look for them in the free-text fields
            // (token IDs were checked to be issued IDs, hashes are hex digests).
            for f in text_fields.iter().flatten() {
                for t in &issued {
                    for code in t.codes() {
                        assert!(
                            !f.contains(&code),
                            "event {} ({} {}) holds a code",
                            e.seq,
                            e.action,
                            e.outcome
                        );
                    }
                }
            }
        }
    }
}

/// Whether the log has an event with this action whose outcome starts with `outcome`.
pub fn has_event(events: &[AuditEvent], action: &str, outcome: &str) -> bool {
    events
        .iter()
        .any(|e| e.action == action && e.outcome.starts_with(outcome))
}

/// How many events have this action and exactly this outcome.
pub fn count_events(events: &[AuditEvent], action: &str, outcome: &str) -> usize {
    events
        .iter()
        .filter(|e| e.action == action && e.outcome == outcome)
        .count()
}
