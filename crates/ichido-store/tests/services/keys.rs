//! The key cache on the validation path: a token's key is opened once, and a
//! revoked or re-registered token never validates with an old key.

use ichido_domain::model::TokenKind;
use ichido_domain::DomainError;

use super::harness::*;
use super::C;

pub async fn validation_keys_are_cached_and_revocation_forgets_them() {
    let c = Center::new().await;
    let cache = || c.ichido.key_cache().len();
    let t = c.active(C, "taro", TokenKind::Event).await;
    assert_eq!(cache(), 1, "activation opened and cached the key");
    for n in 1..=3 {
        c.validate(&t, &t.hotp(n)).await.unwrap();
    }
    assert_err!(
        c.validate(&t, &t.wrong_code(4)).await,
        DomainError::InvalidOtp
    );
    assert_eq!(cache(), 1, "one entry per token");

    c.ichido.revoke(&c.op, C, "taro").await.unwrap();
    assert_eq!(cache(), 0, "revocation wipes the key at once");
    assert_err!(c.validate(&t, &t.hotp(4)).await, DomainError::TokenRevoked);

    // A new registration is a new token with a new secret: its own key.
    let t2 = c.register(C, "taro", TokenKind::Event).await;
    c.activate(&t2).await;
    assert!(c.validate(&t2, &t2.hotp(1)).await.is_ok());
    assert_err!(c.validate(&t2, &t.hotp(2)).await, DomainError::InvalidOtp);
    assert_eq!(cache(), 1);
    c.assert_audit_clean().await;
}
