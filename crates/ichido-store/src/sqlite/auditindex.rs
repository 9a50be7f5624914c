//! The audit log's look-ups by user and by token: reference tables in a
//! database file of their own beside the store's (`FILE-audit-index`),
//! filled in the background from the log, which stays the record.
//!
//! Each event belongs at its user's and its token's place in these tables:
//! with many users, a different B-tree leaf for nearly every event. Kept in
//! the store's own file, those leaves were most of what the writer wrote and
//! synced per acceptance (and, filed once a second, a stall of one batch).
//! Kept here, they are written by a task of their own, on a connection of
//! their own, in WAL mode with `synchronous=NORMAL` (no `fsync` per commit):
//! the writer of acceptances never waits for them.
//!
//! Nothing is lost if the index is: it is rebuilt from the log. Its state
//! row holds how far it has filed (`upto`) and the chain hash of that event;
//! a reader trusts the index only up to an event whose hash the log still
//! shows there (a restored backup, an index of another database, a lost
//! commit all fall back to scanning the log), and the filer starts again
//! from the beginning when the hash does not match. Events after `upto` are
//! found by a scan of the log's tail (a range of its primary key).
//!
//! A reader's query sees the index and the log each in a snapshot of its
//! own; both only grow, references point at events of the log, and the tail
//! is read from `upto` on, so no event is answered twice, and none the log's
//! snapshot holds is missed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use ichido_domain::store::StoreResult;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection, SqlitePool};
use tokio::sync::mpsc;

use crate::rows::db_err;

/// How often the filer looks for new events.
const EVERY: Duration = Duration::from_secs(1);
/// Events filed per transaction (a large log is caught up in steps).
const CHUNK: i64 = 50_000;
/// The filer's page cache for the index, in KiB (see [`attacher`]). With many users a second's
/// events land on as many leaves of each table; in SQLite's default cache
/// (2 MiB) the transaction spilled dirty leaves to the WAL before its
/// commit and read them back for the next event: a fifth of the filer's
/// CPU time with a million tokens. The cache grows only as far as used.
pub(super) const FILER_CACHE_KIB: i64 = 64 * 1024;

/// The index file of the database file `db` (`ichido.db` → `ichido.db-audit-index`).
pub(super) fn path_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-audit-index");
    PathBuf::from(name)
}

