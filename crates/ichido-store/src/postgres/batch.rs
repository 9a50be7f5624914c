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
//! - the rows of all the batch's tokens are locked first, in token-ID order
//!   (`SELECT … ORDER BY token_id FOR UPDATE`): every batch of every instance
//!   takes its row locks in one global order, which rules out deadlocks;
//! - the jobs' conditional `UPDATE`s are set-based, one per kind and round
//!   (see [`write`]), each holding row by row exactly the condition of a lone
//!   write (`… WHERE counter <= $n` / `… last_step < $n` / `… state = $s`),
//!   so the first of two jobs carrying one code wins and the second changes
//!   no row, whether they share a batch, sit in two batches of this instance,
//!   or come from two instances (the row lock and PostgreSQL's re-check of
//!   the `WHERE` clause after the lock is granted decide);
//! - the audit records of the jobs that changed a row are appended after all
//!   data writes, under the chain's advisory lock, as every other transaction
//!   does (see the module documentation of `postgres`).
//!
//! A statement failing aborts a PostgreSQL transaction, so any error fails the
//! whole batch: every job in it gets `Unavailable` and nothing of the batch is
//! written (no code is spent without its reply). No job ever gets a success
//! before the commit has returned.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ichido_domain::audit::AuditRecord;
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::TokenState;
use ichido_domain::store::{Accept, Acceptance, FailureCount, Position, StoreResult};
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::append;
use crate::rows::{counted_failure, counted_rows, db_err, saturating_i64, to_i64};

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
        seen: Option<Position>,
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
    /// Empty for a lone audit record (it locks no row).
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
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<FailureCount>> {
        let work = Work::Failure {
            state,
            seen,
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

/// Writes every job in one transaction and commits it; the outcomes are in
/// the jobs' order. An outer error means nothing of the batch was committed;
/// an inner one is a job's own refusal found before any SQL ran (a counter
/// out of range), answered alone.
///
/// The rows of all the batch's tokens are locked first, in token-ID order,
/// by one `SELECT … ORDER BY token_id FOR UPDATE`: every batch of every
/// instance takes its row locks in one global order, so batches never
/// deadlock. Then jobs run in rounds: a token's k-th job of the batch runs
/// in round k, so within a round every token appears once and the round's
/// jobs of one kind share one `UPDATE … FROM unnest(…)` whose `WHERE` holds,
/// row by row, exactly the condition of a lone write (`counter <= n`,
/// `last_step < n`, `state = s`). A later round sees what the earlier ones
/// wrote, so the second of two jobs with one code changes nothing. The
/// statements' texts are fixed (arrays, not lists of values), so they are
/// prepared once per connection.
async fn write(
    pool: &PgPool,
    works: Vec<(String, Work)>,
) -> StoreResult<Vec<StoreResult<Outcome>>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let n = works.len();
    let mut ids: Vec<&str> = works
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if !ids.is_empty() {
        sqlx::query("SELECT 1 FROM tokens WHERE token_id = ANY($1) ORDER BY token_id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    drop(ids);

    let mut round_of = Vec::with_capacity(n);
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (id, work) in &works {
        round_of.push(match work {
            Work::Audit(_) => 0,
            _ => {
                let count = seen.entry(id.as_str()).or_insert(0);
                *count += 1;
                *count - 1
            }
        });
    }
    drop(seen);
    let rounds = round_of.iter().copied().max().map_or(0, |r| r + 1);
    let mut works: Vec<Option<(String, Work)>> = works.into_iter().map(Some).collect();
    let mut outcomes: Vec<Option<StoreResult<Outcome>>> = (0..n).map(|_| None).collect();
    let mut records: Vec<Vec<AuditRecord>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut events = EventRows::default();
        let mut times = TimeRows::default();
        let mut failures = FailureRows::default();
        for i in (0..n).filter(|&i| round_of[i] == round) {
            let Some((token_id, work)) = works[i].take() else {
                continue;
            };
            match work {
                Work::Accept { accept: a, audit } => {
                    let pushed = match a.acceptance {
                        Acceptance::Event { counter } => {
                            events.push(i, token_id, &a, counter, audit)
                        }
                        Acceptance::Time { step, offset } => {
                            times.push(i, token_id, &a, step, offset, audit)
                        }
                    };
                    if let Err(e) = pushed {
                        outcomes[i] = Some(Err(e));
                    }
                }
                Work::Failure {
                    state,
                    seen,
                    threshold,
                    now,
                    audit,
                } => failures.push(i, token_id, state, seen, threshold, now, audit),
                Work::Audit(audit) => {
                    records[i].push(audit);
                    outcomes[i] = Some(Ok(Outcome::Audit));
                }
            }
        }
        if !events.idx.is_empty() {
            let won = events.run(&mut tx).await?;
            settle_accepts(
                events.idx,
                events.token_id,
                events.audit,
                &won,
                &mut outcomes,
                &mut records,
            );
        }
        if !times.idx.is_empty() {
            let won = times.run(&mut tx).await?;
            settle_accepts(
                times.idx,
                times.token_id,
                times.audit,
                &won,
                &mut outcomes,
                &mut records,
            );
        }
        if !failures.idx.is_empty() {
            let counted = failures.run(&mut tx).await?;
            for (k, i) in failures.idx.iter().copied().enumerate() {
                let outcome = match counted.get(failures.token_id[k].as_str()) {
                    None => Outcome::Failure(None),
                    Some(&(count, now)) => Outcome::Failure(Some(counted_failure(
                        &failures.audit[k],
                        failures.state[k],
                        count,
                        now,
                        &mut records[i],
                    ))),
                };
                outcomes[i] = Some(Ok(outcome));
            }
        }
    }
    let records: Vec<AuditRecord> = records.into_iter().flatten().collect();
    append(&mut tx, &records).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Unavailable("job not run".into()))))
        .collect())
}

