//! Group commit of the hot writes: an acceptance is replied to only after the
//! batch that holds it has committed.
//!
//! One task per store takes the first queued job, begins one `BEGIN IMMEDIATE`
//! transaction on the writer pool's connection, drains what else is queued
//! (up to [`MAX_BATCH`]) and runs every job in arrival order inside its own
//! `SAVEPOINT`, with exactly the statements of a lone write: the conditional
//! `UPDATE` of an acceptance (so the first of two jobs with one code wins and
//! the second changes no row) and the audit append chained inside the same
//! transaction. A failing job is rolled back to its savepoint alone. Every
//! reply — success, `false`, or a job's own error — is sent after `COMMIT`
//! has returned; if anything at batch level fails (begin, savepoint
//! bookkeeping, commit), every job of the batch gets `Unavailable`, never a
//! success. The connection is held only for one batch, so other writers and
//! in-memory readers queue on the pool as before. The task ends when the last
//! sender (the last clone of the store) is dropped.

use std::str::FromStr;

use ichido_domain::audit::AuditRecord;
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::TokenState;
use ichido_domain::store::{Accept, Acceptance, FailureCount, StoreResult};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::append;
use crate::rows::{db_err, to_i64};

/// The most jobs one transaction holds.
pub(super) const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer task before callers are held back.
const QUEUE: usize = 4 * MAX_BATCH;

/// A write to run in the next batch.
enum Work {
    Accept {
        token_id: TokenId,
        accept: Accept,
        audit: AuditRecord,
    },
    Failure {
        token_id: TokenId,
        state: TokenState,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    },
    Audit(AuditRecord),
}

/// What a job answers once its batch has committed.
enum Outcome {
    Accept(bool),
    Failure(Option<FailureCount>),
    Audit,
}

/// Where a job's answer goes.
enum Reply {
    Accept(oneshot::Sender<StoreResult<bool>>),
    Failure(oneshot::Sender<StoreResult<Option<FailureCount>>>),
    Audit(oneshot::Sender<StoreResult<()>>),
}

