//! Evaluates committed events against their recipients' push rules, in stream order and in
//! batches, off the request path. Every process runs one; they share the work through the
//! `push_evaluated` position, which a batch moves only from where it started (a batch that lost the
//! race to another process is dropped and redone from the new position). The events table is the
//! queue: after a restart evaluation resumes where it stopped. A message whose insert proved it the
//! next event to evaluate comes from its writer instead (`EventStream::take_next_to_evaluate`):
//! between a commit and its delivery that saves the read. Better still, its sender evaluates it
//! before storing it ([`evaluate_message`]) with the caches here, and the insert records that
//! evaluation when it still holds.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use ruma::{
    events::AnySyncTimelineEvent,
    push::{Action, FlattenedJson},
    serde::Raw,
    OwnedUserId,
};
use serde_json::{json, value::RawValue, Value as JsonValue};
use tokio::sync::watch;

use super::{
    context::RoomPushContext,
    rules,
    shared_rules::{EventOutcomes, NamedRuleset, RuleNames},
    Push,
};
use crate::{
    error::{Error, Result},
    storage::{now_ms, EventRow, MessageAction, MessageEvaluation, NewPushAction, NewQueuedPush, PusherRow, Storage},
    sync::EventStream,
};

/// Events per batch: one read, one write transaction.
const BATCH: i64 = 200;
/// Contexts kept between batches (one per room state in use); the cache is emptied beyond this.
const MAX_CACHED_CONTEXTS: usize = 10_000;

/// Runs until `stopped` turns true.
pub async fn run(push: Push, events: EventStream, mut stopped: watch::Receiver<bool>) {
    let evaluator = Evaluator { push, events };
    let committed = evaluator.events.commits();
    let mut after_commit = false;
    loop {
        // Registered before looking, so a commit during the batch is not missed.
        let notified = committed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let more = match evaluator.batch(std::mem::take(&mut after_commit)).await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "push evaluation");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = &mut notified => after_commit = true,
            // Events of other processes (PostgreSQL), and a retry after an error.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return;
                }
            }
        }
    }
}

struct Evaluator {
    push: Push,
    events: EventStream,
}

/// What evaluation keeps between batches, shared by the evaluator and the senders that evaluate
/// their message before storing it ([`evaluate_message`]).
pub(super) struct EvaluationCaches {
    contexts: HashMap<i64, Arc<RoomPushContext>>,
    /// Parsed rulesets by user: the `account_data` stream position they were last checked at,
    /// the position of the stored ruleset, the ruleset. No account data changed since the first:
    /// no query.
    rulesets: HashMap<String, (i64, i64, Arc<NamedRuleset>)>,
    rule_names: RuleNames,
    /// Pushers by user, valid while the `pushers` counter stays at `pushers_at`.
    pushers: HashMap<String, Vec<Arc<PusherRow>>>,
    pushers_at: i64,
}

impl Default for EvaluationCaches {
    fn default() -> Self {
        Self {
            contexts: HashMap::new(),
            rulesets: HashMap::new(),
            rule_names: RuleNames::default(),
            pushers: HashMap::new(),
            pushers_at: -1,
        }
    }
}

