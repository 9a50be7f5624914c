//! `export` / `import` (R13): tokens in a backup file sealed under a passphrase (argon2id + AES-256-GCM), so a reinstall keeps them.

use std::fs;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{selectors, shown, Ctx};
use crate::cli::{ExportArgs, ImportArgs};
use crate::crypto::{self, SealKey, Sealed};
use crate::prompt;
use crate::select::matching;
use crate::store::{
    check_header, check_tokens, damaged, seal_error, write_new, Kind, Opened, Payload,
    BACKUP_FORMAT,
};

const VERSION: u32 = 1;
/// Associated data of a backup: a sealed store does not open as a backup.
const BACKUP_AAD: &[u8] = b"ichido-token-backup/1";
/// Largest backup read (a backup of many tokens is a few KiB).
const MAX_BACKUP: u64 = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupFile {
    format: String,
    version: u32,
    sealed: Sealed,
}

pub fn export(ctx: &Ctx, args: &ExportArgs) -> Result<()> {
    let opened = Opened::for_reading(&ctx.store, &Ctx::store_passphrase)?;
    let chosen: Vec<_> = matching(&opened.store.tokens, ctx.server.as_deref(), &args.select)
        .into_iter()
        .map(|(_, t)| t.clone())
        .filter(|t| !t.pending)
        .collect();
    if chosen.is_empty() {
        bail!(
            "there is no token to back up in {}.\n  Next step: check `ichido-token list`.",
            shown(opened.path())
        );
    }
    drop(opened);
    let pass = prompt::new_passphrase("backup", args.passphrase_stdin)?;
    let key = SealKey::derive_new(&pass).map_err(|e| anyhow!("{e:?}"))?;
    let plain = Zeroizing::new(serde_json::to_vec(&Payload {
        tokens: chosen.clone(),
    })?);
    let file = BackupFile {
        format: BACKUP_FORMAT.to_owned(),
        version: VERSION,
        sealed: key.seal(&plain, BACKUP_AAD).map_err(|e| anyhow!("{e:?}"))?,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    write_new(&args.file, &bytes)?;
    eprintln!(
        "Saved {} token(s) to {}, encrypted with your passphrase:",
        chosen.len(),
        args.file.display()
    );
    for t in &chosen {
        eprintln!(
            "    {} ({}) for {}",
            t.token_id,
            t.kind.as_str(),
            t.describe()
        );
    }
    eprintln!("Keep the file and the passphrase apart. Restore with: ichido-token import FILE");
    Ok(())
}

pub fn import(ctx: &Ctx, args: &ImportArgs) -> Result<()> {
    let path = &args.file;
    let size = fs::metadata(path)
        .with_context(|| format!("cannot read the backup {}", path.display()))?
        .len();
    if size > MAX_BACKUP {
        bail!(
            "{} is too large to be an ichido-token backup.",
            path.display()
        );
    }
    let bytes = Zeroizing::new(
        fs::read(path).with_context(|| format!("cannot read the backup {}", path.display()))?,
    );
    check_header(&bytes, path, BACKUP_FORMAT)?;
    let backup: BackupFile = serde_json::from_slice(&bytes).map_err(|e| damaged(path, &e))?;
    let pass = prompt::existing_passphrase("backup", args.passphrase_stdin)?;
    let (_, plain) = crypto::open_with(&pass, &backup.sealed, BACKUP_AAD)
        .map_err(|e| seal_error(e, path, "backup"))?;
    drop(pass);
    let payload: Payload = serde_json::from_slice(&plain).map_err(|e| damaged(path, &e))?;
    check_tokens(&payload.tokens)
        .map_err(|e| anyhow!("the backup {} is damaged ({e}).", path.display()))?;

    let mut opened = Opened::for_update(&ctx.store, &Ctx::store_passphrase)?;
    let present: Vec<String> = payload
        .tokens
        .iter()
        .filter_map(|new| {
            opened
                .store
                .tokens
                .iter()
                .find(|old| old.same_owner(new))
                .map(|old| {
                    format!(
                        "    {} already has token {} here",
                        new.describe(),
                        old.token_id
                    )
                })
        })
        .collect();
    if !present.is_empty() {
        bail!(
            "nothing was imported: this PC already has a token for the same user:\n{}\n  \
             Next step: if the backup's token is the one your bank knows, remove the one here first \
             (`ichido-token remove --contract C --user U`), then import again.",
            present.join("\n")
        );
    }
    let count = payload.tokens.len();
    let has_event = payload.tokens.iter().any(|t| t.kind == Kind::Event);
    for t in &payload.tokens {
        eprintln!(
            "Restored {} ({}) for {}: ichido-token code {}",
            t.token_id,
            t.kind.as_str(),
            t.describe(),
            selectors(&t.contract_no, &t.user_id)
        );
    }
    opened.store.tokens.extend(payload.tokens);
    opened.save()?;
    eprintln!("Imported {count} token(s) into {}.", shown(opened.path()));
    if has_event {
        eprintln!(
            "If your bank refuses the codes of an event token (the backup is older than its last use), \
             run `ichido-token resync`."
        );
    }
    Ok(())
}
