//! ichido's storage. SQLite is the embedded default, PostgreSQL serves several
//! instances; the backend is chosen at run time from the database URL.
//! Migrations are embedded, one folder per backend.

mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use ichido_domain::ids::TokenId;
use ichido_domain::model::Token;
use ichido_domain::store::{
    AuditStore, RowDecide, RowWrite, RowWritten, Store, StoreResult, TokenStore,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL (use sqlite://FILE or postgres://...): {0}")]
    UnsupportedUrl(String),
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
}

/// Connection settings shared by the backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// SQLite: how long a writer waits for another process's lock.
    pub busy_timeout: Duration,
    /// PostgreSQL: the `statement_timeout` of every connection.
    pub statement_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens (creating and migrating as needed) the store named by `url`:
/// `sqlite://FILE`, `sqlite::memory:`, or `postgres://…` / `postgresql://…`
/// (a schema other than `public` via `?options=-csearch_path%3D<schema>`).
pub async fn open(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, opts).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url, opts).await?))
    } else {
        Err(OpenError::UnsupportedUrl(redact_url(url)))
    }
}

/// [`TokenStore::decide_on_row`] as a read, then the decision's own
/// conditional write (which alone decides: a write that lost to another
/// request answers so, and the caller decides again).
pub(crate) async fn read_then_write<S: TokenStore + AuditStore>(
    store: &S,
    token_id: &TokenId,
    decide: RowDecide,
) -> StoreResult<(Option<Token>, RowWritten)> {
    let token = store.token(token_id).await?;
    let written = match decide(token.as_ref()) {
        RowWrite::Accept { accept, audit } => {
            RowWritten::Accept(store.accept(token_id, accept, audit).await?)
        }
        RowWrite::Failure {
            state,
            threshold,
            now,
            audit,
        } => RowWritten::Failure(
            store
                .record_failure(token_id, state, None, threshold, now, audit)
                .await?,
        ),
        RowWrite::Audit(audit) => {
            store.append_audit(audit).await?;
            RowWritten::Audit
        }
        RowWrite::Nothing => RowWritten::Nothing,
    };
    Ok((token, written))
}

/// A database URL with any password replaced, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://ichido.db"), "sqlite://ichido.db");
    }
}
