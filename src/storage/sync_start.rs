//! What every sync reads before it knows which rooms have news: the stream positions, the user's
//! memberships, the device's to-device messages (deleting those it acknowledged) and its one-time
//! key counts. On PostgreSQL this is one statement, shared by the syncs that start together (see
//! [`super::batch`]): every woken long-poll runs it, so each statement here is paid once per
//! delivered message and receiver.

use std::{collections::HashMap, sync::OnceLock};

use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::Row;

use super::{
    delivery::{PositionRows, POSITION_ROWS},
    Storage, ToDeviceRow,
};
use crate::error::{Error, Result};

#[derive(Default)]
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
        self.batches
            .sync_start
            .run(
                self,
                SyncStartRequest {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                    acked,
                    limit: to_device_limit,
                },
            )
            .await
    }

    /// [`Self::sync_start`] of several syncs in one statement (PostgreSQL), in their order.
    async fn sync_starts(&self, requests: &[SyncStartRequest]) -> Result<Vec<SyncStart>> {
        let (alone, batched) = statements();
        let query = match requests {
            [request] => sqlx::query(alone.as_str())
                .bind(&request.user_id)
                .bind(&request.device_id)
                .bind(request.acked)
                .bind(request.limit),
            _ => {
                #[derive(Serialize)]
                struct BatchedRequest<'a> {
                    i: usize,
                    user_id: &'a str,
                    device_id: &'a str,
                    acked: i64,
                    lim: i64,
                }
                let parameter: Vec<BatchedRequest> = requests
                    .iter()
                    .enumerate()
                    .map(|(i, r)| BatchedRequest {
                        i,
                        user_id: &r.user_id,
                        device_id: &r.device_id,
                        acked: r.acked,
                        lim: r.limit,
                    })
                    .collect();
                sqlx::query(batched.as_str()).bind(serde_json::to_string(&parameter).map_err(Error::internal)?)
            }
        };
        let mut connection = self.kept_connection().await?;
        let rows = query.fetch_all(&mut *connection).await?;
        connection.keep();
        let mut starts: Vec<SyncStart> = requests.iter().map(|_| SyncStart::default()).collect();
        let mut positions = PositionRows::default();
        for row in rows {
            let (i, kind, a, n, b, c): (Option<i64>, String, String, Option<i64>, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
            if kind == "p" {
                positions.add(a, n);
                continue;
            }
            let Some(start) = i.and_then(|i| usize::try_from(i).ok()).and_then(|i| starts.get_mut(i)) else {
                continue;
            };
            match kind.as_str() {
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
        let (positions, bounds) = positions.finish();
        for start in &mut starts {
            start.to_device.sort_by_key(|m| m.stream_id);
            start.positions.clone_from(&positions);
            start.event_bounds = Some(bounds);
        }
        Ok(starts)
    }
}

/// The statements of [`Storage::sync_starts`]: for one sync (`$1`–`$4` its user, device,
/// acknowledged position and to-device limit), and for several (`$1` their JSON). One sync is the
/// common case, and its statement costs PostgreSQL about a third less to plan and run than the
/// batch's does for one. Rows are `(request index, kind, a, n, b, c)`, the index NULL on the
/// position rows, which all requests share; kinds are p(osition), m(embership), t(o-device),
/// k(ey count), f(allback). The batch reads through each index one request at a time (`LATERAL`).
fn statements() -> &'static (String, String) {
    static STATEMENTS: OnceLock<(String, String)> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        let positions = POSITION_ROWS
            .map(|rows| format!("SELECT CAST(NULL AS BIGINT), 'p', CAST(NULL AS TEXT), CAST(NULL AS TEXT), {rows}"))
            .join(" UNION ALL ");
        let alone = format!(
            "WITH acknowledged AS (DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3) \
             SELECT i, kind, a, n, b, c FROM ({positions} \
             UNION ALL SELECT 0, 'm', membership, NULL, room_id, stream_ordering FROM room_memberships \
               WHERE user_id = $1 AND forgotten = 0 \
             UNION ALL (SELECT 0, 't', event_type, content, sender, stream_id FROM to_device_inbox \
               WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 \
               AND stream_id <= (SELECT position FROM stream_counters WHERE stream = 'to_device') \
               ORDER BY stream_id LIMIT $4) \
             UNION ALL SELECT 0, 'k', NULL, NULL, algorithm, COUNT(*) FROM one_time_keys \
               WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm \
             UNION ALL SELECT 0, 'f', NULL, NULL, algorithm, 0 FROM fallback_keys \
               WHERE user_id = $1 AND device_id = $2 AND used = 0 \
             ) AS rows (i, kind, b, c, a, n)"
        );
        let batched = format!(
            "WITH req AS (SELECT * FROM json_to_recordset($1::json) \
               AS q(i BIGINT, user_id TEXT, device_id TEXT, acked BIGINT, lim BIGINT)), \
             acknowledged AS (DELETE FROM to_device_inbox WHERE ctid = ANY(ARRAY( \
               SELECT t.ctid FROM req CROSS JOIN LATERAL (SELECT ctid FROM to_device_inbox \
               WHERE user_id = req.user_id AND device_id = req.device_id AND stream_id <= req.acked OFFSET 0) t))) \
             SELECT i, kind, a, n, b, c FROM ({positions} \
             UNION ALL SELECT req.i, 'm', m.membership, NULL, m.room_id, m.stream_ordering FROM req \
               CROSS JOIN LATERAL (SELECT room_id, stream_ordering, membership FROM room_memberships \
               WHERE user_id = req.user_id AND forgotten = 0 OFFSET 0) m \
             UNION ALL SELECT req.i, 't', t.event_type, t.content, t.sender, t.stream_id FROM req \
               CROSS JOIN LATERAL (SELECT sender, stream_id, event_type, content FROM to_device_inbox \
               WHERE user_id = req.user_id AND device_id = req.device_id AND stream_id > req.acked \
               AND stream_id <= (SELECT position FROM stream_counters WHERE stream = 'to_device') \
               ORDER BY stream_id LIMIT req.lim) t \
             UNION ALL SELECT req.i, 'k', NULL, NULL, k.algorithm, k.n FROM req \
               CROSS JOIN LATERAL (SELECT algorithm, COUNT(*) AS n FROM one_time_keys \
               WHERE user_id = req.user_id AND device_id = req.device_id GROUP BY algorithm) k \
             UNION ALL SELECT req.i, 'f', NULL, NULL, f.algorithm, 0 FROM req \
               CROSS JOIN LATERAL (SELECT algorithm FROM fallback_keys \
               WHERE user_id = req.user_id AND device_id = req.device_id AND used = 0 OFFSET 0) f \
             ) AS rows (i, kind, b, c, a, n)"
        );
        (alone, batched)
    })
}

/// One sync's part of a batch of [`Storage::sync_starts`].
pub(super) struct SyncStartRequest {
    user_id: String,
    device_id: String,
    acked: i64,
    limit: i64,
}

pub(super) fn sync_start_batch(
    storage: Storage,
    requests: Vec<SyncStartRequest>,
) -> BoxFuture<'static, Result<Vec<SyncStart>>> {
    Box::pin(async move { storage.sync_starts(&requests).await })
}
