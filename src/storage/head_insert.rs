//! Messages stored at their room's head on PostgreSQL, with no transaction around them: each
//! in one statement at a position reserved beforehand, alone or with those of other rooms' senders
//! at the same moment, and with its push evaluation when it is the next event to evaluate.

use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::{Any, Row};

use super::{
    placeholders,
    push::recorded_message_evaluation,
    room_write::{bind_event, stored_auth_edges},
    value_rows, EvaluationBatch, EventLinks, EventRow, MessageEvaluation, NewEvent, NewRelation, Storage,
};
use crate::error::{Error, Result};

/// Persists a new event on PostgreSQL, at its reserved position, in one statement: its row, its
/// DAG edges, the room's forward extremities (it replaces those it references), the `has_relations`
/// mark of a bundled relation's parent, its client transaction, and the room's head. Every write
/// selects from the `head` CTE, which moves the head only if it is still `expected_head` and the
/// device has not used the transaction ID: otherwise nothing is written and `None` comes back.
///
/// With the position comes, when the event is the next one push evaluation must take, where that
/// evaluation stands ([`EvaluationStart`]): the evaluator then starts from what the writer holds,
/// without reading it back (a round trip between every commit and its delivery). The statement's
/// snapshot is taken after this event's reservation committed, and a lower position is reserved
/// and committed before a higher one is drawn (see [`reserve_positions_batch`]): a lower event
/// that is neither an event nor a reservation in the snapshot will never be written. With an
/// `evaluation` made by the sender, the same proof lets the statement record it and move
/// `push_evaluated` past the event ([`evaluated_with_message`]).
pub(super) async fn insert_event_at_head<'c>(
    executor: impl sqlx::Executor<'c, Database = Any>,
    expected_head: i64,
    e: &NewEvent<'_>,
    links: &EventLinks<'_>,
    evaluation: Option<&MessageEvaluation>,
) -> Result<Option<(i64, Evaluated)>> {
    let position = e.stream_ordering.ok_or_else(|| Error::internal("a PostgreSQL event needs a reserved position"))?;
    // $1–$13 the event's columns, $14 its search text, $15 the expected head, $16–$18 the
    // transaction (empty strings when none: no stored key is empty), then the edges' targets.
    const FIRST_EDGE: usize = 19;
    let first_auth = FIRST_EDGE + links.prev_events.len();
    let auth_events = stored_auth_edges(e, links);
    let mut parts = vec![
        "head AS (UPDATE rooms SET head_stream = $1 WHERE room_id = $3 AND head_stream = $15 AND NOT EXISTS \
         (SELECT 1 FROM event_transactions WHERE user_id = $16 AND device_id = $17 AND txn_id = $18) \
         RETURNING room_id)"
            .to_owned(),
        "gone AS (DELETE FROM event_positions_in_flight WHERE position = $1 AND EXISTS (SELECT 1 FROM head))"
            .to_owned(),
        "extremity AS (INSERT INTO room_forward_extremities (room_id, event_id) SELECT room_id, $2 FROM head)"
            .to_owned(),
    ];
    if !links.prev_events.is_empty() {
        parts.push(format!(
            "prev AS (INSERT INTO event_edges (event_id, prev_event_id) SELECT $2, target FROM head, \
             (VALUES {}) v(target) ON CONFLICT DO NOTHING)",
            value_rows(FIRST_EDGE, links.prev_events.len())
        ));
        parts.push(format!(
            "referenced AS (DELETE FROM room_forward_extremities WHERE room_id = $3 AND event_id IN ({}) \
             AND EXISTS (SELECT 1 FROM head))",
            placeholders(FIRST_EDGE, links.prev_events.len())
        ));
    }
    if !auth_events.is_empty() {
        parts.push(format!(
            "auth AS (INSERT INTO event_auth_edges (event_id, auth_event_id) SELECT $2, target FROM head, \
             (VALUES {}) v(target) ON CONFLICT DO NOTHING)",
            value_rows(first_auth, auth_events.len())
        ));
    }
    if e.relation.is_some_and(|r| r.bundled) {
        parts.push(
            "parent AS (UPDATE events SET has_relations = 1 WHERE event_id = $12 AND room_id = $3 \
             AND has_relations = 0 AND EXISTS (SELECT 1 FROM head))"
                .to_owned(),
        );
    }
    if links.transaction.is_some() {
        parts.push(
            "txn AS (INSERT INTO event_transactions (user_id, device_id, txn_id, event_id) \
             SELECT $16, $17, $18, $2 FROM head)"
                .to_owned(),
        );
    }
    // Where evaluation stands, and whether this event is the next one it must take.
    parts.push(format!(
        "counters AS (SELECT c.*, NOT EXISTS (SELECT 1 FROM event_positions_in_flight WHERE position < $1) \
         AND NOT EXISTS (SELECT 1 FROM events WHERE stream_ordering < $1 AND stream_ordering > c.evaluated) \
         AS next FROM {COUNTERS_TO_EVALUATE} c)"
    ));
    let first_evaluation = first_auth + auth_events.len();
    if evaluation.is_some() {
        parts.push(evaluated_with_message(first_evaluation));
    }
    let recorded = if evaluation.is_some() { "(SELECT COUNT(*) FROM moved)" } else { "0" };
    let sql = format!(
        "WITH {}, inserted AS (INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, \
         state_key, sender, origin_server_ts, state_snapshot, pdu, replaces_state, relates_to, rel_type, \
         search_vector) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         to_tsvector('english', $14) FROM head RETURNING stream_ordering) \
         SELECT stream_ordering, CASE WHEN c.next THEN c.evaluated END, c.account_data, c.pushers, {recorded} \
         FROM inserted, counters c",
        parts.join(", ")
    );
    let (user_id, device_id, txn_id) = links.transaction.unwrap_or_default();
    let mut query = bind_event(sqlx::query(&sql), Some(position), e)
        .bind(e.search_text)
        .bind(expected_head)
        .bind(user_id)
        .bind(device_id)
        .bind(txn_id);
    for target in links.prev_events.iter().chain(auth_events) {
        query = query.bind(*target);
    }
    let parameters = evaluation.map(|ev| Ok::<_, Error>((ev, ev.parameters(e.sender, e.room_id, position)?)));
    if let Some((evaluation, (actions, pushes, reads))) = parameters.transpose()? {
        let rules = serde_json::to_string(&evaluation.rules_checked).map_err(Error::internal)?;
        query =
            query.bind(rules).bind(evaluation.pushers_at).bind(actions).bind(pushes).bind(evaluation.now).bind(reads);
    }
    Ok(query.fetch_optional(executor).await?.map(|r| {
        let evaluated = if r.get::<i64, _>(4) == 1 {
            Evaluated::WithMessage
        } else {
            r.get::<Option<i64>, _>(1).map_or(Evaluated::Later, |push_evaluated| {
                Evaluated::Next(EvaluationStart { push_evaluated, account_data: r.get(2), pushers: r.get(3) })
            })
        };
        (r.get(0), evaluated)
    }))
}

