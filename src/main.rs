//! The `axon` command: serve, migrate, create-user, reset-password.

use std::{io::Read, path::PathBuf, process::ExitCode};

use axon::{accounts::username::user_id_for_registration, config::Config, server, storage::Storage};
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "axon", version, about = "A Matrix homeserver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (applies pending migrations first).
    Serve {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Create an account.
    CreateUser {
        /// The localpart of the new user ID.
        name: String,
        /// A file holding the password (`-` for standard input); a trailing newline is dropped.
        #[arg(long)]
        password_file: PathBuf,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Set a new password for an account and log out all of its devices.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_file: PathBuf,
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
}

/// What is logged unless `RUST_LOG` says otherwise; ruma's state resolution logs every event it
/// allows at info, which would double the log and cost the send path.
const DEFAULT_LOG: &str = "info,sqlx=warn,ruma_state_res=warn";

/// Exit code for a bad configuration or an unusable database.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG.into()))
        .init();
    // Before the runtime's threads and the server's heap grow.
    axon::memory::keep_pages_small();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("axon: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("axon: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn config_failure(e: impl std::fmt::Display) -> Failure {
    (EXIT_CONFIG, e.to_string())
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(config_failure)?;
            let running = server::start(config).await.map_err(config_failure)?;
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            running.shutdown().await;
            Ok(())
        }
        Command::Migrate { config } => {
            let storage = open(&config).await?.1;
            storage.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::CreateUser { name, password_file, admin, config } => {
            let password = read_password(&password_file)?;
            let (config, storage) = open(&config).await?;
            let accounts = axon::accounts::Accounts::new(storage.clone(), config.server_name.clone(), None);
            let result = accounts.register(Some(&name), Some(&password), admin).await;
            storage.close().await;
            let user_id = result.map_err(|e| (1, format!("cannot create {name}: {e}")))?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            Ok(())
        }
        Command::ResetPassword { name, password_file, config } => {
            let password = read_password(&password_file)?;
            let (config, storage) = open(&config).await?;
            let accounts = axon::accounts::Accounts::new(storage.clone(), config.server_name.clone(), None);
            let result = async {
                let user_id = user_id_for_registration(&name, &config.server_name)?;
                if !accounts.is_active_user(&user_id).await? {
                    return Ok(None);
                }
                accounts.set_password(&user_id, &password).await?;
                accounts.delete_other_devices(&user_id, None).await?;
                Ok::<_, axon::error::Error>(Some(user_id))
            }
            .await;
            storage.close().await;
            match result {
                Ok(Some(user_id)) => {
                    println!("password of {user_id} reset; all its devices are logged out");
                    Ok(())
                }
                Ok(None) => Err((1, format!("no active account named {name}"))),
                Err(e) => Err((1, format!("cannot reset the password of {name}: {e}"))),
            }
        }
    }
}

async fn open(path: &std::path::Path) -> Result<(Config, Storage), Failure> {
    let config = Config::load(path).map_err(config_failure)?;
    let storage = Storage::open(&config.database.url, config.database.max_connections).await.map_err(config_failure)?;
    storage.migrate().await.map_err(config_failure)?;
    Ok((config, storage))
}

fn read_password(path: &std::path::Path) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| (EXIT_CONFIG, format!("cannot read password file {}: {e}", path.display())))?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned();
    if password.is_empty() {
        return Err((EXIT_CONFIG, format!("password file {} is empty", path.display())));
    }
    Ok(password)
}

/// SIGTERM (service managers) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
