//! The operator console's credentials and sessions, SQLite.
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

use super::{append, SqliteStore};
use crate::rows::{corrupt, db_err, to_i64, OperatorRow};

#[async_trait]
impl OperatorConsoleStore for SqliteStore {
    async fn operator(&self, name: &str) -> StoreResult<Option<Operator>> {
        let row: Option<OperatorRow> =
            sqlx::query_as("SELECT name, created_at FROM operators WHERE name = ?")
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
             VALUES (?, ?, ?, NULL, 0, ?)
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
        sqlx::query("DELETE FROM operator_sessions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn operator_credentials(&self, name: &str) -> StoreResult<Option<OperatorCredentials>> {
        let row: Option<(String, String, Vec<u8>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT name, password_hash, sealed_secret, last_step, failures
             FROM operator_credentials WHERE name = ?",
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
             WHERE name = ? AND failures < ?",
        )
        .bind(name)
        .bind(i64::from(threshold))
        .execute(&mut *self.turn().await?)
        .await
        .map_err(db_err)?
        .rows_affected();
        if counted > 0 {
            return Ok(OperatorAttempt::Counted);
        }
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT failures FROM operator_credentials WHERE name = ?")
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
            "UPDATE operator_credentials SET last_step = ?, failures = 0, updated_at = ?
             WHERE name = ? AND (last_step IS NULL OR last_step < ?)",
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
        sqlx::query("DELETE FROM operator_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO operator_sessions (id_hash, name, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&id_hash[..])
        .bind(name)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append(&mut tx, &audit).await?;
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
            "UPDATE operator_sessions SET expires_at = ? WHERE id_hash = ? AND expires_at > ?
             RETURNING name",
        )
        .bind(expires_at)
        .bind(&id_hash[..])
        .bind(now)
        .fetch_optional(&mut *self.turn().await?)
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
        let n = sqlx::query("DELETE FROM operator_sessions WHERE id_hash = ?")
            .bind(&id_hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}

pub(crate) fn credentials(
    (name, password_hash, sealed_secret, last_step, failures): (
        String,
        String,
        Vec<u8>,
        Option<i64>,
        i64,
    ),
) -> StoreResult<OperatorCredentials> {
    Ok(OperatorCredentials {
        name,
        password_hash,
        sealed_secret,
        last_step: last_step
            .map(|s| u64::try_from(s).map_err(|_| corrupt("operator last_step out of range")))
            .transpose()?,
        failures: u32::try_from(failures).map_err(|_| corrupt("operator failures out of range"))?,
    })
}
