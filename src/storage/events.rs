//! `events`, `event_edges`, `event_auth_edges`, `room_forward_extremities`, `room_current_state`,
//! `room_memberships`, `event_transactions`: reading stored events back (writing them is
//! `room_write`).

use std::sync::LazyLock;

use sqlx::{any::AnyRow, Row};

use super::{placeholders, value_rows, Backend, Storage};
use crate::error::Result;

/// Binds a list after the leading parameters of a query built with [`placeholders`].
macro_rules! bind_all {
    ($query:expr, $items:expr) => {{
        let mut query = $query;
        for item in $items {
            query = query.bind(*item);
        }
        query
    }};
}

/// A stored event as the room and client layers read it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub state_snapshot: i64,
    pub pdu: String,
    pub redacted_by: Option<String>,
    /// The state event this one replaced.
    pub replaces_state: Option<String>,
    /// Some event relates to this one with a relation the server bundles (see `rooms::relations`).
    pub has_relations: bool,
}

pub(super) const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, event_type, state_key, sender, \
                                        state_snapshot, pdu, redacted_by, replaces_state, has_relations";

/// How many columns [`EVENT_COLUMNS`] names: where the columns a statement reads after them start.
pub(super) fn event_column_count() -> usize {
    EVENT_COLUMNS.split(", ").count()
}

/// `NULL, NULL, …`, one per [`EVENT_COLUMNS`]: the event part of a UNION's rows that carry none.
pub(super) fn event_column_nulls() -> &'static str {
    static NULLS: LazyLock<String> =
        LazyLock::new(|| EVENT_COLUMNS.split(", ").map(|_| "NULL").collect::<Vec<_>>().join(", "));
    &NULLS
}

/// [`EVENT_COLUMNS`] of `events` under the alias `e`. Made once: syncs build statements with it.
pub(super) fn event_columns_of_e() -> &'static str {
    static COLUMNS: LazyLock<String> =
        LazyLock::new(|| EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", "));
    &COLUMNS
}

pub(super) fn event_row(r: AnyRow) -> EventRow {
    EventRow {
        stream_ordering: r.get(0),
        event_id: r.get(1),
        room_id: r.get(2),
        event_type: r.get(3),
        state_key: r.get(4),
        sender: r.get(5),
        state_snapshot: r.get(6),
        pdu: r.get(7),
        redacted_by: r.get(8),
        replaces_state: r.get(9),
        has_relations: r.get::<i64, _>(10) != 0,
    }
}

/// The newest events of the room `room` in the range `after < stream_ordering <= upto`, at most
/// `limit`, newest first (all four SQL expressions).
pub(super) fn newest_events(room: &str, after: &str, upto: &str, limit: &str) -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > {after} AND stream_ordering <= {upto} \
         AND room_id = {room} ORDER BY stream_ordering DESC LIMIT {limit}"
    )
}

/// [`newest_events`] of each of `count` rooms bound from `$first` on, as rows named `recent`
/// (PostgreSQL: one index range per room through `LATERAL`).
pub(super) fn newest_events_of_rooms(first: usize, count: usize) -> String {
    format!(
        "SELECT recent.* FROM (VALUES {}) AS r(room_id) CROSS JOIN LATERAL ({}) recent",
        value_rows(first, count),
        newest_events("r.room_id", "$1", "$2", "$3")
    )
}

