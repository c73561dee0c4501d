//! What a woken sync reads once it knows its position: the new events of the user's ongoing rooms
//! and, for the rooms that have some, the user's unread notification counts. On PostgreSQL this is
//! one statement, shared by the syncs that read together (see [`super::batch`]): like
//! [`super::SyncStart`] it runs once per delivered message and receiver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::Row;

use super::{
    events::{event_column_count, event_column_nulls, event_row, newest_events, newest_events_of_rooms, EVENT_COLUMNS},
    push::unread_counts_of_rooms,
    Backend, EventRow, Storage,
};
use crate::error::{Error, Result};

/// `(room_id, thread_id, notifications, highlights)`: a user's unread notifications in a thread.
pub type UnreadCount = (String, String, i64, i64);

/// The timelines of some rooms and the unread counts of those among them with events in range.
#[derive(Default)]
pub struct RoomNews {
    /// Events oldest first, at most `per_room` of each room.
    pub events: Vec<EventRow>,
    /// `(room_id, thread_id, notifications, highlights)` of the user's unread notifications.
    pub unread_counts: Vec<UnreadCount>,
    /// The rooms `unread_counts` covers, sorted: a room here without a row has nothing unread.
    pub counted_rooms: Vec<String>,
    /// Read with the events, in the same snapshot: the lowest event position still being
    /// written (PostgreSQL reservations), and the position of the user's latest membership change.
    /// A sync that took its position and memberships from memory checks them (see `sync::build`).
    pub snapshot: NewsSnapshot,
}

/// See [`RoomNews::snapshot`].
#[derive(Default, Clone, Copy)]
pub struct NewsSnapshot {
    pub lowest_in_flight: Option<i64>,
    pub newest_membership: Option<i64>,
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
            // One process writes: what is in flight is known in memory.
            let snapshot =
                NewsSnapshot { lowest_in_flight: None, newest_membership: self.newest_membership(user_id).await? };
            let mut news = RoomNews { events, snapshot, ..RoomNews::default() };
            news.settle();
            let counted: Vec<&str> = news.counted_rooms.iter().map(String::as_str).collect();
            news.unread_counts = self.unread_push_counts(user_id, &counted).await?;
            return Ok(news);
        }
        if room_ids.is_empty() {
            return Ok(RoomNews::default());
        }
        let request = RoomNewsRequest {
            user_id: user_id.to_owned(),
            room_ids: room_ids.iter().map(|room| (*room).to_owned()).collect(),
            after,
            upto,
            per_room,
        };
        self.batches.room_news.run(self, request).await
    }

    /// [`Self::room_news`] of several syncs in one statement (PostgreSQL), in their order.
    async fn rooms_news(&self, requests: &[RoomNewsRequest]) -> Result<Vec<RoomNews>> {
        let rows = match requests {
            [r] if r.room_ids.len() <= MAX_ROOMS_ALONE => {
                let sql = alone_statement(r.room_ids.len());
                let mut query = sqlx::query(&sql).bind(r.after).bind(r.upto).bind(r.per_room).bind(r.user_id.as_str());
                for room in &r.room_ids {
                    query = query.bind(room.as_str());
                }
                let mut connection = self.kept_connection().await?;
                let rows = query.fetch_all(&mut *connection).await?;
                connection.keep();
                rows
            }
            _ => {
                #[derive(Serialize)]
                struct BatchedRequest<'a> {
                    i: usize,
                    user_id: &'a str,
                    rooms: &'a [String],
                    after: i64,
                    upto: i64,
                    lim: i64,
                }
                let parameter: Vec<BatchedRequest> = requests
                    .iter()
                    .enumerate()
                    .map(|(i, r)| BatchedRequest {
                        i,
                        user_id: &r.user_id,
                        rooms: &r.room_ids,
                        after: r.after,
                        upto: r.upto,
                        lim: r.per_room,
                    })
                    .collect();
                let mut connection = self.kept_connection().await?;
                let rows = sqlx::query(batched_statement())
                    .bind(serde_json::to_string(&parameter).map_err(Error::internal)?)
                    .fetch_all(&mut *connection)
                    .await?;
                connection.keep();
                rows
            }
        };
        let mut news: Vec<RoomNews> = requests.iter().map(|_| RoomNews::default()).collect();
        let count_column = event_column_count();
        let request_column = count_column + 4;
        // (request, position) of the events sent once for several syncs.
        let mut copies = Vec::new();
        for row in rows {
            let i: i64 = row.get(request_column);
            let Some(i) = usize::try_from(i).ok().filter(|i| *i < news.len()) else { continue };
            match (row.get::<Option<i64>, _>(0), row.get::<Option<String>, _>(1)) {
                (Some(_), Some(_)) => news[i].events.push(event_row(row)),
                (Some(position), None) => copies.push((i, position)),
                (None, _) if row.get::<Option<String>, _>(count_column).is_none() => {
                    news[i].snapshot = NewsSnapshot {
                        lowest_in_flight: row.get(count_column + 2),
                        newest_membership: row.get(count_column + 3),
                    };
                }
                (None, _) => news[i].unread_counts.push((
                    row.get(count_column),
                    row.get(count_column + 1),
                    row.get(count_column + 2),
                    row.get(count_column + 3),
                )),
            }
        }
        if !copies.is_empty() {
            let sent: HashMap<i64, EventRow> =
                news.iter().flat_map(|n| &n.events).map(|e| (e.stream_ordering, e.clone())).collect();
            for (i, position) in copies {
                news[i].events.extend(sent.get(&position).cloned());
            }
        }
        news.iter_mut().for_each(RoomNews::settle);
        Ok(news)
    }
}

