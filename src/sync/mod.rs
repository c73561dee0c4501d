//! Delivery to clients: sync tokens, the notifier, and the sync response builder shared by
//! long-poll `/sync` and the WebSocket stream. A sync returns everything between the client's
//! token and the current positions; when there is nothing, it waits for the notifier.

pub mod bus;
mod event_stream;
pub mod filter;
mod notifier;
pub mod response;
mod rooms;
pub mod token;
mod writes;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures_util::future::Either;
use serde_json::{json, Value as JsonValue};
use tokio::sync::watch;

pub use self::{
    event_stream::{EventStream, StreamWrite},
    filter::{StoredFilters, SyncFilter},
    notifier::Notifier,
    response::SyncResponse,
    token::StreamToken,
};
use crate::{
    ephemeral::typing::Typing,
    error::Result,
    presence::Presence,
    push::Push,
    rooms::Rooms,
    storage::{SyncStart, UnreadCount},
};

/// To-device messages handed out per sync; the rest follow in the next one.
const TO_DEVICE_PER_SYNC: i64 = 100;

/// A sync response and what the sync loop needs to know of it.
struct Built {
    response: SyncResponse,
    /// Whether it carries anything (an empty one does not end a long-poll).
    has_news: bool,
    /// Committed events past this position were left out (awaiting push evaluation, or behind an
    /// earlier write): the sync also wakes when evaluation passes it.
    held_back_after: Option<i64>,
    /// No to-device message awaits acknowledgement: a sync from its token finds news only after
    /// a wake of the user, or once evaluation passes it when `held_back`.
    complete: bool,
    /// Committed events (of any room) were left out of it.
    held_back: bool,
    /// The response's `next_batch`.
    token: StreamToken,
}

pub struct SyncRequest<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub since: Option<StreamToken>,
    pub full_state: bool,
    pub filter: &'a SyncFilter,
    pub timeout: Duration,
    /// `online` (the default), `unavailable` or `offline`: what syncing says of the user.
    pub set_presence: &'a str,
}

#[derive(Clone)]
pub struct SyncService {
    rooms: Rooms,
    notifier: Arc<Notifier>,
    events: EventStream,
    typing: Typing,
    presence: Presence,
    push: Push,
    /// Per (user, device): the token of the latest complete answer, the user's wake stamp read
    /// before it was built, and whether it held events back. A long-poll from that token with the
    /// stamp unchanged has nothing to find, and waits without reading the database first.
    answered: Arc<std::sync::Mutex<HashMap<(String, String), Answered>>>,
    stored_filters: StoredFilters,
}

struct Answered {
    token: StreamToken,
    woken_at: u64,
    held_back: bool,
}

/// Devices whose latest answer is remembered; beyond this the memory starts over.
const MAX_ANSWERED: usize = 100_000;

impl SyncService {
    pub fn new(
        rooms: Rooms,
        notifier: Arc<Notifier>,
        events: EventStream,
        typing: Typing,
        presence: Presence,
        push: Push,
    ) -> Self {
        Self {
            rooms,
            notifier,
            events,
            typing,
            presence,
            push,
            answered: Arc::default(),
            stored_filters: StoredFilters::default(),
        }
    }

    /// The current position of every stream, and whether the token stops short of a committed
    /// event: one that awaits push evaluation, or an earlier position still being written.
    async fn current_token(&self, start: &SyncStart) -> Result<(StreamToken, bool)> {
        let storage = self.rooms.storage();
        // With PostgreSQL several processes may write: the database knows what is in flight.
        let positions = &start.positions;
        let (events, committed) =
            start.event_bounds.unwrap_or_else(|| (self.events.visible(), self.events.committed()));
        let at = |stream: &str| positions.get(stream).copied().unwrap_or(0);
        // Events show with the notification counts they raise: not beyond push evaluation.
        let evaluated =
            self.push.wait_evaluated(events, at("push_evaluated"), || storage.push_evaluated_position()).await?;
        let token = StreamToken {
            events: events.min(evaluated),
            account_data: at("account_data"),
            to_device: at("to_device"),
            receipts: at("receipts"),
            typing: self.typing.serial(),
            presence: at("presence"),
            device_lists: at("device_lists"),
        };
        let held_back = token.events < committed;
        Ok((token, held_back))
    }

