//! The context built once at start and handed to every handler: configuration, storage and the
//! domain services. Dependencies run one way: handlers → domain (accounts, …) → storage.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{
    accounts::Accounts,
    config::Config,
    e2ee::Keys,
    ephemeral::typing::Typing,
    error::Result,
    http::{limits::AuthRateLimiter, metrics::Metrics},
    presence::Presence,
    push::{EvaluationBatches, Push},
    rooms::Rooms,
    storage::Storage,
    sync::{EventStream, Notifier, RememberedStarts, SyncService},
};

/// Cheap to clone: one pointer. Every request's future holds it for the whole request, idle
/// long-polls included, where the fields inline cost 720 bytes per connection.
#[derive(Clone)]
pub struct Services(Arc<ServiceSet>);

pub struct ServiceSet {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub sync: SyncService,
    pub push: Push,
    pub keys: Keys,
    pub auth_limiter: Arc<AuthRateLimiter>,
    pub metrics: Arc<Metrics>,
    /// Turns `true` when the server is shutting down, so that long-running requests answer early.
    pub shutdown: watch::Receiver<bool>,
}

impl Services {
    pub async fn new(config: Config, storage: Storage, shutdown: watch::Receiver<bool>) -> Result<Self> {
        let accounts = Accounts::new(storage.clone(), config.server_name.clone(), config.registration.token.clone());
        let notifier = Arc::new(Notifier::default());
        let events = EventStream::new(storage.max_event_stream().await?);
        let batches = EvaluationBatches::default();
        let push = Push::new(
            storage.clone(),
            config.server_name.clone(),
            config.push.clone(),
            notifier.clone(),
            batches.clone(),
        );
        let rooms = Rooms::new(
            storage.clone(),
            config.server_name.clone(),
            config.rooms.clone(),
            events.clone(),
            notifier.clone(),
            push.clone(),
        )
        .await?;
        let presence = Presence::new(config.presence.clone(), storage.clone(), notifier.clone());
        let remembered_starts = RememberedStarts::default();
        let metrics = Arc::new(Metrics::new(&batches, &remembered_starts));
        let keys = Keys::new(storage.clone(), config.server_name.clone(), notifier.clone());
        let sync = SyncService::new(
            rooms.clone(),
            notifier,
            events,
            Typing::default(),
            presence,
            push.clone(),
            remembered_starts,
        );
        Ok(Self(Arc::new(ServiceSet {
            sync,
            push,
            keys,
            rooms,
            auth_limiter: Arc::new(AuthRateLimiter::new(&config.limits)),
            config: Arc::new(config),
            storage,
            accounts,
            metrics,
            shutdown,
        })))
    }
}

impl std::ops::Deref for Services {
    type Target = ServiceSet;

    fn deref(&self) -> &ServiceSet {
        &self.0
    }
}
