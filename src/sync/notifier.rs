//! Wakes the syncs (long-poll and WebSocket) of the users a change concerns. A waiter holds its
//! user's `Notify`; writers name the users to wake. Payloads carry no data: a woken sync reads
//! what changed since its token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Notifier {
    /// The handle a sync of `user_id` waits on.
    pub fn subscribe(&self, user_id: &str) -> Arc<Notify> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.entry(user_id.to_owned()).or_default().clone()
    }

    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user_id in user_ids {
            if let Some(notify) = users.get(user_id) {
                notify.notify_waiters();
            }
        }
    }

    /// Forgets users nobody is waiting for, so the map holds only active syncs.
    pub fn forget_idle(&self) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.retain(|_, notify| Arc::strong_count(notify) > 1);
    }
}
