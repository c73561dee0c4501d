//! Push notifications (spec: "Push Notifications"): every account's push rules, the evaluation of
//! each event against its recipients' rules, the unread counts that follow, and delivery to the
//! push gateways that apps registered as pushers.
//!
//! Evaluation runs off the request path ([`evaluator`]): events are evaluated in stream order after
//! they commit and `push_evaluated` records how far. Syncs wait (briefly) for it and never show an
//! event beyond it, so an event arrives together with the counts it raised. A message that will
//! likely be the next event to evaluate is evaluated by its sender instead, from what the evaluator
//! has cached, and recorded by the statement that stores it (`MessageEvaluation`): its delivery
//! then waits for no record of the evaluator's. Deliveries go through
//! a queue in the database ([`gateway`]), so a restart or a dead gateway loses none.

mod context;
pub mod evaluator;
pub mod gateway;
pub mod rules;
mod shared_rules;

use std::{sync::Arc, time::Duration};

use ruma::{push::Ruleset, OwnedServerName, UserId};
use tokio::sync::{watch, Notify};

use crate::{
    config::PushConfig,
    error::{Error, Result},
    storage::{now_ms, EventRow, MessageEvaluation, PusherRow, Storage},
    sync::Notifier,
};

/// The longest a sync waits for the evaluation of events it would show.
const EVALUATION_WAIT: Duration = Duration::from_secs(2);
/// How often a sync that held events back looks again without news of evaluation (a missed bus
/// message must not leave events unshown until the long-poll times out).
const EVALUATION_RECHECK: Duration = Duration::from_millis(250);
/// How often a sync waiting for evaluation reads the recorded position, in case the bus message
/// of another process's evaluator was missed.
const DATABASE_RECHECK: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Push {
    storage: Storage,
    server_name: OwnedServerName,
    config: PushConfig,
    notifier: Arc<Notifier>,
    /// The `push_evaluated` position this process last recorded, for syncs waiting on it.
    evaluated: Arc<watch::Sender<i64>>,
    /// Wakes the gateway sender when something was queued.
    queued: Arc<Notify>,
    /// Serializes this process's read-modify-write of rulesets.
    rules_lock: Arc<tokio::sync::Mutex<()>>,
    batches: EvaluationBatches,
    caches: Arc<tokio::sync::Mutex<evaluator::EvaluationCaches>>,
}

/// Evaluation batches recorded by this process, by where their events came from (`/metrics`).
#[derive(Clone, Default)]
pub struct EvaluationBatches {
    /// Read from the database.
    pub read: prometheus_client::metrics::counter::Counter,
    /// Handed over by the writer that committed the batch's one event (see
    /// `StoredMessage::evaluation`): a round trip less between its commit and its delivery.
    pub handed_over: prometheus_client::metrics::counter::Counter,
    /// One message evaluated by its sender and recorded with it (see `MessageEvaluation`).
    pub with_message: prometheus_client::metrics::counter::Counter,
}

/// A pusher as `POST /pushers/set` gives it, validated.
pub struct NewPusher {
    pub app_id: String,
    pub pushkey: String,
    pub url: String,
    /// The pusher as JSON, as `GET /pushers` returns it.
    pub pusher: String,
}

impl Push {
    pub fn new(
        storage: Storage,
        server_name: OwnedServerName,
        config: PushConfig,
        notifier: Arc<Notifier>,
        batches: EvaluationBatches,
    ) -> Self {
        Self {
            storage,
            server_name,
            config,
            notifier,
            evaluated: Arc::new(watch::channel(0).0),
            queued: Arc::default(),
            rules_lock: Arc::default(),
            batches,
            caches: Arc::default(),
        }
    }

    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    /// The user's ruleset.
    pub async fn ruleset(&self, user_id: &UserId) -> Result<Ruleset> {
        let stored = self.storage.account_data(user_id.as_str(), "", "m.push_rules").await?;
        Ok(rules::from_account_data(user_id, stored.as_deref()))
    }

    /// Changes the user's ruleset with `change` and stores it as `m.push_rules` account data.
    pub async fn update_ruleset(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        let _serialized = self.rules_lock.lock().await;
        let mut ruleset = self.ruleset(user_id).await?;
        change(&mut ruleset)?;
        let content = rules::to_account_data(&ruleset)?.to_string();
        self.storage.set_account_data(user_id.as_str(), "", "m.push_rules", &content).await?;
        self.notifier.wake([user_id.as_str()]);
        Ok(())
    }

    pub async fn pushers(&self, user_id: &UserId) -> Result<Vec<PusherRow>> {
        self.storage.pushers_of_user(user_id.as_str()).await
    }

    pub async fn set_pusher(&self, user_id: &UserId, device_id: &str, pusher: NewPusher, append: bool) -> Result<()> {
        let row = PusherRow {
            user_id: user_id.to_string(),
            app_id: pusher.app_id,
            pushkey: pusher.pushkey,
            device_id: device_id.to_owned(),
            url: pusher.url,
            pusher: pusher.pusher,
            pushkey_ts: now_ms(),
        };
        self.storage.set_pusher(&row, append).await
    }

