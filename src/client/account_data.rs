//! Account data (spec: "Client Config") and room tags (spec: "Room Tagging").

use ruma::api::client::{
    config::{
        get_global_account_data::v3 as get_global, get_room_account_data::v3 as get_room,
        set_global_account_data::v3 as set_global, set_room_account_data::v3 as set_room,
    },
    tag::{create_tag::v3 as create_tag, delete_tag::v3 as delete_tag, get_tags::v3 as get_tags},
};
use serde_json::Value as JsonValue;

use super::rooms::raw;
use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

fn json<T>(raw: &ruma::serde::Raw<T>) -> Result<JsonValue> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::BadJson(e.to_string()))
}

pub async fn put_global(s: Services, req: Ruma<set_global::Request>) -> Result<set_global::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "account data")?;
    s.sync.set_account_data(&session.user_id, None, &req.body.event_type.to_string(), &json(&req.body.data)?).await?;
    Ok(set_global::Response::new())
}

pub async fn get_global_data(s: Services, req: Ruma<get_global::Request>) -> Result<get_global::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "account data")?;
    let data_type = req.body.event_type.to_string();
    let mut data = s.sync.account_data(&session.user_id, None, &data_type).await?;
    if data.is_none() && data_type == "m.push_rules" {
        // Every account has push rules: the server default until the user changes one.
        data = Some(crate::push::rules::to_account_data(&s.push.ruleset(&session.user_id).await?)?);
    }
    let data = data.ok_or_else(|| Error::NotFound("no account data of this type".into()))?;
    Ok(get_global::Response::new(raw(&data)?))
}

pub async fn put_room(s: Services, req: Ruma<set_room::Request>) -> Result<set_room::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "account data")?;
    s.sync.set_account_data(&session.user_id, Some(&b.room_id), &b.event_type.to_string(), &json(&b.data)?).await?;
    Ok(set_room::Response::new())
}

pub async fn get_room_data(s: Services, req: Ruma<get_room::Request>) -> Result<get_room::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "account data")?;
    let data = s.sync.account_data(&session.user_id, Some(&b.room_id), &b.event_type.to_string()).await?;
    let data = data.ok_or_else(|| Error::NotFound("no account data of this type".into()))?;
    Ok(get_room::Response::new(raw(&data)?))
}

pub async fn list_tags(s: Services, req: Ruma<get_tags::Request>) -> Result<get_tags::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "account data")?;
    let data = s.sync.account_data(&session.user_id, Some(&req.body.room_id), "m.tag").await?;
    let tags = data.map(|d| d["tags"].clone()).filter(JsonValue::is_object).unwrap_or_else(|| serde_json::json!({}));
    Ok(get_tags::Response::new(serde_json::from_value(tags).map_err(Error::internal)?))
}

pub async fn put_tag(s: Services, req: Ruma<create_tag::Request>) -> Result<create_tag::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "account data")?;
    let info = serde_json::to_value(&b.tag_info).map_err(Error::internal)?;
    s.sync.set_tag(&session.user_id, &b.room_id, &b.tag, Some(info)).await?;
    Ok(create_tag::Response::new())
}

pub async fn remove_tag(s: Services, req: Ruma<delete_tag::Request>) -> Result<delete_tag::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "account data")?;
    s.sync.set_tag(&session.user_id, &b.room_id, &b.tag, None).await?;
    Ok(delete_tag::Response::new())
}
