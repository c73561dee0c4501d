//! `stream_counters`, `filters`, `account_data`, `to_device_inbox`, `receipts`: what /sync delivers
//! besides room events.

use sqlx::{Any, Row, Transaction};

use super::{placeholders, Backend, Storage};
use crate::error::Result;

/// Takes the next position of a stream inside `tx`; the counter row stays locked until commit.
pub(super) async fn next_position(tx: &mut Transaction<'static, Any>, stream: &str) -> Result<i64> {
    let row = sqlx::query("UPDATE stream_counters SET position = position + 1 WHERE stream = $1 RETURNING position")
        .bind(stream)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.get(0))
}

/// Collects the rows of [`POSITION_ROWS`], whichever statement they come with.
#[derive(Default)]
pub(super) struct PositionRows {
    positions: std::collections::HashMap<String, i64>,
    lowest_in_flight: Option<i64>,
    max_committed: i64,
}

/// The stream counters, the lowest event position still being written and the highest committed
/// one, as `(stream, position)` rows; statements that read more pad these rows with NULLs.
pub(super) const POSITION_ROWS: [&str; 3] = [
    "stream, position FROM stream_counters",
    "'.in_flight', MIN(position) FROM event_positions_in_flight",
    "'.events', COALESCE(MAX(stream_ordering), 0) FROM events",
];

impl PositionRows {
    pub(super) fn add(&mut self, stream: String, position: Option<i64>) {
        match stream.as_str() {
            ".in_flight" => self.lowest_in_flight = position,
            ".events" => self.max_committed = position.unwrap_or(0),
            _ => {
                self.positions.insert(stream, position.unwrap_or(0));
            }
        }
    }

    /// The stream positions, and the (visible, committed) event positions: readers stop below the
    /// lowest position still being written.
    pub(super) fn finish(self) -> (std::collections::HashMap<String, i64>, (i64, i64)) {
        let max = self.max_committed;
        (self.positions, (self.lowest_in_flight.map_or(max, |lowest| max.min(lowest - 1)), max))
    }
}

pub struct AccountDataRow {
    pub room_id: String,
    pub data_type: String,
    pub content: String,
}

pub struct ToDeviceRow {
    pub stream_id: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

impl Storage {
    /// `NOTIFY channel, payload` (PostgreSQL), for the other processes.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&self.pool).await?;
        Ok(())
    }

