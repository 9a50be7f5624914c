//! The customer portal before a session: log-in (ログイン), self-registration
//! (利用開始登録) with the secret as text and as a QR code, activation, resync
//! (同期ズレ補正) and log-out; the pages behind a session are in `transfers`.
//! Every rule is the domain's; these handlers parse forms, call one service
//! and render its answer.
//!
//! Invariants: the secret and its QR code appear once, in the answer to the
//! registration POST (never in a URL, never again); every POST is checked for
//! CSRF before anything else; passwords and codes are never rendered back.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use data_encoding::BASE64;
use ichido_domain::model::TokenKind;
use ichido_domain::services::Authenticated;
use ichido_domain::DomainError;
use ichido_otp::base32;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::csrf::{self, PreSecret};
use super::i18n;
use super::{cookies, render, see_other, Notice, WebForm};
use crate::error::status_of;
use crate::AppState;

// ---------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage {
    notice: Option<Notice>,
    csrf: String,
    contract_no: String,
    user_id: String,
    token_id: String,
    remembered: Vec<String>,
}

#[derive(Template)]
#[template(path = "portal/register.html")]
struct RegisterPage {
    notice: Option<Notice>,
    csrf: String,
    contract_no: String,
    user_id: String,
}

#[derive(Template)]
#[template(path = "portal/registered.html")]
struct RegisteredPage {
    csrf: String,
    token_id: String,
    kind_ja: &'static str,
    kind: &'static str,
    secret_groups: String,
    qr_data_uri: String,
    algorithm: &'static str,
    digits: u8,
    period: u32,
}

#[derive(Template)]
#[template(path = "portal/activate.html")]
struct ActivatePage {
    notice: Option<Notice>,
    csrf: String,
    token_id: String,
}

#[derive(Template)]
#[template(path = "portal/resync.html")]
struct ResyncPage {
    notice: Option<Notice>,
    csrf: String,
    contract_no: String,
    user_id: String,
}

