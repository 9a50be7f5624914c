//! The token store: one JSON file, optionally sealed under a passphrase, several users' tokens, refused (never overwritten) when damaged or foreign.

mod file;
mod token;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, SealError, SealKey, Sealed};
pub use file::write_new;
pub use token::{Kind, Secret, Token};

/// The `format` of a store file.
pub const STORE_FORMAT: &str = "ichido-token-store";
/// The `format` of a backup file (see `commands::backup`).
pub const BACKUP_FORMAT: &str = "ichido-token-backup";
const VERSION: u32 = 1;
/// Associated data of a sealed store: a sealed backup does not open as a store.
const STORE_AAD: &[u8] = b"ichido-token-store/1";

/// Where a passphrase comes from when a sealed file must be opened.
pub type PassphraseSource<'a> = &'a dyn Fn() -> Result<Zeroizing<String>>;

/// The decrypted content of a store.
pub struct Store {
    pub tokens: Vec<Token>,
    protection: Option<SealKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    version: u32,
    encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<Vec<Token>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<Sealed>,
}

/// What a sealed store or backup holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub tokens: Vec<Token>,
}

/// Just enough to tell what kind of file this is.
#[derive(Deserialize)]
pub struct Header {
    pub format: Option<String>,
    pub version: Option<u64>,
}

impl Store {
    pub fn empty() -> Store {
        Store {
            tokens: Vec::new(),
            protection: None,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.protection.is_some()
    }

    /// Seals the store under `passphrase` from the next save on; `None` removes the seal.
    pub fn set_passphrase(&mut self, passphrase: Option<&str>) -> Result<()> {
        self.protection = match passphrase {
            Some(p) => Some(SealKey::derive_new(p).map_err(|e| anyhow!("{e:?}"))?),
            None => None,
        };
        Ok(())
    }

    /// Parses a store file's bytes; `path` is only for messages.
    pub fn decode(bytes: &[u8], path: &Path, passphrase: PassphraseSource<'_>) -> Result<Store> {
        let shown = path.display();
        check_header(bytes, path, STORE_FORMAT)?;
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| damaged(path, &e))?;
        let (tokens, protection) = match (env.encrypted, env.tokens, env.sealed) {
            (false, Some(tokens), None) => (tokens, None),
            (true, None, Some(sealed)) => {
                let pass = passphrase()?;
                let (key, plain) = crypto::open_with(&pass, &sealed, STORE_AAD)
                    .map_err(|e| seal_error(e, path, "store"))?;
                let payload: Payload =
                    serde_json::from_slice(&plain).map_err(|e| damaged(path, &e))?;
                (payload.tokens, Some(key))
            }
            _ => bail!(
                "{shown} is damaged (its \"encrypted\" flag does not match its content) and was left unchanged.\n  {RESTORE}"
            ),
        };
        check_tokens(&tokens).map_err(|e| {
            anyhow!("{shown} is damaged ({e}) and was left unchanged.\n  {RESTORE}")
        })?;
        Ok(Store { tokens, protection })
    }

    /// The file's bytes: plain JSON, or the tokens sealed under the passphrase.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let env = match &self.protection {
            None => Envelope {
                format: STORE_FORMAT.to_owned(),
                version: VERSION,
                encrypted: false,
                tokens: Some(self.tokens.clone()),
                sealed: None,
            },
            Some(key) => {
                let plain = Zeroizing::new(serde_json::to_vec(&Payload {
                    tokens: self.tokens.clone(),
                })?);
                Envelope {
                    format: STORE_FORMAT.to_owned(),
                    version: VERSION,
                    encrypted: true,
                    tokens: None,
                    sealed: Some(key.seal(&plain, STORE_AAD).map_err(|e| anyhow!("{e:?}"))?),
                }
            }
        };
        let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(&env)?);
        bytes.push(b'\n');
        Ok(bytes)
    }
}

const RESTORE: &str = "Next step: move the file away (or choose another file with --store), \
then restore your tokens from a backup with `ichido-token import FILE`.";

/// Refuses files that are not of `format` (or of a later version), with a message for each case.
pub fn check_header(bytes: &[u8], path: &Path, format: &str) -> Result<()> {
    let shown = path.display();
    let header: Option<Header> = serde_json::from_slice(bytes).ok();
    let Some(Header {
        format: Some(found),
        version,
    }) = header
    else {
        bail!(
            "{shown} is not an ichido-token file (it may be damaged, or belong to another program). \
             It was left unchanged.\n  {RESTORE}"
        );
    };
    if found != format {
        if found == BACKUP_FORMAT {
            bail!(
                "{shown} is an ichido-token backup, not a token store.\n  \
                 Next step: restore it with `ichido-token import {shown}`."
            );
        }
        if found == STORE_FORMAT {
            bail!(
                "{shown} is an ichido-token store, not a backup.\n  \
                 Next step: use it with `--store {shown}`, or make a backup with `ichido-token export FILE`."
            );
        }
        bail!("{shown} is not an ichido-token file (format {found:?}). It was left unchanged.");
    }
    if version != Some(u64::from(VERSION)) {
        bail!(
            "{shown} was written by another version of ichido-token (file version {}). It was left unchanged.\n  \
             Next step: install the latest ichido-token.",
            version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        );
    }
    Ok(())
}

/// A parse error, reported by position only: a serde message could quote a secret.
pub fn damaged(path: &Path, e: &serde_json::Error) -> anyhow::Error {
    anyhow!(
        "{} is damaged (unexpected content at line {}, column {}) and was left unchanged.\n  {RESTORE}",
        path.display(),
        e.line(),
        e.column()
    )
}

