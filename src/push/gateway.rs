//! Delivery to push gateways (Push Gateway API: `POST /_matrix/push/v1/notify`). Queued pushes are
//! claimed from the database with a lease, so that several processes never send one twice and a
//! push claimed by a process that died is sent after the lease. Each pusher's pushes go out in
//! their own task: a slow or dead gateway delays nobody else's. Failures are retried with
//! exponential backoff up to a cap; a pushkey the gateway rejects loses its pusher.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value as JsonValue};
use tokio::sync::{watch, Semaphore};

use super::Push;
use crate::{
    error::{Error, Result},
    storage::{now_ms, PusherRow, QueuedPush},
};

/// Pushes claimed per round, and per pusher.
const CLAIM: i64 = 500;
const PER_PUSHER: usize = 20;
/// Pushers being sent to at once.
const CONCURRENT_PUSHERS: usize = 64;

pub async fn run(push: Push, mut stopped: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(push.config.gateway_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the push gateway client; pushes stay queued");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(CONCURRENT_PUSHERS));
    let in_flight = InFlight::default();
    loop {
        let queued = push.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let wait = match claim_and_send(&push, &client, &slots, &in_flight).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "push delivery");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = &mut queued => {}
            _ = tokio::time::sleep(wait) => {}
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    in_flight.release(&push).await;
                    return;
                }
            }
        }
    }
}

/// Pushes claimed by this process and not yet done (queue ID → attempts), so that stopping gives
/// them back at once instead of leaving them to their lease.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashMap<i64, i64>>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self, queue_id: i64) {
        self.lock().remove(&queue_id);
    }

    async fn release(&self, push: &Push) {
        let claimed: Vec<(i64, i64)> = self.lock().drain().collect();
        for (queue_id, attempts) in claimed {
            if let Err(e) = push.storage.retry_queued_push(queue_id, attempts, now_ms()).await {
                tracing::warn!(error = %e, "releasing a claimed push");
            }
        }
    }
}

/// Claims what is due and starts sending it; returns how long to sleep before looking again.
async fn claim_and_send(
    push: &Push,
    client: &reqwest::Client,
    slots: &Arc<Semaphore>,
    in_flight: &InFlight,
) -> Result<Duration> {
    let storage = &push.storage;
    let now = now_ms();
    // Long enough for a pusher's share to be tried in full before anyone else may claim it.
    let lease = now + (push.config.gateway_timeout().as_millis() as i64) * (PER_PUSHER as i64 + 1);
    let claimed = storage.claim_due_pushes(now, lease, CLAIM).await?;
    let mut by_pusher: BTreeMap<(String, String, String), Vec<QueuedPush>> = BTreeMap::new();
    in_flight.lock().extend(claimed.iter().map(|q| (q.queue_id, q.attempts)));
    for queued in claimed {
        let key = (queued.user_id.clone(), queued.app_id.clone(), queued.pushkey.clone());
        let share = by_pusher.entry(key).or_default();
        if share.len() < PER_PUSHER {
            share.push(queued);
        } else {
            // Beyond a pusher's share this round: due again at once.
            storage.retry_queued_push(queued.queue_id, queued.attempts, now).await?;
            in_flight.done(queued.queue_id);
        }
    }
    for ((user_id, app_id, pushkey), share) in by_pusher {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (push, client, in_flight) = (push.clone(), client.clone(), in_flight.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let ids: Vec<i64> = share.iter().map(|q| q.queue_id).collect();
            let sent = send_share(&push, &client, &user_id, &app_id, &pushkey, share).await;
            for id in ids {
                in_flight.done(id);
            }
            if let Err(e) = sent {
                tracing::warn!(error = %e, %user_id, %app_id, "push delivery");
            }
        });
    }
    let next = storage.next_push_due().await?.map_or(1000, |due| (due - now_ms()).clamp(10, 1000));
    Ok(Duration::from_millis(next as u64))
}

async fn send_share(
    push: &Push,
    client: &reqwest::Client,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    share: Vec<QueuedPush>,
) -> Result<()> {
    let storage = &push.storage;
    let Some(pusher) = storage.pusher(user_id, app_id, pushkey).await? else {
        for queued in share {
            storage.delete_queued_push(queued.queue_id).await?;
        }
        return Ok(());
    };
    let mut pending = share.into_iter();
    while let Some(queued) = pending.next() {
        let unread = storage.total_unread_push_count(user_id).await?;
        let body = request_body(&queued.notification, &pusher, unread);
        match post(client, &pusher.url, &body).await {
            Ok(rejected) => {
                storage.delete_queued_push(queued.queue_id).await?;
                if rejected.iter().any(|k| k == pushkey) {
                    tracing::info!(%user_id, %app_id, "the push gateway rejected the pushkey; removing the pusher");
                    storage.delete_pusher(user_id, app_id, pushkey).await?;
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, url = %pusher.url, "push gateway failed; retrying later");
                // This and the rest of the share wait for the gateway to come back.
                for queued in std::iter::once(queued).chain(pending) {
                    let attempts = queued.attempts + 1;
                    if attempts >= push.config.max_attempts {
                        tracing::warn!(%user_id, %app_id, attempts, "giving up on a push");
                        storage.delete_queued_push(queued.queue_id).await?;
                    } else {
                        let delay = push.config.retry_delay(attempts);
                        storage
                            .retry_queued_push(queued.queue_id, attempts, now_ms() + delay.as_millis() as i64)
                            .await?;
                    }
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The gateway request: the stored notification with counts and this pusher's device entry; only
/// IDs and counts for the `event_id_only` format.
fn request_body(stored: &str, pusher: &PusherRow, unread: i64) -> JsonValue {
    let mut notification: serde_json::Map<String, JsonValue> = serde_json::from_str(stored).unwrap_or_default();
    let tweaks = notification.remove("tweaks").unwrap_or_else(|| json!({}));
    let pusher_json: JsonValue = serde_json::from_str(&pusher.pusher).unwrap_or_default();
    let mut data = pusher_json["data"].as_object().cloned().unwrap_or_default();
    data.remove("url");
    if data.get("format").and_then(JsonValue::as_str) == Some("event_id_only") {
        notification.retain(|key, _| matches!(key.as_str(), "event_id" | "room_id" | "prio"));
    }
    notification.insert("counts".into(), json!({"unread": unread}));
    notification.insert(
        "devices".into(),
        json!([{
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.pushkey_ts / 1000,
            "data": data,
            "tweaks": tweaks,
        }]),
    );
    json!({ "notification": notification })
}

/// Sends one request; the pushkeys the gateway rejected, or why it failed.
async fn post(client: &reqwest::Client, url: &str, body: &JsonValue) -> Result<Vec<String>> {
    let response = client.post(url).json(body).send().await.map_err(Error::internal)?;
    if !response.status().is_success() {
        return Err(Error::Internal(format!("push gateway answered {}", response.status())));
    }
    let answer: JsonValue = response.json().await.unwrap_or_default();
    Ok(answer["rejected"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect())
}
