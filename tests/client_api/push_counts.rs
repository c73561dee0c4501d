//! Unread notification counts as receipts, threads and the user's own messages read parts of a
//! room, and across the migration that numbered the notifications recorded before it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    common::{hold_push_evaluation, release_push_evaluation, urlencode, Backend, TestServer, User},
    push::{add_pusher, counts, receipt, sync_until_event, Gateway},
};

crate::backend_tests!(
    partial_reads_count_what_follows,
    counts_survive_the_numbering_migration,
    one_message_counts_for_each_recipient,
    writers_hand_over_what_to_evaluate,
    senders_evaluation_yields_to_a_changed_rule
);

/// Sends `content` as an m.room.message with transaction ID `txn`; returns its event ID.
async fn send(s: &TestServer, user: &User, room_id: &str, txn: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
    let (status, sent) = s.put(&path, Some(&user.token), content).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

async fn mention(s: &TestServer, user: &User, room_id: &str, txn: &str, whom: &User) -> String {
    let content = json!({"msgtype": "m.text", "body": "look", "m.mentions": {"user_ids": [whom.user_id]}});
    send(s, user, room_id, txn, content).await
}

async fn reply(s: &TestServer, user: &User, room_id: &str, txn: &str, root: &str) -> String {
    let content = json!({"msgtype": "m.text", "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    send(s, user, room_id, txn, content).await
}

/// Bob's counts in a fresh sync with per-thread counts: ((main notifications, main highlights),
/// notifications of `root`'s thread, 0 when absent).
async fn thread_counts(s: &TestServer, bob: &User, room_id: &str, root: &str) -> ((i64, i64), i64) {
    let per_thread = json!({"room": {"timeline": {"unread_thread_notifications": true}}});
    let sync = s.sync(bob, None, 0, Some(&per_thread)).await;
    let thread =
        sync["rooms"]["join"][room_id]["unread_thread_notifications"][root]["notification_count"].as_i64().unwrap_or(0);
    (counts(&sync, room_id), thread)
}

/// A room where alice gives bob seven notifications: `root`, `one`, `mention1` (a highlight),
/// `reply1` (in root's thread), `two`, `mention2`, `reply2`, their event IDs in that order, as the
/// room's ID and the position of a sync before them.
async fn busy_room(s: &TestServer, alice: &User, bob: &User) -> (String, Vec<String>, String) {
    let room = s.create_room(alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(bob, &room).await.0, StatusCode::OK);
    let since = s.sync(bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    let root = send(s, alice, &room, "root", text("root")).await;
    let mut sent = vec![root.clone()];
    sent.push(send(s, alice, &room, "one", text("one")).await);
    sent.push(mention(s, alice, &room, "mention1", bob).await);
    sent.push(reply(s, alice, &room, "reply1", &root).await);
    sent.push(send(s, alice, &room, "two", text("two")).await);
    sent.push(mention(s, alice, &room, "mention2", bob).await);
    sent.push(reply(s, alice, &room, "reply2", &root).await);
    (room, sent, since)
}

/// Each way of reading covers the oldest notifications of a thread, or of all threads; what is
/// counted is what follows. With per-thread counts, the room's own counts are its main timeline's.
async fn partial_reads_count_what_follows(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (gateway, url) = Gateway::start().await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &url, json!({})).await.0, StatusCode::OK);
    // Evaluated together: a batch numbers its own notifications in order.
    hold_push_evaluation(&s).await;
    let (room, sent, since) = busy_room(&s, &alice, &bob).await;
    release_push_evaluation(&s).await;
    sync_until_event(&s, &bob, &since, &room, &sent[6]).await;
    let root = &sent[0];
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((5, 2), 2));

    // An unthreaded receipt at mention1 reads root, one and mention1, and no reply.
    receipt(&s, &bob, &room, &sent[2], None).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((2, 1), 2));
    // A threaded receipt at reply1 reads it alone.
    receipt(&s, &bob, &room, &sent[3], Some(root)).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((2, 1), 1));
    // Bob's own message reads everything before it, in every thread.
    send(&s, &bob, &room, "bob", json!({"msgtype": "m.text", "body": "caught up"})).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((0, 0), 0));

    // What comes after is counted from there, and the apps' badge agrees.
    mention(&s, &alice, &room, "mention3", &bob).await;
    let last = reply(&s, &alice, &room, "reply3", root).await;
    let push = gateway.wait_for("the last reply", |n| n["event_id"] == last.as_str()).await;
    assert_eq!(push["counts"]["unread"], 2, "{push}");
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((1, 1), 1));
    s.stop().await;
}

