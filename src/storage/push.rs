//! `event_push_actions` and their `event_push_totals`, `pushers`, `push_queue` and the `push_evaluated`
//! position: what the push evaluator records and the gateway sender drains.

use std::{borrow::Cow, sync::OnceLock};

use sqlx::{any::AnyRow, Row};

use super::{
    delivery::{next_position, PositionRows, POSITION_ROWS},
    events::{event_column_count, event_column_nulls, event_columns_of_e, event_row, EVENT_COLUMNS},
    placeholders, Backend, EventRow, Storage,
};
use crate::error::{Error, Result};

/// An event that notified a user.
#[derive(serde::Serialize)]
pub struct NewPushAction<'a> {
    pub user_id: &'a str,
    pub stream_ordering: i64,
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub thread_id: String,
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
}

/// Binds an action's columns in the order the `event_push_actions` INSERTs list them (all but `unread`).
fn bind_action<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    a: &'q NewPushAction<'_>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(a.user_id)
        .bind(a.stream_ordering)
        .bind(a.room_id)
        .bind(a.event_id)
        .bind(a.thread_id.as_str())
        .bind(a.actions.as_str())
        .bind(i64::from(a.highlight))
        .bind(a.ts)
}

/// An action as the one-statement record reads it (`json_to_recordset`), with its `unread`.
#[derive(serde::Serialize)]
struct ActionRow<'r, 'a> {
    #[serde(flatten)]
    action: &'r NewPushAction<'a>,
    unread: bool,
}

/// What the push evaluator reads at the start of a batch.
pub struct EvaluationBatch {
    /// The newest position of every counter-based stream.
    pub positions: std::collections::HashMap<String, i64>,
    /// `push_evaluated`: where the batch starts.
    pub from: i64,
    /// The visible event position: how far the batch may go.
    pub upto: i64,
    /// Events in `(from, upto]`, oldest first.
    pub events: Vec<EventRow>,
}

/// A notification for one pusher, to be sent to its gateway.
#[derive(serde::Serialize)]
pub struct NewQueuedPush<'a> {
    pub user_id: Cow<'a, str>,
    pub app_id: Cow<'a, str>,
    pub pushkey: Cow<'a, str>,
    pub notification: String,
}

impl NewQueuedPush<'_> {
    pub fn into_owned(self) -> NewQueuedPush<'static> {
        NewQueuedPush {
            user_id: Cow::Owned(self.user_id.into_owned()),
            app_id: Cow::Owned(self.app_id.into_owned()),
            pushkey: Cow::Owned(self.pushkey.into_owned()),
            notification: self.notification,
        }
    }
}

/// A message's push evaluation, made by its sender before the message is stored from what the
/// evaluator had cached, and recorded by the message's own statement when it still holds there
/// (see `insert_event_at_head`): the message is the next event to evaluate, and no recipient's push
/// rules nor any pusher changed since the cache was checked.
pub struct MessageEvaluation {
    pub actions: Vec<MessageAction>,
    pub pushes: Vec<NewQueuedPush<'static>>,
    /// Each recipient with the `account_data` position at which its cached push rules were last
    /// found current.
    pub rules_checked: Vec<(String, i64)>,
    /// The `pushers` position at which the cached pushers were read.
    pub pushers_at: i64,
    /// The sender is local: sending reads its notifications in the room up to the message.
    pub sender_reads: bool,
    pub now: i64,
}

/// What a [`MessageEvaluation`] records for one recipient: the message's position, room and ID
/// are the statement's own parameters, and every action is unread (the sender is no recipient).
#[derive(serde::Serialize)]
pub struct MessageAction {
    pub user_id: String,
    pub thread_id: String,
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
}

impl From<NewPushAction<'_>> for MessageAction {
    fn from(a: NewPushAction<'_>) -> Self {
        Self {
            user_id: a.user_id.to_owned(),
            thread_id: a.thread_id,
            actions: a.actions,
            highlight: a.highlight,
            ts: a.ts,
        }
    }
}

