//! `GET /sync` (spec: "Syncing") and filters (spec: "Filtering").

use std::time::Duration;

use ruma::api::client::{
    filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter, FilterDefinition},
    sync::sync_events::v3::{self as sync_events, Filter},
};

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
    sync::{StreamToken, SyncFilter, SyncRequest, SyncResponse},
};

/// The longest a long-poll waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn sync(s: Services, req: Ruma<sync_events::Request>) -> Result<SyncResponse> {
    // Only what the sync needs is kept across its wait, not the whole parsed request: an idle
    // long-poll holds this future for as long as it waits.
    let Ruma { body, session, .. } = req;
    let session = session.ok_or(Error::MissingToken)?;
    let sync_events::Request { filter, since, full_state, set_presence, timeout, .. } = body;
    let filter = match filter {
        None => SyncFilter::default(),
        Some(Filter::FilterDefinition(definition)) => SyncFilter::from_definition(&definition),
        Some(Filter::FilterId(id)) => {
            SyncFilter::from_definition(&Box::pin(stored_filter(&s, session.user_id.as_str(), &id)).await?)
        }
        Some(_) => SyncFilter::default(),
    };
    let request = SyncRequest {
        user_id: session.user_id.as_str(),
        device_id: session.device_id.as_str(),
        since: since.map(|since| StreamToken::parse(&since)).transpose()?,
        full_state,
        filter,
        timeout: timeout.unwrap_or_default().min(MAX_TIMEOUT),
        // A value outside the spec's three syncs as the default, online.
        set_presence: crate::presence::state_name(&set_presence).unwrap_or(crate::presence::ONLINE),
    };
    s.sync.sync(&request, s.shutdown.clone()).await
}

async fn stored_filter(s: &Services, user_id: &str, id: &str) -> Result<FilterDefinition> {
    let id: i64 = id.parse().map_err(|_| Error::InvalidParam(format!("unknown filter {id:?}")))?;
    let text = s.storage.filter(user_id, id).await?.ok_or_else(|| Error::NotFound("unknown filter".into()))?;
    serde_json::from_str(&text).map_err(Error::internal)
}

pub async fn create(s: Services, req: Ruma<create_filter::Request>) -> Result<create_filter::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "filters")?;
    let text = serde_json::to_string(&req.body.filter).map_err(Error::internal)?;
    let id = s.storage.insert_filter(session.user_id.as_str(), &text).await?;
    Ok(create_filter::Response::new(id.to_string()))
}

pub async fn get(s: Services, req: Ruma<get_filter::Request>) -> Result<get_filter::Response> {
    let session = req.require_session()?;
    session.require_user(&req.body.user_id, "filters")?;
    Ok(get_filter::Response::new(stored_filter(&s, session.user_id.as_str(), &req.body.filter_id).await?))
}
