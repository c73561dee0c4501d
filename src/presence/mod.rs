//! Presence, the online indicator (spec: "Presence"): online, unavailable, offline.
//!
//! A syncing device keeps its user online; with no sync in flight for `offline_after` the user goes
//! offline; with no activity for `idle_after`, unavailable. Costs stay bounded: the timers are a
//! queue of deadlines of which only the due ones are looked at, a change is written and fanned out
//! only when the state really changes, and it wakes only the users who share a room.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    config::PresenceConfig,
    error::Result,
    storage::{now_ms, PresenceRow, Storage},
    sync::Notifier,
};

pub const ONLINE: &str = "online";
pub const UNAVAILABLE: &str = "unavailable";
pub const OFFLINE: &str = "offline";

/// The spec's name of a presence state (spec: "m.presence"); `None` for a value outside its three.
pub fn state_name(state: &ruma::presence::PresenceState) -> Option<&'static str> {
    use ruma::presence::PresenceState;
    match state {
        PresenceState::Online => Some(ONLINE),
        PresenceState::Unavailable => Some(UNAVAILABLE),
        PresenceState::Offline => Some(OFFLINE),
        _ => None,
    }
}

/// How long what this process last wrote (or read) of a user's presence is taken for the stored
/// row when nothing changes. Another process's change is noticed within this time.
const WRITTEN_TRUSTED_FOR: Duration = Duration::from_secs(30);

/// When a deadline whose change failed (the database did not answer) is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct UserPresence {
    syncs_in_flight: usize,
    last_sync_end: Option<Instant>,
    last_active: Option<Instant>,
    /// What was last written or read, and when, to skip identical updates.
    written: Option<(String, Option<String>, Instant)>,
    /// The earliest deadline queued for the user. A later one is not queued: when this one comes,
    /// `expire` queues the user's next. So the queue holds about one entry per user, however
    /// often they sync (every long-poll both starts and ends a sync).
    queued: Option<Instant>,
}

impl UserPresence {
    /// When the user goes offline: `offline_after` once their syncs stopped (none while one runs).
    fn offline_at(&self, config: &PresenceConfig) -> Option<Instant> {
        self.last_sync_end.filter(|_| self.syncs_in_flight == 0).map(|t| t + config.offline_after())
    }

    /// When the user goes unavailable: `idle_after` once their activity stopped.
    fn idle_at(&self, config: &PresenceConfig) -> Option<Instant> {
        self.last_active.map(|t| t + config.idle_after())
    }

    /// When the user's state may next change by itself, after `now`.
    fn next_deadline(&self, now: Instant, config: &PresenceConfig) -> Option<Instant> {
        self.offline_at(config).into_iter().chain(self.idle_at(config)).filter(|t| *t > now).min()
    }
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserPresence>,
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Inner {
    /// Makes sure the user is looked at by `at` (see `UserPresence::queued`).
    fn schedule(&mut self, user_id: &str, at: Instant) {
        let Some(user) = self.users.get_mut(user_id) else { return };
        if user.queued.is_some_and(|queued| queued <= at) {
            return;
        }
        user.queued = Some(at);
        self.deadlines.push(Reverse((at, user_id.to_owned())));
    }
}

#[derive(Clone)]
pub struct Presence {
    config: PresenceConfig,
    storage: Storage,
    notifier: Arc<Notifier>,
    inner: Arc<Mutex<Inner>>,
}

/// A sync in flight; dropping it ends the sync.
pub struct SyncGuard {
    presence: Presence,
    user_id: String,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let mut inner = self.presence.lock();
        let Some(user) = inner.users.get_mut(&self.user_id) else { return };
        user.syncs_in_flight = user.syncs_in_flight.saturating_sub(1);
        user.last_sync_end = Some(Instant::now());
        if let Some(offline_at) = user.offline_at(&self.presence.config) {
            inner.schedule(&self.user_id, offline_at);
        }
    }
}

