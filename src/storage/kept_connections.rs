//! Connections kept out of the pool for the statements every message makes (PostgreSQL).
//!
//! sqlx 0.8 tests each connection as it goes back to its pool, unconditionally: a Sync and a wait
//! for ReadyForQuery, one more round trip after every statement, paid in CPU by both sides (a bare
//! Sync round trip costs PostgreSQL about what `SELECT 1` does). A connection kept here is taken out
//! of its pool once and handed from statement to statement without that test. It goes back only
//! when its statement finished ([`KeptConnection::keep`]): one that failed or was cancelled part
//! way, whose state is unknown, is closed instead.

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex},
    time::Instant,
};

use sqlx::{pool::PoolConnection, Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PING_AFTER_IDLE;
use crate::error::Result;

/// Connections kept out of `pool`, at most as many as the permits; beyond, statements take pooled ones.
pub(super) struct KeptConnections {
    pool: AnyPool,
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    permits: Arc<Semaphore>,
}

impl KeptConnections {
    pub(super) fn new(pool: AnyPool, most: usize) -> Arc<Self> {
        Arc::new(Self { pool, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(most)) })
    }

    /// A connection for one statement: a kept one when a permit is free, else one from the pool.
    pub(super) async fn connection(self: &Arc<Self>) -> Result<KeptConnection> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(KeptConnection::pooled(self.pool.acquire().await?));
        };
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut connection, since)) = idle else { break };
            // As the pool does before handing out a connection that sat idle (`ping_if_idle`).
            if since.elapsed() < PING_AFTER_IDLE || connection.ping().await.is_ok() {
                return Ok(KeptConnection(Held::Kept(connection, permit, self.clone())));
            }
        }
        // A new one: the pool opens another in its place when it needs one.
        let connection = self.pool.acquire().await?.detach();
        Ok(KeptConnection(Held::Kept(connection, permit, self.clone())))
    }

    /// Closes the idle kept connections (the server is stopping).
    pub(super) async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (connection, _) in idle {
            let _ = connection.close().await;
        }
    }
}

enum Held {
    Kept(AnyConnection, OwnedSemaphorePermit, Arc<KeptConnections>),
    Pooled(PoolConnection<Any>),
}

/// See [`KeptConnections::connection`]. Dropped without [`Self::keep`], a kept connection is closed
/// (sqlx closes a connection it drops) and its permit freed.
pub(super) struct KeptConnection(Held);

impl KeptConnection {
    pub(super) fn pooled(connection: PoolConnection<Any>) -> Self {
        Self(Held::Pooled(connection))
    }

    /// Its statement finished: the connection serves the next one.
    pub(super) fn keep(self) {
        if let Held::Kept(connection, _permit, home) = self.0 {
            home.idle.lock().unwrap_or_else(|p| p.into_inner()).push((connection, Instant::now()));
        }
    }
}

impl Deref for KeptConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            Held::Kept(connection, _, _) => connection,
            Held::Pooled(connection) => connection,
        }
    }
}

impl DerefMut for KeptConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Held::Kept(connection, _, _) => connection,
            Held::Pooled(connection) => connection,
        }
    }
}