impl Evaluator {
    /// Evaluates the next batch; `true` when more events are waiting. `after_commit`: woken by a
    /// commit of this process. Every commit wakes the evaluator, and a batch takes all that is
    /// visible, so most wakes under load come for events a batch already took: when evaluation
    /// has reached the visible position there is nothing of this process's to read, and other
    /// processes' events are their own evaluators' (or the next timed look's). Those empty reads
    /// were a fifth of send-throughput's machine time.
    async fn batch(&self, after_commit: bool) -> Result<bool> {
        let storage = self.push.storage.clone();
        let (evaluated, visible) = (*self.push.evaluated.borrow(), self.events.visible());
        // A batch a writer handed over saves reading it; one from before the last recorded
        // position is stale (and would fail to record anyway).
        let handed_over = self.events.take_next_to_evaluate().filter(|next| next.from >= evaluated);
        let (batch, counter) = match handed_over {
            Some(batch) => (batch, self.push.batches.handed_over.clone()),
            None if after_commit && evaluated >= visible => return Ok(false),
            None => (storage.events_to_evaluate(visible, BATCH).await?, self.push.batches.read.clone()),
        };
        let (positions, from, upto, rows) = (batch.positions, batch.from, batch.upto, batch.events);
        if upto <= from {
            self.push.advance_evaluated(from);
            return Ok(false);
        }
        let full = rows.len() as i64 == BATCH;
        let to = if full { rows.last().map_or(upto, |r| r.stream_ordering) } else { upto };

        let mut caches = self.push.caches.lock().await;
        let caches = &mut *caches;
        let mut work: Vec<(&EventRow, Arc<RoomPushContext>, Vec<String>)> = Vec::new();
        for row in &rows {
            let Some(context) = caches.context(&storage, &row.room_id, row.state_snapshot).await? else { continue };
            let recipients = recipients(&self.push, &context, row);
            work.push((row, context, recipients));
        }
        let mut users: Vec<&str> = work.iter().flat_map(|(_, _, r)| r.iter().map(String::as_str)).collect();
        users.sort_unstable();
        users.dedup();
        let at = |stream: &str| positions.get(stream).copied().unwrap_or(0);
        caches.load_rulesets(&storage, &users, at("account_data")).await?;
        caches.load_pushers(&storage, &users, at("pushers")).await?;

        let now = now_ms();
        let mut actions = Vec::new();
        let mut pushes = Vec::new();
        for (row, context, recipients) in &work {
            caches.evaluate(row, context, recipients, now, &mut actions, &mut pushes).await?;
        }
        // Sending in a room counts as having read it: the sender's own notifications there up to
        // the event are read (this also retires an invite's notification once it is accepted).
        let mut own_events: HashMap<(&str, &str), i64> = HashMap::new();
        for row in &rows {
            if self.push.is_local(&row.sender) {
                own_events.insert((&row.sender, &row.room_id), row.stream_ordering);
            }
        }
        let own_events: Vec<(&str, &str, i64)> = own_events.into_iter().map(|((u, r), p)| (u, r, p)).collect();
        if !storage.record_push_evaluation(from, to, &actions, &pushes, &own_events, now).await? {
            // Another process recorded this range first.
            return Ok(true);
        }
        counter.inc();
        self.push.recorded(to, !pushes.is_empty());
        Ok(full)
    }
}

/// Who an event may notify: the room's local joined members (and an invitee), not the sender.
fn recipients(push: &Push, context: &RoomPushContext, row: &EventRow) -> Vec<String> {
    let mut recipients: Vec<String> =
        context.joined.iter().map(|(user, _)| user.clone()).filter(|u| *u != row.sender && push.is_local(u)).collect();
    if row.event_type == "m.room.member" {
        if let Some(invitee) = row.state_key.as_ref().filter(|k| context.invited.contains(k)) {
            if *invitee != row.sender && push.is_local(invitee) {
                recipients.push(invitee.clone());
            }
        }
    }
    recipients
}

/// A message's evaluation before it is stored, from what the evaluator has cached (see
/// [`MessageEvaluation`]), or `None` when the cache does not hold all it needs (the room's state at
/// the message, or any recipient's rules or pushers) or the evaluator is using it: the evaluator
/// then takes the message in turn. `row` is the message's row but for its position, not yet known.
pub(super) async fn evaluate_message(push: &Push, row: &EventRow) -> Option<MessageEvaluation> {
    let caches = push.caches.try_lock().ok()?;
    let context = caches.contexts.get(&row.state_snapshot)?.clone();
    let recipients = recipients(push, &context, row);
    let mut rules_checked = Vec::with_capacity(recipients.len());
    for user in &recipients {
        let (checked, _, _) = caches.rulesets.get(user)?;
        caches.pushers.get(user)?;
        rules_checked.push((user.clone(), *checked));
    }
    if caches.pushers_at < 0 {
        return None;
    }
    let now = now_ms();
    let (mut actions, mut pushes) = (Vec::new(), Vec::new());
    caches.evaluate(row, &context, &recipients, now, &mut actions, &mut pushes).await.ok()?;
    Some(MessageEvaluation {
        actions: actions.into_iter().map(MessageAction::from).collect(),
        pushes: pushes.into_iter().map(NewQueuedPush::into_owned).collect(),
        rules_checked,
        pushers_at: caches.pushers_at,
        sender_reads: push.is_local(&row.sender),
        now,
    })
}

