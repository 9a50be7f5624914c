//! The operator console: the bank's operators process the customers' paper
//! forms (諸届) — suspend (一時停止), resume (一時停止解除), unlock (閉塞解除),
//! deregister (登録解除), clear a password lock — and read the audit log.
//!
//! Invariants: an operator signs in with name, password and a TOTP code of the
//! operator's own token; every form is confirmed on a page of its own and
//! carries the console session's CSRF token; each change is made by the same
//! domain service as the operator API, with `operator:NAME` as the actor.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ichido_domain::audit::AuditFilter;
use ichido_domain::model::{Operator, TokenState, UserView};
use ichido_domain::services::Actor;
use ichido_domain::DomainError;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::csrf::{self, PreSecret};
use super::i18n::{self, jst};
use super::{cookies, render, see_other, Notice, WebForm};
use crate::error::status_of;
use crate::AppState;

/// The forms an operator processes, by their name in URLs and forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaperForm {
    Suspend,
    Resume,
    UnlockToken,
    Revoke,
    UnlockUser,
}

impl PaperForm {
    const ALL: [PaperForm; 5] = [
        PaperForm::Suspend,
        PaperForm::Resume,
        PaperForm::UnlockToken,
        PaperForm::Revoke,
        PaperForm::UnlockUser,
    ];

    fn parse(s: &str) -> Option<PaperForm> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    fn as_str(self) -> &'static str {
        match self {
            PaperForm::Suspend => "suspend",
            PaperForm::Resume => "resume",
            PaperForm::UnlockToken => "unlock_token",
            PaperForm::Revoke => "revoke",
            PaperForm::UnlockUser => "unlock_user",
        }
    }

    fn ja(self) -> &'static str {
        match self {
            PaperForm::Suspend => "一時停止",
            PaperForm::Resume => "一時停止解除",
            PaperForm::UnlockToken => "閉塞解除",
            PaperForm::Revoke => "登録解除",
            PaperForm::UnlockUser => "パスワードロック解除",
        }
    }

    fn en(self) -> &'static str {
        match self {
            PaperForm::Suspend => "Suspend the token",
            PaperForm::Resume => "Resume the token",
            PaperForm::UnlockToken => "Unlock the token",
            PaperForm::Revoke => "Deregister the token",
            PaperForm::UnlockUser => "Clear the password lock",
        }
    }
}

// ---------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    notice: Option<Notice>,
    csrf: String,
    name: String,
}

/// A form button on the user page.
struct ActionLink {
    action: &'static str,
    ja: &'static str,
    en: &'static str,
}

/// What the console shows of a user.
struct UserPanel {
    contract_no: String,
    user_id: String,
    name: String,
    role: &'static str,
    role_ja: &'static str,
    locked: bool,
    token_id: String,
    token_kind: &'static str,
    token_state: &'static str,
    token_state_ja: &'static str,
    failures: u32,
    grace_until: String,
    actions: Vec<ActionLink>,
}

impl UserPanel {
    fn of(v: &UserView) -> UserPanel {
        let t = v.token.as_ref();
        let state = t.map(|t| t.state);
        let mut actions = Vec::new();
        let mut add = |f: PaperForm| {
            actions.push(ActionLink {
                action: f.as_str(),
                ja: f.ja(),
                en: f.en(),
            })
        };
        // Offer the forms that apply to the token's state; the domain decides all the same.
        match state {
            Some(TokenState::Active) => {
                add(PaperForm::Suspend);
                add(PaperForm::UnlockToken);
            }
            Some(TokenState::Suspended) => add(PaperForm::Resume),
            Some(TokenState::Locked) => add(PaperForm::UnlockToken),
            _ => {}
        }
        if t.is_some() {
            add(PaperForm::Revoke);
        }
        if v.locked {
            add(PaperForm::UnlockUser);
        }
        UserPanel {
            contract_no: v.user.contract_no.clone(),
            user_id: v.user.user_id.clone(),
            name: v.user.name.clone(),
            role: v.user.role.as_str(),
            role_ja: i18n::role_ja(v.user.role),
            locked: v.locked,
            token_id: t.map(|t| t.token_id.to_string()).unwrap_or_default(),
            token_kind: t.map(|t| t.kind.as_str()).unwrap_or_default(),
            token_state: state.map(|s| s.as_str()).unwrap_or_default(),
            token_state_ja: state.map(i18n::state_ja).unwrap_or_default(),
            failures: t.map(|t| t.failures).unwrap_or(0),
            grace_until: t
                .and_then(|t| t.grace_until)
                .filter(|_| state == Some(TokenState::Suspended))
                .map(jst)
                .unwrap_or_default(),
            actions,
        }
    }
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    notice: Option<Notice>,
    csrf: String,
    operator: String,
    contract_no: String,
    user_id: String,
    user: Option<UserPanel>,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    csrf: String,
    operator: String,
    action: &'static str,
    action_ja: &'static str,
    action_en: &'static str,
    suspend: bool,
    default_grace: u32,
    user: UserPanel,
}