/// The CTEs that record a message's [`MessageEvaluation`] with the message, `$first` onwards its
/// parameters: the recipients' rule checks (JSON `[user, account data position]` each), the
/// pushers' position, then those of [`recorded_message_evaluation`]. `moved` moves `push_evaluated` to the
/// message, and so lets the rest record, only if the message is stored and is the next event to
/// evaluate (`counters.next`, the proof [`EvaluationStart`] rests on), if no pusher changed since
/// the evaluation's were read, and if no recipient's push rules changed since they were last found
/// current. A position moved meanwhile by an evaluator (the row is read again once its lock is
/// granted) no longer equals the snapshot's `counters.evaluated`. The proof compares events with
/// that snapshot value, not with the updated row's own column: so compared, the planner made it an
/// anti-join that scanned all of `events` for every message. The rules are probed one recipient at
/// a time (`LATERAL`, kept apart by `OFFSET 0`): as a join, the plan hashed every user's stored
/// push rules, read through the primary key's index without its leading column.
fn evaluated_with_message(first: usize) -> String {
    let (rules, pushers) = (first, first + 1);
    format!(
        "moved AS (UPDATE stream_counters SET position = $1 FROM counters c \
         WHERE stream_counters.stream = 'push_evaluated' AND stream_counters.position = c.evaluated \
         AND c.next AND c.pushers = ${pushers} AND EXISTS (SELECT 1 FROM head) \
         AND NOT EXISTS (SELECT 1 FROM json_array_elements(${rules}::json) AS r CROSS JOIN LATERAL ( \
         SELECT 1 FROM account_data a WHERE a.user_id = r->>0 AND a.room_id = '' AND a.data_type = 'm.push_rules' \
         AND a.stream_id > CAST(r->>1 AS BIGINT) OFFSET 0) a) \
         RETURNING 1), {}",
        recorded_message_evaluation(first + 2)
    )
}

