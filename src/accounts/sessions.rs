//! The sessions of recently used access tokens, kept in memory so that a request does not read the
//! database to learn who is calling (DESIGN.md section 3, step 1: "hash lookup, cached").
//!
//! A revoked token must stop working everywhere, so the cache runs only while it hears every
//! revocation. Logout, device deletion, a device's new token and deactivation publish the user's
//! ID on PostgreSQL's `axon_sessions` channel inside the revoking transaction (storage/devices.rs),
//! whichever process revokes, the `axon` command line included; the bus (sync/bus.rs) hears it and
//! forgets that user's sessions. A process forgets its own revocations at once as well. While the
//! bus does not listen (SQLite, or PostgreSQL between losing its connection and listening again)
//! the cache holds nothing and every request reads the database.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};

use super::Session;

/// A backstop: a session is read again at least this often, whatever the bus says.
const TTL: Duration = Duration::from_secs(60);
/// Beyond this many sessions the cache starts over, which bounds its memory (about 200 bytes each).
const MAX_SESSIONS: usize = 100_000;

#[derive(Default)]
pub(crate) struct SessionCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    listening: bool,
    /// Moves on at every forgetting, so that a lookup which read the database before a revocation
    /// does not store its stale answer after the revocation was applied.
    generation: u64,
    by_token_hash: HashMap<String, (Session, Instant)>,
    token_hashes_by_user: HashMap<OwnedUserId, Vec<String>>,
}

/// What a lookup found: the session, or the generation to hand back to `insert` with the
/// database's answer.
pub(crate) enum Lookup {
    Hit(Session),
    Miss(u64),
}

impl SessionCache {
    pub fn get(&self, token_hash: &str) -> Lookup {
        let mut inner = self.lock();
        match inner.by_token_hash.get(token_hash) {
            Some((session, at)) if at.elapsed() < TTL => Lookup::Hit(session.clone()),
            Some(_) => {
                inner.remove(token_hash);
                Lookup::Miss(inner.generation)
            }
            None => Lookup::Miss(inner.generation),
        }
    }

    /// Keeps the database's answer, unless something was forgotten since the lookup began.
    pub fn insert(&self, token_hash: String, session: Session, generation: u64) {
        let mut inner = self.lock();
        if !inner.listening || inner.generation != generation {
            return;
        }
        if inner.by_token_hash.len() >= MAX_SESSIONS {
            inner.clear();
        }
        let user_hashes = inner.token_hashes_by_user.entry(session.user_id.clone()).or_default();
        if !user_hashes.contains(&token_hash) {
            user_hashes.push(token_hash.clone());
        }
        inner.by_token_hash.insert(token_hash, (session, Instant::now()));
    }

    /// After a revocation of any of the user's tokens.
    pub fn forget_user(&self, user_id: &UserId) {
        let mut inner = self.lock();
        inner.generation += 1;
        for token_hash in inner.token_hashes_by_user.remove(user_id).unwrap_or_default() {
            inner.by_token_hash.remove(&token_hash);
        }
    }

    /// Records a device's new `last_seen_ts` in its cached session.
    pub fn seen(&self, session: &Session, at: i64) {
        let mut inner = self.lock();
        let Inner { by_token_hash, token_hashes_by_user, .. } = &mut *inner;
        for token_hash in token_hashes_by_user.get(&session.user_id).into_iter().flatten() {
            if let Some((cached, _)) = by_token_hash.get_mut(token_hash) {
                if cached.device_id == session.device_id {
                    cached.last_seen_ts = Some(at);
                }
            }
        }
    }

    /// Whether revocations are heard; turning either way empties the cache, since revocations
    /// may have been missed.
    pub fn set_listening(&self, listening: bool) {
        let mut inner = self.lock();
        inner.listening = listening;
        inner.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections cannot panic halfway through a change, so a poisoned lock holds
        // consistent data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn clear(&mut self) {
        self.generation += 1;
        self.by_token_hash.clear();
        self.token_hashes_by_user.clear();
    }

    fn remove(&mut self, token_hash: &str) {
        if let Some((session, _)) = self.by_token_hash.remove(token_hash) {
            if let Some(hashes) = self.token_hashes_by_user.get_mut(&session.user_id) {
                hashes.retain(|h| h != token_hash);
                if hashes.is_empty() {
                    self.token_hashes_by_user.remove(&session.user_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_user_id};

    use super::{Lookup, Session, SessionCache};

    fn session(user: &str) -> Session {
        Session {
            user_id: ruma::UserId::parse(user).expect("valid user ID"),
            device_id: owned_device_id!("DEV"),
            last_seen_ts: None,
        }
    }

    fn generation(cache: &SessionCache, hash: &str) -> u64 {
        match cache.get(hash) {
            Lookup::Miss(g) => g,
            Lookup::Hit(_) => panic!("{hash} should not be cached"),
        }
    }

    #[test]
    fn keeps_nothing_unless_listening() {
        let cache = SessionCache::default();
        let g = generation(&cache, "h1");
        cache.insert("h1".into(), session("@a:x"), g);
        assert!(matches!(cache.get("h1"), Lookup::Miss(_)));
        cache.set_listening(true);
        let g = generation(&cache, "h1");
        cache.insert("h1".into(), session("@a:x"), g);
        assert!(matches!(cache.get("h1"), Lookup::Hit(s) if s.user_id == "@a:x"));
        cache.set_listening(false);
        assert!(matches!(cache.get("h1"), Lookup::Miss(_)));
    }

    #[test]
    fn forgetting_a_user_drops_only_their_sessions_and_stale_answers() {
        let cache = SessionCache::default();
        cache.set_listening(true);
        for (hash, user) in [("a1", "@a:x"), ("a2", "@a:x"), ("b1", "@b:x")] {
            let g = generation(&cache, hash);
            cache.insert(hash.into(), session(user), g);
        }
        // A lookup of a's token reads the database, then a's tokens are revoked before it stores.
        let before = generation(&cache, "a3");
        cache.forget_user(&owned_user_id!("@a:x"));
        cache.insert("a3".into(), session("@a:x"), before);
        for hash in ["a1", "a2", "a3"] {
            assert!(matches!(cache.get(hash), Lookup::Miss(_)), "{hash}");
        }
        assert!(matches!(cache.get("b1"), Lookup::Hit(_)));
    }

    #[test]
    fn seen_updates_the_cached_device() {
        let cache = SessionCache::default();
        cache.set_listening(true);
        let g = generation(&cache, "h");
        let s = session("@a:x");
        cache.insert("h".into(), s.clone(), g);
        cache.seen(&s, 42);
        assert!(matches!(cache.get("h"), Lookup::Hit(s) if s.last_seen_ts == Some(42)));
    }
}