impl EvaluationCaches {
    /// Evaluates one event for its recipients, adding the actions of those it notifies and the
    /// pushes for their pushers. Their rulesets and pushers must be loaded.
    async fn evaluate<'a>(
        &'a self,
        row: &'a EventRow,
        context: &RoomPushContext,
        recipients: &'a [String],
        now: i64,
        actions: &mut Vec<NewPushAction<'a>>,
        pushes: &mut Vec<NewQueuedPush<'a>>,
    ) -> Result<()> {
        if recipients.is_empty() {
            return Ok(());
        }
        let Some((raw, content)) = client_event(&row.pdu) else { return Ok(()) };
        // Flattened once for all recipients (ruma's `get_actions` would do it per recipient).
        let flattened = FlattenedJson::from_raw(&Raw::<AnySyncTimelineEvent>::from_json(raw));
        let mut outcomes = EventOutcomes::default();
        // One condition context for the event, its recipient's part set for each.
        let mut condition_context = None;
        for user in recipients {
            let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else { continue };
            let Some((_, _, ruleset)) = self.rulesets.get(user.as_str()) else { continue };
            let display_name = context.display_name(user).map_or_else(|| user_id.localpart().to_owned(), str::to_owned);
            let shared = condition_context.get_or_insert_with(|| context.for_user(user_id.clone(), String::new()));
            shared.user_id = user_id;
            shared.user_display_name = display_name;
            let matched = outcomes.first_match(ruleset, &flattened, shared).await;
            if !matched.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = matched.iter().any(Action::is_highlight);
            actions.push(NewPushAction {
                user_id: user,
                stream_ordering: row.stream_ordering,
                room_id: &row.room_id,
                event_id: &row.event_id,
                thread_id: thread_of(&content).to_owned(),
                actions: serde_json::to_string(matched).map_err(Error::internal)?,
                highlight,
                ts: now,
            });
            for pusher in self.pushers.get(user.as_str()).into_iter().flatten() {
                pushes.push(NewQueuedPush {
                    user_id: Cow::Borrowed(user),
                    app_id: Cow::Borrowed(&pusher.app_id),
                    pushkey: Cow::Borrowed(&pusher.pushkey),
                    notification: gateway_notification(row, &content, context, matched, highlight, user),
                });
            }
        }
        Ok(())
    }

    async fn context(
        &mut self,
        storage: &Storage,
        room_id: &str,
        snapshot_id: i64,
    ) -> Result<Option<Arc<RoomPushContext>>> {
        if let Some(context) = self.contexts.get(&snapshot_id) {
            return Ok(Some(context.clone()));
        }
        let Some(context) = RoomPushContext::load(storage, room_id, snapshot_id).await? else {
            return Ok(None);
        };
        if self.contexts.len() >= MAX_CACHED_CONTEXTS {
            self.contexts.clear();
        }
        let context = Arc::new(context);
        self.contexts.insert(snapshot_id, context.clone());
        Ok(Some(context))
    }

    /// Makes `self.rulesets` current for `users`: at most one query (none when no account data
    /// changed since they were checked), parsing only what changed.
    async fn load_rulesets(&mut self, storage: &Storage, users: &[&str], account_data_at: i64) -> Result<()> {
        if self.rulesets.len() > MAX_CACHED_CONTEXTS * 10 {
            self.rulesets.clear();
        }
        let stale: Vec<&str> = users
            .iter()
            .copied()
            .filter(|u| self.rulesets.get(*u).is_none_or(|(checked, _, _)| *checked != account_data_at))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let stored = storage.push_rules_of_users(&stale).await?;
        let stored: HashMap<&str, (i64, &str)> =
            stored.iter().map(|(user, position, content)| (user.as_str(), (*position, content.as_str()))).collect();
        for user in stale {
            let (position, content) = stored.get(user).map_or((0, None), |(p, c)| (*p, Some(*c)));
            if let Some(cached) = self.rulesets.get_mut(user).filter(|(_, stored_at, _)| *stored_at == position) {
                cached.0 = account_data_at;
                continue;
            }
            let Ok(user_id) = OwnedUserId::try_from(user) else { continue };
            let ruleset = Arc::new(self.rule_names.name(rules::from_account_data(&user_id, content)));
            self.rulesets.insert(user.to_owned(), (account_data_at, position, ruleset));
        }
        Ok(())
    }

    /// Makes `self.pushers` current for `users`: a query only for users not seen since the last
    /// change to any pusher.
    async fn load_pushers(&mut self, storage: &Storage, users: &[&str], pushers_at: i64) -> Result<()> {
        if pushers_at != self.pushers_at || self.pushers.len() > MAX_CACHED_CONTEXTS * 10 {
            self.pushers.clear();
            self.pushers_at = pushers_at;
        }
        let missing: Vec<&str> = users.iter().copied().filter(|u| !self.pushers.contains_key(*u)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for user in &missing {
            self.pushers.insert((*user).to_owned(), Vec::new());
        }
        for row in storage.pushers_of_users(&missing).await? {
            self.pushers.entry(row.user_id.clone()).or_default().push(Arc::new(row));
        }
        Ok(())
    }
}

