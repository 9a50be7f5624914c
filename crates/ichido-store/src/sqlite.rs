//! The SQLite store: WAL, `synchronous=FULL`, every write in a `BEGIN IMMEDIATE`
//! transaction together with its audit record; an acceptance is replied to only
//! after the batch that holds it has committed (group commit, see `batch`).
//!
//! Invariant: a code is accepted by one conditional `UPDATE … WHERE counter <= ?`
//! (event) or `… WHERE last_step < ?` (time); a second request with the same code
//! changes no row and is told so.

mod auditindex;
mod batch;
mod checkpoint;
mod import;
pub(crate) mod operators;
mod priority;
mod reads;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use ichido_domain::audit::{AuditEvent, AuditFilter, AuditRecord, GENESIS_HASH};
use ichido_domain::ids::TokenId;
use ichido_domain::model::{
    Contract, Execution, Operator, Session, Token, TokenState, Transaction, User,
};
use ichido_domain::store::{
    Accept, AuditStore, DirectoryStore, FailureCount, HealthStore, MetaStore, PasswordLockStore,
    Position, RowDecide, RowWritten, SessionStore, StoreResult, TokenChange, TokenStore,
    TransactionStore,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use crate::rows::{
    db_err, state_list, to_i64, AuditRow, ContractRow, OperatorRow, SessionRow, TokenRow,
    TransactionRow, UserRow,
};
use crate::{OpenError, StoreOptions};

/// The page size of a new database file: 1 KiB, not SQLite's 4 KiB. A
/// validation changes one token row (about 200 bytes) at a random place in
/// the table, and every page it dirties is written whole to the WAL at the
/// batch's commit and again into the database at the checkpoint: with a
/// million tokens nearly every acceptance dirties a page of its own. Smaller
/// pages write a quarter of the bytes per acceptance (a million tokens:
/// +13% validations/s in alternating runs; see docs/performance.md). The
/// audit index's file has a page size of its own (see
/// `auditindex::INDEX_PAGE_SIZE`). An existing file keeps the page size it
/// was created with.
const PAGE_SIZE: u32 = 1024;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite implementation of the domain's store traits.
///
/// Acceptances, failures and lone audit records are group-committed by a
/// writer thread with a connection of its own (see [`batch`]); every other
/// write goes through a pool of one connection. Both write in the store's
/// write turn ([`batch::WriteTurn`]): SQLite has one writer anyway, and
/// queueing in-process is fair and fast where SQLite's busy handler would
/// sleep. Other processes on the same file are still held off by
/// `BEGIN IMMEDIATE` and the busy timeout.
///
/// `sqlite::memory:` opens a throwaway store: a database file of its own in
/// a private temporary directory, removed with the last clone of the store,
/// written without `fsync` (it is never read again). It runs the same code
/// as a file store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    /// Taken by every write of this process to the file (see [`batch::WriteTurn`]).
    turn: batch::WriteTurn,
    /// Acceptances, failures and lone audit records: group-committed by the
    /// writer thread (see [`batch`]).
    batch: batch::Batcher,
    /// Token reads by id, gathered into one statement (see [`reads`]).
    reads: reads::TokenReads,
    /// The connection that files the audit index (see [`auditindex`]).
    filer: SqlitePool,
    /// The connection that merges the index's runs, at the lowest CPU
    /// priority (see [`priority`]).
    merger: SqlitePool,
    /// Held while any clone of the store lives; the filer stops without it.
    _filing: tokio::sync::mpsc::Sender<()>,
    /// The connection of the background WAL checkpoints (see
    /// [`checkpoint`]), and what keeps them running.
    checkpoints: (SqlitePool, tokio::sync::mpsc::Sender<()>),
    /// A throwaway store's directory, removed when the last clone goes.
    _throwaway: Option<Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens `url` (`sqlite://FILE`, `sqlite::memory:`), creating the file if
    /// missing, and applies the migrations.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self, OpenError> {
        Self::open_filing(url, opts, true).await
    }

    /// [`Self::open`]; with `filing` false the audit index is filed only when
    /// asked (tests that look at an index as they left it).
    async fn open_filing(url: &str, opts: &StoreOptions, filing: bool) -> Result<Self, OpenError> {
        let throwaway = url.contains(":memory:") || url.contains("mode=memory");
        let (connect, dir) = if throwaway {
            let dir = tempfile::Builder::new()
                .prefix("ichido-throwaway-")
                .tempdir()
                .map_err(|e| {
                    OpenError::Connect(format!("cannot create a throwaway store's directory: {e}"))
                })?;
            let file = dir.path().join("ichido.db");
            (
                SqliteConnectOptions::new().filename(file),
                Some(Arc::new(dir)),
            )
        } else {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| OpenError::Connect(e.to_string()))?;
            (connect, None)
        };
        let synchronous = if throwaway {
            SqliteSynchronous::Off
        } else {
            SqliteSynchronous::Full
        };
        let connect = connect
            .create_if_missing(true)
            // Only a new database takes it (see [`PAGE_SIZE`]).
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true);
        create_private(connect.get_filename())
            .map_err(|e| OpenError::Connect(format!("cannot create the database file: {e}")))?;
        let pool_options = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                // A local SQLite connection does not go stale like a
                // network one; a ping before every acquire is a round trip
                // to the connection's thread.
                .test_before_acquire(false)
                .idle_timeout(std::time::Duration::from_secs(600))
                .max_lifetime(std::time::Duration::from_secs(1800))
                .acquire_timeout(opts.connect_timeout)
        };
        // The audit index: a file of its own beside the store's, attached
        // to the connections that read or file it.
        let index_file = auditindex::path_of(connect.get_filename());
        let writer = pool_options(1)
            .connect_with(
                connect
                    .clone()
                    .pragma("wal_autocheckpoint", checkpoint::WRITER_LIMIT),
            )
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        auditindex::prepare(&connect, &index_file)
            .await
            .map_err(|e| OpenError::Connect(format!("cannot open the audit index file: {e}")))?;
        // The index's filer and merger: a connection each, on a thread of
        // its own name. The merger's thread runs at the lowest priority
        // (see [`priority`]): merging runs must not take the writer's turn
        // on the CPU.
        let index_pool = |role, thread: &'static str| {
            pool_options(1)
                .after_connect(auditindex::attacher(index_file.clone(), role))
                .connect_with(connect.clone().thread_name(move |_| thread.to_owned()))
        };
        let filer = index_pool(auditindex::Role::Filer, priority::FILER_THREAD)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let merger = index_pool(auditindex::Role::Merger, priority::MERGER_THREAD)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let pool = pool_options(opts.max_connections.max(1))
            .after_connect(auditindex::attacher(index_file, auditindex::Role::Reader))
            .connect_with(connect.clone())
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let turn = batch::WriteTurn::default();
        let batch = batch::Batcher::start(
            open_writer(connect.get_filename(), synchronous, opts)
                .map_err(|e| OpenError::Connect(format!("cannot open the writer: {e}")))?,
            turn.clone(),
        )
        .map_err(|e| OpenError::Connect(format!("cannot start the writer thread: {e}")))?;
        let reads = reads::TokenReads::start(pool.clone(), opts.max_connections.max(1));
        let _filing = auditindex::start(filer.clone(), merger.clone(), filing);
        let checkpoints = {
            // The checkpoints' connection thread runs below the writer's
            // priority (see [`priority::CHECKPOINT_NICE`]).
            let pool = pool_options(1)
                .after_connect(|_, _| {
                    Box::pin(async {
                        priority::lower_or_warn(
                            priority::CHECKPOINT_THREAD,
                            priority::CHECKPOINT_NICE,
                        );
                        Ok(())
                    })
                })
                .connect_with(connect.thread_name(|_| priority::CHECKPOINT_THREAD.to_owned()))
                .await
                .map_err(|e| OpenError::Connect(e.to_string()))?;
            let keep = checkpoint::start(pool.clone());
            (pool, keep)
        };
        Ok(Self {
            pool,
            writer,
            turn,
            batch,
            reads,
            filer,
            merger,
            _filing,
            checkpoints,
            _throwaway: dir,
        })
    }

    /// Closes every connection to the database (of this store and its
    /// clones), after copying the WAL into the file. Waits for queries under
    /// way; later calls on the store fail.
    pub async fn close(&self) {
        self.batch.close().await;
        // Everything into the file first, so that nothing is left for the
        // closing connections to copy.
        let checkpointed = match self.turn().await {
            Ok(mut conn) => sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(db_err),
            Err(e) => Err(e),
        };
        if let Err(e) = checkpointed {
            tracing::debug!(error = %e, "checkpoint before close");
        }
        self.checkpoints.0.close().await;
        self.filer.close().await;
        self.merger.close().await;
        self.pool.close().await;
        self.writer.close().await;
    }

    /// A transaction on the writer pool's connection, in the write turn.
    async fn write(&self) -> StoreResult<WriteTx> {
        let turn = self.turn.clone().lock_owned().await;
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        Ok(InTurn {
            conn: tx,
            _turn: turn,
        })
    }

    /// The writer pool's connection, in the write turn: for a write that is
    /// one statement.
    async fn turn(&self) -> StoreResult<Turn> {
        let turn = self.turn.clone().lock_owned().await;
        let conn = self.writer.acquire().await.map_err(db_err)?;
        Ok(InTurn { conn, _turn: turn })
    }
}

