//! Rate limits (`429 rate_limited` with `Retry-After`): per client address on
//! the customer endpoints, per (contract, user) on log-in, registration and
//! resync, and — only when configured — per address on `POST /validate`.
//! Held in the app state, never in a global.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::AppError;

/// Requests per second and burst of each limit; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub per_address: u32,
    pub per_user: u32,
    pub validate_per_address: u32,
}

impl Default for RateSettings {
    /// 100/s per address (the contract asks for at least 50), 5/s per user,
    /// and no limit on `validate` by address.
    fn default() -> Self {
        Self {
            per_address: 100,
            per_user: 5,
            validate_per_address: 0,
        }
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_sec: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let n = NonZeroU32::new(per_sec)?;
    // The burst equals one second's allowance.
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(n).allow_burst(n),
    ))
}

/// The server's rate limiters.
pub struct Limits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_user: Option<DefaultKeyedRateLimiter<(String, String)>>,
    validate_per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limits {
    pub fn new(s: RateSettings) -> Self {
        Self {
            per_address: limiter(s.per_address),
            per_user: limiter(s.per_user),
            validate_per_address: limiter(s.validate_per_address),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        l: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Result<(), AppError> {
        let Some(l) = l else { return Ok(()) };
        l.check_key(key).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            AppError::rate_limited(wait.as_secs().saturating_add(1))
        })
    }

    pub fn address(&self, ip: IpAddr) -> Result<(), AppError> {
        Self::check(self.per_address.as_ref(), &ip)
    }

    pub fn validate_address(&self, ip: IpAddr) -> Result<(), AppError> {
        Self::check(self.validate_per_address.as_ref(), &ip)
    }

    pub fn user(&self, contract_no: &str, user_id: &str) -> Result<(), AppError> {
        Self::check(
            self.per_user.as_ref(),
            &(contract_no.to_owned(), user_id.to_owned()),
        )
    }

    /// Forgets idle keys so memory stays bounded.
    pub fn shrink(&self) {
        for l in [&self.per_address, &self.validate_per_address]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_user {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_after_the_burst_and_zero_means_off() {
        let l = Limits::new(RateSettings {
            per_address: 3,
            per_user: 2,
            validate_per_address: 0,
        });
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!((0..3).all(|_| l.address(ip).is_ok()));
        let e = l.address(ip).unwrap_err();
        assert_eq!(e.code(), "rate_limited");
        assert!(l.address([127, 0, 0, 2].into()).is_ok(), "per address");
        assert!(l.user("c", "u").is_ok() && l.user("c", "u").is_ok());
        assert!(l.user("c", "u").is_err());
        assert!(l.user("c", "v").is_ok(), "per user");
        assert!(
            (0..1000).all(|_| l.validate_address(ip).is_ok()),
            "validate unlimited by default"
        );
    }
}
