//! Layered configuration: defaults ← TOML file (`--config`, unknown keys refused)
//! ← `ICHIDO_*` environment ← command-line flags. Every setting has all three
//! names: TOML key `event_look_ahead`, env `ICHIDO_EVENT_LOOK_AHEAD`, flag
//! `--event-look-ahead`. The master key is read only from `ICHIDO_MASTER_KEY`
//! or its file, never from a flag (flags show in `ps`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ichido_domain::password::PasswordParams;
use ichido_domain::Policy;
use ichido_otp::{Algorithm, Digits};
use ichido_store::{redact_url, StoreOptions};
use serde::Deserialize;

use crate::limits::RateSettings;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $env:literal ),+ $(,)?) => {
        /// Every setting of `ichido serve`; `None` means "not given at this layer".
        #[derive(Clone, Default, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[doc = $doc])* #[arg(long, env = $env)] pub $field: Option<$ty>, )+
        }

        impl Settings {
            /// Values of `over` win over `self`'s.
            pub fn overlay(self, over: Settings) -> Settings {
                Settings { $( $field: over.$field.or(self.$field), )+ }
            }
        }

        /// The environment names of all settings (for warnings on unknown names).
        pub const ENV_NAMES: &[&str] = &[$($env),+];
    };
}

settings! {
    /// Address to listen on [default: 127.0.0.1:8080].
    listen: String = "ICHIDO_LISTEN",
    /// Database URL: sqlite://FILE (created if missing) or postgres://… [default: sqlite://ichido.db].
    database: String = "ICHIDO_DATABASE_URL",
    /// File holding the master key (64 hex chars), created with mode 0600 on first start
    /// if ICHIDO_MASTER_KEY is not set [default: ichido.key beside the SQLite database].
    master_key_file: PathBuf = "ICHIDO_MASTER_KEY_FILE",
    /// Log format: text or json (filter with RUST_LOG) [default: text].
    log_format: String = "ICHIDO_LOG_FORMAT",
    /// Event tokens: codes accepted ahead of the expected counter [default: 10].
    event_look_ahead: u64 = "ICHIDO_EVENT_LOOK_AHEAD",
    /// Event tokens: earlier codes recognised as replays [default: 10].
    event_look_behind: u64 = "ICHIDO_EVENT_LOOK_BEHIND",
    /// Time tokens: steps accepted either side of the learned clock offset [default: 1].
    time_window: u64 = "ICHIDO_TIME_WINDOW",
    /// Time tokens: step of new tokens, seconds [default: 30].
    time_period: u32 = "ICHIDO_TIME_PERIOD",
    /// Resync (同期ズレ補正): codes searched for an event token [default: 1000].
    resync_event_search: u64 = "ICHIDO_RESYNC_EVENT_SEARCH",
    /// Resync: seconds searched either side of now for a time token [default: 600].
    resync_time_search_secs: u64 = "ICHIDO_RESYNC_TIME_SEARCH_SECS",
    /// Consecutive OTP failures that lock a token (閉塞) [default: 5].
    token_lock_threshold: u32 = "ICHIDO_TOKEN_LOCK_THRESHOLD",
    /// Consecutive wrong passwords that lock a user [default: 5].
    password_lock_threshold: u32 = "ICHIDO_PASSWORD_LOCK_THRESHOLD",
    /// Days of password-only use after a suspension (一時停止) [default: 30].
    suspension_grace_days: u32 = "ICHIDO_SUSPENSION_GRACE_DAYS",
    /// Seconds a registered token may stay pending [default: 600].
    pending_ttl_secs: u64 = "ICHIDO_PENDING_TTL_SECS",
    /// HMAC of new tokens: SHA1, SHA256 or SHA512 [default: SHA1].
    algorithm: String = "ICHIDO_ALGORITHM",
    /// Code length of new tokens: 6, 7 or 8 [default: 6].
    digits: u8 = "ICHIDO_DIGITS",
    /// Issuer shown in authenticator apps [default: ichido].
    issuer: String = "ICHIDO_ISSUER",
    /// argon2id memory in KiB [default: 19456].
    argon2_memory_kib: u32 = "ICHIDO_ARGON2_MEMORY_KIB",
    /// argon2id passes [default: 2].
    argon2_iterations: u32 = "ICHIDO_ARGON2_ITERATIONS",
    /// argon2id lanes [default: 1].
    argon2_parallelism: u32 = "ICHIDO_ARGON2_PARALLELISM",
    /// Database connections per instance [default: 8].
    db_max_connections: u32 = "ICHIDO_DB_MAX_CONNECTIONS",
    /// Seconds to wait for a database connection [default: 5].
    db_connect_timeout_secs: u64 = "ICHIDO_DB_CONNECT_TIMEOUT_SECS",
    /// SQLite: milliseconds to wait for the write lock [default: 5000].
    db_busy_timeout_ms: u64 = "ICHIDO_DB_BUSY_TIMEOUT_MS",
    /// PostgreSQL: milliseconds a statement may run before it is cancelled [default: 5000].
    db_statement_timeout_ms: u64 = "ICHIDO_DB_STATEMENT_TIMEOUT_MS",
    /// Seconds of inactivity that end a customer session [default: 300].
    session_idle_secs: u64 = "ICHIDO_SESSION_IDLE_SECS",
    /// Customer endpoints: requests per second per client address; 0 = off [default: 100].
    rate_limit_per_address: u32 = "ICHIDO_RATE_LIMIT_PER_ADDRESS",
    /// Log-in, registration, resync: requests per second per (contract, user); 0 = off [default: 5].
    rate_limit_per_user: u32 = "ICHIDO_RATE_LIMIT_PER_USER",
    /// POST /validate: requests per second per client address; 0 = off [default: 0].
    rate_limit_validate_per_address: u32 = "ICHIDO_RATE_LIMIT_VALIDATE_PER_ADDRESS",
    /// Tokens whose opened key (zeroized on eviction) and last-seen row are kept in memory;
    /// set it to about the number of tokens in use, at about 1.2 KiB each; 0 = off
    /// [default: 65536].
    key_cache_size: usize = "ICHIDO_KEY_CACHE_SIZE",
    /// Seconds a validation may decide on a token's row as this instance last read or wrote
    /// it, before reading it again; a hint only, the conditional write decides [default: 600].
    token_cache_ttl_secs: u64 = "ICHIDO_TOKEN_CACHE_TTL_SECS",
    /// Web pages: mark cookies Secure always (set when a TLS proxy is in front) [default: false;
    /// cookies are Secure anyway when the proxy sends X-Forwarded-Proto: https].
    cookie_secure: bool = "ICHIDO_COOKIE_SECURE",
}

