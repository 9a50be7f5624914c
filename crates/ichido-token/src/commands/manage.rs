//! `list`, `remove` and `passphrase`: looking after the tokens on this PC.

use anyhow::{anyhow, bail, Result};

use super::{print_stdout, shown, Ctx};
use crate::cli::{PassphraseArgs, RemoveArgs};
use crate::prompt;
use crate::select::pick;
use crate::store::Opened;

/// Prints token ID, kind, server, contract and user of every token — never a secret.
pub fn list(ctx: &Ctx) -> Result<()> {
    let opened = Opened::for_reading(&ctx.store, &Ctx::store_passphrase)?;
    let tokens = &opened.store.tokens;
    if tokens.is_empty() {
        eprintln!(
            "No tokens in {} yet. Register one with: ichido-token register --server URL --contract C --user U",
            shown(opened.path())
        );
        return Ok(());
    }
    let header = ["TOKEN ID", "KIND", "SERVER", "CONTRACT", "USER"];
    let rows: Vec<[String; 5]> = tokens
        .iter()
        .map(|t| {
            [
                t.token_id.clone(),
                t.kind.as_str().to_owned(),
                t.server.clone(),
                t.contract_no.clone(),
                if t.pending {
                    format!("{} (registration not finished)", t.user_id)
                } else {
                    t.user_id.clone()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    print_stdout(&line(header))?;
    for row in &rows {
        print_stdout(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]))?;
    }
    Ok(())
}

/// Removes one token from the store (not from the bank).
pub fn remove(ctx: &Ctx, args: &RemoveArgs) -> Result<()> {
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
    if !args.yes {
        let question = format!(
            "Remove token {} ({}) for {} from this PC? Its codes can no longer be made here.",
            token.token_id,
            token.kind.as_str(),
            token.describe()
        );
        if !prompt::confirm(&question)? {
            bail!("nothing was removed.\n  Next step: to remove it without being asked (scripts), add --yes.");
        }
    }
    opened.store.tokens.remove(index);
    opened.save()?;
    eprintln!(
        "Removed token {} from this PC. It is still registered at your bank: if you no longer use it, \
         ask your bank to deregister it (登録解除).",
        token.token_id
    );
    Ok(())
}

/// Sets, changes or removes the passphrase that encrypts the store.
pub fn passphrase(ctx: &Ctx, args: &PassphraseArgs) -> Result<()> {
    let mut opened = Opened::for_update(&ctx.store, &Ctx::store_passphrase)?;
    if args.remove {
        if !opened.store.is_encrypted() {
            eprintln!("{} has no passphrase; nothing to do.", shown(opened.path()));
            return Ok(());
        }
        opened.store.set_passphrase(None)?;
        opened.save()?;
        eprintln!(
            "The passphrase was removed: {} is stored unencrypted (readable only by you).",
            shown(opened.path())
        );
        return Ok(());
    }
    let pass = prompt::new_passphrase("token file", args.passphrase_stdin)?;
    opened.store.set_passphrase(Some(&pass))?;
    opened.save()?;
    eprintln!(
        "{} is now encrypted with your passphrase. ichido-token will ask for it each time \
         (scripts: ICHIDO_TOKEN_PASSPHRASE).",
        shown(opened.path())
    );
    Ok(())
}
