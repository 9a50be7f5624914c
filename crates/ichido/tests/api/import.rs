//! Bulk import on the real binary: 1,000 users with token seeds in one request
//! (past the 16 KiB limit of other routes), all or nothing, the audit chain
//! intact; and `ichido bench` creating its tokens through it.

use std::process::Command;

use ichido_domain::password::{PasswordParams, Passwords};
use ichido_otp::{base32, Algorithm, Digits, Key};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, post_head_only, Server, BIN, PASSWORD};

fn owasp_hash(password: &str) -> String {
    Passwords::new(PasswordParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    })
    .unwrap()
    .hash("password", password)
    .unwrap()
}

#[tokio::test]
async fn a_thousand_users_and_tokens_in_one_request_all_or_nothing() {
    let server = Server::start(&[]);
    let api = server.api("migration");
    let (s, b) = api
        .post(
            "/contracts",
            json!({"contract_no": "7000000001", "name": "Migrated Co"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (login, tx) = (owasp_hash(PASSWORD), owasp_hash("transaction-pw-1"));
    let secrets: Vec<[u8; 20]> = (0..1000).map(|_| rand::random()).collect();
    let entries: Vec<Value> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "contract_no": "7000000001", "user_id": format!("m{i}"), "name": "Migrated User",
                "role": "approver", "login_password_hash": login, "transaction_password_hash": tx,
                "token": {"kind": "event", "secret": base32::encode(s), "counter": 7}
            })
        })
        .collect();

    // One bad entry refuses the whole request, naming the entry, echoing no value.
    let mut bad = entries.clone();
    bad[999]["token"]["secret"] = json!("tooshort");
    let (s, b) = api.post("/import", json!({"entries": bad})).await;
    assert_error(&(s, b.clone()), 400, "invalid_request");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("entries[999]: token.secret"), "{msg}");
    assert!(!msg.contains("tooshort"), "{msg}");
    assert_error(
        &api.get("/contracts/7000000001/users/m0").await,
        404,
        "not_found",
    );

    // All of them, in one request of ~0.5 MB.
    let (s, b) = api.post("/import", json!({"entries": entries})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["imported"], 1000);
    let out = b["entries"].as_array().unwrap();
    assert_eq!(out.len(), 1000);
    for i in [0usize, 499, 999] {
        assert_eq!(out[i]["user_id"], format!("m{i}"), "in request order");
        let token_id = out[i]["token_id"].as_str().unwrap();
        let key = Key::new(Algorithm::Sha1, &secrets[i]).unwrap();
        let code = |c: u64| key.hotp(c, Digits::SIX).to_string();
        assert_eq!(api.validate(token_id, &code(7)).await.0, StatusCode::OK);
        assert_error(&api.validate(token_id, &code(7)).await, 401, "otp_replayed");
        let (s, user) = api.get(&format!("/contracts/7000000001/users/m{i}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(user["token"]["token_id"], token_id);
        assert_eq!(user["token"]["state"], "active");
    }
    // The imported login password works.
    let (s, b) = api
        .post_anon(
            "/login",
            json!({"contract_no": "7000000001", "user_id": "m0", "login_password": PASSWORD}),
        )
        .await;
    assert_error(&(s, b), 401, "otp_required");

    // Again: every user exists now.
    let (s, b) = api
        .post("/import", json!({"entries": [entries[3].clone()]}))
        .await;
    assert_error(&(s, b.clone()), 409, "conflict");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("entries[0]"));

    // Other routes keep their 16 KiB limit; import stops at 2 MiB.
    for (path, declared) in [("/contracts", 20_000), ("/import", 3 << 20)] {
        let (status, head, body) = post_head_only(&api.base, &api.key, path, declared).await;
        assert_error(
            &(StatusCode::from_u16(status).unwrap(), body),
            413,
            "invalid_request",
        );
        assert!(head.contains("connection: close"), "{path}: {head}");
    }
    let (s, b) = api.post("/import", json!({"entries": []})).await;
    assert_error(&(s, b), 400, "invalid_request");

    let audit = Command::new(BIN)
        .args(["audit", "verify", "--database", &server.db_url])
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{stdout}");
    assert!(stdout.contains("audit log intact"), "{stdout}");
    let (_, events) = api
        .get("/audit?contract_no=7000000001&user_id=m999&limit=10")
        .await;
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"user.import") && actions.contains(&"token.import"),
        "{actions:?}"
    );
}

/// A short bench run of few tokens and connections, without replay probes.
const SMALL_RUN: &[&str] = &[
    "--tokens",
    "100",
    "--concurrency",
    "4",
    "--replay-probe-every",
    "0",
];

/// Runs `ichido bench` against `server` with `args` (after `--url`), checks
/// that it succeeded, and returns its stdout, its stderr and the JSON object
/// on its last stdout line.
async fn run_bench(server: &Server, key: &str, args: &[&str]) -> (String, String, Value) {
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "--url", &server.base])
        .args(args)
        .env("ICHIDO_OPERATOR_KEY", key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (stdout, stderr, last)
}