/// A connection of the writer pool (`PoolConnection`) or a transaction on
/// it (`Transaction`), holding the store's write turn until it is dropped
/// (a transaction dropped uncommitted rolls back).
struct InTurn<C> {
    conn: C,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// A write transaction in the write turn.
type WriteTx = InTurn<sqlx::Transaction<'static, Sqlite>>;
/// The writer pool's connection in the write turn.
type Turn = InTurn<sqlx::pool::PoolConnection<Sqlite>>;

impl WriteTx {
    async fn commit(self) -> sqlx::Result<()> {
        self.conn.commit().await
    }

    async fn rollback(self) -> sqlx::Result<()> {
        self.conn.rollback().await
    }
}

impl<C: std::ops::Deref<Target = SqliteConnection>> std::ops::Deref for InTurn<C> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl<C: std::ops::DerefMut<Target = SqliteConnection>> std::ops::DerefMut for InTurn<C> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// Opens the writer thread's connection on `file` (created and migrated
/// already), with the writer pool's settings.
fn open_writer(
    file: &std::path::Path,
    synchronous: SqliteSynchronous,
    opts: &StoreOptions,
) -> Result<rusqlite::Connection, String> {
    use rusqlite::OpenFlags;
    let err = |e: rusqlite::Error| e.to_string();
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(opts.busy_timeout).map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("the database is in journal mode {mode}, not WAL"));
    }
    conn.pragma_update(
        None,
        "synchronous",
        match synchronous {
            SqliteSynchronous::Off => "OFF",
            _ => "FULL",
        },
    )
    .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_LIMIT)
        .map_err(err)?;
    Ok(conn)
}

