//! Databases made by older releases, opened by this one.

use std::collections::BTreeSet;
use std::str::FromStr;

use ichido_domain::audit::AuditRecord;
use ichido_domain::ids::TokenId;
use ichido_domain::model::TokenState;
use ichido_domain::store::{Accept, Acceptance, TokenChange, TokenStore};

use crate::{SqliteStore, StoreOptions};

/// A database `old.db` in `dir` as an older release made it: the shipped
/// migrations numbered below `before` applied, no more. Its URL and a plain
/// pool on it.
pub(super) async fn old_database(
    dir: &tempfile::TempDir,
    before: &str,
) -> (String, sqlx::SqlitePool) {
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    for file in files.iter().filter(|f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        name.as_str() < before
    }) {
        std::fs::copy(file, old.join(file.file_name().unwrap())).unwrap();
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (url, pool)
}

fn record(token_id: &TokenId, action: &'static str) -> AuditRecord {
    AuditRecord {
        at: 100,
        actor: "test".into(),
        action,
        contract_no: Some("c1".into()),
        user_id: None,
        token_id: Some(token_id.as_str().to_owned()),
        outcome: "ok".into(),
    }
}

/// Tokens stored before rows were kept by number (migration 0006) are
/// there after the upgrade, each under its ID's number, with nothing else
/// changed; they are read, validated exactly once and revoked by number;
/// the token ID's own index is gone, and the table refuses a row whose
/// number is not its ID's.
#[tokio::test]
async fn tokens_stored_before_the_upgrade_are_kept_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let (url, pool) = old_database(&dir, "0006").await;
    sqlx::query("INSERT INTO contracts (contract_no, name, created_at) VALUES ('c1', 'old', 1)")
        .execute(&pool)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..300_i64 {
        // Also the lowest and highest IDs there can be.
        let id = match i {
            0 => TokenId::from_str("AAAA00000000").unwrap(),
            1 => TokenId::from_str("ZZZZ99999997").unwrap(),
            _ => TokenId::random(),
        };
        let user = format!("u{i}");
        sqlx::query(
            "INSERT INTO users (contract_no, user_id, name, role, login_hash, transaction_hash, created_at)
             VALUES ('c1', ?, 'n', 'viewer', 'h', 'h', 1)",
        )
        .bind(&user)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO tokens (token_id, contract_no, user_id, kind, state, algorithm, digits, period, counter,
                                 last_step, time_offset, failures, sealed_secret, created_at, activated_at, grace_until, updated_at)
             VALUES (?, 'c1', ?, ?, 'active', 'SHA1', 6, 30, ?, ?, ?, ?, ?, 1, 2, NULL, 3)",
        )
        .bind(id.as_str())
        .bind(&user)
        .bind(if i % 2 == 0 { "event" } else { "time" })
        .bind(i)
        .bind((i % 2 == 1).then_some(1000 + i))
        .bind(i % 3 - 1)
        .bind(i % 5)
        .bind(vec![u8::try_from(i % 256).unwrap(); 40])
        .execute(&pool)
        .await
        .unwrap();
        ids.push(id);
    }
    pool.close().await;

    let store = SqliteStore::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    for (i, id) in (0_i64..).zip(&ids) {
        let t = store.token(id).await.unwrap().expect("the token is there");
        assert_eq!(&t.token_id, id);
        assert_eq!(t.user_id, format!("u{i}"));
        assert_eq!(t.counter, u64::try_from(i).unwrap());
        assert_eq!(t.last_step, (i % 2 == 1).then(|| 1000 + i as u64));
        assert_eq!(t.time_offset, i % 3 - 1);
        assert_eq!(t.failures, u32::try_from(i % 5).unwrap());
        assert_eq!(t.sealed_secret, vec![u8::try_from(i % 256).unwrap(); 40]);
        assert_eq!(
            (t.created_at, t.activated_at, t.updated_at),
            (1, Some(2), 3)
        );
    }
    let raw = store.pool.clone();
    let numbers: Vec<(i64, String)> = sqlx::query_as("SELECT token_no, token_id FROM tokens")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(numbers.len(), ids.len());
    for (no, id) in &numbers {
        assert_eq!(*no, TokenId::from_str(id).unwrap().number(), "{id}");
    }
    let indexes: BTreeSet<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tokens'",
    )
    .fetch_all(&raw)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        indexes,
        BTreeSet::from([
            "tokens_one_live_per_user".into(),
            "tokens_pending_by_age".into()
        ])
    );

    // An event token's code of counter 2, accepted once, by number.
    let event = &ids[2];
    let accept = || Accept {
        acceptance: Acceptance::Event { counter: 2 },
        from: TokenState::Active,
        to: TokenState::Active,
        now: 50,
    };
    let audit = record(event, "token.validate");
    assert!(store.accept(event, accept(), audit.clone()).await.unwrap());
    assert!(!store.accept(event, accept(), audit).await.unwrap());
    assert_eq!(store.token(event).await.unwrap().unwrap().counter, 3);
    let revoked = store
        .change(
            &ids[1],
            TokenChange::Revoke,
            60,
            record(&ids[1], "token.revoke"),
        )
        .await
        .unwrap()
        .expect("revoked");
    assert_eq!(revoked.state, TokenState::Revoked);

    // A row whose number is not its ID's, or whose ID is not one, is refused.
    let id = TokenId::random();
    assert!(
        insert_revoked(&raw, id.number() + 1, id.as_str())
            .await
            .is_err(),
        "another number"
    );
    assert!(
        insert_revoked(&raw, 18, "aaaa00000018").await.is_err(),
        "not an ID"
    );
    insert_revoked(&raw, id.number(), id.as_str())
        .await
        .expect("its own number");
    store.close().await;
}

/// Inserts a revoked token of user `u0` of contract `c1` straight into the
/// table, under the number `no`.
async fn insert_revoked(pool: &sqlx::SqlitePool, no: i64, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tokens (token_no, token_id, contract_no, user_id, kind, state, algorithm, digits, period,
                             sealed_secret, created_at, updated_at)
         VALUES (?, ?, 'c1', 'u0', 'event', 'revoked', 'SHA1', 6, 30, X'', 1, 1)",
    )
    .bind(no)
    .bind(id)
    .execute(pool)
    .await
    .map(drop)
}
