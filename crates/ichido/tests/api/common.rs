//! Test harness: starts `ichido serve` on a free port in a temporary directory
//! and gives a small JSON client for its API.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ichido_otp::{base32, Algorithm, Digits, Key};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_ichido");

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub db_url: String,
    pub dir: tempfile::TempDir,
    /// A PostgreSQL schema this server's test created, dropped with it.
    pub owned_schema: Option<String>,
}

impl Server {
    /// Starts a server on a fresh SQLite database, with cheap password hashing.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}/ichido.db", dir.path().display());
        Self::start_on(dir, db_url, extra)
    }

    pub fn start_on(dir: tempfile::TempDir, db_url: String, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", &db_url])
            .args(["--argon2-memory-kib", "1024", "--argon2-iterations", "1"])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("ICHIDO_MASTER_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start ichido serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ichido listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("ichido serve did not start");
            }
        };
        Server {
            child,
            base,
            db_url,
            dir,
            owned_schema: None,
        }
    }

    /// Creates an operator with the CLI and returns its API key.
    pub fn operator_key(&self, name: &str) -> String {
        let out = Command::new(BIN)
            .args(["operator", "create", name, "--database", &self.db_url])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "operator create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap();
        let key = key.trim_end().to_owned();
        assert!(
            key.starts_with("ichido_op_") && !key.contains('\n'),
            "stdout must hold only the key"
        );
        key
    }

    pub fn api(&self, name: &str) -> Api {
        Api::new(&self.base, &self.operator_key(name))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if let Some(schema) = &self.owned_schema {
            let _ = Command::new("psql")
                .args([
                    &postgres_base(),
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .output();
        }
    }
}

/// A JSON client with an operator key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            key: key.to_owned(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.base))
                .bearer_auth(&self.key)
                .json(&body),
        )
        .await
    }

    /// A customer call: no operator key.
    pub async fn post_anon(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}/api/v1{path}", self.base))
                .bearer_auth(&self.key),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .delete(format!("{}/api/v1{path}", self.base))
                .bearer_auth(&self.key),
        )
        .await
    }

    pub async fn validate(&self, token_id: &str, otp: &str) -> (StatusCode, Value) {
        self.post("/validate", json!({"token_id": token_id, "otp": otp}))
            .await
    }

    /// Creates a contract (if new) and a user with the given role.
    pub async fn user(&self, contract: &str, user: &str, role: &str) {
        let (s, _) = self
            .post(
                "/contracts",
                json!({"contract_no": contract, "name": "Acme Trading"}),
            )
            .await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::CONFLICT,
            "contract: {s}"
        );
        let (s, b) = self
            .post(
                &format!("/contracts/{contract}/users"),
                json!({"user_id": user, "name": "Yamada Taro", "role": role,
                       "login_password": PASSWORD, "transaction_password": "tx-password-1"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "user: {b}");
    }

    /// Registers a token and activates it with its first code.
    pub async fn token(&self, contract: &str, user: &str, kind: &str) -> Reg {
        let reg = self.register(contract, user, kind).await;
        let first = reg.first_code();
        let (s, b) = self
            .post_anon(
                &format!("/registrations/{}/activate", reg.token_id),
                json!({"otp": first}),
            )
            .await;
        assert_eq!((s, b), (StatusCode::OK, json!({"state": "active"})));
        reg
    }

    pub async fn register(&self, contract: &str, user: &str, kind: &str) -> Reg {
        let (s, b) = self
            .post_anon("/registrations", json!({"contract_no": contract, "user_id": user, "login_password": PASSWORD, "kind": kind}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "registration: {b}");
        let secret = base32::decode(b["secret"].as_str().unwrap()).unwrap();
        Reg {
            token_id: b["token_id"].as_str().unwrap().to_owned(),
            kind: kind.to_owned(),
            secret_b32: b["secret"].as_str().unwrap().to_owned(),
            key: Key::new(Algorithm::Sha1, &secret).unwrap(),
            body: b,
        }
    }

    pub async fn token_state(&self, contract: &str, user: &str) -> Value {
        let (s, b) = self
            .get(&format!("/contracts/{contract}/users/{user}"))
            .await;
        assert_eq!(s, StatusCode::OK);
        b["token"].clone()
    }
}

pub const PASSWORD: &str = "login-password-1";

/// The PostgreSQL server the tests use (`ICHIDO_TEST_POSTGRES_URL`, default the
/// machine's local server, database `test`).
pub fn postgres_base() -> String {
    std::env::var("ICHIDO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema on the test PostgreSQL, as a database URL whose connections
/// use it; `None` (with a notice) when PostgreSQL is unreachable outside CI.
pub fn postgres_schema_url(base: &str) -> Option<(String, String)> {
    let schema = format!("ichido_it_{:016x}", rand_u64());
    let out = Command::new("psql")
        .args([
            &postgres_base(),
            "-q",
            "-c",
            &format!("CREATE SCHEMA {schema}"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required in CI: {other:?}"
            );
            eprintln!("NOTICE: PostgreSQL unreachable; PostgreSQL test skipped ({other:?})");
            return None;
        }
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A registered token, with its key for computing codes.
pub struct Reg {
    pub token_id: String,
    pub kind: String,
    pub secret_b32: String,
    pub key: Key,
    pub body: Value,
}

impl Reg {
    pub fn hotp(&self, counter: u64) -> String {
        self.key.hotp(counter, Digits::SIX).to_string()
    }

    pub fn totp_at(&self, unix: u64) -> String {
        self.key.totp(unix, 30, Digits::SIX).to_string()
    }

    pub fn first_code(&self) -> String {
        if self.kind == "event" {
            self.hotp(0)
        } else {
            self.totp_at(now())
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts an error answer: status and contract code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message: {}",
        got.1
    );
}

/// Sends only the head of a POST whose `Content-Length` says `declared`
/// bytes follow, over a raw connection, and reads what the server answers
/// until it closes the connection: (status, head, body). A body over the
/// limit is refused from its declared length, before any of it is read; a
/// client library would race the early answer while still writing.
pub async fn post_head_only(
    base: &str,
    key: &str,
    path: &str,
    declared: usize,
) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v1{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after a 413")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
