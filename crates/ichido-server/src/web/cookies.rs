//! Cookies of the web pages: read from the `Cookie` header, written with
//! `HttpOnly; SameSite=Strict; Path=/` (and `Secure` when the request came over
//! TLS, or the configuration says the server is behind TLS).
//!
//! Names: `ichido_session` (a customer's session secret), `ichido_console` (an
//! operator's console session secret), `ichido_pre` (the browser's pre-session
//! CSRF secret) and `ichido_tokens` (token IDs registered in this browser).

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

pub const SESSION: &str = "ichido_session";
pub const CONSOLE: &str = "ichido_console";
pub const PRE: &str = "ichido_pre";
pub const TOKENS: &str = "ichido_tokens";

/// How long the browser remembers its registered token IDs (device binding, R4).
pub const TOKENS_MAX_AGE: u64 = 5 * 365 * 24 * 3600;

/// The value of cookie `name`, if the request has it.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Whether the request reached us over TLS (directly or through a proxy that
/// says so), or the server is configured to send `Secure` cookies always.
pub fn secure(headers: &HeaderMap, configured: bool) -> bool {
    configured
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Adds `Set-Cookie`. `max_age` None makes a session cookie; `Some(0)` deletes.
/// Values are only ever our own ASCII tokens (hex, token IDs), never user input.
pub fn set(resp: &mut Response, name: &str, value: &str, max_age: Option<u64>, secure: bool) {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

/// Deletes cookie `name`.
pub fn clear(resp: &mut Response, name: &str, secure: bool) {
    set(resp, name, "", Some(0), secure);
}

/// The token IDs remembered by this browser, newest first (at most 5): only
/// well-formed token IDs are kept, so the cookie can never carry markup.
pub fn remembered_tokens(headers: &HeaderMap) -> Vec<String> {
    get(headers, TOKENS)
        .unwrap_or("")
        .split('.')
        .filter(|t| t.parse::<ichido_domain::ids::TokenId>().is_ok())
        .take(5)
        .map(str::to_owned)
        .collect()
}

/// The cookie value that remembers `token_id` first, then the others.
pub fn remember_token(headers: &HeaderMap, token_id: &str) -> String {
    let mut list = vec![token_id.to_owned()];
    list.extend(
        remembered_tokens(headers)
            .into_iter()
            .filter(|t| t != token_id)
            .take(4),
    );
    list.join(".")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_cookies_and_keeps_only_token_ids() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; ichido_tokens=ABCD12345670.<b>x; ichido_pre=ff"),
        );
        assert_eq!(get(&h, "a"), Some("1"));
        assert_eq!(get(&h, PRE), Some("ff"));
        assert_eq!(get(&h, "missing"), None);
        let valid = ichido_domain::ids::TokenId::random().to_string();
        let remembered = remembered_tokens(&h);
        assert!(remembered.iter().all(|t| t.len() == 12), "{remembered:?}");
        assert!(!remembered.iter().any(|t| t.contains('<')));
        let v = remember_token(&h, &valid);
        assert!(v.starts_with(&valid), "{v}");
    }

    #[test]
    fn secure_flag() {
        let mut h = HeaderMap::new();
        assert!(!secure(&h, false));
        assert!(secure(&h, true));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(secure(&h, false));
    }
}
