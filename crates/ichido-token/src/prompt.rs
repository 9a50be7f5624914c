//! Asking for passwords and passphrases: without echo on the terminal, from standard input for scripts, or from ICHIDO_TOKEN_PASSPHRASE.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// The environment variable holding the passphrase (store and backups) for scripts.
pub const PASSPHRASE_ENV: &str = "ICHIDO_TOKEN_PASSPHRASE";
/// Shortest passphrase accepted for a new store seal or backup.
const MIN_PASSPHRASE: usize = 8;

/// One line from standard input, without its line ending.
pub fn stdin_line(what: &str) -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        bail!("no {what} on standard input.");
    }
    Ok(trimmed)
}

/// Asks on the terminal without echo; `flag` names the non-interactive alternative.
pub fn hidden(prompt: &str, what: &str, flag: &str) -> Result<Zeroizing<String>> {
    match rpassword::prompt_password(prompt) {
        Ok(s) => {
            let s = Zeroizing::new(s);
            if s.is_empty() {
                bail!("no {what} given.");
            }
            Ok(s)
        }
        Err(_) => {
            bail!("there is no terminal to ask for the {what}.\n  Next step: give it with {flag}.")
        }
    }
}

/// The login password: from standard input with `--password-stdin`, else asked.
pub fn login_password(from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        return stdin_line("login password");
    }
    hidden(
        "Login password (ログインパスワード): ",
        "login password",
        "--password-stdin",
    )
}

fn from_env() -> Option<Zeroizing<String>> {
    std::env::var(PASSPHRASE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .map(Zeroizing::new)
}

/// The passphrase of an existing sealed file (store or backup).
pub fn existing_passphrase(what: &str, from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        return stdin_line("passphrase");
    }
    if let Some(p) = from_env() {
        return Ok(p);
    }
    hidden(
        &format!("Passphrase of the {what}: "),
        "passphrase",
        &format!("the environment variable {PASSPHRASE_ENV}"),
    )
}

/// A new passphrase: from standard input or the environment, else asked twice.
pub fn new_passphrase(what: &str, from_stdin: bool) -> Result<Zeroizing<String>> {
    let pass = if from_stdin {
        stdin_line("passphrase")?
    } else if let Some(p) = from_env() {
        p
    } else {
        let flag = format!("--passphrase-stdin or the environment variable {PASSPHRASE_ENV}");
        let first = hidden(
            &format!("New passphrase for the {what}: "),
            "passphrase",
            &flag,
        )?;
        let again = hidden("The same passphrase again: ", "passphrase", &flag)?;
        if *first != *again {
            bail!("the two passphrases differ. Nothing was changed.\n  Next step: try again.");
        }
        first
    };
    if pass.chars().count() < MIN_PASSPHRASE {
        bail!(
            "the passphrase is too short (at least {MIN_PASSPHRASE} characters). Nothing was changed.\n  \
             Next step: choose a longer one; a few unrelated words are easy to remember."
        );
    }
    Ok(pass)
}

/// Asks a yes/no question on the terminal; no terminal means no.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
