//! Server-side key backup (spec: "Server-side key backups"): thin handlers over
//! [`crate::e2ee::Keys`].

use std::collections::BTreeMap;

use ruma::api::client::backup::{
    add_backup_keys::v3 as put_all, add_backup_keys_for_room::v3 as put_room,
    add_backup_keys_for_session::v3 as put_session, create_backup_version::v3 as create,
    delete_backup_keys::v3 as delete_all, delete_backup_keys_for_room::v3 as delete_room,
    delete_backup_keys_for_session::v3 as delete_session, delete_backup_version::v3 as delete_version,
    get_backup_info::v3 as get_version, get_backup_keys::v3 as get_all, get_backup_keys_for_room::v3 as get_room,
    get_backup_keys_for_session::v3 as get_session, get_latest_backup_info::v3 as get_latest,
    update_backup_version::v3 as update_version,
};
use serde_json::{json, Value as JsonValue};

use super::keys::as_json;
use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

/// `algorithm` and `auth_data` of a version body.
fn algorithm_of(raw: &impl serde::Serialize) -> Result<(String, JsonValue)> {
    let body: JsonValue = as_json(raw)?;
    let algorithm = body["algorithm"].as_str().ok_or_else(|| Error::BadJson("algorithm is required".into()))?;
    if !body["auth_data"].is_object() {
        return Err(Error::BadJson("auth_data must be an object".into()));
    }
    Ok((algorithm.to_owned(), body["auth_data"].clone()))
}

pub async fn create_version(s: Services, req: Ruma<create::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let (algorithm, auth_data) = algorithm_of(&req.body.algorithm)?;
    s.keys.create_backup(&session.user_id, &algorithm, &auth_data).await
}

pub async fn latest_version(s: Services, req: Ruma<get_latest::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.backup_info(&session.user_id, None).await
}

pub async fn get_version_info(s: Services, req: Ruma<get_version::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.backup_info(&session.user_id, Some(&req.body.version)).await
}

pub async fn update_version_info(s: Services, req: Ruma<update_version::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let (algorithm, auth_data) = algorithm_of(&req.body.algorithm)?;
    s.keys.update_backup(&session.user_id, &req.body.version, &algorithm, &auth_data).await?;
    Ok(json!({}))
}

pub async fn delete_version_info(s: Services, req: Ruma<delete_version::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.delete_backup(&session.user_id, &req.body.version).await?;
    Ok(json!({}))
}

pub async fn put_all_keys(s: Services, req: Ruma<put_all::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let rooms: BTreeMap<String, JsonValue> = as_json(&req.body.rooms)?;
    let mut sessions = BTreeMap::new();
    for (room_id, room) in rooms {
        sessions.insert(room_id, as_json(&room["sessions"])?);
    }
    s.keys.put_backup_keys(&session.user_id, &req.body.version, &sessions).await
}

pub async fn put_room_keys(s: Services, req: Ruma<put_room::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let b = &req.body;
    let rooms = BTreeMap::from([(b.room_id.to_string(), as_json(&b.sessions)?)]);
    s.keys.put_backup_keys(&session.user_id, &b.version, &rooms).await
}

pub async fn put_session_key(s: Services, req: Ruma<put_session::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let b = &req.body;
    let key: JsonValue = as_json(&b.session_data)?;
    let rooms = BTreeMap::from([(b.room_id.to_string(), BTreeMap::from([(b.session_id.clone(), key)]))]);
    s.keys.put_backup_keys(&session.user_id, &b.version, &rooms).await
}

pub async fn get_all_keys(s: Services, req: Ruma<get_all::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.backup_keys(&session.user_id, &req.body.version, None, None).await
}

pub async fn get_room_keys(s: Services, req: Ruma<get_room::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.backup_keys(&session.user_id, &req.body.version, Some(req.body.room_id.as_str()), None).await
}

pub async fn get_session_key(s: Services, req: Ruma<get_session::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let b = &req.body;
    s.keys.backup_keys(&session.user_id, &b.version, Some(b.room_id.as_str()), Some(&b.session_id)).await
}

pub async fn delete_all_keys(s: Services, req: Ruma<delete_all::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.delete_backup_keys(&session.user_id, &req.body.version, None, None).await
}

pub async fn delete_room_keys(s: Services, req: Ruma<delete_room::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    s.keys.delete_backup_keys(&session.user_id, &req.body.version, Some(req.body.room_id.as_str()), None).await
}

pub async fn delete_session_key(s: Services, req: Ruma<delete_session::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let b = &req.body;
    s.keys.delete_backup_keys(&session.user_id, &b.version, Some(b.room_id.as_str()), Some(&b.session_id)).await
}