/// The stream counters push evaluation starts from, as one row `c(evaluated, account_data, pushers)`.
const COUNTERS_TO_EVALUATE: &str = "(SELECT \
     COALESCE(MAX(position) FILTER (WHERE stream = 'push_evaluated'), 0) AS evaluated, \
     COALESCE(MAX(position) FILTER (WHERE stream = 'account_data'), 0) AS account_data, \
     COALESCE(MAX(position) FILTER (WHERE stream = 'pushers'), 0) AS pushers \
     FROM stream_counters WHERE stream IN ('push_evaluated', 'account_data', 'pushers'))";

/// What became of a message's push evaluation when it was stored.
pub(super) enum Evaluated {
    /// Recorded with it ([`MessageEvaluation`]).
    WithMessage,
    /// It is the next event to evaluate, from there.
    Next(EvaluationStart),
    /// The evaluator will take it in turn.
    Later,
}

/// Where push evaluation stood when a message was stored, if it was the next event to evaluate.
pub(super) struct EvaluationStart {
    push_evaluated: i64,
    account_data: i64,
    pushers: i64,
}

/// A message stored at its room's head ([`Storage::insert_message_at_head`]).
pub struct StoredMessage {
    pub position: i64,
    /// When the message was the next event to evaluate: the batch that evaluates it, which the
    /// push evaluator may take instead of reading it (see [`insert_event_at_head`]).
    pub evaluation: Option<EvaluationBatch>,
    /// Its [`MessageEvaluation`] was recorded with it: `push_evaluated` is at the message.
    pub evaluated: bool,
}

/// A message for [`insert_messages_batch`], owned so that it can wait in a batch: what
/// [`insert_event_at_head`] takes, and the object [`insert_events_at_head`] reads for each event.
#[derive(Serialize)]
pub(super) struct HeadInsert {
    position: i64,
    event_id: String,
    room_id: String,
    depth: i64,
    event_type: String,
    state_key: Option<String>,
    sender: String,
    origin_server_ts: i64,
    state_snapshot: i64,
    pdu: String,
    replaces_state: Option<String>,
    relates_to: Option<String>,
    rel_type: Option<String>,
    bundled: bool,
    search_text: Option<String>,
    expected_head: i64,
    user_id: Option<String>,
    device_id: Option<String>,
    txn_id: Option<String>,
    prev: Vec<String>,
    auth: Vec<String>,
    /// Recorded with the message when it goes alone (see [`evaluated_with_message`]).
    #[serde(skip)]
    evaluation: Option<MessageEvaluation>,
}

impl HeadInsert {
    pub(super) fn of(
        expected_head: i64,
        e: &NewEvent<'_>,
        links: &EventLinks<'_>,
        evaluation: Option<MessageEvaluation>,
    ) -> Result<Self> {
        let position =
            e.stream_ordering.ok_or_else(|| Error::internal("a PostgreSQL event needs a reserved position"))?;
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Ok(Self {
            position,
            event_id: e.event_id.to_owned(),
            room_id: e.room_id.to_owned(),
            depth: e.depth,
            event_type: e.event_type.to_owned(),
            state_key: e.state_key.map(str::to_owned),
            sender: e.sender.to_owned(),
            origin_server_ts: e.origin_server_ts,
            state_snapshot: e.state_snapshot,
            pdu: e.pdu.to_owned(),
            replaces_state: e.replaces_state.map(str::to_owned),
            relates_to: e.relation.map(|r| r.parent.to_owned()),
            rel_type: e.relation.map(|r| r.rel_type.to_owned()),
            bundled: e.relation.is_some_and(|r| r.bundled),
            search_text: e.search_text.map(str::to_owned),
            expected_head,
            user_id: links.transaction.map(|(user, _, _)| user.to_owned()),
            device_id: links.transaction.map(|(_, device, _)| device.to_owned()),
            txn_id: links.transaction.map(|(_, _, txn)| txn.to_owned()),
            prev: owned(links.prev_events),
            auth: owned(stored_auth_edges(e, links)),
            evaluation,
        })
    }

