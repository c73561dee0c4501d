//! The state of one room as its writer holds it in memory: current state, forward extremities,
//! depth and state snapshot. Loaded once from storage and updated on every event the writer
//! persists; reloaded when another process has written to the room meanwhile.

use std::collections::HashMap;

use ruma::{events::StateEventType, room_version_rules::RoomVersionRules, OwnedEventId, RoomVersionId, UserId};
use serde_json::Value as JsonValue;

use super::pdu::{Pdu, PduRef};
use crate::{
    error::{Error, Result},
    storage::Storage,
};

/// A full snapshot is written after this many deltas, so a state lookup reads a bounded chain.
pub const MAX_SNAPSHOT_CHAIN: i64 = 32;

pub struct RoomState {
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// Stream ordering of the newest event this state includes.
    pub head: i64,
    /// Current state: (type, state key) → event.
    pub current: HashMap<(String, String), PduRef>,
    pub extremities: Vec<OwnedEventId>,
    pub max_depth: i64,
    /// The snapshot of the current state, and how many deltas it sits on.
    pub snapshot: Option<(i64, i64)>,
    /// The current state was resolved from several extremities and is in no snapshot yet: the
    /// next event stores it whole (snapshot and current-state rows).
    pub resolved: bool,
}

impl RoomState {
    pub async fn load(storage: &Storage, room_id: &str) -> Result<Option<Self>> {
        let Some(room) = storage.room(room_id).await? else { return Ok(None) };
        let version = RoomVersionId::try_from(room.room_version.as_str()).map_err(Error::internal)?;
        let rules = version.rules().ok_or_else(|| Error::internal(format!("unsupported room version {version}")))?;
        let mut current = HashMap::new();
        for row in storage.current_state_events(room_id).await? {
            let pdu = Pdu::parse(&row.event_id, &row.pdu)?;
            if let Some(key) = &pdu.state_key {
                current.insert((pdu.kind.to_string(), key.clone()), PduRef::new(pdu));
            }
        }
        let extremities = storage.forward_extremities(room_id).await?;
        let max_depth = extremities.iter().map(|(_, depth, _)| *depth).max().unwrap_or(0);
        // Every local write references all extremities, so a room written only by Axon has one;
        // several come from other servers' concurrent events, and their states are resolved.
        let mut snapshots: Vec<i64> = extremities.iter().map(|(_, _, s)| *s).collect();
        snapshots.sort_unstable();
        snapshots.dedup();
        let resolved = snapshots.len() > 1;
        if resolved {
            current = super::resolve::resolve_snapshots(storage, &rules, &snapshots).await?;
        }
        let snapshot = match snapshots.last() {
            Some(&id) => Some((id, storage.state_snapshot_chain_length(id).await?.unwrap_or(0))),
            None => None,
        };
        let extremities = extremities.into_iter().filter_map(|(id, _, _)| OwnedEventId::try_from(id).ok()).collect();
        Ok(Some(Self { version, rules, head: room.head_stream, current, extremities, max_depth, snapshot, resolved }))
    }

    pub fn get(&self, kind: &str, state_key: &str) -> Option<&PduRef> {
        self.current.get(&(kind.to_owned(), state_key.to_owned()))
    }

    pub fn get_typed(&self, kind: &StateEventType, state_key: &str) -> Option<PduRef> {
        self.get(&kind.to_string(), state_key).cloned()
    }

    pub fn by_event_id(&self, event_id: &ruma::EventId) -> Option<PduRef> {
        self.current.values().find(|p| p.event_id == event_id).cloned()
    }

    pub fn membership(&self, user_id: &UserId) -> Option<String> {
        self.get("m.room.member", user_id.as_str()).and_then(|p| p.membership())
    }

    /// Members whose membership is one of `memberships`.
    pub fn members_with(&self, memberships: &[&str]) -> Vec<(String, PduRef)> {
        self.current
            .iter()
            .filter(|((kind, _), _)| kind == "m.room.member")
            .filter_map(|((_, user), pdu)| {
                let m = pdu.membership()?;
                memberships.contains(&m.as_str()).then(|| (user.clone(), pdu.clone()))
            })
            .collect()
    }

    fn power_levels(&self) -> Option<JsonValue> {
        self.get("m.room.power_levels", "").map(|p| p.content_json())
    }

    /// The user's power level (spec: "m.room.power_levels"); without power levels the creator has 100.
    pub fn user_power(&self, user_id: &UserId) -> i64 {
        match self.power_levels() {
            Some(pl) => pl["users"][user_id.as_str()].as_i64().or_else(|| pl["users_default"].as_i64()).unwrap_or(0),
            None => {
                let creator = self.get("m.room.create", "").map(|c| c.sender.clone());
                if creator.as_deref() == Some(user_id) {
                    100
                } else {
                    0
                }
            }
        }
    }

    /// The level an action needs: `redact`, `kick`, `ban`, `invite`, or sending an event type.
    pub fn required_power(&self, action: PowerAction<'_>) -> i64 {
        let pl = self.power_levels().unwrap_or(JsonValue::Null);
        let level = |key: &str, default: i64| pl[key].as_i64().unwrap_or(default);
        match action {
            PowerAction::Redact => level("redact", 50),
            PowerAction::Kick => level("kick", 50),
            PowerAction::Ban => level("ban", 50),
            PowerAction::Invite => level("invite", 0),
            PowerAction::Send { kind, state } => pl["events"][kind].as_i64().unwrap_or_else(|| {
                if state {
                    level("state_default", if pl.is_null() { 0 } else { 50 })
                } else {
                    level("events_default", 0)
                }
            }),
        }
    }

    pub fn content_of(&self, kind: &str) -> JsonValue {
        self.get(kind, "").map(|p| p.content_json()).unwrap_or(JsonValue::Null)
    }
}

pub enum PowerAction<'a> {
    Redact,
    Kick,
    Ban,
    Invite,
    Send { kind: &'a str, state: bool },
}
