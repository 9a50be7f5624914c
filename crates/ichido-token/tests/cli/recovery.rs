//! Getting a token back: resync (同期ズレ補正) after 50 unused presses, export → import into an empty store (R13), remove.

use crate::harness::*;

#[test]
fn a_token_50_presses_ahead_recovers_through_resync() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "taro", "event");
    bank.assert_valid(&id, &pc.code(&[]));
    for _ in 0..50 {
        pc.code(&[]);
    }
    // Beyond the server's look-ahead (10): refused.
    bank.assert_refused(&id, &pc.code(&[]), "invalid_otp");

    let run = pc.run_with(
        &["resync", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("in sync"), "{}", run.stderr);
    // The two codes sent were presses 53 and 54; the next one is 55.
    assert_eq!(pc.store_json()["tokens"][0]["counter"], 55);
    let code = pc.code(&[]);
    bank.assert_valid(&id, &code);
    assert_eq!(bank.token("1234567890", "taro")["failures"], 0);

    // A wrong password is explained, and the counter still never goes back.
    let run = pc.run_with(&["resync", "--password-stdin"], "wrong-password\n", &[]);
    run.fails_with(&["Resync (同期ズレ補正) failed", "login password is wrong"]);
    assert_eq!(pc.store_json()["tokens"][0]["counter"], 58);
}

#[test]
fn time_token_resync_is_explained() {
    // Right after activation the current step is spent: the bank refuses the
    // pair, and the customer is told what to do.
    let bank = Bank::start();
    bank.user("1234567890", "hanako");
    let pc = Pc::new();
    pc.register(&bank, "1234567890", "hanako", "time");
    let run = pc.run_with(
        &["resync", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        &[],
    );
    if run.ok {
        // The step rolled over between activation and resync: then it worked.
        assert!(run.stderr.contains("in sync"), "{}", run.stderr);
    } else {
        run.fails_with(&["Resync (同期ズレ補正) failed", "Next step:"]);
    }
}

#[test]
fn export_then_import_into_an_empty_store_keeps_working() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    bank.user("1234567890", "hanako");
    let old = Pc::new();
    let taro = old.register(&bank, "1234567890", "taro", "event");
    let hanako = old.register(&bank, "1234567890", "hanako", "time");
    bank.assert_valid(&taro, &old.code(&["--user", "taro"]));
    old.code(&["--user", "taro"]); // pressed, not used

    let backup = old.home.path().join("backup.ichido");
    let backup_arg = backup.to_str().unwrap();
    let run = old.run_with(
        &["export", backup_arg],
        "",
        &[("ICHIDO_TOKEN_PASSPHRASE", PASSPHRASE)],
    );
    assert!(run.ok, "{}", run.stderr);
    #[cfg(unix)]
    assert_eq!(mode(&backup), 0o600);
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(text.contains("ichido-token-backup"));
    for t in old.store_json()["tokens"].as_array().unwrap() {
        assert!(!text.contains(t["secret"].as_str().unwrap()));
        assert!(!text.contains(t["token_id"].as_str().unwrap()));
    }
    assert!(!text.contains("hanako"));
    // An existing file is never overwritten.
    old.run_with(
        &["export", backup_arg],
        "",
        &[("ICHIDO_TOKEN_PASSPHRASE", PASSPHRASE)],
    )
    .fails_with(&["already exists"]);

    // The reinstalled PC: an empty store. A wrong passphrase changes nothing.
    let new = Pc::new();
    new.run_with(
        &["import", backup_arg, "--passphrase-stdin"],
        "not the passphrase\n",
        &[],
    )
    .fails_with(&["passphrase", "wrong", "Nothing was changed"]);
    assert!(!new.store.exists());
    let run = new.run_with(
        &["import", backup_arg, "--passphrase-stdin"],
        &format!("{PASSPHRASE}\n"),
        &[],
    );
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("Imported 2 token(s)"), "{}", run.stderr);
    #[cfg(unix)]
    assert_eq!(mode(&new.store), 0o600);
    assert_eq!(new.run(&["list"]).out(), old.run(&["list"]).out());

    // The event counter continues where the export left it; the time token is the same.
    let code = new.code(&["--user", "taro"]);
    bank.assert_valid(&taro, &code);
    let (a, b) = (
        new.code(&["--user", "hanako"]),
        old.code(&["--user", "hanako"]),
    );
    let c = new.code(&["--user", "hanako"]);
    assert!(a == b || b == c, "the same secret gives the same time code");
    assert!(!hanako.is_empty());

    // A second import finds the same users already there and imports nothing.
    let before = new.store_text();
    new.run_with(
        &["import", backup_arg],
        "",
        &[("ICHIDO_TOKEN_PASSPHRASE", PASSPHRASE)],
    )
    .fails_with(&["nothing was imported", "already has token", &taro]);
    assert_eq!(new.store_text(), before);
    // A store is not a backup, and the reverse.
    new.run_with(
        &["import", new.store.to_str().unwrap()],
        "",
        &[("ICHIDO_TOKEN_PASSPHRASE", PASSPHRASE)],
    )
    .fails_with(&["is an ichido-token store, not a backup"]);
    new.run(&["--store", backup_arg, "list"])
        .fails_with(&["is an ichido-token backup", "import"]);
}

#[test]
fn remove_takes_a_token_off_this_pc_only() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "taro", "event");
    // No terminal to confirm: refused unless --yes.
    pc.run(&["remove"])
        .fails_with(&["nothing was removed", "--yes"]);
    let run = pc.run(&["remove", "--user", "taro", "--yes"]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("登録解除"), "{}", run.stderr);
    assert!(pc.run(&["list"]).out().is_empty());
    pc.run(&["code"]).fails_with(&["no tokens", "register"]);
    // The bank still has it: registering again needs its deregistration (登録解除).
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
    again.fails_with(&["already has a token", "登録解除"]);
    assert_eq!(bank.token("1234567890", "taro")["token_id"], id.as_str());
    let (s, _) = bank.call(
        "DELETE",
        "/contracts/1234567890/users/taro/token",
        serde_json::Value::Null,
    );
    assert_eq!(s, 200);
    pc.register(&bank, "1234567890", "taro", "event");
}
