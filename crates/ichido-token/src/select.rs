//! Choosing a token: none needed with one token; otherwise --contract, --user (and --server), with the choices listed when unclear.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cli::Select;
use crate::store::Token;

/// The tokens that match the given selectors (all of them when none is given).
pub fn matching<'a>(
    tokens: &'a [Token],
    server: Option<&str>,
    sel: &Select,
) -> Vec<(usize, &'a Token)> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            server.is_none_or(|s| t.server == s)
                && sel.contract.as_deref().is_none_or(|c| t.contract_no == c)
                && sel.user.as_deref().is_none_or(|u| t.user_id == u)
        })
        .collect()
}

/// The index of the one token the selectors point at.
pub fn pick(tokens: &[Token], server: Option<&str>, sel: &Select, store: &Path) -> Result<usize> {
    if tokens.is_empty() {
        bail!(
            "there are no tokens in {} yet.\n  \
             Next step: register one with `ichido-token register --server URL --contract C --user U`, \
             or restore a backup with `ichido-token import FILE`.",
            store.display()
        );
    }
    let found = matching(tokens, server, sel);
    match found.as_slice() {
        [(i, _)] => Ok(*i),
        [] => bail!(
            "no token for {} on this PC. The tokens here are:\n{}\n  \
             Next step: choose one of them with --contract and --user.",
            wanted(server, sel),
            choices(tokens.iter())
        ),
        several => bail!(
            "{} tokens are on this PC; say which one to use:\n{}\n  \
             Next step: add --contract and --user{}.",
            several.len(),
            choices(several.iter().map(|(_, t)| *t)),
            if several
                .iter()
                .any(|(_, a)| several.iter().any(|(_, b)| a.server != b.server
                    && a.user_id == b.user_id
                    && a.contract_no == b.contract_no))
            {
                " and --server"
            } else {
                ""
            }
        ),
    }
}

fn wanted(server: Option<&str>, sel: &Select) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &sel.contract {
        parts.push(format!("contract {c}"));
    }
    if let Some(u) = &sel.user {
        parts.push(format!("user {u}"));
    }
    if let Some(s) = server {
        parts.push(format!("server {s}"));
    }
    parts.join(", ")
}

fn choices<'a>(tokens: impl Iterator<Item = &'a Token>) -> String {
    tokens
        .map(|t| {
            format!(
                "    --contract {} --user {}   ({} token {} at {})",
                t.contract_no,
                t.user_id,
                t.kind.as_str(),
                t.token_id,
                t.server
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::{Kind, Secret};

    fn t(server: &str, contract: &str, user: &str) -> Token {
        Token {
            server: server.into(),
            contract_no: contract.into(),
            user_id: user.into(),
            token_id: format!("TOKN{user}"),
            kind: Kind::Time,
            secret: Secret::new("GEZDGNBV".into()),
            algorithm: "SHA1".into(),
            digits: 6,
            period: Some(30),
            counter: None,
            pending: false,
        }
    }

    fn sel(c: Option<&str>, u: Option<&str>) -> Select {
        Select {
            contract: c.map(str::to_owned),
            user: u.map(str::to_owned),
        }
    }

    #[test]
    fn one_token_needs_no_selector_and_several_do() {
        let p = Path::new("store");
        let one = vec![t("https://a", "1", "taro")];
        assert_eq!(pick(&one, None, &sel(None, None), p).unwrap(), 0);
        let err = pick(&[], None, &sel(None, None), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("register"), "{err}");

        let many = vec![
            t("https://a", "1", "taro"),
            t("https://a", "1", "hanako"),
            t("https://b", "1", "taro"),
        ];
        let err = pick(&many, None, &sel(None, None), p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--user hanako") && err.contains("--user taro"),
            "{err}"
        );
        assert_eq!(pick(&many, None, &sel(None, Some("hanako")), p).unwrap(), 1);
        let err = pick(&many, None, &sel(Some("1"), Some("taro")), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--server"), "{err}");
        assert_eq!(
            pick(&many, Some("https://b"), &sel(None, Some("taro")), p).unwrap(),
            2
        );
        let err = pick(&many, None, &sel(None, Some("jiro")), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no token for user jiro"), "{err}");
    }
}
