//! Group commit of the hot writes: an acceptance is replied to only after the
//! batch that holds it has committed.
//!
//! One task per store takes the first queued job, begins one `BEGIN IMMEDIATE`
//! transaction on the writer pool's connection and drains what else is queued
//! (up to [`MAX_BATCH`]). The jobs' conditional `UPDATE`s are set-based: one
//! `UPDATE … FROM (VALUES …)` per kind and round (see [`write`]) whose
//! `WHERE` holds, row by row, exactly the condition of a lone write, so the
//! first of two jobs with one code wins and the second changes no row. The
//! audit records of the jobs that changed a row are chained after the data
//! writes, reading the chain's head once per batch, in the same transaction.
//! Every reply is sent after `COMMIT` has returned; any error fails the whole
//! batch (every job gets `Unavailable`, nothing of the batch is written, no
//! code is spent without its reply). The connection is held only for one batch, so other writers
//! and in-memory readers queue on the pool as before. The task ends when the
//! last sender (the last clone of the store) is dropped.

use std::collections::{HashMap, HashSet};

use ichido_domain::audit::{AuditRecord, GENESIS_HASH};
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Token, TokenState};
use ichido_domain::store::{
    Accept, Acceptance, FailureCount, Position, RowDecide, RowWrite, RowWritten, StoreResult,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{counted_failure, counted_rows, db_err, saturating_i64, to_i64, TokenRow};

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
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    },
    Audit(AuditRecord),
    /// A decision on the token's row as this batch reads it, written in
    /// the same round (see [`decide_round`]).
    Decide {
        token_id: TokenId,
        decide: RowDecide,
    },
}

/// What a job answers once its batch has committed.
enum Outcome {
    Accept(bool),
    Failure(Option<FailureCount>),
    Audit,
    /// A decision that wrote nothing.
    Nothing,
    Decide(Option<Token>, RowWritten),
}

