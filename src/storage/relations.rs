//! Relationships between events: `events.relates_to` / `rel_type`, written with each child event
//! (see `rooms::relations`). One function per query; every query names the room, so that an event
//! of another room claiming a parent here is never counted.

use sqlx::Row;

use super::{
    events::{event_column_count, event_row, EVENT_COLUMNS},
    placeholders, EventRow, Storage,
};
use crate::error::Result;

/// Which children of a parent a `/relations` page reads.
pub struct RelationQuery<'a> {
    pub room_id: &'a str,
    pub parents: &'a [&'a str],
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Children with `after < stream_ordering <= before`.
    pub after: i64,
    pub before: i64,
    pub backwards: bool,
    pub limit: i64,
}

/// One reply of a thread.
pub struct ThreadReply {
    pub root: String,
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    pub stream_ordering: i64,
}

/// The parents' children by relation types other than threads that are bundled, with the parent
/// each relates to and the relation type.
pub type RelatedRow = (EventRow, String, String);

impl Storage {
    /// Children of the parents in the room, newest first when `backwards`.
    pub async fn relation_children(&self, q: &RelationQuery<'_>) -> Result<Vec<EventRow>> {
        if q.parents.is_empty() {
            return Ok(Vec::new());
        }
        let order = if q.backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to IN ({}) AND room_id = $1 AND stream_ordering > $2 \
             AND stream_ordering <= $3 AND ($4 IS NULL OR rel_type = $4) AND ($5 IS NULL OR event_type = $5) \
             ORDER BY stream_ordering {order} LIMIT $6",
            placeholders(7, q.parents.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(q.room_id)
            .bind(q.after)
            .bind(q.before)
            .bind(q.rel_type)
            .bind(q.event_type)
            .bind(q.limit);
        for parent in q.parents {
            query = query.bind(*parent);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(event_row).collect())
    }

    /// The IDs of the parents' direct children in the room, the newest `limit` (for `recurse`).
    pub async fn relation_child_ids(&self, room_id: &str, parents: &[&str], limit: i64) -> Result<Vec<String>> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT event_id FROM events WHERE relates_to IN ({}) AND room_id = $1 ORDER BY stream_ordering DESC \
             LIMIT $2",
            placeholders(3, parents.len())
        );
        let mut query = sqlx::query(&sql).bind(room_id).bind(limit);
        for parent in parents {
            query = query.bind(*parent);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(|r| r.get(0)).collect())
    }

    /// A room's thread roots by latest reply, newest first, whose latest reply is at or before
    /// `before`; with `participant`, only threads they started or replied to. Returns each root's
    /// ID with its latest reply's position.
    pub async fn threads(
        &self,
        room_id: &str,
        participant: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.relates_to, MAX(t.stream_ordering) AS latest FROM events t \
             WHERE t.room_id = $1 AND t.rel_type = 'm.thread' GROUP BY t.relates_to \
             HAVING MAX(t.stream_ordering) <= $2 AND ($3 IS NULL \
                 OR MAX(CASE WHEN t.sender = $3 THEN 1 ELSE 0 END) = 1 \
                 OR EXISTS (SELECT 1 FROM events r WHERE r.event_id = t.relates_to AND r.sender = $3)) \
             ORDER BY latest DESC LIMIT $4",
        )
        .bind(room_id)
        .bind(before)
        .bind(participant)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The thread replies to these roots as (root, reply room, reply ID, sender, position), oldest
    /// first: the parts of a thread summary, which the caller filters by what the viewer may see.
    pub async fn thread_replies(&self, roots: &[&str]) -> Result<Vec<ThreadReply>> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT relates_to, room_id, event_id, sender, stream_ordering FROM events \
             WHERE relates_to IN ({}) AND rel_type = 'm.thread' ORDER BY stream_ordering",
            placeholders(1, roots.len())
        );
        let mut query = sqlx::query(&sql);
        for root in roots {
            query = query.bind(*root);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| ThreadReply {
                root: r.get(0),
                room_id: r.get(1),
                event_id: r.get(2),
                sender: r.get(3),
                stream_ordering: r.get(4),
            })
            .collect())
    }

    /// The events that decide what `user_id` may see of these rooms (spec: "History visibility"):
    /// their member events and the rooms' `m.room.history_visibility` events, oldest first.
    pub async fn visibility_events(&self, room_ids: &[&str], user_id: &str) -> Result<Vec<EventRow>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id IN ({}) AND state_key IS NOT NULL \
             AND ((event_type = 'm.room.member' AND state_key = $1) \
                  OR (event_type = 'm.room.history_visibility' AND state_key = '')) \
             ORDER BY stream_ordering",
            placeholders(2, room_ids.len())
        );
        let mut query = sqlx::query(&sql).bind(user_id);
        for room in room_ids {
            query = query.bind(*room);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(event_row).collect())
    }

    /// Edits (`m.replace`) and references (`m.reference`) of these events, oldest first (the
    /// caller keeps those in their parent's room).
    pub async fn replacements_and_references(&self, parents: &[&str]) -> Result<Vec<RelatedRow>> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let fields = event_column_count();
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, relates_to, rel_type FROM events WHERE relates_to IN ({}) \
             AND rel_type IN ('m.replace', 'm.reference') ORDER BY stream_ordering",
            placeholders(1, parents.len())
        );
        let mut query = sqlx::query(&sql);
        for parent in parents {
            query = query.bind(*parent);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let parent: String = r.get(fields);
                let rel_type: String = r.get(fields + 1);
                (event_row(r), parent, rel_type)
            })
            .collect())
    }
}