impl MessageEvaluation {
    /// The parameters of [`recorded_message_evaluation`] for the message `(sender, room_id,
    /// position)`: the actions' JSON, the pushes' JSON, and the sender's read.
    pub(super) fn parameters(&self, sender: &str, room_id: &str, position: i64) -> Result<(String, String, String)> {
        let reads = if self.sender_reads { vec![(sender, room_id, position)] } else { Vec::new() };
        Ok((
            serde_json::to_string(&self.actions).map_err(Error::internal)?,
            serde_json::to_string(&self.pushes).map_err(Error::internal)?,
            serde_json::to_string(&reads).map_err(Error::internal)?,
        ))
    }
}

pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub device_id: String,
    pub url: String,
    pub pusher: String,
    pub pushkey_ts: i64,
}

pub struct QueuedPush {
    pub queue_id: i64,
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub notification: String,
    pub attempts: i64,
}

pub struct NotificationRow {
    pub event: EventRow,
    pub actions: String,
    pub unread: bool,
    pub ts: i64,
}

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, device_id, url, pusher, pushkey_ts";

fn pusher_row(r: AnyRow) -> PusherRow {
    PusherRow {
        user_id: r.get(0),
        app_id: r.get(1),
        pushkey: r.get(2),
        device_id: r.get(3),
        url: r.get(4),
        pusher: r.get(5),
        pushkey_ts: r.get(6),
    }
}

/// A query of the unread notifications of the user `user` in the rooms `rooms` (both SQL text: a
/// parameter, and a list of values or a subquery) as rows `(room_id, thread_id, notifications,
/// highlights)`, for the threads with some. A notification stays unread until a read receipt
/// covers it: the room's unthreaded one ('') or its thread's. The read ones of a thread are its
/// oldest (see the migration `0010_push_totals.sql`), so each thread's count is its total less
/// what came before its oldest unread notification: the cost does not grow with the number
/// unread, which is what a busy room's silent members have most of. The receipt check covers one
/// set while its events were being evaluated, whose notifications were recorded unread.
///
/// On PostgreSQL the oldest unread notification is found once per thread (`LATERAL`): as two
/// scalar subqueries, one per column, PostgreSQL ran the notifications' one twice more (the
/// `IS NOT NULL` filter repeats it), three index probes per thread on every woken sync's read.
/// SQLite has no `LATERAL`.
pub(super) fn unread_counts_of_rooms(backend: Backend, user: &str, rooms: &str) -> String {
    // Materialized: each reference to `read_upto` would otherwise run its receipts subquery again.
    let thread_totals = format!(
        "thread_totals AS MATERIALIZED (SELECT t.*, COALESCE((SELECT MAX(e.stream_ordering) \
           FROM receipts r JOIN events e ON e.event_id = r.event_id \
           WHERE r.user_id = t.user_id AND r.room_id = t.room_id AND r.receipt_type IN ('m.read', 'm.read.private') \
           AND r.thread_id IN ('', t.thread_id)), -1) AS read_upto \
         FROM event_push_totals t WHERE t.user_id = {user} AND t.room_id IN ({rooms}))"
    );
    let oldest_unread = |columns: &str| {
        format!(
            "SELECT {columns} FROM event_push_actions a WHERE a.user_id = t.user_id AND a.room_id = t.room_id \
             AND a.thread_id = t.thread_id AND a.unread = 1 AND a.stream_ordering > t.read_upto \
             ORDER BY a.stream_ordering LIMIT 1"
        )
    };
    match backend {
        Backend::Postgres => format!(
            "WITH {thread_totals} \
             SELECT t.room_id, t.thread_id, t.notifications - o.notifications_before AS notifications, \
             t.highlights - o.highlights_before AS highlights \
             FROM thread_totals t CROSS JOIN LATERAL ({}) o",
            oldest_unread("a.notifications_before, a.highlights_before"),
        ),
        Backend::Sqlite => format!(
            "WITH {thread_totals}, \
             thread_counts AS (SELECT t.room_id, t.thread_id, t.notifications - ({}) AS notifications, \
             t.highlights - ({}) AS highlights FROM thread_totals t) \
             SELECT room_id, thread_id, notifications, highlights FROM thread_counts WHERE notifications IS NOT NULL",
            oldest_unread("a.notifications_before"),
            oldest_unread("a.highlights_before"),
        ),
    }
}

