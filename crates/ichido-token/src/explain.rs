//! Turns the server's error answers into plain words for the customer, each with the next step to take.

use anyhow::{anyhow, Error};

use crate::api::ApiError;

/// What the customer was doing when the server said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Register,
    Activate,
    Resync,
}

impl Action {
    fn doing(self) -> &'static str {
        match self {
            Action::Register => "Registration (利用開始登録) failed",
            Action::Activate => "Activation of the new token failed",
            Action::Resync => "Resync (同期ズレ補正) failed",
        }
    }
}

/// The customer-facing error for `e`; `server` is the address that was called.
pub fn explain(e: &ApiError, action: Action, server: &str) -> Error {
    let doing = action.doing();
    match e {
        ApiError::Unreachable(cause) => anyhow!(
            "{doing}: Could not reach your bank's server at {server} ({cause}).\n  \
             Next step: check your internet connection and the --server address, then try again."
        ),
        ApiError::Protocol(what) => anyhow!(
            "{doing}: The server at {server} answered with {what}; it does not look like your bank's OTP server.\n  \
             Next step: check the --server address your bank gave you."
        ),
        ApiError::Server {
            status,
            code,
            message,
            retry_after,
        } => anyhow!(
            "{doing}: {}",
            capitalized(&server_answer(code, message, *status, *retry_after, action))
        ),
    }
}

/// "your bank…" → "Your bank…".
fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn server_answer(
    code: &str,
    message: &str,
    status: u16,
    retry_after: Option<u64>,
    action: Action,
) -> String {
    match code {
        "invalid_credentials" => "Contract number, user ID or login password is wrong.\n  \
            Next step: check them (契約者番号, 利用者ID, ログインパスワード) and try again. \
            After 5 wrong passwords in a row the user ID is locked."
            .into(),
        "user_locked" => "This user ID is locked after too many wrong login passwords.\n  \
            Next step: ask your bank to unlock your user ID, then try again."
            .into(),
        "token_locked" => "Your token is locked after too many wrong codes (閉塞).\n  \
            Next step: ask your bank to unlock it (閉塞解除), then try again."
            .into(),
        "token_suspended" => "Your token is suspended by your bank (一時停止).\n  \
            Next step: ask your bank to resume it (一時停止解除)."
            .into(),
        "token_revoked" => "This token was deregistered by your bank (登録解除) and can never be used again.\n  \
            Next step: remove it with `ichido-token remove`, then register a new one with `ichido-token register`."
            .into(),
        "token_pending" => "This token's registration was never finished.\n  \
            Next step: register again with `ichido-token register`."
            .into(),
        "token_exists" => "This user already has a token.\n  \
            Next step: use the PC where it is registered, or ask your bank to deregister it (登録解除) first, then register again."
            .into(),
        "otp_registration_required" => "Your bank has no token for this user (it may have been deregistered, 登録解除).\n  \
            Next step: remove the old token with `ichido-token remove`, then register again with `ichido-token register`."
            .into(),
        "invalid_otp" if action == Action::Resync => "your bank did not accept the codes of this token.\n  \
            Next step: if you used a code of this time token in the last 30 seconds, wait for the next code and try again. \
            Check that the PC's date, time and time zone are right, and that this is the token registered for this user \
            (`ichido-token list`). If it still fails, ask your bank to deregister it (登録解除) and register again."
            .into(),
        "invalid_otp" => "your bank did not accept the token's first code.\n  \
            Next step: check that the PC's date, time and time zone are right, then register again."
            .into(),
        "otp_replayed" => "these codes were already used.\n  \
            Next step: wait for the next code (time tokens: up to 30 seconds) and try again."
            .into(),
        "not_found" if action == Action::Activate => "the new token was discarded because it was not activated within 10 minutes.\n  \
            Next step: register again."
            .into(),
        "not_found" => format!(
            "the server does not offer this service at that address (HTTP {status}).\n  \
             Next step: check the --server address your bank gave you (the root address, without /api/v1)."
        ),
        "rate_limited" => format!(
            "your bank's server received too many requests for this user or from this network.\n  \
             Next step: wait {} and try again.",
            match retry_after {
                None => "a minute".to_owned(),
                Some(1) => "1 second".to_owned(),
                Some(s) => format!("{s} seconds"),
            }
        ),
        "unavailable" => "your bank's server is temporarily unavailable.\n  \
            Next step: try again in a few minutes; if it persists, contact your bank."
            .into(),
        "invalid_request" => format!(
            "the server refused the request: {message}\n  \
             Next step: check the contract number and user ID as your bank wrote them."
        ),
        other => format!(
            "the server answered {other} (HTTP {status}): {message}\n  \
             Next step: contact your bank and quote this message."
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn said(code: &str, action: Action) -> String {
        let e = ApiError::Server {
            status: 400,
            code: code.into(),
            message: "m".into(),
            retry_after: Some(7),
        };
        explain(&e, action, "https://bank.example").to_string()
    }

    #[test]
    fn every_contract_code_has_a_next_step() {
        for code in [
            "invalid_credentials",
            "user_locked",
            "token_locked",
            "token_suspended",
            "token_revoked",
            "token_pending",
            "token_exists",
            "otp_registration_required",
            "invalid_otp",
            "otp_replayed",
            "not_found",
            "rate_limited",
            "unavailable",
            "invalid_request",
            "forbidden",
        ] {
            for action in [Action::Register, Action::Activate, Action::Resync] {
                let m = said(code, action);
                assert!(m.contains("Next step:"), "{code}: {m}");
            }
        }
        assert!(said("token_locked", Action::Resync).contains("閉塞解除"));
        assert!(said("token_exists", Action::Register).contains("登録解除"));
        assert!(said("rate_limited", Action::Register).contains("7 seconds"));
        let m = explain(
            &ApiError::Unreachable("Connection refused".into()),
            Action::Register,
            "https://bank.example",
        )
        .to_string();
        assert!(
            m.contains("Could not reach") && m.contains("Connection refused"),
            "{m}"
        );
    }
}
