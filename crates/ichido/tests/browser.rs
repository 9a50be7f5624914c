//! End-to-end tests of the web pages in headless Chromium, driven over
//! WebDriver: the real `ichido` binary, the customer portal and the operator
//! console, clicked through as a customer and an operator would.
//!
//! Screenshots of every page of the flow are taken; with `UPDATE_SCREENSHOTS=1`
//! they are written to `docs/screenshots/` (shown in the README), otherwise to a
//! temporary folder, so a test run never dirties the tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "api/common.rs"]
mod common;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, BIN, PASSWORD};
use ichido_otp::uri::KeyUri;
use ichido_otp::{base32, Algorithm, Digits, Key};
use reqwest::StatusCode;
use serde_json::json;
use webdriver::{Browser, Driver};

const CONTRACT: &str = "1234567890";
const USER: &str = "taro";
const TX_PASSWORD: &str = "tx-password-1";
const OPERATOR: &str = "branch-ops";
const OPERATOR_PASSWORD: &str = "console-password-1";

/// Where the screenshots go, and a counter that names them in flow order.
struct Shots {
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    taken: Vec<String>,
}

impl Shots {
    fn new() -> Shots {
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
            std::fs::create_dir_all(&dir).unwrap();
            Shots {
                dir,
                _tmp: None,
                taken: Vec::new(),
            }
        } else {
            let tmp = tempfile::tempdir().unwrap();
            Shots {
                dir: tmp.path().to_owned(),
                _tmp: Some(tmp),
                taken: Vec::new(),
            }
        }
    }

    async fn take(&mut self, b: &Browser, name: &str) {
        let png = b.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let file = format!("{:02}-{name}.png", self.taken.len() + 1);
        std::fs::write(self.dir.join(&file), png).unwrap();
        self.taken.push(file);
    }
}

