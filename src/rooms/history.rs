//! Reading a room's history: `/messages` pagination, `/context`, single events and member lists,
//! all filtered by `m.room.history_visibility` (spec: "Server behaviour" under "Room History
//! Visibility"). History is never purged: pagination reaches `m.room.create` in any room.

use std::collections::{BTreeMap, HashMap};

use ruma::{EventId, RoomId, UserId};
use serde_json::Value as JsonValue;

use super::Rooms;
use crate::{
    error::{Error, Result},
    storage::EventRow,
};

/// A pagination token for a stream position: events at or before it are "before" the token.
pub fn pagination_token(position: i64) -> String {
    format!("t{position}")
}

/// Reads a pagination token; a sync token (`s<N>_…`) names its room-event position too.
pub fn parse_pagination_token(token: &str) -> Result<i64> {
    let digits = token.strip_prefix('t').or_else(|| token.strip_prefix('s').map(|s| s.split('_').next().unwrap_or(s)));
    digits
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::InvalidParam(format!("invalid pagination token {token:?}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

impl Direction {
    /// The pagination position just past `row` when reading this way (see [`pagination_token`]).
    pub fn cursor_after(self, row: &EventRow) -> i64 {
        match self {
            Direction::Backward => row.stream_ordering - 1,
            Direction::Forward => row.stream_ordering,
        }
    }
}

/// The subset of the spec's `RoomEventFilter` that `/messages` and `/context` apply.
#[derive(Debug, Default, Clone)]
pub struct RoomEventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub lazy_load_members: bool,
}

impl RoomEventFilter {
    pub fn matches(&self, row: &EventRow) -> bool {
        self.allows(&row.event_type, &row.sender)
    }

    /// Whether an event of this type from this sender passes (also used for presence and account data).
    pub fn allows(&self, event_type: &str, sender: &str) -> bool {
        self.allows_type(event_type)
            && self.senders.as_ref().is_none_or(|s| s.iter().any(|x| x == sender))
            && !self.not_senders.iter().any(|x| x == sender)
    }

    /// Whether no event of this type can pass, whoever sends it: reading them can be skipped.
    pub fn excludes_type(&self, event_type: &str) -> bool {
        !self.allows_type(event_type) || self.senders.as_ref().is_some_and(Vec::is_empty)
    }

    fn allows_type(&self, event_type: &str) -> bool {
        let matching = |patterns: &[String]| patterns.iter().any(|p| glob(p, event_type));
        self.types.as_deref().is_none_or(matching) && !matching(&self.not_types)
    }
}

/// Event type patterns may end in `*` (spec: "Filtering").
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Where a page of history starts and ends, and its size.
#[derive(Debug, Clone, Copy)]
pub struct Pagination {
    /// A stream position: events at or before it are "before". `None`: the newest event going
    /// backwards, the room's start going forwards.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub direction: Direction,
    pub limit: usize,
}

pub struct MessagesPage {
    pub chunk: Vec<EventRow>,
    pub start: i64,
    /// `None` when the start (or end) of the room was reached.
    pub end: Option<i64>,
    /// Member events of the chunk's senders, when lazy-loading members.
    pub state: Vec<EventRow>,
}

/// Rows a single `/messages` call scans at most while skipping events the reader may not see.
const MAX_SCANNED: i64 = 2_000;

/// What a user may see of one room's history.
pub struct Visibility {
    /// (stream ordering, membership) of the user's membership events, oldest first.
    memberships: Vec<(i64, String)>,
    /// (stream ordering, history_visibility), oldest first.
    visibilities: Vec<(i64, String)>,
}

impl Visibility {
    fn at(list: &[(i64, String)], stream: i64) -> Option<&str> {
        list.iter().take_while(|(s, _)| *s <= stream).last().map(|(_, v)| v.as_str())
    }

    pub fn can_see(&self, stream: i64) -> bool {
        let visibility = Self::at(&self.visibilities, stream).unwrap_or("shared");
        let membership = Self::at(&self.memberships, stream);
        match (visibility, membership) {
            ("world_readable", _) | (_, Some("join")) => true,
            ("shared", _) => self.memberships.iter().any(|(s, m)| *s >= stream && m == "join"),
            ("invited", Some("invite")) => true,
            _ => false,
        }
    }

    /// Whether the user may read the room at all (now, or some of its past).
    pub fn may_read_room(&self) -> bool {
        !self.memberships.is_empty() || self.world_readable()
    }

    /// Whether the room's history is world-readable now.
    pub fn world_readable(&self) -> bool {
        self.visibilities.last().is_some_and(|(_, v)| v == "world_readable")
    }

    pub fn current_membership(&self) -> Option<&str> {
        self.memberships.last().map(|(_, m)| m.as_str())
    }
}

/// What `user_id` may see of each room, from the rows of [`Storage::visibility_events`] (oldest
/// first): one query for any number of rooms.
pub fn visibilities(rows: &[EventRow]) -> HashMap<String, Visibility> {
    let mut by_room: HashMap<String, Visibility> = HashMap::new();
    for row in rows {
        let visibility = by_room
            .entry(row.room_id.clone())
            .or_insert_with(|| Visibility { memberships: Vec::new(), visibilities: Vec::new() });
        if row.event_type == "m.room.member" {
            if let Some(membership) = content_field(row, "membership") {
                visibility.memberships.push((row.stream_ordering, membership));
            }
        } else if let Some(setting) = content_field(row, "history_visibility") {
            visibility.visibilities.push((row.stream_ordering, setting));
        }
    }
    by_room
}

fn content_field(row: &EventRow, field: &str) -> Option<String> {
    let pdu: JsonValue = serde_json::from_str(&row.pdu).ok()?;
    pdu["content"][field].as_str().map(str::to_owned)
}

impl Rooms {
    /// One query for both histories: a page of history pays a round trip per statement.
    pub async fn visibility(&self, room_id: &RoomId, user_id: &UserId) -> Result<Visibility> {
        let rows = self.storage.visibility_events(&[room_id.as_str()], user_id.as_str()).await?;
        Ok(visibilities(&rows)
            .remove(room_id.as_str())
            .unwrap_or(Visibility { memberships: Vec::new(), visibilities: Vec::new() }))
    }

    /// What the user may see of a room they may read; `Forbidden` otherwise, also when the room
    /// does not exist (it has no history the user could see).
    pub(super) async fn readable_visibility(&self, room_id: &RoomId, user_id: &UserId) -> Result<Visibility> {
        let visibility = self.visibility(room_id, user_id).await?;
        if !visibility.may_read_room() {
            return Err(Error::Forbidden("you are not in this room".into()));
        }
        Ok(visibility)
    }

    /// A page of the room's timeline, skipping events the user may not see.
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        page: Pagination,
        filter: &RoomEventFilter,
    ) -> Result<MessagesPage> {
        let Pagination { from, to, direction, limit } = page;
        let visibility = self.readable_visibility(room_id, user_id).await?;
        let limit = limit.clamp(1, 1000);
        // One row past the page tells whether more follow; a batch grows only when rows the
        // reader may not see were skipped. Each row carries its PDU: reading twice the page, as a
        // fixed margin would, doubles what the database sends.
        let mut batch = limit as i64 + 1;
        let mut chunk = Vec::new();
        let (start, mut cursor) = match direction {
            Direction::Backward => {
                let from = from.unwrap_or(i64::MAX);
                (from, from)
            }
            Direction::Forward => {
                let from = from.unwrap_or(0);
                (from, from)
            }
        };
        let mut scanned = 0;
        // The last batch ran out (the room's start or end, or `to`) and the page took all of it.
        let mut reached_end = false;
        while chunk.len() < limit && scanned < MAX_SCANNED {
            let rows = match direction {
                Direction::Backward => {
                    self.storage.room_events(room_id.as_str(), to.unwrap_or(0), cursor, true, batch).await?
                }
                Direction::Forward => {
                    self.storage.room_events(room_id.as_str(), cursor, to.unwrap_or(i64::MAX), false, batch).await?
                }
            };
            let exhausted = (rows.len() as i64) < batch;
            let fetched = rows.len();
            scanned += fetched as i64;
            let mut consumed = 0;
            for row in rows {
                consumed += 1;
                cursor = direction.cursor_after(&row);
                if visibility.can_see(row.stream_ordering) && filter.matches(&row) {
                    chunk.push(row);
                    if chunk.len() == limit {
                        break;
                    }
                }
            }
            if exhausted {
                reached_end = consumed == fetched;
                break;
            }
            batch = (batch * 2).min(MAX_SCANNED);
        }
        // Spec: `end` is omitted when no further events are available.
        let end = (!reached_end).then_some(cursor);
        let state =
            if filter.lazy_load_members { self.member_events_of_senders(room_id, &chunk).await? } else { Vec::new() };
        Ok(MessagesPage { chunk, start, end, state })
    }

    /// The current member events of the senders of `events`.
    async fn member_events_of_senders(&self, room_id: &RoomId, events: &[EventRow]) -> Result<Vec<EventRow>> {
        let senders: std::collections::BTreeSet<&str> = events.iter().map(|e| e.sender.as_str()).collect();
        let ids = self
            .with_state(room_id, |state| {
                senders
                    .iter()
                    .filter_map(|s| state.get("m.room.member", s).map(|p| p.event_id.to_string()))
                    .collect::<Vec<_>>()
            })
            .await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.storage.events(&refs).await
    }

    /// One event, if it exists in this room and the user may see it.
    pub async fn event_for_user(&self, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> Result<EventRow> {
        let visibility = self.visibility(room_id, user_id).await?;
        self.visible_event(room_id, event_id, &visibility).await
    }

    /// One event, if it exists in this room and `visibility` lets its reader see it.
    pub(super) async fn visible_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        visibility: &Visibility,
    ) -> Result<EventRow> {
        let not_found = || Error::NotFound("event not found".into());
        let row = self.storage.event(event_id.as_str()).await?.ok_or_else(not_found)?;
        if row.room_id != room_id.as_str() || !visibility.can_see(row.stream_ordering) {
            return Err(not_found());
        }
        Ok(row)
    }

    /// `/timestamp_to_event`: the visible event closest to `ts` in `direction`, with its timestamp.
    pub async fn event_near_time(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        ts: i64,
        direction: Direction,
    ) -> Result<(String, i64)> {
        let visibility = self.readable_visibility(room_id, user_id).await?;
        let forwards = direction == Direction::Forward;
        let candidates = self.storage.room_events_by_time(room_id.as_str(), ts, forwards, MAX_SCANNED).await?;
        candidates
            .into_iter()
            .find(|(row, _)| visibility.can_see(row.stream_ordering))
            .map(|(row, ts)| (row.event_id, ts))
            .ok_or_else(|| Error::NotFound("no event in that direction from that time".into()))
    }

    /// `/context`: the event, visible events around it, and the room state at it.
    pub async fn context(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<(EventRow, MessagesPage, MessagesPage, Vec<EventRow>)> {
        let event = self.event_for_user(room_id, user_id, event_id).await?;
        let before_limit = limit / 2;
        let after_limit = limit - before_limit;
        let position = event.stream_ordering;
        let empty = |at: i64| MessagesPage { chunk: Vec::new(), start: at, end: Some(at), state: Vec::new() };
        let before = if before_limit > 0 {
            let page =
                Pagination { from: Some(position - 1), to: None, direction: Direction::Backward, limit: before_limit };
            self.messages(room_id, user_id, page, filter).await?
        } else {
            empty(position - 1)
        };
        let after = if after_limit > 0 {
            let page = Pagination { from: Some(position), to: None, direction: Direction::Forward, limit: after_limit };
            self.messages(room_id, user_id, page, filter).await?
        } else {
            empty(position)
        };
        let state = self.storage.state_snapshot_events(event.state_snapshot).await?;
        Ok((event, before, after, state))
    }

    /// Member events of the room: now, or at stream position `at`; for a user who has left, as
    /// they were when the user left.
    pub async fn members(&self, room_id: &RoomId, user_id: &UserId, at: Option<i64>) -> Result<Vec<EventRow>> {
        let visibility = self.readable_visibility(room_id, user_id).await?;
        let mut upto = at.unwrap_or(i64::MAX);
        if visibility.current_membership() != Some("join") {
            if let Some((left_at, _)) = visibility.memberships.last() {
                upto = upto.min(*left_at);
            }
        }
        let history = self.storage.state_history(room_id.as_str(), "m.room.member", None, upto).await?;
        let mut latest: BTreeMap<String, EventRow> = BTreeMap::new();
        for row in history {
            if let Some(key) = row.state_key.clone() {
                latest.insert(key, row);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// Joined members with their display names and avatars; only for members of the room.
    pub async fn joined_members(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>> {
        self.with_state(room_id, |state| {
            if state.membership(user_id).as_deref() != Some("join") {
                return Err(Error::Forbidden("you are not in this room".into()));
            }
            Ok(state
                .members_with(&["join"])
                .into_iter()
                .map(|(user, pdu)| {
                    let content = pdu.content_json();
                    let text = |k: &str| content[k].as_str().map(str::to_owned);
                    (user, (text("displayname"), text("avatar_url")))
                })
                .collect())
        })
        .await?
    }

    /// The room's current state events, for a member; a user who left sees the state as they left it.
    pub async fn state_for_user(&self, room_id: &RoomId, user_id: &UserId) -> Result<Vec<EventRow>> {
        let visibility = self.readable_visibility(room_id, user_id).await?;
        if visibility.current_membership() == Some("join") || visibility.memberships.is_empty() {
            return self.storage.current_state_events(room_id.as_str()).await;
        }
        let (left_at, _) = visibility.memberships.last().cloned().unwrap_or_default();
        let rows = self.storage.room_events(room_id.as_str(), left_at - 1, left_at, false, 1).await?;
        let Some(leave) = rows.into_iter().next() else { return Ok(Vec::new()) };
        self.storage.state_snapshot_events(leave.state_snapshot).await
    }
}
