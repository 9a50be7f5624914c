//! Test harness: builds and starts `ichido serve` (a bank), and runs `ichido-token` on a customer's PC (a temp dir).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub const TOKEN_BIN: &str = env!("CARGO_BIN_EXE_ichido-token");
pub const PASSWORD: &str = "login-password-1";
pub const PASSPHRASE: &str = "correct horse battery";

/// The `ichido` server binary beside `ichido-token`, built first if missing
/// (a fresh clone running only this crate's tests).
pub fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let me = PathBuf::from(TOKEN_BIN);
        let bin = me.with_file_name(format!("ichido{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let release = me
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|p| p == "release");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "-p", "ichido", "--bin", "ichido"])
                .current_dir(root);
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build -p ichido");
            assert!(status.success(), "cargo build -p ichido failed");
        }
        assert!(bin.exists(), "no server binary at {}", bin.display());
        bin
    })
}

/// A running `ichido serve` with an operator; killed when dropped.
pub struct Bank {
    child: Child,
    pub url: String,
    key: String,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Bank {
    pub fn start() -> Bank {
        Bank::start_with(&[])
    }

    /// A bank with extra `ichido serve` flags.
    pub fn start_with(extra: &[&str]) -> Bank {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}/ichido.db", dir.path().display());
        let mut child = Command::new(server_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db_url])
            .args(["--argon2-memory-kib", "1024", "--argon2-iterations", "1"])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("ICHIDO_MASTER_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ichido serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ichido listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("ichido serve did not start");
        };
        let out = Command::new(server_bin())
            .args(["operator", "create", "branch-ops", "--database", &db_url])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bank {
            child,
            url,
            key: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            http: reqwest::blocking::Client::new(),
            _dir: dir,
        }
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// An operator call.
    pub fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.url);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        self.send(req.bearer_auth(&self.key))
    }

    /// A customer call (no operator key).
    pub fn customer(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.url))
                .json(&body),
        )
    }

    /// Creates the contract (if new) and an approver in it.
    pub fn user(&self, contract: &str, user: &str) {
        let (s, _) = self.call(
            "POST",
            "/contracts",
            json!({"contract_no": contract, "name": "Acme Trading"}),
        );
        assert!(s == 201 || s == 409, "contract: {s}");
        let (s, b) = self.call(
            "POST",
            &format!("/contracts/{contract}/users"),
            json!({"user_id": user, "name": "Yamada Taro", "role": "approver",
                   "login_password": PASSWORD, "transaction_password": "tx-password-1"}),
        );
        assert_eq!(s, 201, "user: {b}");
    }

    /// `POST /validate` as a relying party.
    pub fn validate(&self, token_id: &str, otp: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/validate",
            json!({"token_id": token_id, "otp": otp}),
        )
    }

    pub fn assert_valid(&self, token_id: &str, otp: &str) {
        assert_eq!(
            self.validate(token_id, otp),
            (200, json!({"valid": true})),
            "code {otp} of {token_id}"
        );
    }

    pub fn assert_refused(&self, token_id: &str, otp: &str, code: &str) {
        let (s, b) = self.validate(token_id, otp);
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some(code)), "{b}");
    }

    /// The user's token as the operator sees it.
    pub fn token(&self, contract: &str, user: &str) -> Value {
        let (s, b) = self.call(
            "GET",
            &format!("/contracts/{contract}/users/{user}"),
            Value::Null,
        );
        assert_eq!(s, 200, "{b}");
        b["token"].clone()
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run of `ichido-token` printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Asserts success and returns stdout without its final newline.
    pub fn out(&self) -> &str {
        assert!(self.ok, "expected success; stderr: {}", self.stderr);
        self.stdout.strip_suffix('\n').unwrap_or(&self.stdout)
    }

    /// Asserts failure with a message containing every one of `needles`, and nothing on stdout.
    pub fn fails_with(&self, needles: &[&str]) {
        assert!(!self.ok, "expected failure; stdout: {}", self.stdout);
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        for n in needles {
            assert!(self.stderr.contains(n), "missing {n:?} in: {}", self.stderr);
        }
    }
}

/// A customer's PC: a home folder and a token store in it.
pub struct Pc {
    pub home: tempfile::TempDir,
    pub store: PathBuf,
}

impl Pc {
    pub fn new() -> Pc {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join("tokens.json");
        Pc { home, store }
    }

    /// `ichido-token` with this PC's store, no passphrase in the environment,
    /// and a home folder of its own (the user's real config is never touched).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(TOKEN_BIN);
        cmd.env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("ICHIDO_TOKEN_STORE", &self.store)
            .env_remove("ICHIDO_TOKEN_PASSPHRASE")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    /// Runs with `input` on standard input.
    pub fn run_with(&self, args: &[&str], input: &str, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.cmd();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        // The program may exit (refusing) before it reads its input.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        Run::from(child.wait_with_output().unwrap())
    }

    /// Registers (利用開始登録) and returns the token ID printed.
    pub fn register(&self, bank: &Bank, contract: &str, user: &str, kind: &str) -> String {
        let run = self.run_with(
            &[
                "register",
                "--server",
                &bank.url,
                "--contract",
                contract,
                "--user",
                user,
                "--kind",
                kind,
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
            &[],
        );
        let id = run.out().to_owned();
        assert!(is_token_id(&id), "stdout must be the token ID only: {id:?}");
        id
    }

    /// One `ichido-token code` with `args`: the code (stdout holds nothing else).
    pub fn code(&self, args: &[&str]) -> String {
        let mut all = vec!["code"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        let code = run.out().to_owned();
        assert!(
            code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
            "stdout must be the code only: {:?}",
            run.stdout
        );
        code
    }

    pub fn store_text(&self) -> String {
        std::fs::read_to_string(&self.store).unwrap()
    }

    pub fn store_json(&self) -> Value {
        serde_json::from_str(&self.store_text()).unwrap()
    }
}

pub fn is_token_id(s: &str) -> bool {
    s.len() == 12
        && s[..4].bytes().all(|b| b.is_ascii_uppercase())
        && s[4..].bytes().all(|b| b.is_ascii_digit())
}

/// Sleeps into the next 30-second step (the current one was spent by activation).
pub fn wait_next_step() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_millis() % 30_000;
    std::thread::sleep(Duration::from_millis(
        u64::try_from(30_000 - into).unwrap() + 200,
    ));
}

#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