struct AuditRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    contract_no: String,
    user_id: String,
    token_id: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    notice: Option<Notice>,
    csrf: String,
    operator: String,
    contract_no: String,
    user_id: String,
    token_id: String,
    events: Vec<AuditRow>,
    older: Option<String>,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The operator behind the console cookie, with the session secret (for CSRF).
async fn operator(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Operator, Zeroizing<String>)>, DomainError> {
    let Some(secret) = cookies::get(headers, cookies::CONSOLE) else {
        return Ok(None);
    };
    match s.ichido.console_session(secret).await {
        Ok(op) => Ok(Some((op, Zeroizing::new(secret.to_owned())))),
        Err(DomainError::Unauthorized) => Ok(None),
        Err(e) => Err(e),
    }
}

fn sign_in_page(
    s: &AppState,
    headers: &HeaderMap,
    notice: Option<Notice>,
    name: &str,
    status: StatusCode,
) -> Response {
    let pre = PreSecret::of(headers);
    let mut r = render(
        status,
        &SignInPage {
            notice,
            csrf: pre.token(),
            name: name.to_owned(),
        },
    );
    let secure = cookies::secure(headers, s.secure_cookies);
    pre.apply(&mut r, secure);
    if cookies::get(headers, cookies::CONSOLE).is_some() {
        cookies::clear(&mut r, cookies::CONSOLE, secure);
    }
    r
}

/// The console page of an operator who is signed in, or the sign-in page.
macro_rules! signed_in {
    ($s:expr, $headers:expr) => {
        match operator(&$s, &$headers).await {
            Ok(Some(x)) => x,
            Ok(None) => return sign_in_page(&$s, &$headers, None, "", StatusCode::UNAUTHORIZED),
            Err(e) => {
                return sign_in_page(&$s, &$headers, Some(i18n::refusal(&e)), "", status_of(&e))
            }
        }
    };
}

fn done_notice(f: PaperForm) -> Notice {
    Notice::ok(
        format!("{}を受け付けました。監査ログに記録されました。", f.ja()),
        format!("{}: done, and recorded in the audit log.", f.en()),
    )
}

// ---------------------------------------------------------------------------
// Sign-in and sign-out
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    name: String,
    password: Zeroizing<String>,
    otp: Zeroizing<String>,
}

