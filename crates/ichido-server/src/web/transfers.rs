//! The customer's pages behind a session: home (token state, a new transfer,
//! the list) and a transfer with its approval (transaction password + OTP).
//!
//! Invariants: every page needs a live session (else back to log-in); every
//! POST checks the session's CSRF token first; the approval is the domain's
//! one conditional write, so a transfer is executed once.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ichido_domain::model::{
    Execution, LoginMethod, Role, TokenState, Transaction, TransactionKind, TransactionState,
};
use ichido_domain::services::{Authenticated, NewTransaction};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::csrf;
use super::i18n::{self, jst, yen};
use super::portal::{customer, given, message, refused};
use super::{render, see_other, Notice, WebForm};
use crate::error::status_of;
use crate::AppState;

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
            can_create: u.role != Role::Viewer,
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
    WebForm(f): WebForm<TransferForm>,
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
                && matches!(who.user.role, Role::Approver | Role::Administrator),
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
    WebForm(f): WebForm<ApproveForm>,
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