    /// Stores it alone, by [`insert_event_at_head`].
    async fn insert_alone(&self, connection: &mut sqlx::AnyConnection) -> Result<Option<StoredMessage>> {
        let event = NewEvent {
            stream_ordering: Some(self.position),
            event_id: &self.event_id,
            room_id: &self.room_id,
            depth: self.depth,
            event_type: &self.event_type,
            state_key: self.state_key.as_deref(),
            sender: &self.sender,
            origin_server_ts: self.origin_server_ts,
            state_snapshot: self.state_snapshot,
            pdu: &self.pdu,
            search_text: self.search_text.as_deref(),
            replaces_state: self.replaces_state.as_deref(),
            relation: self.relates_to.as_deref().zip(self.rel_type.as_deref()).map(|(parent, rel_type)| NewRelation {
                parent,
                rel_type,
                bundled: self.bundled,
            }),
        };
        let prev: Vec<&str> = self.prev.iter().map(String::as_str).collect();
        let auth: Vec<&str> = self.auth.iter().map(String::as_str).collect();
        let transaction = match (&self.user_id, &self.device_id, &self.txn_id) {
            (Some(user), Some(device), Some(txn)) => Some((user.as_str(), device.as_str(), txn.as_str())),
            _ => None,
        };
        let links = EventLinks { prev_events: &prev, auth_events: &auth, transaction };
        let mut stored =
            insert_event_at_head(&mut *connection, self.expected_head, &event, &links, self.evaluation.as_ref()).await;
        if let (Err(e), Some(_)) = (&stored, &self.evaluation) {
            // Nothing was stored (one statement, its own transaction). Recording the evaluation
            // takes locks that the message alone does not (`push_evaluated`, the recipients'
            // totals): a deadlock with a receipt or an evaluator, however rare, must not fail the
            // send. The evaluator takes the message in turn.
            tracing::debug!(error = %e, "message stored without its evaluation");
            stored = insert_event_at_head(&mut *connection, self.expected_head, &event, &links, None).await;
        }
        let Some((position, evaluated)) = stored? else {
            return Ok(None);
        };
        let start = match evaluated {
            Evaluated::WithMessage => return Ok(Some(StoredMessage { position, evaluation: None, evaluated: true })),
            Evaluated::Next(start) => Some(start),
            Evaluated::Later => None,
        };
        let evaluation = start.map(|start| EvaluationBatch {
            positions: [
                ("push_evaluated", start.push_evaluated),
                ("account_data", start.account_data),
                ("pushers", start.pushers),
            ]
            .into_iter()
            .map(|(stream, position)| (stream.to_owned(), position))
            .collect(),
            from: start.push_evaluated,
            upto: position,
            events: vec![self.row()],
        });
        Ok(Some(StoredMessage { position, evaluation, evaluated: false }))
    }

    /// The event's row as it was stored.
    fn row(&self) -> EventRow {
        EventRow {
            stream_ordering: self.position,
            event_id: self.event_id.clone(),
            room_id: self.room_id.clone(),
            event_type: self.event_type.clone(),
            state_key: self.state_key.clone(),
            sender: self.sender.clone(),
            state_snapshot: self.state_snapshot,
            pdu: self.pdu.clone(),
            redacted_by: None,
            replaces_state: self.replaces_state.clone(),
            has_relations: false,
        }
    }
}

