//! Runs one subcommand: finds the store, then hands over to the command's module.

mod backup;
mod code;
mod manage;
mod register;
mod resync;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use zeroize::Zeroizing;

use crate::api::normalize_server;
use crate::cli::{Cli, Command};
use crate::prompt;

/// What every command needs: where the store is and which server was named.
pub struct Ctx {
    pub store: PathBuf,
    /// `--server`, normalised.
    pub server: Option<String>,
}

impl Ctx {
    /// Asks for (or reads from the environment) the passphrase of a sealed store.
    pub fn store_passphrase() -> Result<Zeroizing<String>> {
        prompt::existing_passphrase("token file", false)
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let store = match cli.store {
        Some(path) => path,
        None => default_store()?,
    };
    let server = cli.server.as_deref().map(normalize_server).transpose()?;
    let ctx = Ctx { store, server };
    match cli.command {
        Command::Register(args) => register::run(&ctx, &args),
        Command::Code(args) => code::run(&ctx, &args),
        Command::List => manage::list(&ctx),
        Command::Resync(args) => resync::run(&ctx, &args),
        Command::Export(args) => backup::export(&ctx, &args),
        Command::Import(args) => backup::import(&ctx, &args),
        Command::Remove(args) => manage::remove(&ctx, &args),
        Command::Passphrase(args) => manage::passphrase(&ctx, &args),
    }
}

/// The platform's per-user, per-machine configuration folder + `ichido/tokens.json`:
/// `$XDG_CONFIG_HOME` or `~/.config` on Linux, `~/Library/Application Support`
/// on macOS, `%LOCALAPPDATA%` on Windows (local, not roaming: a token stays on
/// the PC that registered it).
pub fn default_store() -> Result<PathBuf> {
    dirs::config_local_dir()
        .map(|d| d.join("ichido").join("tokens.json"))
        .ok_or_else(|| {
            anyhow!("cannot find your configuration folder.\n  Next step: give the token file with --store FILE.")
        })
}

/// The part of `--help` that says where the store is.
pub fn store_help() -> String {
    let here = default_store().map_or_else(
        |_| "(no configuration folder found: use --store)".to_owned(),
        |p| p.display().to_string(),
    );
    format!(
        "Token file: {here}\n\
         (Linux: ~/.config/ichido/tokens.json, macOS: ~/Library/Application Support/ichido/tokens.json,\n\
         Windows: %LOCALAPPDATA%\\ichido\\tokens.json; override with --store or ICHIDO_TOKEN_STORE.)\n\
         Scripts may give passphrases in ICHIDO_TOKEN_PASSPHRASE.\n\
         Codes, passwords and secrets are never shown except the code you ask for."
    )
}

/// Seconds since the Unix epoch, from this PC's clock.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prints `line` on standard output (the only thing scripts read).
pub fn print_stdout(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// `--contract C --user U`, to show the user how to name this token again.
pub fn selectors(contract: &str, user: &str) -> String {
    format!("--contract {contract} --user {user}")
}

/// The store path as shown in messages.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
