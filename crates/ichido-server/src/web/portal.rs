//! The customer portal: log-in (ログイン), self-registration (利用開始登録) with
//! the secret as text and as a QR code, activation, resync (同期ズレ補正),
//! transfers and their approval. Every rule is the domain's; these handlers
//! parse forms, call one service and render its answer.
//!
//! Invariants: the secret and its QR code appear once, in the answer to the
//! registration POST (never in a URL, never again); every POST is checked for
//! CSRF before anything else; passwords and codes are never rendered back.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use data_encoding::BASE64;
use ichido_domain::model::{
    Execution, LoginMethod, TokenKind, TokenState, Transaction, TransactionKind, TransactionState,
};
use ichido_domain::services::{Authenticated, NewTransaction};
use ichido_domain::DomainError;
use ichido_otp::base32;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::csrf::{self, PreSecret};
use super::i18n::{self, jst, yen};
use super::{cookies, render, see_other, Notice};
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

/// A transfer as the pages show it.
struct TransferRow {
    id: String,
    payee: String,
    amount: String,
    pending: bool,
    state_ja: &'static str,
    state_en: &'static str,
    created_at: String,
    created_by: String,
    approved_by: String,
}

impl From<&Transaction> for TransferRow {
    fn from(t: &Transaction) -> Self {
        let (state_ja, state_en) = match (t.state, t.execution) {
            (TransactionState::PendingApproval, _) => ("承認待ち", "awaiting approval"),
            (TransactionState::Executed, Some(Execution::Deferred)) => {
                ("承認済み（予約実行）", "approved (deferred)")
            }
            (TransactionState::Executed, _) => ("承認済み（即時実行）", "approved (real time)"),
        };
        TransferRow {
            id: t.id.clone(),
            payee: t.payee.clone(),
            amount: yen(t.amount),
            pending: t.state == TransactionState::PendingApproval,
            state_ja,
            state_en,
            created_at: jst(t.created_at),
            created_by: t.created_by.clone(),
            approved_by: t.approved_by.clone().unwrap_or_default(),
        }
    }
}

/// The user's token as the home page shows it.
struct TokenInfo {
    token_id: String,
    state: &'static str,
    state_ja: &'static str,
    kind_ja: &'static str,
    grace_until: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    notice: Option<Notice>,
    csrf: String,
    name: String,
    contract_no: String,
    user_id: String,
    role_ja: &'static str,
    role: &'static str,
    by_password: bool,
    token: Option<TokenInfo>,
    transfers: Vec<TransferRow>,
    can_create: bool,
}

