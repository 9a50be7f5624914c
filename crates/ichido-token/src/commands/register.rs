//! `register` (利用開始登録): asks the bank for a token, stores it, activates it with its first code, prints the token ID.

use anyhow::{anyhow, bail, Result};

use super::{now_unix, print_stdout, selectors, Ctx};
use crate::api::{ApiError, Client};
use crate::cli::RegisterArgs;
use crate::explain::{explain, Action};
use crate::prompt;
use crate::store::{Kind, Opened, Token};

pub fn run(ctx: &Ctx, args: &RegisterArgs) -> Result<()> {
    let Some(server) = ctx.server.as_deref() else {
        bail!(
            "register needs your bank's server address.\n  \
             Next step: add --server URL with the https:// address your bank gave you."
        );
    };
    let client = Client::new(server)?;
    let mut opened = Opened::for_update(&ctx.store, &Ctx::store_passphrase)?;
    let owner =
        |t: &Token| t.server == server && t.contract_no == args.contract && t.user_id == args.user;
    if let Some(t) = opened.store.tokens.iter().find(|t| owner(t) && !t.pending) {
        bail!(
            "this PC already has token {} for {}.\n  \
             Next step: show a code with `ichido-token code {}`. To replace it, remove it with \
             `ichido-token remove {}` and ask your bank to deregister the old token (登録解除) first.",
            t.token_id,
            t.describe(),
            selectors(&t.contract_no, &t.user_id),
            selectors(&t.contract_no, &t.user_id)
        );
    }
    let password = prompt::login_password(args.password_stdin)?;
    let reg = client
        .register(&args.contract, &args.user, &password, args.kind.as_str())
        .map_err(|e| explain(&e, Action::Register, server))?;
    drop(password);

    let mut token = Token {
        server: server.to_owned(),
        contract_no: args.contract.clone(),
        user_id: args.user.clone(),
        token_id: reg.token_id,
        kind: match reg.kind.as_str() {
            "event" => Kind::Event,
            "time" => Kind::Time,
            _ => bail!("the server answered with an unknown kind of token; contact your bank."),
        },
        secret: reg.secret,
        algorithm: reg.algorithm,
        digits: reg.digits,
        period: reg.period,
        counter: reg.counter,
        pending: true,
    };
    token
        .check()
        .map_err(|e| anyhow!("the server's new token is unusable ({e}); contact your bank."))?;
    if token.kind.as_str() != args.kind.as_str() {
        bail!(
            "the server made a {} token instead of a {} one; contact your bank.",
            token.kind.as_str(),
            args.kind.as_str()
        );
    }

    // The first code, and the counter moved past it, are on disk before the code is sent.
    let first = match token.kind {
        Kind::Event => {
            let counter = token.counter.unwrap_or(0);
            token.counter = Some(counter.saturating_add(1));
            token.hotp(counter)
        }
        Kind::Time => token.totp(now_unix()),
    }
    .map_err(|e| anyhow!("the new token is unusable ({e})"))?
    .to_string();
    opened.store.tokens.retain(|t| !owner(t));
    opened.store.tokens.push(token);
    opened.save()?;

    let token_id = opened
        .store
        .tokens
        .last()
        .map(|t| t.token_id.clone())
        .unwrap_or_default();
    match client.activate(&token_id, &first) {
        Ok(()) => {
            if let Some(t) = opened.store.tokens.last_mut() {
                t.pending = false;
            }
            opened.save()?;
        }
        Err(ApiError::Unreachable(cause)) => bail!(
            "token {token_id} was stored, but the connection to {server} failed before the bank \
             confirmed it ({cause}).\n  Next step: run the same `ichido-token register` command again."
        ),
        Err(e) => {
            opened.store.tokens.retain(|t| !owner(t));
            opened.save()?;
            return Err(explain(&e, Action::Activate, server));
        }
    }

    print_stdout(&token_id)?;
    if args.kind.as_str() == "time" {
        let period = opened.store.tokens.last().map_or(30, Token::period);
        eprintln!(
            "The current code was used to activate the token; the next one appears in {} seconds.",
            period - now_unix() % period
        );
    }
    eprintln!(
        "Registered and activated {} token {token_id} for contract {}, user {}.\n\
         Show a code with: ichido-token code {}\n\
         Keep a backup with: ichido-token export FILE",
        args.kind.as_str(),
        args.contract,
        args.user,
        selectors(&args.contract, &args.user)
    );
    Ok(())
}