    /// Answers a sync: at once when there is news, else when news arrives, the timeout passes,
    /// or the server shuts down.
    pub async fn sync(&self, request: &SyncRequest<'_>, mut shutdown: watch::Receiver<bool>) -> Result<SyncResponse> {
        let waiter = self.notifier.subscribe(request.user_id);
        // The user counts as syncing (online) for as long as this call lasts. This future and
        // `build`'s are boxed: inline they would make every idle long-poll and WebSocket stream
        // hold their ~6 KiB of state for the whole wait.
        let _syncing = Box::pin(self.presence.sync_started(request.user_id, request.set_presence)).await?;
        let deadline = tokio::time::Instant::now() + request.timeout;
        let device = (request.user_id.to_owned(), request.device_id.to_owned());
        let mut first = true;
        loop {
            // Registered before reading, so a change between the read and the wait still wakes us.
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let woken_at = waiter.woken_at();
            let quiet = if std::mem::take(&mut first) && !*shutdown.borrow() {
                self.answered_quietly(request, &device, woken_at)
            } else {
                None
            };
            let held_back_after = if let Some(held_back_after) = quiet {
                held_back_after
            } else {
                let built = Box::pin(self.build(request)).await?;
                if built.has_news
                    || request.since.is_none()
                    || tokio::time::Instant::now() >= deadline
                    || *shutdown.borrow()
                {
                    self.remember_answer(device, &built, woken_at);
                    return Ok(built.response);
                }
                built.held_back_after
            };
            // Events held back were announced already: their notification will not come again.
            // Evaluation follows the visible position, so its moving on is what wakes this sync,
            // both for events awaiting evaluation and for events behind an earlier write.
            // Boxed, and only when there is something to wait for: inline, its timer and watch
            // would be reserved in every idle sync's state.
            let evaluated = match held_back_after {
                Some(shown) => Either::Left(Box::pin(self.push.evaluated_past(shown))),
                None => Either::Right(std::future::pending()),
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = evaluated => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// When the request continues from this device's latest complete answer and its user was not
    /// woken since that answer was built, there is nothing to read yet: `Some` of what to wait
    /// for besides a wake (evaluation passing the token, when that answer held events back).
    fn answered_quietly(
        &self,
        request: &SyncRequest<'_>,
        device: &(String, String),
        woken_at: u64,
    ) -> Option<Option<i64>> {
        let since = request.since.filter(|_| !request.full_state && !request.timeout.is_zero())?;
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        let last = answered.get(device).filter(|last| last.token == since && last.woken_at == woken_at)?;
        Some(last.held_back.then_some(since.events))
    }

    /// Remembers a complete answer (see `answered`); `woken_at` was read before it was built.
    fn remember_answer(&self, device: (String, String), built: &Built, woken_at: u64) {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if !built.complete {
            answered.remove(&device);
            return;
        }
        if answered.len() >= MAX_ANSWERED {
            answered.clear();
        }
        answered.insert(device, Answered { token: built.token, woken_at, held_back: built.held_back });
    }

    /// One sync response from `request.since` to now.
    async fn build(&self, request: &SyncRequest<'_>) -> Result<Built> {
        let storage = self.rooms.storage();
        let since = request.since.as_ref();
        let user_id = request.user_id;
        // Always read: this is also where the to-device messages the token acknowledges are deleted.
        let start = storage
            .sync_start(user_id, request.device_id, since.map_or(0, |s| s.to_device), TO_DEVICE_PER_SYNC)
            .await?;
        let (mut now, held_back) = self.current_token(&start).await?;
        let complete = start.to_device.is_empty();

        let mut global_account_data = Vec::new();
        let mut extras = rooms::RoomExtras::default();
        let moved = |at_token: Option<i64>, now: i64| at_token.is_none_or(|t| t != now);
        let account_data = if moved(since.map(|s| s.account_data), now.account_data) {
            storage.account_data_changes(user_id, since.map_or(0, |s| s.account_data), now.account_data).await?
        } else {
            Vec::new()
        };
        for row in account_data {
            let content: JsonValue = serde_json::from_str(&row.content).unwrap_or(JsonValue::Null);
            let event = json!({"type": row.data_type, "content": content});
            if row.room_id.is_empty() {
                global_account_data.push(event);
            } else {
                extras.account_data.entry(row.room_id).or_default().push(event);
            }
        }

        // (room, membership, position) of every room the user is in, read once for all sections.
        let SyncStart { memberships, to_device: to_device_rows, key_counts, unused_fallbacks, .. } = start;
        let joined_refs: Vec<&str> =
            memberships.iter().filter(|(_, m, _)| m == "join").map(|(room, _, _)| room.as_str()).collect();
        for (room_id, users) in self.typing.changes(&joined_refs, since.map_or(0, |s| s.typing)) {
            extras
                .ephemeral
                .entry(room_id)
                .or_default()
                .push(json!({"type": "m.typing", "content": {"user_ids": users}}));
        }
        let receipts = if moved(since.map(|s| s.receipts), now.receipts) {
            storage.receipt_changes(&joined_refs, since.map_or(0, |s| s.receipts), now.receipts).await?
        } else {
            Vec::new()
        };
        for (room_id, event) in rooms::receipt_events(receipts, user_id) {
            extras.ephemeral.entry(room_id).or_default().push(event);
        }

        if to_device_rows.len() as i64 == TO_DEVICE_PER_SYNC {
            // More are waiting: acknowledge only what this response carries.
            now.to_device = to_device_rows.last().map_or(now.to_device, |r| r.stream_id);
        }
        let to_device: Vec<JsonValue> = to_device_rows
            .iter()
            .map(|r| json!({"type": r.event_type, "sender": r.sender, "content": serde_json::from_str::<JsonValue>(&r.content).unwrap_or(JsonValue::Null)}))
            .collect();

        let presence_filter = &request.filter.presence;
        let wants_presence = self.presence.enabled() && !presence_filter.excludes_type("m.presence");
        let presence_changes: Vec<JsonValue> = if wants_presence && moved(since.map(|s| s.presence), now.presence) {
            storage
                .presence_changes_for(user_id, since.map_or(0, |s| s.presence), now.presence)
                .await?
                .iter()
                .filter(|row| presence_filter.allows("m.presence", &row.user_id))
                .map(|row| json!({"type": "m.presence", "sender": row.user_id, "content": self.presence.content(row)}))
                .collect()
        } else {
            Vec::new()
        };

        if since.is_none() && !global_account_data.iter().any(|e| e["type"] == "m.push_rules") {
            // Clients read their push rules from the first sync (spec: "Push Rules").
            if let Ok(user) = ruma::UserId::parse(user_id) {
                let ruleset = crate::push::rules::server_default(&user);
                global_account_data
                    .push(json!({"type": "m.push_rules", "content": crate::push::rules::to_account_data(&ruleset)?}));
            }
        }

        global_account_data.retain(|e| request.filter.account_data.allows(e["type"].as_str().unwrap_or(""), user_id));

        let mut rooms = self.rooms_section(request, &now, &memberships, &mut extras).await?;
        let counts = std::mem::take(&mut rooms.unread_counts);
        let per_thread = request.filter.unread_thread_notifications;
        self.add_unread_counts(user_id, per_thread, counts, &rooms.counted_rooms, &mut rooms.join).await?;
        // Users who newly share a room with the viewer (their join, or the viewer's) come with
        // their current presence, changed or not.
        let mut presence = presence_changes;
        if wants_presence && since.is_some() {
            let mut newcomers: Vec<&str> = rooms
                .memberships_shown
                .iter()
                .filter(|(user, membership)| membership == "join" && user != user_id)
                .map(|(user, _)| user.as_str())
                .collect();
            newcomers.sort_unstable();
            newcomers.dedup();
            let known: Vec<String> = presence.iter().filter_map(|e| e["sender"].as_str().map(str::to_owned)).collect();
            newcomers.retain(|u| !known.iter().any(|k| k == u) && presence_filter.allows("m.presence", u));
            for row in storage.presence_of_users(&newcomers).await? {
                presence
                    .push(json!({"type": "m.presence", "sender": row.user_id, "content": self.presence.content(&row)}));
            }
        }
        let (changed, left) = self.device_list_changes(user_id, since, &now, &rooms).await?;
        let key_counts: serde_json::Map<String, JsonValue> =
            key_counts.into_iter().map(|(algorithm, count)| (algorithm, json!(count))).collect();
        let has_news = !(changed.is_empty()
            && left.is_empty()
            && rooms.join.is_empty()
            && rooms.invite.is_empty()
            && rooms.knock.is_empty()
            && rooms.leave.is_empty()
            && global_account_data.is_empty()
            && to_device.is_empty()
            && presence.is_empty());
        let response = SyncResponse {
            next_batch: now.to_string(),
            rooms: response::Rooms { join: rooms.join, invite: rooms.invite, knock: rooms.knock, leave: rooms.leave },
            account_data: response::Events { events: global_account_data },
            to_device: response::Events { events: to_device },
            presence: response::Events { events: presence },
            device_lists: response::DeviceLists { changed, left },
            device_one_time_keys_count: key_counts,
            device_unused_fallback_key_types: unused_fallbacks,
        };
        // Held back matters only when one of the user's rooms has an event past the token: other
        // rooms' writes in flight must not make every idle sync wake with evaluation.
        let held_back_in_rooms = held_back && !has_news && {
            let rooms: Vec<&str> = memberships.iter().map(|(room, _, _)| room.as_str()).collect();
            storage.newest_head_stream(&rooms).await? > now.events
        };
        Ok(Built {
            response,
            has_news,
            held_back_after: held_back_in_rooms.then_some(now.events),
            complete,
            held_back,
            token: now,
        })
    }

    /// `device_lists` (spec: "Extensions to /sync"): users sharing a room whose devices or keys
    /// changed, users who newly share a room (their keys are news to the viewer), and users who no
    /// longer share any.
    async fn device_list_changes(
        &self,
        user_id: &str,
        since: Option<&StreamToken>,
        now: &StreamToken,
        rooms: &rooms::RoomsSection,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let Some(since) = since else { return Ok((Vec::new(), Vec::new())) };
        let storage = self.rooms.storage();
        let mut changed = if since.device_lists != now.device_lists {
            storage.device_list_changes_for(user_id, since.device_lists, now.device_lists).await?
        } else {
            Vec::new()
        };
        let mut gone = Vec::new();
        for (member, membership) in &rooms.memberships_shown {
            match membership.as_str() {
                "join" if member != user_id => changed.push(member.clone()),
                "leave" | "ban" if member != user_id => gone.push(member.clone()),
                _ => {}
            }
        }
        let left_rooms: Vec<&str> = rooms.leave.keys().map(String::as_str).collect();
        if !left_rooms.is_empty() {
            gone.extend(storage.members_of_rooms(&left_rooms).await?.into_iter().map(|(_, user, _, _)| user));
        }
        crate::e2ee::settle_device_lists(storage, user_id, changed, gone).await
    }

    /// `unread_notifications` of each joined room in the response, and per thread
    /// (`unread_thread_notifications`) when the filter asks for it (spec: "Receiving notifications").
    /// `counts` were read with the timelines, of the rooms `counted_rooms` (sorted); only the other
    /// rooms are read here.
    async fn add_unread_counts(
        &self,
        user_id: &str,
        per_thread: bool,
        mut counts: Vec<UnreadCount>,
        counted_rooms: &[String],
        join: &mut BTreeMap<String, response::JoinedRoom>,
    ) -> Result<()> {
        let uncounted: Vec<&str> = join
            .keys()
            .map(String::as_str)
            .filter(|room| counted_rooms.binary_search_by(|c| c.as_str().cmp(room)).is_err())
            .collect();
        if !uncounted.is_empty() {
            counts.extend(self.rooms.storage().unread_push_counts(user_id, &uncounted).await?);
        }
        for (room_id, thread_id, notifications, highlights) in counts {
            let Some(room) = join.get_mut(&room_id) else { continue };
            let counts = if per_thread && thread_id != "main" {
                room.unread_thread_notifications.entry(thread_id).or_default()
            } else {
                &mut room.unread_notifications
            };
            counts.notification_count += notifications;
            counts.highlight_count += highlights;
        }
        Ok(())
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn typing(&self) -> &Typing {
        &self.typing
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    pub fn stored_filters(&self) -> &StoredFilters {
        &self.stored_filters
    }

    pub fn events(&self) -> &EventStream {
        &self.events
    }
}
