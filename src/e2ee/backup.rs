//! Server-side key backup (spec: "Server-side key backups"): versions with their `auth_data`, and
//! encrypted session keys the server stores without reading.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Map, Value as JsonValue};

use super::Keys;
use crate::{
    error::{Error, Result},
    storage::{BackupKeyRow, BackupVersionRow},
};

/// Session keys per upload, at most.
const MAX_KEYS_PER_UPLOAD: usize = 10_000;

fn version_number(version: &str) -> Result<i64> {
    version.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| Error::NotFound("no such backup version".into()))
}

fn version_json(row: &BackupVersionRow) -> JsonValue {
    json!({
        "version": row.version.to_string(),
        "algorithm": row.algorithm,
        "auth_data": serde_json::from_str::<JsonValue>(&row.auth_data).unwrap_or_default(),
        "count": row.count,
        "etag": row.etag.to_string(),
    })
}

fn key_json(row: &BackupKeyRow) -> JsonValue {
    serde_json::from_str(&row.key_data).unwrap_or_default()
}

impl Keys {
    pub async fn create_backup(&self, user_id: &UserId, algorithm: &str, auth_data: &JsonValue) -> Result<JsonValue> {
        let version = self.storage.create_backup_version(user_id.as_str(), algorithm, &auth_data.to_string()).await?;
        Ok(json!({ "version": version.to_string() }))
    }

    /// A version (`None`: the current one).
    pub async fn backup_info(&self, user_id: &UserId, version: Option<&str>) -> Result<JsonValue> {
        let version = version.map(version_number).transpose()?;
        let row = self.storage.backup_version(user_id.as_str(), version).await?;
        row.as_ref().map(version_json).ok_or_else(|| Error::NotFound("no such backup version".into()))
    }

    /// Replaces a version's `auth_data`; its algorithm cannot change.
    pub async fn update_backup(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: &JsonValue,
    ) -> Result<()> {
        let number = version_number(version)?;
        let row = self
            .storage
            .backup_version(user_id.as_str(), Some(number))
            .await?
            .ok_or_else(|| Error::NotFound("no such backup version".into()))?;
        if row.algorithm != algorithm {
            return Err(Error::InvalidParam("a backup version's algorithm cannot change".into()));
        }
        self.storage.update_backup_auth_data(user_id.as_str(), number, &auth_data.to_string()).await?;
        Ok(())
    }

    pub async fn delete_backup(&self, user_id: &UserId, version: &str) -> Result<()> {
        if !self.storage.delete_backup_version(user_id.as_str(), version_number(version)?).await? {
            return Err(Error::NotFound("no such backup version".into()));
        }
        Ok(())
    }

    /// The number of a version that exists (deleted ones do not).
    async fn existing_version(&self, user_id: &UserId, version: &str) -> Result<i64> {
        let number = version_number(version)?;
        match self.storage.backup_version(user_id.as_str(), Some(number)).await? {
            Some(_) => Ok(number),
            None => Err(Error::NotFound("no such backup version".into())),
        }
    }

    /// Keys may only be added to the current version (spec: 403 `M_WRONG_ROOM_KEYS_VERSION`).
    async fn current_version(&self, user_id: &UserId, version: &str) -> Result<i64> {
        let number = version_number(version)?;
        let current = self.storage.backup_version(user_id.as_str(), None).await?;
        match current {
            Some(current) if current.version == number => Ok(number),
            Some(current) => Err(Error::WrongRoomKeysVersion(current.version.to_string())),
            None => Err(Error::NotFound("no such backup version".into())),
        }
    }

    /// Stores session keys `{room: {session: key}}`; returns `{etag, count}`.
    pub async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        rooms: &BTreeMap<String, BTreeMap<String, JsonValue>>,
    ) -> Result<JsonValue> {
        let number = self.current_version(user_id, version).await?;
        let mut keys = Vec::new();
        for (room_id, sessions) in rooms {
            for (session_id, key) in sessions {
                let field = |name: &str| key[name].as_i64().filter(|v| *v >= 0);
                let (Some(first_message_index), Some(forwarded_count), Some(is_verified)) =
                    (field("first_message_index"), field("forwarded_count"), key["is_verified"].as_bool())
                else {
                    return Err(Error::BadJson(
                        "each key needs first_message_index, forwarded_count and is_verified".into(),
                    ));
                };
                if !key["session_data"].is_object() {
                    return Err(Error::BadJson("each key needs session_data".into()));
                }
                keys.push(BackupKeyRow {
                    room_id: room_id.clone(),
                    session_id: session_id.clone(),
                    first_message_index,
                    forwarded_count,
                    is_verified,
                    key_data: key.to_string(),
                });
            }
        }
        if keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(Error::InvalidParam(format!("at most {MAX_KEYS_PER_UPLOAD} keys per upload")));
        }
        let (etag, count) = self.storage.put_backup_keys(user_id.as_str(), number, &keys).await?;
        Ok(json!({"etag": etag.to_string(), "count": count}))
    }

    /// Backed-up keys: all (`{rooms}`), a room's (`{sessions}`) or one session's key.
    pub async fn backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<JsonValue> {
        let number = self.existing_version(user_id, version).await?;
        let rows = self.storage.backup_keys(user_id.as_str(), number, room_id, session_id).await?;
        if session_id.is_some() {
            return rows.first().map(key_json).ok_or_else(|| Error::NotFound("no key for this session".into()));
        }
        let mut rooms: Map<String, JsonValue> = Map::new();
        for row in &rows {
            rooms.entry(row.room_id.clone()).or_insert_with(|| json!({"sessions": {}}))["sessions"][&row.session_id] =
                key_json(row);
        }
        Ok(match room_id {
            Some(room) => rooms.remove(room).unwrap_or_else(|| json!({"sessions": {}})),
            None => json!({ "rooms": rooms }),
        })
    }

    pub async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<JsonValue> {
        let number = self.existing_version(user_id, version).await?;
        let (etag, count) = self.storage.delete_backup_keys(user_id.as_str(), number, room_id, session_id).await?;
        Ok(json!({"etag": etag.to_string(), "count": count}))
    }
}
