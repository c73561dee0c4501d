//! Wakes the syncs (long-poll and WebSocket) of the users a change concerns. A waiter holds its
//! user's `Notify`; writers name the users to wake. Payloads carry no data: a woken sync reads
//! what changed since its token. Each wake is stamped, so a sync can tell that nothing concerning
//! its user happened since it last answered, or that only new messages did.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::{futures::Notified, Notify};

/// What a user's syncs wait on.
pub struct Waiter {
    notify: Notify,
    /// The notifier's wake count at this user's latest wake (or when this waiter was made).
    woken_at: AtomicU64,
    /// The same, of the latest wake for anything but new messages.
    changed_at: AtomicU64,
    /// The highest position of the new messages the user was woken for.
    woken_for: AtomicI64,
}

impl Waiter {
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Equal readings mean the user was not woken in between.
    pub fn woken_at(&self) -> u64 {
        self.woken_at.load(Ordering::SeqCst)
    }

    /// Equal readings mean the user was woken for new messages alone in between, if at all.
    pub fn changed_at(&self) -> u64 {
        self.changed_at.load(Ordering::SeqCst)
    }

    /// The highest position of the new messages the user was woken for: a sync waits for it to be
    /// visible and evaluated before it reads, rather than reading, finding it still behind a write
    /// in flight, and waiting for it then.
    pub fn woken_for(&self) -> i64 {
        self.woken_for.load(Ordering::SeqCst)
    }
}

/// Why users are woken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// New events up to this position that change no state, in rooms they are members of: their
    /// memberships, to-device messages, keys, account data, receipts and presence are as they were.
    Messages(i64),
    Anything,
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
                let stamp = self.wakes.fetch_add(1, Ordering::SeqCst) + 1;
                let (woken_at, changed_at) = (AtomicU64::new(stamp), AtomicU64::new(stamp));
                Arc::new(Waiter { notify: Notify::new(), woken_at, changed_at, woken_for: AtomicI64::new(0) })
            })
            .clone()
    }

    /// Wakes the users' syncs here and, when the database is shared, in every other process.
    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        self.wake_for(user_ids, Wake::Anything);
    }

    /// [`Self::wake`] for new events up to `position` that change no state, in rooms the users are
    /// members of. Other processes' syncs read everything anew (their memberships are not this
    /// process's to vouch for).
    pub fn wake_for_messages<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>, position: i64) {
        self.wake_for(user_ids, Wake::Messages(position));
    }

    fn wake_for<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>, why: Wake) {
        let user_ids: Vec<&str> = user_ids.into_iter().collect();
        self.wake_local_for(user_ids.iter().copied(), why);
        self.publish(super::bus::Message::Wake(user_ids.iter().map(|u| (*u).to_owned()).collect()));
    }

    /// Wakes the users' syncs in this process only.
    pub fn wake_local<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        self.wake_local_for(user_ids, Wake::Anything);
    }

    fn wake_local_for<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>, why: Wake) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user_id in user_ids {
            if let Some(waiter) = users.get(user_id) {
                self.wake_waiter(waiter, why);
            }
        }
    }

    /// Wakes every sync in this process, after wakes from other processes may have been lost.
    pub fn wake_all_local(&self) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for waiter in users.values() {
            self.wake_waiter(waiter, Wake::Anything);
        }
    }

    fn wake_waiter(&self, waiter: &Waiter, why: Wake) {
        let stamp = self.wakes.fetch_add(1, Ordering::SeqCst) + 1;
        // Marked before woken: a sync that sees the wake sees why.
        match why {
            Wake::Anything => waiter.changed_at.store(stamp, Ordering::SeqCst),
            Wake::Messages(position) => {
                waiter.woken_for.fetch_max(position, Ordering::SeqCst);
            }
        }
        waiter.woken_at.store(stamp, Ordering::SeqCst);
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