/// Explains why a sealed file did not open.
pub fn seal_error(e: SealError, path: &Path, what: &str) -> anyhow::Error {
    let shown = path.display();
    match e {
        SealError::WrongPassphrase => anyhow!(
            "The passphrase for the {what} {shown} is wrong (or the file was altered). Nothing was changed.\n  \
             Next step: try again with the right passphrase; if ICHIDO_TOKEN_PASSPHRASE is set, check its value."
        ),
        SealError::Unsupported(what_part) => anyhow!(
            "{shown} uses a {what_part} this version of ichido-token does not know. It was left unchanged.\n  \
             Next step: install the latest ichido-token."
        ),
        SealError::Malformed(part) => {
            anyhow!("{shown} is damaged (its {part}) and was left unchanged.\n  {RESTORE}")
        }
    }
}

/// Every token usable, and one per (server, contract, user).
pub fn check_tokens(tokens: &[Token]) -> Result<(), String> {
    for (i, t) in tokens.iter().enumerate() {
        t.check()
            .map_err(|e| format!("token {} has {e}", t.token_id))?;
        if tokens.iter().skip(i + 1).any(|o| o.same_owner(t)) {
            return Err(format!("two tokens for {}", t.describe()));
        }
    }
    Ok(())
}

/// A store read from disk, locked against other ichido-token programs until dropped.
pub struct Opened {
    pub store: Store,
    path: PathBuf,
    _lock: Option<file::Lock>,
}

impl Opened {
    /// Locks and reads the store at `path` for a change; a missing file is an empty store.
    pub fn for_update(path: &Path, passphrase: PassphraseSource<'_>) -> Result<Opened> {
        let lock = file::Lock::acquire(path)?;
        Self::read(path, Some(lock), passphrase)
    }

    /// Reads the store at `path` to look at it; a missing file is an empty store
    /// (and nothing is created).
    pub fn for_reading(path: &Path, passphrase: PassphraseSource<'_>) -> Result<Opened> {
        if !path.exists() {
            return Ok(Opened {
                store: Store::empty(),
                path: path.to_path_buf(),
                _lock: None,
            });
        }
        let lock = file::Lock::acquire(path)?;
        Self::read(path, Some(lock), passphrase)
    }

    fn read(
        path: &Path,
        lock: Option<file::Lock>,
        passphrase: PassphraseSource<'_>,
    ) -> Result<Opened> {
        let store = match file::read_private(path)? {
            None => Store::empty(),
            Some(bytes) => Store::decode(&bytes, path, passphrase)?,
        };
        Ok(Opened {
            store,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the store atomically (mode 0600).
    pub fn save(&self) -> Result<()> {
        check_tokens(&self.store.tokens).map_err(|e| anyhow!("refusing to save: {e}"))?;
        file::write_atomic(&self.path, &self.store.encode()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ichido_otp::base32;

    fn token(user: &str) -> Token {
        Token {
            server: "https://bank.example".into(),
            contract_no: "1234567890".into(),
            user_id: user.into(),
            token_id: "ABCD12345678".into(),
            kind: Kind::Event,
            secret: Secret::new(base32::encode(b"12345678901234567890")),
            algorithm: "SHA1".into(),
            digits: 6,
            period: None,
            counter: Some(3),
            pending: false,
        }
    }

    fn no_pass() -> Result<Zeroizing<String>> {
        bail!("no passphrase")
    }

    #[test]
    fn plain_round_trip() {
        let mut store = Store::empty();
        store.tokens.push(token("taro"));
        let bytes = store.encode().unwrap();
        let back = Store::decode(&bytes, Path::new("s"), &no_pass).unwrap();
        assert_eq!(back.tokens.len(), 1);
        assert_eq!(back.tokens[0].counter, Some(3));
        assert!(!back.is_encrypted());
    }

    #[test]
    fn sealed_round_trip_hides_the_secret() {
        let mut store = Store::empty();
        store.tokens.push(token("taro"));
        store.set_passphrase(Some("a good passphrase")).unwrap();
        let bytes = store.encode().unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains(store.tokens[0].secret.expose()));
        assert!(!text.contains("taro"));
        let pass = || Ok(Zeroizing::new("a good passphrase".to_owned()));
        let back = Store::decode(&bytes, Path::new("s"), &pass).unwrap();
        assert!(back.is_encrypted());
        assert_eq!(back.tokens[0].user_id, "taro");
        let wrong = || Ok(Zeroizing::new("another passphrase".to_owned()));
        let err = Store::decode(&bytes, Path::new("s"), &wrong)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("wrong"), "{err}");
    }

    #[test]
    fn foreign_damaged_and_duplicate_files_are_refused() {
        let p = Path::new("s");
        for (bytes, needle) in [
            (&b"\x00\x01garbage"[..], "not an ichido-token file"),
            (b"{\"format\":\"other\",\"version\":1}", "not an ichido-token file"),
            (b"{\"format\":\"ichido-token-backup\",\"version\":1}", "backup"),
            (b"{\"format\":\"ichido-token-store\",\"version\":2}", "another version"),
            (b"{\"format\":\"ichido-token-store\",\"version\":1,\"encrypted\":false}", "damaged"),
            (b"{\"format\":\"ichido-token-store\",\"version\":1,\"encrypted\":false,\"tokens\":[{\"secret\":\"SECRETVALUE\"}]}", "damaged"),
        ] {
            let err = Store::decode(bytes, p, &no_pass).err().unwrap().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(!err.contains("SECRETVALUE"), "{err}");
        }
        let mut store = Store::empty();
        store.tokens.push(token("taro"));
        store.tokens.push(token("taro"));
        let bytes = store.encode().unwrap();
        let err = Store::decode(&bytes, p, &no_pass)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("two tokens"), "{err}");
    }
}