#[derive(Template)]
#[template(path = "portal/message.html")]
struct MessagePage {
    notice: Notice,
    next_href: &'static str,
    next_ja: &'static str,
    next_en: &'static str,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Renders a pre-session page, setting the browser's CSRF cookie if it is new.
fn pre_page<T: Template>(
    status: StatusCode,
    page: &T,
    pre: &PreSecret,
    headers: &HeaderMap,
    s: &AppState,
) -> Response {
    let mut r = render(status, page);
    pre.apply(&mut r, cookies::secure(headers, s.secure_cookies));
    r
}

/// Empty form fields are "not given".
pub(super) fn given(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// The customer behind the session cookie, with the secret (for CSRF).
pub(super) async fn customer(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<(Authenticated, Zeroizing<String>), Response> {
    let Some(secret) = cookies::get(headers, cookies::SESSION) else {
        return Err(see_other("/"));
    };
    match s.ichido.authenticate_session(secret).await {
        Ok(who) => Ok((who, Zeroizing::new(secret.to_owned()))),
        Err(DomainError::Unauthorized) => {
            let mut r = see_other("/?expired=1");
            cookies::clear(
                &mut r,
                cookies::SESSION,
                cookies::secure(headers, s.secure_cookies),
            );
            Err(r)
        }
        Err(e) => Err(message(&i18n::refusal(&e), status_of(&e))),
    }
}

pub(super) fn message(notice: &Notice, status: StatusCode) -> Response {
    render(
        status,
        &MessagePage {
            notice: notice.clone(),
            next_href: "/",
            next_ja: "ログイン画面へ",
            next_en: "To the log-in page",
        },
    )
}

pub(super) fn refused(e: &DomainError) -> (Option<Notice>, StatusCode) {
    (Some(i18n::refusal(e)), status_of(e))
}

// ---------------------------------------------------------------------------
// Log-in
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct Landing {
    expired: Option<String>,
    bye: Option<String>,
}

pub async fn login_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Landing>,
) -> Response {
    if let Some(secret) = cookies::get(&headers, cookies::SESSION) {
        if s.ichido.authenticate_session(secret).await.is_ok() {
            return see_other("/home");
        }
    }
    let notice = if q.bye.is_some() {
        Some(Notice::ok(
            "ログアウトしました。ご利用ありがとうございました。",
            "You have logged out. Thank you.",
        ))
    } else if q.expired.is_some() {
        Some(i18n::refusal(&DomainError::Unauthorized))
    } else {
        None
    };
    let pre = PreSecret::of(&headers);
    let remembered = cookies::remembered_tokens(&headers);
    let page = LoginPage {
        notice,
        csrf: pre.token(),
        contract_no: String::new(),
        user_id: String::new(),
        token_id: remembered.first().cloned().unwrap_or_default(),
        remembered,
    };
    pre_page(StatusCode::OK, &page, &pre, &headers, &s)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    contract_no: String,
    user_id: String,
    login_password: Zeroizing<String>,
    #[serde(default)]
    token_id: String,
    #[serde(default)]
    otp: Zeroizing<String>,
}

pub async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<LoginForm>,
) -> Response {
    let pre = PreSecret::of(&headers);
    let remembered = cookies::remembered_tokens(&headers);
    let again = |notice: Option<Notice>, status: StatusCode| {
        let page = LoginPage {
            notice,
            csrf: pre.token(),
            contract_no: f.contract_no.clone(),
            user_id: f.user_id.clone(),
            token_id: f.token_id.clone(),
            remembered: remembered.clone(),
        };
        pre_page(status, &page, &pre, &headers, &s)
    };
    if !csrf::pre_ok(&headers, &f.csrf) {
        return again(Some(i18n::stale_form()), StatusCode::FORBIDDEN);
    }
    let (c, u) = (f.contract_no.trim(), f.user_id.trim());
    if s.limits.user(c, u).is_err() {
        return again(Some(i18n::rate_limited()), StatusCode::TOO_MANY_REQUESTS);
    }
    let result = s
        .ichido
        .login(c, u, &f.login_password, given(&f.token_id), given(&f.otp))
        .await;
    match result {
        Ok(out) => {
            let mut r = see_other("/home");
            cookies::set(
                &mut r,
                cookies::SESSION,
                &out.session,
                None,
                cookies::secure(&headers, s.secure_cookies),
            );
            r
        }
        Err(e) => {
            let (n, status) = refused(&e);
            again(n, status)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<CsrfForm>,
) -> Response {
    let secure = cookies::secure(&headers, s.secure_cookies);
    let secret = cookies::get(&headers, cookies::SESSION);
    if !csrf::same_origin(&headers) || !csrf::valid(csrf::PORTAL, secret, &f.csrf) {
        return message(&i18n::stale_form(), StatusCode::FORBIDDEN);
    }
    if let Some(secret) = secret {
        // An already-ended session is logged out all the same.
        if let Err(e) = s.ichido.logout(secret).await {
            if !matches!(e, DomainError::Unauthorized) {
                return message(&i18n::refusal(&e), status_of(&e));
            }
        }
    }
    let mut r = see_other("/?bye=1");
    cookies::clear(&mut r, cookies::SESSION, secure);
    r
}

// ---------------------------------------------------------------------------
// Registration (利用開始登録) and activation
// ---------------------------------------------------------------------------

pub async fn register_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let pre = PreSecret::of(&headers);
    let page = RegisterPage {
        notice: None,
        csrf: pre.token(),
        contract_no: String::new(),
        user_id: String::new(),
    };
    pre_page(StatusCode::OK, &page, &pre, &headers, &s)
}

#[derive(Deserialize)]
pub struct RegisterForm {
    csrf: String,
    contract_no: String,
    user_id: String,
    login_password: Zeroizing<String>,
    kind: String,
}

/// The QR code of an otpauth URI as an SVG data URI (no external service).
fn qr_data_uri(uri: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        BASE64.encode(svg.as_bytes())
    ))
}

