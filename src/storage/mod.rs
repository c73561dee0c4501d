//! The database: one pool over PostgreSQL or SQLite, migrations per dialect, and one function per
//! query, grouped by table in the submodules. Nothing here knows HTTP.
//!
//! Queries go through sqlx's `Any` driver so that each is written once where the dialects agree
//! (`$n` placeholders, `ON CONFLICT`, `RETURNING` work in both); flags are stored as 0/1 integers
//! and timestamps as milliseconds so that both dialects decode to the same Rust types.

mod backup;
mod batch;
mod delivery;
mod devices;
mod events;
mod head_insert;
mod kept_connections;
mod keys;
mod presence;
mod profile;
mod push;
mod relations;
mod room_write;
mod rooms;
mod search;
mod sync_news;
mod sync_start;
mod uia;
mod users;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use kept_connections::{KeptConnection, KeptConnections};
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
    pool::PoolConnectionMetadata,
    AnyConnection, AnyPool, Connection, Executor,
};

pub use backup::{BackupKeyRow, BackupVersionRow};
pub use delivery::{AccountDataRow, ReceiptRow, ToDeviceRow};
pub use devices::{DeviceRow, SessionRow, SESSIONS_CHANNEL};
pub use events::EventRow;
pub use head_insert::StoredMessage;
pub use keys::DeviceKeysRow;
pub use presence::PresenceRow;
pub use push::{
    EvaluationBatch, MessageAction, MessageEvaluation, NewPushAction, NewQueuedPush, NotificationRow, PusherRow,
    QueuedPush,
};
pub use relations::{RelatedRow, RelationQuery, ThreadReply};
pub use room_write::{EventLinks, NewEvent, NewRelation, RoomWrite};
pub use rooms::RoomRow;
pub use search::{DirectoryRow, EventSearch};
pub use sync_news::{NewsSnapshot, RoomNews, UnreadCount};
pub use sync_start::SyncStart;
pub use uia::UiaSessionRow;
pub use users::UserRow;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Failure to open or migrate the database at start: reported as one line naming the URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("database {url}: migration failed: {message}")]
    Migrate { url: String, message: String },
}

#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    /// PostgreSQL: a few connections for what a room writer does while holding its room's lock
    /// (reserving event positions, reloading a stale cache), never from the main pool, whose
    /// connections may all be waiting for that lock.
    reservations: Option<AnyPool>,
    /// PostgreSQL: connections kept out of the pool and of `reservations`, for the statements
    /// every message makes (see [`kept_connections`]).
    kept: Option<Arc<KeptConnections>>,
    kept_for_reservations: Option<Arc<KeptConnections>>,
    backend: Backend,
    batches: Arc<Batches>,
}

/// The reads that woken syncs share, and the writes of concurrent senders (PostgreSQL; see [`batch`]).
struct Batches {
    sync_start: Arc<batch::Batcher<sync_start::SyncStartRequest, SyncStart>>,
    room_news: Arc<batch::Batcher<sync_news::RoomNewsRequest, RoomNews>>,
    messages: Arc<batch::Batcher<head_insert::HeadInsert, crate::error::Result<Option<head_insert::StoredMessage>>>>,
    positions: Arc<batch::Batcher<i64, i64>>,
}

impl Batches {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            sync_start: batch::Batcher::new(sync_start::sync_start_batch),
            room_news: batch::Batcher::new(sync_news::room_news_batch),
            messages: batch::Batcher::new(head_insert::insert_messages_batch),
            positions: batch::Batcher::new(head_insert::reserve_positions_batch),
        })
    }
}