/// Records the answers of accept jobs: won when the statement changed the
/// token's row (its ID came back).
fn settle_accepts(
    idx: Vec<usize>,
    token_ids: Vec<String>,
    audits: Vec<AuditRecord>,
    won: &HashSet<String>,
    outcomes: &mut [Option<StoreResult<Outcome>>],
    records: &mut [Vec<AuditRecord>],
) {
    for ((i, token_id), audit) in idx.into_iter().zip(token_ids).zip(audits) {
        let ok = won.contains(&token_id);
        if ok {
            records[i].push(audit);
        }
        outcomes[i] = Some(Ok(Outcome::Accept(ok)));
    }
}

/// Runs a set-based statement and collects the IDs it returned.
async fn returned_ids(
    q: sqlx::query::QueryAs<'_, Postgres, (String,), sqlx::postgres::PgArguments>,
    conn: &mut PgConnection,
) -> StoreResult<HashSet<String>> {
    let rows = q.fetch_all(&mut *conn).await.map_err(db_err)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One round's event-token acceptances, column by column.
#[derive(Default)]
struct EventRows {
    idx: Vec<usize>,
    token_id: Vec<String>,
    next: Vec<i64>,
    counter: Vec<i64>,
    from: Vec<&'static str>,
    to: Vec<&'static str>,
    now: Vec<i64>,
    audit: Vec<AuditRecord>,
}

impl EventRows {
    fn push(
        &mut self,
        i: usize,
        token_id: String,
        a: &Accept,
        counter: u64,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let next = to_i64(counter.saturating_add(1))?;
        let counter = to_i64(counter)?;
        self.idx.push(i);
        self.token_id.push(token_id);
        self.next.push(next);
        self.counter.push(counter);
        self.from.push(a.from.as_str());
        self.to.push(a.to.as_str());
        self.now.push(a.now);
        self.audit.push(audit);
        Ok(())
    }

    /// The conditional writes; the IDs of the tokens whose row changed.
    async fn run(&self, conn: &mut PgConnection) -> StoreResult<HashSet<String>> {
        let q = sqlx::query_as(
            "UPDATE tokens AS t SET counter = v.next, failures = 0, state = v.to_state, updated_at = v.now,
                    activated_at = COALESCE(t.activated_at, v.now)
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::int8[])
                  AS v(token_id, next, counter, from_state, to_state, now)
             WHERE t.token_id = v.token_id AND t.state = v.from_state AND t.counter <= v.counter
             RETURNING t.token_id",
        )
        .bind(&self.token_id)
        .bind(&self.next)
        .bind(&self.counter)
        .bind(&self.from)
        .bind(&self.to)
        .bind(&self.now);
        returned_ids(q, conn).await
    }
}

/// One round's time-token acceptances, column by column.
#[derive(Default)]
struct TimeRows {
    idx: Vec<usize>,
    token_id: Vec<String>,
    step: Vec<i64>,
    offset: Vec<i64>,
    from: Vec<&'static str>,
    to: Vec<&'static str>,
    now: Vec<i64>,
    audit: Vec<AuditRecord>,
}