/// Environment names read directly, outside [`Settings`].
pub const OTHER_ENV_NAMES: &[&str] = &[
    "ICHIDO_MASTER_KEY",
    "ICHIDO_CONFIG",
    "ICHIDO_TOKEN_STORE",
    "ICHIDO_TOKEN_PASSPHRASE",
    "ICHIDO_OPERATOR_PASSWORD",
];

/// `ICHIDO_*` variables that no setting reads (likely typos).
pub fn unknown_env_names() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("ICHIDO_")
                && !ENV_NAMES.contains(&k.as_str())
                && !OTHER_ENV_NAMES.contains(&k.as_str())
        })
        .collect()
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads a TOML file of settings; unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies the defaults and checks every value.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let d = Policy::default();
        let pw = PasswordParams::default();
        let so = StoreOptions::default();
        let listen_s = self.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen: '{listen_s}' is not an address such as 127.0.0.1:8080"
            ))
        })?;
        let database = self.database.unwrap_or_else(|| "sqlite://ichido.db".into());
        let master_key_file = self
            .master_key_file
            .unwrap_or_else(|| default_key_file(&database));
        let algorithm: Algorithm = match self.algorithm {
            Some(a) => a.parse().map_err(|_| {
                ConfigError::Invalid(format!("algorithm: '{a}' is not SHA1, SHA256 or SHA512"))
            })?,
            None => d.algorithm,
        };
        let digits = match self.digits {
            Some(n) => Digits::new(n)
                .map_err(|_| ConfigError::Invalid(format!("digits: {n} is not 6, 7 or 8")))?,
            None => d.digits,
        };
        let log_json = match self.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "log_format: '{other}' is not text or json"
                )))
            }
        };
        let policy = Policy {
            event_look_ahead: self.event_look_ahead.unwrap_or(d.event_look_ahead),
            event_look_behind: self.event_look_behind.unwrap_or(d.event_look_behind),
            time_window: self.time_window.unwrap_or(d.time_window),
            time_period: self.time_period.unwrap_or(d.time_period),
            resync_event_search: self.resync_event_search.unwrap_or(d.resync_event_search),
            resync_time_search_secs: self
                .resync_time_search_secs
                .unwrap_or(d.resync_time_search_secs),
            token_lock_threshold: self.token_lock_threshold.unwrap_or(d.token_lock_threshold),
            password_lock_threshold: self
                .password_lock_threshold
                .unwrap_or(d.password_lock_threshold),
            suspension_grace_days: self
                .suspension_grace_days
                .unwrap_or(d.suspension_grace_days),
            pending_ttl_secs: self.pending_ttl_secs.unwrap_or(d.pending_ttl_secs),
            algorithm,
            digits,
            secret_bytes: match algorithm {
                Algorithm::Sha1 => 20,
                Algorithm::Sha256 => 32,
                Algorithm::Sha512 => 64,
            },
            issuer: self.issuer.unwrap_or(d.issuer),
            session_idle_secs: self.session_idle_secs.unwrap_or(d.session_idle_secs),
        };
        policy.validate().map_err(ConfigError::Invalid)?;
        let password = PasswordParams {
            memory_kib: self.argon2_memory_kib.unwrap_or(pw.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(pw.iterations),
            parallelism: self.argon2_parallelism.unwrap_or(pw.parallelism),
        };
        if password.memory_kib < 1024 || password.iterations == 0 || password.parallelism == 0 {
            return Err(ConfigError::Invalid(
                "argon2 parameters: memory at least 1024 KiB, at least 1 pass and 1 lane".into(),
            ));
        }
        let store = StoreOptions {
            max_connections: self.db_max_connections.unwrap_or(so.max_connections).max(1),
            connect_timeout: self
                .db_connect_timeout_secs
                .map_or(so.connect_timeout, Duration::from_secs),
            busy_timeout: self
                .db_busy_timeout_ms
                .map_or(so.busy_timeout, Duration::from_millis),
            statement_timeout: self
                .db_statement_timeout_ms
                .map_or(so.statement_timeout, Duration::from_millis),
        };
        let rd = RateSettings::default();
        let rate = RateSettings {
            per_address: self.rate_limit_per_address.unwrap_or(rd.per_address),
            per_user: self.rate_limit_per_user.unwrap_or(rd.per_user),
            validate_per_address: self
                .rate_limit_validate_per_address
                .unwrap_or(rd.validate_per_address),
        };
        Ok(ServerConfig {
            listen,
            database,
            master_key_file,
            log_json,
            policy,
            password,
            store,
            rate,
            key_cache_size: self
                .key_cache_size
                .unwrap_or(ichido_domain::keycache::DEFAULT_KEY_CACHE_CAPACITY),
            token_cache_ttl: self
                .token_cache_ttl_secs
                .map_or(ichido_domain::tokencache::DEFAULT_TTL, Duration::from_secs),
            cookie_secure: self.cookie_secure.unwrap_or(false),
        })
    }
}