/// Attaches the index file as `idx` to a connection of the store and makes
/// sure its tables exist.
pub(super) async fn attach(conn: &mut SqliteConnection, file: &Path) -> sqlx::Result<()> {
    sqlx::query("ATTACH DATABASE ? AS idx")
        .bind(file.to_string_lossy().into_owned())
        .execute(&mut *conn)
        .await?;
    // The page size first: a new (empty) file takes it when WAL mode writes
    // its header; an existing one keeps its own (see [`super::PAGE_SIZE`]).
    conn.execute(
        format!(
            "PRAGMA idx.page_size = {}; PRAGMA idx.journal_mode = WAL; PRAGMA idx.synchronous = NORMAL",
            super::PAGE_SIZE
        )
        .as_str(),
    )
    .await?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS idx.audit_user_refs (
             contract_no TEXT NOT NULL,
             user_id     TEXT NOT NULL, -- '' for an event of the contract alone
             seq         INTEGER NOT NULL,
             PRIMARY KEY (contract_no, user_id, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS idx.audit_token_refs (
             token_id TEXT NOT NULL,
             seq      INTEGER NOT NULL,
             PRIMARY KEY (token_id, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS idx.audit_index_state (
             id        INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
             upto      INTEGER NOT NULL,
             upto_hash TEXT NOT NULL
         );",
    )
    .await?;
    Ok(())
}

/// A future of [`attach`] on a connection of a pool.
type Attaching<'c> = Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send + 'c>>;

/// The `after_connect` hook that attaches the index at `file` to each new
/// connection of a pool; with `filer`, the connection files the index and
/// gets a page cache of [`FILER_CACHE_KIB`] for it.
pub(super) fn attacher(
    file: PathBuf,
    filer: bool,
) -> impl for<'c> Fn(&'c mut SqliteConnection, PoolConnectionMetadata) -> Attaching<'c>
       + Send
       + Sync
       + 'static {
    move |conn, _| {
        let file = file.clone();
        Box::pin(async move {
            attach(conn, &file).await?;
            if filer {
                sqlx::query(&format!("PRAGMA idx.cache_size = -{FILER_CACHE_KIB}"))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }
}

/// How far the index can be trusted on this connection: the `upto` of its
/// state if the log still holds that event with that hash, else 0 (nothing
/// filed; the whole log is the tail).
pub(super) async fn trusted_upto(conn: &mut SqliteConnection) -> StoreResult<i64> {
    let upto: Option<i64> = sqlx::query_scalar(
        "SELECT s.upto FROM idx.audit_index_state AS s
         JOIN audit_events AS e ON e.seq = s.upto AND e.hash = s.upto_hash
         WHERE s.id = 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(upto.unwrap_or(0))
}

/// Files the events after the index's `upto`, at most [`CHUNK`] of them, in
/// one transaction of the index (the log is only read). Starts over when
/// the index does not match the log. Returns whether events remain.
pub(super) async fn file_some(conn: &mut SqliteConnection) -> StoreResult<bool> {
    // A deferred transaction: the write lock is taken on the index alone,
    // never on the store's file.
    let mut tx = conn.begin().await.map_err(db_err)?;
    let state: Option<(i64, String)> =
        sqlx::query_as("SELECT upto, upto_hash FROM idx.audit_index_state WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
    let mut upto = 0;
    if let Some((at, hash)) = state {
        let holds: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM audit_events WHERE seq = ? AND hash = ?")
                .bind(at)
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if holds.is_some() {
            upto = at;
        } else {
            tracing::warn!(
                upto = at,
                "the audit index does not match the audit log; rebuilding it"
            );
            tx.execute("DELETE FROM idx.audit_user_refs; DELETE FROM idx.audit_token_refs; DELETE FROM idx.audit_index_state")
                .await
                .map_err(db_err)?;
        }
    }
    let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    if newest <= upto {
        tx.commit().await.map_err(db_err)?;
        return Ok(false);
    }
    let last = newest.min(upto.saturating_add(CHUNK));
    for refs in [
        "INSERT OR IGNORE INTO idx.audit_user_refs (contract_no, user_id, seq)
         SELECT contract_no, COALESCE(user_id, ''), seq FROM audit_events
         WHERE seq > ?1 AND seq <= ?2 AND contract_no IS NOT NULL",
        "INSERT OR IGNORE INTO idx.audit_token_refs (token_id, seq)
         SELECT token_id, seq FROM audit_events
         WHERE seq > ?1 AND seq <= ?2 AND token_id IS NOT NULL",
    ] {
        sqlx::query(refs)
            .bind(upto)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    // `last` is at most the newest event, so the log holds events up to it;
    // the one at `last` gives the hash (the log's sequence has no gaps, but
    // take the nearest event at or below it to be sure).
    let (at, hash): (i64, String) = sqlx::query_as(
        "SELECT seq, hash FROM audit_events WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
    )
    .bind(last)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT OR REPLACE INTO idx.audit_index_state (id, upto, upto_hash) VALUES (1, ?, ?)",
    )
    .bind(at)
    .bind(hash)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(last < newest)
}

/// Files everything there is now, chunk after chunk.
pub(super) async fn file_all(pool: &SqlitePool) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    while file_some(&mut conn).await? {}
    Ok(())
}

/// The filer: every [`EVERY`], files what is new. Ends when the returned
/// sender (held by the store and its clones) is gone. With `run` false
/// there is no filer (the index is filed only by [`file_all`]).
pub(super) fn start(pool: SqlitePool, run: bool) -> mpsc::Sender<()> {
    let (keep, mut stop) = mpsc::channel::<()>(1);
    if !run {
        return keep;
    }
    tokio::spawn(async move {
        loop {
            if let Err(e) = file_all(&pool).await {
                tracing::warn!(error = %e, "audit index not brought up to date");
            }
            tokio::select! {
                _ = stop.recv() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    });
    keep
}

/// Makes sure the index file at `file` exists (mode 0600) and opens: the
/// index is only an index, so one that cannot be opened is removed and
/// created anew, to be rebuilt from the log. Checked on a lone connection
/// (a pool would retry until its timeout).
pub(super) async fn prepare(store: &SqliteConnectOptions, file: &Path) -> std::io::Result<()> {
    super::create_private(file)?;
    let mut conn = store.connect().await.map_err(std::io::Error::other)?;
    let attached = attach(&mut conn, file).await;
    let _ = conn.close().await;
    if let Err(e) = attached {
        tracing::warn!(error = %e, file = %file.display(), "the audit index cannot be opened; rebuilding it");
        discard(file)?;
        super::create_private(file)?;
    }
    Ok(())
}

/// Removes an index file and its WAL.
fn discard(file: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(PathBuf::from(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
