//! The bank's configurable rules, with the contract's defaults.

use ichido_otp::{Algorithm, Digits};

/// Every limit of the token rules. Defaults are the contract's.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Event tokens: how many codes ahead of the expected counter are accepted.
    pub event_look_ahead: u64,
    /// Event tokens: how many codes behind are recognised as replays.
    pub event_look_behind: u64,
    /// Time tokens: accepted steps either side of the learned clock offset.
    pub time_window: u64,
    /// Time tokens: the step in seconds for new tokens.
    pub time_period: u32,
    /// Resync: codes searched ahead for an event token.
    pub resync_event_search: u64,
    /// Resync: seconds searched either side of now for a time token.
    pub resync_time_search_secs: u64,
    /// Consecutive OTP failures that lock a token.
    pub token_lock_threshold: u32,
    /// Consecutive wrong passwords that lock a user.
    pub password_lock_threshold: u32,
    /// Days a suspended user may log in with passwords alone, unless the operator says otherwise.
    pub suspension_grace_days: u32,
    /// Seconds a registered token may stay pending before it is discarded.
    pub pending_ttl_secs: u64,
    /// Algorithm of new tokens.
    pub algorithm: Algorithm,
    /// Code length of new tokens.
    pub digits: Digits,
    /// Secret length of new tokens, in bytes (at least 16; 20 recommended by RFC 4226).
    pub secret_bytes: usize,
    /// The issuer shown by authenticator apps.
    pub issuer: String,
    /// Seconds of inactivity after which a session ends (PSD2 RTS Art. 4(3)(d): at most 300).
    pub session_idle_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            event_look_ahead: 10,
            event_look_behind: 10,
            time_window: 1,
            time_period: 30,
            resync_event_search: 1000,
            resync_time_search_secs: 600,
            token_lock_threshold: 5,
            password_lock_threshold: 5,
            suspension_grace_days: 30,
            pending_ttl_secs: 600,
            algorithm: Algorithm::Sha1,
            digits: Digits::SIX,
            secret_bytes: 20,
            issuer: "ichido".to_owned(),
            session_idle_secs: 300,
        }
    }
}

impl Policy {
    /// Resync range for time tokens, in steps of `period` seconds.
    pub fn resync_time_steps(&self, period: u32) -> u64 {
        self.resync_time_search_secs / u64::from(period.max(1))
    }

    /// Checks that the settings make sense; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.secret_bytes < 16 || self.secret_bytes > 64 {
            return Err("secret_bytes must be between 16 and 64".into());
        }
        if self.time_period == 0 || self.time_period > 300 {
            return Err("time_period must be between 1 and 300 seconds".into());
        }
        if self.token_lock_threshold == 0 || self.token_lock_threshold > 100 {
            return Err("token_lock_threshold must be between 1 and 100 (NIST SP 800-63B)".into());
        }
        if self.password_lock_threshold == 0 || self.password_lock_threshold > 100 {
            return Err("password_lock_threshold must be between 1 and 100".into());
        }
        if self.event_look_ahead > 1000 || self.event_look_behind > 1000 {
            return Err("event_look_ahead and event_look_behind must be at most 1000".into());
        }
        if self.time_window > 10 {
            return Err("time_window must be at most 10 steps".into());
        }
        if self.resync_event_search == 0 || self.resync_event_search > 100_000 {
            return Err("resync_event_search must be between 1 and 100000".into());
        }
        if self.resync_time_search_secs > 86_400 {
            return Err("resync_time_search_secs must be at most 86400".into());
        }
        if self.session_idle_secs == 0 || self.session_idle_secs > 86_400 {
            return Err("session_idle_secs must be between 1 and 86400".into());
        }
        if self.issuer.is_empty() || self.issuer.contains(':') {
            return Err("issuer must be non-empty and contain no ':'".into());
        }
        Ok(())
    }
}
