//! Room upgrades (spec: "Room Upgrades", `POST /rooms/{roomId}/upgrade`): a new room of the asked
//! version carrying the old room's state, a tombstone in the old room pointing at it, the old
//! room's aliases and directory listing moved over, and the old room's power levels restricted so
//! that conversation moves on.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as JsonValue};

use super::{EventDraft, PowerAction, Rooms, SUPPORTED_VERSIONS};
use crate::{
    accounts::random_id,
    error::{Error, Result},
    storage::now_ms,
};

/// State copied to the new room, in this order (the spec's list, plus `m.room.encryption`, which
/// an encrypted conversation must keep).
const COPIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
];

/// What the upgrade reads of the old room, under its lock.
struct OldRoom {
    create: JsonValue,
    power_levels: JsonValue,
    state: Vec<(&'static str, JsonValue)>,
    canonical_alias: JsonValue,
    banned: Vec<String>,
    last_event: Option<String>,
    /// The highest level any copied state event needs.
    needed_power: i64,
}

impl Rooms {
    pub async fn upgrade(&self, user_id: &UserId, room_id: &RoomId, new_version: &str) -> Result<OwnedRoomId> {
        if !SUPPORTED_VERSIONS.contains(&new_version) {
            return Err(Error::UnsupportedRoomVersion(format!("room version {new_version} is not supported")));
        }
        let old = self
            .with_state(room_id, |state| {
                if state.membership(user_id).as_deref() != Some("join") {
                    return Err(Error::Forbidden("you are not in this room".into()));
                }
                let tombstone = PowerAction::Send { kind: "m.room.tombstone", state: true };
                if state.user_power(user_id) < state.required_power(tombstone) {
                    return Err(Error::Forbidden("you may not upgrade this room".into()));
                }
                let copied: Vec<(&'static str, JsonValue)> = COPIED_STATE
                    .iter()
                    .filter_map(|kind| state.get(kind, "").map(|pdu| (*kind, pdu.content_json())))
                    .collect();
                let needed_power = copied
                    .iter()
                    .map(|(kind, _)| kind)
                    .chain(["m.room.power_levels", "m.room.canonical_alias"].iter())
                    .map(|kind| state.required_power(PowerAction::Send { kind, state: true }))
                    .chain([state.required_power(PowerAction::Ban)])
                    .max()
                    .unwrap_or(100);
                Ok(OldRoom {
                    create: state.content_of("m.room.create"),
                    power_levels: state.content_of("m.room.power_levels"),
                    state: copied,
                    canonical_alias: state.content_of("m.room.canonical_alias"),
                    banned: state.members_with(&["ban"]).into_iter().map(|(user, _)| user).collect(),
                    last_event: state.extremities.first().map(|e| e.to_string()),
                    needed_power,
                })
            })
            .await??;

        let new_room = RoomId::parse(format!("!{}:{}", random_id(18), self.server_name)).map_err(Error::internal)?;
        self.storage.insert_room(new_room.as_str(), new_version, user_id.as_str(), now_ms()).await?;
        let mut create = json!({"room_version": new_version, "predecessor": {"room_id": room_id}});
        if let Some(event_id) = &old.last_event {
            create["predecessor"]["event_id"] = json!(event_id);
        }
        for field in ["m.federate", "type"] {
            if let Some(value) = old.create.get(field) {
                create[field] = value.clone();
            }
        }
        if new_version == "10" {
            create["creator"] = json!(user_id);
        }
        // The upgrader may lack the level some copied state needs: they hold it until the copy is
        // done, then the old levels are restored.
        let own_power = old.power_levels["users"][user_id.as_str()]
            .as_i64()
            .or_else(|| old.power_levels["users_default"].as_i64())
            .unwrap_or(100);
        let mut power_levels = old.power_levels.clone();
        if !power_levels.is_object() {
            power_levels = json!({});
        }
        let raised = own_power < old.needed_power;
        if raised {
            power_levels["users"][user_id.as_str()] = json!(old.needed_power);
        }
        let mut events = vec![
            EventDraft::state("m.room.create", "", create),
            EventDraft::state("m.room.member", user_id.as_str(), self.member_content(user_id, "join", None).await?),
            EventDraft::state("m.room.power_levels", "", power_levels),
        ];
        events.extend(old.state.iter().map(|(kind, content)| EventDraft::state(kind, "", content.clone())));
        for banned in &old.banned {
            events.push(EventDraft::state("m.room.member", banned, json!({"membership": "ban"})));
        }
        let moved = self.storage.move_room_aliases(room_id.as_str(), new_room.as_str()).await?;
        if moved > 0 && old.canonical_alias.is_object() {
            events.push(EventDraft::state("m.room.canonical_alias", "", old.canonical_alias.clone()));
        }
        if raised {
            events.push(EventDraft::state("m.room.power_levels", "", old.power_levels.clone()));
        }
        for draft in events {
            self.append(&new_room, user_id, draft, None).await?;
        }
        if self.storage.room(room_id.as_str()).await?.is_some_and(|r| r.published) {
            self.storage.set_room_published(room_id.as_str(), false).await?;
            self.storage.set_room_published(new_room.as_str(), true).await?;
        }

        let tombstone = json!({"body": "This room has been replaced", "replacement_room": new_room});
        self.append(room_id, user_id, EventDraft::state("m.room.tombstone", "", tombstone), None).await?;
        if moved > 0 && old.canonical_alias.is_object() {
            self.append(room_id, user_id, EventDraft::state("m.room.canonical_alias", "", json!({})), None).await?;
        }
        // Spec: the old room's power levels are changed to prevent conversation there: sending and
        // inviting need at least 50, and more than the default user level.
        if old.power_levels.is_object() {
            let mut restricted = old.power_levels.clone();
            let floor = (old.power_levels["users_default"].as_i64().unwrap_or(0) + 1).max(50);
            for key in ["events_default", "invite"] {
                if restricted[key].as_i64().unwrap_or(0) < floor {
                    restricted[key] = json!(floor);
                }
            }
            if restricted != old.power_levels {
                self.append(room_id, user_id, EventDraft::state("m.room.power_levels", "", restricted), None).await?;
            }
        }
        Ok(new_room)
    }
}
