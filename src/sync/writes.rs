//! Changes that syncs deliver besides room events: account data, to-device messages, typing and
//! receipts. Each is stored (or, for typing, kept in memory) and then wakes the syncs it concerns.

use std::time::Duration;

use ruma::{EventId, RoomId, UserId};
use serde_json::Value as JsonValue;

use super::SyncService;
use crate::{
    error::{Error, Result},
    storage::{now_ms, ReceiptRow},
};

/// Account data types the server keeps for itself (spec: "Client Config").
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

/// The largest account data item accepted, in bytes.
const MAX_ACCOUNT_DATA_BYTES: usize = 64 * 1024;

impl SyncService {
    async fn require_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        match self.rooms.storage().membership(room_id.as_str(), user_id.as_str()).await?.as_deref() {
            Some("join") => Ok(()),
            _ => Err(Error::Forbidden("you are not in this room".into())),
        }
    }

    /// Sets global (`room_id` `None`) or room account data set by the client.
    pub async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &JsonValue,
    ) -> Result<()> {
        if SERVER_MANAGED.contains(&data_type) {
            return Err(Error::ServerManaged(format!("{data_type} is managed by the server and cannot be set here")));
        }
        self.store_account_data(user_id, room_id, data_type, content).await
    }

    async fn store_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &JsonValue,
    ) -> Result<()> {
        if !content.is_object() {
            return Err(Error::BadJson("account data content must be a JSON object".into()));
        }
        let text = serde_json::to_string(content).map_err(Error::internal)?;
        if text.len() > MAX_ACCOUNT_DATA_BYTES {
            return Err(Error::TooLarge(format!("account data is limited to {MAX_ACCOUNT_DATA_BYTES} bytes")));
        }
        if let Some(room_id) = room_id {
            if self.rooms.storage().membership(room_id.as_str(), user_id.as_str()).await?.is_none() {
                return Err(Error::Forbidden("you have never been in this room".into()));
            }
        }
        let room = room_id.map(|r| r.as_str()).unwrap_or("");
        self.rooms.storage().set_account_data(user_id.as_str(), room, data_type, &text).await?;
        self.notifier.wake([user_id.as_str()]);
        Ok(())
    }

    pub async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<JsonValue>> {
        let room = room_id.map(|r| r.as_str()).unwrap_or("");
        let text = self.rooms.storage().account_data(user_id.as_str(), room, data_type).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Adds (with its info) or removes a room tag, kept as `m.tag` room account data.
    pub async fn set_tag(&self, user_id: &UserId, room_id: &RoomId, tag: &str, info: Option<JsonValue>) -> Result<()> {
        if tag.is_empty() || tag.len() > 255 {
            return Err(Error::InvalidParam("tags are 1 to 255 bytes".into()));
        }
        let mut tags = self
            .account_data(user_id, Some(room_id), "m.tag")
            .await?
            .unwrap_or_else(|| serde_json::json!({"tags": {}}));
        if !tags["tags"].is_object() {
            tags["tags"] = serde_json::json!({});
        }
        match info {
            Some(info) => tags["tags"][tag] = info,
            None => {
                if let Some(map) = tags["tags"].as_object_mut() {
                    map.remove(tag);
                }
            }
        }
        self.store_account_data(user_id, Some(room_id), "m.tag", &tags).await
    }

    /// Queues a to-device message for each `(user, device or "*", content)`; idempotent per
    /// sending device and transaction ID.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: Vec<(ruma::OwnedUserId, String, JsonValue)>,
    ) -> Result<()> {
        let storage = self.rooms.storage();
        let mut queued = Vec::new();
        for (user_id, device, content) in messages {
            if user_id.server_name() != self.rooms.server_name() {
                // Federation is not built yet; remote recipients are skipped, as when their
                // server is unreachable.
                continue;
            }
            let text = serde_json::to_string(&content).map_err(Error::internal)?;
            if device == "*" {
                for d in storage.devices_of_user(user_id.as_str()).await? {
                    queued.push((user_id.to_string(), d.device_id, text.clone()));
                }
            } else {
                queued.push((user_id.to_string(), device, text));
            }
        }
        if storage.queue_to_device(sender.as_str(), sender_device, txn_id, event_type, &queued).await?.is_some() {
            self.notifier.wake(queued.iter().map(|(user, _, _)| user.as_str()));
        }
        Ok(())
    }

    pub async fn set_typing(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> Result<()> {
        self.require_joined(room_id, user_id).await?;
        self.presence.active(user_id.as_str()).await?;
        if self.typing.set(room_id.as_str(), user_id.as_str(), timeout) {
            let millis = timeout.map(|t| t.as_millis() as u64);
            self.notifier.publish(super::bus::Message::Typing(room_id.to_string(), user_id.to_string(), millis));
            self.rooms.wake_members(room_id).await?;
        }
        Ok(())
    }

    /// Records a read receipt (`m.read`, `m.read.private`) or the fully-read marker.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        self.require_joined(room_id, user_id).await?;
        self.presence.active(user_id.as_str()).await?;
        let event = self.rooms.event_for_user(room_id, user_id, event_id).await?;
        if receipt_type == "m.fully_read" {
            let content = serde_json::json!({"event_id": event.event_id});
            return self.store_account_data(user_id, Some(room_id), "m.fully_read", &content).await;
        }
        let receipt = ReceiptRow {
            room_id: room_id.to_string(),
            user_id: user_id.to_string(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.unwrap_or("").to_owned(),
            event_id: event.event_id,
            ts: now_ms(),
        };
        let (_, marked) = self.rooms.storage().set_receipt(&receipt, event.stream_ordering).await?;
        self.push.notifications_read(user_id, marked).await?;
        if receipt_type == "m.read.private" {
            self.notifier.wake([user_id.as_str()]);
        } else {
            self.rooms.wake_members(room_id).await?;
        }
        Ok(())
    }
}
