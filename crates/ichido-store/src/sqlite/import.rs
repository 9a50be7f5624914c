//! [`ImportStore`] on SQLite: a bulk import is one `BEGIN IMMEDIATE`
//! transaction of multi-row inserts (users, then tokens, then the audit
//! records chained after the last one), all or nothing.
//!
//! Invariant: an existing user or a taken token ID changes nothing: the insert
//! `… ON CONFLICT DO NOTHING RETURNING` shows which row was left out, the
//! transaction is rolled back and the first such record is named.

use std::collections::HashSet;

use async_trait::async_trait;
use ichido_domain::audit::AuditRecord;
use ichido_domain::model::Token;
use ichido_domain::store::{ImportConflict, ImportRecord, ImportStore, StoreResult};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::rows::{db_err, links, to_i64, AUDIT_INSERT, CHAIN_HEAD};

/// Rows per statement: 18 columns × 256 stays far below SQLite's 32766 variables.
const ROWS: usize = 256;

#[async_trait]
impl ImportStore for SqliteStore {
    async fn import(
        &self,
        records: &[ImportRecord],
        audit: &[AuditRecord],
    ) -> StoreResult<Result<(), ImportConflict>> {
        let mut tx = self.write().await?;
        let conflict = match insert_users(&mut tx, records).await? {
            Some(c) => Some(c),
            None => insert_tokens(&mut tx, records).await?,
        };
        if let Some(c) = conflict {
            tx.rollback().await.map_err(db_err)?;
            return Ok(Err(c));
        }
        append_all(&mut tx, audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }
}

/// Inserts the users; the index of the first one that exists already, if any.
async fn insert_users(
    conn: &mut SqliteConnection,
    records: &[ImportRecord],
) -> StoreResult<Option<ImportConflict>> {
    for (n, chunk) in records.chunks(ROWS).enumerate() {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO users (contract_no, user_id, name, role, login_hash, transaction_hash, created_at) ",
        );
        q.push_values(chunk, |mut b, r| {
            let u = &r.user;
            b.push_bind(&u.contract_no)
                .push_bind(&u.user_id)
                .push_bind(&u.name)
                .push_bind(u.role.as_str())
                .push_bind(&u.login_hash)
                .push_bind(&u.transaction_hash)
                .push_bind(u.created_at);
        });
        q.push(" ON CONFLICT (contract_no, user_id) DO NOTHING RETURNING contract_no, user_id");
        let inserted: Vec<(String, String)> = q
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        if inserted.len() < chunk.len() {
            let inserted: HashSet<(&str, &str)> = inserted
                .iter()
                .map(|(c, u)| (c.as_str(), u.as_str()))
                .collect();
            let missing = chunk.iter().position(|r| {
                !inserted.contains(&(r.user.contract_no.as_str(), r.user.user_id.as_str()))
            });
            return Ok(Some(ImportConflict::UserExists(
                n * ROWS + missing.unwrap_or(0),
            )));
        }
    }
    Ok(None)
}

/// Inserts the tokens; the index of the first record whose token ID is taken.
async fn insert_tokens(
    conn: &mut SqliteConnection,
    records: &[ImportRecord],
) -> StoreResult<Option<ImportConflict>> {
    let tokens: Vec<(usize, &Token)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.token.as_ref().map(|t| (i, t)))
        .collect();
    for chunk in tokens.chunks(ROWS) {
        let mut rows = Vec::with_capacity(chunk.len());
        for (_, t) in chunk {
            rows.push((t, to_i64(t.counter)?, t.last_step.map(to_i64).transpose()?));
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO tokens (token_no, token_id, contract_no, user_id, kind, state, algorithm, digits, period, counter,
                                 last_step, time_offset, failures, sealed_secret, created_at, activated_at, grace_until, updated_at) ",
        );
        q.push_values(&rows, |mut b, (t, counter, last_step)| {
            b.push_bind(t.token_id.number())
                .push_bind(t.token_id.as_str())
                .push_bind(&t.contract_no)
                .push_bind(&t.user_id)
                .push_bind(t.kind.as_str())
                .push_bind(t.state.as_str())
                .push_bind(t.algorithm.as_str())
                .push_bind(i64::from(t.digits.get()))
                .push_bind(i64::from(t.period))
                .push_bind(*counter)
                .push_bind(*last_step)
                .push_bind(t.time_offset)
                .push_bind(i64::from(t.failures))
                .push_bind(&t.sealed_secret)
                .push_bind(t.created_at)
                .push_bind(t.activated_at)
                .push_bind(t.grace_until)
                .push_bind(t.updated_at);
        });
        // A token's number is its ID's (see migration 0006): a taken number
        // is a taken ID.
        q.push(" ON CONFLICT (token_no) DO NOTHING RETURNING token_id");
        let inserted: Vec<(String,)> = q
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        if inserted.len() < chunk.len() {
            let inserted: HashSet<&str> = inserted.iter().map(|(id,)| id.as_str()).collect();
            let missing = chunk
                .iter()
                .find(|(_, t)| !inserted.contains(t.token_id.as_str()))
                .map_or(0, |(i, _)| *i);
            return Ok(Some(ImportConflict::TokenIdTaken(missing)));
        }
    }
    Ok(None)
}

/// Chains `records` in order after the chain's head, read once, in
/// multi-row inserts, inside the import's transaction.
async fn append_all(conn: &mut SqliteConnection, records: &[AuditRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> = sqlx::query_as(CHAIN_HEAD)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let links = links(records, head);
    for (chunk, links) in records.chunks(ROWS).zip(links.chunks(ROWS)) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(AUDIT_INSERT);
        q.push(" ");
        q.push_values(chunk.iter().zip(links), |mut row, (r, l)| {
            row.push_bind(l.seq)
                .push_bind(r.at)
                .push_bind(r.actor.as_str())
                .push_bind(r.action)
                .push_bind(r.contract_no.as_deref())
                .push_bind(r.user_id.as_deref())
                .push_bind(r.token_id.as_deref())
                .push_bind(r.outcome.as_str())
                .push_bind(l.prev_hash.as_str())
                .push_bind(l.hash.as_str());
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
