//! `POST /validate`: is this code right for this token? Exactly once.

use super::{Actor, Ichido};
use crate::error::DomainError;
use crate::ids::TokenId;
use crate::store::Acceptance;

impl Ichido {
    /// Validates `otp` for `token_id` on behalf of a relying party. A locked,
    /// suspended, pending or revoked token answers with its state whatever the
    /// code, so the answer is no oracle for the code.
    pub async fn validate(
        &self,
        actor: &Actor,
        token_id: &str,
        otp: &str,
    ) -> Result<Acceptance, DomainError> {
        let token_id: TokenId = token_id.parse()?;
        let code = Self::parse_code("otp", otp)?;
        if let Some(done) = self
            .check_cached(actor, "token.validate", &token_id, &code)
            .await
        {
            return done;
        }
        self.check_on_row(actor, "token.validate", &token_id, &code)
            .await
    }
}
