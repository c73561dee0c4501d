//! `GET`/`PUT /presence/{userId}/status` (spec: "Presence").

use std::time::Duration;

use ruma::{
    api::client::presence::{get_presence::v3 as get_presence, set_presence::v3 as set_presence},
    presence::PresenceState,
};

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

pub async fn put_status(s: Services, req: Ruma<set_presence::Request>) -> Result<set_presence::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "presence")?;
    let state = crate::presence::state_name(&b.presence)
        .ok_or_else(|| Error::InvalidParam("presence must be online, unavailable or offline".into()))?;
    s.sync.presence().set(session.user_id.as_str(), state, b.status_msg.clone()).await?;
    Ok(set_presence::Response::new())
}

/// A user's presence, for themselves and for users who share a room with them.
pub async fn get_status(s: Services, req: Ruma<get_presence::Request>) -> Result<get_presence::Response> {
    let session = req.require_session()?;
    let target = &req.body.user_id;
    let presence = s.sync.presence();
    if target != &session.user_id {
        let sharing = presence.storage().users_sharing_rooms(session.user_id.as_str()).await?;
        if !sharing.iter().any(|u| u == target.as_str()) {
            return Err(Error::Forbidden("you do not share a room with this user".into()));
        }
    }
    let row = if presence.enabled() { presence.storage().presence(target.as_str()).await? } else { None };
    let Some(row) = row else {
        return Ok(get_presence::Response::new(PresenceState::Offline));
    };
    let content = presence.content(&row);
    let mut response = get_presence::Response::new(PresenceState::from(row.state.as_str()));
    response.status_msg = row.status_msg.clone();
    response.currently_active = content["currently_active"].as_bool();
    response.last_active_ago = content["last_active_ago"].as_u64().map(Duration::from_millis);
    Ok(response)
}