impl Presence {
    pub fn new(config: PresenceConfig, storage: Storage, notifier: Arc<Notifier>) -> Self {
        Self { config, storage, notifier, inner: Arc::default() }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sync of the user begins; with `set_presence` other than offline it makes the user
    /// online (or unavailable when asked).
    pub async fn sync_started(&self, user_id: &str, set_presence: &str) -> Result<Option<SyncGuard>> {
        if !self.config.enabled {
            return Ok(None);
        }
        {
            let mut inner = self.lock();
            let user = inner.users.entry(user_id.to_owned()).or_default();
            user.syncs_in_flight += 1;
            user.last_active.get_or_insert_with(Instant::now);
            if let Some(idle_at) = user.idle_at(&self.config) {
                inner.schedule(user_id, idle_at);
            }
        }
        let guard = SyncGuard { presence: self.clone(), user_id: user_id.to_owned() };
        match set_presence {
            OFFLINE => {}
            UNAVAILABLE => self.change(user_id, UNAVAILABLE, None).await?,
            _ => {
                // Syncing does not wake an idle user: only activity does.
                let idle = self
                    .current_state(user_id)
                    .await?
                    .is_some_and(|s| s == UNAVAILABLE && !self.recently_active(user_id));
                if !idle {
                    self.change(user_id, ONLINE, None).await?;
                }
            }
        }
        Ok(Some(guard))
    }

    fn recently_active(&self, user_id: &str) -> bool {
        let inner = self.lock();
        inner.users.get(user_id).and_then(|u| u.last_active).is_some_and(|t| t.elapsed() < self.config.idle_after())
    }

    async fn current_state(&self, user_id: &str) -> Result<Option<String>> {
        if let Some((state, _, _)) = self.lock().users.get(user_id).and_then(|u| u.written.clone()) {
            return Ok(Some(state));
        }
        Ok(self.storage.presence(user_id).await?.map(|r| r.state))
    }

    /// The user did something (sent, typed, read): online again, and idle only later.
    pub async fn active(&self, user_id: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        {
            let mut inner = self.lock();
            let user = inner.users.entry(user_id.to_owned()).or_default();
            user.last_active = Some(Instant::now());
            if let Some(idle_at) = user.idle_at(&self.config) {
                inner.schedule(user_id, idle_at);
            }
        }
        if self.current_state(user_id).await?.as_deref() != Some(ONLINE) {
            self.change(user_id, ONLINE, None).await?;
        }
        Ok(())
    }

    /// An explicit `PUT /presence/{userId}/status`.
    pub async fn set(&self, user_id: &str, state: &str, status_msg: Option<String>) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if state == ONLINE {
            self.lock().users.entry(user_id.to_owned()).or_default().last_active = Some(Instant::now());
        }
        self.change(user_id, state, Some(status_msg)).await
    }

    /// Writes and fans out a state, unless it is what was last written. `status_msg` `None` keeps
    /// the current message.
    async fn change(&self, user_id: &str, state: &str, status_msg: Option<Option<String>>) -> Result<()> {
        // Every sync asks for online: what this process wrote or read lately stands for the stored
        // row without a query. Lately, because another process may have changed it since.
        let known = self.lock().users.get(user_id).and_then(|u| u.written.clone());
        if status_msg.is_none()
            && known.is_some_and(|(known, _, at)| known == state && at.elapsed() < WRITTEN_TRUSTED_FOR)
        {
            return Ok(());
        }
        let stored = self.storage.presence(user_id).await?;
        let status_msg = match status_msg {
            Some(msg) => msg,
            None => stored.as_ref().and_then(|r| r.status_msg.clone()),
        };
        if stored.as_ref().is_some_and(|r| r.state == state && r.status_msg == status_msg) {
            self.lock().users.entry(user_id.to_owned()).or_default().written =
                Some((state.to_owned(), status_msg, Instant::now()));
            return Ok(());
        }
        let row = PresenceRow {
            user_id: user_id.to_owned(),
            state: state.to_owned(),
            status_msg: status_msg.clone(),
            last_active_ts: now_ms(),
        };
        self.storage.set_presence(&row).await?;
        self.lock().users.entry(user_id.to_owned()).or_default().written =
            Some((state.to_owned(), status_msg, Instant::now()));
        let audience = self.storage.users_sharing_rooms(user_id).await?;
        self.notifier.wake(audience.iter().map(String::as_str).chain([user_id]));
        Ok(())
    }

