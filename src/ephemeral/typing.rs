//! Typing notifications (spec: "Typing Notifications"): who is typing in which room, until when.
//! Kept in memory; every change bumps a serial that sync tokens carry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The longest a client may claim to type without refreshing.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a room whose typers all stopped is remembered, so that syncs still see the stop.
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct RoomTyping {
    users: HashMap<String, Instant>,
    changed_at: i64,
    changed_instant: Instant,
}

impl Default for RoomTyping {
    fn default() -> Self {
        Self { users: HashMap::new(), changed_at: 0, changed_instant: Instant::now() }
    }
}

#[derive(Default)]
struct Inner {
    serial: i64,
    rooms: HashMap<String, RoomTyping>,
}

#[derive(Clone, Default)]
pub struct Typing {
    inner: Arc<Mutex<Inner>>,
}

impl Typing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn serial(&self) -> i64 {
        self.lock().serial
    }

    /// Starts (with a timeout) or stops typing; `true` when who is typing changed.
    pub fn set(&self, room_id: &str, user_id: &str, timeout: Option<Duration>) -> bool {
        let mut inner = self.lock();
        let serial = inner.serial + 1;
        let room = inner.rooms.entry(room_id.to_owned()).or_default();
        let changed = match timeout {
            Some(timeout) => room.users.insert(user_id.to_owned(), Instant::now() + timeout.min(MAX_TIMEOUT)).is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if changed {
            room.changed_at = serial;
            room.changed_instant = Instant::now();
            inner.serial = serial;
        }
        changed
    }

    /// Removes expired typers; returns the rooms whose typers changed.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut changed = Vec::new();
        let mut serial = inner.serial;
        for (room_id, room) in inner.rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                serial += 1;
                room.changed_at = serial;
                room.changed_instant = now;
                changed.push(room_id.clone());
            }
        }
        inner.serial = serial;
        inner.rooms.retain(|_, room| !room.users.is_empty() || now.duration_since(room.changed_instant) < FORGET_AFTER);
        changed
    }

    /// The typers of each room whose typing changed after `since` (every room with typers when
    /// `since` is 0 or from before a restart).
    pub fn changes(&self, room_ids: &[&str], since: i64) -> Vec<(String, Vec<String>)> {
        let inner = self.lock();
        let since = if since > inner.serial { 0 } else { since };
        room_ids
            .iter()
            .filter_map(|room_id| {
                let room = inner.rooms.get(*room_id)?;
                let include = if since == 0 { !room.users.is_empty() } else { room.changed_at > since };
                if !include {
                    return None;
                }
                let mut users: Vec<String> = room.users.keys().cloned().collect();
                users.sort();
                Some(((*room_id).to_owned(), users))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Typing;

    #[test]
    fn start_stop_expire() {
        let typing = Typing::default();
        assert!(typing.set("!r", "@a", Some(Duration::from_secs(30))));
        assert!(!typing.set("!r", "@a", Some(Duration::from_secs(30))), "a refresh is no change");
        let serial = typing.serial();
        assert_eq!(typing.changes(&["!r"], 0), vec![("!r".to_owned(), vec!["@a".to_owned()])]);
        assert!(typing.changes(&["!r"], serial).is_empty());
        assert!(typing.set("!r", "@b", Some(Duration::from_millis(1))));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(typing.expire(), vec!["!r".to_owned()]);
        assert_eq!(typing.changes(&["!r"], serial), vec![("!r".to_owned(), vec!["@a".to_owned()])]);
        assert!(typing.set("!r", "@a", None));
    }
}
