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
    /// Every event it left out that concerns the user will wake the user for new messages (see
    /// [`Answered::clean`]).
    clean: bool,
    /// The response's `next_batch`.
    token: StreamToken,
    /// What it read at its start, to remember (`None` when too large to).
    start: Option<Arc<RememberedStart>>,
}

/// What a sync reads at its start that only changes other than new messages alter (and that wake
/// the user as such, see `Notifier::wake_for_messages`). A sync from a remembered answer's token,
/// whose user was woken for new messages alone since, answers from this instead of reading it again:
/// one statement per delivered message and receiver instead of two.
struct RememberedStart {
    memberships: Vec<(String, String, i64)>,
    key_counts: Vec<(String, i64)>,
    unused_fallbacks: Vec<String>,
}

impl RememberedStart {
    /// The position of the newest membership change among them, which a later read must find
    /// unchanged (a membership changes with a state event, whose wake may not have come yet).
    fn newest_membership(&self) -> Option<i64> {
        self.memberships.iter().map(|(_, _, stream)| *stream).max()
    }
}

/// How syncs began that continued from a remembered answer (see [`RememberedStart`]).
#[derive(Clone, Default)]
pub struct RememberedStarts {
    /// Answered from the remembered start.
    pub used: prometheus_client::metrics::counter::Counter,
    /// Answered from the remembered start, found outdated and built again.
    pub outdated: prometheus_client::metrics::counter::Counter,
}

/// Memberships beyond which a start is not remembered: each remembered answer holds its user's.
const MAX_REMEMBERED_ROOMS: usize = 100;

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
    remembered_starts: RememberedStarts,
}

struct Answered {
    token: StreamToken,
    woken_at: u64,
    /// The user's `changed_at` stamp read before the answer was built.
    changed_at: u64,
    held_back: bool,
    /// No event it left out had woken the user for anything but new messages. Then an event it
    /// left out that concerns the user either woke the user for messages past `token` already, or
    /// will: with no such wake since, nothing is held back for this user, whatever evaluation does.
    /// A full build is clean when it left nothing out; one from a remembered start (no wake but
    /// for messages since the previous answer) is as clean as the answer it continues.
    clean: bool,
    start: Option<Arc<RememberedStart>>,
}

/// What a long-poll's last read covered, when it found nothing (or what the device's previous
/// answer covered, when that left nothing to read).
#[derive(Clone, Copy)]
struct Covered {
    /// The user's `changed_at` stamp, seen before the read.
    changed_at: u64,
    /// The events position it read up to.
    upto: i64,
    /// What to wait for besides a wake: evaluation passing this position (events held back).
    held_back_after: Option<i64>,
}

