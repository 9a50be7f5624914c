//! Token reads by id, gathered: the requests that queue while a read runs are
//! answered together by the next one, one `SELECT … WHERE token_no IN (…)`.
//!
//! Every request that misses the validation fast path reads its token (with
//! a million tokens, nearly every request). One read per request costs two
//! thread hand-offs (the runtime to the SQLite connection's thread and back)
//! and a fresh walk from the root of the token table, because SQLite
//! discards a reader connection's page cache whenever another connection has
//! committed. One statement for many ids shares the hand-offs and the upper
//! B-tree pages among them.
//!
//! A read starts after each of its requests was queued, so each request sees
//! every write committed before it was made, as a lone read would; a request
//! never waits for more than the read before it. At most [`PARALLEL`] reads
//! run at once (never more than the pool's connections); when they are all
//! busy, the queue is the batch.

use std::collections::HashMap;
use std::sync::Arc;

use ichido_domain::error::StoreError;
use ichido_domain::ids::TokenId;
use ichido_domain::model::Token;
use ichido_domain::store::StoreResult;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::rows::{db_err, TokenRow, LITE_TOKENS_BY_NUMBER};

/// The most ids one read asks for.
const MAX_IDS: usize = 256;
/// Reads that may run at once.
const PARALLEL: u32 = 2;
/// Requests that may wait before callers are held back.
const QUEUE: usize = 4 * MAX_IDS;

struct Request {
    token_id: TokenId,
    reply: oneshot::Sender<StoreResult<Option<Token>>>,
}

/// The handle the store keeps: cloning it shares the one dispatching task.
#[derive(Clone)]
pub(super) struct TokenReads {
    requests: mpsc::Sender<Request>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite token reader has stopped".into())
}

impl TokenReads {
    /// Starts the dispatching task on the current runtime; it reads through
    /// `pool`, which has `connections` connections.
    pub(super) fn start(pool: SqlitePool, connections: u32) -> Self {
        let (requests, rx) = mpsc::channel(QUEUE);
        let parallel = PARALLEL.min(connections).max(1);
        tokio::spawn(run(pool, rx, parallel as usize));
        Self { requests }
    }

    /// The token `token_id` as last committed, if it exists.
    pub(super) async fn get(&self, token_id: &TokenId) -> StoreResult<Option<Token>> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            token_id: token_id.clone(),
            reply,
        };
        self.requests.send(request).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Takes the first queued request, waits for a free read (more queue
/// meanwhile), then hands everything queued to that read. Ends when the last
/// handle is dropped.
async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Request>, parallel: usize) {
    let free = Arc::new(Semaphore::new(parallel));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = free.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_IDS {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            read(&pool, batch).await;
            drop(permit);
        });
    }
}

/// The numbers of `ids` (see [`TokenId::number`]) as a JSON array, for
/// `json_each`: SQLite keeps a token's row under its number, so
/// `token_no IN (SELECT value FROM json_each(?))` is one search of the
/// table per ID.
pub(super) fn json_numbers<'a>(ids: impl Iterator<Item = &'a TokenId>) -> String {
    use std::fmt::Write;
    let mut json = String::with_capacity(64);
    json.push('[');
    for (i, id) in ids.enumerate() {
        if i > 0 {
            json.push(',');
        }
        // Writing to a String does not fail.
        let _ = write!(json, "{}", id.number());
    }
    json.push(']');
    json
}

/// One statement for every id of `batch`; each request gets its row (a
/// duplicate id gets a copy), or the read's error.
async fn read(pool: &SqlitePool, batch: Vec<Request>) {
    let started = std::time::Instant::now();
    let ids = json_numbers(batch.iter().map(|r| &r.token_id));
    let rows: Result<Vec<TokenRow>, _> = sqlx::query_as(LITE_TOKENS_BY_NUMBER)
        .bind(ids)
        .fetch_all(pool)
        .await;
    tracing::trace!(
        ids = batch.len(),
        micros = started.elapsed().as_micros(),
        "tokens read"
    );
    match rows {
        Ok(rows) => {
            let found: HashMap<String, StoreResult<Token>> = rows
                .into_iter()
                .map(|row| (row.token_id.clone(), Token::try_from(row)))
                .collect();
            for r in batch {
                let answer = match found.get(r.token_id.as_str()) {
                    None => Ok(None),
                    Some(Ok(t)) => Ok(Some(t.clone())),
                    Some(Err(e)) => Err(e.clone()),
                };
                let _ = r.reply.send(answer);
            }
        }
        Err(e) => {
            let e = db_err(e);
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}
