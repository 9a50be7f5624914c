//! Transactions (R7, R8): any role but viewer prepares a transfer; an approver
//! or administrator of the same contract approves it with the transaction
//! password and then an OTP (realtime), or with passwords alone during a
//! suspension grace (deferred).
//!
//! Invariant: a transaction executes at most once — the last step is one
//! conditional write from `pending_approval`.

use rand::RngCore;

use super::login::{may_approve, Authenticated, Requirement};
use super::Ichido;
use crate::error::DomainError;
use crate::ids::check_name;
use crate::model::{Execution, Role, Transaction, TransactionKind, TransactionState};

/// A transfer as the customer enters it.
pub struct NewTransaction {
    pub kind: TransactionKind,
    pub payee: String,
    pub amount: i64,
}

impl Ichido {
    /// Records a transaction awaiting approval.
    pub async fn create_transaction(
        &self,
        who: &Authenticated,
        new: NewTransaction,
    ) -> Result<Transaction, DomainError> {
        if who.user.role == Role::Viewer {
            self.store
                .append_audit(self.record(
                    &who.actor(),
                    "transaction.create",
                    Some(&who.user.contract_no),
                    Some(&who.user.user_id),
                    None,
                    "forbidden",
                ))
                .await?;
            return Err(DomainError::Forbidden);
        }
        check_name("payee", &new.payee)?;
        if new.amount <= 0 {
            return Err(DomainError::InvalidRequest(
                "amount must be a positive integer in the minor unit".into(),
            ));
        }
        let mut raw = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let t = Transaction {
            id: format!("tx_{}", hex::encode(raw)),
            contract_no: who.user.contract_no.clone(),
            created_by: who.user.user_id.clone(),
            kind: new.kind,
            payee: new.payee,
            amount: new.amount,
            state: TransactionState::PendingApproval,
            approved_by: None,
            execution: None,
            created_at: self.clock.now(),
            executed_at: None,
        };
        let r = self.record(
            &who.actor(),
            "transaction.create",
            Some(&t.contract_no),
            Some(&t.created_by),
            None,
            format!("ok: {} {} {}", t.id, t.kind, t.amount),
        );
        self.store.create_transaction(&t, r).await?;
        Ok(t)
    }

    /// The contract's transactions, newest first.
    pub async fn transactions(
        &self,
        who: &Authenticated,
        limit: u32,
    ) -> Result<Vec<Transaction>, DomainError> {
        Ok(self
            .store
            .transactions(&who.user.contract_no, limit.clamp(1, 1000))
            .await?)
    }

    /// One transaction of the session's contract.
    pub async fn transaction(
        &self,
        who: &Authenticated,
        id: &str,
    ) -> Result<Transaction, DomainError> {
        self.store
            .transaction(&who.user.contract_no, id)
            .await?
            .ok_or(DomainError::NotFound("transaction"))
    }

    /// Approves and executes a transaction, exactly once.
    pub async fn approve_transaction(
        &self,
        who: &Authenticated,
        id: &str,
        transaction_password: &str,
        otp: Option<&str>,
    ) -> Result<Transaction, DomainError> {
        let actor = who.actor();
        let (c, u) = (who.user.contract_no.as_str(), who.user.user_id.as_str());
        let audit = |outcome: &str| {
            self.record(
                &actor,
                "transaction.approve",
                Some(c),
                Some(u),
                None,
                format!("{outcome}: {id}"),
            )
        };
        if let Some(otp) = otp {
            Self::parse_code("otp", otp)?;
        }
        if !may_approve(who.user.role) {
            self.store.append_audit(audit("forbidden")).await?;
            return Err(DomainError::Forbidden);
        }
        let t = self
            .store
            .transaction(c, id)
            .await?
            .ok_or(DomainError::NotFound("transaction"))?;
        if t.state != TransactionState::PendingApproval {
            self.store.append_audit(audit("conflict")).await?;
            return Err(DomainError::Conflict("approval of this transaction"));
        }
        // The transaction password first (counts toward the same password lock).
        let user = self
            .check_transaction_password(&who.user, transaction_password)
            .await?;
        let token = self.store.user_token(c, u).await?;
        let execution = match self.requirement(&user, token) {
            Ok(Requirement::Otp(token)) => {
                self.second_factor(&actor, "transaction.approve", &token, None, otp)
                    .await?;
                Execution::Realtime
            }
            Ok(Requirement::PasswordOnly) => Execution::Deferred,
            Err(e) => {
                self.store.append_audit(audit(e.code())).await?;
                return Err(e);
            }
        };
        let now = self.clock.now();
        if !self
            .store
            .execute_transaction(c, id, u, execution, now, audit(&format!("ok {execution}")))
            .await?
        {
            self.store.append_audit(audit("conflict")).await?;
            return Err(DomainError::Conflict("approval of this transaction"));
        }
        self.transaction(who, id).await
    }
}