    /// The newest position of every counter-based stream, in one query.
    pub async fn stream_positions(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows = sqlx::query("SELECT stream, position FROM stream_counters").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// [`Storage::stream_positions`] and, when event positions are reserved in the database
    /// (PostgreSQL), the visible event position and the highest committed one, in one query: what
    /// a sync or the push evaluator reads first.
    pub async fn stream_positions_and_visible_events(
        &self,
    ) -> Result<(std::collections::HashMap<String, i64>, Option<(i64, i64)>)> {
        if !self.shares_event_positions() {
            return Ok((self.stream_positions().await?, None));
        }
        let sql = POSITION_ROWS.map(|rows| format!("SELECT {rows}")).join(" UNION ALL ");
        let mut collected = PositionRows::default();
        for row in sqlx::query(&sql).fetch_all(&self.pool).await? {
            collected.add(row.get(0), row.get(1));
        }
        let (positions, bounds) = collected.finish();
        Ok((positions, Some(bounds)))
    }

    /// The newest room event's stream ordering.
    pub async fn max_event_stream(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetch_one(&self.pool).await?;
        Ok(row.get(0))
    }

    pub async fn insert_filter(&self, user_id: &str, filter: &str) -> Result<i64> {
        let row = sqlx::query("INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id")
            .bind(user_id)
            .bind(filter)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Sets one account data item (`room_id` '' for global); returns its stream position.
    pub async fn set_account_data(&self, user_id: &str, room_id: &str, data_type: &str, content: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let position = next_position(&mut tx, "account_data").await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    pub async fn account_data(&self, user_id: &str, room_id: &str, data_type: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
                .bind(user_id)
                .bind(room_id)
                .bind(data_type)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The user's account data changed in `(after, upto]`, global and per room.
    pub async fn account_data_changes(&self, user_id: &str, after: i64, upto: i64) -> Result<Vec<AccountDataRow>> {
        let rows = sqlx::query(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 \
             ORDER BY stream_id",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AccountDataRow { room_id: r.get(0), data_type: r.get(1), content: r.get(2) })
            .collect())
    }

    /// Queues to-device messages, `(user, device, content)` each; `false` (and nothing queued) when
    /// the sender's device used this transaction ID already. Returns the last position.
    pub async fn queue_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &[(String, String, String)],
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_transactions (sender, device_id, txn_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(sender)
        .bind(sender_device)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(None);
        }
        let mut last = None;
        for (user_id, device_id, content) in messages {
            let position = next_position(&mut tx, "to_device").await?;
            sqlx::query(
                "INSERT INTO to_device_inbox (stream_id, user_id, device_id, sender, event_type, content) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(position)
            .bind(user_id)
            .bind(device_id)
            .bind(sender)
            .bind(event_type)
            .bind(content)
            .execute(&mut *tx)
            .await?;
            last = Some(position);
        }
        tx.commit().await?;
        Ok(Some(last.unwrap_or(0)))
    }

    /// Deletes what the device has acknowledged (positions up to `acked`), then returns up to
    /// `limit` pending messages up to `upto`.
    pub async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        acked: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>> {
        // Every sync runs this: on PostgreSQL the delete rides along with the read, one round trip
        // (the two touch disjoint rows, so the read's snapshot is the same either way).
        let read = "SELECT stream_id, sender, event_type, content FROM to_device_inbox WHERE user_id = $1 \
                    AND device_id = $2 AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id LIMIT $5";
        let delete = "DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3";
        let sql = match self.backend {
            Backend::Postgres => format!("WITH acknowledged AS ({delete}) {read}"),
            Backend::Sqlite => {
                sqlx::query(delete).bind(user_id).bind(device_id).bind(acked).execute(&self.pool).await?;
                read.to_owned()
            }
        };
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(device_id)
            .bind(acked)
            .bind(upto)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ToDeviceRow { stream_id: r.get(0), sender: r.get(1), event_type: r.get(2), content: r.get(3) })
            .collect())
    }

    /// Records a receipt, replacing the user's previous one of that type and thread in the room.
    /// A read receipt also marks the notifications it covers as read (up to `event_stream`, in its
    /// thread, or in all threads when it has none); returns the position and how many it marked.
    pub async fn set_receipt(&self, r: &ReceiptRow, event_stream: i64) -> Result<(i64, u64)> {
        let mut tx = self.pool.begin().await?;
        let position = next_position(&mut tx, "receipts").await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, \
             stream_id = excluded.stream_id",
        )
        .bind(&r.room_id)
        .bind(&r.user_id)
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .bind(&r.event_id)
        .bind(r.ts)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        let mut marked = 0;
        if r.receipt_type == "m.read" || r.receipt_type == "m.read.private" {
            marked = sqlx::query(
                "UPDATE event_push_actions SET unread = 0 WHERE user_id = $1 AND room_id = $2 AND unread = 1 \
                 AND stream_ordering <= $3 AND ($4 = '' OR thread_id = $4)",
            )
            .bind(&r.user_id)
            .bind(&r.room_id)
            .bind(event_stream)
            .bind(&r.thread_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok((position, marked))
    }

    /// Receipts in the rooms changed in `(after, upto]`.
    pub async fn receipt_changes(&self, room_ids: &[&str], after: i64, upto: i64) -> Result<Vec<ReceiptRow>> {
        let mut found = Vec::new();
        for chunk in room_ids.chunks(500) {
            let sql = format!(
                "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts \
                 WHERE stream_id > $1 AND stream_id <= $2 AND room_id IN ({}) ORDER BY stream_id",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(after).bind(upto);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(|r| ReceiptRow {
                room_id: r.get(0),
                user_id: r.get(1),
                receipt_type: r.get(2),
                thread_id: r.get(3),
                event_id: r.get(4),
                ts: r.get(5),
            }));
        }
        Ok(found)
    }
}