/// The secret in groups of four, easier to type into an app by hand.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<RegisterForm>,
) -> Response {
    let pre = PreSecret::of(&headers);
    let again = |notice: Notice, status: StatusCode| {
        let page = RegisterPage {
            notice: Some(notice),
            csrf: pre.token(),
            contract_no: f.contract_no.clone(),
            user_id: f.user_id.clone(),
        };
        pre_page(status, &page, &pre, &headers, &s)
    };
    if !csrf::pre_ok(&headers, &f.csrf) {
        return again(i18n::stale_form(), StatusCode::FORBIDDEN);
    }
    let (c, u) = (f.contract_no.trim(), f.user_id.trim());
    if s.limits.user(c, u).is_err() {
        return again(i18n::rate_limited(), StatusCode::TOO_MANY_REQUESTS);
    }
    let kind: TokenKind = match f.kind.parse() {
        Ok(k) => k,
        Err(e) => return again(i18n::refusal(&e), StatusCode::BAD_REQUEST),
    };
    let reg = match s.ichido.register(c, u, &f.login_password, kind).await {
        Ok(r) => r,
        Err(e) => return again(i18n::refusal(&e), status_of(&e)),
    };
    let secret = Zeroizing::new(base32::encode(&reg.secret));
    let Some(qr) = qr_data_uri(&reg.otpauth_uri) else {
        tracing::error!("QR code could not be made for an otpauth URI");
        return again(
            i18n::refusal(&DomainError::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let t = &reg.token;
    let page = RegisteredPage {
        csrf: pre.token(),
        token_id: t.token_id.to_string(),
        kind_ja: i18n::kind_ja(t.kind),
        kind: t.kind.as_str(),
        secret_groups: grouped(&secret),
        qr_data_uri: qr,
        algorithm: t.algorithm.as_str(),
        digits: t.digits.get(),
        period: t.period,
    };
    pre_page(StatusCode::CREATED, &page, &pre, &headers, &s)
}

#[derive(Deserialize)]
pub struct ActivateForm {
    csrf: String,
    token_id: String,
    otp: Zeroizing<String>,
}

pub async fn activate(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<ActivateForm>,
) -> Response {
    let pre = PreSecret::of(&headers);
    let token_id = f.token_id.trim();
    let again = |notice: Notice, status: StatusCode| {
        // The secret is not shown again: only the code can be retried.
        let page = ActivatePage {
            notice: Some(notice),
            csrf: pre.token(),
            token_id: token_id
                .parse::<ichido_domain::ids::TokenId>()
                .map(|t| t.to_string())
                .unwrap_or_default(),
        };
        pre_page(status, &page, &pre, &headers, &s)
    };
    if !csrf::pre_ok(&headers, &f.csrf) {
        return again(i18n::stale_form(), StatusCode::FORBIDDEN);
    }
    match s.ichido.activate(token_id, f.otp.trim()).await {
        Ok(t) => {
            let mut r = render(
                StatusCode::OK,
                &MessagePage {
                    notice: Notice::ok(
                        format!("利用開始登録が完了しました。トークンID {} はこのブラウザに記憶されました。ログイン画面からワンタイムパスワードでログインしてください。", t.token_id),
                        format!("Registration complete. This browser remembers token ID {}. Log in with a one-time password.", t.token_id),
                    ),
                    next_href: "/",
                    next_ja: "ログイン画面へ",
                    next_en: "To the log-in page",
                },
            );
            cookies::set(
                &mut r,
                cookies::TOKENS,
                &cookies::remember_token(&headers, t.token_id.as_str()),
                Some(cookies::TOKENS_MAX_AGE),
                cookies::secure(&headers, s.secure_cookies),
            );
            r
        }
        Err(e) => again(i18n::refusal(&e), status_of(&e)),
    }
}

// ---------------------------------------------------------------------------
// Resync (同期ズレ補正)
// ---------------------------------------------------------------------------

pub async fn resync_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let pre = PreSecret::of(&headers);
    let page = ResyncPage {
        notice: None,
        csrf: pre.token(),
        contract_no: String::new(),
        user_id: String::new(),
    };
    pre_page(StatusCode::OK, &page, &pre, &headers, &s)
}

#[derive(Deserialize)]
pub struct ResyncForm {
    csrf: String,
    contract_no: String,
    user_id: String,
    login_password: Zeroizing<String>,
    otp1: Zeroizing<String>,
    otp2: Zeroizing<String>,
}

pub async fn resync(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<ResyncForm>,
) -> Response {
    let pre = PreSecret::of(&headers);
    let again = |notice: Notice, status: StatusCode| {
        let page = ResyncPage {
            notice: Some(notice),
            csrf: pre.token(),
            contract_no: f.contract_no.clone(),
            user_id: f.user_id.clone(),
        };
        pre_page(status, &page, &pre, &headers, &s)
    };
    if !csrf::pre_ok(&headers, &f.csrf) {
        return again(i18n::stale_form(), StatusCode::FORBIDDEN);
    }
    let (c, u) = (f.contract_no.trim(), f.user_id.trim());
    if s.limits.user(c, u).is_err() {
        return again(i18n::rate_limited(), StatusCode::TOO_MANY_REQUESTS);
    }
    match s
        .ichido
        .resync(c, u, &f.login_password, f.otp1.trim(), f.otp2.trim())
        .await
    {
        Ok(()) => again(
            Notice::ok(
                "同期ズレを補正しました。次に表示されるワンタイムパスワードでログインできます。",
                "Your token is back in sync. Log in with its next one-time password.",
            ),
            StatusCode::OK,
        ),
        Err(e) => again(i18n::refusal(&e), status_of(&e)),
    }
}