/// `ichido bench` imports its tokens, drives validations and reports as the
/// issue asks: the last stdout line is one JSON object.
#[tokio::test]
async fn bench_imports_its_tokens_and_reports_json_on_the_last_line() {
    let server = Server::start(&["--rate-limit-per-address", "0"]);
    let key = server.operator_key("bench");
    for mode in ["valid", "wrong"] {
        let (_, _, last) = run_bench(
            &server,
            &key,
            &[
                "--tokens",
                "2500",
                "--concurrency",
                "4",
                "--duration",
                "1",
                "--mode",
                mode,
                "--json",
            ],
        )
        .await;
        for field in ["validations_per_sec", "p50_ms", "p99_ms", "p999_ms"] {
            assert!(last[field].is_number(), "{field}: {last}");
        }
        assert_eq!(last["correctness_failures"], 0, "{last}");
        assert_eq!(last["tokens"], 2500);
        assert_eq!(last["order"], "shuffled", "the default order: {last}");
        assert!(last["errors"].is_object(), "{last}");
        assert!(last["measured"].as_u64().unwrap() > 0, "{last}");
        if mode == "wrong" {
            assert!(
                last["errors"]["invalid_otp"].as_u64().unwrap() > 0,
                "{last}"
            );
        } else {
            assert!(last["accepted"].as_u64().unwrap() > 0, "{last}");
        }
    }
}

/// `--order imported` uses the tokens in the import's order; its codes are
/// as right as the shuffled order's, and the report names the order.
#[tokio::test]
async fn bench_uses_the_tokens_in_the_order_asked_for() {
    let server = Server::start(&["--rate-limit-per-address", "0"]);
    let key = server.operator_key("bench");
    let (stdout, _, last) = run_bench(
        &server,
        &key,
        &[
            SMALL_RUN,
            &["--duration", "1", "--order", "imported", "--json"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(last["order"], "imported", "{last}");
    assert_eq!(last["correctness_failures"], 0, "{last}");
    assert!(last["accepted"].as_u64().unwrap() > 0, "{last}");
    assert!(stdout.contains("used in imported order"), "{stdout}");
}

/// `--interval` reports each interval of the measured run (on stderr, and
/// in the JSON line), and the report says how much of the machine's CPU
/// time the hypervisor took (Linux: from /proc/stat).
#[tokio::test]
async fn bench_reports_each_interval_and_the_machine_s_cpu() {
    let server = Server::start(&["--rate-limit-per-address", "0"]);
    let key = server.operator_key("bench");
    let (stdout, stderr, last) = run_bench(
        &server,
        &key,
        &[SMALL_RUN, &["--duration", "2", "--interval", "1", "--json"]].concat(),
    )
    .await;
    let intervals = last["intervals"].as_array().unwrap();
    let ends: Vec<f64> = intervals
        .iter()
        .map(|i| i["end_secs"].as_f64().unwrap())
        .collect();
    // Each interval ends when it was read: at its nominal end or a little
    // after (its rate is over the time that actually passed).
    assert_eq!(ends.len(), 2, "{last}");
    for (nominal, end) in [1.0, 2.0].into_iter().zip(&ends) {
        assert!(*end >= nominal && *end < nominal + 0.5, "{last}");
    }
    // Each interval's count was taken as it ended; the workers' last replies
    // came after, so the intervals hold at most what was measured.
    let counted: f64 = intervals
        .iter()
        .map(|i| i["validations_per_sec"].as_f64().unwrap())
        .sum();
    let measured = last["measured"].as_f64().unwrap();
    assert!(counted > 0.0 && counted <= measured, "{last}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains(" validations/s"))
            .count(),
        2,
        "{stderr}"
    );
    if cfg!(target_os = "linux") {
        for share in [&last["cpu_steal_pct"], &last["cpu_idle_pct"]]
            .into_iter()
            .chain(intervals.iter().map(|i| &i["cpu"]["steal_pct"]))
        {
            let pct = share.as_f64().unwrap_or(-1.0);
            assert!((0.0..=100.0).contains(&pct), "{last}");
        }
        assert!(stdout.contains("stolen by the hypervisor"), "{stdout}");
    }
}

/// With `--warmup`, the bench validates before its measured run and leaves
/// those validations out of the figures: the server accepted more codes
/// than the bench measured, and the measured run lasted `--duration`.
#[tokio::test]
async fn bench_warmup_validates_but_is_not_measured() {
    let server = Server::start(&["--rate-limit-per-address", "0"]);
    let key = server.operator_key("bench");
    let (_, stderr, last) = run_bench(
        &server,
        &key,
        &[SMALL_RUN, &["--duration", "1", "--warmup", "1", "--json"]].concat(),
    )
    .await;
    assert!(stderr.contains("warming up for 1 s"), "{stderr}");
    assert_eq!(last["warmup_secs"], 1, "{last}");
    assert_eq!(last["correctness_failures"], 0, "{last}");
    let secs = last["duration_secs"].as_f64().unwrap();
    assert!((1.0..1.9).contains(&secs), "measured for {secs} s: {last}");
    let measured = last["measured"].as_u64().unwrap();
    assert!(measured > 0, "{last}");
    assert_eq!(last["accepted"].as_u64().unwrap(), measured, "{last}");
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ichido_validations_total{outcome=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ok count in {metrics}"));
    assert!(
        accepted > measured,
        "the warm-up's validations reached the server: {accepted} accepted, {measured} measured"
    );
}
