//! Writing events: one transaction per event of one room, under the room's lock ([`RoomWrite`]),
//! with the event's edges, state, membership and client transaction. On PostgreSQL its event is
//! stored at a reserved position by the statement of a message at its room's head
//! ([`super::head_insert`]), with the rest around it.

use sqlx::{Any, Row, Transaction};

use super::{
    events::{event_row, EventRow, EVENT_COLUMNS},
    head_insert::insert_event_at_head,
    placeholders, Backend, Storage,
};
use crate::error::{Error, Result};

/// What links a new event into its room besides its row (see [`RoomWrite::insert_linked_event`]).
pub struct EventLinks<'a> {
    pub prev_events: &'a [&'a str],
    /// Stored as edges for state events only (see [`stored_auth_edges`]).
    pub auth_events: &'a [&'a str],
    /// `(user_id, device_id, transaction key)` of a client's send, so that a retry finds the event.
    pub transaction: Option<(&'a str, &'a str, &'a str)>,
}

/// The auth edges stored for a new event. Only state events are reached through other events'
/// `auth_events`, so only theirs are walked (`Storage::auth_chain`); a message's come from its PDU
/// when asked for. A message is most events, and this spares it three rows and their index entries.
pub(super) fn stored_auth_edges<'a>(e: &NewEvent<'_>, links: &EventLinks<'a>) -> &'a [&'a str] {
    if e.state_key.is_some() {
        links.auth_events
    } else {
        &[]
    }
}

/// Binds an event's columns as `$1`–`$13`, in the order the event INSERTs list them.
pub(super) fn bind_event<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    stream_ordering: Option<i64>,
    e: &NewEvent<'q>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(stream_ordering)
        .bind(e.event_id)
        .bind(e.room_id)
        .bind(e.depth)
        .bind(e.event_type)
        .bind(e.state_key)
        .bind(e.sender)
        .bind(e.origin_server_ts)
        .bind(e.state_snapshot)
        .bind(e.pdu)
        .bind(e.replaces_state)
        .bind(e.relation.map(|r| r.parent))
        .bind(e.relation.map(|r| r.rel_type))
}

/// The parent an event names in `content.m.relates_to` (spec: "Forming relationships between events").
#[derive(Clone, Copy)]
pub struct NewRelation<'a> {
    pub parent: &'a str,
    pub rel_type: &'a str,
    /// A relation whose children are aggregated with their parent (m.thread, m.replace, m.reference):
    /// the parent is marked `has_relations`.
    pub bundled: bool,
}

/// A new event to persist.
pub struct NewEvent<'a> {
    /// A position reserved with [`Storage::reserve_event_position`] (PostgreSQL), or `None` to let
    /// the database assign the next one (SQLite, where writes are serialized anyway).
    pub stream_ordering: Option<i64>,
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub depth: i64,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub state_snapshot: i64,
    pub pdu: &'a str,
    /// The text full-text search indexes for this event (see `rooms::search`), if any.
    pub search_text: Option<&'a str>,
    pub replaces_state: Option<&'a str>,
    pub relation: Option<NewRelation<'a>>,
}

/// The transaction in which one event of one room is persisted. It begins by updating the room's
/// row, which holds the room's write lock (a row lock on PostgreSQL, the database write lock on
/// SQLite) until commit: writers of one room are serialized across processes.
pub struct RoomWrite {
    tx: Transaction<'static, Any>,
    backend: Backend,
    /// The room's head when the write began (and, the room's row being locked, still).
    head: i64,
}

