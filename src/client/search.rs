//! `POST /search` (spec: "Server Side Search"): thin over [`crate::rooms::Rooms::search`].

use ruma::api::client::search::search_events::v3::{self as search, OrderBy};
use serde_json::{json, Value as JsonValue};

use crate::{
    error::Result,
    http::Ruma,
    rooms::{SearchOrder, SearchQuery},
    services::Services,
    sync::filter::room_event_filter,
};

pub async fn search(s: Services, req: Ruma<search::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let Some(criteria) = &req.body.search_categories.room_events else {
        return Ok(json!({"search_categories": {}}));
    };
    let context = &criteria.event_context;
    let query = SearchQuery {
        term: criteria.search_term.clone(),
        keys: criteria.keys.as_ref().map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect()),
        order: match criteria.order_by {
            Some(OrderBy::Recent) => SearchOrder::Recent,
            _ => SearchOrder::Rank,
        },
        filter: room_event_filter(&criteria.filter),
        rooms: criteria.filter.rooms.as_ref().map(|rooms| rooms.iter().map(|r| r.to_string()).collect()),
        not_rooms: criteria.filter.not_rooms.iter().map(|r| r.to_string()).collect(),
        limit: criteria.filter.limit.map(|l| u64::from(l) as usize),
        next_batch: req.body.next_batch.clone(),
        context: Some((
            u64::from(context.before_limit) as usize,
            u64::from(context.after_limit) as usize,
            context.include_profile,
        )),
        include_state: criteria.include_state.unwrap_or(false),
    };
    let room_events = s.rooms.search(&session.user_id, query).await?;
    Ok(json!({"search_categories": {"room_events": room_events}}))
}