impl TimeRows {
    fn push(
        &mut self,
        i: usize,
        token_id: String,
        a: &Accept,
        step: u64,
        offset: i64,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let step = to_i64(step)?;
        self.idx.push(i);
        self.token_id.push(token_id);
        self.step.push(step);
        self.offset.push(offset);
        self.from.push(a.from.as_str());
        self.to.push(a.to.as_str());
        self.now.push(a.now);
        self.audit.push(audit);
        Ok(())
    }

    /// The conditional writes; the IDs of the tokens whose row changed.
    async fn run(&self, conn: &mut PgConnection) -> StoreResult<HashSet<String>> {
        let q = sqlx::query_as(
            "UPDATE tokens AS t SET last_step = v.step, time_offset = v.time_offset, failures = 0,
                    state = v.to_state, updated_at = v.now, activated_at = COALESCE(t.activated_at, v.now)
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::int8[])
                  AS v(token_id, step, time_offset, from_state, to_state, now)
             WHERE t.token_id = v.token_id AND t.state = v.from_state
                   AND (t.last_step IS NULL OR t.last_step < v.step)
             RETURNING t.token_id",
        )
        .bind(&self.token_id)
        .bind(&self.step)
        .bind(&self.offset)
        .bind(&self.from)
        .bind(&self.to)
        .bind(&self.now);
        returned_ids(q, conn).await
    }
}

/// One round's failure counts, column by column.
#[derive(Default)]
struct FailureRows {
    idx: Vec<usize>,
    token_id: Vec<String>,
    state: Vec<TokenState>,
    state_text: Vec<&'static str>,
    check: Vec<bool>,
    counter: Vec<Option<i64>>,
    last_step: Vec<Option<i64>>,
    time_offset: Vec<Option<i64>>,
    lock_to: Vec<&'static str>,
    threshold: Vec<i64>,
    now: Vec<i64>,
    audit: Vec<AuditRecord>,
}

impl FailureRows {
    // The columns of one failure job, as `Work::Failure` holds them.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        i: usize,
        token_id: String,
        state: TokenState,
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) {
        self.check.push(seen.is_some());
        self.counter.push(seen.map(|p| saturating_i64(p.counter)));
        self.last_step
            .push(seen.and_then(|p| p.last_step).map(saturating_i64));
        self.time_offset.push(seen.map(|p| p.time_offset));
        let lock_to = if state == TokenState::Pending {
            TokenState::Revoked
        } else {
            TokenState::Locked
        };
        self.idx.push(i);
        self.token_id.push(token_id);
        self.state.push(state);
        self.state_text.push(state.as_str());
        self.lock_to.push(lock_to.as_str());
        self.threshold.push(i64::from(threshold));
        self.now.push(now);
        self.audit.push(audit);
    }

    /// Counts one failure of each token still in its job's state, locking it
    /// (or discarding a pending one) at the job's threshold; per token that
    /// changed, its new failure count and state.
    async fn run(
        &self,
        conn: &mut PgConnection,
    ) -> StoreResult<HashMap<String, (i64, TokenState)>> {
        let changed: Vec<(String, i64, String)> = sqlx::query_as(
            "UPDATE tokens AS t SET failures = t.failures + 1, updated_at = v.now,
                    state = CASE WHEN t.failures + 1 >= v.threshold THEN v.lock_to ELSE t.state END,
                    sealed_secret = CASE WHEN t.failures + 1 >= v.threshold AND v.lock_to = 'revoked'
                                         THEN ''::bytea ELSE t.sealed_secret END
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                         $6::bool[], $7::int8[], $8::int8[], $9::int8[])
                  AS v(token_id, from_state, lock_to, threshold, now,
                       check_pos, counter, last_step, time_offset)
             WHERE t.token_id = v.token_id AND t.state = v.from_state
                   AND (NOT v.check_pos OR (t.counter = v.counter
                        AND t.last_step IS NOT DISTINCT FROM v.last_step
                        AND t.time_offset = v.time_offset))
             RETURNING t.token_id, t.failures, t.state",
        )
        .bind(&self.token_id)
        .bind(&self.state_text)
        .bind(&self.lock_to)
        .bind(&self.threshold)
        .bind(&self.now)
        .bind(&self.check)
        .bind(&self.counter)
        .bind(&self.last_step)
        .bind(&self.time_offset)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        counted_rows(changed)
    }
}
