//! Codes from the independent `oathtool` program (Debian package `oathtool`)
//! are accepted, for event and time tokens.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{now, Server};

fn oathtool(args: &[&str]) -> Option<String> {
    match Command::new("oathtool").args(args).output() {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
        }
        Ok(out) => panic!("oathtool failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("oathtool is required in CI (apt-get install oathtool)")
        }
        Err(_) => None,
    }
}

#[tokio::test]
async fn oathtool_codes_are_accepted() {
    if oathtool(&["--version"]).is_none() {
        eprintln!(
            "NOTICE: oathtool not installed; cross-check skipped (scripts/test.sh installs it)"
        );
        return;
    }
    let server = Server::start(&[]);
    let api = server.api("ops");
    api.user("5000000001", "event-user", "approver").await;
    api.user("5000000001", "time-user", "approver").await;

    let ev = api.register("5000000001", "event-user", "event").await;
    let code0 = oathtool(&["--hotp", "--base32", "--counter=0", &ev.secret_b32]).unwrap();
    let activated = api
        .post_anon(
            &format!("/registrations/{}/activate", ev.token_id),
            json!({"otp": code0}),
        )
        .await;
    assert_eq!(activated.0, StatusCode::OK, "{}", activated.1);
    for c in 1..=5 {
        let code = oathtool(&[
            "--hotp",
            "--base32",
            &format!("--counter={c}"),
            &ev.secret_b32,
        ])
        .unwrap();
        assert_eq!(code, ev.hotp(c), "our HOTP agrees with oathtool");
        assert_eq!(api.validate(&ev.token_id, &code).await.0, StatusCode::OK);
    }

    let tm = api.register("5000000001", "time-user", "time").await;
    let t = now();
    let at = |secs: u64| {
        oathtool(&[
            "--totp",
            "--base32",
            &format!("--now=@{secs}"),
            &tm.secret_b32,
        ])
        .unwrap()
    };
    let first = at(t);
    assert_eq!(first, tm.totp_at(t), "our TOTP agrees with oathtool");
    let activated = api
        .post_anon(
            &format!("/registrations/{}/activate", tm.token_id),
            json!({"otp": first}),
        )
        .await;
    assert_eq!(activated.0, StatusCode::OK, "{}", activated.1);
    assert_eq!(
        api.validate(&tm.token_id, &at(t + 30)).await.0,
        StatusCode::OK
    );
}