    pub async fn delete_pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        self.storage.delete_pusher(user_id.as_str(), app_id, pushkey).await
    }

    /// After a read receipt marked `marked` notifications read: when none is left unread, the
    /// user's apps get a push that sets their badge to zero.
    pub async fn notifications_read(&self, user_id: &UserId, marked: u64) -> Result<()> {
        if marked == 0 || self.storage.total_unread_push_count(user_id.as_str()).await? > 0 {
            return Ok(());
        }
        if self.storage.queue_push_to_all_pushers(user_id.as_str(), "{}", now_ms()).await? > 0 {
            self.queued.notify_one();
        }
        Ok(())
    }

    /// Waits until events up to `position` are evaluated (or [`EVALUATION_WAIT`] passes) and
    /// returns how far evaluation has come. `read_position` reads the recorded position, which
    /// another process may have moved.
    pub async fn wait_evaluated<F, Fut>(&self, position: i64, mut evaluated: i64, read_position: F) -> Result<i64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<i64>>,
    {
        if evaluated >= position {
            return Ok(evaluated);
        }
        let mut changed = self.evaluated.subscribe();
        let deadline = tokio::time::Instant::now() + EVALUATION_WAIT;
        evaluated = evaluated.max(*changed.borrow_and_update());
        // This process's evaluator, and other processes' through the bus, move `changed`. The
        // database is read only as a fallback for a missed bus message: a read per wake and every
        // few milliseconds was, under load, the statement a sync ran most.
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + DATABASE_RECHECK, DATABASE_RECHECK);
        while evaluated < position && tokio::time::Instant::now() < deadline {
            tokio::select! {
                moved = changed.changed() => match moved {
                    Ok(()) => evaluated = evaluated.max(*changed.borrow_and_update()),
                    Err(_) => return read_position().await,
                },
                _ = recheck.tick() => evaluated = evaluated.max(read_position().await?),
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        Ok(evaluated)
    }

    /// How far evaluation has gone, as far as this process knows.
    pub fn evaluated(&self) -> i64 {
        *self.evaluated.borrow()
    }

    /// Returns once evaluation has passed `position` as far as this process knows (its own
    /// evaluator, or another process's bus message), or after [`EVALUATION_RECHECK`], for a sync
    /// that held events back to look again.
    pub async fn evaluated_past(&self, position: i64) {
        let mut changed = self.evaluated.subscribe();
        let _ = tokio::time::timeout(EVALUATION_RECHECK, changed.wait_for(|evaluated| *evaluated > position)).await;
    }

    /// Another process evaluated up to `position` (its bus message): wakes the syncs waiting here.
    pub fn evaluated_elsewhere(&self, position: i64) {
        self.advance_evaluated(position);
    }

    /// Moves this process's view of `push_evaluated`, never back: the evaluator and senders that
    /// recorded with their message ([`Self::recorded_with_message`]) may learn of their records
    /// in another order than they committed in.
    fn advance_evaluated(&self, position: i64) {
        self.evaluated.send_if_modified(|evaluated| {
            let moved = position > *evaluated;
            *evaluated = (*evaluated).max(position);
            moved
        });
    }

    /// Evaluation was recorded up to `position`, with pushes `queued` or not: wakes the syncs
    /// waiting for it, here and (through the bus) elsewhere, and the gateway sender.
    fn recorded(&self, position: i64, queued: bool) {
        self.advance_evaluated(position);
        self.notifier.publish(crate::sync::bus::Message::Evaluated(position));
        if queued {
            self.queued.notify_one();
        }
    }

    /// A message's evaluation before it is stored, to record with it (see [`MessageEvaluation`]);
    /// `None` when the evaluator is to take it in turn. `row` is the message's but for its
    /// position.
    pub async fn evaluate_message(&self, row: &EventRow) -> Option<MessageEvaluation> {
        evaluator::evaluate_message(self, row).await
    }

    /// A message at `position` was stored with its evaluation, which `queued` pushes or not.
    pub fn recorded_with_message(&self, position: i64, queued: bool) {
        self.batches.with_message.inc();
        self.recorded(position, queued);
    }

    fn is_local(&self, user_id: &str) -> bool {
        user_id.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name.as_str())
    }
}

/// Validates a pusher's fields (spec: `POST /pushers/set`).
pub fn check_pusher(app_id: &str, pushkey: &str, url: &str) -> Result<()> {
    if app_id.is_empty() || app_id.len() > 64 {
        return Err(Error::InvalidParam("app_id must be 1 to 64 bytes".into()));
    }
    if pushkey.is_empty() || pushkey.len() > 512 {
        return Err(Error::InvalidParam("pushkey must be 1 to 512 bytes".into()));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| Error::InvalidParam("data.url must be a URL".into()))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.path().ends_with("/_matrix/push/v1/notify") {
        return Err(Error::InvalidParam("data.url must be an http(s) URL ending in /_matrix/push/v1/notify".into()));
    }
    Ok(())
}
