//! `resync` (同期ズレ補正): computes two consecutive codes itself and asks the bank to re-align the token.
//!
//! Event token: the codes of the next two counters; the stored counter moves
//! past both (and is saved) before they are sent, like two presses. Time token:
//! the codes of the previous and the current time step by this PC's clock. The
//! server looks for such a pair within ±10 minutes, and the newer code must be
//! newer than the last one it accepted; the current step is the newest code
//! this PC can show, and using the step before it (rather than the next one)
//! lets the server learn the PC's real clock offset instead of one step too far.

use anyhow::{anyhow, Result};

use super::{now_unix, selectors, Ctx};
use crate::api::Client;
use crate::cli::ResyncArgs;
use crate::explain::{explain, Action};
use crate::prompt;
use crate::select::pick;
use crate::store::{Kind, Opened};

pub fn run(ctx: &Ctx, args: &ResyncArgs) -> Result<()> {
    let mut opened = Opened::for_reading(&ctx.store, &Ctx::store_passphrase)?;
    let index = pick(
        &opened.store.tokens,
        ctx.server.as_deref(),
        &args.select,
        opened.path(),
    )?;
    let token = opened
        .store
        .tokens
        .get(index)
        .cloned()
        .ok_or_else(|| anyhow!("token vanished"))?;
    if token.pending {
        return Err(anyhow!(
            "the registration of token {} was not finished.\n  Next step: run `ichido-token register` again.",
            token.token_id
        ));
    }
    let password = prompt::login_password(args.password_stdin)?;
    let damaged = |e: String| anyhow!("the stored token is damaged ({e})");
    let (otp1, otp2) = match token.kind {
        Kind::Event => {
            let counter = token.counter.unwrap_or(0);
            let pair = (
                token.hotp(counter).map_err(damaged)?,
                token.hotp(counter.saturating_add(1)).map_err(damaged)?,
            );
            if let Some(t) = opened.store.tokens.get_mut(index) {
                t.counter = Some(counter.saturating_add(2));
            }
            opened.save()?;
            pair
        }
        Kind::Time => {
            let now = now_unix();
            (
                token
                    .totp(now.saturating_sub(token.period()))
                    .map_err(damaged)?,
                token.totp(now).map_err(damaged)?,
            )
        }
    };
    drop(opened); // release the store while the bank answers
    let client = Client::new(&token.server)?;
    client
        .resync(
            &token.contract_no,
            &token.user_id,
            &password,
            &otp1.to_string(),
            &otp2.to_string(),
        )
        .map_err(|e| explain(&e, Action::Resync, &token.server))?;
    eprintln!(
        "Token {} is in sync with your bank again (同期ズレ補正).",
        token.token_id
    );
    match token.kind {
        Kind::Event => eprintln!(
            "Show the next code with: ichido-token code {}",
            selectors(&token.contract_no, &token.user_id)
        ),
        Kind::Time => {
            let period = token.period();
            eprintln!(
                "The current code was used for the resync; the next one appears in {} seconds.",
                period - now_unix() % period
            );
        }
    }
    Ok(())
}
