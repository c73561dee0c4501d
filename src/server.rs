//! Starting and stopping the server: open and migrate the database, bind the listeners, serve until
//! asked to stop, then let in-flight requests finish.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    config::Config,
    http,
    services::Services,
    storage::{Backend, OpenError, Storage},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] OpenError),
    #[error("cannot set up the server: {0}")]
    Setup(crate::error::Error),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen { key: &'static str, addr: SocketAddr, source: std::io::Error },
}

pub struct RunningServer {
    pub client_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub services: Services,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _sqlite_owner: Option<crate::storage::SqliteOwner>,
}

/// Opens the database, applies migrations and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let sqlite_owner = crate::storage::own_sqlite_file(&config.database.url)?;
    let storage = Storage::open(&config.database.url, config.database.max_connections).await?;
    storage.migrate().await?;

    let client = bind("listen.client", config.listen.client).await?;
    let metrics = match config.listen.metrics {
        Some(addr) => Some(bind("listen.metrics", addr).await?),
        None => None,
    };
    let client_addr = client.local_addr().map_err(|source| StartError::Listen {
        key: "listen.client",
        addr: config.listen.client,
        source,
    })?;
    let mut config = config;
    // Without a configured public URL, announce the address actually bound (the port may be 0).
    config.public_baseurl.get_or_insert_with(|| format!("http://{client_addr}"));
    let (stop, stopped) = watch::channel(false);
    let services = Services::new(config, storage, stopped.clone()).await.map_err(StartError::Setup)?;

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(http::connections::serve(client, http::router(services.clone()), stopped.clone())));
    let mut metrics_addr = None;
    if let Some(listener) = metrics {
        metrics_addr = listener.local_addr().ok();
        tasks.push(tokio::spawn(http::connections::serve(
            listener,
            http::metrics::router(services.clone()),
            stopped.clone(),
        )));
    }
    if services.storage.backend() == Backend::Postgres {
        // Other processes may share the database: exchange wake-ups with them.
        crate::sync::bus::start(services.clone(), &services.config.database.url)
            .await
            .map_err(|e| StartError::Setup(crate::error::Error::Database(e)))?;
    }
    tasks.push(tokio::spawn(crate::push::evaluator::run(
        services.push.clone(),
        services.sync.events().clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(crate::push::gateway::run(services.push.clone(), stopped.clone())));
    tasks.push(tokio::spawn(housekeeping(services.clone(), stopped)));
    tracing::info!(%client_addr, server_name = %services.config.server_name, "axon is serving");
    Ok(RunningServer { client_addr, metrics_addr, services, stop, tasks, _sqlite_owner: sqlite_owner })
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { key, addr, source })
}

/// A reservation of an event position older than this belongs to a writer that died before
/// committing (a crash): no honest write takes this long between reserving and committing.
const STALE_RESERVATION: Duration = Duration::from_secs(30);

/// Periodic upkeep that must not grow with the number of users: typing expiry (only rooms where
/// someone types), presence deadlines (only the due ones), idle rate-limit buckets and notifier
/// entries, and reservations of event positions whose writer died.
async fn housekeeping(services: Services, mut stopped: watch::Receiver<bool>) {
    let mut typing = tokio::time::interval(Duration::from_millis(250));
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    // A reservation whose writer died holds back every process's syncs until it is dropped: at
    // most STALE_RESERVATION plus this period. Only PostgreSQL reserves positions in the database.
    let mut reservations = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = typing.tick() => {
                if let Err(e) = services.sync.presence().expire().await {
                    tracing::warn!(error = %e, "presence timers");
                }
                for room_id in services.sync.typing().expire() {
                    if let Ok(room_id) = ruma::RoomId::parse(&room_id) {
                        if let Err(e) = services.rooms.wake_members(&room_id).await {
                            tracing::warn!(error = %e, "waking typing readers");
                        }
                    }
                }
            }
            _ = minute.tick() => {
                services.auth_limiter.forget_idle();
                services.sync.notifier().forget_idle();
            }
            _ = reservations.tick(), if services.storage.shares_event_positions() => {
                let cutoff = crate::storage::now_ms() - STALE_RESERVATION.as_millis() as i64;
                if let Err(e) = services.storage.drop_stale_event_positions(cutoff).await {
                    tracing::warn!(error = %e, "dropping stale event positions");
                }
            }
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return;
                }
            }
        }
    }
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, and closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.services.storage.close().await;
    }
}
