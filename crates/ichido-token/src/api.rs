//! The bank's server as the token sees it: registration, activation and resync over HTTPS, with the contract's error answers.

use std::time::Duration;

use anyhow::{bail, Result};
use reqwest::blocking::{Client as Http, Response};
use reqwest::{redirect, StatusCode, Url};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::store::Secret;

/// A failed call: the server's answer, or no answer at all.
#[derive(Debug)]
pub enum ApiError {
    /// A non-2xx answer with the contract's error body.
    Server {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<u64>,
    },
    /// No answer: DNS, connection, TLS, timeout.
    Unreachable(String),
    /// An answer that is not the contract's (another program at that address).
    Protocol(String),
}

/// The server's answer to a registration (利用開始登録).
#[derive(Deserialize)]
pub struct Registration {
    pub token_id: String,
    pub kind: String,
    pub secret: Secret,
    pub algorithm: String,
    pub digits: u8,
    pub period: Option<u32>,
    pub counter: Option<u64>,
}

#[derive(Serialize)]
struct RegistrationBody<'a> {
    contract_no: &'a str,
    user_id: &'a str,
    login_password: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct OtpBody<'a> {
    otp: &'a str,
}

#[derive(Serialize)]
struct ResyncBody<'a> {
    contract_no: &'a str,
    user_id: &'a str,
    login_password: &'a str,
    otp1: &'a str,
    otp2: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Normalises a server root URL: `https://` (or `http://` to this computer
/// only), no query or fragment, no trailing `/`.
pub fn normalize_server(raw: &str) -> Result<String> {
    let hint = "Next step: give the address your bank told you, e.g. `--server https://otp.example-bank.co.jp`.";
    let Ok(url) = Url::parse(raw.trim()) else {
        bail!("{raw:?} is not a web address.\n  {hint}");
    };
    let loopback = matches!(
        url.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    ) || url.host_str().is_some_and(|h| h.starts_with("127."));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => bail!(
            "{raw} is not encrypted (http://): your password and token would travel in clear.\n  \
             Next step: use the https:// address of your bank's server."
        ),
        _ => bail!("{raw:?} is not an https:// address.\n  {hint}"),
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        bail!("{raw:?} is not a server root address.\n  {hint}");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{raw:?} must not contain a user name or password.\n  {hint}");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A client for one server.
pub struct Client {
    http: Http,
    root: String,
}

impl Client {
    /// `server` must be normalised (see [`normalize_server`]).
    pub fn new(server: &str) -> Result<Client> {
        let http = Http::builder()
            .user_agent(concat!("ichido-token/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .redirect(redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            root: server.to_owned(),
        })
    }

    /// `POST /registrations`: a pending token and its secret.
    pub fn register(
        &self,
        contract_no: &str,
        user_id: &str,
        login_password: &str,
        kind: &str,
    ) -> Result<Registration, ApiError> {
        let body = RegistrationBody {
            contract_no,
            user_id,
            login_password,
            kind,
        };
        let resp = self.post("/registrations", &body)?;
        let bytes = Zeroizing::new(
            resp.bytes()
                .map_err(|e| ApiError::Unreachable(describe(&e)))?
                .to_vec(),
        );
        serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::Protocol("an unexpected registration answer".into()))
    }

    /// `POST /registrations/{token_id}/activate` with the first code.
    pub fn activate(&self, token_id: &str, otp: &str) -> Result<(), ApiError> {
        self.post(
            &format!("/registrations/{token_id}/activate"),
            &OtpBody { otp },
        )
        .map(drop)
    }

    /// `POST /token/resync` with two consecutive codes.
    pub fn resync(
        &self,
        contract_no: &str,
        user_id: &str,
        login_password: &str,
        otp1: &str,
        otp2: &str,
    ) -> Result<(), ApiError> {
        let body = ResyncBody {
            contract_no,
            user_id,
            login_password,
            otp1,
            otp2,
        };
        self.post("/token/resync", &body).map(drop)
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Response, ApiError> {
        let url = format!("{}/api/v1{path}", self.root);
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .map_err(|e| ApiError::Unreachable(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another address")
                .to_owned();
            return Err(ApiError::Protocol(format!(
                "a redirection to {to} (check the --server address)"
            )));
        }
        Err(error_of(status, resp))
    }
}

fn error_of(status: StatusCode, resp: Response) -> ApiError {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    match resp.json::<ErrorBody>() {
        Ok(body) => ApiError::Server {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            retry_after,
        },
        Err(_)
            if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY =>
        {
            ApiError::Server {
                status: status.as_u16(),
                code: "unavailable".into(),
                message: String::new(),
                retry_after,
            }
        }
        Err(_) => ApiError::Protocol(format!("HTTP {status} without an ichido error")),
    }
}

/// The innermost cause of a transport error, in words ("Connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn server_addresses_are_normalised() {
        assert_eq!(
            normalize_server("https://bank.example/").unwrap(),
            "https://bank.example"
        );
        assert_eq!(
            normalize_server(" https://Bank.Example/otp/ ").unwrap(),
            "https://bank.example/otp"
        );
        assert_eq!(
            normalize_server("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalize_server("http://localhost:1/").is_ok());
        for bad in [
            "bank.example",
            "http://bank.example",
            "ftp://bank.example",
            "https://bank.example/?a=1",
            "https://u:p@bank.example",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
        let err = normalize_server("http://bank.example")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
    }
}
