//! [`TokenStore`] on PostgreSQL: every change is one conditional `UPDATE`, whose
//! row lock decides between concurrent callers; the audit records follow it in
//! the same transaction. Acceptances and failure counts go through the
//! group-commit writers of [`super::batch`].

use async_trait::async_trait;
use ichido_domain::audit::AuditRecord;
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Token, TokenState};
use ichido_domain::store::{
    Accept, FailureCount, Position, RowDecide, RowWritten, StoreResult, TokenChange, TokenStore,
};

use super::{append, lock_user, PgStore};
use crate::rows::{db_err, state_list, to_i64, TokenRow};

fn system_record(
    at: i64,
    action: &'static str,
    t: (&str, &str, &str),
    outcome: String,
) -> AuditRecord {
    AuditRecord {
        at,
        actor: "system".into(),
        action,
        contract_no: Some(t.0.to_owned()),
        user_id: Some(t.1.to_owned()),
        token_id: Some(t.2.to_owned()),
        outcome,
    }
}

#[async_trait]
impl TokenStore for PgStore {
    async fn token(&self, token_id: &TokenId) -> StoreResult<Option<Token>> {
        let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM tokens WHERE token_id = $1")
            .bind(token_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(Token::try_from).transpose()
    }

    async fn user_token(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<Token>> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT * FROM tokens WHERE contract_no = $1 AND user_id = $2 AND state <> 'revoked'",
        )
        .bind(contract_no)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(Token::try_from).transpose()
    }

    async fn insert_token(
        &self,
        t: &Token,
        replace_pending_before: i64,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        lock_user(&mut tx, &t.contract_no, &t.user_id).await?;
        let replaced: Vec<(String,)> = sqlx::query_as(
            "UPDATE tokens SET state = 'revoked', sealed_secret = ''::bytea, updated_at = $1
             WHERE contract_no = $2 AND user_id = $3 AND state = 'pending' AND created_at < $4
             RETURNING token_id",
        )
        .bind(t.created_at)
        .bind(&t.contract_no)
        .bind(&t.user_id)
        .bind(replace_pending_before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO tokens (token_id, contract_no, user_id, kind, state, algorithm, digits, period, counter,
                                 last_step, time_offset, failures, sealed_secret, created_at, activated_at, grace_until, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(t.token_id.as_str())
        .bind(&t.contract_no)
        .bind(&t.user_id)
        .bind(t.kind.as_str())
        .bind(t.state.as_str())
        .bind(t.algorithm.as_str())
        .bind(i64::from(t.digits.get()))
        .bind(i64::from(t.period))
        .bind(to_i64(t.counter)?)
        .bind(t.last_step.map(to_i64).transpose()?)
        .bind(t.time_offset)
        .bind(i64::from(t.failures))
        .bind(&t.sealed_secret)
        .bind(t.created_at)
        .bind(t.activated_at)
        .bind(t.grace_until)
        .bind(t.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut records: Vec<AuditRecord> = replaced
            .iter()
            .map(|(old,)| {
                system_record(
                    t.created_at,
                    "token.discard",
                    (&t.contract_no, &t.user_id, old),
                    "replaced by a new registration".into(),
                )
            })
            .collect();
        records.push(audit);
        append(&mut tx, &records).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn accept(&self, token_id: &TokenId, a: Accept, audit: AuditRecord) -> StoreResult<bool> {
        self.batch.accept(token_id, a, audit).await
    }

    async fn record_failure(
        &self,
        token_id: &TokenId,
        state: TokenState,
        seen: Option<Position>,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<FailureCount>> {
        self.batch
            .record_failure(token_id, state, seen, threshold, now, audit)
            .await
    }

    async fn decide_on_row(
        &self,
        token_id: &TokenId,
        decide: RowDecide,
    ) -> StoreResult<(Option<Token>, RowWritten)> {
        crate::read_then_write(self, token_id, decide).await
    }

    async fn change(
        &self,
        token_id: &TokenId,
        change: TokenChange,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<Token>> {
        let set = match change {
            TokenChange::Suspend { .. } => "state = 'suspended', grace_until = $1",
            TokenChange::Resume => "state = 'active', grace_until = NULL",
            TokenChange::Unlock => "state = 'active', failures = 0",
            TokenChange::Revoke => {
                "state = 'revoked', grace_until = NULL, sealed_secret = ''::bytea"
            }
        };
        // `$1` is bound (as BIGINT) even when the SET list does not use it.
        let sql = format!(
            "UPDATE tokens SET {set}, updated_at = $2 WHERE token_id = $3 AND state IN ({}) RETURNING *",
            state_list(change.from_states())
        );
        let grace = match change {
            TokenChange::Suspend { grace_until } => grace_until,
            _ => None,
        };
        let mut tx = self.write().await?;
        let row: Option<TokenRow> = sqlx::query_as(&sql)
            .bind(grace)
            .bind(now)
            .bind(token_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        };
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Token::try_from(row).map(Some)
    }

    async fn discard_pending(
        &self,
        created_before: i64,
        now: i64,
        actor: &str,
    ) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let gone: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE tokens SET state = 'revoked', sealed_secret = ''::bytea, updated_at = $1
             WHERE state = 'pending' AND created_at < $2
             RETURNING contract_no, user_id, token_id",
        )
        .bind(now)
        .bind(created_before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let records: Vec<AuditRecord> = gone
            .iter()
            .map(|(c, u, t)| {
                let mut r = system_record(
                    now,
                    "token.discard",
                    (c, u, t),
                    "not activated in time".into(),
                );
                r.actor = actor.to_owned();
                r
            })
            .collect();
        append(&mut tx, &records).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(gone.len() as u64)
    }
}