impl Storage {
    /// Begins a room write; returns it with the room's head stream ordering and, for a
    /// `(user, device, key)` transaction, the event that transaction already produced; `None` when
    /// the room does not exist. The transaction is looked up under the room's lock, in the same
    /// statement: a send pays no round trip for it.
    pub async fn begin_room_write(
        &self,
        room_id: &str,
        transaction: Option<(&str, &str, &str)>,
    ) -> Result<Option<(RoomWrite, i64, Option<String>)>> {
        let mut tx = self.pool.begin().await?;
        let (user_id, device_id, key) = transaction.unwrap_or_default();
        let head = sqlx::query(
            "UPDATE rooms SET head_stream = head_stream WHERE room_id = $1 RETURNING head_stream, \
             (SELECT event_id FROM event_transactions WHERE user_id = $2 AND device_id = $3 AND txn_id = $4)",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(device_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(head.map(|r| (RoomWrite { tx, backend: self.backend, head: r.get(0) }, r.get(0), r.get(1))))
    }
}

impl RoomWrite {
    /// Persists a new event with its DAG edges, as the room's only forward extremity (replacing
    /// the events it references), under its transaction ID, and as the room's head; returns its
    /// position. On PostgreSQL, with its reserved position, all of it is one statement (the one a
    /// message's fast path runs on its own): a send is the hot path, and every round trip costs
    /// both processes CPU.
    pub async fn insert_linked_event(&mut self, e: &NewEvent<'_>, links: &EventLinks<'_>) -> Result<i64> {
        if self.backend == Backend::Sqlite {
            let stream = self.insert_sqlite_event(e).await?;
            self.insert_edges(e.event_id, links.prev_events, stored_auth_edges(e, links)).await?;
            self.replace_forward_extremities(e.room_id, links.prev_events, e.event_id).await?;
            if let Some((user_id, device_id, txn_id)) = links.transaction {
                self.insert_transaction_id(user_id, device_id, txn_id, e.event_id).await?;
            }
            self.set_head_stream(e.room_id, stream).await?;
            if let Some(relation) = e.relation.filter(|r| r.bundled) {
                self.mark_has_relations(e.room_id, relation.parent).await?;
            }
            return Ok(stream);
        }
        // The room's row is locked since the write began: its head is still the one read then, and
        // the transaction ID was found unused then.
        insert_event_at_head(&mut *self.tx, self.head, e, links, None)
            .await?
            .map(|(position, _)| position)
            .ok_or_else(|| Error::internal("the room's head moved under its lock"))
    }

    /// The event's row on SQLite, whose single writer numbers it, and its FTS5 entry.
    async fn insert_sqlite_event(&mut self, e: &NewEvent<'_>) -> Result<i64> {
        let sql = "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, sender, \
                   origin_server_ts, state_snapshot, pdu, replaces_state, relates_to, rel_type) VALUES (COALESCE($1, \
                   (SELECT COALESCE(MAX(stream_ordering), 0) + 1 FROM events)), $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                   $11, $12, $13) RETURNING stream_ordering";
        let stream: i64 = bind_event(sqlx::query(sql), e.stream_ordering, e).fetch_one(&mut *self.tx).await?.get(0);
        if let Some(text) = e.search_text {
            sqlx::query("INSERT INTO event_search (rowid, body) VALUES ($1, $2)")
                .bind(stream)
                .bind(text)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(stream)
    }

    /// Marks the parent of a new bundled relation (SQLite; PostgreSQL does it in the event's statement).
    async fn mark_has_relations(&mut self, room_id: &str, parent: &str) -> Result<()> {
        sqlx::query("UPDATE events SET has_relations = 1 WHERE event_id = $1 AND room_id = $2 AND has_relations = 0")
            .bind(parent)
            .bind(room_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records `prev_events` and `auth_events` edges of a new event.
    async fn insert_edges(&mut self, event_id: &str, prev_events: &[&str], auth_events: &[&str]) -> Result<()> {
        for (table, column, targets) in
            [("event_edges", "prev_event_id", prev_events), ("event_auth_edges", "auth_event_id", auth_events)]
        {
            if targets.is_empty() {
                continue;
            }
            let values: Vec<String> = (0..targets.len()).map(|i| format!("($1, ${})", i + 2)).collect();
            let sql =
                format!("INSERT INTO {table} (event_id, {column}) VALUES {} ON CONFLICT DO NOTHING", values.join(", "));
            let mut query = sqlx::query(&sql).bind(event_id);
            for target in targets {
                query = query.bind(*target);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The new event becomes the room's forward extremity, replacing the events it references.
    async fn replace_forward_extremities(&mut self, room_id: &str, referenced: &[&str], new: &str) -> Result<()> {
        if !referenced.is_empty() {
            let sql = format!(
                "DELETE FROM room_forward_extremities WHERE room_id = $1 AND event_id IN ({})",
                placeholders(2, referenced.len())
            );
            let mut query = sqlx::query(&sql).bind(room_id);
            for id in referenced {
                query = query.bind(*id);
            }
            query.execute(&mut *self.tx).await?;
        }
        sqlx::query("INSERT INTO room_forward_extremities (room_id, event_id) VALUES ($1, $2)")
            .bind(room_id)
            .bind(new)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_current_state(
        &mut self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        event_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO room_current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .bind(event_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_membership(
        &mut self,
        room_id: &str,
        user_id: &str,
        membership: &str,
        event_id: &str,
        stream: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, forgotten) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             membership = excluded.membership, event_id = excluded.event_id, \
             stream_ordering = excluded.stream_ordering, forgotten = 0",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(membership)
        .bind(event_id)
        .bind(stream)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_transaction_id(
        &mut self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
        event_id: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO event_transactions (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)")
            .bind(user_id)
            .bind(device_id)
            .bind(txn_id)
            .bind(event_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// An event, read inside the write (the room's lock is held: no other connection may be used).
    pub async fn event(&mut self, event_id: &str) -> Result<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        Ok(sqlx::query(&sql).bind(event_id).fetch_optional(&mut *self.tx).await?.map(event_row))
    }

    /// Replaces an event's PDU by its redacted form.
    pub async fn redact_event(&mut self, event_id: &str, redacted_pdu: &str, redacted_by: &str) -> Result<()> {
        // The redacted text leaves the search index with the content, and the relation with
        // `m.relates_to`.
        let sql = match self.backend {
            Backend::Postgres => {
                "UPDATE events SET pdu = $2, redacted_by = $3, search_vector = NULL, relates_to = NULL, \
                 rel_type = NULL WHERE event_id = $1"
            }
            Backend::Sqlite => {
                "UPDATE events SET pdu = $2, redacted_by = $3, relates_to = NULL, rel_type = NULL WHERE event_id = $1"
            }
        };
        sqlx::query(sql).bind(event_id).bind(redacted_pdu).bind(redacted_by).execute(&mut *self.tx).await?;
        if self.backend == Backend::Sqlite {
            sqlx::query(
                "DELETE FROM event_search WHERE rowid = (SELECT stream_ordering FROM events WHERE event_id = $1)",
            )
            .bind(event_id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// A new state snapshot: `parent` plus `entries` (type, state key, event ID).
    pub async fn insert_state_snapshot(
        &mut self,
        room_id: &str,
        parent: Option<i64>,
        chain_length: i64,
        entries: &[(&str, &str, &str)],
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO state_snapshots (room_id, parent_id, chain_length) VALUES ($1, $2, $3) RETURNING snapshot_id",
        )
        .bind(room_id)
        .bind(parent)
        .bind(chain_length)
        .fetch_one(&mut *self.tx)
        .await?;
        let snapshot_id: i64 = row.get(0);
        for chunk in entries.chunks(200) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4)).collect();
            let sql = format!(
                "INSERT INTO state_snapshot_entries (snapshot_id, event_type, state_key, event_id) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(snapshot_id);
            for (event_type, state_key, event_id) in chunk {
                query = query.bind(*event_type).bind(*state_key).bind(*event_id);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(snapshot_id)
    }

    async fn set_head_stream(&mut self, room_id: &str, stream: i64) -> Result<()> {
        sqlx::query("UPDATE rooms SET head_stream = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(stream)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
