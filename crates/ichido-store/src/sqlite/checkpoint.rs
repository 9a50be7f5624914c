//! WAL checkpoints in the background.
//!
//! SQLite's default has the connection that commits past 1,000 WAL pages
//! copy them back into the database file and `fsync` it before its commit
//! returns: with many tokens, a thousand random page writes inside the
//! writer's turn, every few dozen batches, while every request of the next
//! batch waits. Here the writer's own threshold is raised to
//! [`WRITER_LIMIT`] pages (a safety net, not the rule) and a task of its own
//! runs a `PASSIVE` checkpoint every [`EVERY`] on a connection of its own.
//! A passive checkpoint takes no lock the writer needs: it copies what no
//! reader still needs and syncs, and the writer starts the WAL over once all
//! of it is copied. Durability is unchanged: a commit is durable once its
//! WAL frames are synced (`synchronous=FULL`), before any checkpoint. The
//! connection's thread runs below the validations' CPU priority (nice 10,
//! see `priority::CHECKPOINT_NICE`): it yields its time slices to the
//! writer, and the WAL stayed about as large as at the normal priority,
//! also with no idle time left (docs/performance.md, "Sixteenth machine").

use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::mpsc;

/// How often the background checkpoint runs.
const EVERY: Duration = Duration::from_millis(100);
/// The writer connection's own checkpoint threshold, in pages (SQLite's
/// default is 1,000): reached only if the background checkpoint falls
/// behind. With a million tokens each validation writes a leaf of its own
/// (a WAL page), and one background checkpoint of such scattered pages
/// takes a few tenths of a second: the WAL then grows by 7,000 pages or so
/// between checkpoints and passed 20,000 (the threshold before) every
/// second or two before it started over, and each time the writer copied
/// pages itself inside a batch (7% of its time on the fourteenth machine,
/// `perf`). At 100,000 pages (about 100 MiB of WAL with the store's 1 KiB
/// pages) the writer steps in only when the background checkpoints are
/// seconds behind.
pub(super) const WRITER_LIMIT: &str = "100000";

/// Starts the checkpointer on `pool` (one connection of its own). Ends when
/// the returned sender (held by the store and its clones) is gone.
pub(super) fn start(pool: SqlitePool) -> mpsc::Sender<()> {
    let (keep, mut stop) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.recv() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            let done: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
            match done {
                Ok((_, wal_pages, copied)) => {
                    tracing::trace!(wal_pages, copied, "checkpoint");
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    });
    keep
}
