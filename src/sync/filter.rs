//! The parts of a sync filter (spec: "Filtering") that shape a sync response.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    api::client::filter::{Filter as RumaEventFilter, FilterDefinition, RoomEventFilter as RumaRoomEventFilter},
    OwnedUserId,
};

use crate::rooms::RoomEventFilter;

/// Users whose stored filters are remembered, and filters remembered for one user (a client uses
/// one or two; a user who makes a new one for every sync must not grow this without end); beyond
/// either the memory starts over.
const MAX_FILTER_USERS: usize = 100_000;
const MAX_FILTERS_PER_USER: usize = 8;

/// Stored filters (`POST /user/{userId}/filter`) already parsed, by user and filter ID. A stored
/// filter never changes (the API only adds new ones), so an entry cannot go stale. Element names
/// its filter by ID on every `/sync`: this spares each of those a database read, and its waiting
/// state a filter of its own.
#[derive(Clone, Default)]
pub struct StoredFilters(Arc<Mutex<HashMap<String, FiltersById>>>);

type FiltersById = HashMap<i64, Arc<SyncFilter>>;

impl StoredFilters {
    pub fn get(&self, user_id: &str, id: i64) -> Option<Arc<SyncFilter>> {
        let users = self.0.lock().unwrap_or_else(|p| p.into_inner());
        users.get(user_id)?.get(&id).cloned()
    }

    pub fn insert(&self, user_id: &str, id: i64, filter: Arc<SyncFilter>) {
        let mut users = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() >= MAX_FILTER_USERS && !users.contains_key(user_id) {
            users.clear();
        }
        let filters = users.entry(user_id.to_owned()).or_default();
        if filters.len() >= MAX_FILTERS_PER_USER {
            filters.clear();
        }
        filters.insert(id, filter);
    }
}

#[derive(Debug, Clone)]
pub struct SyncFilter {
    pub timeline_limit: usize,
    pub timeline: RoomEventFilter,
    pub lazy_load_members: bool,
    pub include_leave: bool,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    /// Unread counts per thread (spec: "Threading", `unread_thread_notifications`).
    pub unread_thread_notifications: bool,
    /// The top-level `presence` and `account_data` filters (spec: "Filtering").
    pub presence: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

impl Default for SyncFilter {
    fn default() -> Self {
        Self {
            timeline_limit: 10,
            timeline: RoomEventFilter::default(),
            lazy_load_members: false,
            include_leave: false,
            rooms: None,
            not_rooms: Vec::new(),
            unread_thread_notifications: false,
            presence: RoomEventFilter::default(),
            account_data: RoomEventFilter::default(),
        }
    }
}

/// A room event filter from the fields every spec filter shares, with lazy loading or not.
fn shared_fields(
    types: &Option<Vec<String>>,
    not_types: &[String],
    senders: &Option<Vec<OwnedUserId>>,
    not_senders: &[OwnedUserId],
    lazy_load_members: bool,
) -> RoomEventFilter {
    RoomEventFilter {
        types: types.clone(),
        not_types: not_types.to_vec(),
        senders: senders.as_ref().map(|s| s.iter().map(|u| u.to_string()).collect()),
        not_senders: not_senders.iter().map(|u| u.to_string()).collect(),
        lazy_load_members,
    }
}

/// The top-level filters (`presence`, `account_data`).
fn event_filter(f: &RumaEventFilter) -> RoomEventFilter {
    shared_fields(&f.types, &f.not_types, &f.senders, &f.not_senders, false)
}

pub fn room_event_filter(f: &RumaRoomEventFilter) -> RoomEventFilter {
    shared_fields(&f.types, &f.not_types, &f.senders, &f.not_senders, !f.lazy_load_options.is_disabled())
}

impl SyncFilter {
    pub fn from_definition(definition: &FilterDefinition) -> Self {
        let room = &definition.room;
        Self {
            timeline_limit: room.timeline.limit.map(|l| u64::from(l) as usize).unwrap_or(10).clamp(1, 100),
            timeline: room_event_filter(&room.timeline),
            lazy_load_members: !room.state.lazy_load_options.is_disabled(),
            include_leave: room.include_leave,
            rooms: room.rooms.as_ref().map(|r| r.iter().map(|id| id.to_string()).collect()),
            not_rooms: room.not_rooms.iter().map(|id| id.to_string()).collect(),
            unread_thread_notifications: room.timeline.unread_thread_notifications,
            presence: event_filter(&definition.presence),
            account_data: event_filter(&definition.account_data),
        }
    }

    pub fn wants_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.iter().any(|id| id == room_id))
            && !self.not_rooms.iter().any(|id| id == room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_filters_stay_bounded_per_user() {
        let filters = StoredFilters::default();
        let filter = Arc::new(SyncFilter::default());
        for id in 0..MAX_FILTERS_PER_USER as i64 {
            filters.insert("@a:x", id, filter.clone());
        }
        assert!(filters.get("@a:x", 0).is_some());
        filters.insert("@a:x", 100, filter.clone());
        assert!(filters.get("@a:x", 0).is_none(), "the ninth filter starts the user's memory over");
        assert!(filters.get("@a:x", 100).is_some());
        assert!(filters.get("@b:x", 100).is_none(), "filters are the user's own");
    }
}
