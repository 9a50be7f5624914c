//! The PostgreSQL store: the same schema and semantics as the SQLite store, for
//! several server instances sharing one database.
//!
//! Invariants, as in SQLite: every state change commits together with its audit
//! record; a code is accepted by one conditional `UPDATE … WHERE counter <= $n`
//! (event) or `… WHERE (last_step IS NULL OR last_step < $n)` (time), so the row
//! lock taken by the first writer makes every later one change nothing.
//!
//! The audit hash chain is one chain whatever the number of instances: each
//! writing transaction takes `pg_advisory_xact_lock(AUDIT_LOCK, hashtext(current_schema()))`
//! right before it reads the last record and inserts the next ones (see
//! [`append`]). The lock is released by the commit, after the new rows are
//! visible. Keying it by schema keeps separate deployments (or test schemas) in
//! one database from queueing behind each other. Data writes come *before* the
//! lock and nothing but audit inserts follow it, so a transaction never waits for
//! a row while holding the lock: no deadlock, and the lock is held only for the
//! append and the commit.
//!
//! Schemas: [`PgStore::open`] honours the URL's own `?options=-csearch_path%3D…`
//! (native to sqlx); [`PgStore::open_in_schema`] creates a schema if missing and
//! sets `search_path` on every pooled connection (used by the tests).

mod batch;
mod import;
mod operators;
mod records;
mod tokens;

use std::str::FromStr;

use async_trait::async_trait;
use ichido_domain::audit::AuditRecord;
use ichido_domain::model::{Contract, Operator, User};
use ichido_domain::store::{
    DirectoryStore, HealthStore, MetaStore, PasswordLockStore, StoreResult,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder};

use crate::rows::{db_err, links, ContractRow, OperatorRow, UserRow, AUDIT_INSERT, CHAIN_HEAD};
use crate::{OpenError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// First key of the audit chain's advisory lock ("ichi" in ASCII); the second is
/// the hash of the schema. Two-key advisory locks never collide with sqlx's
/// one-key migration lock.
const AUDIT_LOCK: i32 = 0x6963_6869;
/// Audit rows per INSERT statement (10 bound values each).
const AUDIT_ROWS: usize = 64;
/// First key of the per-user registration lock ("reg" in ASCII).
const REGISTER_LOCK: i32 = 0x0072_6567;

/// PostgreSQL implementation of the domain's store traits.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The group-commit writers of acceptances, failure counts and lone
    /// audit records (see [`batch`]).
    batch: batch::Batcher,
}

impl PgStore {
    /// Opens `url` (`postgres://…` or `postgresql://…`) and applies the
    /// migrations. sqlx's migrator holds an advisory lock while it runs, so
    /// instances starting together are safe.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self, OpenError> {
        let connect = connect_options(url)?;
        Self::open_with(connect, opts).await
    }

    /// Opens `url` with every connection's `search_path` set to `schema`, creating
    /// the schema if missing. `schema` must be a plain lower-case identifier.
    pub async fn open_in_schema(
        url: &str,
        schema: &str,
        opts: &StoreOptions,
    ) -> Result<Self, OpenError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(OpenError::Connect(format!(
                "invalid schema name {schema:?}: use lower-case letters, digits and _"
            )));
        }
        let base = connect_options(url)?;
        let mut conn = PgConnection::connect_with(&base)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await;
        // Two instances creating the schema at once: one of them sees a duplicate.
        if let Err(e) = created {
            let duplicate = matches!(&e, sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("42P06" | "23505")));
            if !duplicate {
                return Err(OpenError::Connect(e.to_string()));
            }
        }
        conn.close()
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        Self::open_with(base.options([("search_path", schema)]), opts).await
    }

    async fn open_with(connect: PgConnectOptions, opts: &StoreOptions) -> Result<Self, OpenError> {
        let timeout_ms = opts.statement_timeout.as_millis().max(1);
        let connect = connect.options([("statement_timeout", format!("{timeout_ms}ms"))]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .idle_timeout(std::time::Duration::from_secs(600))
            .max_lifetime(std::time::Duration::from_secs(1800))
            .connect_with(connect)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        let batch = batch::Batcher::start(pool.clone());
        Ok(Self { pool, batch })
    }

    async fn write(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, OpenError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| OpenError::Connect(crate::redact_url(&e.to_string())))
}

