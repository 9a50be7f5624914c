//! Every server answer the customer can meet is explained with a next step; the help reads for a bank customer.

use serde_json::{json, Value};

use crate::harness::*;

fn register(pc: &Pc, bank: &Bank, user: &str, password: &str) -> Run {
    pc.run_with(
        &[
            "register",
            "--server",
            &bank.url,
            "--contract",
            "1234567890",
            "--user",
            user,
            "--password-stdin",
        ],
        &format!("{password}\n"),
        &[],
    )
}

fn resync(pc: &Pc) -> Run {
    pc.run_with(
        &["resync", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        &[],
    )
}

#[test]
fn server_answers_are_explained_with_the_next_step() {
    // Rate limits have a test of their own below.
    let bank = Bank::start_with(&["--rate-limit-per-user", "0"]);
    bank.user("1234567890", "taro");
    bank.user("1234567890", "jiro");
    let pc = Pc::new();

    // Wrong password: nothing stored.
    register(&pc, &bank, "taro", "wrong-password-1").fails_with(&[
        "Registration (利用開始登録) failed",
        "login password is wrong",
        "Next step:",
    ]);
    assert!(!pc.store.exists());

    // A user locked by wrong passwords.
    for _ in 0..4 {
        register(&pc, &bank, "jiro", "wrong-password-1").fails_with(&["is wrong"]);
    }
    register(&pc, &bank, "jiro", "wrong-password-1").fails_with(&["wrong"]);
    register(&pc, &bank, "jiro", PASSWORD)
        .fails_with(&["user ID is locked", "ask your bank to unlock"]);

    // token_exists from another PC.
    let id = pc.register(&bank, "1234567890", "taro", "event");
    let other = Pc::new();
    register(&other, &bank, "taro", PASSWORD)
        .fails_with(&["already has a token", "deregister it (登録解除)"]);
    assert!(
        other.run(&["list"]).out().is_empty(),
        "nothing kept from a refused registration"
    );

    // Suspended (一時停止): resync says to ask for 一時停止解除.
    let path = "/contracts/1234567890/users/taro/token";
    assert_eq!(
        bank.call("POST", &format!("{path}/suspend"), json!({})).0,
        200
    );
    resync(&pc).fails_with(&["suspended", "一時停止解除"]);
    assert_eq!(
        bank.call("POST", &format!("{path}/resume"), Value::Null).0,
        200
    );

    // Locked (閉塞) after wrong codes.
    for _ in 0..5 {
        bank.validate(&id, "000000");
    }
    assert_eq!(bank.token("1234567890", "taro")["state"], "locked");
    resync(&pc).fails_with(&["locked", "閉塞解除"]);
    assert_eq!(
        bank.call("POST", &format!("{path}/unlock"), Value::Null).0,
        200
    );
    let run = resync(&pc);
    assert!(run.ok, "{}", run.stderr);

    // Deregistered (登録解除): remove and register again.
    assert_eq!(bank.call("DELETE", path, Value::Null).0, 200);
    resync(&pc).fails_with(&["no token for this user", "ichido-token remove", "register"]);

    // No server at that address.
    let gone = Pc::new();
    gone.run_with(
        &[
            "register",
            "--server",
            "http://127.0.0.1:9",
            "--contract",
            "1",
            "--user",
            "u",
            "--password-stdin",
        ],
        "x\n",
        &[],
    )
    .fails_with(&["Could not reach your bank's server", "Next step:"]);
    // Plain http to another host would send the password in clear.
    gone.run(&[
        "register",
        "--server",
        "http://bank.example",
        "--contract",
        "1",
        "--user",
        "u",
    ])
    .fails_with(&["not encrypted", "https://"]);
    // Not a server at all: wrong path.
    gone.run_with(
        &[
            "register",
            "--server",
            &format!("{}/nothing", bank.url),
            "--contract",
            "1",
            "--user",
            "u",
            "--password-stdin",
        ],
        "x\n",
        &[],
    )
    .fails_with(&["does not offer this service", "--server"]);
    // No terminal for the password prompt.
    gone.run(&[
        "register",
        "--server",
        &bank.url,
        "--contract",
        "1",
        "--user",
        "u",
    ])
    .fails_with(&["no terminal", "--password-stdin"]);
    gone.run(&["register", "--contract", "1", "--user", "u"])
        .fails_with(&["--server URL"]);
}

#[test]
fn rate_limits_are_explained() {
    let bank = Bank::start_with(&["--rate-limit-per-user", "1"]);
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    register(&pc, &bank, "taro", "wrong-password-1").fails_with(&["is wrong"]);
    register(&pc, &bank, "taro", "wrong-password-1").fails_with(&[
        "too many requests",
        "Next step: wait 1 second and try again",
    ]);
}

#[test]
fn help_is_written_for_a_bank_customer() {
    let pc = Pc::new();
    let help = pc.run(&["--help"]).out().to_owned();
    for needle in [
        "ワンタイムパスワード",
        "利用開始登録",
        "同期ズレ補正",
        "register --server",
        "ichido-token code",
        "export",
        "tokens.json",
        "ICHIDO_TOKEN_PASSPHRASE",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    for (cmd, needle) in [
        ("register", "--password-stdin"),
        ("code", "--watch"),
        ("resync", "two\nconsecutive codes"),
        ("export", "passphrase"),
        ("remove", "登録解除"),
    ] {
        let text = pc.run(&[cmd, "--help"]).out().to_owned();
        assert!(
            text.contains(needle),
            "{cmd} --help lacks {needle:?}:\n{text}"
        );
    }
    pc.run(&["code"])
        .fails_with(&["no tokens", "ichido-token register"]);
    pc.run(&["list"]).out();
}
