//! Reading the audit log, and checking its hash chain end to end.

use super::Ichido;
use crate::audit::{AuditEvent, AuditFilter, ChainFault, ChainVerifier};
use crate::error::DomainError;

/// The result of a full chain check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub checked: u64,
    pub fault: Option<ChainFault>,
}

/// The most events one read returns.
pub const MAX_AUDIT_LIMIT: u32 = 1000;

impl Ichido {
    /// Newest first.
    pub async fn audit_events(
        &self,
        mut filter: AuditFilter,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        if filter.limit == 0 {
            filter.limit = 100;
        }
        if filter.limit > MAX_AUDIT_LIMIT {
            return Err(DomainError::InvalidRequest(format!(
                "limit must be at most {MAX_AUDIT_LIMIT}"
            )));
        }
        Ok(self.store.audit_events(&filter).await?)
    }

    /// Walks the whole chain, calling `progress` with the count so far.
    pub async fn verify_audit_chain(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<ChainReport, DomainError> {
        let mut v = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = self.store.audit_chain(after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                if let Err(fault) = v.push(e) {
                    return Ok(ChainReport {
                        checked: v.checked,
                        fault: Some(fault),
                    });
                }
            }
            progress(v.checked);
        }
        Ok(ChainReport {
            checked: v.checked,
            fault: None,
        })
    }
}
