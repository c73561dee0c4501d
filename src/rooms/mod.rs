//! Rooms as DAGs of signed events. Every event goes through [`Rooms::append_with`]: under the room's
//! writer lock it is built on the room's forward extremities, checked against the authorization
//! rules of the room version (ruma's state-res), and persisted with its edges, state delta and stream
//! ordering in one transaction. On PostgreSQL a message on a cached room state is first tried as
//! one statement guarded by the room's head ([`Rooms::append`]).

mod create;
mod directory;
pub mod format;
mod hierarchy;
mod history;
mod membership;
pub mod pdu;
mod relations;
mod report;
mod resolve;
mod search;
mod signing;
mod state;
mod upgrade;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    events::TimelineEventType,
    signatures::Ed25519KeyPair,
    state_res::{auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules},
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, UserId,
};
use serde_json::value::to_raw_value;

use self::pdu::{build_signed_pdu, PduFields};
pub use self::{
    create::{CreateRoom, Preset},
    directory::{PublicRoom, PublicRoomsPage},
    hierarchy::{HierarchyPage, HierarchyRequest, HierarchyRoom},
    history::{
        pagination_token, parse_pagination_token, visibilities, Direction, MessagesPage, Pagination, RoomEventFilter,
    },
    membership::Moderation,
    pdu::{EventDraft, Pdu, PduRef},
    relations::{RelationsPage, RelationsRequest, ThreadsPage},
    search::{SearchOrder, SearchQuery},
    state::{PowerAction, RoomState},
};
use crate::{
    config::RoomsConfig,
    error::{Error, Result},
    push::Push,
    storage::{now_ms, EventLinks, EventRow, NewEvent, NewRelation, Storage, StoredMessage},
    sync::{EventStream, Notifier},
};

/// The room versions Axon creates and joins.
pub const SUPPORTED_VERSIONS: &[&str] = &["10", "11"];

type RoomHandle = Arc<tokio::sync::Mutex<Option<RoomState>>>;

/// A device's transaction, for idempotent sends. A transaction ID is scoped to the device and to
/// the endpoint it was used on (spec: "Transaction identifiers"), so `scope` names the endpoint
/// (e.g. the room and event type of a send) and reusing an ID elsewhere makes a new event.
#[derive(Clone)]
pub struct Txn<'a> {
    pub device_id: &'a str,
    pub scope: String,
    pub txn_id: &'a str,
}

impl Txn<'_> {
    /// The key the transaction is stored under. Stored as text, which cannot hold a NUL on
    /// PostgreSQL: refused alike on SQLite.
    fn key(&self) -> Result<String> {
        let key = format!("{}\n{}", self.scope, self.txn_id);
        if key.contains('\0') {
            return Err(Error::InvalidParam("transaction IDs may not contain NUL".into()));
        }
        Ok(key)
    }
}

/// The client's transaction ID within a stored transaction key.
pub fn transaction_id_of_key(key: &str) -> &str {
    key.rsplit_once('\n').map_or(key, |(_, txn)| txn)
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub stream_ordering: i64,
}

/// An event built, signed and authorized on the room's state, to be stored.
struct Prepared<'a> {
    draft: &'a EventDraft,
    room_id: &'a RoomId,
    sender: &'a UserId,
    event_id: OwnedEventId,
    json: String,
    pdu: Arc<Pdu>,
    auth_events: Vec<OwnedEventId>,
    depth: i64,
    origin_server_ts: i64,
    search_text: Option<String>,
    replaces_state: Option<String>,
}

impl Prepared<'_> {
    /// Its row, at a reserved position (PostgreSQL) or the next one (SQLite).
    fn row(&self, stream_ordering: Option<i64>, state_snapshot: i64) -> NewEvent<'_> {
        NewEvent {
            stream_ordering,
            event_id: self.event_id.as_str(),
            room_id: self.room_id.as_str(),
            depth: self.depth,
            event_type: &self.draft.kind,
            state_key: self.draft.state_key.as_deref(),
            sender: self.sender.as_str(),
            origin_server_ts: self.origin_server_ts,
            state_snapshot,
            pdu: &self.json,
            search_text: self.search_text.as_deref(),
            replaces_state: self.replaces_state.as_deref(),
            relation: relations::declared_relation(&self.draft.content)
                .map(|(parent, rel_type, bundled)| NewRelation { parent, rel_type, bundled }),
        }
    }

    /// Its row as push evaluation reads it, before its position is known.
    fn push_row(&self, state_snapshot: i64) -> EventRow {
        EventRow {
            stream_ordering: 0,
            event_id: self.event_id.to_string(),
            room_id: self.room_id.to_string(),
            event_type: self.draft.kind.clone(),
            state_key: self.draft.state_key.clone(),
            sender: self.sender.to_string(),
            state_snapshot,
            pdu: self.json.clone(),
            redacted_by: None,
            replaces_state: self.replaces_state.clone(),
            has_relations: false,
        }
    }
}