/// Creates a missing database file readable by its owner alone (0600): it
/// holds password hashes and sealed secrets. SQLite gives its `-wal` and
/// `-shm` files the mode of the database file. An existing file is left as
/// it is (its owner chose its mode).
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() || path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        // Another instance created it first: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends one audit record, chained to the last one. Call inside a write transaction.
async fn append(conn: &mut SqliteConnection, r: &AuditRecord) -> StoreResult<()> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let hash = r.hash_after(&prev, seq);
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, action, contract_no, user_id, token_id, outcome, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(r.at)
    .bind(&r.actor)
    .bind(r.action)
    .bind(&r.contract_no)
    .bind(&r.user_id)
    .bind(&r.token_id)
    .bind(&r.outcome)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

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
impl DirectoryStore for SqliteStore {
    async fn create_operator(
        &self,
        op: &Operator,
        key_hash: &[u8; 32],
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO operators (name, key_hash, created_at) VALUES (?, ?, ?)")
            .bind(&op.name)
            .bind(&key_hash[..])
            .bind(op.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn operator_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Operator>> {
        let row: Option<OperatorRow> =
            sqlx::query_as("SELECT name, created_at FROM operators WHERE key_hash = ?")
                .bind(&key_hash[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map(Operator::from))
    }

    async fn create_contract(&self, c: &Contract, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO contracts (contract_no, name, created_at) VALUES (?, ?, ?)")
            .bind(&c.contract_no)
            .bind(&c.name)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn contract(&self, contract_no: &str) -> StoreResult<Option<Contract>> {
        let row: Option<ContractRow> = sqlx::query_as(
            "SELECT contract_no, name, created_at FROM contracts WHERE contract_no = ?",
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
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn user(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT * FROM users WHERE contract_no = ? AND user_id = ?")
                .bind(contract_no)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(User::try_from).transpose()
    }
}

#[async_trait]
impl PasswordLockStore for SqliteStore {
    async fn password_locked(&self, contract_no: &str, user_id: &str) -> StoreResult<bool> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT locked_at FROM password_lockouts WHERE contract_no = ? AND user_id = ?",
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
            "INSERT INTO password_lockouts (contract_no, user_id, failures) VALUES (?, ?, 1)
             ON CONFLICT (contract_no, user_id) DO UPDATE SET failures = password_lockouts.failures + 1
             RETURNING failures, locked_at",
        )
        .bind(contract_no)
        .bind(user_id)
        .fetch_one(&mut *self.turn().await?)
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
        let before: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT failures, locked_at FROM password_lockouts WHERE contract_no = ? AND user_id = ?")
                .bind(contract_no)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        append(&mut tx, &audit).await?;
        let locked = match before {
            Some((_, Some(_))) => true,
            Some((failures, None)) if failures >= i64::from(threshold) => {
                sqlx::query("UPDATE password_lockouts SET locked_at = ? WHERE contract_no = ? AND user_id = ?")
                    .bind(now)
                    .bind(contract_no)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let lock = AuditRecord {
                    at: now,
                    actor: "system".into(),
                    action: "user.lock",
                    contract_no: Some(contract_no.to_owned()),
                    user_id: Some(user_id.to_owned()),
                    token_id: None,
                    outcome: format!("locked after {threshold} wrong passwords"),
                };
                append(&mut tx, &lock).await?;
                true
            }
            _ => false,
        };
        tx.commit().await.map_err(db_err)?;
        Ok(locked)
    }

    async fn password_success(&self, contract_no: &str, user_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM password_lockouts WHERE contract_no = ? AND user_id = ? AND locked_at IS NULL")
            .bind(contract_no)
            .bind(user_id)
            .execute(&mut *self.turn().await?)
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
        let n = sqlx::query("DELETE FROM password_lockouts WHERE contract_no = ? AND user_id = ?")
            .bind(contract_no)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn token(&self, token_id: &TokenId) -> StoreResult<Option<Token>> {
        self.reads.get(token_id).await
    }

    async fn user_token(&self, contract_no: &str, user_id: &str) -> StoreResult<Option<Token>> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT * FROM tokens WHERE contract_no = ? AND user_id = ? AND state <> 'revoked'",
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
        let replaced: Vec<(String,)> = sqlx::query_as(
            "UPDATE tokens SET state = 'revoked', sealed_secret = X'', updated_at = ?
             WHERE contract_no = ? AND user_id = ? AND state = 'pending' AND created_at < ?
             RETURNING token_id",
        )
        .bind(t.created_at)
        .bind(&t.contract_no)
        .bind(&t.user_id)
        .bind(replace_pending_before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for (old,) in &replaced {
            let r = system_record(
                t.created_at,
                "token.discard",
                (&t.contract_no, &t.user_id, old),
                "replaced by a new registration".into(),
            );
            append(&mut tx, &r).await?;
        }
        sqlx::query(
            "INSERT INTO tokens (token_no, token_id, contract_no, user_id, kind, state, algorithm, digits, period, counter,
                                 last_step, time_offset, failures, sealed_secret, created_at, activated_at, grace_until, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.token_id.number())
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
        append(&mut tx, &audit).await?;
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
        self.batch.decide_on_row(token_id, decide).await
    }

    async fn change(
        &self,
        token_id: &TokenId,
        change: TokenChange,
        now: i64,
        audit: AuditRecord,
    ) -> StoreResult<Option<Token>> {
        let sql = change_sql(&change);
        let grace = match change {
            TokenChange::Suspend { grace_until } => grace_until,
            _ => None,
        };
        let mut tx = self.write().await?;
        let row: Option<TokenRow> = sqlx::query_as(&sql)
            .bind(grace)
            .bind(now)
            .bind(token_id.number())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        };
        append(&mut tx, &audit).await?;
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
            "UPDATE tokens SET state = 'revoked', sealed_secret = X'', updated_at = ?
             WHERE state = 'pending' AND created_at < ? RETURNING contract_no, user_id, token_id",
        )
        .bind(now)
        .bind(created_before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for (c, u, t) in &gone {
            let mut r = system_record(
                now,
                "token.discard",
                (c, u, t),
                "not activated in time".into(),
            );
            r.actor = actor.to_owned();
            append(&mut tx, &r).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(gone.len() as u64)
    }
}

/// [`TokenStore::change`]'s statement: `?1` the grace end (for a
/// suspension), `?2` the time, `?3` the token's number.
fn change_sql(change: &TokenChange) -> String {
    let set = match change {
        TokenChange::Suspend { .. } => "state = 'suspended', grace_until = ?1",
        TokenChange::Resume => "state = 'active', grace_until = NULL",
        TokenChange::Unlock => "state = 'active', failures = 0",
        TokenChange::Revoke => "state = 'revoked', grace_until = NULL, sealed_secret = X''",
    };
    format!(
        "UPDATE tokens SET {set}, updated_at = ?2 WHERE token_no = ?3 AND state IN ({}) RETURNING *",
        state_list(change.from_states())
    )
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, audit: AuditRecord) -> StoreResult<()> {
        self.batch.append_audit(audit).await
    }

    /// The log's newest event less the index's trusted `upto` (the whole
    /// log when the index does not match it).
    async fn audit_index_lag(&self) -> StoreResult<Option<u64>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let upto = auditindex::trusted_upto(&mut conn).await?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(Some(
            u64::try_from(newest.saturating_sub(upto)).unwrap_or(0),
        ))
    }

    /// Events after the audit index's trusted `upto` are found in the tail
    /// of the log (a range of the primary key), older ones through a
    /// reference table of the index when the filter has a key for one (see
    /// [`auditindex`]); both in one read transaction.
    async fn audit_events(&self, f: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        /// The conditions of `f` on the events' columns, `e.` prefixed.
        fn filters<'a>(q: &mut QueryBuilder<'a, Sqlite>, f: &'a AuditFilter) {
            if let Some(c) = &f.contract_no {
                q.push(" AND e.contract_no = ").push_bind(c.as_str());
            }
            if let Some(u) = &f.user_id {
                q.push(" AND e.user_id = ").push_bind(u.as_str());
            }
            if let Some(t) = &f.token_id {
                q.push(" AND e.token_id = ").push_bind(t.as_str());
            }
            if let Some(b) = f.before_seq {
                q.push(" AND e.seq < ").push_bind(b);
            }
        }
        let limit = i64::from(f.limit);
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let upto: i64 = match (&f.contract_no, &f.token_id) {
            (None, None) => i64::MIN,
            _ => auditindex::trusted_upto(&mut tx).await?,
        };
        // The tail (or, with no key to look up, the whole log).
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT e.* FROM audit_events AS e WHERE e.seq > ");
        q.push_bind(upto);
        filters(&mut q, f);
        q.push(" ORDER BY e.seq DESC LIMIT ").push_bind(limit);
        let mut rows: Vec<AuditRow> = q
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let rest = limit - i64::try_from(rows.len()).unwrap_or(limit);
        if upto > i64::MIN && rest > 0 {
            // The references before runs, then every run's (see
            // [`auditindex`]), each by a seek of its key.
            let (before_runs, runs, keys) = match (&f.contract_no, &f.user_id, &f.token_id) {
                (Some(c), Some(u), _) => (
                    "audit_user_refs",
                    "audit_user_run_refs",
                    vec![("contract_no", c), ("user_id", u)],
                ),
                (_, _, Some(t)) => (
                    "audit_token_refs",
                    "audit_token_run_refs",
                    vec![("token_id", t)],
                ),
                (Some(c), _, None) => (
                    "audit_user_refs",
                    "audit_user_run_refs",
                    vec![("contract_no", c)],
                ),
                // Not reached: `upto` is read only with a key to look up.
                (None, _, None) => return Ok(rows.into_iter().map(AuditEvent::from).collect()),
            };
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT e.* FROM (");
            for table in [before_runs, runs] {
                if table == runs {
                    q.push(" UNION ALL ");
                }
                q.push("SELECT seq FROM idx.")
                    .push(table)
                    .push(" WHERE seq <= ");
                q.push_bind(upto);
                if table == runs {
                    q.push(" AND run IN (SELECT run FROM idx.audit_runs)");
                }
                for (column, value) in &keys {
                    q.push(" AND ")
                        .push(column)
                        .push(" = ")
                        .push_bind(value.as_str());
                }
            }
            q.push(") AS r JOIN audit_events AS e ON e.seq = r.seq WHERE 1");
            filters(&mut q, f);
            q.push(" ORDER BY r.seq DESC LIMIT ").push_bind(rest);
            let older: Vec<AuditRow> = q
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            rows.extend(older);
        }
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> =
            sqlx::query_as("SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        id_hash: &[u8; 32],
        se: &Session,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, contract_no, user_id, method, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
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
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn touch_session(
        &self,
        id_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "UPDATE sessions SET expires_at = ? WHERE id_hash = ? AND expires_at > ?
             RETURNING contract_no, user_id, method, created_at, expires_at",
        )
        .bind(expires_at)
        .bind(&id_hash[..])
        .bind(now)
        .fetch_optional(&mut *self.turn().await?)
        .await
        .map_err(db_err)?;
        row.map(Session::try_from).transpose()
    }

    async fn delete_session(&self, id_hash: &[u8; 32], audit: AuditRecord) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(&id_hash[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn purge_sessions(&self, now: i64) -> StoreResult<u64> {
        let n = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *self.turn().await?)
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n)
    }
}

#[async_trait]
impl TransactionStore for SqliteStore {
    async fn create_transaction(&self, t: &Transaction, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO transactions (id, contract_no, created_by, kind, payee, amount, state, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn transaction(&self, contract_no: &str, id: &str) -> StoreResult<Option<Transaction>> {
        let row: Option<TransactionRow> =
            sqlx::query_as("SELECT * FROM transactions WHERE contract_no = ? AND id = ?")
                .bind(contract_no)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(Transaction::try_from).transpose()
    }

    async fn transactions(&self, contract_no: &str, limit: u32) -> StoreResult<Vec<Transaction>> {
        let rows: Vec<TransactionRow> = sqlx::query_as(
            "SELECT * FROM transactions WHERE contract_no = ? ORDER BY created_at DESC, id LIMIT ?",
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
            "UPDATE transactions SET state = 'executed', approved_by = ?, execution = ?, executed_at = ?
             WHERE contract_no = ? AND id = ? AND state = 'pending_approval'",
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
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn meta_init(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let (v,): (String,) = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(v)
    }
}

#[async_trait]
impl HealthStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // Without its writer the store can read but accept no code.
        if !self.batch.running() {
            return Err(ichido_domain::error::StoreError::Unavailable(
                "the SQLite writer has stopped".into(),
            ));
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

/// Files the whole audit log into the index now, as the filer does in the
/// background (tests).
#[cfg(test)]
impl SqliteStore {
    async fn file_index(&self) {
        auditindex::file_all(&self.filer, &self.merger)
            .await
            .expect("the audit index files");
    }
}

#[cfg(test)]
mod upgrade_tests;

#[cfg(test)]
mod audit_ref_tests {
    use ichido_domain::audit::{AuditEvent, AuditFilter, AuditRecord};
    use ichido_domain::store::AuditStore;

    use crate::{SqliteStore, StoreOptions};

    fn record(i: usize) -> AuditRecord {
        let contract = ["C1", "C2"][i % 2];
        AuditRecord {
            at: i64::try_from(i).unwrap(),
            actor: "test".into(),
            action: "token.validate",
            // Some events of a contract alone, some of nobody.
            contract_no: (!i.is_multiple_of(7)).then(|| contract.to_owned()),
            user_id: (!i.is_multiple_of(5) && !i.is_multiple_of(7)).then(|| format!("u{}", i % 3)),
            token_id: (!i.is_multiple_of(4) && !i.is_multiple_of(7)).then(|| format!("T{}", i % 3)),
            outcome: "ok".into(),
        }
    }

    /// A store on the file `name` in `dir` whose audit index is filed only
    /// when the test calls [`SqliteStore::file_index`].
    async fn unfiled_store(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join(name).display());
        SqliteStore::open_filing(&url, &StoreOptions::default(), false)
            .await
            .unwrap()
    }

    /// How far the audit index says it has filed.
    async fn filed_upto(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT upto FROM idx.audit_index_state")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// The sequence numbers the store's look-up answers for `f`.
    async fn looked_up(store: &SqliteStore, f: &AuditFilter) -> Vec<i64> {
        let events = store.audit_events(f).await.unwrap();
        events.iter().map(|e| e.seq).collect()
    }

    /// The sequence numbers filtering the log `all` (oldest first) gives
    /// for `f`: newest first, at most `f.limit`.
    fn filtered(all: &[AuditEvent], f: &AuditFilter) -> Vec<i64> {
        all.iter()
            .rev()
            .filter(|e| {
                (f.contract_no.is_none() || e.contract_no == f.contract_no)
                    && (f.user_id.is_none() || e.user_id == f.user_id)
                    && (f.token_id.is_none() || e.token_id == f.token_id)
                    && f.before_seq.is_none_or(|b| e.seq < b)
            })
            .take(f.limit as usize)
            .map(|e| e.seq)
            .collect()
    }

    /// Every filter shape, page and limit answers exactly what filtering the
    /// whole log (`all`, oldest first) gives.
    async fn assert_lookups_match(store: &SqliteStore, all: &[AuditEvent]) {
        let s = |v: &str| Some(v.to_owned());
        let filters = [
            (None, None, None),
            (s("C1"), None, None),
            (s("C2"), s("u1"), None),
            (None, None, s("T2")),
            (None, s("u1"), None),
            (s("C1"), s("u2"), s("T2")),
            (s("C1"), None, s("T1")),
        ];
        for (contract_no, user_id, token_id) in filters {
            for before_seq in [None, Some(50), Some(30), Some(10)] {
                for limit in [1u32, 4, 100] {
                    let f = AuditFilter {
                        contract_no: contract_no.clone(),
                        user_id: user_id.clone(),
                        token_id: token_id.clone(),
                        before_seq,
                        limit,
                    };
                    let (got, want) = (looked_up(store, &f).await, filtered(all, &f));
                    assert_eq!(got, want, "{f:?}");
                }
            }
        }
    }

    /// Look-ups by contract, user and token answer the same whether the
    /// events are in the reference tables, in the tail after them, or both,
    /// across pages.
    #[tokio::test]
    async fn indexed_and_tail_events_are_found_alike() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        for i in 1..=60 {
            store.append_audit(record(i)).await.unwrap();
            if i == 25 || i == 40 {
                store.file_index().await;
            }
        }
        let all = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(all.len(), 60);
        assert_lookups_match(&store, &all).await;
    }

    /// The lag is the log's events the index has yet to file: all of them
    /// before filing, none after, the new ones after more are appended.
    #[tokio::test]
    async fn the_index_lag_counts_the_events_not_yet_filed() {
        let dir = tempfile::tempdir().unwrap();
        let store = unfiled_store(&dir, "lag.db").await;
        assert_eq!(store.audit_index_lag().await.unwrap(), Some(0));
        for i in 1..=12 {
            store.append_audit(record(i)).await.unwrap();
        }
        assert_eq!(store.audit_index_lag().await.unwrap(), Some(12));
        store.file_index().await;
        assert_eq!(store.audit_index_lag().await.unwrap(), Some(0));
        for i in 13..=15 {
            store.append_audit(record(i)).await.unwrap();
        }
        assert_eq!(store.audit_index_lag().await.unwrap(), Some(3));
        store.close().await;
    }

    /// Filed event by event, the index is many small runs, merged as they
    /// come: few remain, they hold every reference once, and look-ups
    /// answer alike. References filed before runs (in the tables of the
    /// index's first form) are found beside them.
    #[tokio::test]
    async fn runs_are_merged_and_references_from_before_runs_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = unfiled_store(&dir, "a.db").await;
        for i in 1..=30 {
            store.append_audit(record(i)).await.unwrap();
        }
        // An index filed up to 30 before runs.
        sqlx::query(
            "INSERT INTO idx.audit_user_refs (contract_no, user_id, seq)
             SELECT contract_no, COALESCE(user_id, ''), seq FROM audit_events WHERE contract_no IS NOT NULL;
             INSERT INTO idx.audit_token_refs (token_id, seq)
             SELECT token_id, seq FROM audit_events WHERE token_id IS NOT NULL;
             INSERT INTO idx.audit_index_state (id, upto, upto_hash)
             SELECT 1, seq, hash FROM audit_events WHERE seq = 30",
        )
        .execute(&store.filer)
        .await
        .unwrap();
        let count = |sql: &'static str| {
            let pool = store.filer.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        for i in 31..=130 {
            store.append_audit(record(i)).await.unwrap();
            store.file_index().await;
        }
        assert_eq!(filed_upto(&store).await, 130);
        let all = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(all.len(), 130);
        let refs = |with: fn(&AuditEvent) -> bool| {
            i64::try_from(all[30..].iter().filter(|e| with(e)).count()).unwrap()
        };
        let (user_refs, token_refs) = (
            refs(|e| e.contract_no.is_some()),
            refs(|e| e.token_id.is_some()),
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM idx.audit_user_run_refs").await,
            user_refs
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM idx.audit_token_run_refs").await,
            token_refs
        );
        assert_eq!(
            count("SELECT SUM(refs) FROM idx.audit_runs").await,
            user_refs + token_refs
        );
        // Every run listed holds references, and none is left unlisted.
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM (SELECT run FROM idx.audit_user_run_refs
                 UNION SELECT run FROM idx.audit_token_run_refs)"
            )
            .await,
            count("SELECT COUNT(*) FROM idx.audit_runs").await
        );
        // 100 filings of one event (1 or 2 references each) leave runs of
        // fewer than 8 of each size.
        let runs = count("SELECT COUNT(*) FROM idx.audit_runs").await;
        assert!((2..=14).contains(&runs), "{runs} runs");
        assert_lookups_match(&store, &all).await;
        // A rebuild empties the tables of before runs too.
        sqlx::query("UPDATE idx.audit_index_state SET upto_hash = 'other'")
            .execute(&store.filer)
            .await
            .unwrap();
        store.file_index().await;
        assert_eq!(count("SELECT COUNT(*) FROM idx.audit_user_refs").await, 0);
        assert_eq!(filed_upto(&store).await, 130);
        assert_lookups_match(&store, &all).await;
    }

    /// Look-ups made while the filer files and merges runs answer exactly
    /// what the log holds: a merge moves references from runs into one in
    /// a single transaction of the index, and a reader sees the runs either
    /// before or after it, never both or neither.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_answer_exactly_while_runs_are_filed_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = unfiled_store(&dir, "a.db").await;
        for i in 1..=150 {
            store.append_audit(record(i)).await.unwrap();
            if i % 3 == 0 {
                store.file_index().await;
            }
        }
        let before = store.audit_chain(0, 1000).await.unwrap();
        let filing = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 151..=400 {
                    store.append_audit(record(i)).await.unwrap();
                    store.file_index().await;
                }
            })
        };
        let s = |v: &str| Some(v.to_owned());
        let mut rounds = 0;
        while !filing.is_finished() {
            for (contract_no, user_id, token_id) in [
                (s("C1"), None, None),
                (s("C2"), s("u1"), None),
                (None, None, s("T2")),
            ] {
                // Events before 151 are all in the log from the start;
                // their references move between runs as runs are merged.
                let f = AuditFilter {
                    contract_no,
                    user_id,
                    token_id,
                    before_seq: Some(151),
                    limit: 1000,
                };
                let (got, want) = (looked_up(&store, &f).await, filtered(&before, &f));
                assert_eq!(got, want, "{f:?} in round {rounds}");
            }
            rounds += 1;
        }
        filing.await.unwrap();
        assert!(
            rounds > 1,
            "the look-ups ran while filing ({rounds} rounds)"
        );
        let all = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(all.len(), 400);
        assert_lookups_match(&store, &all).await;
    }

    /// A database made before the audit index (migrations 0001–0003, events
    /// in its log) is upgraded on open: look-ups answer from the log at
    /// once, its events are filed into the index file, and look-ups answer
    /// alike after that, also for events appended later.
    #[tokio::test]
    async fn an_existing_log_is_filed_by_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let (url, pool) = super::upgrade_tests::old_database(&dir, "0004").await;
        for i in 1..=40 {
            let r = record(i);
            sqlx::query(
                "INSERT INTO audit_events (seq, at, actor, action, contract_no, user_id, token_id, outcome, prev_hash, hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'p', 'h')",
            )
            .bind(i64::try_from(i).unwrap())
            .bind(r.at)
            .bind(r.actor)
            .bind(r.action)
            .bind(r.contract_no)
            .bind(r.user_id)
            .bind(r.token_id)
            .bind(r.outcome)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let old_log = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(old_log.len(), 40);
        assert_lookups_match(&store, &old_log).await;
        store.file_index().await;
        let upto = filed_upto(&store).await;
        assert_eq!(upto, 40, "the existing log is filed");
        assert!(dir.path().join("old.db-audit-index").exists());
        for i in 41..=60 {
            store.append_audit(record(i)).await.unwrap();
        }
        let all = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(all.len(), 60);
        assert_lookups_match(&store, &all).await;
    }

    /// The index is never trusted beyond the log it was filed from: after
    /// the database is restored from an older copy and takes other events
    /// under the same sequence numbers, look-ups still answer what the log
    /// holds, and the filer rebuilds the index from it. A damaged index
    /// file is replaced on open.
    #[tokio::test]
    async fn an_index_of_another_history_is_not_used_and_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let url = format!("sqlite://{}", db.display());
        let opts = StoreOptions::default();
        let open = || SqliteStore::open(&url, &opts);
        let store = open().await.unwrap();
        for i in 1..=20 {
            store.append_audit(record(i)).await.unwrap();
        }
        let backup = dir.path().join("backup.db");
        sqlx::query("VACUUM INTO ?")
            .bind(backup.to_string_lossy().into_owned())
            .execute(&store.writer)
            .await
            .unwrap();
        for i in 21..=40 {
            store.append_audit(record(i)).await.unwrap();
        }
        store.file_index().await;
        store.close().await;
        drop(store);

        // The last connection to close removes the WAL (its threads may
        // still be closing when `close` returns).
        let wal = dir.path().join("a.db-wal");
        for _ in 0..500 {
            if !wal.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!wal.exists(), "the store's connections are closed");
        // Restore the copy of 20 events; the index (filed to 40) stays.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("a.db{suffix}")));
        }
        std::fs::copy(&backup, &db).unwrap();
        let store = SqliteStore::open_filing(&url, &opts, false).await.unwrap();
        // Other events under sequence numbers 21..=45.
        for i in 1021..=1045 {
            store.append_audit(record(i)).await.unwrap();
        }
        let all = store.audit_chain(0, 1000).await.unwrap();
        assert_eq!(all.len(), 45);
        assert_lookups_match(&store, &all).await;
        store.file_index().await;
        let upto = filed_upto(&store).await;
        assert_eq!(upto, 45, "rebuilt from the restored log");
        assert_lookups_match(&store, &all).await;
        store.close().await;
        drop(store);

