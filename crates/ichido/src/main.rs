//! `ichido`: the validation center's server and the bank's own tooling.

mod bench;

/// mimalloc instead of the C library's allocator: a request allocates and
/// frees many small buffers on two runtime threads, where glibc's malloc
/// spent a tenth of the server's time consolidating its free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ichido_domain::seal::MasterKey;
use ichido_domain::{Ichido, Policy, SystemClock};
use ichido_server::config::{unknown_env_names, Settings};
use ichido_store::StoreOptions;

/// ichido (一度, "once"): one-time-password validation center for internet banking.
///
/// Holds every soft token of the bank, sealed under a master key, and accepts
/// each one-time password exactly once.
#[derive(Parser)]
#[command(name = "ichido", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (operator, customer and validation APIs).
    ///
    /// Settings come from defaults, then the TOML file of --config, then
    /// ICHIDO_* environment variables, then flags. The master key is read from
    /// ICHIDO_MASTER_KEY (64 hex chars) or the master key file.
    Serve {
        /// TOML file with any of the settings below (same names, snake_case).
        #[arg(long, env = "ICHIDO_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Manage operators (bank staff and relying parties of the operator API).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Load-test a running server: create tokens, then validate fresh codes.
    ///
    /// Reports validations/s and p50/p99/p99.9 latency; exits 1 if the server
    /// ever accepted a wrong code or the same code twice.
    Bench(Box<bench::BenchArgs>),
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// Database URL.
        #[arg(
            long,
            env = "ICHIDO_DATABASE_URL",
            default_value = "sqlite://ichido.db"
        )]
        database: String,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator and print its API key (and nothing else) on stdout.
    ///
    /// The key is shown once and stored only as a hash. Works on an empty
    /// database: the schema is created first.
    Create {
        /// The operator's name, e.g. "branch-ops" or "netbank-app".
        name: String,
        /// Database URL.
        #[arg(
            long,
            env = "ICHIDO_DATABASE_URL",
            default_value = "sqlite://ichido.db"
        )]
        database: String,
    },
    /// Give an operator console sign-in (password and a TOTP token of its own),
    /// or reissue it; prints the token's otpauth URI (and nothing else) on stdout.
    ///
    /// Add the URI to an authenticator app (or any TOTP generator). Reissuing
    /// replaces the password and the token, clears a console lock and ends the
    /// operator's console sessions. The password is read from --password-file,
    /// else ICHIDO_OPERATOR_PASSWORD, else asked twice without echo. Needs the
    /// master key (the token's secret is sealed under it), found as `serve` finds it.
    Console {
        /// The operator's name (made with `ichido operator create`).
        name: String,
        /// Database URL.
        #[arg(
            long,
            env = "ICHIDO_DATABASE_URL",
            default_value = "sqlite://ichido.db"
        )]
        database: String,
        /// The master key file [default: ichido.key beside the SQLite database].
        #[arg(long, env = "ICHIDO_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// A file whose first line is the console password (for scripts).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain from its first event to its last.
    ///
    /// Exits 0 when intact, 1 when an event was altered or removed.
    Verify {
        /// Database URL.
        #[arg(
            long,
            env = "ICHIDO_DATABASE_URL",
            default_value = "sqlite://ichido.db"
        )]
        database: String,
    },
}

/// Logs to stderr through a writer thread, so that a burst of log lines (a
/// brute-force attempt logs every refused code) never blocks the runtime on
/// a write. Nothing is dropped: when 128k lines wait, callers wait too. Keep
/// the guard until exit; dropping it flushes what is queued.
#[must_use = "dropping the guard stops the log writer"]
fn init_logging(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ichido-log")
        .finish(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

/// A domain for tooling that never opens a token secret (no master key needed).
async fn tooling_domain(database: &str) -> anyhow::Result<Ichido> {
    let store = ichido_store::open(database, &StoreOptions::default()).await?;
    // Creating operators and reading the audit log never touch sealed secrets,
    // so an ephemeral key serves and the real key file is left alone.
    Ok(Ichido::new(
        store,
        Arc::new(SystemClock),
        Policy::default(),
        MasterKey::generate(),
        Default::default(),
    )?)
}

/// The console password: from a file, the environment, or asked twice.
fn console_password(file: Option<&std::path::Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use zeroize::Zeroizing;
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        return Ok(Zeroizing::new(line.to_owned()));
    }
    if let Ok(p) = std::env::var("ICHIDO_OPERATOR_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    let first =
        Zeroizing::new(rpassword::prompt_password("console password: ").context(
            "cannot read the password (use --password-file or ICHIDO_OPERATOR_PASSWORD)",
        )?);
    let again =
        Zeroizing::new(rpassword::prompt_password("again: ").context("cannot read the password")?);
    if first != again {
        anyhow::bail!("the two passwords differ");
    }
    Ok(first)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, settings } => {
            let file = match &config {
                Some(path) => Settings::from_file(path)?,
                None => Settings::default(),
            };
            let cfg = file.overlay(*settings).resolve()?;
            let _log = init_logging(cfg.log_json);
            for name in unknown_env_names() {
                tracing::warn!(%name, "unknown ICHIDO_* environment variable ignored");
            }
            tracing::debug!(config = ?cfg, "configuration");
            ichido_server::serve::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator {
            command: OperatorCommand::Create { name, database },
        } => {
            let _log = init_logging(false);
            let ichido = tooling_domain(&database).await?;
            let (_op, key) = ichido
                .create_operator(&name)
                .await
                .context("cannot create the operator")?;
            println!("{}", key.0.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator {
            command:
                OperatorCommand::Console {
                    name,
                    database,
                    master_key_file,
                    password_file,
                },
        } => {
            let _log = init_logging(false);
            let password = console_password(password_file.as_deref())?;
            let key_file = master_key_file
                .unwrap_or_else(|| ichido_server::config::default_key_file(&database));
            let key = ichido_server::serve::load_master_key(&key_file)?;
            let store = ichido_store::open(&database, &StoreOptions::default()).await?;
            let ichido = Ichido::new(
                store,
                Arc::new(SystemClock),
                Policy::default(),
                key,
                Default::default(),
            )?;
            ichido.check_master_key().await?;
            let uri = ichido
                .set_console_credentials(&name, &password)
                .await
                .context("cannot set the console credentials")?;
            println!("{}", uri.as_str());
            eprintln!(
                "add this otpauth URI to the operator's authenticator app; it is not shown again"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { database },
        } => {
            let _log = init_logging(false);
            let ichido = tooling_domain(&database).await?;
            let report = ichido
                .verify_audit_chain(|n| eprint!("\rchecked {n} events"))
                .await
                .context("cannot read the audit log")?;
            eprintln!();
            match report.fault {
                None => {
                    println!("audit log intact: {} events", report.checked);
                    Ok(ExitCode::SUCCESS)
                }
                Some(fault) => {
                    println!(
                        "audit log BROKEN after {} good events: {fault:?}",
                        report.checked
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Bench(args) => {
            let _log = init_logging(false);
            let clean = bench::run(*args).await?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Migrate { database } => {
            let _log = init_logging(false);
            ichido_store::open(&database, &StoreOptions::default())
                .await
                .with_context(|| {
                    format!(
                        "cannot open or migrate {}",
                        ichido_store::redact_url(&database)
                    )
                })?;
            println!("database is up to date");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ichido: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ichido: {e:#}");
            ExitCode::from(2)
        }
    }
}
