//! The operator console's credentials and sessions, PostgreSQL.
//!
//! Invariant: a console code's time step is accepted by one conditional
//! `UPDATE … WHERE last_step IS NULL OR last_step < ?`, in the transaction that
//! opens the session, so one code opens at most one session.

use async_trait::async_trait;
use ichido_domain::audit::AuditRecord;
use ichido_domain::model::Operator;
use ichido_domain::store::{
    OperatorAttempt, OperatorConsoleStore, OperatorCredentials, StoreResult,
};

use super::{append, PgStore};
use crate::rows::{db_err, to_i64, OperatorRow};
use crate::sqlite::operators::credentials;

#[async_trait]
impl OperatorConsoleStore for PgStore {
    async fn operator(&self, name: &str) -> StoreResult<Option<Operator>> {
        let row: Option<OperatorRow> =
            sqlx::query_as("SELECT name, created_at FROM operators WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map(Operator::from))
    }

    async fn set_operator_credentials(
        &self,
        name: &str,
        password_hash: &str,
        sealed_secret: &[u8],
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO operator_credentials (name, password_hash, sealed_secret, last_step, failures, updated_at)
             VALUES ($1, $2, $3, NULL, 0, $4)
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,
                 sealed_secret = excluded.sealed_secret, last_step = NULL, failures = 0,
                 updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(password_hash)
        .bind(sealed_secret)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM operator_sessions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn operator_credentials(&self, name: &str) -> StoreResult<Option<OperatorCredentials>> {
        let row: Option<(String, String, Vec<u8>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT name, password_hash, sealed_secret, last_step, failures
             FROM operator_credentials WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(credentials).transpose()
    }

    async fn operator_attempt(&self, name: &str, threshold: u32) -> StoreResult<OperatorAttempt> {
        let counted = sqlx::query(
            "UPDATE operator_credentials SET failures = failures + 1
             WHERE name = $1 AND failures < $2",
        )
        .bind(name)
        .bind(i64::from(threshold))
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        if counted > 0 {
            return Ok(OperatorAttempt::Counted);
        }
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT failures FROM operator_credentials WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(match exists {
            Some(_) => OperatorAttempt::Locked,
            None => OperatorAttempt::Unknown,
        })
    }

    async fn operator_sign_in(
        &self,
        name: &str,
        step: u64,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let step = to_i64(step)?;
        let mut tx = self.write().await?;
        let won = sqlx::query(
            "UPDATE operator_credentials SET last_step = $1, failures = 0, updated_at = $2
             WHERE name = $3 AND (last_step IS NULL OR last_step < $4)",
        )
        .bind(step)
        .bind(now)
        .bind(name)
        .bind(step)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected()
            == 1;
        if !won {
            tx.rollback().await.map_err(db_err)?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM operator_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO operator_sessions (id_hash, name, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id_hash[..])
        .bind(name)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn touch_operator_session(
        &self,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE operator_sessions SET expires_at = $1 WHERE id_hash = $2 AND expires_at > $3
             RETURNING name",
        )
        .bind(expires_at)
        .bind(&id_hash[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }

    async fn delete_operator_session(
        &self,
        id_hash: &[u8; 32],
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM operator_sessions WHERE id_hash = $1")
            .bind(&id_hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}