#[derive(Clone)]
pub struct Rooms {
    storage: Storage,
    server_name: OwnedServerName,
    key: Arc<Ed25519KeyPair>,
    config: RoomsConfig,
    /// One writer lock and state cache per room.
    handles: Arc<Mutex<HashMap<OwnedRoomId, RoomHandle>>>,
    events: EventStream,
    notifier: Arc<Notifier>,
    /// A message evaluates itself for push when it can, to be recorded with it.
    push: Push,
}

impl Rooms {
    pub async fn new(
        storage: Storage,
        server_name: OwnedServerName,
        config: RoomsConfig,
        events: EventStream,
        notifier: Arc<Notifier>,
        push: Push,
    ) -> Result<Self> {
        let key = Arc::new(signing::load_or_generate(&storage).await?);
        Ok(Self { storage, server_name, key, config, handles: Arc::default(), events, notifier, push })
    }

    /// Wakes the syncs of the room's joined and invited members.
    pub async fn wake_members(&self, room_id: &RoomId) -> Result<()> {
        let members = self.with_state(room_id, |s| s.members_with(&["join", "invite"])).await?;
        self.notifier.wake(members.iter().map(|(user, _)| user.as_str()));
        Ok(())
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    fn handle(&self, room_id: &RoomId) -> RoomHandle {
        let mut handles = self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        handles.entry(room_id.to_owned()).or_default().clone()
    }

    /// Runs `f` on the room's current state; `NotFound` when the room does not exist.
    pub async fn with_state<R>(&self, room_id: &RoomId, f: impl FnOnce(&RoomState) -> R) -> Result<R> {
        let handle = self.handle(room_id);
        let mut guard = handle.lock().await;
        let head = self.storage.room(room_id.as_str()).await?.map(|r| r.head_stream);
        match (guard.as_ref(), head) {
            (_, None) => return Err(Error::NotFound("no such room".into())),
            (Some(state), Some(head)) if state.head == head => {}
            _ => *guard = RoomState::load(&self.storage, room_id.as_str()).await?,
        }
        guard.as_ref().map(f).ok_or_else(|| Error::NotFound("no such room".into()))
    }

    /// Appends an event built by `build` from the room's state, atomically with respect to every
    /// other writer of the room. With a transaction ID already used by the device, returns the
    /// event it produced and stores nothing.
    pub async fn append_with(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        txn: Option<Txn<'_>>,
        build: impl FnOnce(&RoomState) -> Result<EventDraft>,
    ) -> Result<Appended> {
        let handle = self.handle(room_id);
        let mut guard = handle.lock().await;
        let result = self.append_locked(&mut guard, room_id, sender, txn, build).await;
        if matches!(result, Err(Error::Database(_) | Error::Internal(_))) {
            // The transaction rolled back; the cache may hold what it did not persist.
            *guard = None;
        }
        result
    }

    async fn append_locked(
        &self,
        guard: &mut Option<RoomState>,
        room_id: &RoomId,
        sender: &UserId,
        txn: Option<Txn<'_>>,
        build: impl FnOnce(&RoomState) -> Result<EventDraft>,
    ) -> Result<Appended> {
        let txn_key = txn.as_ref().map(Txn::key).transpose()?;
        // Nothing inside the room's lock may take a connection of the main pool (they may all be
        // waiting for this lock): the state is loaded before the lock is taken, and when another
        // process wrote meanwhile (PostgreSQL only), reloaded under the lock through the side pool.
        if guard.is_none() {
            *guard = RoomState::load(&self.storage, room_id.as_str()).await?;
        }
        let head = guard.as_ref().ok_or_else(|| Error::NotFound("no such room".into()))?.head;
        let transaction = txn.as_ref().zip(txn_key.as_deref()).map(|(t, key)| (sender.as_str(), t.device_id, key));
        let (mut write, current, earlier) = self
            .storage
            .begin_room_write(room_id.as_str(), transaction)
            .await?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        if let Some(event_id) = earlier {
            // The device sent this already: the same event again, nothing stored.
            drop(write);
            let event =
                self.storage.event(&event_id).await?.ok_or_else(|| Error::internal("transaction without event"))?;
            return Ok(Appended {
                event_id: OwnedEventId::try_from(event_id).map_err(Error::internal)?,
                stream_ordering: event.stream_ordering,
            });
        }
        if current != head {
            let reader = self
                .storage
                .side_reader()
                .ok_or_else(|| Error::internal("room state changed without another writer"))?;
            *guard = RoomState::load(&reader, room_id.as_str()).await?;
        }
        let state = guard.as_mut().ok_or_else(|| Error::NotFound("no such room".into()))?;
        let draft = build(state)?;
        let event = self.prepare(state, room_id, sender, &draft)?;

        // A state event gets a new snapshot: a delta on the current one, or a full one when the
        // chain has grown long. After a resolution every event gets a full one: the resolved
        // state is in no snapshot yet.
        let mut snapshot = state.snapshot;
        if draft.state_key.is_some() || state.resolved {
            let (parent, chain) = match state.snapshot {
                Some((id, chain)) if chain < state::MAX_SNAPSHOT_CHAIN && !state.resolved => (Some(id), chain + 1),
                _ => (None, 0),
            };
            let new_entry =
                draft.state_key.as_ref().map(|key| (draft.kind.clone(), key.clone(), event.event_id.to_string()));
            let mut entries: Vec<(String, String, String)> = new_entry.iter().cloned().collect();
            if parent.is_none() {
                entries.extend(
                    state
                        .current
                        .iter()
                        .filter(|((t, k), _)| new_entry.as_ref().is_none_or(|(nt, nk, _)| !(t == nt && k == nk)))
                        .map(|((t, k), p)| (t.clone(), k.clone(), p.event_id.to_string())),
                );
            }
            let refs: Vec<(&str, &str, &str)> =
                entries.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
            let id = write.insert_state_snapshot(room_id.as_str(), parent, chain, &refs).await?;
            snapshot = Some((id, chain));
        }
        let snapshot_id =
            snapshot.map(|(id, _)| id).ok_or_else(|| Error::internal("first event of a room must be state"))?;

        // Readers must not pass this event's position before it commits.
        let stream_write = self.events.begin();
        let reserved = self.storage.reserve_event_position(now_ms()).await?;
        let persisted: Result<i64> = async {
            let prev: Vec<&str> = state.extremities.iter().map(|e| e.as_str()).collect();
            let auth: Vec<&str> = event.auth_events.iter().map(|e| e.as_str()).collect();
            let links = EventLinks { prev_events: &prev, auth_events: &auth, transaction };
            let stream = write.insert_linked_event(&event.row(reserved, snapshot_id), &links).await?;
            stream_write.took(stream);
            if state.resolved {
                // The resolved state becomes the stored current state.
                for ((kind, key), resolved) in &state.current {
                    write.set_current_state(room_id.as_str(), kind, key, resolved.event_id.as_str()).await?;
                    if let Some(membership) = resolved.membership() {
                        write
                            .set_membership(room_id.as_str(), key, &membership, resolved.event_id.as_str(), stream)
                            .await?;
                    }
                }
            }
            if let Some(state_key) = &draft.state_key {
                write.set_current_state(room_id.as_str(), &draft.kind, state_key, event.event_id.as_str()).await?;
                if let Some(membership) = event.pdu.membership() {
                    write
                        .set_membership(room_id.as_str(), state_key, &membership, event.event_id.as_str(), stream)
                        .await?;
                }
            }
            if let Some(target) = event.pdu.redacted_event() {
                self.apply_redaction(&mut write, state, &event.pdu, target).await?;
            }
            write.commit().await?;
            Ok(stream)
        }
        .await;
        let stream = match persisted {
            Ok(stream) => stream,
            Err(e) => {
                let _ = self.storage.release_event_position(reserved).await;
                return Err(e);
            }
        };
        stream_write.committed(stream);
        Ok(self.appended(state, event, stream, snapshot))
    }

    /// A message's fast path (PostgreSQL): built on the cached state and stored by one statement
    /// that checks the room's head is still the one the cache holds, with no transaction around
    /// it. `None` when it is not: the message takes [`Self::append_locked`], which reloads the
    /// state under the room's row lock (and finds an earlier send of the same transaction).
    async fn append_message_at_head(
        &self,
        state: &mut RoomState,
        room_id: &RoomId,
        sender: &UserId,
        transaction: Option<(&str, &str, &str)>,
        draft: &EventDraft,
    ) -> Result<Option<Appended>> {
        // Redactions change another event as well: the locked path stores them.
        let Some(snapshot_id) = state.snapshot.map(|(id, _)| id).filter(|_| draft.kind != "m.room.redaction") else {
            return Ok(None);
        };
        let stream_write = self.events.begin();
        // With evaluation caught up, the message may well be the next event to evaluate when it is
        // stored: evaluated now, its push actions are recorded with it, and its delivery waits for
        // no record of the evaluator's after its commit.
        let evaluates = self.push.evaluated() >= self.events.committed();
        // The position's round trip overlaps building, signing and evaluating the event: polled
        // first, the reservation queues and starts its statement's task, which sends it while this
        // task yields, and only then prepares.
        let (reserved, (event, evaluation)) = tokio::join!(self.storage.reserve_event_position(now_ms()), async {
            tokio::task::yield_now().await;
            let event = self.prepare(state, room_id, sender, draft);
            let evaluation = match &event {
                Ok(event) if evaluates => self.push.evaluate_message(&event.push_row(snapshot_id)).await,
                _ => None,
            };
            (event, evaluation)
        });
        let reserved = reserved?;
        // Refusals are left to the locked path: the cache may predate another process's write
        // (a join, say) that the locked path reloads.
        let Ok(event) = event else {
            let _ = self.storage.release_event_position(reserved).await;
            return Ok(None);
        };
        let queues_pushes = evaluation.as_ref().is_some_and(|e| !e.pushes.is_empty());
        let prev: Vec<&str> = state.extremities.iter().map(|e| e.as_str()).collect();
        let auth: Vec<&str> = event.auth_events.iter().map(|e| e.as_str()).collect();
        let links = EventLinks { prev_events: &prev, auth_events: &auth, transaction };
        let row = event.row(reserved, snapshot_id);
        let stored = self.storage.insert_message_at_head(state.head, &row, &links, evaluation).await;
        let Ok(Some(StoredMessage { position: stream, evaluation, evaluated })) = stored else {
            let _ = self.storage.release_event_position(reserved).await;
            return stored.map(|_| None);
        };
        stream_write.took(stream);
        if evaluated {
            // Before the members are woken: their syncs find it evaluated, with no wait.
            self.push.recorded_with_message(stream, queues_pushes);
        }
        let snapshot = state.snapshot;
        // Readers see the commit before the members' syncs are woken (a sync woken for messages
        // alone takes its bound from memory), and the push evaluator hears of it last, which puts
        // it, the next step towards delivery, in this worker's LIFO slot: it runs as soon as this
        // task yields, not once an idle worker has woken to steal it.
        stream_write.committed_unannounced(stream, evaluation);
        let appended = self.appended(state, event, stream, snapshot);
        self.events.announce_commit();
        Ok(Some(appended))
    }

    /// Builds, signs and authorizes an event on the room's current state.
    fn prepare<'a>(
        &self,
        state: &RoomState,
        room_id: &'a RoomId,
        sender: &'a UserId,
        draft: &'a EventDraft,
    ) -> Result<Prepared<'a>> {
        // Spec: "Size limits": the type and the state key are at most 255 bytes.
        if draft.kind.is_empty() || draft.kind.len() > 255 || draft.state_key.as_ref().is_some_and(|k| k.len() > 255) {
            return Err(Error::InvalidParam("event types and state keys are 1 to 255 bytes".into()));
        }
        // Both are stored as text columns, which cannot hold a NUL on PostgreSQL.
        if draft.kind.contains('\0') || draft.state_key.as_ref().is_some_and(|k| k.contains('\0')) {
            return Err(Error::InvalidParam("event types and state keys may not contain NUL".into()));
        }

