//! Starting the validation center: master key, store, domain, socket, background
//! sweeper, graceful shutdown.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ichido_domain::seal::MasterKey;
use ichido_domain::{Ichido, SystemClock};

use crate::config::ServerConfig;
use crate::{app, AppState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(transparent)]
    Store(#[from] ichido_store::OpenError),
    #[error("{0}")]
    Domain(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The master key from `ICHIDO_MASTER_KEY`, else from `file`, which is created
/// (mode 0600) with a fresh key if missing.
pub fn load_master_key(file: &Path) -> Result<MasterKey, ServeError> {
    if let Ok(hex) = std::env::var("ICHIDO_MASTER_KEY") {
        return MasterKey::from_hex(&hex)
            .map_err(|e| ServeError::MasterKey(format!("ICHIDO_MASTER_KEY: {e}")));
    }
    match std::fs::read_to_string(file) {
        Ok(text) => {
            warn_if_readable_by_others(file);
            MasterKey::from_hex(&text)
                .map_err(|e| ServeError::MasterKey(format!("{}: {e}", file.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            write_new_key_file(file, &key).map_err(|e| {
                ServeError::MasterKey(format!("cannot create {}: {e}", file.display()))
            })?;
            tracing::warn!(file = %file.display(), "created a new master key; back it up: without it no token can be used");
            Ok(key)
        }
        Err(e) => Err(ServeError::MasterKey(format!(
            "cannot read {}: {e}",
            file.display()
        ))),
    }
}

fn write_new_key_file(file: &Path, key: &MasterKey) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(file)?;
    f.write_all(key.to_hex().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn warn_if_readable_by_others(file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %file.display(), "master key file is readable by group or others; chmod 600 it");
            }
        }
    }
}

/// Opens the store and builds the domain, checking the master key against the data.
pub async fn build(cfg: &ServerConfig) -> Result<Arc<Ichido>, ServeError> {
    let store = ichido_store::open(&cfg.database, &cfg.store).await?;
    let key = load_master_key(&cfg.master_key_file)?;
    let ichido = Ichido::new(
        store,
        Arc::new(SystemClock),
        cfg.policy.clone(),
        key,
        cfg.password,
    )
    .map_err(|e| ServeError::Domain(e.to_string()))?
    .with_key_cache(cfg.key_cache_size)
    .with_token_cache_ttl(cfg.token_cache_ttl);
    ichido
        .check_master_key()
        .await
        .map_err(|e| ServeError::MasterKey(e.to_string()))?;
    Ok(Arc::new(ichido))
}

/// Serves until SIGINT or SIGTERM. Prints `ichido listening on http://ADDR` on stdout.
pub async fn run(cfg: ServerConfig) -> Result<(), ServeError> {
    let ichido = build(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let state =
        AppState::with_limits(Arc::clone(&ichido), cfg.rate).with_secure_cookies(cfg.cookie_secure);
    let sweeper = tokio::spawn(housekeeping(Arc::clone(&ichido), Arc::clone(&state.limits)));
    tracing::info!(%addr, database = %ichido_store::redact_url(&cfg.database), "ichido listening");
    println!("ichido listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let router = app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    sweeper.abort();
    tracing::info!("ichido stopped");
    Ok(())
}

/// Every minute: discard expired pending tokens, purge ended sessions, forget
/// idle rate-limit keys.
async fn housekeeping(ichido: Arc<Ichido>, limits: Arc<crate::limits::Limits>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = ichido.discard_expired_pending().await {
            tracing::warn!(error = %e, "pending-token sweep failed");
        }
        if let Err(e) = ichido.purge_sessions().await {
            tracing::warn!(error = %e, "session purge failed");
        }
        limits.shrink();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
