//! `code`: prints one code (event tokens persist the advanced counter first); `--watch` shows a live time code with a countdown bar.

use std::io::{ErrorKind, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use super::{now_unix, print_stdout, selectors, Ctx};
use crate::cli::CodeArgs;
use crate::select::pick;
use crate::store::{Kind, Opened, Token};

/// Width of the countdown bar in characters.
const BAR: u64 = 30;

pub fn run(ctx: &Ctx, args: &CodeArgs) -> Result<()> {
    if args.watch {
        return watch(ctx, args);
    }
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
        .get_mut(index)
        .ok_or_else(|| anyhow!("token vanished"))?;
    usable(token)?;
    match token.kind {
        Kind::Event => {
            let counter = token.counter.unwrap_or(0);
            let code = token.hotp(counter).map_err(|e| damaged(&e))?;
            token.counter = Some(
                counter
                    .checked_add(1)
                    .ok_or_else(|| anyhow!("this token has no codes left"))?,
            );
            // Persisted (fsync + rename) before the code is shown: a crash can
            // never show the same counter twice.
            opened.save()?;
            print_stdout(&code.to_string())
        }
        Kind::Time => {
            let now = now_unix();
            let code = token.totp(now).map_err(|e| damaged(&e))?;
            let period = token.period();
            print_stdout(&code.to_string())?;
            eprintln!("(valid for {} more seconds)", period - now % period);
            Ok(())
        }
    }
}

/// Refuses a token whose registration was not finished.
fn usable(token: &Token) -> Result<()> {
    if token.pending {
        bail!(
            "the registration of token {} was not finished.\n  \
             Next step: run `ichido-token register --server {} {}` again.",
            token.token_id,
            token.server,
            selectors(&token.contract_no, &token.user_id)
        );
    }
    Ok(())
}

fn damaged(e: &str) -> anyhow::Error {
    anyhow!("the stored token is damaged ({e}).\n  Next step: restore it from a backup with `ichido-token import FILE`.")
}

/// Shows the current code of a time token until interrupted: on a terminal one
/// live line with a countdown bar, otherwise each new code on its own line.
fn watch(ctx: &Ctx, args: &CodeArgs) -> Result<()> {
    let token = {
        let opened = Opened::for_reading(&ctx.store, &Ctx::store_passphrase)?;
        let index = pick(
            &opened.store.tokens,
            ctx.server.as_deref(),
            &args.select,
            opened.path(),
        )?;
        opened
            .store
            .tokens
            .get(index)
            .cloned()
            .ok_or_else(|| anyhow!("token vanished"))?
    }; // the store is unlocked while watching
    usable(&token)?;
    if token.kind == Kind::Event {
        bail!(
            "--watch is for time tokens; an event token makes a new code only when you ask for one.\n  \
             Next step: run `ichido-token code` each time you need a code."
        );
    }
    let period = token.period();
    let live = std::io::stdout().is_terminal();
    if live {
        eprintln!(
            "Token {} (contract {}, user {}). Press Ctrl+C to stop.",
            token.token_id, token.contract_no, token.user_id
        );
    }
    let mut last_step = None;
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let step = secs / period;
        let code = token.totp(secs).map_err(|e| damaged(&e))?;
        let left = period - secs % period;
        let line = if live {
            let filled = usize::try_from(left * BAR / period).unwrap_or(0);
            let empty = usize::try_from(BAR).unwrap_or(0).saturating_sub(filled);
            Some(format!(
                "\r  {code}  {}{} {left:>3} s ",
                "█".repeat(filled),
                "░".repeat(empty)
            ))
        } else if last_step != Some(step) {
            Some(format!("{code}\n"))
        } else {
            None
        };
        last_step = Some(step);
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let to_next_second = 1_000 - u64::from(now.subsec_millis()).min(999);
        std::thread::sleep(Duration::from_millis(to_next_second));
    }
}