/// `ichido.key` beside the SQLite database file, else in the working directory.
pub fn default_key_file(database: &str) -> PathBuf {
    let file = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|p| !p.is_empty() && !p.contains(":memory:"));
    match file.and_then(|f| Path::new(f).parent()) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ichido.key"),
        _ => PathBuf::from("ichido.key"),
    }
}

/// The resolved configuration of one `ichido serve`.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub database: String,
    pub master_key_file: PathBuf,
    pub log_json: bool,
    pub policy: Policy,
    pub password: PasswordParams,
    pub store: StoreOptions,
    pub rate: RateSettings,
    pub key_cache_size: usize,
    pub token_cache_ttl: Duration,
    pub cookie_secure: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("database", &redact_url(&self.database))
            .field("master_key_file", &self.master_key_file)
            .field("policy", &self.policy)
            .field("password", &self.password)
            .field("store", &self.store)
            .field("rate", &self.rate)
            .field("key_cache_size", &self.key_cache_size)
            .field("token_cache_ttl", &self.token_cache_ttl)
            .field("cookie_secure", &self.cookie_secure)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layers_and_defaults() {
        let file: Settings =
            toml::from_str("listen = \"127.0.0.1:9000\"\nevent_look_ahead = 20\n").unwrap();
        let flags = Settings {
            event_look_ahead: Some(30),
            ..Settings::default()
        };
        let cfg = file.overlay(flags).resolve().unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.policy.event_look_ahead, 30);
        assert_eq!(cfg.policy.time_window, 1);
        assert_eq!(cfg.database, "sqlite://ichido.db");
        assert_eq!(cfg.master_key_file, PathBuf::from("ichido.key"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Settings>("event_lookahead = 20").is_err());
        let bad = Settings {
            digits: Some(9),
            ..Settings::default()
        };
        assert!(bad.resolve().is_err());
        let bad = Settings {
            listen: Some("nowhere".into()),
            ..Settings::default()
        };
        assert!(bad.resolve().is_err());
        let bad = Settings {
            token_lock_threshold: Some(0),
            ..Settings::default()
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn key_file_sits_beside_the_database() {
        assert_eq!(
            default_key_file("sqlite:///var/lib/ichido/ichido.db"),
            PathBuf::from("/var/lib/ichido/ichido.key")
        );
        assert_eq!(
            default_key_file("sqlite://data/x.db?mode=rwc"),
            PathBuf::from("data/ichido.key")
        );
        assert_eq!(
            default_key_file("postgres://h/db"),
            PathBuf::from("ichido.key")
        );
    }
}
