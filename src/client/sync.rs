//! `GET /sync` (spec: "Syncing") and filters (spec: "Filtering").

use std::{future::Future, sync::Arc, time::Duration};

use ruma::api::client::{
    filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter, FilterDefinition},
    sync::sync_events::v3::{self as sync_events, Filter},
};

use crate::{
    accounts::Session,
    error::{Error, Result},
    http::Ruma,
    services::Services,
    sync::{StreamToken, SyncFilter, SyncRequest, SyncResponse},
};

/// The longest a long-poll waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Not an `async fn`: an idle long-poll holds the returned future for its whole wait, and an
/// `async fn` would keep its arguments (the whole parsed request) in it. The request is taken
/// apart first; the future holds the parts the sync needs, boxed.
pub fn sync(s: Services, req: Ruma<sync_events::Request>) -> impl Future<Output = Result<SyncResponse>> + Send {
    let call = SyncCall::from_request(req);
    async move {
        let mut call = call?;
        if let Some(id) = call.filter_id.take() {
            call.filter = Box::pin(stored_sync_filter(&s, call.session.user_id.as_str(), &id)).await?;
        }
        let request = SyncRequest {
            user_id: call.session.user_id.as_str(),
            device_id: call.session.device_id.as_str(),
            since: call.since,
            full_state: call.full_state,
            filter: &call.filter,
            timeout: call.timeout,
            set_presence: call.set_presence,
        };
        s.sync.sync(&request, s.shutdown.clone()).await
    }
}

/// What a `/sync` request asks, owned (`SyncRequest` borrows from it).
struct SyncCall {
    session: Session,
    filter: Arc<SyncFilter>,
    /// A stored filter to load in place of `filter`.
    filter_id: Option<String>,
    since: Option<StreamToken>,
    full_state: bool,
    timeout: Duration,
    set_presence: &'static str,
}

impl SyncCall {
    fn from_request(req: Ruma<sync_events::Request>) -> Result<Box<Self>> {
        let Ruma { body, session, .. } = req;
        let session = session.ok_or(Error::MissingToken)?;
        let sync_events::Request { filter, since, full_state, set_presence, timeout, .. } = body;
        let (filter, filter_id) = match filter {
            Some(Filter::FilterDefinition(definition)) => (SyncFilter::from_definition(&definition), None),
            Some(Filter::FilterId(id)) => (SyncFilter::default(), Some(id)),
            None | Some(_) => (SyncFilter::default(), None),
        };
        Ok(Box::new(Self {
            session,
            filter: Arc::new(filter),
            filter_id,
            since: since.map(|since| StreamToken::parse(&since)).transpose()?,
            full_state,
            timeout: timeout.unwrap_or_default().min(MAX_TIMEOUT),
            // A value outside the spec's three syncs as the default, online.
            set_presence: crate::presence::state_name(&set_presence).unwrap_or(crate::presence::ONLINE),
        }))
    }
}

/// A filter the user stored (`POST /user/{userId}/filter`), by its ID.
async fn stored_filter(s: &Services, user_id: &str, id: i64) -> Result<FilterDefinition> {
    let text = s.storage.filter(user_id, id).await?.ok_or_else(|| Error::NotFound("unknown filter".into()))?;
    serde_json::from_str(&text).map_err(Error::internal)
}

fn filter_number(id: &str) -> Result<i64> {
    id.parse().map_err(|_| Error::InvalidParam(format!("unknown filter {id:?}")))
}

/// A stored filter as a sync applies it, read and parsed once per process (`StoredFilters`).
pub(super) async fn stored_sync_filter(s: &Services, user_id: &str, id: &str) -> Result<Arc<SyncFilter>> {
    let id = filter_number(id)?;
    if let Some(filter) = s.sync.stored_filters().get(user_id, id) {
        return Ok(filter);
    }
    let filter = Arc::new(SyncFilter::from_definition(&stored_filter(s, user_id, id).await?));
    s.sync.stored_filters().insert(user_id, id, filter.clone());
    Ok(filter)
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
    let id = filter_number(&req.body.filter_id)?;
    Ok(get_filter::Response::new(stored_filter(&s, session.user_id.as_str(), id).await?))
}