#[derive(Template)]
#[template(path = "portal/transfer.html")]
struct TransferPage {
    notice: Option<Notice>,
    csrf: String,
    t: TransferRow,
    can_approve: bool,
    otp_needed: bool,
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
fn given(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// The customer behind the session cookie, with the secret (for CSRF).
async fn customer(
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

fn message(notice: &Notice, status: StatusCode) -> Response {
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

fn refused(e: &DomainError) -> (Option<Notice>, StatusCode) {
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
    Form(f): Form<LoginForm>,
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
    Form(f): Form<CsrfForm>,
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
    Form(f): Form<RegisterForm>,
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
    Form(f): Form<ActivateForm>,
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
    Form(f): Form<ResyncForm>,
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

// ---------------------------------------------------------------------------
// Home, transfers and approval
// ---------------------------------------------------------------------------

async fn home_page(
    s: &AppState,
    who: &Authenticated,
    secret: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let u = &who.user;
    let (view, list) = match (
        s.ichido.user_view(&u.contract_no, &u.user_id).await,
        s.ichido.transactions(who, 50).await,
    ) {
        (Ok(v), Ok(l)) => (v, l),
        (Err(e), _) | (_, Err(e)) => return message(&i18n::refusal(&e), status_of(&e)),
    };
    let token = view.token.as_ref().map(|t| TokenInfo {
        token_id: t.token_id.to_string(),
        state: t.state.as_str(),
        state_ja: i18n::state_ja(t.state),
        kind_ja: i18n::kind_ja(t.kind),
        grace_until: (t.state == TokenState::Suspended)
            .then_some(t.grace_until)
            .flatten()
            .map(jst),
    });
    let by_password = who.session.method == LoginMethod::Password;
    let notice = notice.or_else(|| match &token {
        Some(t) if by_password && t.state == "suspended" => Some(Notice::info(
            format!(
                "ワンタイムパスワードは一時停止中です。猶予期間（{}まで）はパスワードのみでご利用いただけます。この間に承認した取引は予約実行となります。",
                t.grace_until.clone().unwrap_or_default()
            ),
            "Your token is suspended. During the grace period you may use passwords alone; transfers you approve meanwhile run deferred.",
        )),
        _ => None,
    });
    render(
        status,
        &HomePage {
            notice,
            csrf: csrf::token(csrf::PORTAL, secret),
            name: u.name.clone(),
            contract_no: u.contract_no.clone(),
            user_id: u.user_id.clone(),
            role_ja: i18n::role_ja(u.role),
            role: u.role.as_str(),
            by_password,
            token,
            transfers: list.iter().map(TransferRow::from).collect(),
            can_create: u.role != ichido_domain::model::Role::Viewer,
        },
    )
}

pub async fn home(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match customer(&s, &headers).await {
        Ok((who, secret)) => home_page(&s, &who, &secret, None, StatusCode::OK).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct TransferForm {
    csrf: String,
    payee: String,
    amount: String,
}

pub async fn create_transfer(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<TransferForm>,
) -> Response {
    let (who, secret) = match customer(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf::same_origin(&headers) || !csrf::valid(csrf::PORTAL, Some(&secret), &f.csrf) {
        return home_page(
            &s,
            &who,
            &secret,
            Some(i18n::stale_form()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let amount: i64 = match f.amount.trim().replace(',', "").parse() {
        Ok(a) => a,
        Err(_) => {
            return home_page(
                &s,
                &who,
                &secret,
                Some(Notice::error(
                    "金額は半角数字（円単位）で入力してください。",
                    "Enter the amount in yen, digits only.",
                )),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    let new = NewTransaction {
        kind: TransactionKind::Transfer,
        payee: f.payee.trim().to_owned(),
        amount,
    };
    match s.ichido.create_transaction(&who, new).await {
        Ok(t) => see_other(&format!("/transfers/{}", t.id)),
        Err(e) => {
            let (n, status) = refused(&e);
            home_page(&s, &who, &secret, n, status).await
        }
    }
}

async fn transfer_view(
    s: &AppState,
    who: &Authenticated,
    secret: &str,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let t = match s.ichido.transaction(who, id).await {
        Ok(t) => t,
        Err(e) => return home_page(s, who, secret, Some(i18n::refusal(&e)), status_of(&e)).await,
    };
    let token_active = s
        .ichido
        .user_view(&who.user.contract_no, &who.user.user_id)
        .await
        .ok()
        .and_then(|v| v.token)
        .is_some_and(|t| t.state == TokenState::Active);
    render(
        status,
        &TransferPage {
            notice,
            csrf: csrf::token(csrf::PORTAL, secret),
            can_approve: t.state == TransactionState::PendingApproval
                && matches!(
                    who.user.role,
                    ichido_domain::model::Role::Approver
                        | ichido_domain::model::Role::Administrator
                ),
            t: TransferRow::from(&t),
            otp_needed: token_active,
        },
    )
}

pub async fn transfer_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match customer(&s, &headers).await {
        Ok((who, secret)) => transfer_view(&s, &who, &secret, &id, None, StatusCode::OK).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct ApproveForm {
    csrf: String,
    transaction_password: Zeroizing<String>,
    #[serde(default)]
    otp: Zeroizing<String>,
}

pub async fn approve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ApproveForm>,
) -> Response {
    let (who, secret) = match customer(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf::same_origin(&headers) || !csrf::valid(csrf::PORTAL, Some(&secret), &f.csrf) {
        return transfer_view(
            &s,
            &who,
            &secret,
            &id,
            Some(i18n::stale_form()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    match s
        .ichido
        .approve_transaction(&who, &id, &f.transaction_password, given(&f.otp))
        .await
    {
        Ok(t) => {
            let notice = match t.execution {
                Some(Execution::Deferred) => Notice::ok(
                    "承認しました。パスワードのみでの承認のため、振込は予約実行となります。",
                    "Approved. Approved with passwords alone, the transfer runs deferred.",
                ),
                _ => Notice::ok(
                    "承認しました。振込は即時に実行されました。",
                    "Approved. The transfer was executed in real time.",
                ),
            };
            transfer_view(&s, &who, &secret, &id, Some(notice), StatusCode::OK).await
        }
        Err(e) => {
            let (n, status) = refused(&e);
            transfer_view(&s, &who, &secret, &id, n, status).await
        }
    }
}