impl Storage {
    /// How far push evaluation has come (a position in the event stream).
    pub async fn push_evaluated_position(&self) -> Result<i64> {
        let row = sqlx::query("SELECT position FROM stream_counters WHERE stream = 'push_evaluated'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// The stream positions and the next events to evaluate: those past `push_evaluated` up to
    /// the visible position, oldest first, at most `limit`. `local_visible` is the visible position
    /// when this process is the only writer (SQLite); with PostgreSQL the database knows, and all
    /// of it is one statement, which sits between every commit and its delivery.
    pub async fn events_to_evaluate(&self, local_visible: i64, limit: i64) -> Result<EvaluationBatch> {
        if !self.shares_event_positions() {
            let (positions, _) = self.stream_positions_and_visible_events().await?;
            let from = positions.get("push_evaluated").copied().unwrap_or(0);
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 \
                 ORDER BY stream_ordering LIMIT $3"
            );
            let rows = sqlx::query(&sql).bind(from).bind(local_visible).bind(limit).fetch_all(&self.pool).await?;
            let events = rows.into_iter().map(event_row).collect();
            return Ok(EvaluationBatch { positions, from, upto: local_visible, events });
        }
        // Event rows carry NULL position columns; position rows NULL event columns. The event rows
        // come first: PostgreSQL types a UNION's columns from left to right.
        let nulls = event_column_nulls();
        let sql = format!(
            "(SELECT {EVENT_COLUMNS}, NULL, NULL FROM events \
               WHERE stream_ordering > COALESCE((SELECT position FROM stream_counters WHERE stream = 'push_evaluated'), 0) \
               AND stream_ordering < COALESCE((SELECT MIN(position) FROM event_positions_in_flight), $1) \
               ORDER BY stream_ordering LIMIT $2) \
             {}",
            POSITION_ROWS.map(|rows| format!("UNION ALL SELECT {nulls}, {rows}")).join(" ")
        );
        let rows = sqlx::query(&sql).bind(i64::MAX).bind(limit).fetch_all(&self.pool).await?;
        let (mut collected, mut events) = (PositionRows::default(), Vec::new());
        let position_column = event_column_count();
        for row in rows {
            match row.get::<Option<String>, _>(position_column) {
                None => events.push(event_row(row)),
                Some(stream) => collected.add(stream, row.get(position_column + 1)),
            }
        }
        events.sort_by_key(|e: &EventRow| e.stream_ordering);
        let (positions, (upto, _)) = collected.finish();
        let from = positions.get("push_evaluated").copied().unwrap_or(0);
        Ok(EvaluationBatch { positions, from, upto, events })
    }

    /// The stored push rules of these users as `(user_id, account data stream_id, ruleset JSON)`;
    /// users without stored rules are absent.
    pub async fn push_rules_of_users(&self, user_ids: &[&str]) -> Result<Vec<(String, i64, String)>> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(500) {
            let sql = format!(
                "SELECT user_id, stream_id, content FROM account_data \
                 WHERE room_id = '' AND data_type = 'm.push_rules' AND user_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        }
        Ok(found)
    }

    pub async fn pushers_of_users(&self, user_ids: &[&str]) -> Result<Vec<PusherRow>> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(500) {
            let sql =
                format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(pusher_row));
        }
        Ok(found)
    }