        // Select the auth events from the current state (spec: "Auth events selection").
        let content_raw = to_raw_value(&draft.content).map_err(Error::internal)?;
        let kind = TimelineEventType::from(draft.kind.as_str());
        let auth_types =
            auth_types_for_event(&kind, sender, draft.state_key.as_deref(), &content_raw, &state.rules.authorization)
                .map_err(|e| Error::BadJson(format!("invalid content for {}: {e}", draft.kind)))?;
        let mut auth_events: Vec<OwnedEventId> =
            auth_types.iter().filter_map(|(t, k)| state.get_typed(t, k).map(|p| p.event_id.clone())).collect();
        auth_events.sort();
        auth_events.dedup();

        let depth = state.max_depth + 1;
        let fields = PduFields {
            room_id,
            sender,
            draft,
            prev_events: &state.extremities,
            auth_events: &auth_events,
            depth: depth as u64,
            origin_server_ts: now_ms() as u64,
        };
        let (event_id, json) =
            build_signed_pdu(&fields, &state.rules, self.server_name.as_str(), &self.key, self.config.max_event_bytes)?;
        let pdu = Arc::new(Pdu::parse(event_id.as_str(), &json)?);

        check_state_independent_auth_rules(&state.rules.authorization, &*pdu, |id| state.by_event_id(id))
            .map_err(Error::Forbidden)?;
        check_state_dependent_auth_rules(&state.rules.authorization, &*pdu, |t, k| state.get_typed(t, k))
            .map_err(Error::Forbidden)?;

