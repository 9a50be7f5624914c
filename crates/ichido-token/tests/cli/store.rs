//! The store file: refused (and never overwritten) when others can read it or its bytes are not a store; optionally sealed under a passphrase.

use crate::harness::*;

#[cfg(unix)]
#[test]
fn a_store_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    pc.register(&bank, "1234567890", "taro", "event");
    std::fs::set_permissions(&pc.store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = pc.store_text();
    let shown = pc.store.display().to_string();
    for args in [&["code"][..], &["list"], &["export", "x.backup"]] {
        pc.run(args).fails_with(&[
            "other users of this computer",
            "mode 644",
            &format!("chmod 600 {shown}"),
        ]);
    }
    assert_eq!(pc.store_text(), before, "the counter must not move");
    assert_eq!(mode(&pc.store), 0o644, "the file is left as it is");
    std::fs::set_permissions(&pc.store, std::fs::Permissions::from_mode(0o600)).unwrap();
    pc.code(&[]);
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_and_never_overwritten() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    pc.register(&bank, "1234567890", "taro", "event");
    let good = pc.store_text();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"\x00\xff\x13 not json at all".to_vec(),
            "is not an ichido-token file",
        ),
        (
            good.as_bytes()[..good.len() / 2].to_vec(),
            "is not an ichido-token file",
        ),
        (
            b"{\"format\":\"something-else\",\"version\":1}".to_vec(),
            "is not an ichido-token file",
        ),
        (
            good.replace("\"version\": 1", "\"version\": 9")
                .into_bytes(),
            "another version",
        ),
        (
            good.replace("\"digits\": 6", "\"digits\": 60").into_bytes(),
            "is damaged",
        ),
        (
            good.replace("\"counter\"", "\"countr\"").into_bytes(),
            "is damaged",
        ),
    ];
    for (bytes, needle) in cases {
        write_private(&pc.store, &bytes);
        for args in [
            &["code"][..],
            &["list"],
            &[
                "register",
                "--server",
                &bank.url,
                "--contract",
                "1234567890",
                "--user",
                "hanako",
                "--password-stdin",
            ],
            &["passphrase", "--passphrase-stdin"],
        ] {
            let run = pc.run_with(args, &format!("{PASSWORD}\n"), &[]);
            run.fails_with(&[needle, "left unchanged"]);
            assert_eq!(
                std::fs::read(&pc.store).unwrap(),
                bytes,
                "{args:?} changed the file"
            );
        }
    }
    // Nothing reached the bank: hanako was never registered.
    write_private(&pc.store, good.as_bytes());
    pc.code(&[]);
}

#[test]
fn an_encrypted_store_needs_its_passphrase() {
    let bank = Bank::start();
    bank.user("1234567890", "taro");
    let pc = Pc::new();
    let id = pc.register(&bank, "1234567890", "taro", "event");
    let secret = pc.store_json()["tokens"][0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = pc.run_with(
        &["passphrase", "--passphrase-stdin"],
        &format!("{PASSPHRASE}\n"),
        &[],
    );
    assert!(run.ok, "{}", run.stderr);
    let text = pc.store_text();
    let json = pc.store_json();
    assert_eq!(
        (json["format"].as_str(), json["encrypted"].as_bool()),
        (Some("ichido-token-store"), Some(true))
    );
    assert_eq!(json["sealed"]["kdf"]["algorithm"], "argon2id");
    assert!(!text.contains(&secret) && !text.contains(&id) && !text.contains("taro"));

    // No terminal and no ICHIDO_TOKEN_PASSPHRASE: a clear error.
    pc.run(&["code"])
        .fails_with(&["passphrase", "ICHIDO_TOKEN_PASSPHRASE"]);
    pc.run_with(
        &["code"],
        "",
        &[("ICHIDO_TOKEN_PASSPHRASE", "wrong passphrase")],
    )
    .fails_with(&["passphrase", "is wrong"]);
    assert_eq!(pc.store_text(), text);
    let env = [("ICHIDO_TOKEN_PASSPHRASE", PASSPHRASE)];
    let code = pc.run_with(&["code"], "", &env).out().to_owned();
    bank.assert_valid(&id, &code);
    assert!(
        pc.store_json()["encrypted"].as_bool().unwrap(),
        "stays sealed after a press"
    );
    assert!(pc.run_with(&["list"], "", &env).out().contains(&id));

    // Removing the passphrase gives the plain store back, with the advanced counter.
    assert!(pc.run_with(&["passphrase", "--remove"], "", &env).ok);
    assert_eq!(pc.store_json()["tokens"][0]["counter"], 2);
    bank.assert_valid(&id, &pc.code(&[]));
    // Too short a passphrase is refused.
    pc.run_with(&["passphrase", "--passphrase-stdin"], "short\n", &[])
        .fails_with(&["too short"]);
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}
