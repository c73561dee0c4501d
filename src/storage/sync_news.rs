//! What a woken sync reads once it knows its position: the new events of the user's ongoing rooms
//! and, for the rooms that have some, the user's unread notification counts. On PostgreSQL this is
//! one statement: like [`super::SyncStart`] it runs once per delivered message and receiver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use sqlx::Row;

use super::{
    events::{event_column_count, event_column_nulls, event_row, newest_events_of_rooms},
    push::unread_counts_of_rooms,
    Backend, EventRow, Storage,
};
use crate::error::Result;

/// `(room_id, thread_id, notifications, highlights)`: a user's unread notifications in a thread.
pub type UnreadCount = (String, String, i64, i64);

/// The timelines of some rooms and the unread counts of those among them with events in range.
pub struct RoomNews {
    /// Events oldest first, at most `per_room` of each room.
    pub events: Vec<EventRow>,
    /// `(room_id, thread_id, notifications, highlights)` of the user's unread notifications.
    pub unread_counts: Vec<UnreadCount>,
    /// The rooms `unread_counts` covers, sorted: a room here without a row has nothing unread.
    pub counted_rooms: Vec<String>,
}

impl Storage {
    /// The newest events (at most `per_room`) of each room in `after < stream_ordering <= upto`,
    /// and `user_id`'s unread counts in the rooms that have any.
    pub async fn room_news(
        &self,
        user_id: &str,
        room_ids: &[&str],
        after: i64,
        upto: i64,
        per_room: i64,
    ) -> Result<RoomNews> {
        if self.backend == Backend::Sqlite {
            // Local: two statements cost no round trip.
            let events = self.recent_events_of_rooms(room_ids, after, upto, per_room).await?;
            let mut news = RoomNews { events, unread_counts: Vec::new(), counted_rooms: Vec::new() };
            news.settle();
            let counted: Vec<&str> = news.counted_rooms.iter().map(String::as_str).collect();
            news.unread_counts = self.unread_push_counts(user_id, &counted).await?;
            return Ok(news);
        }
        let mut news = RoomNews { events: Vec::new(), unread_counts: Vec::new(), counted_rooms: Vec::new() };
        let count_column = event_column_count();
        for chunk in room_ids.chunks(500) {
            let sql = statement(chunk.len());
            let mut query = sqlx::query(&sql).bind(after).bind(upto).bind(per_room).bind(user_id);
            for room in chunk {
                query = query.bind(*room);
            }
            for row in query.fetch_all(&self.pool).await? {
                if row.get::<Option<i64>, _>(0).is_some() {
                    news.events.push(event_row(row));
                } else {
                    news.unread_counts.push((
                        row.get(count_column),
                        row.get(count_column + 1),
                        row.get(count_column + 2),
                        row.get(count_column + 3),
                    ));
                }
            }
        }
        news.settle();
        Ok(news)
    }
}

impl RoomNews {
    /// Orders the events and names the rooms counted: those with events.
    fn settle(&mut self) {
        self.events.sort_by_key(|e| e.stream_ordering);
        let mut rooms: Vec<String> = self.events.iter().map(|e| e.room_id.clone()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        self.counted_rooms = rooms;
    }
}

/// The statement of [`Storage::room_news`] for `rooms` rooms, built once per number of rooms (at
/// most 500): every woken sync runs it, and a sync waiting for a connection holds it.
fn statement(rooms: usize) -> Arc<str> {
    static STATEMENTS: OnceLock<Mutex<HashMap<usize, Arc<str>>>> = OnceLock::new();
    let mut statements = STATEMENTS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    statements
        .entry(rooms)
        .or_insert_with(|| {
            // Event rows carry NULL count columns, count rows NULL event columns (`stream_ordering`).
            let nulls = event_column_nulls();
            format!(
                "WITH recent AS ({}), counts AS ({}) \
                 SELECT recent.*, NULL, NULL, NULL, NULL FROM recent \
                 UNION ALL SELECT {nulls}, counts.* FROM counts",
                newest_events_of_rooms(5, rooms),
                unread_counts_of_rooms("$4", "SELECT room_id FROM recent"),
            )
            .into()
        })
        .clone()
}