/// Where a job's answer goes.
enum Reply {
    Accept(oneshot::Sender<StoreResult<bool>>),
    Failure(oneshot::Sender<StoreResult<Option<FailureCount>>>),
    Audit(oneshot::Sender<StoreResult<()>>),
    Decide(oneshot::Sender<StoreResult<(Option<Token>, RowWritten)>>),
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
            Reply::Decide(tx) => {
                let _ = tx.send(r.and_then(|o| match o {
                    Outcome::Decide(token, written) => Ok((token, written)),
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
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<FailureCount>> {
        let work = Work::Failure {
            token_id: token_id.clone(),
            state,
            seen,
            threshold,
            now,
            audit,
        };
        self.submit(work, Reply::Failure).await
    }

    pub(super) async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()> {
        self.submit(Work::Audit(audit), Reply::Audit).await
    }

    pub(super) async fn decide_on_row(
        &self,
        token_id: &TokenId,
        decide: RowDecide,
    ) -> StoreResult<(Option<Token>, RowWritten)> {
        let work = Work::Decide {
            token_id: token_id.clone(),
            decide,
        };
        self.submit(work, Reply::Decide).await
    }
}

/// The writer task: one batch per turn until every sender is gone.
async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let started = std::time::Instant::now();
        batch.push(first);
        // Waiting for the connection and the lock lets more jobs queue up.
        let tx = writer.begin_with("BEGIN IMMEDIATE").await;
        let begun = started.elapsed();
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
        let mut wrote = begun;
        let written = match tx {
            Ok(mut tx) => match write(&mut tx, works).await {
                // Dropping the transaction on an error rolls it back.
                Ok(outcomes) => {
                    wrote = started.elapsed();
                    tx.commit().await.map_err(db_err).map(|()| outcomes)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(db_err(e)),
        };
        match written {
            Ok(outcomes) => {
                // From the first job's arrival: the lock taken, the
                // statements run, the commit (WAL append and fsync) done.
                let done = started.elapsed();
                tracing::trace!(
                    jobs = outcomes.len(),
                    micros = done.as_micros(),
                    begin_micros = begun.as_micros(),
                    write_micros = (wrote - begun).as_micros(),
                    commit_micros = (done - wrote).as_micros(),
                    "batch committed"
                );
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
///
/// Jobs run in rounds: a token's k-th job of the batch runs in round k, so
/// within a round every token appears once and its jobs can share one
/// statement per kind — an `UPDATE … FROM (VALUES …)` whose `WHERE` holds,
/// row by row, exactly the condition of a lone write (`counter <= n`,
/// `last_step < n`, `state = s`). Each row changes at most once per
/// statement, and a later round sees what the earlier ones wrote, so the
/// second of two jobs with one code changes nothing, as in a lone write.
async fn write(
    conn: &mut SqliteConnection,
    works: Vec<Work>,
) -> StoreResult<Vec<StoreResult<Outcome>>> {
    let n = works.len();
    let mut round_of = Vec::with_capacity(n);
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for w in &works {
        let round = match w {
            Work::Accept { token_id, .. }
            | Work::Failure { token_id, .. }
            | Work::Decide { token_id, .. } => {
                let count = seen.entry(token_id.as_str()).or_insert(0);
                *count += 1;
                *count - 1
            }
            Work::Audit(_) => 0,
        };
        round_of.push(round);
    }
    drop(seen);
    let rounds = round_of.iter().copied().max().map_or(0, |r| r + 1);
    let mut works: Vec<Option<Work>> = works.into_iter().map(Some).collect();
    let mut outcomes: Vec<Option<StoreResult<Outcome>>> = (0..n).map(|_| None).collect();
    let mut records: Vec<Vec<AuditRecord>> = (0..n).map(|_| Vec::new()).collect();
    // The rows read for decisions, by job (`Some` for a decision's job).
    let mut read: Vec<Option<Option<Token>>> = (0..n).map(|_| None).collect();
    for round in 0..rounds {
        decide_round(
            conn,
            (0..n).filter(|&i| round_of[i] == round),
            &mut works,
            &mut outcomes,
            &mut read,
        )
        .await?;
        let mut events = Vec::new();
        let mut times = Vec::new();
        let mut failures = Vec::new();
        for i in (0..n).filter(|&i| round_of[i] == round) {
            match works[i].take() {
                Some(Work::Accept {
                    token_id,
                    accept: a,
                    audit,
                }) => match Row::accept(i, token_id, &a, audit) {
                    Ok(Row::Event(r)) => events.push(r),
                    Ok(Row::Time(r)) => times.push(r),
                    Err(e) => outcomes[i] = Some(Err(e)),
                },
                Some(Work::Failure {
                    token_id,
                    state,
                    seen,
                    threshold,
                    now,
                    audit,
                }) => failures.push(FailureRow {
                    idx: i,
                    token_id,
                    state,
                    seen,
                    threshold,
                    now,
                    audit,
                }),
                Some(Work::Audit(audit)) => {
                    records[i].push(audit);
                    outcomes[i] = Some(Ok(Outcome::Audit));
                }
                // Turned into one of the above by `decide_round`.
                Some(Work::Decide { .. }) => {
                    outcomes[i] = Some(Err(StoreError::Unavailable("decision not made".into())));
                }
                None => {}
            }
        }
        // A write that leaves the state as it is (every validation) does
        // not name `state` in its SET: SQLite then leaves the two partial
        // indexes on tokens alone, one random leaf page fewer per
        // acceptance.
        let (events_same, events_moved): (Vec<_>, Vec<_>) =
            events.into_iter().partition(|r| r.from == r.to);
        for (rows, moves) in [(events_same, false), (events_moved, true)] {
            for chunk in rows.chunks(UPDATE_ROWS) {
                let won = accept_events(conn, chunk, moves).await?;
                settle_accepts(
                    chunk.iter().map(|r| (r.idx, &r.token_id, &r.audit)),
                    &won,
                    &mut outcomes,
                    &mut records,
                );
            }
        }
        let (times_same, times_moved): (Vec<_>, Vec<_>) =
            times.into_iter().partition(|r| r.from == r.to);
        for (rows, moves) in [(times_same, false), (times_moved, true)] {
            for chunk in rows.chunks(UPDATE_ROWS) {
                let won = accept_times(conn, chunk, moves).await?;
                settle_accepts(
                    chunk.iter().map(|r| (r.idx, &r.token_id, &r.audit)),
                    &won,
                    &mut outcomes,
                    &mut records,
                );
            }
        }
        for chunk in failures.chunks(UPDATE_ROWS) {
            let counted = count_failures(conn, chunk).await?;
            for r in chunk {
                let outcome = match counted.get(r.token_id.as_str()) {
                    None => Ok(Outcome::Failure(None)),
                    Some(&(failures, now)) => Ok(Outcome::Failure(Some(counted_failure(
                        &r.audit,
                        r.state,
                        failures,
                        now,
                        &mut records[r.idx],
                    )))),
                };
                outcomes[r.idx] = Some(outcome);
            }
        }
    }
    let records: Vec<AuditRecord> = records.into_iter().flatten().collect();
    append_all(conn, &records).await?;
    Ok(outcomes
        .into_iter()
        .zip(read)
        .map(|(o, read)| {
            let o = o.unwrap_or_else(|| Err(StoreError::Unavailable("job not run".into())));
            match read {
                None => o,
                Some(token) => o.map(|o| {
                    let written = match o {
                        Outcome::Accept(won) => RowWritten::Accept(won),
                        Outcome::Failure(f) => RowWritten::Failure(f),
                        Outcome::Audit => RowWritten::Audit,
                        Outcome::Nothing | Outcome::Decide(..) => RowWritten::Nothing,
                    };
                    Outcome::Decide(token, written)
                }),
            }
        })
        .collect())
}

/// Reads, in one statement inside the batch's transaction, the rows of the
/// decisions among `jobs` (one round: each token once), runs each decision
/// on its row and puts the write it asks for in its job's place, to run
/// with the round's other writes. As the batch holds SQLite's write lock,
/// the row decided on is the row the write finds. A decision that panics
/// fails its own job only.
async fn decide_round(
    conn: &mut SqliteConnection,
    jobs: impl Iterator<Item = usize>,
    works: &mut [Option<Work>],
    outcomes: &mut [Option<StoreResult<Outcome>>],
    read: &mut [Option<Option<Token>>],
) -> StoreResult<()> {
    let decisions: Vec<usize> = jobs
        .filter(|&i| matches!(works[i], Some(Work::Decide { .. })))
        .collect();
    if decisions.is_empty() {
        return Ok(());
    }
    let ids = super::reads::json_ids(decisions.iter().filter_map(|&i| match &works[i] {
        Some(Work::Decide { token_id, .. }) => Some(token_id),
        _ => None,
    }));
    let rows: Vec<TokenRow> =
        sqlx::query_as("SELECT * FROM tokens WHERE token_id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    let mut found: HashMap<String, StoreResult<Token>> = rows
        .into_iter()
        .map(|row| (row.token_id.clone(), Token::try_from(row)))
        .collect();
    for i in decisions {
        let Some(Work::Decide { token_id, decide }) = works[i].take() else {
            continue;
        };
        let token = match found.remove(token_id.as_str()).transpose() {
            Ok(token) => token,
            Err(e) => {
                outcomes[i] = Some(Err(e));
                continue;
            }
        };
        let decided =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(token.as_ref())));
        let write = match decided {
            Ok(write) => write,
            Err(_) => {
                tracing::error!(token_id = %token_id, "a validation check panicked");
                outcomes[i] = Some(Err(StoreError::Unavailable(
                    "the validation check failed".into(),
                )));
                continue;
            }
        };
        works[i] = match write {
            RowWrite::Accept { accept, audit } => Some(Work::Accept {
                token_id,
                accept,
                audit,
            }),
            RowWrite::Failure {
                state,
                threshold,
                now,
                audit,
            } => Some(Work::Failure {
                token_id,
                state,
                seen: None,
                threshold,
                now,
                audit,
            }),
            RowWrite::Audit(audit) => Some(Work::Audit(audit)),
            RowWrite::Nothing => {
                outcomes[i] = Some(Ok(Outcome::Nothing));
                None
            }
        };
        read[i] = Some(token);
    }
    Ok(())
}

/// Records the answers of accept jobs: won when the statement changed the
/// token's row (its ID came back).
fn settle_accepts<'a>(
    jobs: impl Iterator<Item = (usize, &'a TokenId, &'a AuditRecord)>,
    won: &HashSet<String>,
    outcomes: &mut [Option<StoreResult<Outcome>>],
    records: &mut [Vec<AuditRecord>],
) {
    for (idx, token_id, audit) in jobs {
        let ok = won.contains(token_id.as_str());
        if ok {
            records[idx].push(audit.clone());
        }
        outcomes[idx] = Some(Ok(Outcome::Accept(ok)));
    }
}

/// Rows per set-based `UPDATE` (at most 9 bound values each).
const UPDATE_ROWS: usize = 128;

struct EventRow {
    idx: usize,
    token_id: TokenId,
    next: i64,
    counter: i64,
    from: TokenState,
    to: TokenState,
    now: i64,
    audit: AuditRecord,
}

struct TimeRow {
    idx: usize,
    token_id: TokenId,
    step: i64,
    offset: i64,
    from: TokenState,
    to: TokenState,
    now: i64,
    audit: AuditRecord,
}

struct FailureRow {
    idx: usize,
    token_id: TokenId,
    state: TokenState,
    seen: Option<Position>,
    threshold: u32,
    now: i64,
    audit: AuditRecord,
}

enum Row {
    Event(EventRow),
    Time(TimeRow),
}

impl Row {
    /// The values of one acceptance; a counter or step beyond SQLite's
    /// integers is the job's own error.
    fn accept(idx: usize, token_id: TokenId, a: &Accept, audit: AuditRecord) -> StoreResult<Row> {
        Ok(match a.acceptance {
            Acceptance::Event { counter } => Row::Event(EventRow {
                idx,
                token_id,
                next: to_i64(counter.saturating_add(1))?,
                counter: to_i64(counter)?,
                from: a.from,
                to: a.to,
                now: a.now,
                audit,
            }),
            Acceptance::Time { step, offset } => Row::Time(TimeRow {
                idx,
                token_id,
                step: to_i64(step)?,
                offset,
                from: a.from,
                to: a.to,
                now: a.now,
                audit,
            }),
        })
    }
}

/// Runs a built statement (not cached: its text depends on the row count)
/// and collects the first column of what it returns.
async fn returned_ids(
    conn: &mut SqliteConnection,
    mut q: QueryBuilder<'_, Sqlite>,
) -> StoreResult<HashSet<String>> {
    let rows: Vec<(String,)> = q
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The conditional writes of event-token acceptances; the IDs of the tokens
/// whose row changed. Only with `moves` (some row's `from` is not its `to`)
/// is the state written; else every row's `to` is its `from`.
async fn accept_events(
    conn: &mut SqliteConnection,
    rows: &[EventRow],
    moves: bool,
) -> StoreResult<HashSet<String>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(if moves {
        "UPDATE tokens SET counter = v.column2, failures = 0, state = v.column3, updated_at = v.column4,
                activated_at = COALESCE(activated_at, v.column4)
         FROM ("
    } else {
        "UPDATE tokens SET counter = v.column2, failures = 0, updated_at = v.column4,
                activated_at = COALESCE(activated_at, v.column4)
         FROM ("
    });
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.token_id.as_str())
            .push_bind(r.next)
            .push_bind(r.to.as_str())
            .push_bind(r.now)
            .push_bind(r.from.as_str())
            .push_bind(r.counter);
    });
    q.push(
        ") AS v
         WHERE tokens.token_id = v.column1 AND tokens.state = v.column5 AND tokens.counter <= v.column6
         RETURNING token_id",
    );
    returned_ids(conn, q).await
}

/// The conditional writes of time-token acceptances; the IDs of the tokens
/// whose row changed. `moves` as for [`accept_events`].
async fn accept_times(
    conn: &mut SqliteConnection,
    rows: &[TimeRow],
    moves: bool,
) -> StoreResult<HashSet<String>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(if moves {
        "UPDATE tokens SET last_step = v.column2, time_offset = v.column3, failures = 0, state = v.column4,
                updated_at = v.column5, activated_at = COALESCE(activated_at, v.column5)
         FROM ("
    } else {
        "UPDATE tokens SET last_step = v.column2, time_offset = v.column3, failures = 0,
                updated_at = v.column5, activated_at = COALESCE(activated_at, v.column5)
         FROM ("
    });
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.token_id.as_str())
            .push_bind(r.step)
            .push_bind(r.offset)
            .push_bind(r.to.as_str())
            .push_bind(r.now)
            .push_bind(r.from.as_str());
    });
    q.push(
        ") AS v
         WHERE tokens.token_id = v.column1 AND tokens.state = v.column6
               AND (tokens.last_step IS NULL OR tokens.last_step < v.column2)
         RETURNING token_id",
    );
    returned_ids(conn, q).await
}

/// Counts one failure of each token still in its job's state, locking it (or
/// discarding a pending one) at the job's threshold; per token that changed,
/// its new failure count and state.
///
/// Two statements, so that the common failure (below the threshold) does
/// not name `state` in its SET and leaves the partial indexes on tokens
/// alone: first the failures below the threshold, then, only for the rows
/// the first did not change (in a round each token is in one row), the ones
/// that lock. No row is counted twice.
async fn count_failures(
    conn: &mut SqliteConnection,
    rows: &[FailureRow],
) -> StoreResult<HashMap<String, (i64, TokenState)>> {
    let mut counted = HashMap::with_capacity(rows.len());
    let mut rest: Vec<&FailureRow> = rows.iter().collect();
    for locks in [false, true] {
        if locks {
            rest.retain(|r| !counted.contains_key(r.token_id.as_str()));
            if rest.is_empty() {
                break;
            }
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(if locks {
            "UPDATE tokens SET failures = failures + 1, updated_at = v.column2, state = v.column4,
                    sealed_secret = CASE WHEN v.column4 = 'revoked' THEN X'' ELSE sealed_secret END
             FROM ("
        } else {
            "UPDATE tokens SET failures = failures + 1, updated_at = v.column2
             FROM ("
        });
        q.push_values(&rest, |mut b, r| {
            let lock_to = if r.state == TokenState::Pending {
                TokenState::Revoked
            } else {
                TokenState::Locked
            };
            b.push_bind(r.token_id.as_str())
                .push_bind(r.now)
                .push_bind(i64::from(r.threshold))
                .push_bind(lock_to.as_str())
                .push_bind(r.state.as_str())
                .push_bind(r.seen.is_some())
                .push_bind(r.seen.map(|p| saturating_i64(p.counter)))
                .push_bind(r.seen.and_then(|p| p.last_step).map(saturating_i64))
                .push_bind(r.seen.map(|p| p.time_offset));
        });
        q.push(
            ") AS v
             WHERE tokens.token_id = v.column1 AND tokens.state = v.column5
                   AND (NOT v.column6 OR (tokens.counter = v.column7
                        AND tokens.last_step IS v.column8 AND tokens.time_offset = v.column9))
                   AND ",
        );
        q.push(if locks {
            "tokens.failures + 1 >= v.column3"
        } else {
            "tokens.failures + 1 < v.column3"
        });
        q.push(" RETURNING token_id, failures, state");
        let changed: Vec<(String, i64, String)> = q
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        counted.extend(counted_rows(changed)?);
    }
    Ok(counted)
}

/// Chains `records` in order after the chain's head, read once, in
/// multi-row inserts. Call inside a write transaction (batches and imports).
pub(super) async fn append_all(
    conn: &mut SqliteConnection,
    records: &[AuditRecord],
) -> StoreResult<()> {
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

#[cfg(test)]
mod tests {
    use ichido_domain::audit::{AuditRecord, GENESIS_HASH};
    use ichido_domain::store::{AuditStore, RowWrite, RowWritten, TokenStore};

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

    /// A decision that panics fails its own job, not the writer: the store
    /// goes on writing, and a decision on a token that does not exist sees
    /// no row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_decision_fails_only_its_own_job() {
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let id = ichido_domain::ids::TokenId::random();
        let panicking = store
            .decide_on_row(&id, Box::new(|_| panic!("a check that breaks")))
            .await;
        assert!(matches!(
            panicking,
            Err(ichido_domain::error::StoreError::Unavailable(_))
        ));
        let (row, written) = store
            .decide_on_row(
                &id,
                Box::new(|row| {
                    assert!(row.is_none());
                    RowWrite::Nothing
                }),
            )
            .await
            .unwrap();
        assert!(row.is_none());
        assert_eq!(written, RowWritten::Nothing);
        let audit = AuditRecord {
            at: 1,
            actor: "test".into(),
            action: "test.append",
            contract_no: None,
            user_id: None,
            token_id: None,
            outcome: "ok".into(),
        };
        let (_, written) = store
            .decide_on_row(&id, Box::new(move |_| RowWrite::Audit(audit)))
            .await
            .unwrap();
        assert_eq!(written, RowWritten::Audit);
        assert_eq!(store.audit_chain(0, 10).await.unwrap().len(), 1);
    }
}