impl Reply {
    /// Sends `r`; a caller that went away is not an error (its write stands).
    fn send(self, r: StoreResult<Outcome>) {
        let mismatch = || StoreError::Unavailable("batch reply of the wrong kind".into());
        match self {
            Reply::Accept(tx) => {
                let _ = tx.send(r.and_then(|o| match o {
                    Outcome::Accept(b) => Ok(b),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Failure(tx) => {
                let _ = tx.send(r.and_then(|o| match o {
                    Outcome::Failure(f) => Ok(f),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Audit(tx) => {
                let _ = tx.send(r.and_then(|o| match o {
                    Outcome::Audit => Ok(()),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

struct Job {
    work: Work,
    reply: Reply,
}

/// The handle the store keeps: cloning it shares the one writer task.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer task has stopped".into())
}

impl Batcher {
    /// Starts the writer task on the current runtime; it writes through `writer`.
    pub(super) fn start(writer: SqlitePool) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx));
        Self { jobs }
    }

    async fn submit<T>(
        &self,
        work: Work,
        reply: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Reply,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            work,
            reply: reply(tx),
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub(super) async fn accept(
        &self,
        token_id: &TokenId,
        accept: Accept,
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let work = Work::Accept {
            token_id: token_id.clone(),
            accept,
            audit,
        };
        self.submit(work, Reply::Accept).await
    }

    pub(super) async fn record_failure(
        &self,
        token_id: &TokenId,
        state: TokenState,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<FailureCount>> {
        let work = Work::Failure {
            token_id: token_id.clone(),
            state,
            threshold,
            now,
            audit,
        };
        self.submit(work, Reply::Failure).await
    }

    pub(super) async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()> {
        self.submit(Work::Audit(audit), Reply::Audit).await
    }
}

/// The writer task: one batch per turn until every sender is gone.
async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Waiting for the connection and the lock lets more jobs queue up.
        let tx = writer.begin_with("BEGIN IMMEDIATE").await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut tx = match tx {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch.drain(..).map(|j| j.reply), &db_err(e));
                continue;
            }
        };
        let mut done = Vec::with_capacity(batch.len());
        let mut aborted = None;
        let mut jobs = batch.drain(..);
        for job in jobs.by_ref() {
            match run_job(&mut tx, job.work).await {
                Ok(r) => done.push((job.reply, r)),
                Err(e) => {
                    done.push((job.reply, Err(stopped())));
                    aborted = Some(e);
                    break;
                }
            }
        }
        let rest: Vec<Reply> = jobs.map(|j| j.reply).collect();
        let committed = match aborted {
            // Dropping the transaction rolls it back.
            Some(e) => Err(e),
            None => tx.commit().await.map_err(db_err),
        };
        match committed {
            Ok(()) => {
                tracing::trace!(jobs = done.len(), "batch committed");
                for (reply, r) in done {
                    reply.send(r);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = done.len() + rest.len(), "batch not committed");
                fail_all(done.into_iter().map(|(r, _)| r).chain(rest), &e);
            }
        }
    }
}

fn fail_all(replies: impl Iterator<Item = Reply>, e: &StoreError) {
    for reply in replies {
        reply.send(Err(StoreError::Unavailable(format!(
            "batch not committed: {e}"
        ))));
    }
}

/// Runs one job inside its own savepoint. `Ok(Err(_))` is the job's own
/// failure, rolled back alone; `Err(_)` means the batch cannot go on.
async fn run_job(
    conn: &mut SqliteConnection,
    work: Work,
) -> Result<StoreResult<Outcome>, StoreError> {
    exec(conn, "SAVEPOINT job").await?;
    let r = match work {
        Work::Accept {
            token_id,
            accept: a,
            audit,
        } => accept(conn, &token_id, a, &audit)
            .await
            .map(Outcome::Accept),
        Work::Failure {
            token_id,
            state,
            threshold,
            now,
            audit,
        } => record_failure(conn, &token_id, state, threshold, now, audit)
            .await
            .map(Outcome::Failure),
        Work::Audit(audit) => append(conn, &audit).await.map(|()| Outcome::Audit),
    };
    if r.is_err() {
        exec(conn, "ROLLBACK TO job").await?;
    }
    exec(conn, "RELEASE job").await?;
    Ok(r)
}

async fn exec(conn: &mut SqliteConnection, sql: &str) -> StoreResult<()> {
    sqlx::query(sql).execute(&mut *conn).await.map_err(db_err)?;
    Ok(())
}

/// The conditional write of an acceptance and its audit record; `false` when
/// the code was already used (no row changed, nothing written).
async fn accept(
    conn: &mut SqliteConnection,
    token_id: &TokenId,
    a: Accept,
    audit: &AuditRecord,
) -> StoreResult<bool> {
    let changed = match a.acceptance {
        Acceptance::Event { counter } => {
            let next = to_i64(counter.saturating_add(1))?;
            sqlx::query(
                "UPDATE tokens SET counter = ?, failures = 0, state = ?, updated_at = ?,
                        activated_at = COALESCE(activated_at, ?)
                 WHERE token_id = ? AND state = ? AND counter <= ?",
            )
            .bind(next)
            .bind(a.to.as_str())
            .bind(a.now)
            .bind(a.now)
            .bind(token_id.as_str())
            .bind(a.from.as_str())
            .bind(to_i64(counter)?)
            .execute(&mut *conn)
            .await
        }
        Acceptance::Time { step, offset } => {
            let step = to_i64(step)?;
            sqlx::query(
                "UPDATE tokens SET last_step = ?, time_offset = ?, failures = 0, state = ?, updated_at = ?,
                        activated_at = COALESCE(activated_at, ?)
                 WHERE token_id = ? AND state = ? AND (last_step IS NULL OR last_step < ?)",
            )
            .bind(step)
            .bind(offset)
            .bind(a.to.as_str())
            .bind(a.now)
            .bind(a.now)
            .bind(token_id.as_str())
            .bind(a.from.as_str())
            .bind(step)
            .execute(&mut *conn)
            .await
        }
    }
    .map_err(db_err)?
    .rows_affected();
    if changed != 1 {
        return Ok(false);
    }
    append(conn, audit).await?;
    Ok(true)
}

/// Counts one failure of a token in `state`, locking (or discarding a pending
/// token) at `threshold`; `None` when the token is no longer in `state`.
async fn record_failure(
    conn: &mut SqliteConnection,
    token_id: &TokenId,
    state: TokenState,
    threshold: u32,
    now: i64,
    audit: AuditRecord,
) -> StoreResult<Option<FailureCount>> {
    let lock_to = if state == TokenState::Pending {
        TokenState::Revoked
    } else {
        TokenState::Locked
    };
    let row: Option<(i64, String)> = sqlx::query_as(
        "UPDATE tokens SET failures = failures + 1, updated_at = ?1,
                state = CASE WHEN failures + 1 >= ?2 THEN ?3 ELSE state END,
                sealed_secret = CASE WHEN failures + 1 >= ?2 AND ?3 = 'revoked' THEN X'' ELSE sealed_secret END
         WHERE token_id = ?4 AND state = ?5
         RETURNING failures, state",
    )
    .bind(now)
    .bind(i64::from(threshold))
    .bind(lock_to.as_str())
    .bind(token_id.as_str())
    .bind(state.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some((failures, new_state)) = row else {
        return Ok(None);
    };
    let new_state =
        TokenState::from_str(&new_state).map_err(|_| StoreError::Corrupt("token state".into()))?;
    append(conn, &audit).await?;
    if new_state != state {
        let mut lock = audit;
        lock.actor = "system".into();
        lock.action = if new_state == TokenState::Revoked {
            "token.discard"
        } else {
            "token.lock"
        };
        lock.outcome = format!(
            "{} after {failures} consecutive failures",
            new_state.as_str()
        );
        append(conn, &lock).await?;
    }
    Ok(Some(FailureCount {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        state: new_state,
    }))
}

#[cfg(test)]
mod tests {
    use ichido_domain::audit::{AuditRecord, GENESIS_HASH};
    use ichido_domain::store::AuditStore;

    use crate::{SqliteStore, StoreOptions};

    /// Many concurrent appends share batches; the chain stays contiguous and
    /// linked, and readers on the shared in-memory connection are not starved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_keep_the_chain() {
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let r = AuditRecord {
                        at: i,
                        actor: "test".into(),
                        action: "test.append",
                        contract_no: None,
                        user_id: None,
                        token_id: None,
                        outcome: format!("n{i}"),
                    };
                    store.append_audit(r).await.unwrap();
                    store.audit_chain(0, 1).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let chain = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(chain.len(), 300);
        let mut prev = GENESIS_HASH.to_owned();
        for (n, e) in chain.iter().enumerate() {
            assert_eq!(e.seq, n as i64 + 1);
            assert_eq!(e.prev_hash, prev);
            prev.clone_from(&e.hash);
        }
    }
}