impl Storage {
    /// Opens the pool for `url` (creating a SQLite file and its folder when missing). Migrations
    /// are applied separately by [`Storage::migrate`].
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let shown = redact_password(url);
        let connect_err = |message: String| OpenError::Connect { url: shown.clone(), message };

        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            if file != ":memory:" {
                if let Some(parent) = Path::new(file).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| connect_err(format!("cannot create {}: {e}", parent.display())))?;
                }
            }
            let url = if path.contains("mode=") {
                format!("sqlite://{path}")
            } else if path.contains('?') {
                format!("sqlite://{path}&mode=rwc")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_owned())
        };

        let options = AnyConnectOptions::from_str(&url).map_err(|e| connect_err(e.to_string()))?;
        let reservations = match backend {
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .before_acquire(ping_if_idle)
                    .after_connect(move |conn, _| Box::pin(configure_session(conn, backend)))
                    .connect_with(options.clone())
                    .await
                    .map_err(|e| connect_err(e.to_string()))?,
            ),
            Backend::Sqlite => None,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(ping_if_idle)
            .after_connect(move |conn, _| Box::pin(configure_session(conn, backend)))
            .connect_with(options)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // As many as the batches of each kind that run at once, over the kinds that use them.
        let kept = (backend == Backend::Postgres).then(|| KeptConnections::new(pool.clone(), KEPT_CONNECTIONS));
        let kept_for_reservations = reservations.clone().map(|side| KeptConnections::new(side, KEPT_FOR_RESERVATIONS));
        Ok(Self { pool, reservations, kept, kept_for_reservations, backend, batches: Batches::new() })
    }

    /// Applies the migrations of this backend's dialect that have not run yet.
    pub async fn migrate(&self) -> Result<(), OpenError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| OpenError::Migrate { url: self.backend_name().to_owned(), message: e.to_string() })
    }

    /// PostgreSQL: this storage reading through the side pool, for reads made while a room's lock
    /// is held (reads never wait on row locks there, so these connections always come back).
    /// `None` on SQLite, whose one process never finds its cache stale under the lock.
    pub fn side_reader(&self) -> Option<Storage> {
        self.reservations.as_ref().map(|side| Storage {
            pool: side.clone(),
            reservations: Some(side.clone()),
            kept: None,
            kept_for_reservations: None,
            backend: self.backend,
            // Its own: a batch runs on the pool of the storage that started it.
            batches: Batches::new(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    pub async fn close(&self) {
        for kept in self.kept.iter().chain(&self.kept_for_reservations) {
            kept.close().await;
        }
        self.pool.close().await;
        if let Some(reservations) = &self.reservations {
            reservations.close().await;
        }
    }
}

/// Holds the exclusive lock that makes one process the owner of a SQLite database file.
pub struct SqliteOwner {
    _file: std::fs::File,
}

/// SQLite is for one process: a second `axon serve` on the same file refuses to start (several
/// processes need PostgreSQL). `None` for PostgreSQL and in-memory databases.
pub fn own_sqlite_file(url: &str) -> Result<Option<SqliteOwner>, OpenError> {
    let Some(path) = url.strip_prefix("sqlite:") else { return Ok(None) };
    let path = path.trim_start_matches("//");
    let file = path.split('?').next().unwrap_or(path);
    if file == ":memory:" {
        return Ok(None);
    }
    let lock_path = format!("{file}.lock");
    let err = |message: String| OpenError::Connect { url: url.to_owned(), message };
    // The database's folder is created when missing, as for the database itself.
    if let Some(parent) = Path::new(file).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(format!("cannot open {lock_path}: {e}")))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(SqliteOwner { _file: lock })),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(err("another axon process is serving this SQLite database; SQLite allows one process \
             (use PostgreSQL to run several)"
                .into()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(err(format!("cannot lock {lock_path}: {e}"))),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages and logs.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Kept connections (see [`kept_connections`]) for the main pool's per-message statements (inserts,
/// room news, sync starts, push records), and for reservations.
const KEPT_CONNECTIONS: usize = 8;
const KEPT_FOR_RESERVATIONS: usize = 2;

impl Storage {
    /// A connection for one of the statements every message makes: kept out of the pool when one
    /// is free (PostgreSQL), else a pooled one.
    async fn kept_connection(&self) -> crate::error::Result<KeptConnection> {
        match &self.kept {
            Some(kept) => kept.connection().await,
            None => Ok(KeptConnection::pooled(self.pool.acquire().await?)),
        }
    }

    /// [`Self::kept_connection`] for reserving event positions, from the side pool.
    async fn kept_connection_for_reservations(&self) -> crate::error::Result<KeptConnection> {
        match (&self.kept_for_reservations, &self.reservations) {
            (Some(kept), _) => kept.connection().await,
            (None, Some(side)) => Ok(KeptConnection::pooled(side.acquire().await?)),
            (None, None) => Ok(KeptConnection::pooled(self.pool.acquire().await?)),
        }
    }
}

/// A connection idle this long is tested before use (the database may have restarted meanwhile).
const PING_AFTER_IDLE: Duration = Duration::from_secs(2);

/// sqlx pings every connection as it returns to the pool, and by default pings it again when it is
/// taken out: on PostgreSQL that second ping is a round trip before every statement, on the
/// delivery path, for a connection checked moments before. Only a connection that has been idle
/// for a while is tested again.
fn ping_if_idle(conn: &mut AnyConnection, meta: PoolConnectionMetadata) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= PING_AFTER_IDLE {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// What every new connection sets for its session.
async fn configure_session(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        // WAL lets readers run beside the writer; FULL makes every acknowledged commit survive a
        // crash of the process or of the machine.
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
        )
        .await?;
        return Ok(());
    }
    // Without planner statistics (autovacuum off, or a young table) PostgreSQL overestimates the
    // cost of Axon's many-row reads past `jit_above_cost` and compiles them on every execution:
    // 8 ms of JIT for a 9 ms read of 200 rooms' state. Short indexed statements gain nothing from
    // JIT.
    //
    // Every statement is prepared once per connection (sqlx's statement cache). Left to choose,
    // PostgreSQL plans the delivery path's large statements again at every execution (a custom
    // plan, 0.3–1.2 ms of planning each), because its estimate of the generic plan comes out
    // higher. Their plans cannot profit from the parameters' values: they walk indexes one key at
    // a time (`LATERAL`) and carry their lists as JSON. Planned once, fan-out to 100 members
    // costs PostgreSQL about 20-25% less CPU. The price: a plan made while a table was nearly empty
    // (a new server) may scan it, and stays until autovacuum's ANALYZE invalidates it or the pool
    // replaces the connection (sqlx's `max_lifetime`, 30 minutes).
    conn.execute("SET jit = off; SET plan_cache_mode = force_generic_plan").await?;
    Ok(())
}

/// `$first, $first+1, …` for `count` bind parameters: the list of a dynamic `IN (…)`.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `($first), ($first+1), …`: a `VALUES` list of one-column rows, one per bind parameter.
fn value_rows(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("(${i})")).collect::<Vec<_>>().join(", ")
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_is_redacted() {
        assert_eq!(super::redact_password("postgres://u:pw@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(super::redact_password("sqlite://data/axon.db"), "sqlite://data/axon.db");
    }
}