        Ok(Prepared {
            search_text: search::searchable_text(&draft.kind, &draft.content),
            replaces_state: draft
                .state_key
                .as_ref()
                .and_then(|key| state.get(&draft.kind, key))
                .map(|p| p.event_id.to_string()),
            origin_server_ts: fields.origin_server_ts as i64,
            draft,
            room_id,
            sender,
            event_id,
            json,
            pdu,
            auth_events,
            depth,
        })
    }

    /// The cached state after `event` was stored at `stream`; wakes whom it concerns.
    fn appended(&self, state: &mut RoomState, event: Prepared, stream: i64, snapshot: Option<(i64, i64)>) -> Appended {
        let draft = event.draft;
        if let Some(state_key) = &draft.state_key {
            state.current.insert((draft.kind.clone(), state_key.clone()), event.pdu.clone());
        }
        state.extremities = vec![event.event_id.clone()];
        state.max_depth = event.depth;
        state.head = stream;
        state.snapshot = snapshot;
        state.resolved = false;
        // Everyone in the room, and whoever a membership change concerns (a kicked user too).
        let members = state.members_with(&["join", "invite"]);
        let target = draft.state_key.as_deref().filter(|_| draft.kind == "m.room.member");
        let woken = members.iter().map(|(user, _)| user.as_str()).chain(target);
        // A redaction changes what other events (state among them) show.
        if draft.state_key.is_none() && draft.kind != "m.room.redaction" {
            self.notifier.wake_for_messages(woken, stream);
        } else {
            self.notifier.wake(woken);
        }
        Appended { event_id: event.event_id, stream_ordering: stream }
    }

    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<Txn<'_>>,
    ) -> Result<Appended> {
        if self.storage.shares_event_positions() && draft.state_key.is_none() {
            let txn_key = txn.as_ref().map(Txn::key).transpose()?;
            let transaction = txn.as_ref().zip(txn_key.as_deref()).map(|(t, key)| (sender.as_str(), t.device_id, key));
            let handle = self.handle(room_id);
            let mut guard = handle.lock().await;
            if let Some(state) = guard.as_mut().filter(|s| !s.resolved) {
                match self.append_message_at_head(state, room_id, sender, transaction, &draft).await {
                    Ok(Some(appended)) => return Ok(appended),
                    Ok(None) => {}
                    Err(e) => {
                        if matches!(e, Error::Database(_) | Error::Internal(_)) {
                            *guard = None;
                        }
                        return Err(e);
                    }
                }
            }
        }
        self.append_with(room_id, sender, txn, |_| Ok(draft)).await
    }

    /// Strips the target's content for every reader, now and later, when the redaction's sender
    /// may redact it (spec: "Redactions": the original sender, or power at least `redact`).
    async fn apply_redaction(
        &self,
        write: &mut crate::storage::RoomWrite,
        state: &mut RoomState,
        redaction: &Pdu,
        target: &ruma::EventId,
    ) -> Result<()> {
        let Some(row) = write.event(target.as_str()).await? else { return Ok(()) };
        if row.room_id != redaction.room_id.as_str() || row.redacted_by.is_some() {
            return Ok(());
        }
        let allowed = row.sender == redaction.sender.as_str()
            || state.user_power(&redaction.sender) >= state.required_power(PowerAction::Redact);
        if !allowed {
            return Ok(());
        }
        let redacted = pdu::redacted_pdu_json(&row.pdu, &state.rules)?;
        write.redact_event(target.as_str(), &redacted, redaction.event_id.as_str()).await?;
        // A redacted state event stays in the state with its redacted content.
        if let Some(key) = &row.state_key {
            let current = state.get(&row.event_type, key).is_some_and(|p| p.event_id == target);
            if current {
                state
                    .current
                    .insert((row.event_type.clone(), key.clone()), Arc::new(Pdu::parse(&row.event_id, &redacted)?));
            }
        }
        Ok(())
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }
}