        // A damaged index file: replaced on open, rebuilt, found alike.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("a.db-audit-index{suffix}")));
        }
        std::fs::write(dir.path().join("a.db-audit-index"), vec![0x5a; 8192]).unwrap();
        let store = open().await.unwrap();
        store.file_index().await;
        assert_lookups_match(&store, &all).await;
    }

    /// A merge reads and writes the index alone: while its transaction is
    /// open, the store's WAL can still be checkpointed to its end and reset.
    /// (With `json_each`, which belongs to `main`, in its deletes, a merge
    /// held a read of the store's file for its whole length, seconds, and
    /// the store's WAL grew behind the writer meanwhile.)
    #[tokio::test]
    async fn a_merge_holds_no_read_of_the_store_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = unfiled_store(&dir, "merge.db").await;
        // Eight runs of one reference each, as eight filings leave them.
        let mut setup = store.merger.acquire().await.unwrap();
        for run in 1..=8i64 {
            sqlx::query("INSERT INTO idx.audit_runs (run, refs) VALUES (?, 1)")
                .bind(run)
                .execute(&mut *setup)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO idx.audit_token_run_refs (run, token_id, seq) VALUES (?, 'T1', ?)",
            )
            .bind(run)
            .bind(1000 + run)
            .execute(&mut *setup)
            .await
            .unwrap();
        }
        drop(setup);

        let mut merging = store.merger.acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *merging).await.unwrap();
        let merged = super::auditindex::merge_in(&mut merging).await.unwrap();
        assert_eq!(merged, Some((8, 8)));
        // The merge's transaction is open; the store's file takes a write,
        // and a checkpoint that waits for every reader of the store's WAL
        // succeeds (retried: the background checkpoints may hold it a moment;
        // each try waits up to the busy timeout for readers).
        store.append_audit(record(1)).await.unwrap();
        let mut busy = 1;
        for _ in 0..5 {
            let (b, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA main.wal_checkpoint(TRUNCATE)")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            busy = b;
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(busy, 0, "the merge holds a read of the store's file");
        sqlx::query("COMMIT").execute(&mut *merging).await.unwrap();
        drop(merging);
        let runs: Vec<(i64, i64)> = sqlx::query_as("SELECT run, refs FROM idx.audit_runs")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(runs, vec![(9, 8)]);
        store.close().await;
    }
}

