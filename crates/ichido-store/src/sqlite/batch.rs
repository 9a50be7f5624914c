//! Group commit of the hot writes: an acceptance is replied to only after the
//! batch that holds it has committed.
//!
//! One thread per store, with a SQLite connection of its own, takes the
//! first queued job, takes the store's write turn (see [`WriteTurn`]),
//! begins one `BEGIN IMMEDIATE` transaction and drains what else is queued
//! (up to [`MAX_BATCH`]). The jobs' conditional `UPDATE`s are set-based: one
//! `UPDATE … FROM (VALUES …)` per kind and round (see [`write`]) whose
//! `WHERE` holds, row by row, exactly the condition of a lone write, so the
//! first of two jobs with one code wins and the second changes no row. The
//! audit records of the jobs that changed a row are chained after the data
//! writes, reading the chain's head once per batch, in the same transaction.
//! Every reply is sent after `COMMIT` has returned; any error fails the whole
//! batch (every job gets `Unavailable`, nothing of the batch is written, no
//! code is spent without its reply).
//!
//! The thread runs the whole batch itself, statement after statement, with
//! its statements prepared once and kept: no hand-off to another thread
//! between them (through the async driver, each statement, the `BEGIN` and
//! the `COMMIT` were a round trip to the connection's own thread, and those
//! wake-ups, not the work, set the pace). The write turn is held only for
//! one batch, so the store's other writes (users, sessions, operators)
//! take their turns in arrival order between batches. The thread ends when
//! the store is closed or the last sender (the last clone of the store) is
//! dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ichido_domain::audit::AuditRecord;
use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Token, TokenState};
use ichido_domain::store::{
    Accept, Acceptance, FailureCount, Position, RowDecide, RowWrite, RowWritten, StoreResult,
};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Statement, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{
    counted_failure, counted_rows, links, lite_err, saturating_i64, to_i64, TokenRow, AUDIT_INSERT,
    CHAIN_HEAD, LITE_TOKENS_BY_NUMBER,
};

/// The most jobs one transaction holds.
pub(super) const MAX_BATCH: usize = 256;
/// Audit rows per INSERT statement (10 bound values each).
const AUDIT_ROWS: usize = 64;
/// Jobs that may wait for the writer thread before callers are held back.
const QUEUE: usize = 4 * MAX_BATCH;
/// Statements the writer keeps prepared: a set-based statement's text
/// depends on its row count, so each kind has one per count seen.
const PREPARED: usize = 1024;

/// The store's write turn: whoever writes to the database file from this
/// process holds it for the length of its transaction — the writer thread
/// per batch, the writer pool's connection per transaction. Waiting is in
/// arrival order (a `tokio` mutex is fair), where SQLite's busy handler
/// would sleep and poll.
pub(super) type WriteTurn = Arc<tokio::sync::Mutex<()>>;

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

/// What the writer thread receives.
// Nearly every message is a job: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Message {
    Job(Job),
    /// Finish what is queued before, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle the store keeps: cloning it shares the one writer thread.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Message>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

