//! Between processes sharing one PostgreSQL database: `NOTIFY axon_bus` carries which users to wake
//! and typing changes (identifiers and timeouts, never message data). Each process publishes its
//! own changes and applies the others'. DESIGN.md section 3, step 4. The same connection hears
//! access-token revocations (`axon_sessions`), which storage publishes as they commit.
//!
//! A process alone publishes nothing: every wake and every evaluation step would be a NOTIFY, a
//! statement and a commit, that only its own listener hears. A starting (or reconnected) process
//! announces itself and publishes for [`PEER_WAIT`]; the others answer and publish from then on.
//! If none answers it stops. Wakes the others published before they heard it are made up for by
//! waking every local sync once the wait is over.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::{services::Services, storage::SESSIONS_CHANNEL};

const CHANNEL: &str = "axon_bus";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7000;
/// How long an announcement waits for others to answer.
const PEER_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// Users whose syncs have news.
    Wake(Vec<String>),
    /// A typing change: room, user, and the timeout in milliseconds (`None` stops typing).
    Typing(String, String, Option<u64>),
    /// Push rules have been evaluated up to this event position: the syncs waiting for it (which
    /// would otherwise poll the database) can go on.
    Evaluated(i64),
    /// A process started listening: the others answer with `Present` and publish to it.
    Hello,
    /// The answer to `Hello`.
    Present,
}

/// Whether other processes listen, as far as this one knows.
#[derive(Default)]
struct Peers {
    /// Publish: others are known, or an announcement awaits answers.
    publishing: AtomicBool,
    /// Another process was heard since the last announcement.
    heard: AtomicBool,
}

impl Peers {
    /// Announces this process and stops publishing after [`PEER_WAIT`] if nobody answered.
    fn announce(self: &Arc<Self>, services: &Services) {
        self.heard.store(false, Ordering::SeqCst);
        self.publishing.store(true, Ordering::SeqCst);
        services.sync.notifier().publish(Message::Hello);
        let (peers, services) = (self.clone(), services.clone());
        tokio::spawn(async move {
            tokio::time::sleep(PEER_WAIT).await;
            if !peers.heard.load(Ordering::SeqCst) {
                peers.publishing.store(false, Ordering::SeqCst);
            }
            // Others may have left this process out until they heard it.
            services.sync.notifier().wake_all_local();
        });
    }

    fn heard(&self) {
        self.heard.store(true, Ordering::SeqCst);
        self.publishing.store(true, Ordering::SeqCst);
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing process, which ignores its own messages.
    from: String,
    messages: Vec<Message>,
}

/// Starts publishing this process's changes and applying the other processes'.
pub async fn start(services: Services, url: &str) -> Result<(), sqlx::Error> {
    let instance = crate::accounts::random_id(12);
    let listener = listen(url).await?;
    services.accounts.hearing_revocations(true);
    let (publish, mut outbox) = mpsc::unbounded_channel::<Message>();
    services.sync.notifier().set_publisher(publish);

    let peers = Arc::new(Peers::default());
    let publisher_services = services.clone();
    let from = instance.clone();
    let publisher_peers = peers.clone();
    tokio::spawn(async move {
        while let Some(first) = outbox.recv().await {
            // Everything queued meanwhile goes out together.
            let mut batch = vec![first];
            while let Ok(next) = outbox.try_recv() {
                batch.push(next);
            }
            if !publisher_peers.publishing.load(Ordering::SeqCst) {
                batch.retain(|m| matches!(m, Message::Hello | Message::Present));
            }
            for payload in payloads(&from, batch) {
                if let Err(e) = publisher_services.storage.notify(CHANNEL, &payload).await {
                    tracing::warn!(error = %e, "publishing to other processes");
                }
            }
        }
    });

    peers.announce(&services);
    let url = url.to_owned();
    tokio::spawn(async move {
        let mut listener = Some(listener);
        loop {
            let Some(connected) = listener.as_mut() else {
                match listen(&url).await {
                    Ok(l) => {
                        listener = Some(l);
                        // Whatever was published meanwhile is lost: start over from the database.
                        services.accounts.hearing_revocations(true);
                        services.sync.notifier().wake_all_local();
                        // Processes started meanwhile were not heard.
                        peers.announce(&services);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening to other processes");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                continue;
            };
            match connected.try_recv().await {
                Ok(Some(notification)) if notification.channel() == SESSIONS_CHANNEL => {
                    if let Ok(user_id) = ruma::UserId::parse(notification.payload()) {
                        services.accounts.revoked_elsewhere(&user_id);
                    }
                }
                Ok(Some(notification)) => {
                    let Ok(envelope) = serde_json::from_str::<Envelope>(notification.payload()) else { continue };
                    if envelope.from != instance {
                        peers.heard();
                        apply(&services, envelope.messages).await;
                    }
                }
                // The connection is lost: revocations may go unheard until a new one listens.
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the connection listening to other processes");
                    services.accounts.hearing_revocations(false);
                    listener = None;
                }
            }
        }
    });
    Ok(())
}

/// A connection that has subscribed to the bus and to token revocations.
async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen_all([CHANNEL, SESSIONS_CHANNEL]).await?;
    Ok(listener)
}

/// Splits a batch into payloads under PostgreSQL's size limit.
fn payloads(from: &str, batch: Vec<Message>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<Message> = Vec::new();
    let mut size = 0;
    let messages = batch.into_iter().flat_map(|m| match m {
        // A long list of users is split so that every piece fits.
        Message::Wake(users) => users.chunks(100).map(|c| Message::Wake(c.to_vec())).collect::<Vec<_>>(),
        other => vec![other],
    });
    for message in messages {
        let len = serde_json::to_string(&message).map(|s| s.len()).unwrap_or(0);
        if size + len > MAX_PAYLOAD && !current.is_empty() {
            out.extend(serde_json::to_string(&Envelope {
                from: from.to_owned(),
                messages: std::mem::take(&mut current),
            }));
            size = 0;
        }
        size += len;
        current.push(message);
    }
    if !current.is_empty() {
        out.extend(serde_json::to_string(&Envelope { from: from.to_owned(), messages: current }));
    }
    out
}

async fn apply(services: &Services, messages: Vec<Message>) {
    for message in messages {
        match message {
            Message::Wake(users) => services.sync.notifier().wake_local(users.iter().map(String::as_str)),
            Message::Evaluated(position) => services.push.evaluated_elsewhere(position),
            Message::Hello => services.sync.notifier().publish(Message::Present),
            Message::Present => {}
            Message::Typing(room, user, timeout) => {
                let timeout = timeout.map(Duration::from_millis);
                if services.sync.typing().set(&room, &user, timeout) {
                    if let Ok(room_id) = ruma::RoomId::parse(&room) {
                        if let Ok(members) = services.rooms.with_state(&room_id, |s| s.members_with(&["join"])).await {
                            services.sync.notifier().wake_local(members.iter().map(|(u, _)| u.as_str()));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{payloads, Message, MAX_PAYLOAD};

    #[test]
    fn payloads_stay_under_the_limit() {
        let users: Vec<String> = (0..2000).map(|i| format!("@user{i}:example.org")).collect();
        let out = payloads("me", vec![Message::Wake(users), Message::Typing("!r:x".into(), "@a:x".into(), Some(1000))]);
        assert!(out.len() > 1);
        assert!(
            out.iter().all(|p| p.len() < MAX_PAYLOAD + 200),
            "{:?}",
            out.iter().map(String::len).collect::<Vec<_>>()
        );
    }
}