#[cfg(all(test, unix))]
mod file_tests {
    use std::os::unix::fs::PermissionsExt;

    use ichido_domain::store::AuditStore;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    use crate::{SqliteStore, StoreOptions};

    /// A new database and its WAL are readable by their owner alone.
    #[tokio::test]
    async fn a_new_database_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("ichido.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        for file in [path.clone(), path.with_extension("db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        drop(store);
        // Opening it again keeps the file and its mode.
        let again = SqliteStore::open(&url, &StoreOptions::default()).await;
        assert!(again.is_ok());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// The audit index merger's connection thread runs at the lowest
    /// priority, the checkpoints' below the process's, the filer's at the
    /// process's (see `priority`).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_background_threads_run_at_their_priorities() {
        use super::priority::{
            nice_in, nice_of, CHECKPOINT_NICE, CHECKPOINT_THREAD, FILER_THREAD, MERGER_NICE,
            MERGER_THREAD,
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ichido.db").display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        // Other tests' stores may have threads of these names too: each
        // must be as this store's are.
        let mergers = nice_of(MERGER_THREAD);
        assert!(!mergers.is_empty());
        assert!(mergers.iter().all(|&n| n == MERGER_NICE), "{mergers:?}");
        let process = nice_in(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        for (name, nice) in [
            (FILER_THREAD, process),
            (CHECKPOINT_THREAD, CHECKPOINT_NICE.max(process)),
        ] {
            let threads = nice_of(name);
            assert!(!threads.is_empty(), "{name}");
            assert!(threads.iter().all(|&n| n == nice), "{name}: {threads:?}");
        }
        store.close().await;
    }

    /// A new store file gets 1 KiB pages and a new audit index file 4 KiB;
    /// files made before with other page sizes (a store file with SQLite's
    /// default 4 KiB, an index file with the 1 KiB an older ichido gave it)
    /// keep them (and work) when ichido opens them.
    #[tokio::test]
    async fn new_files_get_their_page_sizes_and_old_ones_keep_theirs() {
        let page_size = |store: &SqliteStore, schema: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!("PRAGMA {schema}.page_size"))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let small = i64::from(super::PAGE_SIZE);
        let index = i64::from(super::auditindex::INDEX_PAGE_SIZE);
        assert_ne!(small, index);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(page_size(&store, "main").await, small);
        assert_eq!(page_size(&store, "idx").await, index);
        store.close().await;

        // A store file and an index file made before, with the other's
        // page size.
        let old = dir.path().join("old.db");
        for (file, size) in [
            (old.clone(), index),
            (super::auditindex::path_of(&old), small),
        ] {
            let options = SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true)
                .page_size(u32::try_from(size).unwrap())
                .journal_mode(SqliteJournalMode::Wal);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            sqlx::query("CREATE TABLE before_ichido (x INTEGER)")
                .execute(&pool)
                .await
                .unwrap();
            let made: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(made, size);
            pool.close().await;
        }
        let url = format!("sqlite://{}", old.display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(page_size(&store, "main").await, index);
        assert_eq!(page_size(&store, "idx").await, small);
        let audit = super::batch::tests::plain_record(1, "test.append");
        store.append_audit(audit).await.unwrap();
        assert_eq!(store.audit_chain(0, 10).await.unwrap().len(), 1);
        // The old index file is filed like a new one.
        store.file_index().await;
        let upto: i64 = sqlx::query_scalar("SELECT upto FROM idx.audit_index_state")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(upto >= 1, "filed up to {upto}");
        store.close().await;
    }

    /// The filer's and the merger's connections have their large page
    /// cache for the index and keep the index's WAL file bounded; the
    /// readers keep SQLite's default cache.
    #[tokio::test]
    async fn the_filer_alone_gets_a_large_index_cache() {
        let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let cache = |pool: sqlx::SqlitePool| async move {
            sqlx::query_scalar::<_, i64>("PRAGMA idx.cache_size")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        for pool in [store.filer.clone(), store.merger.clone()] {
            assert_eq!(cache(pool).await, -super::auditindex::FILER_CACHE_KIB);
        }
        assert_ne!(
            cache(store.pool.clone()).await,
            -super::auditindex::FILER_CACHE_KIB
        );
        // And a bound on the index's WAL file after a large merge.
        for pool in [&store.filer, &store.merger] {
            let wal_limit: i64 = sqlx::query_scalar("PRAGMA idx.journal_size_limit")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(wal_limit, super::auditindex::WAL_KEEP_BYTES);
        }
        store.close().await;
    }
}
