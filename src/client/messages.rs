//! Reading history (spec: "Syncing" → `/messages`, `/context`, `/event`). Pagination tokens are
//! stream positions written `t<N>`: events at or before N are "before" the token.

use ruma::api::{
    client::{
        context::get_context::v3 as context,
        message::get_message_events::v3 as messages,
        room::{get_event_by_timestamp::v1 as by_timestamp, get_room_event::v3 as get_event},
    },
    Direction as RumaDirection,
};

use crate::{
    error::Result,
    http::Ruma,
    rooms::{format, pagination_token, parse_pagination_token, Direction, Pagination},
    services::Services,
    sync::filter::room_event_filter,
};

pub async fn get_messages(s: Services, req: Ruma<messages::Request>) -> Result<messages::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    let direction = match b.dir {
        RumaDirection::Backward => Direction::Backward,
        _ => Direction::Forward,
    };
    let from = b.from.as_deref().map(parse_pagination_token).transpose()?;
    let to = b.to.as_deref().map(parse_pagination_token).transpose()?;
    let limit = b.filter.limit.map(u64::from).unwrap_or(u64::from(b.limit)) as usize;
    let page = s
        .rooms
        .messages(
            &b.room_id,
            &session.user_id,
            Pagination { from, to, direction, limit },
            &room_event_filter(&b.filter),
        )
        .await?;
    let storage = s.rooms.storage();
    let mut response = messages::Response::new();
    response.start = match (from, direction) {
        (Some(_), _) => pagination_token(page.start),
        // Without `from`, start is where the page began: the newest event, or the room's start.
        (None, Direction::Backward) => pagination_token(page.chunk.first().map(|e| e.stream_ordering).unwrap_or(0)),
        (None, Direction::Forward) => pagination_token(0),
    };
    response.end = page.end.map(pagination_token);
    response.chunk = raw_events(storage, &session.user_id, &page.chunk).await?;
    response.state = raw_events(storage, &session.user_id, &page.state).await?;
    Ok(response)
}

/// Rows formatted for the viewer, as the response types hold them.
pub(super) async fn raw_events<T>(
    storage: &crate::storage::Storage,
    viewer: &ruma::UserId,
    rows: &[crate::storage::EventRow],
) -> Result<Vec<ruma::serde::Raw<T>>> {
    let events = format::client_events_as_text(storage, viewer.as_str(), rows, &Default::default()).await?;
    Ok(events.into_iter().map(ruma::serde::Raw::from_json).collect())
}

pub async fn get_context(s: Services, req: Ruma<context::Request>) -> Result<context::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    let (event, before, after, state) = s
        .rooms
        .context(
            &b.room_id,
            &session.user_id,
            &b.event_id,
            u64::from(b.limit).min(100) as usize,
            &room_event_filter(&b.filter),
        )
        .await?;
    let storage = s.rooms.storage();
    let mut response = context::Response::new();
    response.event = raw_events(storage, &session.user_id, std::slice::from_ref(&event)).await?.pop();
    response.events_before = raw_events(storage, &session.user_id, &before.chunk).await?;
    response.events_after = raw_events(storage, &session.user_id, &after.chunk).await?;
    response.state = raw_events(storage, &session.user_id, &state).await?;
    response.start = Some(pagination_token(before.end.unwrap_or(0)));
    response.end = Some(pagination_token(
        after.end.unwrap_or(after.chunk.last().map(|e| e.stream_ordering).unwrap_or(event.stream_ordering)),
    ));
    Ok(response)
}

pub async fn get_room_event(s: Services, req: Ruma<get_event::Request>) -> Result<get_event::Response> {
    let session = req.require_session()?;
    let row = s.rooms.event_for_user(&req.body.room_id, &session.user_id, &req.body.event_id).await?;
    let event = raw_events(s.rooms.storage(), &session.user_id, std::slice::from_ref(&row))
        .await?
        .pop()
        .ok_or_else(|| crate::error::Error::internal("a formatted row yields an event"))?;
    Ok(get_event::Response::new(event))
}

pub async fn event_by_timestamp(s: Services, req: Ruma<by_timestamp::Request>) -> Result<by_timestamp::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    let direction = if b.dir == RumaDirection::Forward { Direction::Forward } else { Direction::Backward };
    let ts = i64::try_from(u64::from(b.ts.get())).unwrap_or(i64::MAX);
    let (event_id, origin_server_ts) = s.rooms.event_near_time(&b.room_id, &session.user_id, ts, direction).await?;
    let event_id = ruma::OwnedEventId::try_from(event_id).map_err(crate::error::Error::internal)?;
    let origin_server_ts =
        ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::try_from(origin_server_ts.max(0) as u64).unwrap_or_default());
    Ok(by_timestamp::Response::new(event_id, origin_server_ts))
}
