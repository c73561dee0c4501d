//! Reporting events, rooms and users to the server's administrators (spec: "Reporting content").

use ruma::api::client::{
    reporting::report_user::v3 as report_user,
    room::{report_content::v3 as report_event, report_room::v3 as report_room},
};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn event(s: Services, req: Ruma<report_event::Request>) -> Result<report_event::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    s.rooms.report_event(&session.user_id, &b.room_id, &b.event_id, b.reason.as_deref().unwrap_or_default()).await?;
    Ok(report_event::Response::new())
}

pub async fn room(s: Services, req: Ruma<report_room::Request>) -> Result<report_room::Response> {
    let session = req.require_session()?;
    s.rooms.report_room(&session.user_id, &req.body.room_id, &req.body.reason).await?;
    Ok(report_room::Response::new())
}

pub async fn user(s: Services, req: Ruma<report_user::Request>) -> Result<report_user::Response> {
    let session = req.require_session()?;
    s.rooms.report_user(&session.user_id, &req.body.user_id, &req.body.reason).await?;
    Ok(report_user::Response::new())
}
