//! The sync response (spec: "GET /_matrix/client/v3/sync", 200 response), typed down to the
//! joined rooms so that their events go out as the JSON text they were formatted to.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{value::RawValue, Map, Value as JsonValue};

#[derive(Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub account_data: Events<JsonValue>,
    pub to_device: Events<JsonValue>,
    pub presence: Events<JsonValue>,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: Map<String, JsonValue>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Serialize)]
pub struct Rooms {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: Map<String, JsonValue>,
    pub knock: Map<String, JsonValue>,
    pub leave: Map<String, JsonValue>,
}

#[derive(Serialize)]
pub struct Events<T> {
    pub events: Vec<T>,
}

#[derive(Serialize)]
pub struct DeviceLists {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events<Box<RawValue>>,
    pub ephemeral: Events<JsonValue>,
    pub account_data: Events<JsonValue>,
    pub summary: JsonValue,
    pub unread_notifications: UnreadCounts,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unread_thread_notifications: BTreeMap<String, UnreadCounts>,
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<Box<RawValue>>,
    pub limited: bool,
    pub prev_batch: String,
}

/// Spec: "Unread notification counts".
#[derive(Default, Serialize)]
pub struct UnreadCounts {
    pub notification_count: i64,
    pub highlight_count: i64,
}