/// The event as clients see it, which push rules match, and its parsed `content`. The PDU's
/// federation fields are not part of that view, and flattening their hashes, signatures and event
/// IDs cost more than the rest. The other top-level fields are kept as the JSON text they are:
/// `FlattenedJson` parses the result anyway, so parsing every field here as well (and writing it
/// out again) only doubled the work.
fn client_event(pdu: &str) -> Option<(Box<RawValue>, JsonValue)> {
    let mut fields: BTreeMap<String, &RawValue> = serde_json::from_str(pdu).ok()?;
    for federation_only in ["auth_events", "prev_events", "hashes", "signatures", "depth"] {
        fields.remove(federation_only);
    }
    let content = fields.get("content").and_then(|c| serde_json::from_str(c.get()).ok()).unwrap_or(JsonValue::Null);
    Some((serde_json::value::to_raw_value(&fields).ok()?, content))
}

/// `main`, or the thread root of an event in a thread (spec: "Threading").
fn thread_of(content: &JsonValue) -> &str {
    let relation = &content["m.relates_to"];
    match (relation["rel_type"].as_str(), relation["event_id"].as_str()) {
        (Some("m.thread"), Some(root)) => root,
        _ => "main",
    }
}

/// The event's part of a Push Gateway API `notification`; the sender adds counts and devices, and
/// moves `tweaks` into each device.
fn gateway_notification(
    row: &EventRow,
    content: &JsonValue,
    context: &RoomPushContext,
    actions: &[Action],
    highlight: bool,
    recipient: &str,
) -> String {
    let mut tweaks = serde_json::Map::new();
    for action in actions {
        if let Action::SetTweak(tweak) = action {
            if let Ok(JsonValue::Object(t)) = serde_json::to_value(tweak) {
                if let (Some(JsonValue::String(name)), value) = (t.get("set_tweak"), t.get("value")) {
                    tweaks.insert(name.clone(), value.cloned().unwrap_or(JsonValue::Bool(true)));
                }
            }
        }
    }
    let sound = actions.iter().any(|a| a.sound().is_some());
    let mut notification = json!({
        "event_id": row.event_id,
        "room_id": row.room_id,
        "type": row.event_type,
        "sender": row.sender,
        "prio": if sound || highlight { "high" } else { "low" },
        "content": content,
        "tweaks": tweaks,
    });
    if let Some(name) = context.display_name(&row.sender) {
        notification["sender_display_name"] = json!(name);
    }
    if let Some(name) = &context.room_name {
        notification["room_name"] = json!(name);
    }
    if row.event_type == "m.room.member" && row.state_key.as_deref() == Some(recipient) {
        notification["user_is_target"] = json!(true);
    }
    notification.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value as JsonValue};

    use super::{client_event, thread_of};

    #[test]
    fn the_client_view_drops_federation_fields_and_keeps_the_rest() {
        let content =
            json!({"body": "hi \"there\" \u{e9}", "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}});
        let pdu = json!({
            "auth_events": ["$a"], "content": content, "depth": 3, "hashes": {"sha256": "x"},
            "origin_server_ts": 5, "prev_events": ["$p"], "room_id": "!r:s", "sender": "@u:s",
            "signatures": {"s": {"ed25519:k": "sig"}}, "type": "m.room.message", "unsigned": {"age": 1},
        });
        let (raw, parsed) = client_event(&pdu.to_string()).expect("an object");
        let view: JsonValue = serde_json::from_str(raw.get()).expect("JSON");
        assert_eq!(
            view,
            json!({"content": content, "origin_server_ts": 5, "room_id": "!r:s", "sender": "@u:s",
                "type": "m.room.message", "unsigned": {"age": 1}})
        );
        assert_eq!(parsed, content);
        assert_eq!(thread_of(&parsed), "$root");
        assert!(client_event("[1]").is_none());
        assert_eq!(client_event(r#"{"type": "m.room.message"}"#).map(|(_, c)| c), Some(JsonValue::Null));
    }
}