/// Appends `records`, in order, to the audit chain. Call inside a write
/// transaction after its data writes: it takes the chain's advisory lock, which
/// the commit releases.
async fn append(conn: &mut PgConnection, records: &[AuditRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let head: Option<(i64, String)> = sqlx::query_as(CHAIN_HEAD)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let links = links(records, head);
    // One multi-row INSERT per chunk: one round trip instead of one per record.
    for (chunk, links) in records.chunks(AUDIT_ROWS).zip(links.chunks(AUDIT_ROWS)) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(AUDIT_INSERT);
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

/// Serialises registrations of one user (across instances) for the rest of the
/// transaction, so that replacing a pending token and inserting the new one is
/// atomic, as SQLite's single writer makes it.
async fn lock_user(conn: &mut PgConnection, contract_no: &str, user_id: &str) -> StoreResult<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || $2 || '/' || $3))",
    )
    .bind(REGISTER_LOCK)
    .bind(contract_no)
    .bind(user_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl DirectoryStore for PgStore {
    async fn create_operator(
        &self,
        op: &Operator,
        key_hash: &[u8; 32],
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO operators (name, key_hash, created_at) VALUES ($1, $2, $3)")
            .bind(&op.name)
            .bind(&key_hash[..])
            .bind(op.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn operator_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Operator>> {
        let row: Option<OperatorRow> =
            sqlx::query_as("SELECT name, created_at FROM operators WHERE key_hash = $1")
                .bind(&key_hash[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map(Operator::from))
    }

    async fn create_contract(&self, c: &Contract, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO contracts (contract_no, name, created_at) VALUES ($1, $2, $3)")
            .bind(&c.contract_no)
            .bind(&c.name)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn contract(&self, contract_no: &str) -> StoreResult<Option<Contract>> {
        let row: Option<ContractRow> = sqlx::query_as(
            "SELECT contract_no, name, created_at FROM contracts WHERE contract_no = $1",
        )
        .bind(contract_no)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(Contract::from))
    }

    async fn create_user(&self, u: &User, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO users (contract_no, user_id, name, role, login_hash, transaction_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.contract_no)
        .bind(&u.user_id)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(&u.login_hash)
        .bind(&u.transaction_hash)
        .bind(u.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn user(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT * FROM users WHERE contract_no = $1 AND user_id = $2")
                .bind(contract_no)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(User::try_from).transpose()
    }
}

#[async_trait]
impl PasswordLockStore for PgStore {
    async fn password_locked(&self, contract_no: &str, user_id: &str) -> StoreResult<bool> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT locked_at FROM password_lockouts WHERE contract_no = $1 AND user_id = $2",
        )
        .bind(contract_no)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(matches!(row, Some((Some(_),))))
    }

    async fn password_attempt(
        &self,
        contract_no: &str,
        user_id: &str,
        threshold: u32,
    ) -> StoreResult<bool> {
        let (failures, locked_at): (i64, Option<i64>) = sqlx::query_as(
            "INSERT INTO password_lockouts (contract_no, user_id, failures) VALUES ($1, $2, 1)
             ON CONFLICT (contract_no, user_id) DO UPDATE SET failures = password_lockouts.failures + 1
             RETURNING failures, locked_at",
        )
        .bind(contract_no)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(locked_at.is_none() && failures <= i64::from(threshold))
    }

    async fn password_failure(
        &self,
        contract_no: &str,
        user_id: &str,
        threshold: u32,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        // One conditional write decides who locks: concurrent failures of one
        // user wait on the row and then find it locked already.
        let newly = sqlx::query(
            "UPDATE password_lockouts SET locked_at = $1
             WHERE contract_no = $2 AND user_id = $3 AND locked_at IS NULL AND failures >= $4",
        )
        .bind(now)
        .bind(contract_no)
        .bind(user_id)
        .bind(i64::from(threshold))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected()
            == 1;
        let locked = if newly {
            true
        } else {
            let row: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT locked_at FROM password_lockouts WHERE contract_no = $1 AND user_id = $2",
            )
            .bind(contract_no)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            matches!(row, Some((Some(_),)))
        };
        let mut records = vec![audit];
        if newly {
            records.push(AuditRecord {
                at: now,
                actor: "system".into(),
                action: "user.lock",
                contract_no: Some(contract_no.to_owned()),
                user_id: Some(user_id.to_owned()),
                token_id: None,
                outcome: format!("locked after {threshold} wrong passwords"),
            });
        }
        append(&mut tx, &records).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(locked)
    }

    async fn password_success(&self, contract_no: &str, user_id: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM password_lockouts WHERE contract_no = $1 AND user_id = $2 AND locked_at IS NULL",
        )
        .bind(contract_no)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn password_unlock(
        &self,
        contract_no: &str,
        user_id: &str,
        audit: AuditRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let n =
            sqlx::query("DELETE FROM password_lockouts WHERE contract_no = $1 AND user_id = $2")
                .bind(contract_no)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        append(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}

#[async_trait]
impl MetaStore for PgStore {
    async fn meta_init(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let (v,): (String,) = sqlx::query_as("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(v)
    }
}

#[async_trait]
impl HealthStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ichido_domain::error::StoreError;

    use super::*;

    /// The tests' server (see `tests/services/harness.rs`), or `None` to skip.
    async fn server() -> Option<String> {
        let url = std::env::var("ICHIDO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let reachable = match PgConnectOptions::from_str(&url) {
            Ok(o) => PgConnection::connect_with(&o).await.is_ok(),
            Err(_) => false,
        };
        if reachable {
            return Some(url);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL does not answer at {}",
            crate::redact_url(&url)
        );
        eprintln!("\n!!!!!!!!!! SKIPPED: PostgreSQL does not answer !!!!!!!!!!\n");
        None
    }

    #[tokio::test]
    async fn connections_get_the_schema_and_the_statement_timeout() {
        let Some(url) = server().await else { return };
        let schema = format!("ichido_unit_{}", std::process::id());
        let opts = StoreOptions {
            statement_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        };
        let store = PgStore::open_in_schema(&url, &schema, &opts).await.unwrap();
        let (path,): (String,) = sqlx::query_as("SHOW search_path")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let (timeout,): (String,) = sqlx::query_as("SHOW statement_timeout")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        // A statement over the timeout is cancelled: the store is unavailable.
        let slow = sqlx::query("SELECT pg_sleep(2)")
            .execute(&store.pool)
            .await
            .map_err(db_err);
        let bad_name = PgStore::open_in_schema(&url, "x; DROP", &opts).await;
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        assert_eq!(path, schema);
        assert_eq!(timeout, "300ms");
        assert!(matches!(slow, Err(StoreError::Unavailable(_))), "{slow:?}");
        assert!(matches!(bad_name, Err(OpenError::Connect(_))));
    }
}
