//! Wakes the syncs (long-poll and WebSocket) of the users a change concerns. A waiter holds its
//! user's `Notify`; writers name the users to wake. Payloads carry no data: a woken sync reads
//! what changed since its token. Each wake is stamped, so a sync can tell that nothing concerning
//! its user happened since it last answered.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::{futures::Notified, Notify};

/// What a user's syncs wait on.
pub struct Waiter {
    notify: Notify,
    /// The notifier's wake count at this user's latest wake (or when this waiter was made).
    woken_at: AtomicU64,
}

impl Waiter {
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Equal readings mean the user was not woken in between.
    pub fn woken_at(&self) -> u64 {
        self.woken_at.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<String, Arc<Waiter>>>,
    /// Wakes so far, of anyone: the source of the stamps.
    wakes: AtomicU64,
    /// Set when other processes share the database: every wake is also published to them.
    publisher: Mutex<Option<tokio::sync::mpsc::UnboundedSender<super::bus::Message>>>,
}

impl Notifier {
    /// The handle a sync of `user_id` waits on.
    pub fn subscribe(&self, user_id: &str) -> Arc<Waiter> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| {
                // A waiter made anew may have missed wakes while its user had none: it counts as
                // woken now.
                let woken_at = AtomicU64::new(self.wakes.fetch_add(1, Ordering::SeqCst) + 1);
                Arc::new(Waiter { notify: Notify::new(), woken_at })
            })
            .clone()
    }

    /// Wakes the users' syncs here and, when the database is shared, in every other process.
    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let user_ids: Vec<&str> = user_ids.into_iter().collect();
        self.wake_local(user_ids.iter().copied());
        self.publish(super::bus::Message::Wake(user_ids.iter().map(|u| (*u).to_owned()).collect()));
    }

    /// Wakes the users' syncs in this process only.
    pub fn wake_local<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user_id in user_ids {
            if let Some(waiter) = users.get(user_id) {
                self.wake_waiter(waiter);
            }
        }
    }

    /// Wakes every sync in this process, after wakes from other processes may have been lost.
    pub fn wake_all_local(&self) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for waiter in users.values() {
            self.wake_waiter(waiter);
        }
    }

    fn wake_waiter(&self, waiter: &Waiter) {
        waiter.woken_at.store(self.wakes.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        waiter.notify.notify_waiters();
    }

    pub fn publish(&self, message: super::bus::Message) {
        if let Some(publisher) = self.publisher.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = publisher.send(message);
        }
    }

    pub fn set_publisher(&self, publisher: tokio::sync::mpsc::UnboundedSender<super::bus::Message>) {
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
    }

    /// Forgets users nobody is waiting for, so the map holds only active syncs.
    pub fn forget_idle(&self) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.retain(|_, waiter| Arc::strong_count(waiter) > 1);
    }
}