impl Storage {
    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        Ok(sqlx::query(&sql).bind(event_id).fetch_optional(&self.pool).await?.map(event_row))
    }

    /// The events with these IDs that exist, in no particular order.
    pub async fn events(&self, event_ids: &[&str]) -> Result<Vec<EventRow>> {
        let mut found = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(500) {
            let sql =
                format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(event_row));
        }
        Ok(found)
    }

    /// Up to `limit` events of the room with `after < stream_ordering <= before`, newest first when
    /// `backwards`, else oldest first.
    pub async fn room_events(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let order = if backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
             ORDER BY stream_ordering {order} LIMIT $4"
        );
        let rows = sqlx::query(&sql).bind(room_id).bind(after).bind(before).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(event_row).collect())
    }

    /// Up to `limit` of the room's events at or after `ts` (oldest first) or at or before it
    /// (newest first), with their timestamps.
    pub async fn room_events_by_time(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
        limit: i64,
    ) -> Result<Vec<(EventRow, i64)>> {
        let (compare, order) = if forwards { (">=", "ASC") } else { ("<=", "DESC") };
        let fields = event_column_count();
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts {compare} $2 \
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(room_id).bind(ts).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let ts: i64 = r.get(fields);
                (event_row(r), ts)
            })
            .collect())
    }

    /// The room's state events of one type (and, if given, state key) up to a stream position,
    /// oldest first: the history of that piece of state.
    pub async fn state_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: Option<&str>,
        upto: i64,
    ) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND event_type = $2 AND state_key IS NOT NULL \
             AND ($3 IS NULL OR state_key = $3) AND stream_ordering <= $4 ORDER BY stream_ordering"
        );
        let rows =
            sqlx::query(&sql).bind(room_id).bind(event_type).bind(state_key).bind(upto).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(event_row).collect())
    }

    /// The room's current state events.
    pub async fn current_state_events(&self, room_id: &str) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {} FROM room_current_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = $1",
            event_columns_of_e()
        );
        Ok(sqlx::query(&sql).bind(room_id).fetch_all(&self.pool).await?.into_iter().map(event_row).collect())
    }

    /// The room's forward extremities with their depth and state snapshot.
    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT e.event_id, e.depth, e.state_snapshot FROM room_forward_extremities f \
             JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.event_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// (event, transaction key) of the events this device sent among `event_ids`.
    pub async fn transaction_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        for chunk in event_ids.chunks(500) {
            let sql = match self.backend {
                // Each event through the event index. Left to itself, PostgreSQL's generic plan
                // walks the device's every transaction on the primary key and rebuilds the
                // 500-element IN list for each row: 38 ms for a user with 4,000 sends, and
                // growing with them. The subquery's OFFSET keeps the device filter out of it.
                Backend::Postgres => format!(
                    "SELECT t.event_id, t.txn_id FROM (VALUES {}) v(event_id) CROSS JOIN LATERAL \
                     (SELECT event_id, txn_id, user_id, device_id FROM event_transactions \
                      WHERE event_id = v.event_id OFFSET 0) t WHERE t.user_id = $1 AND t.device_id = $2",
                    value_rows(3, chunk.len())
                ),
                Backend::Sqlite => format!(
                    "SELECT event_id, txn_id FROM event_transactions INDEXED BY event_transactions_event \
                     WHERE event_id IN ({}) AND user_id = $1 AND device_id = $2",
                    placeholders(3, chunk.len())
                ),
            };
            let query = bind_all!(sqlx::query(&sql).bind(user_id).bind(device_id), chunk);
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1))));
        }
        Ok(found)
    }

    /// The full auth chain of the given events (all events reachable through `auth_events`): their
    /// own `auth_events` from their PDUs, which every event has (a message stores no auth edges),
    /// and from there the stored edges of the state events they name.
    pub async fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let listed = match self.backend {
            Backend::Postgres => "SELECT json_array_elements_text(CAST(pdu AS json) -> 'auth_events') FROM events",
            Backend::Sqlite => "SELECT j.value FROM events, json_each(events.pdu, '$.auth_events') j",
        };
        let sql = format!(
            "WITH RECURSIVE chain(event_id) AS ( \
               {listed} WHERE event_id IN ({}) \
               UNION SELECT a.auth_event_id FROM event_auth_edges a JOIN chain c ON a.event_id = c.event_id) \
             SELECT event_id FROM chain ORDER BY event_id",
            placeholders(1, event_ids.len())
        );
        let query = bind_all!(sqlx::query(&sql), event_ids);
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(|r| r.get(0)).collect())
    }

    /// Rooms where the user's membership is one of `memberships`, with that membership.
    pub async fn rooms_of_user(&self, user_id: &str, memberships: &[&str]) -> Result<Vec<(String, String)>> {
        let sql = format!(
            "SELECT room_id, membership FROM room_memberships WHERE user_id = $1 AND forgotten = 0 \
             AND membership IN ({}) ORDER BY room_id",
            placeholders(2, memberships.len())
        );
        let mut query = sqlx::query(&sql).bind(user_id);
        for m in memberships {
            query = query.bind(*m);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The user's current membership in the room, if any.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Hides a room the user has left from their room lists.
    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE room_memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Number of members per membership for each of the rooms: (room, membership, count).
    pub async fn membership_counts(&self, room_ids: &[&str]) -> Result<Vec<(String, String, i64)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT room_id, membership, COUNT(*) FROM room_memberships WHERE room_id IN ({}) GROUP BY room_id, membership",
            placeholders(1, room_ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in room_ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }
}

impl Storage {
    /// For each room, its newest events in `(after, upto]`, at most `per_room` of them, oldest
    /// first: one query for all the rooms of a sync. Each room is read backwards on its
    /// `(room_id, stream_ordering)` index and stops after `per_room` rows, so the cost follows the
    /// rooms and the limit, not the length of their histories (a window over every event of the
    /// rooms read them all: 26 ms for 200 rooms of 27 events, and growing with history).
    pub async fn recent_events_of_rooms(
        &self,
        room_ids: &[&str],
        after: i64,
        upto: i64,
        per_room: i64,
    ) -> Result<Vec<EventRow>> {
        // SQLite has no LATERAL: one limited arm per room, within its 500-term compound limit.
        let chunk_size = match self.backend {
            Backend::Postgres => 500,
            Backend::Sqlite => 250,
        };
        let mut found = Vec::new();
        for chunk in room_ids.chunks(chunk_size) {
            let sql = match self.backend {
                Backend::Postgres => {
                    format!("{} ORDER BY recent.stream_ordering", newest_events_of_rooms(4, chunk.len()))
                }
                Backend::Sqlite => {
                    let arms: Vec<String> = (4..4 + chunk.len())
                        .map(|i| format!("SELECT * FROM ({})", newest_events(&format!("${i}"), "$1", "$2", "$3")))
                        .collect();
                    format!("{} ORDER BY stream_ordering", arms.join(" UNION ALL "))
                }
            };
            let query = bind_all!(sqlx::query(&sql).bind(after).bind(upto).bind(per_room), chunk);
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(event_row));
        }
        Ok(found)
    }

    /// The stream ordering of the user's latest membership change (rooms not forgotten).
    pub async fn newest_membership(&self, user_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(stream_ordering) FROM room_memberships WHERE user_id = $1 AND forgotten = 0")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// The user's memberships (not forgotten) with the stream ordering of their latest change.
    pub async fn memberships_of_user(&self, user_id: &str) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT room_id, membership, stream_ordering FROM room_memberships WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// The current state events of several rooms.
    pub async fn current_state_of_rooms(&self, room_ids: &[&str]) -> Result<Vec<EventRow>> {
        let columns = event_columns_of_e();
        let mut found = Vec::new();
        for chunk in room_ids.chunks(500) {
            let sql = match self.backend {
                // Each room through the state index and each event through its ID, whatever the
                // planner's statistics say (subqueries with OFFSET or LIMIT are not flattened):
                // without fresh statistics PostgreSQL hash-joins the whole events table here.
                Backend::Postgres => format!(
                    "SELECT {columns} FROM (VALUES {}) r(room_id) \
                     CROSS JOIN LATERAL (SELECT event_id FROM room_current_state WHERE room_id = r.room_id OFFSET 0) s \
                     CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events WHERE event_id = s.event_id LIMIT 1) e",
                    value_rows(1, chunk.len())
                ),
                Backend::Sqlite => format!(
                    "SELECT {columns} FROM room_current_state s JOIN events e ON e.event_id = s.event_id \
                     WHERE s.room_id IN ({})",
                    placeholders(1, chunk.len())
                ),
            };
            found.extend(bind_all!(sqlx::query(&sql), chunk).fetch_all(&self.pool).await?.into_iter().map(event_row));
        }
        Ok(found)
    }

    /// `(room_id, user_id, membership)` of the latest membership of anyone, in rooms the user is or
    /// was in, that changed after position `after` up to `upto`.
    pub async fn membership_changes_in_rooms_of(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT m.room_id, m.user_id, m.membership FROM room_memberships m \
             WHERE m.room_id IN (SELECT room_id FROM room_memberships WHERE user_id = $1) \
             AND m.stream_ordering > $2 AND m.stream_ordering <= $3",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// (room, user, membership, stream ordering of the membership) of every joined or invited
    /// member of the rooms.
    pub async fn members_of_rooms(&self, room_ids: &[&str]) -> Result<Vec<(String, String, String, i64)>> {
        let mut found = Vec::new();
        for chunk in room_ids.chunks(500) {
            let sql = format!(
                "SELECT room_id, user_id, membership, stream_ordering FROM room_memberships WHERE membership IN ('join', 'invite') \
                 AND room_id IN ({}) ORDER BY room_id, stream_ordering",
                placeholders(1, chunk.len())
            );
            let rows = bind_all!(sqlx::query(&sql), chunk).fetch_all(&self.pool).await?;
            found.extend(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))));
        }
        Ok(found)
    }
}