    /// Applies the deadlines that have passed: offline after syncs stopped, unavailable after
    /// activity stopped. Only due entries are examined.
    pub async fn expire(&self) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut inner = self.lock();
            while inner.deadlines.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                if let Some(Reverse((at, user_id))) = inner.deadlines.pop() {
                    if let Some(user) = inner.users.get_mut(&user_id).filter(|u| u.queued == Some(at)) {
                        user.queued = None;
                    }
                    due.push(user_id);
                }
            }
        }
        due.sort();
        due.dedup();
        let mut applied = 0;
        let result = async {
            for user_id in &due {
                self.apply_deadline(user_id, now).await?;
                applied += 1;
            }
            Ok(())
        }
        .await;
        // Each user looked at waits for their next deadline: theirs had moved on since it was
        // queued, or they went idle and may still go offline. Those a failure left unapplied are
        // tried again shortly.
        let retry = now + RETRY_AFTER_FAILURE;
        let mut inner = self.lock();
        for (i, user_id) in due.iter().enumerate() {
            let next = inner.users.get(user_id.as_str()).and_then(|u| u.next_deadline(now, &self.config));
            if let Some(at) = if i < applied { next } else { Some(retry) } {
                inner.schedule(user_id, at);
            }
        }
        result
    }

    /// Offline after the user's syncs stopped, unavailable after their activity stopped, if either
    /// deadline has passed.
    async fn apply_deadline(&self, user_id: &str, now: Instant) -> Result<()> {
        let next = {
            let inner = self.lock();
            let Some(user) = inner.users.get(user_id) else { return Ok(()) };
            let passed = |deadline: Option<Instant>| deadline.is_some_and(|at| at <= now);
            if passed(user.offline_at(&self.config)) {
                OFFLINE
            } else if passed(user.idle_at(&self.config)) {
                UNAVAILABLE
            } else {
                return Ok(());
            }
        };
        let current = self.current_state(user_id).await?;
        // Going offline always applies; going idle only from online.
        if next == OFFLINE || current.as_deref() == Some(ONLINE) {
            self.change(user_id, next, None).await?;
        }
        if next == OFFLINE {
            let mut inner = self.lock();
            if inner.users.get(user_id).is_some_and(|u| u.syncs_in_flight == 0) {
                inner.users.remove(user_id);
            }
        }
        Ok(())
    }

    /// How many deadlines are queued (a gauge of `/metrics`): about one per user known here.
    pub fn queued_deadlines(&self) -> usize {
        self.lock().deadlines.len()
    }

    /// When the user last did something, as known to this process.
    fn last_active_ms(&self, user_id: &str) -> Option<i64> {
        let inner = self.lock();
        let elapsed = inner.users.get(user_id)?.last_active?.elapsed();
        Some(now_ms() - elapsed.as_millis() as i64)
    }

    /// The presence event content of a stored row; `last_active_ago` counts from the user's last
    /// action (spec: "Presence").
    pub fn content(&self, row: &PresenceRow) -> serde_json::Value {
        let last_active = self.last_active_ms(&row.user_id).unwrap_or(row.last_active_ts);
        let ago = (now_ms() - last_active).max(0);
        let mut content = serde_json::json!({
            "presence": row.state,
            "last_active_ago": ago,
            "currently_active": row.state == ONLINE,
        });
        if let Some(msg) = &row.status_msg {
            content["status_msg"] = serde_json::json!(msg);
        }
        content
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}

impl PresenceConfig {
    pub fn offline_after(&self) -> Duration {
        Duration::from_secs_f64(self.offline_after.max(0.0))
    }
    pub fn idle_after(&self) -> Duration {
        Duration::from_secs_f64(self.idle_after.max(0.0))
    }
}
