//! Profiles (spec: "Profiles"): the whole profile and single fields, including `displayname` and
//! `avatar_url`.

use ruma::api::client::profile::{
    delete_profile_field::v3 as delete_field, get_profile::v3 as get_profile, get_profile_field::v3 as get_field,
    set_profile_field::v3 as set_field, ProfileFieldValue,
};

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

pub async fn get_profile(s: Services, req: Ruma<get_profile::Request>) -> Result<get_profile::Response> {
    let profile = s.accounts.profile(&req.body.user_id).await?;
    let profile = profile.ok_or_else(|| Error::NotFound("no profile for this user".into()))?;
    let mut response = get_profile::Response::new();
    for (field, value) in profile {
        response.set(field, value);
    }
    Ok(response)
}

pub async fn get_field(s: Services, req: Ruma<get_field::Request>) -> Result<get_field::Response> {
    let field = req.body.field.as_str();
    let value = s.accounts.profile_field(&req.body.user_id, field).await?;
    let value = value.and_then(|v| ProfileFieldValue::new(field, v).ok());
    let value = value.ok_or_else(|| Error::NotFound(format!("no {field} in this user's profile")))?;
    Ok(get_field::Response::new(value))
}

/// The profile fields that room member events carry.
const ROOM_PROFILE_FIELDS: &[&str] = &["displayname", "avatar_url"];

pub async fn set_field(s: Services, req: Ruma<set_field::Request>) -> Result<set_field::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "profile")?;
    let value = &req.body.value;
    let field = value.field_name();
    s.accounts.set_profile_field(&session.user_id, field.as_str(), &value.value()).await?;
    if ROOM_PROFILE_FIELDS.contains(&field.as_str()) {
        s.rooms.propagate_profile(&session.user_id).await?;
    }
    Ok(set_field::Response::new())
}

pub async fn delete_field(s: Services, req: Ruma<delete_field::Request>) -> Result<delete_field::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "profile")?;
    s.accounts.delete_profile_field(&session.user_id, req.body.field.as_str()).await?;
    if ROOM_PROFILE_FIELDS.contains(&req.body.field.as_str()) {
        s.rooms.propagate_profile(&session.user_id).await?;
    }
    Ok(delete_field::Response::new())
}