impl Storage {
    /// The state events of a snapshot (the room's state at some event).
    pub async fn state_snapshot_events(&self, snapshot_id: i64) -> Result<Vec<EventRow>> {
        let ids: Vec<String> = self.state_snapshot(snapshot_id).await?.into_iter().map(|(_, _, id)| id).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.events(&refs).await
    }

    /// Every entry of a state snapshot, resolved along its parent chain: (type, state key, event ID).
    pub async fn state_snapshot(&self, snapshot_id: i64) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "WITH RECURSIVE chain(snapshot_id, parent_id, lvl) AS ( \
               SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1 \
               UNION ALL SELECT s.snapshot_id, s.parent_id, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent_id) \
             SELECT e.event_type, e.state_key, e.event_id FROM chain c \
             JOIN state_snapshot_entries e ON e.snapshot_id = c.snapshot_id ORDER BY c.lvl",
        )
        .bind(snapshot_id)
        .fetch_all(&self.pool)
        .await?;
        // Nearest snapshot first: the first entry seen for a key is the one in force.
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::new();
        for r in rows {
            let (t, k, e): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            if seen.insert((t.clone(), k.clone())) {
                entries.push((t, k, e));
            }
        }
        Ok(entries)
    }

    /// The chain length of a snapshot (0 for a full one).
    pub async fn state_snapshot_chain_length(&self, snapshot_id: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT chain_length FROM state_snapshots WHERE snapshot_id = $1")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
