//! CSRF protection of every form.
//!
//! A form's hidden `csrf` field carries `SHA-256(label ‖ secret)` in hex, where
//! the secret is the browser's HttpOnly session cookie (customer or console),
//! or — for the forms shown before a session exists (log-in, registration,
//! activation, resync, console sign-in) — a random per-browser cookie
//! `ichido_pre`. A page of another site can neither read the cookie nor the
//! page, so it cannot forge the field; SameSite=Strict keeps the cookies off
//! cross-site requests anyway, and `Sec-Fetch-Site`/`Origin` are checked too.
//! Deriving the token (rather than storing it) keeps it valid on every
//! instance that shares the database.

use axum::http::{header, HeaderMap};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cookies;

/// Labels keep the three kinds of token apart.
pub const PORTAL: &str = "portal";
pub const CONSOLE: &str = "console";
pub const PRE: &str = "pre";

/// The CSRF token of `secret` for forms of kind `label`.
pub fn token(label: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"ichido csrf v1\0");
    h.update(label.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `given` is the token of `secret` (constant time).
pub fn valid(label: &str, secret: Option<&str>, given: &str) -> bool {
    let Some(secret) = secret else { return false };
    let expected = token(label, secret);
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Whether the request comes from one of our own pages: a browser that sends
/// `Sec-Fetch-Site` must say `same-origin` (or `none`: typed by the user), and
/// an `Origin` header must name this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = site {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        // A privacy-minded browser may hide the origin; then it must vouch itself.
        Some("null") => site == Some("same-origin"),
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let bare = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            !host.is_empty() && bare == Some(host)
        }
    }
}

/// The browser's pre-session secret: the existing cookie, or a new one that the
/// caller must set (`fresh`).
pub struct PreSecret {
    pub value: String,
    pub fresh: bool,
}

impl PreSecret {
    pub fn of(headers: &HeaderMap) -> PreSecret {
        match cookies::get(headers, cookies::PRE)
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Some(v) => PreSecret {
                value: v.to_owned(),
                fresh: false,
            },
            None => {
                let mut raw = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                PreSecret {
                    value: hex::encode(raw),
                    fresh: true,
                }
            }
        }
    }

    pub fn token(&self) -> String {
        token(PRE, &self.value)
    }

    /// Sets the cookie on `resp` if it is new.
    pub fn apply(&self, resp: &mut axum::response::Response, secure: bool) {
        if self.fresh {
            cookies::set(resp, cookies::PRE, &self.value, None, secure);
        }
    }
}

/// Checks a pre-session form: same origin, and the field matches the cookie.
pub fn pre_ok(headers: &HeaderMap, given: &str) -> bool {
    same_origin(headers) && valid(PRE, cookies::get(headers, cookies::PRE), given)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_bind_label_and_secret() {
        let t = token(PORTAL, "s1");
        assert!(valid(PORTAL, Some("s1"), &t));
        assert!(!valid(PORTAL, Some("s2"), &t));
        assert!(!valid(CONSOLE, Some("s1"), &t));
        assert!(!valid(PORTAL, None, &t));
        assert!(!valid(PORTAL, Some("s1"), ""));
        assert_ne!(t, "s1");
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("bank.example:8080"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://bank.example:8080"),
        );
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h));
        h.remove("sec-fetch-site");
        assert!(!same_origin(&h), "a hidden origin needs Sec-Fetch-Site");
    }
}