/// Gives the operator console credentials with the CLI and returns its TOTP key.
fn console_credentials(server: &Server) -> Key {
    let pw_file = server.dir.path().join("operator-password");
    std::fs::write(&pw_file, format!("{OPERATOR_PASSWORD}\n")).unwrap();
    let out = Command::new(BIN)
        .args([
            "operator",
            "console",
            OPERATOR,
            "--database",
            &server.db_url,
        ])
        .arg("--password-file")
        .arg(&pw_file)
        .current_dir(server.dir.path())
        .env_remove("ICHIDO_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "operator console failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let uri = KeyUri::parse(stdout.trim_end()).expect("stdout holds one otpauth URI");
    assert_eq!(uri.account, OPERATOR);
    assert_eq!(uri.period, 30);
    uri.key().unwrap()
}

fn now() -> u64 {
    common::now()
}

async fn login(b: &Browser, base: &str, otp: Option<&str>) {
    b.goto(&format!("{base}/")).await;
    b.fill("#contract_no", CONTRACT).await;
    b.fill("#user_id", USER).await;
    b.fill("#login_password", PASSWORD).await;
    if let Some(otp) = otp {
        b.fill("#otp", otp).await;
    }
    b.click("#login").await;
}

async fn console_find(b: &Browser, base: &str) {
    b.goto(&format!("{base}/console")).await;
    b.fill("#contract_no", CONTRACT).await;
    b.fill("#user_id", USER).await;
    b.click("#find").await;
}

/// Opens the confirmation page of `action` for the user shown, checks it, confirms.
async fn console_form(b: &Browser, shots: &mut Shots, action: &str, shot: Option<&str>) {
    b.click(&format!("#do-{action}")).await;
    assert!(
        b.url().await.contains("/console/confirm"),
        "a confirmation page first"
    );
    assert!(b.exists("#confirm").await);
    if let Some(name) = shot {
        shots.take(b, name).await;
    }
    b.click("#confirm").await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("受け付けました"), "{action}: {notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_and_operator_click_through_the_whole_flow() {
    if !webdriver::available() {
        return;
    }
    // Per-user rate limits off: the test logs in faster than a person would.
    let server = Server::start(&["--rate-limit-per-user", "0"]);
    let base = server.base.clone();
    let api = server.api(OPERATOR);
    let (s, _) = api
        .post(
            "/contracts",
            json!({"contract_no": CONTRACT, "name": "株式会社アクメ商事"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api
        .post(
            &format!("/contracts/{CONTRACT}/users"),
            json!({"user_id": USER, "name": "山田 太郎", "role": "approver",
                   "login_password": PASSWORD, "transaction_password": TX_PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let console_key = console_credentials(&server);

    let driver = Driver::start().await;
    let b = Browser::open(&driver).await;
    let mut shots = Shots::new();

    // --- The customer: log-in page, registration with the QR code, activation.
    b.goto(&format!("{base}/")).await;
    assert!(b.source().await.contains("ログイン"));
    shots.take(&b, "login").await;

    b.click("#to-register").await;
    shots.take(&b, "register").await;
    b.fill("#contract_no", CONTRACT).await;
    b.fill("#user_id", USER).await;
    b.fill("#login_password", PASSWORD).await;
    b.choose("#kind-event").await;
    b.click("#register").await;
    assert!(
        b.wait_for("#token-id").await,
        "registered: {}",
        b.source().await
    );
    let token_id = b.text("#token-id").await;
    assert_eq!(token_id.len(), 12, "{token_id}");
    let secret_text = b.text("#secret").await.replace(' ', "");
    let qr = b.attribute("#qr", "src").await;
    assert!(
        qr.starts_with("data:image/svg+xml;base64,"),
        "inline QR code"
    );
    assert!(
        !b.url().await.contains(&secret_text),
        "no secret in the URL"
    );
    shots.take(&b, "registration-qr").await;
    let secret = base32::decode(&secret_text).unwrap();
    let key = Key::new(Algorithm::Sha1, &secret).unwrap();
    let hotp = |counter: u64| key.hotp(counter, Digits::SIX).to_string();

    b.fill("#otp", &hotp(0)).await;
    b.click("#activate").await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("利用開始登録が完了しました"), "{notice}");
    assert!(notice.contains(&token_id));
    shots.take(&b, "activated").await;

    // The QR code is never shown again: the registration page is a blank form.
    b.goto(&format!("{base}/register")).await;
    assert!(!b.source().await.contains(&secret_text[..16]));

    // --- Log-in with the OTP; the browser remembers the token ID.
    b.goto(&format!("{base}/")).await;
    assert_eq!(b.value("#token_id").await, token_id, "token ID remembered");
    b.fill("#contract_no", CONTRACT).await;
    b.fill("#user_id", USER).await;
    b.fill("#login_password", PASSWORD).await;
    b.fill("#otp", &hotp(1)).await;
    shots.take(&b, "login-with-otp").await;
    b.click("#login").await;
    assert!(b.url().await.ends_with("/home"), "{}", b.url().await);
    assert!(b
        .text("#login-method")
        .await
        .contains("ワンタイムパスワード"));
    assert!(b.text("#token-state").await.contains("active"));
    shots.take(&b, "home").await;

    // --- Create a transfer and approve it with the transaction password + OTP.
    b.fill("#payee", "東京商事株式会社 普通 1234567").await;
    b.fill("#amount", "150000").await;
    b.click("#create-transfer").await;
    assert!(b.text("#transfer-state").await.contains("承認待ち"));
    assert_eq!(b.text("#amount").await, "150,000 円");
    shots.take(&b, "transfer-created").await;
    b.fill("#transaction_password", TX_PASSWORD).await;
    b.fill("#otp", &hotp(2)).await;
    b.click("#approve").await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("即時に実行"), "{notice}");
    assert!(b.text("#transfer-state").await.contains("即時実行"));
    shots.take(&b, "transfer-approved").await;
    b.click("#logout").await;
    assert!(b.text("#notice").await.contains("ログアウトしました"));

    // --- The operator signs in to the console and suspends the token.
    b.goto(&format!("{base}/console")).await;
    shots.take(&b, "console-sign-in").await;
    b.fill("#name", OPERATOR).await;
    b.fill("#password", OPERATOR_PASSWORD).await;
    b.fill(
        "#otp",
        &console_key.totp(now(), 30, Digits::SIX).to_string(),
    )
    .await;
    b.click("#sign-in").await;
    assert!(b.exists("#find").await, "signed in: {}", b.source().await);
    console_find(&b, &base).await;
    assert!(b.text("#token-state").await.contains("active"));
    shots.take(&b, "console-user").await;
    b.click("#do-suspend").await;
    assert_eq!(b.value("#grace_days").await, "30");
    b.fill("#grace_days", "14").await;
    shots.take(&b, "console-confirm-suspend").await;
    b.click("#confirm").await;
    assert!(b.text("#notice").await.contains("一時停止を受け付けました"));
    assert!(b.text("#token-state").await.contains("suspended"));
    assert!(b.exists("#grace-until").await);
    shots.take(&b, "console-suspended").await;

    // --- The customer logs in with passwords alone during the grace period.
    login(&b, &base, None).await;
    assert!(b.url().await.ends_with("/home"));
    assert!(b.text("#login-method").await.contains("パスワードのみ"));
    let notice = b.text("#notice").await;
    assert!(notice.contains("猶予期間"), "{notice}");
    shots.take(&b, "home-grace-period").await;
    // An approval in the grace period runs deferred.
    b.fill("#payee", "大阪物産 当座 7654321").await;
    b.fill("#amount", "20000").await;
    b.click("#create-transfer").await;
    assert!(!b.exists("#otp").await, "no OTP asked while suspended");
    b.fill("#transaction_password", TX_PASSWORD).await;
    b.click("#approve").await;
    assert!(b.text("#notice").await.contains("予約実行"));
    shots.take(&b, "transfer-deferred").await;
    b.click("#logout").await;

    // --- The operator resumes the token.
    console_find(&b, &base).await;
    console_form(&b, &mut shots, "resume", None).await;
    assert!(b.text("#token-state").await.contains("active"));
    shots.take(&b, "console-resumed").await;

    // --- Wrong codes lock the token (閉塞); the customer is told what to do.
    let counter = 3; // the next code the server expects
    let wrong = (0..1_000_000)
        .map(|i| format!("{i:06}"))
        .find(|c| !(0..40).any(|n| hotp(n) == *c))
        .unwrap();
    for _ in 0..5 {
        login(&b, &base, Some(&wrong)).await;
        let n = b.text("#notice").await;
        assert!(n.contains("正しくありません"), "{n}");
    }
    login(&b, &base, Some(&hotp(counter))).await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("閉塞解除"), "{notice}");
    shots.take(&b, "login-token-locked").await;

    // --- The operator unlocks it; the customer logs in again with a new code.
    console_find(&b, &base).await;
    assert!(b.text("#token-state").await.contains("locked"));
    assert_eq!(b.text("#failures").await, "5");
    console_form(
        &b,
        &mut shots,
        "unlock_token",
        Some("console-confirm-unlock"),
    )
    .await;
    assert!(b.text("#token-state").await.contains("active"));
    assert_eq!(b.text("#failures").await, "0");
    login(&b, &base, Some(&hotp(counter))).await;
    assert!(b.url().await.ends_with("/home"), "logged in after unlock");
    b.click("#logout").await;

    // --- 同期ズレ補正: the generator ran 30 codes ahead; two consecutive codes fix it.
    b.click("#to-resync").await;
    b.fill("#contract_no", CONTRACT).await;
    b.fill("#user_id", USER).await;
    b.fill("#login_password", PASSWORD).await;
    b.fill("#otp1", &hotp(counter + 30)).await;
    b.fill("#otp2", &hotp(counter + 31)).await;
    b.click("#resync").await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("同期ズレを補正しました"), "{notice}");
    shots.take(&b, "resync").await;
    login(&b, &base, Some(&hotp(counter + 32))).await;
    assert!(b.url().await.ends_with("/home"), "logged in after resync");
    b.click("#logout").await;

    // --- Wrong passwords lock the user; the operator clears the password lock.
    for _ in 0..5 {
        let (s, _) = api
            .post_anon(
                "/login",
                json!({"contract_no": CONTRACT, "user_id": USER, "login_password": "wrong-password-9"}),
            )
            .await;
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::LOCKED,
            "{s}"
        );
    }
    console_find(&b, &base).await;
    assert!(b.text("#password-lock").await.contains("locked"));
    console_form(&b, &mut shots, "unlock_user", None).await;
    assert!(b.text("#password-lock").await.contains("none"));

    // --- Deregistration (登録解除).
    console_form(&b, &mut shots, "revoke", Some("console-confirm-deregister")).await;
    assert!(b.source().await.contains("なし / none"));
    shots.take(&b, "console-deregistered").await;

    // --- The audit log names the operator for every form, with filters and paging.
    b.click("#user-audit").await;
    let first_page = b.text("#audit").await;
    assert!(
        first_page.contains("token.revoke"),
        "newest first:\n{first_page}"
    );
    assert!(b.exists("#older").await, "more than a page of events");
    shots.take(&b, "console-audit").await;
    b.click("#older").await;
    let audit = format!("{first_page}\n{}", b.text("#audit").await);
    for action in [
        "token.suspend",
        "token.resume",
        "token.unlock",
        "token.revoke",
        "user.unlock",
    ] {
        assert!(audit.contains(action), "{action} missing:\n{audit}");
    }
    assert!(audit.contains(&format!("operator:{OPERATOR}")));

    // --- The customer, deregistered, is told to register again.
    b.click("#sign-out").await;
    login(&b, &base, None).await;
    let notice = b.text("#notice").await;
    assert!(notice.contains("利用開始登録が必要"), "{notice}");
    shots.take(&b, "login-registration-required").await;

    b.close().await;
    drop(driver);
    assert!(shots.taken.len() >= 22, "{:?}", shots.taken);
}