pub async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<SignInForm>,
) -> Response {
    let name = f.name.trim();
    if !csrf::pre_ok(&headers, &f.csrf) {
        return sign_in_page(
            &s,
            &headers,
            Some(i18n::stale_form()),
            name,
            StatusCode::FORBIDDEN,
        );
    }
    // Console sign-ins share the per-user limiter under a key no contract can have.
    if s.limits.user("\u{0}console", name).is_err() {
        return sign_in_page(
            &s,
            &headers,
            Some(i18n::rate_limited()),
            name,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    match s
        .ichido
        .console_sign_in(name, &f.password, f.otp.trim())
        .await
    {
        Ok(out) => {
            let mut r = see_other("/console");
            cookies::set(
                &mut r,
                cookies::CONSOLE,
                &out.session,
                None,
                cookies::secure(&headers, s.secure_cookies),
            );
            r
        }
        Err(e) => {
            let notice = match e {
                DomainError::InvalidCredentials | DomainError::InvalidRequest(_) => {
                    Notice::error(
                        "オペレーター名・パスワード・ワンタイムパスワードのいずれかが正しくありません。",
                        "The operator name, password or one-time password is not correct.",
                    )
                }
                DomainError::UserLocked => Notice::error(
                    "サインインの失敗が続いたため、ロックされています。管理者に `ichido operator console` での再発行を依頼してください。",
                    "Locked after too many failed sign-ins. Ask an administrator to reissue your credentials (ichido operator console).",
                ),
                other => i18n::refusal(&other),
            };
            sign_in_page(&s, &headers, Some(notice), name, StatusCode::UNAUTHORIZED)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn sign_out(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<CsrfForm>,
) -> Response {
    let secret = cookies::get(&headers, cookies::CONSOLE);
    if !csrf::same_origin(&headers) || !csrf::valid(csrf::CONSOLE, secret, &f.csrf) {
        return sign_in_page(
            &s,
            &headers,
            Some(i18n::stale_form()),
            "",
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(secret) = secret {
        if let Err(e) = s.ichido.console_sign_out(secret).await {
            if !matches!(e, DomainError::Unauthorized) {
                return sign_in_page(&s, &headers, Some(i18n::refusal(&e)), "", status_of(&e));
            }
        }
    }
    let mut r = sign_in_page(
        &s,
        &headers,
        Some(Notice::ok("サインアウトしました。", "Signed out.")),
        "",
        StatusCode::OK,
    );
    cookies::clear(
        &mut r,
        cookies::CONSOLE,
        cookies::secure(&headers, s.secure_cookies),
    );
    r
}

// ---------------------------------------------------------------------------
// Finding a user, confirming and processing a form
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct Find {
    #[serde(default)]
    contract_no: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    done: String,
}

async fn home_page(
    s: &AppState,
    op: &Operator,
    secret: &str,
    contract_no: &str,
    user_id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let (mut notice, mut status) = (notice, status);
    let user = if contract_no.is_empty() && user_id.is_empty() {
        None
    } else {
        match s.ichido.user_view(contract_no, user_id).await {
            Ok(v) => Some(UserPanel::of(&v)),
            Err(e) => {
                if notice.is_none() {
                    notice = Some(match e {
                        DomainError::NotFound(_) | DomainError::InvalidRequest(_) => {
                            Notice::error(
                                "該当する利用者が見つかりません。契約者番号と利用者IDをご確認ください。",
                                "No such user. Check the contract number and user ID.",
                            )
                        }
                        other => i18n::refusal(&other),
                    });
                    status = StatusCode::NOT_FOUND;
                }
                None
            }
        }
    };
    render(
        status,
        &HomePage {
            notice,
            csrf: csrf::token(csrf::CONSOLE, secret),
            operator: op.name.clone(),
            contract_no: contract_no.to_owned(),
            user_id: user_id.to_owned(),
            user,
        },
    )
}

pub async fn home(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Find>,
) -> Response {
    let (op, secret) = match operator(&s, &headers).await {
        Ok(Some(x)) => x,
        Ok(None) => return sign_in_page(&s, &headers, None, "", StatusCode::OK),
        Err(e) => return sign_in_page(&s, &headers, Some(i18n::refusal(&e)), "", status_of(&e)),
    };
    let notice = PaperForm::parse(&q.done).map(done_notice);
    home_page(
        &s,
        &op,
        &secret,
        q.contract_no.trim(),
        q.user_id.trim(),
        notice,
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    contract_no: String,
    user_id: String,
    action: String,
}

pub async fn confirm(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let (op, secret) = signed_in!(s, headers);
    let Some(f) = PaperForm::parse(&q.action) else {
        return home_page(
            &s,
            &op,
            &secret,
            &q.contract_no,
            &q.user_id,
            Some(i18n::refusal(&DomainError::InvalidRequest(String::new()))),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    match s.ichido.user_view(&q.contract_no, &q.user_id).await {
        Ok(v) => render(
            StatusCode::OK,
            &ConfirmPage {
                csrf: csrf::token(csrf::CONSOLE, &secret),
                operator: op.name.clone(),
                action: f.as_str(),
                action_ja: f.ja(),
                action_en: f.en(),
                suspend: f == PaperForm::Suspend,
                default_grace: s.ichido.policy().suspension_grace_days,
                user: UserPanel::of(&v),
            },
        ),
        Err(_) => {
            home_page(
                &s,
                &op,
                &secret,
                &q.contract_no,
                &q.user_id,
                None,
                StatusCode::NOT_FOUND,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    contract_no: String,
    user_id: String,
    action: String,
    #[serde(default)]
    grace_days: String,
}

pub async fn action(
    State(s): State<AppState>,
    headers: HeaderMap,
    WebForm(f): WebForm<ActionForm>,
) -> Response {
    let (op, secret) = signed_in!(s, headers);
    let (c, u) = (f.contract_no.as_str(), f.user_id.as_str());
    let fail = |notice: Notice, status: StatusCode| {
        let (op, secret) = (op.clone(), secret.clone());
        let s = s.clone();
        async move { home_page(&s, &op, &secret, c, u, Some(notice), status).await }
    };
    if !csrf::same_origin(&headers) || !csrf::valid(csrf::CONSOLE, Some(&secret), &f.csrf) {
        return fail(i18n::stale_form(), StatusCode::FORBIDDEN).await;
    }
    let Some(form) = PaperForm::parse(&f.action) else {
        return fail(
            i18n::refusal(&DomainError::InvalidRequest(String::new())),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let actor = Actor::Operator(op.name.clone());
    let ichido = &s.ichido;
    let result = match form {
        PaperForm::Suspend => {
            let grace = match f.grace_days.trim() {
                "" => Ok(None),
                d => d.parse::<u32>().map(Some).map_err(|_| {
                    DomainError::InvalidRequest("grace_days must be 0 to 3650".into())
                }),
            };
            match grace {
                Ok(g) => ichido.suspend(&actor, c, u, g).await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        PaperForm::Resume => ichido.resume(&actor, c, u).await.map(|_| ()),
        PaperForm::UnlockToken => ichido.unlock_token(&actor, c, u).await.map(|_| ()),
        PaperForm::Revoke => ichido.revoke(&actor, c, u).await.map(|_| ()),
        PaperForm::UnlockUser => ichido.unlock_user(&actor, c, u).await.map(|_| ()),
    };
    match result {
        Ok(()) => {
            let q = serde_urlencoded_pairs(&[
                ("contract_no", c),
                ("user_id", u),
                ("done", form.as_str()),
            ]);
            see_other(&format!("/console?{q}"))
        }
        Err(e) => fail(operator_refusal(&e), status_of(&e)).await,
    }
}

/// A refusal as the operator needs to read it: which state blocked the form.
fn operator_refusal(e: &DomainError) -> Notice {
    let (ja, en) = match e {
        DomainError::NotFound(_) => (
            "この利用者には有効なトークンがありません。",
            "This user has no live token.",
        ),
        DomainError::TokenLocked => (
            "トークンは閉塞中です。先に閉塞解除を行ってください。",
            "The token is locked: unlock it first.",
        ),
        DomainError::TokenPending => (
            "トークンは登録手続中（未有効化）です。",
            "The token is still pending activation.",
        ),
        DomainError::InvalidRequest(_) => (
            "入力内容に誤りがあります（猶予日数は0〜3650）。",
            "Invalid input (grace days must be 0 to 3650).",
        ),
        other => return i18n::refusal(other),
    };
    Notice::error(ja, en)
}

/// `k=v&…` with both sides percent-encoded.
fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The audit log
// ---------------------------------------------------------------------------

/// Events per audit page.
const AUDIT_PAGE: u32 = 25;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    contract_no: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    token_id: String,
    before: Option<i64>,
}

pub async fn audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let (op, secret) = signed_in!(s, headers);
    let nonempty = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let filter = AuditFilter {
        contract_no: nonempty(&q.contract_no),
        user_id: nonempty(&q.user_id),
        token_id: nonempty(&q.token_id),
        before_seq: q.before,
        limit: AUDIT_PAGE,
    };
    let (events, notice, status) = match s.ichido.audit_events(filter).await {
        Ok(ev) => (ev, None, StatusCode::OK),
        Err(e) => (Vec::new(), Some(i18n::refusal(&e)), status_of(&e)),
    };
    let older = (events.len() == AUDIT_PAGE as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten()
        .map(|seq| {
            let before = seq.to_string();
            serde_urlencoded_pairs(&[
                ("contract_no", q.contract_no.trim()),
                ("user_id", q.user_id.trim()),
                ("token_id", q.token_id.trim()),
                ("before", &before),
            ])
        });
    let rows = events
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: jst(e.at),
            actor: e.actor,
            action: e.action,
            contract_no: e.contract_no.unwrap_or_default(),
            user_id: e.user_id.unwrap_or_default(),
            token_id: e.token_id.unwrap_or_default(),
            outcome: e.outcome,
        })
        .collect();
    render(
        status,
        &AuditPage {
            notice,
            csrf: csrf::token(csrf::CONSOLE, &secret),
            operator: op.name,
            contract_no: q.contract_no.trim().to_owned(),
            user_id: q.user_id.trim().to_owned(),
            token_id: q.token_id.trim().to_owned(),
            events: rows,
            older,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_urls_are_encoded() {
        for f in PaperForm::ALL {
            assert_eq!(PaperForm::parse(f.as_str()), Some(f));
        }
        assert_eq!(PaperForm::parse("drop"), None);
        assert_eq!(
            serde_urlencoded_pairs(&[("a", "x y&z"), ("b", "ü")]),
            "a=x%20y%26z&b=%C3%BC"
        );
    }
}
