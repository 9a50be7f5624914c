//! A bank in a box: the real router over in-memory SQLite with a fake clock,
//! an operator key, and helpers that speak the HTTP API.

use std::cell::Cell;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use ichido_domain::password::PasswordParams;
use ichido_domain::seal::MasterKey;
use ichido_domain::{Clock, FixedClock, Ichido, Policy};
use ichido_otp::{base32, Algorithm, Digits, Key};
use ichido_server::limits::RateSettings;
use ichido_server::{app, AppState};
use ichido_store::{SqliteStore, StoreOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const PASSWORD: &str = "login-password-1";
pub const TX_PASSWORD: &str = "transaction-pw-1";

pub struct Bank {
    pub clock: Arc<FixedClock>,
    pub ichido: Arc<Ichido>,
    state: AppState,
    op_key: String,
}

/// A registered token and the generator's position.
pub struct Reg {
    pub token_id: String,
    pub kind: String,
    pub key: Key,
    pub counter: Cell<u64>,
}

impl Reg {
    pub fn hotp(&self, c: u64) -> String {
        self.key.hotp(c, Digits::SIX).to_string()
    }

    pub fn totp(&self, unix: u64) -> String {
        self.key.totp(unix, 30, Digits::SIX).to_string()
    }

    /// The generator's next code: the next counter, or (time) the code of a
    /// fresh step after moving the clock on by one step.
    pub fn next_code(&self, b: &Bank) -> String {
        if self.kind == "event" {
            let c = self.counter.get();
            self.counter.set(c + 1);
            self.hotp(c)
        } else {
            b.clock.advance(30);
            self.totp(u64::try_from(b.now()).unwrap())
        }
    }
}

impl Bank {
    pub async fn new() -> Bank {
        Self::with_rate(RateSettings {
            per_address: 0,
            per_user: 0,
            validate_per_address: 0,
        })
        .await
    }

    pub async fn with_rate(rate: RateSettings) -> Bank {
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let clock = Arc::new(FixedClock::new(1_800_000_000));
        let fast = PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let ichido = Arc::new(
            Ichido::new(
                Arc::new(store),
                clock.clone(),
                Policy::default(),
                MasterKey::generate(),
                fast,
            )
            .unwrap(),
        );
        let (_, key) = ichido.create_operator("branch-ops").await.unwrap();
        let state = AppState::with_limits(Arc::clone(&ichido), rate);
        Bank {
            clock,
            ichido,
            state,
            op_key: key.0.to_string(),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let req = if method == "GET" || method == "DELETE" {
            req.body(Body::empty()).unwrap()
        } else {
            req.header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self
            .raw(method, &format!("/api/v1{path}"), bearer, body)
            .await;
        (s, v)
    }

    pub async fn op_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(&self.op_key), body).await
    }

    pub async fn op_get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(&self.op_key), Value::Null)
            .await
    }

    pub async fn op_delete(&self, path: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, Some(&self.op_key), Value::Null)
            .await
    }

    pub async fn anon_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, None, body).await
    }

    pub async fn post(&self, session: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(session), body).await
    }

    pub async fn get(&self, session: &str, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(session), Value::Null).await
    }

    pub async fn user(&self, contract: &str, user: &str, role: &str) {
        let (s, _) = self
            .op_post(
                "/contracts",
                json!({"contract_no": contract, "name": "Acme Trading"}),
            )
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::CONFLICT);
        let (s, v) = self
            .op_post(
                &format!("/contracts/{contract}/users"),
                json!({"user_id": user, "name": "Yamada", "role": role, "login_password": PASSWORD, "transaction_password": TX_PASSWORD}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    pub async fn register(&self, contract: &str, user: &str, kind: &str) -> Reg {
        let (s, v) = self
            .anon_post("/registrations", json!({"contract_no": contract, "user_id": user, "login_password": PASSWORD, "kind": kind}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let secret = base32::decode(v["secret"].as_str().unwrap()).unwrap();
        Reg {
            token_id: v["token_id"].as_str().unwrap().to_owned(),
            kind: kind.to_owned(),
            key: Key::new(Algorithm::Sha1, &secret).unwrap(),
            counter: Cell::new(0),
        }
    }

    pub async fn activate(&self, reg: &Reg) {
        let code = if reg.kind == "event" {
            reg.next_code(self)
        } else {
            reg.totp(u64::try_from(self.now()).unwrap())
        };
        let (s, v) = self
            .anon_post(
                &format!("/registrations/{}/activate", reg.token_id),
                json!({"otp": code}),
            )
            .await;
        assert_eq!((s, v), (StatusCode::OK, json!({"state": "active"})));
    }

    pub async fn token(&self, contract: &str, user: &str, kind: &str) -> Reg {
        let r = self.register(contract, user, kind).await;
        self.activate(&r).await;
        r
    }

    pub async fn login_with(
        &self,
        contract: &str,
        user: &str,
        password: &str,
        token_id: Option<&str>,
        otp: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut body =
            json!({"contract_no": contract, "user_id": user, "login_password": password});
        if let Some(t) = token_id {
            body["token_id"] = json!(t);
        }
        if let Some(o) = otp {
            body["otp"] = json!(o);
        }
        self.anon_post("/login", body).await
    }

    pub async fn login(
        &self,
        contract: &str,
        user: &str,
        token_id: Option<&str>,
        otp: Option<&str>,
    ) -> (StatusCode, Value) {
        self.login_with(contract, user, PASSWORD, token_id, otp)
            .await
    }

    /// Logs in (with the token's next code when given) and returns the session.
    pub async fn session(&self, contract: &str, user: &str, reg: Option<&Reg>) -> String {
        let (s, v) = match reg {
            Some(r) => {
                let code = r.next_code(self);
                self.login(contract, user, Some(&r.token_id), Some(&code))
                    .await
            }
            None => self.login(contract, user, None, None).await,
        };
        assert_eq!(s, StatusCode::OK, "{v}");
        v["session"].as_str().unwrap().to_owned()
    }

    pub fn assert_err(&self, got: (StatusCode, Value), status: u16, code: &str) {
        assert_eq!(got.0.as_u16(), status, "{}", got.1);
        assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    }
}
