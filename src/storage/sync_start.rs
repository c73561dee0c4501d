//! What every sync reads before it knows which rooms have news: the stream positions, the user's
//! memberships, the device's to-device messages (deleting those it acknowledged) and its one-time
//! key counts. On PostgreSQL this is one statement: every woken long-poll runs it, so each round
//! trip here is paid once per delivered message and receiver.

use std::collections::HashMap;

use sqlx::Row;

use super::{delivery::PositionRows, Storage, ToDeviceRow};
use crate::error::Result;

pub struct SyncStart {
    /// The newest position of every counter-based stream.
    pub positions: HashMap<String, i64>,
    /// With positions reserved in the database (PostgreSQL): the visible event position and the
    /// highest committed one.
    pub event_bounds: Option<(i64, i64)>,
    /// (room, membership, position of the change) of every room the user has not forgotten.
    pub memberships: Vec<(String, String, i64)>,
    /// Pending to-device messages up to the `to_device` position, oldest first.
    pub to_device: Vec<ToDeviceRow>,
    /// Unclaimed one-time keys per algorithm.
    pub key_counts: Vec<(String, i64)>,
    /// Algorithms with an unused fallback key.
    pub unused_fallbacks: Vec<String>,
}

impl Storage {
    /// Reads [`SyncStart`] for the user's device, after deleting its to-device messages up to
    /// `acked`; at most `to_device_limit` messages. All parts see one snapshot on PostgreSQL, so
    /// the to-device messages end exactly at the `to_device` position returned.
    pub async fn sync_start(
        &self,
        user_id: &str,
        device_id: &str,
        acked: i64,
        to_device_limit: i64,
    ) -> Result<SyncStart> {
        if !self.shares_event_positions() {
            let (positions, event_bounds) = self.stream_positions_and_visible_events().await?;
            let memberships = self.memberships_of_user(user_id).await?;
            let upto = positions.get("to_device").copied().unwrap_or(0);
            let to_device = self.to_device_messages(user_id, device_id, acked, upto, to_device_limit).await?;
            let (key_counts, unused_fallbacks) = self.key_counts(user_id, device_id).await?;
            return Ok(SyncStart { positions, event_bounds, memberships, to_device, key_counts, unused_fallbacks });
        }
        // Rows are tagged by kind: p(osition), m(embership), t(o-device), k(ey count), f(allback).
        let rows = sqlx::query(
            "WITH acknowledged AS (DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3) \
             SELECT 'p' AS kind, stream AS a, NULL AS b, position AS n, NULL AS c FROM stream_counters \
             UNION ALL SELECT 'p', '.in_flight', NULL, MIN(position), NULL FROM event_positions_in_flight \
             UNION ALL SELECT 'p', '.events', NULL, COALESCE(MAX(stream_ordering), 0), NULL FROM events \
             UNION ALL SELECT 'm', room_id, membership, stream_ordering, NULL FROM room_memberships \
               WHERE user_id = $1 AND forgotten = 0 \
             UNION ALL (SELECT 't', sender, event_type, stream_id, content FROM to_device_inbox \
               WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 \
               AND stream_id <= (SELECT position FROM stream_counters WHERE stream = 'to_device') \
               ORDER BY stream_id LIMIT $4) \
             UNION ALL SELECT 'k', algorithm, NULL, COUNT(*), NULL FROM one_time_keys \
               WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm \
             UNION ALL SELECT 'f', algorithm, NULL, 0, NULL FROM fallback_keys \
               WHERE user_id = $1 AND device_id = $2 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(acked)
        .bind(to_device_limit)
        .fetch_all(&self.pool)
        .await?;
        let mut start = SyncStart {
            positions: HashMap::new(),
            event_bounds: None,
            memberships: Vec::new(),
            to_device: Vec::new(),
            key_counts: Vec::new(),
            unused_fallbacks: Vec::new(),
        };
        let mut positions = PositionRows::default();
        for row in rows {
            let (kind, a, b, n, c): (String, String, Option<String>, Option<i64>, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            match kind.as_str() {
                "p" => positions.add(a, n),
                "m" => start.memberships.push((a, b.unwrap_or_default(), n.unwrap_or(0))),
                "t" => start.to_device.push(ToDeviceRow {
                    stream_id: n.unwrap_or(0),
                    sender: a,
                    event_type: b.unwrap_or_default(),
                    content: c.unwrap_or_default(),
                }),
                "k" => start.key_counts.push((a, n.unwrap_or(0))),
                _ => start.unused_fallbacks.push(a),
            }
        }
        start.to_device.sort_by_key(|m| m.stream_id);
        let (positions, bounds) = positions.finish();
        (start.positions, start.event_bounds) = (positions, Some(bounds));
        Ok(start)
    }
}
