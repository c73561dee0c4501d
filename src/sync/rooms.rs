//! The `rooms` section of a sync: joined rooms (timeline, state, ephemeral, account data,
//! summary), invites (stripped state) and rooms left. A bounded number of queries whatever the
//! number of rooms: one for the timelines (with the unread counts of ongoing rooms), one for the
//! state of the rooms that need it, one for members.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value as JsonValue};

use super::{
    response::{Events, JoinedRoom, Timeline, UnreadCounts},
    token::StreamToken,
    SyncRequest, SyncService,
};
use crate::{
    error::Result,
    rooms::format,
    storage::{EventRow, NewsSnapshot, RoomNews, UnreadCount},
};

/// State shown to an invitee (spec: "Stripped state").
const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The stripped state an invitee or a knocker sees of a room (spec: "Stripped state"): the
/// room's description, their own member event, and the member event of whoever invited them.
fn stripped_state(state: Option<&Vec<EventRow>>, user_id: &str) -> Vec<JsonValue> {
    let Some(state) = state else { return Vec::new() };
    let own = state.iter().find(|m| m.event_type == "m.room.member" && m.state_key.as_deref() == Some(user_id));
    let inviter = own.filter(|m| m.sender != user_id).map(|m| m.sender.as_str());
    state
        .iter()
        .filter(|e| {
            STRIPPED_STATE.contains(&e.event_type.as_str())
                || (e.event_type == "m.room.member"
                    && (e.state_key.as_deref() == Some(user_id) || e.state_key.as_deref() == inviter))
        })
        .map(|e| {
            let event = format::client_event(e, None);
            json!({"type": event["type"], "state_key": event["state_key"], "content": event["content"], "sender": event["sender"]})
        })
        .collect()
}

/// Per-room data gathered before the rooms section: ephemeral events and room account data.
#[derive(Default)]
pub(super) struct RoomExtras {
    pub ephemeral: HashMap<String, Vec<JsonValue>>,
    pub account_data: HashMap<String, Vec<JsonValue>>,
}

pub(super) struct RoomsSection {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: Map<String, JsonValue>,
    pub knock: Map<String, JsonValue>,
    pub leave: Map<String, JsonValue>,
    /// `(user, membership)` of the member events shown in joined rooms (timelines and state), for
    /// the presence and device lists of users newly sharing a room; read on incremental syncs only.
    pub memberships_shown: Vec<(String, String)>,
    /// `(room, thread, notifications, highlights)` read with the timelines, of `counted_rooms`.
    pub unread_counts: Vec<UnreadCount>,
    /// Sorted.
    pub counted_rooms: Vec<String>,
    /// What the timelines' read saw besides them (see [`RoomNews::snapshot`]).
    pub snapshot: NewsSnapshot,
}