    /// Records one evaluated batch: its actions, numbered in their threads, the threads' totals,
    /// queued pushes, and `push_evaluated` moved from `from` to `to`. Returns `false`, storing
    /// nothing, when another process moved it first.
    pub async fn record_push_evaluation(
        &self,
        from: i64,
        to: i64,
        actions: &[NewPushAction<'_>],
        pushes: &[NewQueuedPush<'_>],
        own_events: &[(&str, &str, i64)],
        now: i64,
    ) -> Result<bool> {
        // SQLite is local: its transaction costs no round trips.
        if self.backend == Backend::Postgres {
            return self.record_push_evaluation_at_once(from, to, actions, pushes, own_events, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let moved =
            sqlx::query("UPDATE stream_counters SET position = $1 WHERE stream = 'push_evaluated' AND position = $2")
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        // Bounded statements: SQLite caps the number of bind parameters. Each chunk's actions are
        // numbered after the totals the chunks before it left.
        for chunk in actions.chunks(100) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 8 + 1, 8))).collect();
            let values = values.join(", ");
            let total = |column: &str| {
                format!(
                    "COALESCE((SELECT t.{column} FROM event_push_totals t WHERE t.user_id = v.column1 \
                     AND t.room_id = v.column3 AND t.thread_id = v.column5), 0)"
                )
            };
            let insert = format!(
                "INSERT INTO event_push_actions (user_id, stream_ordering, room_id, event_id, thread_id, actions, highlight, ts, \
                 unread, notifications_before, highlights_before) \
                 SELECT v.*, 1, {} + ROW_NUMBER() OVER w - 1, {} + SUM(v.column7) OVER w - v.column7 \
                 FROM (VALUES {values}) AS v WHERE true \
                 WINDOW w AS (PARTITION BY v.column1, v.column3, v.column5 ORDER BY v.column2) \
                 ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                total("notifications"),
                total("highlights"),
            );
            let totals = format!(
                "INSERT INTO event_push_totals (user_id, room_id, thread_id, notifications, highlights) \
                 SELECT column1, column3, column5, COUNT(*), SUM(column7) FROM (VALUES {values}) WHERE true \
                 GROUP BY column1, column3, column5 ON CONFLICT (user_id, room_id, thread_id) DO UPDATE \
                 SET notifications = notifications + excluded.notifications, highlights = highlights + excluded.highlights"
            );
            for sql in [insert, totals] {
                let mut query = sqlx::query(&sql);
                for a in chunk {
                    query = bind_action(query, a);
                }
                query.execute(&mut *tx).await?;
            }
        }
        for chunk in pushes.chunks(100) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 5 + 1, 5))).collect();
            let sql = format!(
                "INSERT INTO push_queue (user_id, app_id, pushkey, notification, next_attempt_ts) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.user_id.as_ref())
                    .bind(p.app_id.as_ref())
                    .bind(p.pushkey.as_ref())
                    .bind(p.notification.as_str())
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        // A user's own event reads everything before it: (user, room, position), one statement.
        for chunk in own_events.chunks(100) {
            let senders: Vec<String> = (0..chunk.len())
                .map(|i| format!("SELECT ${} AS u, ${} AS r, ${} AS p", i * 3 + 1, i * 3 + 2, i * 3 + 3))
                .collect();
            let sql = format!(
                "UPDATE event_push_actions SET unread = 0 FROM ({}) s \
                 WHERE event_push_actions.unread = 1 AND s.u = event_push_actions.user_id \
                 AND s.r = event_push_actions.room_id AND event_push_actions.stream_ordering <= s.p",
                senders.join(" UNION ALL ")
            );
            let mut query = sqlx::query(&sql);
            for (user_id, room_id, position) in chunk {
                query = query.bind(*user_id).bind(*room_id).bind(*position);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// [`Self::record_push_evaluation`] as one statement (PostgreSQL): it is on the delivery path,
    /// since syncs wait for evaluation, and each round trip of a transaction costs there. The rows
    /// travel as three JSON parameters, so the statement's text is the same for every batch and is
    /// parsed and planned once per connection (see [`recorded_evaluation`]).
    async fn record_push_evaluation_at_once(
        &self,
        from: i64,
        to: i64,
        actions: &[NewPushAction<'_>],
        pushes: &[NewQueuedPush<'_>],
        own_events: &[(&str, &str, i64)],
        now: i64,
    ) -> Result<bool> {
        let actions: Vec<ActionRow> = actions
            .iter()
            .map(|a| {
                let read_in_batch = own_events.iter().any(|(user, room, position)| {
                    a.user_id == *user && a.room_id == *room && *position >= a.stream_ordering
                });
                ActionRow { action: a, unread: !read_in_batch }
            })
            .collect();
        static STATEMENT: OnceLock<String> = OnceLock::new();
        let statement = STATEMENT.get_or_init(|| {
            // Evaluation results are derived data: a crash may lose the last few, and the evaluator
            // then redoes them from the position that did survive (they share the WAL's order). Not
            // waiting for the flush takes it off the delivery path.
            format!(
                "WITH flags AS (SELECT set_config('synchronous_commit', 'off', true)), \
                 moved AS (UPDATE stream_counters SET position = $1 WHERE stream = 'push_evaluated' \
                 AND position = $2 RETURNING 1), {} \
                 SELECT COUNT(*) FROM moved, flags",
                recorded_evaluation(3)
            )
        });
        let mut connection = self.kept_connection().await?;
        let row: (i64,) = sqlx::query_as(statement)
            .bind(to)
            .bind(from)
            .bind(serde_json::to_string(&actions).map_err(Error::internal)?)
            .bind(serde_json::to_string(pushes).map_err(Error::internal)?)
            .bind(now)
            .bind(serde_json::to_string(own_events).map_err(Error::internal)?)
            .fetch_one(&mut *connection)
            .await?;
        connection.keep();
        Ok(row.0 == 1)
    }

    /// Unread notifications of the user in these rooms as `(room_id, thread_id, notifications,
    /// highlights)`. Reads only unread rows; the receipt check covers a receipt that was set
    /// while its events were being evaluated.
    pub async fn unread_push_counts(&self, user_id: &str, room_ids: &[&str]) -> Result<Vec<super::UnreadCount>> {
        let mut found = Vec::new();
        for chunk in room_ids.chunks(500) {
            let sql = unread_counts_of_rooms(self.backend, "$1", &placeholders(2, chunk.len()));
            let mut query = sqlx::query(&sql).bind(user_id);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(
                query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
            );
        }
        Ok(found)
    }

    /// The user's unread notifications in all rooms: the badge of their apps.
    pub async fn total_unread_push_count(&self, user_id: &str) -> Result<i64> {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(notifications), 0) AS BIGINT) FROM ({}) counts",
            unread_counts_of_rooms(self.backend, "$1", "SELECT room_id FROM event_push_totals WHERE user_id = $1")
        );
        let row = sqlx::query(&sql).bind(user_id).fetch_one(&self.pool).await?;
        Ok(row.get(0))
    }

    /// `/notifications`: the user's notifications before `before`, newest first.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>> {
        let columns = event_columns_of_e();
        let sql = format!(
            "SELECT {}, a.actions, a.unread, a.ts FROM event_push_actions a \
             JOIN events e ON e.stream_ordering = a.stream_ordering \
             WHERE a.user_id = $1 AND a.stream_ordering < $2 AND a.highlight >= $3 \
             ORDER BY a.stream_ordering DESC LIMIT $4",
            columns
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(before)
            .bind(i64::from(only_highlight))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let fields = event_column_count();
        Ok(rows
            .into_iter()
            .map(|r| {
                let actions = r.get(fields);
                let unread: i64 = r.get(fields + 1);
                let ts = r.get(fields + 2);
                NotificationRow { event: event_row(r), actions, unread: unread == 1, ts }
            })
            .collect())
    }

    /// Adds or replaces the user's pusher for `(app_id, pushkey)`. Unless `append`, the same
    /// pushkey of other users is removed (spec: `POST /pushers/set`, `append`).
    pub async fn set_pusher(&self, p: &PusherRow, append: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if !append {
            for statement in [
                "DELETE FROM push_queue WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
            ] {
                sqlx::query(statement).bind(&p.app_id).bind(&p.pushkey).bind(&p.user_id).execute(&mut *tx).await?;
            }
        }
        next_position(&mut tx, "pushers").await?;
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, device_id, url, pusher, pushkey_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET \
             device_id = excluded.device_id, url = excluded.url, pusher = excluded.pusher, pushkey_ts = excluded.pushkey_ts",
        )
        .bind(&p.user_id)
        .bind(&p.app_id)
        .bind(&p.pushkey)
        .bind(&p.device_id)
        .bind(&p.url)
        .bind(&p.pusher)
        .bind(p.pushkey_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a pusher and what waits for it.
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        next_position(&mut tx, "pushers").await?;
        for statement in [
            "DELETE FROM push_queue WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
        ] {
            sqlx::query(statement).bind(user_id).bind(app_id).bind(pushkey).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn pushers_of_user(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey");
        Ok(sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await?.into_iter().map(pusher_row).collect())
    }

    pub async fn pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<Option<PusherRow>> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3");
        let row = sqlx::query(&sql).bind(user_id).bind(app_id).bind(pushkey).fetch_optional(&self.pool).await?;
        Ok(row.map(pusher_row))
    }

    /// Queues one notification for each of the user's pushers (a badge update after a read).
    pub async fn queue_push_to_all_pushers(&self, user_id: &str, notification: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "INSERT INTO push_queue (user_id, app_id, pushkey, notification, next_attempt_ts) \
             SELECT user_id, app_id, pushkey, $2, $3 FROM pushers WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(notification)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims up to `limit` pushes due at `now`, oldest first, by moving them to `lease`: another
    /// process (or a later round) sees them only if they are still there then.
    pub async fn claim_due_pushes(&self, now: i64, lease: i64, limit: i64) -> Result<Vec<QueuedPush>> {
        let rows = sqlx::query(
            "UPDATE push_queue SET next_attempt_ts = $2 WHERE next_attempt_ts <= $1 AND queue_id IN \
             (SELECT queue_id FROM push_queue WHERE next_attempt_ts <= $1 ORDER BY queue_id LIMIT $3) \
             RETURNING queue_id, user_id, app_id, pushkey, notification, attempts",
        )
        .bind(now)
        .bind(lease)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed: Vec<QueuedPush> = rows
            .into_iter()
            .map(|r| QueuedPush {
                queue_id: r.get(0),
                user_id: r.get(1),
                app_id: r.get(2),
                pushkey: r.get(3),
                notification: r.get(4),
                attempts: r.get(5),
            })
            .collect();
        claimed.sort_by_key(|q| q.queue_id);
        Ok(claimed)
    }

    /// When the next queued push falls due, if any is queued.
    pub async fn next_push_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(next_attempt_ts) FROM push_queue").fetch_one(&self.pool).await?;
        Ok(row.get(0))
    }

    pub async fn delete_queued_push(&self, queue_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM push_queue WHERE queue_id = $1").bind(queue_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn retry_queued_push(&self, queue_id: i64, attempts: i64, next_attempt_ts: i64) -> Result<()> {
        sqlx::query("UPDATE push_queue SET attempts = $2, next_attempt_ts = $3 WHERE queue_id = $1")
            .bind(queue_id)
            .bind(attempts)
            .bind(next_attempt_ts)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The part of a statement that records evaluated actions once its `moved` CTE has moved
/// `push_evaluated` (and nothing when it has not): the actions, numbered in their threads after
/// the threads' totals, the totals, the queued pushes, and the senders' reads. `$first` is the
/// actions' JSON ([`ActionRow`]s), then the pushes' JSON, their time, and the senders' reads'
/// JSON (`[user, room, position]` each). All its parts see the rows as they were before the
/// statement, so an action the batch itself reads (its user sends later in the batch) comes
/// marked read, and each action is numbered after the totals as they were. The sender's reads
/// go through the unread index one (user, room) at a time and are updated by row address: a
/// join would let the planner, which cannot know how many senders the JSON holds, hash every
/// unread row of the server. The totals are read the same way (`LATERAL`, kept from being
/// flattened into a join by `OFFSET 0`): as a join, a generic plan made while the table was
/// small hashes all of `event_push_totals` for every batch until the table's next ANALYZE.
///
/// `reads`: the plan of the update by `ctid` may be a scan of the whole table (it is made once,
/// maybe while the table was small). `EXISTS (SELECT 1 FROM read)` is checked before any scan,
/// so batches with nothing to mark read scan nothing.
pub(super) fn recorded_evaluation(first: usize) -> String {
    let (actions, pushes, now, reads) = (first, first + 1, first + 2, first + 3);
    format!(
        "numbered AS (SELECT v.*, CAST(v.highlight AS INTEGER) AS highlighted, \
         COALESCE(t.notifications, 0) + ROW_NUMBER() OVER w - 1 AS notifications_before, \
         COALESCE(t.highlights, 0) + SUM(CAST(v.highlight AS INTEGER)) OVER w - CAST(v.highlight AS INTEGER) \
         AS highlights_before \
         FROM json_to_recordset(${actions}::json) AS v(user_id TEXT, stream_ordering BIGINT, room_id TEXT, \
         event_id TEXT, thread_id TEXT, actions TEXT, highlight BOOLEAN, ts BIGINT, unread BOOLEAN) \
         LEFT JOIN LATERAL (SELECT notifications, highlights FROM event_push_totals t WHERE t.user_id = v.user_id \
         AND t.room_id = v.room_id AND t.thread_id = v.thread_id OFFSET 0) t ON true \
         WINDOW w AS (PARTITION BY v.user_id, v.room_id, v.thread_id ORDER BY v.stream_ordering)), \
         actions AS (INSERT INTO event_push_actions (user_id, stream_ordering, room_id, event_id, thread_id, \
         actions, highlight, ts, unread, notifications_before, highlights_before) \
         SELECT user_id, stream_ordering, room_id, event_id, thread_id, actions, highlighted, ts, \
         CAST(unread AS INTEGER), notifications_before, highlights_before FROM numbered \
         WHERE EXISTS (SELECT 1 FROM moved) ON CONFLICT (user_id, stream_ordering) DO NOTHING \
         RETURNING user_id, room_id, thread_id, notifications_before, highlights_before + highlight AS highlights), \
         totals AS (INSERT INTO event_push_totals (user_id, room_id, thread_id, notifications, highlights) \
         SELECT user_id, room_id, thread_id, MAX(notifications_before) + 1, MAX(highlights) FROM actions \
         GROUP BY user_id, room_id, thread_id \
         ON CONFLICT (user_id, room_id, thread_id) DO UPDATE \
         SET notifications = excluded.notifications, highlights = excluded.highlights), \
         {}",
        pushes_and_reads(pushes, now, reads)
    )
}

/// What [`recorded_evaluation`] records for one message, `$1` its position, `$2` its event ID and
/// `$3` its room (the parameters of `insert_event_at_head`). Each recipient has one action at most,
/// so the totals are counted on, and each action is numbered from its total's new value: no window,
/// no lookup of the totals before. Half the work of the batch's form, which is on a message's
/// delivery path once recorded with it. The actions' JSON is parsed once (`recipients`): a room of
/// 100 has 99 of them, and parsing them a second time took 0.17 ms of the statement.
pub(super) fn recorded_message_evaluation(first: usize) -> String {
    let (actions, pushes, now, reads) = (first, first + 1, first + 2, first + 3);
    format!(
        "recipients AS MATERIALIZED (SELECT * FROM json_to_recordset(${actions}::json) \
         AS v(user_id TEXT, thread_id TEXT, actions TEXT, highlight BOOLEAN, ts BIGINT) \
         WHERE EXISTS (SELECT 1 FROM moved)), \
         totals AS (INSERT INTO event_push_totals (user_id, room_id, thread_id, notifications, highlights) \
         SELECT v.user_id, $3, v.thread_id, 1, CAST(v.highlight AS INTEGER) FROM recipients v \
         ON CONFLICT (user_id, room_id, thread_id) DO UPDATE \
         SET notifications = event_push_totals.notifications + 1, \
         highlights = event_push_totals.highlights + excluded.highlights \
         RETURNING user_id, notifications, highlights), \
         actions AS (INSERT INTO event_push_actions (user_id, stream_ordering, room_id, event_id, thread_id, \
         actions, highlight, ts, unread, notifications_before, highlights_before) \
         SELECT v.user_id, $1, $3, $2, v.thread_id, v.actions, CAST(v.highlight AS INTEGER), v.ts, 1, \
         t.notifications - 1, t.highlights - CAST(v.highlight AS INTEGER) \
         FROM recipients v JOIN totals t ON t.user_id = v.user_id), {}",
        pushes_and_reads(pushes, now, reads)
    )
}

/// The queued pushes and the senders' reads, for [`recorded_evaluation`] and
/// [`recorded_message_evaluation`]; the placeholders' numbers are given.
fn pushes_and_reads(pushes: usize, now: usize, reads: usize) -> String {
    format!(
        "pushes AS (INSERT INTO push_queue (user_id, app_id, pushkey, notification, next_attempt_ts) \
         SELECT p.*, ${now} FROM json_to_recordset(${pushes}::json) AS p(user_id TEXT, app_id TEXT, pushkey TEXT, \
         notification TEXT) \
         WHERE EXISTS (SELECT 1 FROM moved)), \
         read AS MATERIALIZED (SELECT a.ctid FROM json_array_elements(${reads}::json) AS s CROSS JOIN LATERAL ( \
         SELECT ctid FROM event_push_actions WHERE unread = 1 AND user_id = s->>0 AND room_id = s->>1 \
         AND stream_ordering <= CAST(s->>2 AS BIGINT) OFFSET 0) a), \
         reads AS (UPDATE event_push_actions SET unread = 0 WHERE ctid = ANY(ARRAY(SELECT ctid FROM read)) \
         AND EXISTS (SELECT 1 FROM read) AND EXISTS (SELECT 1 FROM moved))"
    )
}
