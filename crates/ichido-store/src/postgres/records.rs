//! [`AuditStore`], [`SessionStore`] and [`TransactionStore`] on PostgreSQL.

use async_trait::async_trait;
use ichido_domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use ichido_domain::model::{Execution, Session, Transaction};
use ichido_domain::store::{AuditStore, SessionStore, StoreResult, TransactionStore};
use sqlx::{Postgres, QueryBuilder};

use super::{append, PgStore};
use crate::rows::{db_err, AuditRow, SessionRow, TransactionRow};

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()> {
        self.batch.append_audit(audit).await
    }

    async fn audit_events(&self, f: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(c) = &f.contract_no {
            q.push(" AND contract_no = ").push_bind(c.clone());
        }
        if let Some(u) = &f.user_id {
            q.push(" AND user_id = ").push_bind(u.clone());
        }
        if let Some(t) = &f.token_id {
            q.push(" AND token_id = ").push_bind(t.clone());
        }
        if let Some(b) = f.before_seq {
            q.push(" AND seq < ").push_bind(b);
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(f.limit));
        let rows: Vec<AuditRow> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> =
            sqlx::query_as("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        id_hash: &[u8; 32],
        se: &Session,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, contract_no, user_id, method, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id_hash[..])
        .bind(&se.contract_no)
        .bind(&se.user_id)
        .bind(se.method.as_str())
        .bind(se.created_at)
        .bind(se.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn touch_session(
        &self,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "UPDATE sessions SET expires_at = $1 WHERE id_hash = $2 AND expires_at > $3
             RETURNING contract_no, user_id, method, created_at, expires_at",
        )
        .bind(expires_at)
        .bind(&id_hash[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(Session::try_from).transpose()
    }

    async fn delete_session(&self, id_hash: &[u8; 32], audit: AuditRecord) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(&id_hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn purge_sessions(&self, now: i64) -> StoreResult<u64> {
        let n = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n)
    }
}

#[async_trait]
impl TransactionStore for PgStore {
    async fn create_transaction(&self, t: &Transaction, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO transactions (id, contract_no, created_by, kind, payee, amount, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.contract_no)
        .bind(&t.created_by)
        .bind(t.kind.as_str())
        .bind(&t.payee)
        .bind(t.amount)
        .bind(t.state.as_str())
        .bind(t.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn transaction(&self, contract_no: &str, id: &str) -> StoreResult<Option<Transaction>> {
        let row: Option<TransactionRow> =
            sqlx::query_as("SELECT * FROM transactions WHERE contract_no = $1 AND id = $2")
                .bind(contract_no)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(Transaction::try_from).transpose()
    }

    async fn transactions(&self, contract_no: &str, limit: u32) -> StoreResult<Vec<Transaction>> {
        let rows: Vec<TransactionRow> = sqlx::query_as(
            "SELECT * FROM transactions WHERE contract_no = $1 ORDER BY created_at DESC, id COLLATE \"C\" LIMIT $2",
        )
        .bind(contract_no)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(Transaction::try_from).collect()
    }

    async fn execute_transaction(
        &self,
        contract_no: &str,
        id: &str,
        approved_by: &str,
        execution: Execution,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let n = sqlx::query(
            "UPDATE transactions SET state = 'executed', approved_by = $1, execution = $2, executed_at = $3
             WHERE contract_no = $4 AND id = $5 AND state = 'pending_approval'",
        )
        .bind(approved_by)
        .bind(execution.as_str())
        .bind(now)
        .bind(contract_no)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if n != 1 {
            tx.rollback().await.map_err(db_err)?;
            return Ok(false);
        }
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}
