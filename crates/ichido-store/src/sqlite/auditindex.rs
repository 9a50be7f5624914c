//! The audit log's look-ups by user and by token: reference tables in a
//! database file of their own beside the store's (`FILE-audit-index`),
//! filled in the background from the log, which stays the record.
//!
//! Each filing writes its events' references as a new *run*: sorted by key
//! under a run number above every other, so they go to the right edge of
//! the tables' B-trees, page after page, whatever the number of users. (Put
//! at each user's place in one table, as before runs, nearly every event
//! took a leaf of its own once the index held a bank's history: a page
//! written, and written again by the checkpoint, per reference.) Runs of
//! like size are merged, [`FANOUT`] at a time, into one sorted run, so there
//! are few; a run of [`FINAL_REFS`] references or more is merged no more,
//! which bounds a merge. A look-up seeks its key in every run (the catalog
//! `audit_runs` lists them) and in the references filed before runs
//! (`audit_user_refs`, `audit_token_refs`: read as they are, never added
//! to, emptied by a rebuild).
//!
//! The index file is written by a task of its own, on a connection of its
//! own, in WAL mode with `synchronous=NORMAL` (no `fsync` per commit): the
//! writer of acceptances never waits for it.
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
//! own; both only gain references (a merge moves runs' references into
//! one run, in one transaction), references point at events of the log,
//! and the tail is read from `upto` on, so no event is answered twice, and
//! none the log's snapshot holds is missed.

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
/// How many runs of like size (the same power of [`FANOUT`] of references)
/// are merged into one.
const FANOUT: i64 = 8;
/// A run of this many references or more is merged no more: a merge then
/// writes at most [`FANOUT`] times this much (about 16.7 million
/// references), and a bank filing some million references a day gets a new
/// final run every few days for its look-ups to seek.
const FINAL_REFS: i64 = FANOUT.pow(7);
/// The filer's and the merger's page cache for the index, in KiB (see
/// [`attacher`]). When references were put at each key's place, a second's
/// events landed on as many leaves, and SQLite's default cache (2 MiB)
/// spilled them to the WAL before the commit (a fifth of the filer's CPU
/// time with a million tokens); now it holds the pages a merge writes
/// before its commit and the runs' right edges. The cache grows only as
/// far as used.
pub(super) const FILER_CACHE_KIB: i64 = 64 * 1024;
/// The page size of a new index file: SQLite's usual 4 KiB. Runs are
/// written and merged in key order, whole pages one after another, so small
/// pages (1 KiB, as the store's file has for its random row writes, and as
/// index files made before runs have) only make the trees deeper and each
/// reference's share of page overhead larger: a merge of eight runs of
/// 500,000 references took a third less time with 4 KiB pages. A file made
/// with 1 KiB pages keeps them (removing it while ichido is stopped has it
/// rebuilt with 4 KiB).
pub(super) const INDEX_PAGE_SIZE: u32 = 4096;
/// The most of the index's WAL file kept on disk once checkpointed: a large
/// merge grows it to about twice the merge's references' size (a gigabyte
/// or so), which SQLite would otherwise keep allocated for good. Set on the
/// filer's connection, the index's only writer.
pub(super) const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;

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
    // its header; an existing one keeps its own (see [`INDEX_PAGE_SIZE`]).
    conn.execute(
        format!(
            "PRAGMA idx.page_size = {INDEX_PAGE_SIZE}; PRAGMA idx.journal_mode = WAL; PRAGMA idx.synchronous = NORMAL"
        )
        .as_str(),
    )
    .await?;
    // `audit_user_refs` and `audit_token_refs` hold what was filed before
    // runs (see the module's documentation); a new file has them empty.
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
         CREATE TABLE IF NOT EXISTS idx.audit_runs (
             run  INTEGER PRIMARY KEY NOT NULL,
             refs INTEGER NOT NULL -- of both tables
         );
         CREATE TABLE IF NOT EXISTS idx.audit_user_run_refs (
             run         INTEGER NOT NULL,
             contract_no TEXT NOT NULL,
             user_id     TEXT NOT NULL,
             seq         INTEGER NOT NULL,
             PRIMARY KEY (run, contract_no, user_id, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS idx.audit_token_run_refs (
             run      INTEGER NOT NULL,
             token_id TEXT NOT NULL,
             seq      INTEGER NOT NULL,
             PRIMARY KEY (run, token_id, seq)
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

/// What a connection of a pool does with the index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Look-ups.
    Reader,
    /// Filing: reads the log, adds runs.
    Filer,
    /// Merging runs: the index alone, at the lowest CPU priority.
    Merger,
}

/// The `after_connect` hook that attaches the index at `file` to each new
/// connection of a pool. The filer's and the merger's connections get a
/// page cache of [`FILER_CACHE_KIB`] for the index and bound its WAL file;
/// the merger's thread (named [`super::priority::MERGER_THREAD`]) gets the
/// lowest CPU priority.
pub(super) fn attacher(
    file: PathBuf,
    role: Role,
) -> impl for<'c> Fn(&'c mut SqliteConnection, PoolConnectionMetadata) -> Attaching<'c>
       + Send
       + Sync
       + 'static {
    move |conn, _| {
        let file = file.clone();
        Box::pin(async move {
            attach(conn, &file).await?;
            if role != Role::Reader {
                sqlx::query(&format!(
                    "PRAGMA idx.cache_size = -{FILER_CACHE_KIB}; PRAGMA idx.journal_size_limit = {WAL_KEEP_BYTES}"
                ))
                .execute(&mut *conn)
                .await?;
            }
            if role == Role::Merger {
                // This connection's thread (named by the pool's options)
                // works at the lowest priority; a new connection's too.
                super::priority::lower_or_warn(
                    super::priority::MERGER_THREAD,
                    super::priority::MERGER_NICE,
                );
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
            tx.execute(
                "DELETE FROM idx.audit_user_refs; DELETE FROM idx.audit_token_refs;
                 DELETE FROM idx.audit_user_run_refs; DELETE FROM idx.audit_token_run_refs;
                 DELETE FROM idx.audit_runs; DELETE FROM idx.audit_index_state",
            )
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
    let started = std::time::Instant::now();
    // A new run, sorted by key: appended at the right edge of each table.
    let run = new_run(&mut tx).await?;
    let mut refs = 0;
    for insert in [
        "INSERT INTO idx.audit_user_run_refs (run, contract_no, user_id, seq)
         SELECT ?3, contract_no, COALESCE(user_id, ''), seq FROM audit_events
         WHERE seq > ?1 AND seq <= ?2 AND contract_no IS NOT NULL
         ORDER BY 2, 3, 4",
        "INSERT INTO idx.audit_token_run_refs (run, token_id, seq)
         SELECT ?3, token_id, seq FROM audit_events
         WHERE seq > ?1 AND seq <= ?2 AND token_id IS NOT NULL
         ORDER BY 2, 3",
    ] {
        refs += sqlx::query(insert)
            .bind(upto)
            .bind(last)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
    }
    if refs > 0 {
        add_run(&mut tx, run, refs).await?;
    }
    tracing::trace!(
        events = last - upto,
        refs,
        micros = started.elapsed().as_micros() as u64,
        "audit index filed"
    );
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

/// A run number above every run's.
async fn new_run(conn: &mut SqliteConnection) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(run), 0) + 1 FROM idx.audit_runs")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)
}

/// Lists a run of `refs` references in the catalog, which look-ups read.
async fn add_run(conn: &mut SqliteConnection, run: i64, refs: u64) -> StoreResult<()> {
    sqlx::query("INSERT INTO idx.audit_runs (run, refs) VALUES (?, ?)")
        .bind(run)
        .bind(i64::try_from(refs).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Which runs to merge next, of `runs` (run, references), oldest first: the
/// [`FANOUT`] oldest of the smallest size (power of [`FANOUT`]) that has as
/// many, leaving out final runs (see [`FINAL_REFS`]). None if no size has.
fn runs_to_merge(runs: &[(i64, i64)]) -> Option<Vec<i64>> {
    // (run, size) of the runs that are not final, oldest first.
    let open: Vec<(i64, u32)> = runs
        .iter()
        .filter(|&&(_, refs)| refs < FINAL_REFS)
        .map(|&(run, refs)| (run, refs.max(1).ilog(FANOUT)))
        .collect();
    let mut sizes: Vec<u32> = open.iter().map(|&(_, size)| size).collect();
    sizes.sort_unstable();
    let count = usize::try_from(FANOUT).unwrap_or(usize::MAX);
    let merged = sizes
        .chunk_by(|a, b| a == b)
        .find(|same| same.len() >= count)?[0];
    Some(
        open.iter()
            .filter(|&&(_, size)| size == merged)
            .take(count)
            .map(|&(run, _)| run)
            .collect(),
    )
}

/// Merges [`FANOUT`] runs of like size into one, in one transaction of the
/// index, if there are as many. Returns whether it did.
pub(super) async fn merge_some(conn: &mut SqliteConnection) -> StoreResult<bool> {
    let mut tx = conn.begin().await.map_err(db_err)?;
    let started = std::time::Instant::now();
    let merged = merge_in(&mut tx).await?;
    tx.commit().await.map_err(db_err)?;
    if let Some((runs, refs)) = merged {
        tracing::trace!(
            runs,
            refs,
            micros = started.elapsed().as_micros() as u64,
            "audit index runs merged"
        );
    }
    Ok(merged.is_some())
}

/// The statements of a merge, in the caller's transaction: the runs merged
/// and the references of the new run, or `None` if there is nothing to
/// merge.
///
/// They name the index's tables alone, and no table of the store's file —
/// not even an eponymous virtual table such as `json_each`, which belongs
/// to `main`: a statement that reads `main` opens a read of the store's
/// file that lasts until the merge commits, seconds later, and meanwhile
/// the checkpoints cannot reset the store's WAL: it grew from 43 to 116 MB
/// behind the writer during one merge of eleven seconds, and would grow
/// for minutes behind the largest merges (docs/performance.md, "Twelfth
/// machine").
pub(super) async fn merge_in(tx: &mut SqliteConnection) -> StoreResult<Option<(usize, u64)>> {
    let runs: Vec<(i64, i64)> = sqlx::query_as("SELECT run, refs FROM idx.audit_runs ORDER BY run")
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
    let Some(merged) = runs_to_merge(&runs) else {
        return Ok(None);
    };
    let count = merged.len();
    // The merged runs as the parameters ?1.. of the deletes.
    let listed = (1..=count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let run = new_run(&mut *tx).await?;
    let mut refs = 0;
    for (table, key, order) in [
        ("audit_user_run_refs", "contract_no, user_id", "2, 3, 4"),
        ("audit_token_run_refs", "token_id", "2, 3"),
    ] {
        // The merged runs' references in key order, to the right edge. Each
        // run is read in its key order and SQLite merges the sorted arms of
        // the compound as they stream (`MERGE (UNION ALL)`), with no sort of
        // the whole (a reference in two runs, which filing never makes, is
        // kept once).
        let arms = (0..count)
            .map(|i| {
                format!(
                    "SELECT ?1, {key}, seq FROM idx.{table} WHERE run = ?{}",
                    i + 2
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let sql =
            format!("INSERT OR IGNORE INTO idx.{table} (run, {key}, seq) {arms} ORDER BY {order}");
        refs += bind_runs(sqlx::query(&sql).bind(run), &merged)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        let sql = format!("DELETE FROM idx.{table} WHERE run IN ({listed})");
        bind_runs(sqlx::query(&sql), &merged)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    let sql = format!("DELETE FROM idx.audit_runs WHERE run IN ({listed})");
    bind_runs(sqlx::query(&sql), &merged)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    add_run(&mut *tx, run, refs).await?;
    Ok(Some((count, refs)))
}

/// Binds the merged runs' numbers as the query's next parameters.
fn bind_runs<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    runs: &[i64],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for &r in runs {
        query = query.bind(r);
    }
    query
}

/// Files everything there is now, chunk after chunk, on `filer`'s
/// connection, merging runs as they come (a large log makes many) on
/// `merger`'s, one after the other. Filing reads the log, so it runs at
/// the normal priority and briefly: a read of the store's file held long
/// would keep the checkpoints from copying the WAL back past it, and the
/// WAL would grow. Merging touches the index alone and may take seconds,
/// at the lowest priority (see [`super::priority`]).
pub(super) async fn file_all(filer: &SqlitePool, merger: &SqlitePool) -> StoreResult<()> {
    let mut files = filer.acquire().await.map_err(db_err)?;
    let mut merges = merger.acquire().await.map_err(db_err)?;
    loop {
        let more = file_some(&mut files).await?;
        while merge_some(&mut merges).await? {}
        if !more {
            return Ok(());
        }
    }
}

/// The filer: every [`EVERY`], files what is new. Ends when the returned
/// sender (held by the store and its clones) is gone. With `run` false
/// there is no filer (the index is filed only by [`file_all`]).
pub(super) fn start(filer: SqlitePool, merger: SqlitePool, run: bool) -> mpsc::Sender<()> {
    let (keep, mut stop) = mpsc::channel::<()>(1);
    if !run {
        return keep;
    }
    tokio::spawn(async move {
        loop {
            if let Err(e) = file_all(&filer, &merger).await {
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

#[cfg(test)]
mod tests {
    use super::{runs_to_merge, FANOUT, FINAL_REFS};

    /// Runs of like size are merged eight at a time, the oldest first and
    /// the smallest size first; final runs never.
    #[test]
    fn runs_of_like_size_are_merged_and_final_ones_kept() {
        // Seven of each size: nothing to merge.
        let seven: Vec<(i64, i64)> = (1..=7).flat_map(|r| [(r, 3), (100 + r, 50)]).collect();
        assert_eq!(runs_to_merge(&seven), None);
        // An eighth of 8..63 references.
        let mut runs = seven.clone();
        runs.push((200, 63));
        runs.push((201, 8));
        assert_eq!(
            runs_to_merge(&runs),
            Some(vec![101, 102, 103, 104, 105, 106, 107, 200])
        );
        // With eight of the smallest size too, those go first.
        runs.push((202, 1));
        runs.push((203, 0));
        let smallest = runs_to_merge(&runs).unwrap();
        assert_eq!(smallest, vec![1, 2, 3, 4, 5, 6, 7, 202]);
        // Final runs are not merged, however many.
        let finals: Vec<(i64, i64)> = (1..=20).map(|r| (r, FINAL_REFS + r)).collect();
        assert_eq!(runs_to_merge(&finals), None);
        let below: Vec<(i64, i64)> = (1..=FANOUT).map(|r| (r, FINAL_REFS - 1)).collect();
        assert_eq!(runs_to_merge(&below).map(|m| m.len()), Some(8));
    }
}
