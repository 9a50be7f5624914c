//! Group commit of the hot writes on PostgreSQL: acceptances, failure counts
//! and lone audit records of many requests share one transaction, and each
//! reply is sent only after that transaction's `COMMIT` has returned
//! (`synchronous_commit` as the server is configured, `on` by default).
//!
//! [`WRITERS`] tasks per store take turns at the queue: a writer takes the
//! first job, drains what else is queued (up to [`MAX_BATCH`]) and releases
//! the queue to the next writer, so one batch collects while another runs its
//! statements or commits. Inside a batch:
//!
//! - every job runs exactly the conditional `UPDATE` of a lone write
//!   (`… WHERE counter <= $n` / `… last_step < $n` / `… state = $s`), so the
//!   first of two jobs carrying one code wins and the second changes no row,
//!   whether they share a batch, sit in two batches of this instance, or come
//!   from two instances (the row lock and PostgreSQL's re-check of the
//!   `WHERE` clause after the lock is granted decide);
//! - jobs run in token-ID order (stable, so jobs of one token keep their
//!   arrival order): every batch takes its row locks in one global order,
//!   which rules out deadlocks between batches of any instance;
//! - the audit records of the jobs that changed a row are appended after all
//!   data writes, under the chain's advisory lock, as every other transaction
//!   does (see the module documentation of `postgres`).
//!
//! A statement failing aborts a PostgreSQL transaction, so any error fails the
//! whole batch: every job in it gets `Unavailable` and nothing of the batch is
//! written (no code is spent without its reply). No job ever gets a success
//! before the commit has returned.

use std::str::FromStr;
use std::sync::Arc;

use ichido_domain::audit::AuditRecord;
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::TokenState;
use ichido_domain::store::{Accept, Acceptance, FailureCount, StoreResult};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::append;
use crate::rows::{db_err, to_i64};

/// The most jobs one transaction holds.
pub(super) const MAX_BATCH: usize = 256;
/// Writer tasks per store: one collects and writes while another commits.
pub(super) const WRITERS: usize = 2;
/// Jobs that may wait for a writer before callers are held back.
const QUEUE: usize = 4 * MAX_BATCH;

enum Work {
    Accept {
        accept: Accept,
        audit: AuditRecord,
    },
    Failure {
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

enum Reply {
    Accept(oneshot::Sender<StoreResult<bool>>),
    Failure(oneshot::Sender<StoreResult<Option<FailureCount>>>),
    Audit(oneshot::Sender<StoreResult<()>>),
}

impl Reply {
    /// Sends the answer; a caller that went away is not an error (the write
    /// stands, as it would had the reply been lost on the network).
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
    /// Empty for a lone audit record (sorted first; it locks no row).
    token_id: String,
    work: Work,
    reply: Reply,
}

/// The store's handle on its writer tasks; clones share them.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the PostgreSQL writer tasks have stopped".into())
}

impl Batcher {
    /// Starts the writer tasks on the current runtime; they end when the last
    /// clone of the handle is dropped.
    pub(super) fn start(pool: PgPool) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), Arc::clone(&rx)));
        }
        Self { jobs }
    }

    async fn submit<T>(
        &self,
        token_id: &str,
        work: Work,
        reply: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Reply,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            token_id: token_id.to_owned(),
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
        let work = Work::Accept { accept, audit };
        self.submit(token_id.as_str(), work, Reply::Accept).await
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
            state,
            threshold,
            now,
            audit,
        };
        self.submit(token_id.as_str(), work, Reply::Failure).await
    }

    pub(super) async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()> {
        self.submit("", Work::Audit(audit), Reply::Audit).await
    }
}