impl Batcher {
    /// Starts the writer thread on `conn` (opened on the store's file, its
    /// pragmas set); it writes in `turn`.
    pub(super) fn start(conn: Connection, turn: WriteTurn) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        conn.set_prepared_statement_cache_capacity(PREPARED);
        std::thread::Builder::new()
            .name("ichido-sqlite-writer".into())
            .spawn(move || run(conn, &turn, rx))?;
        Ok(Self { jobs })
    }

    /// Whether the writer thread still takes jobs (it stops when the store
    /// is closed, or if it failed).
    pub(super) fn running(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Runs what is queued, then closes the writer's connection; later jobs
    /// fail as `Unavailable`.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
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
        self.jobs
            .send(Message::Job(job))
            .await
            .map_err(|_| stopped())?;
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

/// The writer thread: one batch per turn until the store closes or every
/// sender is gone.
fn run(mut conn: Connection, turn: &tokio::sync::Mutex<()>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while let Some(first) = rx.blocking_recv() {
        match first {
            Message::Job(job) => batch.push(job),
            Message::Close(done) => {
                closing = Some(done);
                break;
            }
        }
        let started = Instant::now();
        // Waiting for the turn and the lock lets more jobs queue up.
        let held = turn.blocking_lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate);
        let begun = started.elapsed();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Close(done)) => {
                    closing = Some(done);
                    break;
                }
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
        let mut phases = Phases::default();
        let written = match tx {
            Ok(tx) => match write(&tx, works, &mut phases) {
                // Dropping the transaction on an error rolls it back.
                Ok(outcomes) => {
                    wrote = started.elapsed();
                    tx.commit().map_err(lite_err).map(|()| outcomes)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(lite_err(e)),
        };
        drop(held);
        match written {
            Ok(outcomes) => {
                // From the first job's arrival: the turn and the lock taken,
                // the statements run, the commit (WAL append and fsync) done.
                let done = started.elapsed();
                tracing::trace!(
                    jobs = outcomes.len(),
                    micros = done.as_micros(),
                    begin_micros = begun.as_micros(),
                    write_micros = (wrote - begun).as_micros(),
                    read_micros = phases.read.as_micros(),
                    check_micros = phases.check.as_micros(),
                    update_micros = phases.update.as_micros(),
                    audit_micros = phases.audit.as_micros(),
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
        if closing.is_some() {
            break;
        }
    }
    rx.close();
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite writer");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Where a batch's statements spent their time (for the trace line
/// `batch committed`): reading the rows of decisions, deciding on them,
/// the conditional writes, the audit records.
#[derive(Default)]
struct Phases {
    read: Duration,
    check: Duration,
    update: Duration,
    audit: Duration,
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
fn write(
    conn: &Connection,
    works: Vec<Work>,
    phases: &mut Phases,
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
            phases,
        )?;
        let updating = Instant::now();
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
                let won = accept_events(conn, chunk, moves)?;
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
                let won = accept_times(conn, chunk, moves)?;
                settle_accepts(
                    chunk.iter().map(|r| (r.idx, &r.token_id, &r.audit)),
                    &won,
                    &mut outcomes,
                    &mut records,
                );
            }
        }
        for chunk in failures.chunks(UPDATE_ROWS) {
            let counted = count_failures(conn, chunk)?;
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
        phases.update += updating.elapsed();
    }
    let records: Vec<AuditRecord> = records.into_iter().flatten().collect();
    let appending = Instant::now();
    append_all(conn, &records)?;
    phases.audit = appending.elapsed();
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
fn decide_round(
    conn: &Connection,
    jobs: impl Iterator<Item = usize>,
    works: &mut [Option<Work>],
    outcomes: &mut [Option<StoreResult<Outcome>>],
    read: &mut [Option<Option<Token>>],
    phases: &mut Phases,
) -> StoreResult<()> {
    let decisions: Vec<usize> = jobs
        .filter(|&i| matches!(works[i], Some(Work::Decide { .. })))
        .collect();
    if decisions.is_empty() {
        return Ok(());
    }
    let ids = super::reads::json_numbers(decisions.iter().filter_map(|&i| match &works[i] {
        Some(Work::Decide { token_id, .. }) => Some(token_id),
        _ => None,
    }));
    let reading = Instant::now();
    let mut stmt = conn
        .prepare_cached(LITE_TOKENS_BY_NUMBER)
        .map_err(lite_err)?;
    stmt.raw_bind_parameter(1, ids).map_err(lite_err)?;
    let rows = returned(&mut stmt, TokenRow::from_lite)?;
    let mut found: HashMap<String, StoreResult<Token>> = rows
        .into_iter()
        .map(|row| (row.token_id.clone(), Token::try_from(row)))
        .collect();
    let checking = Instant::now();
    phases.read += checking - reading;
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
    phases.check += checking.elapsed();
    Ok(())
}

/// Records the answers of accept jobs: won when the statement changed the
/// token's row (its number came back).
fn settle_accepts<'a>(
    jobs: impl Iterator<Item = (usize, &'a TokenId, &'a AuditRecord)>,
    won: &HashSet<i64>,
    outcomes: &mut [Option<StoreResult<Outcome>>],
    records: &mut [Vec<AuditRecord>],
) {
    for (idx, token_id, audit) in jobs {
        let ok = won.contains(&token_id.number());
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

/// `head`, `VALUES` of `rows` rows of `cols` parameters each, then `tail`.
fn values_sql(head: &str, rows: usize, cols: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    let mut sql = String::with_capacity(head.len() + tail.len() + 16 + rows * (one.len() + 2));
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for n in 0..rows {
        if n > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&one);
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// Binds values to a prepared statement's parameters in order.
struct Binder<'s, 'c> {
    stmt: &'s mut Statement<'c>,
    at: usize,
}

impl<'s, 'c> Binder<'s, 'c> {
    fn new(stmt: &'s mut Statement<'c>) -> Self {
        Self { stmt, at: 0 }
    }

    fn bind(&mut self, value: impl ToSql) -> StoreResult<&mut Self> {
        self.at += 1;
        self.stmt
            .raw_bind_parameter(self.at, value)
            .map_err(lite_err)?;
        Ok(self)
    }
}

/// Runs a statement whose parameters are bound and maps what it returns.
fn returned<T>(
    stmt: &mut Statement<'_>,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(lite_err)? {
        out.push(map(row).map_err(lite_err)?);
    }
    Ok(out)
}

/// The first column of every row returned, as a set of token numbers.
fn returned_numbers(stmt: &mut Statement<'_>) -> StoreResult<HashSet<i64>> {
    Ok(returned(stmt, |r| r.get::<_, i64>(0))?
        .into_iter()
        .collect())
}

/// The conditional writes of event-token acceptances; the numbers of the
/// tokens whose row changed. Only with `moves` (some row's `from` is not its `to`)
/// is the state written; else every row's `to` is its `from`.
fn accept_events(conn: &Connection, rows: &[EventRow], moves: bool) -> StoreResult<HashSet<i64>> {
    let sql = accept_events_sql(rows.len(), moves);
    let mut stmt = conn.prepare_cached(&sql).map_err(lite_err)?;
    let mut b = Binder::new(&mut stmt);
    for r in rows {
        b.bind(r.token_id.number())?
            .bind(r.next)?
            .bind(r.to.as_str())?
            .bind(r.now)?
            .bind(r.from.as_str())?
            .bind(r.counter)?;
    }
    returned_numbers(&mut stmt)
}

/// [`accept_events`]'s statement for `rows` rows.
fn accept_events_sql(rows: usize, moves: bool) -> String {
    values_sql(
        if moves {
            "UPDATE tokens SET counter = v.column2, failures = 0, state = v.column3, updated_at = v.column4,
                    activated_at = COALESCE(activated_at, v.column4)
             FROM ("
        } else {
            "UPDATE tokens SET counter = v.column2, failures = 0, updated_at = v.column4,
                    activated_at = COALESCE(activated_at, v.column4)
             FROM ("
        },
        rows,
        6,
        ") AS v
         WHERE tokens.token_no = v.column1 AND tokens.state = v.column5 AND tokens.counter <= v.column6
         RETURNING token_no",
)
}

/// The conditional writes of time-token acceptances; the numbers of the
/// tokens whose row changed. `moves` as for [`accept_events`].
fn accept_times(conn: &Connection, rows: &[TimeRow], moves: bool) -> StoreResult<HashSet<i64>> {
    let sql = accept_times_sql(rows.len(), moves);
    let mut stmt = conn.prepare_cached(&sql).map_err(lite_err)?;
    let mut b = Binder::new(&mut stmt);
    for r in rows {
        b.bind(r.token_id.number())?
            .bind(r.step)?
            .bind(r.offset)?
            .bind(r.to.as_str())?
            .bind(r.now)?
            .bind(r.from.as_str())?;
    }
    returned_numbers(&mut stmt)
}

/// [`accept_times`]'s statement for `rows` rows.
fn accept_times_sql(rows: usize, moves: bool) -> String {
    values_sql(
        if moves {
            "UPDATE tokens SET last_step = v.column2, time_offset = v.column3, failures = 0, state = v.column4,
                    updated_at = v.column5, activated_at = COALESCE(activated_at, v.column5)
             FROM ("
        } else {
            "UPDATE tokens SET last_step = v.column2, time_offset = v.column3, failures = 0,
                    updated_at = v.column5, activated_at = COALESCE(activated_at, v.column5)
             FROM ("
        },
        rows,
        6,
        ") AS v
         WHERE tokens.token_no = v.column1 AND tokens.state = v.column6
               AND (tokens.last_step IS NULL OR tokens.last_step < v.column2)
         RETURNING token_no",
    )
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
fn count_failures(
    conn: &Connection,
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
        let sql = count_failures_sql(rest.len(), locks);
        let mut stmt = conn.prepare_cached(&sql).map_err(lite_err)?;
        let mut b = Binder::new(&mut stmt);
        for r in &rest {
            let lock_to = if r.state == TokenState::Pending {
                TokenState::Revoked
            } else {
                TokenState::Locked
            };
            b.bind(r.token_id.number())?
                .bind(r.now)?
                .bind(i64::from(r.threshold))?
                .bind(lock_to.as_str())?
                .bind(r.state.as_str())?
                .bind(r.seen.is_some())?
                .bind(r.seen.map(|p| saturating_i64(p.counter)))?
                .bind(r.seen.and_then(|p| p.last_step).map(saturating_i64))?
                .bind(r.seen.map(|p| p.time_offset))?;
        }
        let changed = returned(&mut stmt, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        counted.extend(counted_rows(changed)?);
    }
    Ok(counted)
}

/// [`count_failures`]'s statement for `rows` rows: the failures that
/// lock with `locks`, else those below the threshold.
fn count_failures_sql(rows: usize, locks: bool) -> String {
    values_sql(
        if locks {
            "UPDATE tokens SET failures = failures + 1, updated_at = v.column2, state = v.column4,
                    sealed_secret = CASE WHEN v.column4 = 'revoked' THEN X'' ELSE sealed_secret END
             FROM ("
        } else {
            "UPDATE tokens SET failures = failures + 1, updated_at = v.column2
             FROM ("
        },
        rows,
        9,
        if locks {
            ") AS v
             WHERE tokens.token_no = v.column1 AND tokens.state = v.column5
                   AND (NOT v.column6 OR (tokens.counter = v.column7
                        AND tokens.last_step IS v.column8 AND tokens.time_offset = v.column9))
                   AND tokens.failures + 1 >= v.column3
             RETURNING token_id, failures, state"
        } else {
            ") AS v
             WHERE tokens.token_no = v.column1 AND tokens.state = v.column5
                   AND (NOT v.column6 OR (tokens.counter = v.column7
                        AND tokens.last_step IS v.column8 AND tokens.time_offset = v.column9))
                   AND tokens.failures + 1 < v.column3
             RETURNING token_id, failures, state"
        },
    )
}

/// Chains `records` in order after the chain's head, read once, in
/// multi-row inserts. Call inside the batch's transaction.
fn append_all(conn: &Connection, records: &[AuditRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> = conn
        .prepare_cached(CHAIN_HEAD)
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(lite_err)?;
    let links = links(records, head);
    for (chunk, links) in records.chunks(AUDIT_ROWS).zip(links.chunks(AUDIT_ROWS)) {
        let sql = values_sql(AUDIT_INSERT, chunk.len(), 10, "");
        let mut stmt = conn.prepare_cached(&sql).map_err(lite_err)?;
        let mut b = Binder::new(&mut stmt);
        for (r, l) in chunk.iter().zip(links) {
            b.bind(l.seq)?
                .bind(r.at)?
                .bind(r.actor.as_str())?
                .bind(r.action)?
                .bind(r.contract_no.as_deref())?
                .bind(r.user_id.as_deref())?
                .bind(r.token_id.as_deref())?
                .bind(r.outcome.as_str())?
                .bind(l.prev_hash.as_str())?
                .bind(l.hash.as_str())?;
        }
        stmt.raw_execute().map_err(lite_err)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use ichido_domain::audit::{AuditRecord, GENESIS_HASH};
    use ichido_domain::store::{AuditStore, RowWrite, RowWritten, TokenStore};

    use crate::{SqliteStore, StoreOptions};

    /// An audit record of no contract, user or token, by actor `test`.
    pub(in crate::sqlite) fn plain_record(at: i64, action: &'static str) -> AuditRecord {
        AuditRecord {
            at,
            actor: "test".into(),
            action,
            contract_no: None,
            user_id: None,
            token_id: None,
            outcome: format!("n{at}"),
        }
    }

    /// Every statement that finds a token by its ID finds its row by the
    /// ID's number, the table's integer key: one search of the table's
    /// B-tree per token, never a scan and never another index.
    #[tokio::test]
    async fn tokens_are_found_by_number_with_one_search() {
        use ichido_domain::store::TokenChange;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let store = SqliteStore::open(
            &format!("sqlite://{}", path.display()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut statements = vec![crate::rows::LITE_TOKENS_BY_NUMBER.to_owned()];
        for rows in [1, 2, super::UPDATE_ROWS] {
            for flag in [false, true] {
                statements.push(super::accept_events_sql(rows, flag));
                statements.push(super::accept_times_sql(rows, flag));
                statements.push(super::count_failures_sql(rows, flag));
            }
        }
        for change in [
            TokenChange::Suspend { grace_until: None },
            TokenChange::Resume,
            TokenChange::Unlock,
            TokenChange::Revoke,
        ] {
            statements.push(super::super::change_sql(&change));
        }
        for sql in &statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // The parameters stay unbound (NULL): the plan does not depend on them.
            let plan = super::returned(&mut stmt, |r| r.get::<_, String>(3)).unwrap();
            let on_tokens: Vec<&String> = plan
                .iter()
                .filter(|d| d.split_whitespace().nth(1) == Some("tokens"))
                .collect();
            assert_eq!(on_tokens.len(), 1, "{sql}\n{plan:#?}");
            assert!(
                on_tokens[0].starts_with("SEARCH tokens USING INTEGER PRIMARY KEY"),
                "{sql}\n{plan:#?}"
            );
        }
        store.close().await;
    }

    /// Many concurrent appends share batches; the chain stays contiguous and
    /// linked, and readers are not starved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_keep_the_chain() {
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let r = plain_record(i, "test.append");
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

    /// The writer thread and the writer pool take turns on one file: with
    /// batches running all along, the pool's transactions (a contract
    /// created) go through, and the audit chain both extend stays
    /// contiguous and linked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_and_other_writes_take_turns_on_one_chain() {
        use ichido_domain::model::Contract;
        use ichido_domain::store::DirectoryStore;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("turns.db").display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..240 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 4 == 0 {
                    let c = Contract {
                        contract_no: format!("c{i}"),
                        name: "turns".into(),
                        created_at: i,
                    };
                    store
                        .create_contract(&c, plain_record(i, "contract.create"))
                        .await
                        .unwrap();
                } else {
                    store
                        .append_audit(plain_record(i, "test.append"))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let chain = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(chain.len(), 240);
        assert_eq!(
            chain
                .iter()
                .filter(|e| e.action == "contract.create")
                .count(),
            60
        );
        let mut prev = GENESIS_HASH.to_owned();
        for (n, e) in chain.iter().enumerate() {
            assert_eq!(e.seq, n as i64 + 1);
            assert_eq!(e.prev_hash, prev);
            prev.clone_from(&e.hash);
        }
        store.close().await;
    }

    /// A closed store's writer answers every job as unavailable, and the
    /// store's health check says so (a readiness probe then takes the
    /// instance out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_writer_fails_its_jobs_and_the_health_check() {
        use ichido_domain::store::HealthStore;
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        store.ping().await.unwrap();
        store.batch.close().await;
        let audit = plain_record(1, "test.append");
        assert!(matches!(
            store.append_audit(audit).await,
            Err(ichido_domain::error::StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.ping().await,
            Err(ichido_domain::error::StoreError::Unavailable(_))
        ));
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
        let audit = plain_record(1, "test.append");
        let (_, written) = store
            .decide_on_row(&id, Box::new(move |_| RowWrite::Audit(audit)))
            .await
            .unwrap();
        assert_eq!(written, RowWritten::Audit);
        assert_eq!(store.audit_chain(0, 10).await.unwrap().len(), 1);
    }
}