/// The statement of [`insert_events_at_head`]. Only batches with a bundled relation have the part
/// that marks parents: a generic plan made while `events` was young would scan it whole for every
/// batch, and such a plan stays until the table's next ANALYZE.
fn insert_statement(marks_parents: bool) -> &'static str {
    static STATEMENTS: OnceLock<[String; 2]> = OnceLock::new();
    let [plain, marking] = STATEMENTS.get_or_init(|| {
        let statement = |parent: &str| {
            format!(
                "WITH req AS MATERIALIZED (SELECT * FROM json_to_recordset($1::json) AS r(position BIGINT, \
                 event_id TEXT, room_id TEXT, depth BIGINT, event_type TEXT, state_key TEXT, sender TEXT, \
                 origin_server_ts BIGINT, state_snapshot BIGINT, pdu TEXT, replaces_state TEXT, relates_to TEXT, \
                 rel_type TEXT, bundled BOOLEAN, search_text TEXT, expected_head BIGINT, user_id TEXT, device_id TEXT, \
                 txn_id TEXT, prev JSON, auth JSON)), \
                 head AS (UPDATE rooms SET head_stream = req.position FROM req WHERE rooms.room_id = req.room_id \
                 AND rooms.head_stream = req.expected_head AND NOT EXISTS (SELECT 1 FROM event_transactions t \
                 WHERE t.user_id = req.user_id AND t.device_id = req.device_id AND t.txn_id = req.txn_id) \
                 RETURNING req.*), \
                 gone AS (DELETE FROM event_positions_in_flight WHERE position IN (SELECT position FROM head)), \
                 extremity AS (INSERT INTO room_forward_extremities (room_id, event_id) \
                 SELECT room_id, event_id FROM head), \
                 prev AS (INSERT INTO event_edges (event_id, prev_event_id) SELECT event_id, target FROM head, \
                 json_array_elements_text(prev) v(target) ON CONFLICT DO NOTHING), \
                 referenced AS (DELETE FROM room_forward_extremities WHERE (room_id, event_id) IN \
                 (SELECT room_id, target FROM head, json_array_elements_text(prev) v(target))), \
                 auth AS (INSERT INTO event_auth_edges (event_id, auth_event_id) SELECT event_id, target FROM head, \
                 json_array_elements_text(auth) v(target) ON CONFLICT DO NOTHING), \
                 {parent}txn AS (INSERT INTO event_transactions (user_id, device_id, txn_id, event_id) \
                 SELECT user_id, device_id, txn_id, event_id FROM head WHERE txn_id IS NOT NULL), \
                 inserted AS (INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, \
                 sender, origin_server_ts, state_snapshot, pdu, replaces_state, relates_to, rel_type, search_vector) \
                 SELECT position, event_id, room_id, depth, event_type, state_key, sender, origin_server_ts, \
                 state_snapshot, pdu, replaces_state, relates_to, rel_type, to_tsvector('english', search_text) \
                 FROM head \
                 RETURNING stream_ordering) \
                 SELECT stream_ordering FROM inserted",
            )
        };
        [
            statement(""),
            statement(
                "parent AS (UPDATE events SET has_relations = 1 WHERE event_id IN (SELECT relates_to FROM head \
                 WHERE bundled) AND has_relations = 0), ",
            ),
        ]
    });
    if marks_parents {
        marking
    } else {
        plain
    }
}

/// Persists new events on PostgreSQL, each at its reserved position, in one statement: their rows,
/// DAG edges, their rooms' forward extremities (each replaces those it references), the
/// `has_relations` mark of a bundled relation's parent, their client transactions, and their rooms'
/// heads. Every write selects from the `head` CTE, which moves a room's head only if it is still
/// the event's `expected_head` and the device has not used the transaction ID: the events that
/// failed either check are not written, and are missing from the positions that come back. At most
/// one event per room is written (the lock of a room's writer keeps its events apart anyway).
async fn insert_events_at_head<'c>(
    executor: impl sqlx::Executor<'c, Database = Any>,
    events: &[HeadInsert],
) -> Result<Vec<i64>> {
    // The join locks rooms' rows as it meets them, in the array's order when it walks the array:
    // in room order, two processes' batches do not each hold a room the other waits for. (Should
    // they, PostgreSQL fails one statement after `deadlock_timeout`, and its events go alone.)
    let mut ordered: Vec<&HeadInsert> = events.iter().collect();
    ordered.sort_unstable_by(|a, b| a.room_id.cmp(&b.room_id));
    let rows = serde_json::to_string(&ordered).map_err(Error::internal)?;
    let statement = insert_statement(events.iter().any(|e| e.bundled));
    let stored = sqlx::query(statement).bind(rows).fetch_all(executor).await?;
    Ok(stored.iter().map(|r| r.get(0)).collect())
}

/// The statement of [`reserve_positions_batch`], drawing a position for each row that `$rows`
/// (joined after `locked`) adds; `$1` is the reservations' time.
macro_rules! reservation {
    ($rows:literal) => {
        concat!(
            "WITH locked AS (SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(7300117)) \
             INSERT INTO event_positions_in_flight (position, created_ts) \
             SELECT nextval(pg_get_serial_sequence('events', 'stream_ordering')), $1 FROM locked",
            $rows,
            " RETURNING position"
        )
    };
}

/// Reserves one event position per request, in one statement, so one implicit transaction: the
/// lock is taken before the positions are drawn and held until the commit, so reservations become
/// visible in position order. A reservation needs to be visible, not durable, so the commit skips
/// the WAL flush: the event's own (synchronous) commit flushes the WAL past it, and if the server
/// dies first, neither the reservation nor an event at that position survives. Each request is
/// one room's writer, under its room's lock: which of the positions it gets does not matter.
pub(super) fn reserve_positions_batch(storage: Storage, nows: Vec<i64>) -> BoxFuture<'static, Result<Vec<i64>>> {
    Box::pin(async move {
        if storage.reservations.is_none() {
            return Err(Error::internal("event positions are reserved on PostgreSQL"));
        }
        // A lone reservation's statement has no series to plan: it binds faster.
        let now = nows.iter().copied().max().unwrap_or_default();
        let query = if nows.len() > 1 {
            sqlx::query(reservation!(", generate_series(1, CAST($2 AS BIGINT))")).bind(now).bind(nows.len() as i64)
        } else {
            sqlx::query(reservation!("")).bind(now)
        };
        let mut connection = storage.kept_connection_for_reservations().await?;
        let rows = query.fetch_all(&mut *connection).await?;
        connection.keep();
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })
}