/// A database whose notifications were recorded before they were numbered (migration 10) counts
/// them the same once it has run, and numbers new ones after them.
async fn counts_survive_the_numbering_migration(backend: Backend) {
    let mut s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let (room, sent, since) = busy_room(&s, &alice, &bob).await;
    sync_until_event(&s, &bob, &since, &room, &sent[6]).await;
    let root = &sent[0];
    // Read: root and one (unthreaded), reply1 (threaded).
    receipt(&s, &bob, &room, &sent[1], None).await;
    receipt(&s, &bob, &room, &sent[3], Some(root)).await;
    let counted = thread_counts(&s, &bob, &room, root).await;
    assert_eq!(counted, ((3, 2), 1));

    // The database as migration 9 left it, with these notifications in it.
    s.running.take().unwrap().shutdown().await;
    let pool = s.db.pool().await;
    for statement in [
        "DROP INDEX event_push_actions_unread",
        "CREATE INDEX event_push_actions_unread ON event_push_actions (user_id, room_id, stream_ordering) WHERE unread = 1",
        "ALTER TABLE event_push_actions DROP COLUMN notifications_before",
        "ALTER TABLE event_push_actions DROP COLUMN highlights_before",
        "DROP TABLE event_push_totals",
        "DELETE FROM _sqlx_migrations WHERE version = 10",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let s = s.restart(|_| {}).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, counted);
    let since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let third = reply(&s, &alice, &room, "reply3", root).await;
    sync_until_event(&s, &bob, &since, &room, &third).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((3, 2), 2));
    // An unthreaded receipt at reply2 reads all but reply3.
    receipt(&s, &bob, &room, &sent[6], None).await;
    assert_eq!(thread_counts(&s, &bob, &room, root).await, ((0, 0), 1));
    s.stop().await;
}

