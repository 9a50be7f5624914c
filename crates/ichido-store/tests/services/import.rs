//! Bulk import (migration from another validation center): users with argon2id
//! hashes and token seeds, all or nothing, the bad entry named by index.

use std::sync::OnceLock;

use ichido_domain::audit::AuditRecord;
use ichido_domain::ids::TokenId;
use ichido_domain::model::{Role, Token, TokenKind, TokenState, User};
use ichido_domain::password::{PasswordParams, Passwords};
use ichido_domain::services::{ImportEntry, ImportToken};
use ichido_domain::store::{ImportConflict, ImportRecord};
use ichido_domain::DomainError;
use ichido_otp::{base32, Algorithm, Digits};
use zeroize::Zeroizing;

use super::harness::*;
use super::C;

/// argon2id hashes of [`PASSWORD`] and [`TX_PASSWORD`] at OWASP's minimum cost.
fn hashes() -> &'static (String, String) {
    static H: OnceLock<(String, String)> = OnceLock::new();
    H.get_or_init(|| {
        let p = Passwords::new(PasswordParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        })
        .unwrap();
        (
            p.hash("login_password", PASSWORD).unwrap(),
            p.hash("transaction_password", TX_PASSWORD).unwrap(),
        )
    })
}

fn random_secret(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

fn entry(user_id: &str, token: Option<ImportToken>) -> ImportEntry {
    let (login, tx) = hashes();
    ImportEntry {
        contract_no: C.to_owned(),
        user_id: user_id.to_owned(),
        name: "Imported User".to_owned(),
        role: "approver".to_owned(),
        login_password_hash: login.clone(),
        transaction_password_hash: tx.clone(),
        token,
    }
}

fn seed(kind: &str, secret: &[u8]) -> ImportToken {
    ImportToken {
        kind: kind.to_owned(),
        secret: Zeroizing::new(base32::encode(secret)),
        algorithm: None,
        digits: None,
        period: None,
        counter: None,
    }
}

fn refused_at(
    r: Result<Vec<ichido_domain::services::Imported>, DomainError>,
) -> (usize, DomainError) {
    match r {
        Err(DomainError::Entry { index, source }) => (index, *source),
        Err(e) => panic!("expected an entry error, got {e:?}"),
        Ok(_) => panic!("expected an entry error, got Ok"),
    }
}

pub async fn import_creates_users_and_active_tokens_that_validate() {
    let c = Center::new().await;
    c.contract(C).await;
    let (s_event, s_time) = (random_secret(20), random_secret(32));
    let entries = vec![
        entry(
            "ev",
            Some(ImportToken {
                counter: Some(5),
                ..seed("event", &s_event)
            }),
        ),
        entry(
            "tm",
            Some(ImportToken {
                algorithm: Some("SHA256".into()),
                digits: Some(8),
                ..seed("time", &s_time)
            }),
        ),
        entry("none", None),
    ];
    let out = c.ichido.import(&c.op, entries).await.unwrap();
    assert_eq!(
        out.iter().map(|i| i.user_id.as_str()).collect::<Vec<_>>(),
        ["ev", "tm", "none"],
        "answers in request order"
    );
    assert!(out[2].token.is_none());
    let ev = out[0].token.clone().expect("event token");
    let tm = out[1].token.clone().expect("time token");
    assert_ne!(ev.token_id, tm.token_id);
    for t in [&ev, &tm] {
        assert!(luhn_ok(&t.token_id.as_str()[4..]), "{}", t.token_id);
    }
    let ev_t = c.adopt_token(&ev, &s_event);
    let tm_t = c.adopt_token(&tm, &s_time);

    // Stored active, with the imported parameters.
    let stored = c.stored(&ev_t).await;
    assert_eq!(stored.state, TokenState::Active);
    assert_eq!(
        (stored.kind, stored.counter, stored.algorithm),
        (TokenKind::Event, 5, Algorithm::Sha1)
    );
    assert_eq!(stored.activated_at, Some(T0));
    let stored = c.stored(&tm_t).await;
    assert_eq!(
        (
            stored.kind,
            stored.algorithm,
            stored.digits.get(),
            stored.period
        ),
        (TokenKind::Time, Algorithm::Sha256, 8, 30)
    );
    assert_ne!(stored.sealed_secret, s_time, "stored sealed");

    // The event token continues at its counter: earlier codes are spent.
    assert_eq!(
        c.validate(&ev_t, &ev_t.hotp(5)).await.unwrap(),
        ichido_domain::store::Acceptance::Event { counter: 5 }
    );
    assert_err!(
        c.validate(&ev_t, &ev_t.hotp(5)).await,
        DomainError::OtpReplayed
    );
    assert_err!(
        c.validate(&ev_t, &ev_t.hotp(2)).await,
        DomainError::OtpReplayed
    );
    assert!(c.validate(&tm_t, &tm_t.totp(c.now())).await.is_ok());

    // The imported password hashes work: the user without a token registers one.
    let reg = c.register(C, "none", TokenKind::Event).await;
    c.activate(&reg).await;
    let view = c.ichido.user_view(C, "none").await.unwrap();
    assert_eq!(view.user.role, Role::Approver);

    let events = c.audit().await;
    assert_eq!(count_events(&events, "user.import", "ok: approver"), 3);
    assert_eq!(count_events(&events, "token.import", "ok: event"), 1);
    assert_eq!(count_events(&events, "token.import", "ok: time"), 1);
    assert!(events
        .iter()
        .filter(|e| e.action.ends_with(".import"))
        .all(|e| e.actor == "operator:ops"));
    c.assert_audit_clean().await;
}

pub async fn import_is_all_or_nothing_and_names_the_bad_entry() {
    let c = Center::new().await;
    c.user(C, "taken").await;
    let before = c.audit().await.len();
    let secret = random_secret(20);
    let secret_b32 = base32::encode(&secret);

    // An existing user at index 2: nothing of entries 0 and 1 is kept.
    let r = c
        .ichido
        .import(
            &c.op,
            vec![
                entry("a", Some(seed("event", &secret))),
                entry("b", None),
                entry("taken", None),
            ],
        )
        .await;
    let (i, e) = refused_at(r);
    assert_eq!(i, 2);
    assert!(matches!(e, DomainError::Conflict(_)), "{e:?}");
    for u in ["a", "b"] {
        assert_err!(c.ichido.user_view(C, u).await, DomainError::NotFound(_));
    }

    // An unknown contract.
    let mut other = entry("x", None);
    other.contract_no = "C-404".into();
    let (i, e) = refused_at(c.ichido.import(&c.op, vec![entry("a", None), other]).await);
    assert_eq!(i, 1);
    assert!(matches!(e, DomainError::NotFound("contract")), "{e:?}");

    // Input errors name the entry and field, never the value.
    let mut bad_hash = entry("a", None);
    bad_hash.login_password_hash =
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into();
    let mut weak_hash = entry("b", None);
    weak_hash.transaction_password_hash = Passwords::new(FAST)
        .unwrap()
        .hash("t", TX_PASSWORD)
        .unwrap();
    let bad_secret = entry("c", Some(seed("event", &secret[..10])));
    let mut bad_role = entry("d", None);
    bad_role.role = "root".into();
    for (e, field) in [
        (bad_hash, "login_password_hash"),
        (weak_hash, "transaction_password_hash"),
        (bad_secret, "token.secret"),
        (bad_role, "Role"),
    ] {
        let (i, err) = refused_at(
            c.ichido
                .import(&c.op, vec![entry("ok", Some(seed("event", &secret))), e])
                .await,
        );
        assert_eq!(i, 1);
        let msg = DomainError::Entry {
            index: i,
            source: Box::new(err),
        }
        .to_string();
        assert!(
            msg.starts_with("entries[1]: ") && msg.contains(field),
            "{msg}"
        );
        assert!(
            !msg.contains(&secret_b32[..8]) && !msg.contains("$argon2") && !msg.contains("$2b$"),
            "{msg}"
        );
    }

    // The same user twice; an empty or oversized request.
    let (i, _) = refused_at(
        c.ichido
            .import(&c.op, vec![entry("a", None), entry("a", None)])
            .await,
    );
    assert_eq!(i, 1);
    assert_err!(
        c.ichido.import(&c.op, vec![]).await,
        DomainError::InvalidRequest(_)
    );
    let many = (0..1001).map(|n| entry(&format!("u{n}"), None)).collect();
    assert_err!(
        c.ichido.import(&c.op, many).await,
        DomainError::InvalidRequest(_)
    );

    // Nothing was written by any refused import.
    assert_eq!(c.audit().await.len(), before);
    c.assert_audit_clean().await;
}

fn user(n: usize) -> User {
    let (login, tx) = hashes();
    User {
        contract_no: C.to_owned(),
        user_id: format!("bulk{n}"),
        name: "Bulk".to_owned(),
        role: Role::Viewer,
        login_hash: login.clone(),
        transaction_hash: tx.clone(),
        created_at: T0,
    }
}

fn token(u: &User, id: &TokenId) -> Token {
    Token {
        token_id: id.clone(),
        contract_no: u.contract_no.clone(),
        user_id: u.user_id.clone(),
        kind: TokenKind::Event,
        state: TokenState::Active,
        algorithm: Algorithm::Sha1,
        digits: Digits::SIX,
        period: 30,
        counter: 0,
        last_step: None,
        time_offset: 0,
        failures: 0,
        sealed_secret: vec![1, 2, 3],
        created_at: T0,
        activated_at: Some(T0),
        grace_until: None,
        updated_at: T0,
    }
}

fn audit(n: usize) -> AuditRecord {
    AuditRecord {
        at: T0,
        actor: "operator:ops".into(),
        action: "user.import",
        contract_no: Some(C.into()),
        user_id: Some(format!("bulk{n}")),
        token_id: None,
        outcome: "ok: viewer".into(),
    }
}

/// The store names the first conflicting record across its statement chunks,
/// and writes nothing then.
pub async fn import_store_names_a_taken_user_or_token_id_and_writes_nothing() {
    let c = Center::new().await;
    c.contract(C).await;
    let n = 600;
    let ids: Vec<TokenId> = (0..n).map(|_| TokenId::random()).collect();
    let records: Vec<ImportRecord> = (0..n)
        .map(|i| {
            let u = user(i);
            let t = (i % 2 == 0).then(|| token(&u, &ids[i]));
            ImportRecord { user: u, token: t }
        })
        .collect();
    let audits: Vec<AuditRecord> = (0..n).map(audit).collect();
    // First only user 590 exists (in the third chunk of 256).
    let lone = [ImportRecord {
        user: user(590),
        token: None,
    }];
    assert_eq!(c.store.import(&lone, &[audit(590)]).await.unwrap(), Ok(()));
    assert_eq!(
        c.store.import(&records, &audits).await.unwrap(),
        Err(ImportConflict::UserExists(590))
    );
    assert!(
        c.store.user(C, "bulk0").await.unwrap().is_none(),
        "rolled back"
    );

    // Then a taken token ID at record 300.
    let mut records: Vec<ImportRecord> = records
        .into_iter()
        .filter(|r| r.user.user_id != "bulk590")
        .collect();
    let taken = user(10_000);
    let lone = [ImportRecord {
        token: Some(token(&taken, &ids[300])),
        user: taken,
    }];
    assert_eq!(
        c.store.import(&lone, &[audit(10_000)]).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        c.store
            .import(&records, &audits[..records.len()])
            .await
            .unwrap(),
        Err(ImportConflict::TokenIdTaken(300))
    );
    assert!(
        c.store.user(C, "bulk0").await.unwrap().is_none(),
        "rolled back"
    );

    // With a fresh ID it goes in whole, its audit records chained.
    let fresh = TokenId::random();
    records[300].token = Some(token(&records[300].user, &fresh));
    let chained_before = c.audit().await.len();
    assert_eq!(
        c.store
            .import(&records, &audits[..records.len()])
            .await
            .unwrap(),
        Ok(())
    );
    assert!(c.store.user(C, "bulk599").await.unwrap().is_some());
    assert_eq!(
        c.store.token(&fresh).await.unwrap().unwrap().user_id,
        "bulk300"
    );
    assert_eq!(c.audit().await.len(), chained_before + records.len());
    let report = c.ichido.verify_audit_chain(|_| {}).await.unwrap();
    assert_eq!(report.fault, None);
}