impl Covered {
    /// After a wake, `Some` of what to wait for next when it brought the user nothing new: it was
    /// for messages at or below `upto` alone (with PostgreSQL the push evaluator reads committed
    /// events from the database, so a sync may read a message before its writer has woken anyone
    /// for it), and evaluation has not passed what was held back, which is then to be read.
    fn after_wake(self, changed_at: u64, woken_for: i64, evaluated: i64) -> Option<Option<i64>> {
        let nothing_new = changed_at == self.changed_at && woken_for <= self.upto;
        let released = self.held_back_after.is_some_and(|shown| evaluated > shown);
        (nothing_new && !released).then_some(self.held_back_after)
    }
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
        remembered_starts: RememberedStarts,
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
            remembered_starts,
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
        let mut covered: Option<Covered> = None;
        // Whether the last wait ended with a wake (not evaluation moving on, nor a recheck).
        let mut by_wake = false;
        loop {
            // Registered before reading, so a change between the read and the wait still wakes us.
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (woken_at, changed_at, woken_for) = (waiter.woken_at(), waiter.changed_at(), waiter.woken_for());
            let quiet = if std::mem::take(&mut first) && !*shutdown.borrow() {
                let quiet = self.answered_quietly(request, &device, (woken_at, changed_at, woken_for));
                if let (Some(held_back_after), Some(since)) = (quiet, request.since) {
                    covered = Some(Covered { changed_at, upto: since.events, held_back_after });
                }
                quiet
            } else if std::mem::take(&mut by_wake) && !*shutdown.borrow() && tokio::time::Instant::now() < deadline {
                covered.and_then(|c| c.after_wake(changed_at, woken_for, self.push.evaluated()))
            } else {
                None
            };
            let held_back_after = if let Some(held_back_after) = quiet {
                held_back_after
            } else {
                let remembered = self.remembered_start(request, &device, changed_at);
                let built = Box::pin(self.build(request, remembered.map(|(r, clean)| (r, woken_for, clean)))).await?;
                if built.has_news
                    || request.since.is_none()
                    || tokio::time::Instant::now() >= deadline
                    || *shutdown.borrow()
                {
                    self.remember_answer(device, &built, woken_at, changed_at);
                    return Ok(built.response);
                }
                covered =
                    Some(Covered { changed_at, upto: built.token.events, held_back_after: built.held_back_after });
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
                _ = &mut notified => by_wake = true,
                _ = evaluated => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// `f` of this device's latest complete answer, when the request continues from it.
    fn with_last_answer<R>(
        &self,
        request: &SyncRequest<'_>,
        device: &(String, String),
        f: impl FnOnce(&Answered) -> Option<R>,
    ) -> Option<R> {
        let since = request.since.filter(|_| !request.full_state)?;
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        answered.get(device).filter(|last| last.token == since).and_then(f)
    }

    /// When the request continues from this device's latest complete answer and its user was not
    /// woken since that answer was built, or only for messages that answer holds (woken while it
    /// was built), there is nothing to read yet: `Some` of what to wait for besides a wake
    /// (evaluation passing the token, when that answer held events back). The stamps are the
    /// user's `woken_at`, `changed_at` and `woken_for` now.
    fn answered_quietly(
        &self,
        request: &SyncRequest<'_>,
        device: &(String, String),
        (woken_at, changed_at, woken_for): (u64, u64, i64),
    ) -> Option<Option<i64>> {
        if request.timeout.is_zero() {
            return None;
        }
        self.with_last_answer(request, device, |last| {
            let held = last.woken_at == woken_at || (last.changed_at == changed_at && woken_for <= last.token.events);
            let waits_for_evaluation = last.held_back && !(last.clean && woken_for <= last.token.events);
            held.then_some(waits_for_evaluation.then_some(last.token.events))
        })
    }

    /// The start this device's latest answer read, when the request continues from that answer
    /// and its user was woken for new messages alone since it was built.
    fn remembered_start(
        &self,
        request: &SyncRequest<'_>,
        device: &(String, String),
        changed_at: u64,
    ) -> Option<(Arc<RememberedStart>, bool)> {
        self.with_last_answer(request, device, |last| {
            last.start.clone().filter(|_| last.changed_at == changed_at).map(|start| (start, last.clean))
        })
    }

    /// Remembers a complete answer (see `answered`); the stamps were read before it was built.
    fn remember_answer(&self, device: (String, String), built: &Built, woken_at: u64, changed_at: u64) {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if !built.complete {
            answered.remove(&device);
            return;
        }
        if answered.len() >= MAX_ANSWERED {
            answered.clear();
        }
        let start = built.start.clone();
        let (token, held_back, clean) = (built.token, built.held_back, built.clean);
        answered.insert(device, Answered { token, woken_at, changed_at, held_back, clean, start });
    }

    /// The token of a sync from `since` whose user was woken for new messages alone, up to
    /// `woken_for`: only the events position moves, to what has been evaluated once that passed
    /// `woken_for`. Other processes' events come with wakes of their own, which make the next
    /// sync read its start again.
    async fn token_after_messages(&self, since: &StreamToken, woken_for: i64) -> Result<(StreamToken, bool)> {
        let storage = self.rooms.storage();
        let target = woken_for.max(since.events);
        let evaluated = self.push.wait_evaluated(target, since.events, || storage.push_evaluated_position()).await?;
        let (visible, committed) = (self.events.visible(), self.events.committed());
        // Evaluation stops below what is in flight. With PostgreSQL it goes by the reservations,
        // which the sync's read checks again (`RoomNews::snapshot`); this process's bound is
        // coarser (a write that has not drawn its position yet holds it back at the highest one
        // drawn before it began), and following it made syncs find their message still behind it.
        let events = if storage.shares_event_positions() { evaluated } else { visible.min(evaluated) };
        let token = StreamToken { events: events.max(since.events), ..*since };
        Ok((token, token.events < committed))
    }

    /// One sync response from `request.since` to now; from a `remembered` start when given (see
    /// [`RememberedStart`]), with the position of the messages the user was woken for and whether
    /// the answer it continues was clean (see [`Answered::clean`]).
    async fn build(
        &self,
        request: &SyncRequest<'_>,
        remembered: Option<(Arc<RememberedStart>, i64, bool)>,
    ) -> Result<Built> {
        let storage = self.rooms.storage();
        let since = request.since.as_ref();
        let user_id = request.user_id;
        let after_messages = remembered.is_some();
        // (woken_for, clean) of a build from a remembered start.
        let mut continued = None;
        let (start, to_device_rows, (mut now, held_back)) = match (remembered, since) {
            (Some((remembered, woken_for, clean)), Some(since)) => {
                self.remembered_starts.used.inc();
                continued = Some((woken_for, clean));
                (remembered, Vec::new(), self.token_after_messages(since, woken_for).await?)
            }
            _ => {
                // This is also where the to-device messages the token acknowledges are deleted.
                let start = storage
                    .sync_start(user_id, request.device_id, since.map_or(0, |s| s.to_device), TO_DEVICE_PER_SYNC)
                    .await?;
                let token = self.current_token(&start).await?;
                let SyncStart { memberships, to_device, key_counts, unused_fallbacks, .. } = start;
                (Arc::new(RememberedStart { memberships, key_counts, unused_fallbacks }), to_device, token)
            }
        };
        let complete = to_device_rows.is_empty();

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
        let memberships = &start.memberships;
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

        let mut rooms = self.rooms_section(request, &now, memberships, &mut extras).await?;
        // Memberships and the event bound came from memory: the read that followed must confirm
        // them. A membership changed meanwhile (its state event's wake still to come), or another
        // process writing below the bound, and the answer is built again from a fresh start.
        if after_messages
            && (rooms.snapshot.newest_membership.is_none()
                || rooms.snapshot.newest_membership != start.newest_membership()
                || rooms.snapshot.lowest_in_flight.is_some_and(|lowest| lowest <= now.events))
        {
            self.remembered_starts.outdated.inc();
            return Box::pin(self.build(request, None)).await;
        }
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
            start.key_counts.iter().map(|(algorithm, count)| (algorithm.clone(), json!(count))).collect();
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
            device_unused_fallback_key_types: start.unused_fallbacks.clone(),
        };
        let clean = continued.map_or(!held_back, |(_, clean)| clean);
        // A clean answer that read past every message the user was woken for holds back nothing
        // of the user's that will not wake it (see `Answered::clean`).
        let announced = continued.is_some_and(|(woken_for, clean)| clean && woken_for <= now.events);
        // Held back matters only when one of the user's rooms has an event past the token: other
        // rooms' writes in flight must not make every idle sync wake with evaluation.
        let held_back_in_rooms = held_back && !has_news && !announced && {
            let rooms: Vec<&str> = memberships.iter().map(|(room, _, _)| room.as_str()).collect();
            storage.newest_head_stream(&rooms).await? > now.events
        };
        Ok(Built {
            response,
            has_news,
            held_back_after: held_back_in_rooms.then_some(now.events),
            complete,
            held_back,
            clean,
            token: now,
            start: (start.memberships.len() <= MAX_REMEMBERED_ROOMS).then_some(start),
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

#[cfg(test)]
mod tests {
    use super::Covered;

    #[test]
    fn a_late_wake_for_messages_already_read_brings_nothing_new() {
        let idle = Covered { changed_at: 7, upto: 100, held_back_after: None };
        assert_eq!(idle.after_wake(7, 100, 0), Some(None));
        assert_eq!(idle.after_wake(7, 90, 500), Some(None));
        // A message past what was read, or a wake for anything else, is read.
        assert_eq!(idle.after_wake(7, 101, 0), None);
        assert_eq!(idle.after_wake(8, 100, 0), None);
    }

    #[test]
    fn events_held_back_are_read_once_evaluation_passes_them() {
        let holding = Covered { changed_at: 7, upto: 100, held_back_after: Some(100) };
        assert_eq!(holding.after_wake(7, 100, 100), Some(Some(100)));
        // Waiting again for evaluation that has already passed would return at once, again and again.
        assert_eq!(holding.after_wake(7, 100, 101), None);
    }
}
