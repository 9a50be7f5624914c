//! Registration and codes: several users in one store, event codes consumed in order, time codes, the relying party's and the login's view.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::json;

use crate::harness::*;

#[test]
fn two_users_share_one_store_kept_apart() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    bank.user("1234567890", "hanako");
    bank.user("5555", "taro");
    let pc = Pc::new();
    let taro = pc.register(&bank, "1234567890", "taro", "event");
    let hanako = pc.register(&bank, "1234567890", "hanako", "time");
    let other = pc.register(&bank, "5555", "taro", "event");
    #[cfg(unix)]
    assert_eq!(mode(&pc.store), 0o600);

    // list: token ID, kind, server, contract, user — and never a secret.
    let list = pc.run(&["list"]).out().to_owned();
    let store = pc.store_json();
    assert_eq!(store["format"], "ichido-token-store");
    assert_eq!(store["tokens"].as_array().unwrap().len(), 3);
    for t in store["tokens"].as_array().unwrap() {
        assert!(!list.contains(t["secret"].as_str().unwrap()), "{list}");
    }
    assert_eq!(list.lines().count(), 4, "{list}");
    for (id, kind, contract, user) in [
        (&taro, "event", "1234567890", "taro"),
        (&hanako, "time", "1234567890", "hanako"),
        (&other, "event", "5555", "taro"),
    ] {
        let line = list.lines().find(|l| l.contains(id.as_str())).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [id.as_str(), kind, bank.url.as_str(), contract, user],
            "{list}"
        );
    }

    // Without selectors the choices are listed; --user alone picks hanako.
    pc.run(&["code"])
        .fails_with(&["3 tokens", "--user hanako", "--contract 5555 --user taro"]);
    pc.run(&["code", "--user", "taro"])
        .fails_with(&["2 tokens", "--contract 1234567890 --user taro"]);
    pc.run(&["code", "--user", "jiro"])
        .fails_with(&["no token for user jiro"]);
    pc.code(&["--user", "hanako"]);

    // Each user's codes belong to that user's token only, and counters are separate.
    let a = pc.code(&["--contract", "1234567890", "--user", "taro"]);
    let b = pc.code(&["--contract", "5555", "--user", "taro"]);
    bank.assert_refused(&other, &a, "invalid_otp");
    bank.assert_valid(&taro, &a);
    bank.assert_valid(&other, &b);
    let counters: Vec<_> = pc.store_json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["counter"].clone())
        .collect();
    assert_eq!(counters, [json!(2), json!(null), json!(2)]);

    // A second registration of the same user on this PC is refused locally.
    let again = pc.run_with(
        &[
            "register",
            "--server",
            &bank.url,
            "--contract",
            "1234567890",
            "--user",
            "taro",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
        &[],
    );
    again.fails_with(&["already has token", &taro, "ichido-token remove"]);
}

#[test]
fn event_codes_are_consumed_in_order_and_never_repeat() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "taro", "event");
    let codes: Vec<String> = (0..3).map(|_| pc.code(&[])).collect();
    // Activation used counter 0; the three presses were 1, 2, 3, the next is 4.
    assert_eq!(pc.store_json()["tokens"][0]["counter"], 4);
    for code in &codes {
        bank.assert_valid(&id, code);
    }
    bank.assert_refused(&id, &codes[1], "otp_replayed");

    // Concurrent presses (two windows, a script) never get the same counter.
    let children: Vec<_> = (0..6)
        .map(|_| pc.cmd().arg("code").stdout(Stdio::piped()).spawn().unwrap())
        .collect();
    let mut seen: Vec<String> = children
        .into_iter()
        .map(|c| String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap())
        .collect();
    assert_eq!(pc.store_json()["tokens"][0]["counter"], 10);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "{seen:?}");
    let next = pc.code(&[]);
    bank.assert_valid(&id, &next);
}

#[test]
fn time_token_codes_are_accepted_once_and_watch_shows_them() {
    let bank = Bank::start();
    bank.user("1234567890", "hanako");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "hanako", "time");
    let store = pc.store_json();
    assert_eq!(store["tokens"][0]["period"], 30);
    assert_eq!(store["tokens"][0]["counter"], json!(null));
    // Time codes do not change the store.
    let before = pc.store_text();
    wait_next_step();
    let run = pc.run(&["code"]);
    let code = run.out().to_owned();
    assert!(run.stderr.contains("more seconds"), "{}", run.stderr);
    assert_eq!(pc.store_text(), before);
    bank.assert_valid(&id, &code);
    bank.assert_refused(&id, &code, "otp_replayed");

    // --watch on a pipe prints each new code on its own line until stopped.
    let mut child = pc
        .cmd()
        .args(["code", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let shown = first.trim_end();
    assert!(
        shown.len() == 6 && shown.bytes().all(|b| b.is_ascii_digit()),
        "{first:?}"
    );
}

/// Linux only: elsewhere the config folder does not follow `XDG_CONFIG_HOME`,
/// and the test must not touch the real one.
#[cfg(target_os = "linux")]
#[test]
fn the_default_store_is_created_in_the_config_folder() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let mut cmd = pc.cmd();
    cmd.env_remove("ICHIDO_TOKEN_STORE")
        .args([
            "register",
            "--server",
            &bank.url,
            "--contract",
            "1234567890",
            "--user",
            "taro",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let store = pc.home.path().join("config/ichido/tokens.json");
    assert!(store.is_file(), "no store at {}", store.display());
    #[cfg(unix)]
    {
        assert_eq!(mode(&store), 0o600);
        assert_eq!(mode(store.parent().unwrap()), 0o700);
    }
    let help = pc.run(&["--help"]).out().to_owned();
    assert!(help.contains(&store.display().to_string()), "{help}");
}

/// The log-in of the contract (R6): contract, user, password, token ID and OTP.
/// Any failure, a replayed code included, answers `invalid_credentials`.
fn login(
    bank: &Bank,
    contract: &str,
    user: &str,
    token_id: &str,
    otp: &str,
) -> (u16, serde_json::Value) {
    bank.customer(
        "/login",
        json!({"contract_no": contract, "user_id": user, "login_password": PASSWORD,
               "token_id": token_id, "otp": otp}),
    )
}

#[test]
fn event_token_logs_in_through_the_server() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "taro", "event");
    let code = pc.code(&[]);
    let (s, b) = login(&bank, "1234567890", "taro", &id, &code);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["method"], "otp");
    assert!(b["session"].as_str().is_some_and(|s| !s.is_empty()), "{b}");
    let (s, b) = login(&bank, "1234567890", "taro", &id, &code);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{b}"
    );
    // The code is spent for relying parties too.
    bank.assert_refused(&id, &code, "otp_replayed");
    let (s, b) = login(&bank, "1234567890", "taro", &id, &pc.code(&[]));
    assert_eq!(s, 200, "{b}");
}

#[test]
fn time_token_logs_in_through_the_server() {
    let bank = Bank::start();
    bank.user("1234567890", "hanako");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "hanako", "time");
    wait_next_step();
    let code = pc.code(&[]);
    let (s, b) = login(&bank, "1234567890", "hanako", &id, &code);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["method"], "otp");
    let (s, b) = login(&bank, "1234567890", "hanako", &id, &code);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{b}"
    );
}
