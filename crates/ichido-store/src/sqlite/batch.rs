//! Group commit of the hot writes: an acceptance is replied to only after the
//! batch that holds it has committed.
//!
//! One task per store takes the first queued job, begins one `BEGIN IMMEDIATE`
//! transaction on the writer pool's connection, drains what else is queued
//! (up to [`MAX_BATCH`]) and runs every job in arrival order with exactly the
//! conditional `UPDATE` of a lone write (so the first of two jobs with one
//! code wins and the second changes no row). The audit records of the jobs
//! that changed a row are chained after the data writes, reading the chain's
//! head once per batch, in the same transaction. Every reply is sent after
//! `COMMIT` has returned; any error fails the whole batch (every job gets
//! `Unavailable`, nothing of the batch is written, no code is spent without
//! its reply). The connection is held only for one batch, so other writers
//! and in-memory readers queue on the pool as before. The task ends when the
//! last sender (the last clone of the store) is dropped.

use std::str::FromStr;

use ichido_domain::audit::{AuditRecord, GENESIS_HASH};
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::TokenState;
use ichido_domain::store::{Accept, Acceptance, FailureCount, StoreResult};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{db_err, to_i64};

/// The most jobs one transaction holds.
pub(super) const MAX_BATCH: usize = 256;
/// Audit rows per INSERT statement (10 bound values each).
const AUDIT_ROWS: usize = 64;
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
        let mut replies = Vec::with_capacity(batch.len());
        let works: Vec<Work> = batch
            .drain(..)
            .map(|j| {
                replies.push(j.reply);
                j.work
            })
            .collect();
        let written = match tx {
            Ok(mut tx) => match write(&mut tx, works).await {
                // Dropping the transaction on an error rolls it back.
                Ok(outcomes) => tx.commit().await.map_err(db_err).map(|()| outcomes),
                Err(e) => Err(e),
            },
            Err(e) => Err(db_err(e)),
        };
        match written {
            Ok(outcomes) => {
                tracing::trace!(jobs = outcomes.len(), "batch committed");
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = replies.len(), "batch not committed");
                for reply in replies {
                    reply.send(Err(StoreError::Unavailable(format!(
                        "batch not committed: {e}"
                    ))));
                }
            }
        }
    }
}

/// Runs every job inside the open transaction, then chains their audit
/// records. The outer error aborts the batch; an inner one is a job's own
/// refusal found before any SQL ran (a value out of range), answered alone.
async fn write(
    conn: &mut SqliteConnection,
    works: Vec<Work>,
) -> StoreResult<Vec<StoreResult<Outcome>>> {
    let mut outcomes = Vec::with_capacity(works.len());
    let mut records = Vec::with_capacity(works.len());
    for work in works {
        let outcome = match work {
            Work::Accept {
                token_id,
                accept: a,
                audit,
            } => match accept(conn, &token_id, a).await? {
                Ok(won) => {
                    if won {
                        records.push(audit);
                    }
                    Ok(Outcome::Accept(won))
                }
                Err(e) => Err(e),
            },
            Work::Failure {
                token_id,
                state,
                threshold,
                now,
                audit,
            } => record_failure(conn, &token_id, state, threshold, now, audit, &mut records)
                .await
                .map(|c| Ok(Outcome::Failure(c)))?,
            Work::Audit(audit) => {
                records.push(audit);
                Ok(Outcome::Audit)
            }
        };
        outcomes.push(outcome);
    }
    append_all(conn, &records).await?;
    Ok(outcomes)
}

/// Chains `records` in order after the chain's head, read once.
async fn append_all(conn: &mut SqliteConnection, records: &[AuditRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    let (mut seq, mut prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_owned()),
    };
    // One multi-row INSERT per chunk: a statement per record would cost a
    // round trip to the connection's thread each.
    for chunk in records.chunks(AUDIT_ROWS) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO audit_events (seq, at, actor, action, contract_no, user_id, token_id, outcome, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut row, r| {
            let hash = r.hash_after(&prev, seq);
            row.push_bind(seq)
                .push_bind(r.at)
                .push_bind(r.actor.as_str())
                .push_bind(r.action)
                .push_bind(r.contract_no.as_deref())
                .push_bind(r.user_id.as_deref())
                .push_bind(r.token_id.as_deref())
                .push_bind(r.outcome.as_str())
                .push_bind(std::mem::replace(&mut prev, hash.clone()))
                .push_bind(hash);
            seq += 1;
        });
        // Not cached: the text differs with the chunk's length.
        q.build()
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// The conditional write of an acceptance: `true` when it changed the row,
/// `false` when the code was already used (nothing written). The inner
/// error is a value out of range, found before any SQL ran.
async fn accept(
    conn: &mut SqliteConnection,
    token_id: &TokenId,
    a: Accept,
) -> StoreResult<StoreResult<bool>> {
    let changed = match a.acceptance {
        Acceptance::Event { counter } => {
            let (next, counter) = match (to_i64(counter.saturating_add(1)), to_i64(counter)) {
                (Ok(n), Ok(c)) => (n, c),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            };
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
            .bind(counter)
            .execute(&mut *conn)
            .await
        }
        Acceptance::Time { step, offset } => {
            let step = match to_i64(step) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
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
    Ok(Ok(changed == 1))
}

/// Counts one failure of a token in `state`, locking (or discarding a pending
/// token) at `threshold`, and queues its audit records; `None` when the token
/// is no longer in `state` (nothing written).
async fn record_failure(
    conn: &mut SqliteConnection,
    token_id: &TokenId,
    state: TokenState,
    threshold: u32,
    now: i64,
    audit: AuditRecord,
    records: &mut Vec<AuditRecord>,
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
    if new_state != state {
        let mut lock = audit.clone();
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
        records.push(audit);
        records.push(lock);
    } else {
        records.push(audit);
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