/// One message, four recipients, four outcomes: the evaluator shares what rules have in common
/// between recipients, and must not share what they do not. Bob is named by his localpart
/// (`.m.rule.contains_user_name`), dave by his display name (`.m.rule.contains_display_name`),
/// carol muted the room, erin has the defaults.
async fn one_message_counts_for_each_recipient(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.listen.metrics = Some("127.0.0.1:0".parse().unwrap())).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut recipients = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        let user = s.register_fast(name).await;
        if name == "dave" {
            let path = format!("/_matrix/client/v3/profile/{}/displayname", user.user_id);
            assert_eq!(s.put(&path, Some(&user.token), json!({"displayname": "Captain"})).await.0, StatusCode::OK);
        }
        if name == "carol" {
            let rule =
                json!({"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}]});
            let path = format!("/_matrix/client/v3/pushrules/global/override/{}", urlencode(&room));
            assert_eq!(s.put(&path, Some(&user.token), rule).await.0, StatusCode::OK);
        }
        assert_eq!(s.join(&user, &room).await.0, StatusCode::OK);
        let since = s.sync(&user, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
        recipients.push((user, since));
    }
    // The second message finds every recipient's rules cached: on PostgreSQL its sender evaluates
    // it and its statement records that. The counts go on the same.
    let rounds = [
        ("lunch", "Captain and bob: lunch?", [("bob", (1, 1)), ("carol", (0, 0)), ("dave", (1, 1)), ("erin", (1, 0))]),
        ("again", "Captain and bob: now?", [("bob", (2, 2)), ("carol", (0, 0)), ("dave", (2, 2)), ("erin", (2, 0))]),
    ];
    for (txn, body, expected) in rounds {
        let event = send(&s, &alice, &room, txn, json!({"msgtype": "m.text", "body": body})).await;
        let mut seen = Vec::new();
        for (user, since) in &recipients {
            let sync = sync_until_event(&s, user, since, &room, &event).await;
            seen.push((user.localpart.clone(), counts(&sync, &room)));
        }
        assert_eq!(seen, expected.map(|(name, c)| (name.to_owned(), c)), "after {txn}");
    }
    let with_message = s.metric("axon_push_batches_with_message_total").await;
    match s.backend {
        Backend::Postgres => assert_eq!(with_message, 1, "the second message was not recorded with its evaluation"),
        Backend::Sqlite => assert_eq!(with_message, 0, "SQLite stores no message at its room's head"),
    }
    s.stop().await;
}

/// A message that is the next event to evaluate when it commits is evaluated from what its writer
/// holds, with no read (PostgreSQL, where the database proves nothing lies before it); one that is
/// not, because evaluation is held up, waits for a batch read from the database. Either way every
/// message counts once.
async fn writers_hand_over_what_to_evaluate(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.listen.metrics = Some("127.0.0.1:0".parse().unwrap())).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let mut since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    // One at a time, each delivered before the next is sent: each is next to evaluate.
    for i in 1..=3 {
        let event = s.send_text(&alice, &room, "one at a time").await;
        let sync = sync_until_event(&s, &bob, &since, &room, &event).await;
        assert_eq!(counts(&sync, &room), (i, 0));
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    // The first message finds bob's rules not yet cached (he was no recipient before): its writer
    // hands it over. The next ones are evaluated by their sender and recorded with them.
    let handed_over = s.metric("axon_push_batches_handed_over_total").await;
    let with_message = s.metric("axon_push_batches_with_message_total").await;
    match backend {
        Backend::Postgres => {
            assert!(handed_over >= 1, "no message was handed over to the evaluator");
            assert!(with_message >= 1, "no message was recorded with its evaluation");
        }
        Backend::Sqlite => {
            assert_eq!(handed_over, 0, "SQLite has no reservations to prove a message next");
            assert_eq!(with_message, 0, "SQLite stores no message at its room's head");
        }
    }
    // The room's creation was read: its state events are written under the room's lock.
    assert!(s.metric("axon_push_batches_read_total").await >= 1);

    // Held: the first message's batch fails to record (and its sender's record fails with it, so
    // the message is stored alone), and the second is not next.
    hold_push_evaluation(&s).await;
    s.send_text(&alice, &room, "held").await;
    let last = mention(&s, &alice, &room, "held-mention", &bob).await;
    release_push_evaluation(&s).await;
    let sync = sync_until_event(&s, &bob, &since, &room, &last).await;
    assert_eq!(counts(&sync, &room), (5, 1));
    s.stop().await;
}

/// A sender evaluates its message with the rules the evaluator cached; a recipient's rule changed
/// since must win. The message's statement then records nothing of it, and the evaluator, reading
/// the rules again, evaluates it in turn.
async fn senders_evaluation_yields_to_a_changed_rule(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.listen.metrics = Some("127.0.0.1:0".parse().unwrap())).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    for txn in ["one", "two"] {
        let sent = send(&s, &alice, &room, txn, text(txn)).await;
        sync_until_event(&s, &bob, &since, &room, &sent).await;
    }
    let recorded_before = s.metric("axon_push_batches_with_message_total").await;
    if backend == Backend::Postgres {
        assert!(recorded_before >= 1, "the second message was not recorded with its evaluation");
    }

    // Bob silences the room: the next messages must not count, though the cache says they would.
    let rule = json!({"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}]});
    let path = format!("/_matrix/client/v3/pushrules/global/override/{}", urlencode(&room));
    assert_eq!(s.put(&path, Some(&bob.token), rule).await.0, StatusCode::OK);
    for txn in ["three", "four"] {
        let sent = send(&s, &alice, &room, txn, text(txn)).await;
        let sync = sync_until_event(&s, &bob, &since, &room, &sent).await;
        assert_eq!(counts(&sync, &room), (2, 0), "a message after the rule counted ({txn})");
    }
    // "four" found bob's new rules cached by the evaluator, which took "three": it is recorded
    // with its (silent) evaluation again.
    if backend == Backend::Postgres {
        assert!(s.metric("axon_push_batches_with_message_total").await > recorded_before);
    }
    s.stop().await;
}
