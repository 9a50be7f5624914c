//! Exactly once under faults, on SQLite (one file) and PostgreSQL (one schema):
//! two server processes race for the same code; a server killed with SIGKILL
//! mid-load and restarted accepts none of the codes it had accepted.

use std::sync::Arc;

use reqwest::StatusCode;
use tokio::sync::Barrier;

use crate::common::{Api, Server};

/// Where the database lives for a test.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A first server on a fresh database of `backend`, or `None` if unavailable.
fn first_server(backend: Backend) -> Option<Server> {
    match backend {
        Backend::Sqlite => Some(Server::start(&[])),
        Backend::Postgres => {
            let (url, schema) =
                crate::common::postgres_schema_url(&crate::common::postgres_base())?;
            let mut s = Server::start_on(tempfile::TempDir::new().unwrap(), url, &[]);
            s.owned_schema = Some(schema);
            Some(s)
        }
    }
}

/// Another instance on the same database, with the same master key.
fn sibling(first: &Server) -> Server {
    let key = first.dir.path().join("ichido.key").display().to_string();
    Server::start_on(
        tempfile::TempDir::new().unwrap(),
        first.db_url.clone(),
        &["--master-key-file", &key],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_sqlite_file_accept_a_code_once() {
    two_instances_accept_a_code_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_database_accept_a_code_once() {
    two_instances_accept_a_code_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codes_accepted_before_a_sigkill_stay_spent_sqlite() {
    codes_accepted_before_a_sigkill_stay_spent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codes_accepted_before_a_sigkill_stay_spent_postgres() {
    codes_accepted_before_a_sigkill_stay_spent(Backend::Postgres).await;
}

async fn two_instances_accept_a_code_once(backend: Backend) {
    let Some(first) = first_server(backend) else {
        return;
    };
    let api = first.api("relying-party");
    let second = sibling(&first);
    let apis = [api.clone(), Api::new(&second.base, &api.key)];
    // Several tokens of both kinds, several rounds each.
    for (user, kind) in [("ev1", "event"), ("tm1", "time"), ("ev2", "event")] {
        api.user("4100000001", user, "approver").await;
        let reg = api.token("4100000001", user, kind).await;
        for round in 1..=4u64 {
            let otp = if kind == "event" {
                reg.hotp(round)
            } else {
                reg.totp_at(crate::common::now() + 30 * round)
            };
            let barrier = Arc::new(Barrier::new(20));
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let (api, barrier) =
                        (Api::new(&apis[i % 2].base, &api.key), Arc::clone(&barrier));
                    let (id, otp) = (reg.token_id.clone(), otp.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        api.validate(&id, &otp).await.0
                    })
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                if t.await.unwrap() == StatusCode::OK {
                    ok += 1;
                }
            }
            assert_eq!(
                ok, 1,
                "{user} round {round}: exactly one 200 across both instances"
            );
            api.post(
                &format!("/contracts/4100000001/users/{user}/token/unlock"),
                serde_json::json!({}),
            )
            .await;
        }
    }
}

async fn codes_accepted_before_a_sigkill_stay_spent(backend: Backend) {
    let Some(mut server) = first_server(backend) else {
        return;
    };
    let api = server.api("relying-party");
    let mut regs = Vec::new();
    for i in 0..8 {
        let user = format!("u{i}");
        api.user("4200000001", &user, "approver").await;
        regs.push(api.token("4200000001", &user, "event").await);
    }
    let regs = Arc::new(regs);
    // Drive validations on every token; kill the server while they run.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let workers: Vec<_> = (0..regs.len())
        .map(|i| {
            let (api, regs, accepted) = (api.clone(), Arc::clone(&regs), Arc::clone(&accepted));
            tokio::spawn(async move {
                let reg = &regs[i];
                for c in 1..10_000u64 {
                    let otp = reg.hotp(c);
                    let sent = api
                        .http
                        .post(format!("{}/api/v1/validate", api.base))
                        .bearer_auth(&api.key)
                        .json(&serde_json::json!({"token_id": reg.token_id, "otp": otp}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::OK => {
                            accepted.lock().unwrap().push((reg.token_id.clone(), otp))
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill();
    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 50,
        "load ran before the kill: {}",
        accepted.len()
    );

    // Restart on the same database and key; re-submit every accepted code.
    let restarted = Server::start_on(
        tempfile::TempDir::new().unwrap(),
        server.db_url.clone(),
        &[
            "--master-key-file",
            &server.dir.path().join("ichido.key").display().to_string(),
        ],
    );
    let again = Api::new(&restarted.base, &api.key);
    // Each token's last accepted code first: it must be recognised as spent.
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    for (token_id, otp) in &accepted {
        last.insert(token_id.clone(), otp.clone());
    }
    for (token_id, otp) in &last {
        let (s, b) = again.validate(token_id, otp).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("otp_replayed")),
            "{b}"
        );
    }
    // And none of the others is accepted either (older ones are outside the
    // look-behind, so they answer invalid_otp, and the token then locks).
    for (token_id, otp) in &accepted {
        let (s, _) = again.validate(token_id, otp).await;
        assert_ne!(
            s,
            StatusCode::OK,
            "a code accepted before the crash was accepted again"
        );
    }
}