impl SyncService {
    pub(super) async fn rooms_section(
        &self,
        request: &SyncRequest<'_>,
        now: &StreamToken,
        memberships: &[(String, String, i64)],
        extras: &mut RoomExtras,
    ) -> Result<RoomsSection> {
        let (user_id, device_id, full_state, filter) =
            (request.user_id, request.device_id, request.full_state, request.filter);
        let since = request.since.as_ref();
        let RoomExtras { ephemeral, account_data: room_account_data } = extras;
        let storage = self.rooms.storage();
        let since_events = since.map(|s| s.events).unwrap_or(0);
        let changed = |stream: i64| stream > since_events && stream <= now.events;

        let mut joined: Vec<(String, i64)> = Vec::new();
        let mut invited = Vec::new();
        let mut knocked = Vec::new();
        let mut left = Vec::new();
        for (room_id, membership, stream) in memberships.iter().cloned() {
            if !filter.wants_room(&room_id) || stream > now.events {
                continue;
            }
            match membership.as_str() {
                "join" => joined.push((room_id, stream)),
                "invite" if since.is_none() || changed(stream) => invited.push(room_id),
                "knock" if since.is_none() || changed(stream) => knocked.push(room_id),
                "leave" | "ban"
                    if (since.is_some() && changed(stream)) || (since.is_none() && filter.include_leave) =>
                {
                    left.push((room_id, stream))
                }
                _ => {}
            }
        }

        // Timelines of joined rooms: newly joined rooms from the start, the others since the token.
        let limit = filter.timeline_limit as i64;
        let (fresh, ongoing): (Vec<_>, Vec<_>) =
            joined.iter().partition(|(_, stream)| since.is_none() || full_state || changed(*stream));
        let fresh_ids: Vec<&str> = fresh.iter().map(|(id, _)| id.as_str()).collect();
        let ongoing_ids: Vec<&str> = ongoing.iter().map(|(id, _)| id.as_str()).collect();
        let stripped_ids: Vec<&str> = invited.iter().chain(&knocked).map(String::as_str).collect();
        // Fresh rooms, invites and knocks need their state (and fresh rooms their members) whatever
        // their timelines hold, so those reads run beside the timeline reads: an initial sync
        // waits for the longest of its large reads, not for their sum. Incremental syncs seldom
        // have fresh rooms; their empty reads cost nothing.
        let early_state_ids: Vec<&str> = fresh_ids.iter().chain(&stripped_ids).copied().collect();
        // Ongoing rooms with news come with their unread counts: a woken sync's last read.
        let (fresh_rows, ongoing, early_state, fresh_members) = tokio::try_join!(
            storage.recent_events_of_rooms(&fresh_ids, 0, now.events, limit + 1),
            storage.room_news(user_id, &ongoing_ids, since_events, now.events, limit + 1),
            storage.current_state_of_rooms(&early_state_ids),
            storage.members_of_rooms(&fresh_ids),
        )?;
        let mut timelines: HashMap<String, Vec<EventRow>> = HashMap::new();
        let RoomNews { events: ongoing_rows, unread_counts, counted_rooms, snapshot } = ongoing;
        for row in fresh_rows.into_iter().chain(ongoing_rows) {
            timelines.entry(row.room_id.clone()).or_default().push(row);
        }

        // Which joined rooms appear, and which need their state.
        let fresh_set: HashSet<&str> = fresh_ids.iter().copied().collect();
        let mut shown: Vec<&str> = Vec::new();
        let mut needs_state: Vec<&str> = Vec::new();
        for (room_id, _) in &joined {
            let room = room_id.as_str();
            let timeline = timelines.get(room).map(Vec::len).unwrap_or(0);
            if fresh_set.contains(room)
                || timeline > 0
                || ephemeral.contains_key(room)
                || room_account_data.contains_key(room)
            {
                shown.push(room);
            }
            if fresh_set.contains(room) || timeline as i64 > limit {
                needs_state.push(room);
            }
        }
        // Ongoing rooms with a gap need their state too, and rooms whose memberships changed their
        // members; both are known only now, and are read side by side.
        let late_state_ids: Vec<&str> = needs_state.iter().copied().filter(|room| !fresh_set.contains(room)).collect();
        // The summary may be left out when it has not changed (spec: "RoomSummary"): only rooms
        // shown whole, or whose memberships changed in the timeline, need their members.
        let whole: HashSet<&str> = needs_state.iter().copied().collect();
        let summarized: HashSet<&str> = shown
            .iter()
            .copied()
            .filter(|room| {
                whole.contains(room)
                    || timelines.get(*room).is_some_and(|rows| rows.iter().any(|e| e.event_type == "m.room.member"))
            })
            .collect();
        let late_member_ids: Vec<&str> = summarized.iter().copied().filter(|room| !fresh_set.contains(room)).collect();
        let (late_state, late_members) = tokio::try_join!(
            storage.current_state_of_rooms(&late_state_ids),
            storage.members_of_rooms(&late_member_ids),
        )?;
        let mut current_state: HashMap<String, Vec<EventRow>> = HashMap::new();
        for row in early_state.into_iter().chain(late_state) {
            current_state.entry(row.room_id.clone()).or_default().push(row);
        }
        let mut members: HashMap<String, Vec<(String, String, i64)>> = HashMap::new();
        for (room, user, membership, stream) in fresh_members.into_iter().chain(late_members) {
            members.entry(room).or_default().push((user, membership, stream));
        }

        // Rooms are formatted together at the end: one query fetches the redactions and replaced
        // state of every room's events.
        let mut pending: Vec<(&str, Vec<EventRow>, Vec<EventRow>, JoinedRoom)> = Vec::with_capacity(shown.len());
        for room_id in shown {
            let mut events = timelines.remove(room_id).unwrap_or_default();
            let limited = events.len() as i64 > limit;
            if limited {
                events.remove(0);
            }
            let newest_snapshot = events.last().map(|e| e.state_snapshot);
            events.retain(|e| filter.timeline.matches(e));
            // Events from before the user's join are shown only as history visibility allows.
            let joined_at = joined.iter().find(|(id, _)| id == room_id).map(|(_, s)| *s).unwrap_or(0);
            if events.first().is_some_and(|e| e.stream_ordering < joined_at) {
                let room = ruma::RoomId::parse(room_id).map_err(crate::error::Error::internal)?;
                let user = ruma::UserId::parse(user_id).map_err(crate::error::Error::internal)?;
                let visibility = self.rooms.visibility(&room, &user).await?;
                events.retain(|e| visibility.can_see(e.stream_ordering));
            }
            let first_stream = events.first().map(|e| e.stream_ordering).unwrap_or(now.events + 1);
            let timeline_ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();

            // What was committed after the token belongs to a later sync: a room being created with
            // its invites may be caught mid-way. When the room has moved past the token, its state
            // and members are read at the token (the timeline's end), not now.
            let mut room_members = members.remove(room_id).unwrap_or_default();
            let moved_on = current_state.get(room_id).is_some_and(|s| s.iter().any(|e| e.stream_ordering > now.events))
                || room_members.iter().any(|(_, _, stream)| *stream > now.events);
            let state_at_token = if moved_on {
                let rows = self.state_at(room_id, newest_snapshot, now.events).await?;
                room_members = rows
                    .iter()
                    .filter(|e| e.event_type == "m.room.member")
                    .filter_map(|e| {
                        let membership = crate::rooms::Pdu::parse(&e.event_id, &e.pdu).ok()?.membership()?;
                        Some((e.state_key.clone()?, membership, e.stream_ordering))
                    })
                    .filter(|(_, m, _)| m == "join" || m == "invite")
                    .collect();
                Some(rows)
            } else {
                None
            };
            let state_source = current_state.get(room_id).map(|current| state_at_token.as_ref().unwrap_or(current));
            let state_rows: Vec<EventRow> = match state_source {
                Some(state) if fresh_set.contains(room_id) => {
                    let senders: HashSet<&str> = events.iter().map(|e| e.sender.as_str()).chain([user_id]).collect();
                    state
                        .iter()
                        .filter(|e| !timeline_ids.contains(e.event_id.as_str()))
                        .filter(|e| {
                            !filter.lazy_load_members
                                || e.event_type != "m.room.member"
                                || e.state_key.as_deref().is_some_and(|k| senders.contains(k))
                        })
                        .cloned()
                        .collect()
                }
                // A gap in an ongoing room: the state that changed in it.
                Some(state) => state
                    .iter()
                    .filter(|e| {
                        e.stream_ordering > since_events
                            && e.stream_ordering < first_stream
                            && !timeline_ids.contains(e.event_id.as_str())
                    })
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };

            let prev_batch = crate::rooms::pagination_token(first_stream - 1);
            let count = |m: &str| room_members.iter().filter(|(_, membership, _)| membership == m).count();
            let heroes: Vec<&str> =
                room_members.iter().map(|(u, _, _)| u.as_str()).filter(|u| *u != user_id).take(5).collect();
            let summary = if summarized.contains(room_id) {
                json!({
                    "m.heroes": heroes,
                    "m.joined_member_count": count("join"),
                    "m.invited_member_count": count("invite"),
                })
            } else {
                json!({})
            };
            let room = JoinedRoom {
                timeline: Timeline { events: Vec::new(), limited, prev_batch },
                state: Events { events: Vec::new() },
                ephemeral: Events { events: ephemeral.remove(room_id).unwrap_or_default() },
                account_data: Events { events: room_account_data.remove(room_id).unwrap_or_default() },
                summary,
                unread_notifications: UnreadCounts::default(),
                unread_thread_notifications: BTreeMap::new(),
            };
            pending.push((room_id, events, state_rows, room));
        }
        let all_rows: Vec<&EventRow> =
            pending.iter().flat_map(|(_, events, state, _)| events.iter().chain(state.iter())).collect();
        let memberships_shown = if since.is_some() {
            all_rows
                .iter()
                .filter(|e| e.event_type == "m.room.member")
                .filter_map(|e| {
                    let membership = crate::rooms::Pdu::parse(&e.event_id, &e.pdu).ok()?.membership()?;
                    Some((e.state_key.clone()?, membership))
                })
                .collect()
        } else {
            Vec::new()
        };
        let timeline_rows = pending.iter().flat_map(|(_, events, _, _)| events.iter());
        let transaction_ids = own_transaction_ids(storage, user_id, device_id, timeline_rows).await?;
        let mut formatted =
            format::client_events_as_text(storage, user_id, all_rows, &transaction_ids).await?.into_iter();
        let mut join = BTreeMap::new();
        for (room_id, events, state_rows, mut room) in pending {
            room.timeline.events = formatted.by_ref().take(events.len()).collect();
            room.state.events = formatted.by_ref().take(state_rows.len()).collect();
            join.insert(room_id.to_owned(), room);
        }

        let stripped = |room_id: &String| stripped_state(current_state.get(room_id), user_id);
        let invite: Map<String, JsonValue> =
            invited.iter().map(|id| (id.clone(), json!({"invite_state": {"events": stripped(id)}}))).collect();
        let knock: Map<String, JsonValue> =
            knocked.iter().map(|id| (id.clone(), json!({"knock_state": {"events": stripped(id)}}))).collect();

        let mut leave = Map::new();
        // A user who left (or whose invite or knock ended) sees of the room's last events only what
        // its history visibility lets them see, and their own membership changes.
        let left_ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
        let visibility = if left_ids.is_empty() {
            HashMap::new()
        } else {
            crate::rooms::visibilities(&storage.visibility_events(&left_ids, user_id).await?)
        };
        for (room_id, left_at) in &left {
            let mut rows = storage
                .recent_events_of_rooms(&[room_id.as_str()], since_events.min(*left_at - 1), *left_at, limit)
                .await?;
            rows.retain(|e| {
                (e.event_type == "m.room.member" && e.state_key.as_deref() == Some(user_id))
                    || visibility.get(room_id).is_some_and(|v| v.can_see(e.stream_ordering))
            });
            let first = rows.first().map(|e| e.stream_ordering).unwrap_or(*left_at);
            leave.insert(
                room_id.clone(),
                json!({
                    "timeline": {
                        "events": format::client_events(storage, user_id, &rows).await?,
                        "limited": false,
                        "prev_batch": crate::rooms::pagination_token(first - 1),
                    },
                    "state": {"events": []},
                    "account_data": {"events": room_account_data.remove(room_id.as_str()).unwrap_or_default()},
                }),
            );
        }
        Ok(RoomsSection { join, invite, knock, leave, memberships_shown, unread_counts, counted_rooms, snapshot })
    }
}