/// One sync's part of a batch of [`Storage::rooms_news`].
pub(super) struct RoomNewsRequest {
    user_id: String,
    room_ids: Vec<String>,
    after: i64,
    upto: i64,
    per_room: i64,
}

pub(super) fn room_news_batch(
    storage: Storage,
    requests: Vec<RoomNewsRequest>,
) -> BoxFuture<'static, Result<Vec<RoomNews>>> {
    Box::pin(async move { storage.rooms_news(&requests).await })
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

/// The two columns of a [`NewsSnapshot`] row (which has a NULL room): the lowest reserved event
/// position and the newest membership change of `user`.
fn snapshot_columns(user: &str) -> String {
    format!(
        "(SELECT MIN(position) FROM event_positions_in_flight), \
         (SELECT MAX(stream_ordering) FROM room_memberships WHERE user_id = {user} AND forgotten = 0)"
    )
}

/// Rooms one sync reads with [`alone_statement`], one bound parameter each; beyond, the batch's
/// statement carries them in its JSON.
const MAX_ROOMS_ALONE: usize = 500;

/// The statement of [`Storage::rooms_news`] for one sync in `rooms` rooms (`$1`–`$3` the range
/// and limit, `$4` the user, then the rooms), built once per number of rooms: one sync is the
/// common case, and this costs PostgreSQL less than the batch's statement does for one. Rows as
/// [`batched_statement`]'s, with request index 0.
fn alone_statement(rooms: usize) -> Arc<str> {
    static STATEMENTS: OnceLock<Mutex<HashMap<usize, Arc<str>>>> = OnceLock::new();
    let mut statements = STATEMENTS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    statements
        .entry(rooms)
        .or_insert_with(|| {
            let nulls = event_column_nulls();
            format!(
                "WITH recent AS ({}), counts AS ({}) \
                 SELECT recent.*, NULL, NULL, NULL, NULL, CAST(0 AS BIGINT) FROM recent \
                 UNION ALL SELECT {nulls}, counts.*, CAST(0 AS BIGINT) FROM counts \
                 UNION ALL SELECT {nulls}, CAST(NULL AS TEXT), '', {}, CAST(0 AS BIGINT)",
                newest_events_of_rooms(5, rooms),
                unread_counts_of_rooms(Backend::Postgres, "$4", "SELECT room_id FROM recent"),
                snapshot_columns("$4"),
            )
            .into()
        })
        .clone()
}

/// The statement of [`Storage::rooms_news`] for several syncs (`$1` their JSON): each room's
/// events and each (sync, room)'s counts are read through their indexes one at a time
/// (`LATERAL`). Event rows carry NULL count columns, count rows NULL event columns
/// (`stream_ordering`), and each sync's [`NewsSnapshot`] row both and a NULL room; the request's
/// index comes last. Syncs woken by the same message read the
/// same events: each is sent once, and to the other syncs as its position alone (NULL
/// `event_id`), which [`Storage::rooms_news`] fills in. Those rows come last: PostgreSQL types a
/// UNION's columns from left to right, and two NULLs make text.
fn batched_statement() -> &'static str {
    static STATEMENT: OnceLock<String> = OnceLock::new();
    STATEMENT.get_or_init(|| {
        let nulls = event_column_nulls();
        format!(
            "WITH req AS (SELECT * FROM json_to_recordset($1::json) \
               AS q(i BIGINT, user_id TEXT, rooms JSON, after BIGINT, upto BIGINT, lim BIGINT)), \
             recent AS (SELECT e.*, req.i, req.user_id AS viewer, \
               ROW_NUMBER() OVER (PARTITION BY e.stream_ordering ORDER BY req.i) AS copy FROM req \
               CROSS JOIN LATERAL json_array_elements_text(req.rooms) AS x(room_id) \
               CROSS JOIN LATERAL ({}) e), \
             counted AS (SELECT DISTINCT i, viewer, room_id FROM recent), \
             counts AS (SELECT c.*, counted.i FROM counted CROSS JOIN LATERAL ({}) c) \
             SELECT {EVENT_COLUMNS}, NULL, NULL, NULL, NULL, i FROM recent WHERE copy = 1 \
             UNION ALL SELECT {nulls}, room_id, thread_id, notifications, highlights, i FROM counts \
             UNION ALL SELECT {nulls}, CAST(NULL AS TEXT), '', {}, req.i FROM req \
             UNION ALL SELECT stream_ordering, {}, NULL, NULL, NULL, NULL, i FROM recent WHERE copy > 1",
            newest_events("x.room_id", "req.after", "req.upto", "req.lim"),
            unread_counts_of_rooms(Backend::Postgres, "counted.viewer", "counted.room_id"),
            snapshot_columns("req.user_id"),
            vec!["NULL"; event_column_count() - 1].join(", "),
        )
    })
}