/// Runs the messages that concurrent senders store at the same moment as one statement, one
/// commit (see [`super::batch`]): they share its round trip, start-up and WAL flush. Answers each
/// with its position, or `None` when its room's head had moved. A lone message takes the statement
/// of its own, which runs in half the time of the batch's for one row (its values come as parameters,
/// not as JSON to unpack and join). One event's failure (a constraint) fails the whole statement,
/// so then each goes alone and only its own fails.
pub(super) fn insert_messages_batch(
    storage: Storage,
    events: Vec<HeadInsert>,
) -> BoxFuture<'static, Result<Vec<Result<Option<StoredMessage>>>>> {
    Box::pin(async move {
        let mut connection = storage.kept_connection().await?;
        if let [event] = events.as_slice() {
            let stored = event.insert_alone(&mut connection).await;
            if stored.is_ok() {
                connection.keep();
            }
            return Ok(vec![stored]);
        }
        let stored = insert_events_at_head(&mut *connection, &events).await;
        if stored.is_ok() {
            connection.keep();
        }
        match stored {
            Ok(stored) => Ok(events
                .iter()
                .map(|e| {
                    let position = stored.contains(&e.position).then_some(e.position);
                    Ok(position.map(|position| StoredMessage { position, evaluation: None, evaluated: false }))
                })
                .collect()),
            Err(_) => {
                let mut answers = Vec::with_capacity(events.len());
                for event in &events {
                    let mut connection = storage.pool.acquire().await?;
                    answers.push(event.insert_alone(&mut connection).await);
                }
                Ok(answers)
            }
        }
    })
}

impl Storage {
    /// Reserves the next event position; `None` on SQLite, where the event's own transaction
    /// assigns it (writes are serialized there). On PostgreSQL the reservations that writers of
    /// several rooms ask for at the same moment are taken together (see [`reserve_positions_batch`]).
    pub async fn reserve_event_position(&self, now: i64) -> Result<Option<i64>> {
        if self.reservations.is_none() {
            return Ok(None);
        }
        Ok(Some(self.batches.positions.run(self, now).await?))
    }

    /// Stores a message event (no state key, no redaction) in one autocommit statement, shared with
    /// the messages other rooms' senders store at the same moment, with all that
    /// [`RoomWrite::insert_linked_event`] writes, if the room's head is still `expected_head` and
    /// the device has not used the transaction ID; `None` (nothing stored) otherwise. PostgreSQL
    /// only, at a reserved position. A send that took the room's transaction instead pays three
    /// more round trips (BEGIN, the room's row lock, COMMIT); the guard on the head serializes
    /// writers across processes as that lock does: a concurrent writer changes the head, and this
    /// statement, blocked on the row until it commits, then finds it changed.
    pub async fn insert_message_at_head(
        &self,
        expected_head: i64,
        e: &NewEvent<'_>,
        links: &EventLinks<'_>,
        evaluation: Option<MessageEvaluation>,
    ) -> Result<Option<StoredMessage>> {
        let event = HeadInsert::of(expected_head, e, links, evaluation)?;
        self.batches.messages.run(self, event).await?
    }

    /// Gives up a reservation whose event was not stored, as [`Self::reserve_event_position`]
    /// returned it: `None` (SQLite) reserved nothing.
    pub async fn release_event_position(&self, reserved: Option<i64>) -> Result<()> {
        let Some(position) = reserved else { return Ok(()) };
        let pool = self.reservations.as_ref().unwrap_or(&self.pool);
        sqlx::query("DELETE FROM event_positions_in_flight WHERE position = $1").bind(position).execute(pool).await?;
        Ok(())
    }

    /// Whether event positions are reserved in the database (several processes may write).
    pub fn shares_event_positions(&self) -> bool {
        self.reservations.is_some()
    }

    /// Drops reservations older than `cutoff`: their writer died between reserving and committing.
    pub async fn drop_stale_event_positions(&self, cutoff: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM event_positions_in_flight WHERE created_ts < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