impl SyncService {
    /// The room's state after its newest event at or before `upto`: the snapshot of the
    /// timeline's last event when there is one.
    async fn state_at(&self, room_id: &str, snapshot: Option<i64>, upto: i64) -> Result<Vec<EventRow>> {
        let storage = self.rooms.storage();
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => match storage.recent_events_of_rooms(&[room_id], 0, upto, 1).await?.last() {
                Some(row) => row.state_snapshot,
                None => return Ok(Vec::new()),
            },
        };
        storage.state_snapshot_events(snapshot).await
    }
}

/// The transaction IDs of the events among `rows` that this device sent, so that clients can
/// match them with their local echoes (spec: "Local echo"). One query for the whole response.
async fn own_transaction_ids<'a>(
    storage: &crate::storage::Storage,
    user_id: &str,
    device_id: &str,
    rows: impl Iterator<Item = &'a EventRow>,
) -> Result<HashMap<String, String>> {
    let own: Vec<&str> = rows.filter(|e| e.sender == user_id).map(|e| e.event_id.as_str()).collect();
    if own.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(storage.transaction_ids(user_id, device_id, &own).await?.into_iter().collect())
}

/// Groups receipt rows into `m.receipt` events per room (spec: "Receipts"); private receipts
/// only for their owner.
pub(super) fn receipt_events(rows: Vec<crate::storage::ReceiptRow>, viewer: &str) -> HashMap<String, JsonValue> {
    let mut by_room: HashMap<String, BTreeMap<String, JsonValue>> = HashMap::new();
    for r in rows {
        if r.receipt_type == "m.read.private" && r.user_id != viewer {
            continue;
        }
        let content = by_room.entry(r.room_id).or_default();
        let event = content.entry(r.event_id).or_insert_with(|| json!({}));
        let mut receipt = json!({"ts": r.ts});
        if !r.thread_id.is_empty() {
            receipt["thread_id"] = json!(r.thread_id);
        }
        event[&r.receipt_type][&r.user_id] = receipt;
    }
    by_room.into_iter().map(|(room, content)| (room, json!({"type": "m.receipt", "content": content}))).collect()
}
