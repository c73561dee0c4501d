//! `createRoom` (spec: "Creation"): the create event, the creator's join, power levels, the
//! preset's rules, initial state, name, topic and invites, in the order the spec gives.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Map, Value as JsonValue};

use super::{EventDraft, Rooms, SUPPORTED_VERSIONS};
use crate::{
    accounts::random_id,
    error::{Error, Result},
    storage::now_ms,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

#[derive(Debug, Default)]
pub struct CreateRoom {
    pub preset: Option<Preset>,
    /// `visibility: public`: listed in the room directory.
    pub public: bool,
    pub is_direct: bool,
    pub invite: Vec<OwnedUserId>,
    pub initial_state: Vec<EventDraft>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub power_level_content_override: Option<Map<String, JsonValue>>,
    pub creation_content: Option<Map<String, JsonValue>>,
    pub room_version: Option<String>,
}

impl Rooms {
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.room_version.clone().unwrap_or_else(|| self.config.default_version.clone());
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(Error::UnsupportedRoomVersion(format!("room version {version} is not supported")));
        }
        let cap = self.config.max_members as usize;
        if cap > 0 && request.invite.len() + 1 > cap {
            return Err(Error::Forbidden(format!("the room is full: at most {cap} members")));
        }
        for invitee in &request.invite {
            self.check_local_user(invitee).await?;
        }
        let preset = request.preset.unwrap_or(if request.public { Preset::PublicChat } else { Preset::PrivateChat });

        let room_id = RoomId::parse(format!("!{}:{}", random_id(18), self.server_name)).map_err(Error::internal)?;
        let alias = match &request.alias_localpart {
            Some(localpart) => {
                let alias = super::directory::alias_for(localpart, &self.server_name)?;
                if !self.storage.insert_room_alias(alias.as_str(), room_id.as_str(), creator.as_str()).await? {
                    return Err(Error::RoomInUse("the room alias is already taken".into()));
                }
                Some(alias)
            }
            None => None,
        };
        self.storage.insert_room(room_id.as_str(), &version, creator.as_str(), now_ms()).await?;

        let mut create = request.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), json!(version));
        if version == "10" {
            create.insert("creator".into(), json!(creator));
        }
        let mut events = vec![
            EventDraft::state("m.room.create", "", JsonValue::Object(create)),
            EventDraft::state("m.room.member", creator.as_str(), self.member_content(creator, "join", None).await?),
            EventDraft::state("m.room.power_levels", "", power_levels(creator, preset, &request)),
        ];
        if let Some(alias) = &alias {
            events.push(EventDraft::state("m.room.canonical_alias", "", json!({"alias": alias})));
        }
        let join_rule = if preset == Preset::PublicChat { "public" } else { "invite" };
        events.push(EventDraft::state("m.room.join_rules", "", json!({"join_rule": join_rule})));
        events.push(EventDraft::state("m.room.history_visibility", "", json!({"history_visibility": "shared"})));
        if preset != Preset::PublicChat {
            events.push(EventDraft::state("m.room.guest_access", "", json!({"guest_access": "can_join"})));
        }
        // initial_state overrides the preset's events of the same type and state key (spec:
        // "createRoom": it is sent after the preset and takes precedence).
        events.retain(|e| {
            !request.initial_state.iter().any(|i| i.kind == e.kind && i.state_key == e.state_key)
                || e.kind == "m.room.create"
                || e.kind == "m.room.member"
                || e.kind == "m.room.power_levels"
        });
        events.extend(request.initial_state.iter().cloned());
        if let Some(name) = &request.name {
            events.push(EventDraft::state("m.room.name", "", json!({"name": name})));
        }
        if let Some(topic) = &request.topic {
            events.push(EventDraft::state("m.room.topic", "", json!({"topic": topic})));
        }
        for draft in events {
            self.append(&room_id, creator, draft, None).await?;
        }
        for invitee in &request.invite {
            self.invite(&room_id, creator, invitee, None, request.is_direct).await?;
        }
        if request.public {
            self.storage.set_room_published(room_id.as_str(), true).await?;
        }
        Ok(room_id)
    }

    /// Only local, active users can be invited until federation lands.
    pub(super) async fn check_local_user(&self, user_id: &UserId) -> Result<()> {
        if user_id.server_name() != self.server_name {
            return Err(Error::Forbidden("federation with other servers is not available yet".into()));
        }
        match self.storage.user(user_id.as_str()).await? {
            Some(user) if !user.deactivated => Ok(()),
            _ => Err(Error::NotFound(format!("no user {user_id}"))),
        }
    }

    /// `m.room.member` content with the user's profile.
    pub(super) async fn member_content(
        &self,
        user_id: &UserId,
        membership: &str,
        reason: Option<&str>,
    ) -> Result<JsonValue> {
        let mut content = json!({"membership": membership});
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = self.storage.profile_field(user_id.as_str(), field).await? {
                if let Ok(value @ JsonValue::String(_)) = serde_json::from_str::<JsonValue>(&value) {
                    content[field] = value;
                }
            }
        }
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        Ok(content)
    }
}

/// The default power levels of a new room, then the request's override on top (spec: "createRoom",
/// `power_level_content_override` replaces top-level keys).
fn power_levels(creator: &UserId, preset: Preset, request: &CreateRoom) -> JsonValue {
    let mut users = Map::new();
    users.insert(creator.to_string(), json!(100));
    if preset == Preset::TrustedPrivateChat {
        for invitee in &request.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == Preset::PublicChat { 50 } else { 0 },
        "notifications": {"room": 50},
    });
    if let (Some(overrides), JsonValue::Object(content)) = (&request.power_level_content_override, &mut content) {
        for (key, value) in overrides {
            content.insert(key.clone(), value.clone());
        }
    }
    content
}
