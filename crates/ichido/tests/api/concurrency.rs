//! One right code on 50 connections at once: exactly one is accepted.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Barrier;

use crate::common::{Api, Server};

const CONNECTIONS: usize = 50;

/// Fires `otp` at `token_id` from `CONNECTIONS` separate, pre-connected clients
/// released together; returns the statuses.
async fn race(clients: &[Api], token_id: &str, otp: &str) -> Vec<(StatusCode, String)> {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|api| {
            let barrier = Arc::clone(&barrier);
            let (token_id, otp) = (token_id.to_owned(), otp.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                let (s, b) = api.validate(&token_id, &otp).await;
                (s, b["error"]["code"].as_str().unwrap_or("").to_owned())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_on_fifty_connections_is_accepted_once() {
    let server = Server::start(&[]);
    let api = server.api("relying-party");
    // Each client its own connection pool, warmed up so the race is on the request.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let c = Api::new(&server.base, &api.key);
        assert!(c
            .http
            .get(format!("{}/healthz", c.base))
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
        clients.push(c);
    }
    for (i, kind) in ["event", "time", "event", "time"].iter().enumerate() {
        let user = format!("u{i}");
        api.user("4000000001", &user, "approver").await;
        let reg = api.token("4000000001", &user, kind).await;
        for round in 0..3u64 {
            let otp = if *kind == "event" {
                reg.hotp(round + 1)
            } else {
                reg.totp_at(crate::common::now() + 30 * (round + 1))
            };
            let results = race(&clients, &reg.token_id, &otp).await;
            let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
            assert_eq!(ok, 1, "{kind} round {round}: {results:?}");
            for (s, code) in &results {
                assert!(
                    *s == StatusCode::OK || code == "otp_replayed" || code == "token_locked",
                    "{kind} round {round}: unexpected {s} {code}"
                );
            }
            // 49 replays counted as failures: the token is locked; the operator unlocks.
            let (s, t) = api
                .post(
                    &format!("/contracts/4000000001/users/{user}/token/unlock"),
                    json!({}),
                )
                .await;
            assert_eq!((s, t["state"].as_str()), (StatusCode::OK, Some("active")));
        }
    }
}
