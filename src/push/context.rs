//! What push rule conditions need to know of a room at an event (spec: "Conditions"): its members
//! and their display names, the power levels, the room's name. Built from the event's state
//! snapshot, which every message sent between two state changes shares.

use std::collections::{BTreeMap, HashMap};

use ruma::{
    power_levels::NotificationPowerLevels,
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    room_version_rules::RoomPowerLevelsRules,
    Int, OwnedRoomId, OwnedUserId, RoomVersionId, UInt,
};
use serde_json::Value as JsonValue;

use crate::{error::Result, storage::Storage};

pub struct RoomPushContext {
    pub room_id: OwnedRoomId,
    /// Users with membership `join`, with their display names.
    pub joined: Vec<(String, Option<String>)>,
    /// Users with membership `invite`.
    pub invited: Vec<String>,
    pub power_levels: Option<PushConditionPowerLevelsCtx>,
    pub room_name: Option<String>,
    display_names: HashMap<String, String>,
}

impl RoomPushContext {
    pub async fn load(storage: &Storage, room_id: &str, snapshot_id: i64) -> Result<Option<Self>> {
        let Ok(room_id) = OwnedRoomId::try_from(room_id) else { return Ok(None) };
        let entries = storage.state_snapshot(snapshot_id).await?;
        let wanted: Vec<&str> = entries
            .iter()
            .filter(|(t, _, _)| {
                matches!(
                    t.as_str(),
                    "m.room.member"
                        | "m.room.power_levels"
                        | "m.room.name"
                        | "m.room.canonical_alias"
                        | "m.room.create"
                )
            })
            .map(|(_, _, e)| e.as_str())
            .collect();
        let events = storage.events(&wanted).await?;
        let mut context = Self {
            room_id,
            joined: Vec::new(),
            invited: Vec::new(),
            power_levels: None,
            room_name: None,
            display_names: HashMap::new(),
        };
        let mut power_levels = None;
        let mut create = None;
        let mut alias = None;
        for event in events {
            let Ok(pdu) = serde_json::from_str::<JsonValue>(&event.pdu) else { continue };
            let content = &pdu["content"];
            match event.event_type.as_str() {
                "m.room.member" => {
                    let Some(user) = event.state_key else { continue };
                    let name = content["displayname"].as_str().map(str::to_owned);
                    if let Some(name) = &name {
                        context.display_names.insert(user.clone(), name.clone());
                    }
                    match content["membership"].as_str() {
                        Some("join") => context.joined.push((user, name)),
                        Some("invite") => context.invited.push(user),
                        _ => {}
                    }
                }
                "m.room.power_levels" => power_levels = Some(content.clone()),
                "m.room.name" => context.room_name = content["name"].as_str().filter(|n| !n.is_empty()).map(Into::into),
                "m.room.canonical_alias" => alias = content["alias"].as_str().map(str::to_owned),
                "m.room.create" => create = Some((event.sender.clone(), content.clone())),
                _ => {}
            }
        }
        if context.room_name.is_none() {
            context.room_name = alias;
        }
        context.power_levels = power_levels.map(|content| power_levels_context(&content, create.as_ref()));
        Ok(Some(context))
    }

    pub fn display_name(&self, user_id: &str) -> Option<&str> {
        self.display_names.get(user_id).map(String::as_str)
    }

    /// The condition context for one recipient.
    pub fn for_user(&self, user_id: OwnedUserId, display_name: String) -> PushConditionRoomCtx {
        let member_count = UInt::try_from(self.joined.len() as u64).unwrap_or_default();
        let mut context = PushConditionRoomCtx::new(self.room_id.clone(), member_count, user_id, display_name);
        context.power_levels = self.power_levels.clone();
        context
    }
}

fn power_levels_context(content: &JsonValue, create: Option<&(String, JsonValue)>) -> PushConditionPowerLevelsCtx {
    let level = |v: &JsonValue| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    let users: BTreeMap<OwnedUserId, Int> = content["users"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(user, v)| Some((OwnedUserId::try_from(user.as_str()).ok()?, Int::new(level(v)?)?)))
        .collect();
    let users_default = level(&content["users_default"]).and_then(Int::new).unwrap_or_default();
    let mut notifications = NotificationPowerLevels::new();
    if let Some(room) = level(&content["notifications"]["room"]).and_then(Int::new) {
        notifications.room = room;
    }
    // Room version 12 gives its creators unlimited power; the version says whether it applies.
    let version = create.and_then(|(_, c)| c["room_version"].as_str()).unwrap_or("1");
    let creators = create.and_then(|(sender, _)| OwnedUserId::try_from(sender.as_str()).ok());
    let rules = RoomVersionId::try_from(version)
        .ok()
        .and_then(|v| v.rules())
        .map(|rules| RoomPowerLevelsRules::new(&rules.authorization, creators))
        .unwrap_or_else(|| RoomPowerLevelsRules::new(&ruma::room_version_rules::AuthorizationRules::V1, None));
    PushConditionPowerLevelsCtx::new(users, users_default, notifications, rules)
}