/// One writer: takes a batch from the shared queue, writes and commits it.
async fn run(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        // Stable: the jobs of one token keep their arrival order.
        batch.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        let mut replies = Vec::with_capacity(batch.len());
        let works: Vec<(String, Work)> = batch
            .drain(..)
            .map(|j| {
                replies.push(j.reply);
                (j.token_id, j.work)
            })
            .collect();
        match write(&pool, works).await {
            Ok(outcomes) => {
                tracing::trace!(jobs = outcomes.len(), "batch committed");
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply.send(Ok(outcome));
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

/// Writes every job in one transaction and commits it; the outcomes are in
/// the jobs' order. Any error means nothing of the batch was committed.
async fn write(pool: &PgPool, works: Vec<(String, Work)>) -> StoreResult<Vec<Outcome>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut outcomes = Vec::with_capacity(works.len());
    let mut records = Vec::with_capacity(works.len());
    for (token_id, work) in works {
        let outcome = match work {
            Work::Accept { accept: a, audit } => {
                let won = accept(&mut tx, &token_id, &a).await?;
                if won {
                    records.push(audit);
                }
                Outcome::Accept(won)
            }
            Work::Failure {
                state,
                threshold,
                now,
                audit,
            } => {
                let count = record_failure(
                    &mut tx,
                    &token_id,
                    state,
                    threshold,
                    now,
                    audit,
                    &mut records,
                )
                .await?;
                Outcome::Failure(count)
            }
            Work::Audit(audit) => {
                records.push(audit);
                Outcome::Audit
            }
        };
        outcomes.push(outcome);
    }
    append(&mut tx, &records).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes)
}

/// The conditional write of an acceptance: `true` when it changed the row.
async fn accept(conn: &mut PgConnection, token_id: &str, a: &Accept) -> StoreResult<bool> {
    let changed = match a.acceptance {
        Acceptance::Event { counter } => {
            let next = to_i64(counter.saturating_add(1))?;
            sqlx::query(
                "UPDATE tokens SET counter = $1, failures = 0, state = $2, updated_at = $3,
                        activated_at = COALESCE(activated_at, $3)
                 WHERE token_id = $4 AND state = $5 AND counter <= $6",
            )
            .bind(next)
            .bind(a.to.as_str())
            .bind(a.now)
            .bind(token_id)
            .bind(a.from.as_str())
            .bind(to_i64(counter)?)
            .execute(&mut *conn)
            .await
        }
        Acceptance::Time { step, offset } => {
            let step = to_i64(step)?;
            sqlx::query(
                "UPDATE tokens SET last_step = $1, time_offset = $2, failures = 0, state = $3, updated_at = $4,
                        activated_at = COALESCE(activated_at, $4)
                 WHERE token_id = $5 AND state = $6 AND (last_step IS NULL OR last_step < $1)",
            )
            .bind(step)
            .bind(offset)
            .bind(a.to.as_str())
            .bind(a.now)
            .bind(token_id)
            .bind(a.from.as_str())
            .execute(&mut *conn)
            .await
        }
    }
    .map_err(db_err)?
    .rows_affected();
    Ok(changed == 1)
}

/// Counts one failure of a token in `state`, locking it (or discarding a
/// pending one) at `threshold`; pushes the audit records to write. `None`
/// when the token is no longer in `state` (nothing written).
async fn record_failure(
    conn: &mut PgConnection,
    token_id: &str,
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
        "UPDATE tokens SET failures = failures + 1, updated_at = $1,
                state = CASE WHEN failures + 1 >= $2 THEN $3 ELSE state END,
                sealed_secret = CASE WHEN failures + 1 >= $2 AND $3 = 'revoked' THEN ''::bytea ELSE sealed_secret END
         WHERE token_id = $4 AND state = $5
         RETURNING failures, state",
    )
    .bind(now)
    .bind(i64::from(threshold))
    .bind(lock_to.as_str())
    .bind(token_id)
    .bind(state.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some((failures, new_state)) = row else {
        return Ok(None);
    };
    // A state that cannot be read back aborts the batch rather than commit a
    // count whose outcome nobody can report.
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
