//! `/sync`: shape, long-poll, exactly-once delivery under concurrent writers, filters.

use std::{collections::HashMap, time::Duration};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{
    assert_error, hold_push_evaluation, release_push_evaluation, timeline, urlencode, Backend, TestServer, User,
};

crate::backend_tests!(
    initial_and_incremental_shape,
    long_poll_wakes_and_times_out,
    shutdown_answers_a_waiting_long_poll,
    long_poll_wakes_when_held_back_events_are_evaluated,
    change_between_polls_answers_the_next_poll,
    exactly_once_with_concurrent_writers,
    timeline_limit_and_lazy_members,
    each_room_has_its_own_timeline_limit,
    gap_shows_changed_state_and_members,
    invites_and_leaves,
    syncs_woken_together_get_their_own_news,
    message_wakes_answer_from_the_remembered_start,
);

async fn initial_and_incremental_shape(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"name": "Chat", "preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    for n in 0..5 {
        s.send_text(&alice, &room, &format!("filler {n}")).await;
    }
    let sent = s.send_text(&alice, &room, "hello").await;

    let first = s.sync(&bob, None, 0, None).await;
    let joined = &first["rooms"]["join"][&room];
    let events = timeline(&first, &room);
    assert_eq!(events.last().unwrap()["event_id"], sent.as_str());
    assert_eq!(joined["timeline"]["limited"], true, "the room has more than 10 events");
    assert!(joined["timeline"]["prev_batch"].as_str().unwrap().starts_with('t'));
    let state_types: Vec<&str> =
        joined["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(state_types.contains(&"m.room.create"), "state at the start of the timeline: {state_types:?}");
    let timeline_ids: Vec<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    let in_both = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| timeline_ids.contains(&e["event_id"].as_str().unwrap()))
        .count();
    assert_eq!(in_both, 0, "no event in both state and timeline");
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    assert_eq!(joined["summary"]["m.heroes"], json!([alice.user_id]));
    let token = first["next_batch"].as_str().unwrap().to_owned();
    assert!(token.starts_with('s'));

    // Nothing new: an immediate incremental sync has no rooms and the same token.
    let idle = s.sync(&bob, Some(&token), 0, None).await;
    assert_eq!(idle["rooms"]["join"], json!({}));
    assert_eq!(idle["next_batch"], token.as_str());

    let second = s.send_text(&alice, &room, "second").await;
    let next = s.sync(&bob, Some(&token), 0, None).await;
    let events = timeline(&next, &room);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_id"], second.as_str());
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(next["rooms"]["join"][&room]["state"]["events"], json!([]));
    // No membership changed: the summary is left out, as the spec allows ("RoomSummary").
    assert_eq!(next["rooms"]["join"][&room]["summary"], json!({}));
    let next_token = next["next_batch"].as_str().unwrap().to_owned();
    let carol = s.register_fast("carol").await;
    assert_eq!(s.join(&carol, &room).await.0, StatusCode::OK);
    let joined_later = s.sync(&bob, Some(&next_token), 0, None).await;
    let summary = &joined_later["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 3, "{joined_later}");
    assert_eq!(summary["m.invited_member_count"], 0);
    assert_eq!(summary["m.heroes"].as_array().map(Vec::len), Some(2), "{summary}");

    // The sender's own device sees its transaction ID; others do not.
    let own = s.sync(&alice, Some(&token), 0, None).await;
    assert!(timeline(&own, &room)
        .iter()
        .any(|e| e["event_id"] == second.as_str() && e["unsigned"]["transaction_id"].is_string()));
    assert!(events[0]["unsigned"].get("transaction_id").is_none());
    let own_initial = s.sync(&alice, None, 0, None).await;
    assert!(timeline(&own_initial, &room)
        .iter()
        .any(|e| e["event_id"] == second.as_str() && e["unsigned"]["transaction_id"].is_string()));

    assert_error(&s.get("/_matrix/client/v3/sync?since=garbage", Some(&bob.token)).await, 400, "M_INVALID_PARAM");
    assert_error(&s.get("/_matrix/client/v3/sync", None).await, 401, "M_MISSING_TOKEN");
    s.stop().await;
}

/// Alice and Bob in a room, and Bob's sync token after it.
async fn alice_and_bob(backend: Backend) -> (TestServer, User, User, String, String) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"invite": [bob.user_id]})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let token = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    (s, alice, bob, room, token)
}

async fn long_poll_wakes_and_times_out(backend: Backend) {
    let (s, alice, bob, room, token) = alice_and_bob(backend).await;

    // A short timeout with no news answers with nothing new and the same token.
    let idle = s.sync(&bob, Some(&token), 300, None).await;
    assert_eq!(idle["next_batch"], token.as_str());
    assert_eq!(idle["rooms"]["join"], json!({}));

    // A long-poll of a minute is answered by the message, not by the timeout.
    let waiting = s.sync(&bob, Some(&token), 60_000, None);
    let send = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.send_text(&alice, &room, "wake up").await
    };
    let (woken, sent) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(waiting, send) })
        .await
        .expect("the long-poll was woken long before its timeout");
    assert_eq!(timeline(&woken, &room)[0]["event_id"], sent.as_str());
    s.stop().await;
}

/// Stopping the server answers a waiting long-poll at once (an empty sync), instead of keeping the
/// client, or the shutdown, waiting for its timeout.
async fn shutdown_answers_a_waiting_long_poll(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let since = s.sync(&alice, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let request = s.http.get(s.url(&format!("/_matrix/client/v3/sync?timeout=250000&since={since}")));
    let waiting = tokio::spawn(request.bearer_auth(&alice.token).send());
    // Time for the request to reach the server and start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::time::timeout(Duration::from_secs(60), s.stop()).await.expect("shutdown does not wait for the timeout");
    let response = waiting.await.unwrap().expect("the long-poll is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["next_batch"], since.as_str(), "nothing happened: {body}");
}

/// An event waits for its push evaluation before a sync shows it (with its counts). A long-poll
/// that gave up waiting for a stalled evaluator must still be woken when evaluation catches up, not
/// by its timeout: the event's own wake-up has come and gone.
async fn long_poll_wakes_when_held_back_events_are_evaluated(backend: Backend) {
    let (s, alice, bob, room, token) = alice_and_bob(backend).await;

    hold_push_evaluation(&s).await;
    // Polls as a client does until the event arrives; without presence, whose changes would
    // answer a long-poll for reasons of their own.
    let no_presence = json!({"presence": {"types": []}});
    let waiting = async {
        let mut since = token.clone();
        loop {
            let response = s.sync(&bob, Some(&since), 60_000, Some(&no_presence)).await;
            if !timeline(&response, &room).is_empty() {
                return response;
            }
            since = response["next_batch"].as_str().unwrap().to_owned();
        }
    };
    let send_then_release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = s.send_text(&alice, &room, "held back").await;
        // Longer than a sync waits for evaluation, twice (the sender's presence change wakes it
        // once more, with nothing to show): the long-poll has given up on this event.
        tokio::time::sleep(Duration::from_secs(5)).await;
        release_push_evaluation(&s).await;
        sent
    };
    let (woken, sent) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(waiting, send_then_release) })
            .await
            .expect("the long-poll was woken by the evaluation, long before its timeout");
    assert_eq!(timeline(&woken, &room)[0]["event_id"], sent.as_str());
    s.stop().await;
}

/// A long-poll from the token of the device's latest answer waits without reading first when
/// nothing woke the user since that answer was built. What happened between two polls must still
/// answer the next poll at once, and a poll that did wait must still be woken.
async fn change_between_polls_answers_the_next_poll(backend: Backend) {
    let (s, alice, bob, room, token) = alice_and_bob(backend).await;
    let no_presence = json!({"presence": {"types": []}});
    let answered = s.sync(&bob, Some(&token), 0, Some(&no_presence)).await;
    let since = answered["next_batch"].as_str().unwrap().to_owned();

    let between = s.send_text(&alice, &room, "between polls").await;
    let next = tokio::time::timeout(Duration::from_secs(20), s.sync(&bob, Some(&since), 60_000, Some(&no_presence)))
        .await
        .expect("the poll found the event sent before it, rather than waiting for its timeout");
    assert_eq!(timeline(&next, &room)[0]["event_id"], between.as_str());

    // Nothing happened since `next`: this poll waits, and the next message wakes it.
    let since = next["next_batch"].as_str().unwrap().to_owned();
    let waiting = s.sync(&bob, Some(&since), 60_000, Some(&no_presence));
    let send_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.send_text(&alice, &room, "while waiting").await
    };
    let (woken, sent) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(waiting, send_later) })
        .await
        .expect("the waiting poll was woken by the message");
    assert_eq!(timeline(&woken, &room)[0]["event_id"], sent.as_str());
    s.stop().await;
}

/// Eight writers over three rooms while a reader syncs in a loop: every event arrives exactly once,
/// in each room's order.
async fn exactly_once_with_concurrent_writers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let reader = s.register_fast("reader").await;
    let mut rooms = Vec::new();
    for i in 0..3 {
        rooms.push(s.create_room(&reader, json!({"preset": "public_chat", "name": format!("r{i}")})).await);
    }
    let mut writers = Vec::new();
    for i in 0..8 {
        let writer = s.register_fast(&format!("writer{i}")).await;
        for room in &rooms {
            assert_eq!(s.join(&writer, room).await.0, StatusCode::OK);
        }
        writers.push(writer);
    }
    let mut token = s.sync(&reader, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let per_writer = 15;
    let writing = futures::future::join_all(writers.iter().enumerate().map(|(w, writer)| {
        let (s, rooms) = (&s, &rooms);
        async move {
            let mut sent = Vec::new();
            for n in 0..per_writer {
                let room = &rooms[(w + n) % rooms.len()];
                sent.push((room.clone(), s.send_text(writer, room, &format!("{w}-{n}")).await));
            }
            sent
        }
    }));
    let reading = async {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        let total = writers.len() * per_writer;
        let mut count = 0;
        let filter = json!({"room": {"timeline": {"limit": 100}}});
        while count < total {
            let response =
                tokio::time::timeout(Duration::from_secs(30), s.sync(&reader, Some(&token), 10_000, Some(&filter)))
                    .await
                    .expect("sync answered");
            for room in &rooms {
                for event in timeline(&response, room) {
                    if event["type"] == "m.room.message" {
                        seen.entry(room.clone()).or_default().push(event["event_id"].as_str().unwrap().to_owned());
                        count += 1;
                    }
                }
                assert_ne!(response["rooms"]["join"][room]["timeline"]["limited"], true, "no gap with limit 100");
            }
            token = response["next_batch"].as_str().unwrap().to_owned();
        }
        seen
    };
    let (sent, seen) = tokio::join!(writing, reading);
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for (room, event) in sent.into_iter().flatten() {
        expected.entry(room).or_default().push(event);
    }
    for room in &rooms {
        let got = &seen[room];
        let unique: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "no event twice in {room}");
        let mut want = expected[room].clone();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want, "every event of {room} once");
        // Delivery order is the room's order.
        let history: Vec<String> = s
            .all_messages(&reader, room, 100)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, &history);
    }
    // Caught up: nothing more arrives.
    let after = s.sync(&reader, Some(&token), 0, None).await;
    assert_eq!(after["rooms"]["join"], json!({}));
    s.stop().await;
}

async fn timeline_limit_and_lazy_members(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let carol = s.register_fast("carol").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    for user in [&bob, &carol] {
        assert_eq!(s.join(user, &room).await.0, StatusCode::OK);
    }
    for n in 0..6 {
        s.send_text(&bob, &room, &format!("b{n}")).await;
    }
    let filter = json!({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": true}}});
    let response = s.sync(&carol, None, 0, Some(&filter)).await;
    let events = timeline(&response, &room);
    assert_eq!(events.iter().map(|e| e["content"]["body"].as_str().unwrap()).collect::<Vec<_>>(), ["b3", "b4", "b5"]);
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    let members: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&bob.user_id.as_str()) && members.contains(&carol.user_id.as_str()), "{members:?}");
    assert!(!members.contains(&alice.user_id.as_str()), "alice sent nothing in the timeline: {members:?}");

    // prev_batch continues with /messages exactly before the timeline.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (_, older) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3&from={prev}"), Some(&carol.token)).await;
    let bodies: Vec<&str> =
        older["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["b2", "b1", "b0"]);

    // A stored filter works the same.
    let (status, created) =
        s.post(&format!("/_matrix/client/v3/user/{}/filter", carol.user_id), Some(&carol.token), filter.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().unwrap();
    let (_, stored) =
        s.get(&format!("/_matrix/client/v3/user/{}/filter/{id}", carol.user_id), Some(&carol.token)).await;
    assert_eq!(stored["room"]["timeline"]["limit"], 3);
    let by_id = s.get(&format!("/_matrix/client/v3/sync?filter={id}"), Some(&carol.token)).await.1;
    assert_eq!(timeline(&by_id, &room).len(), 3);
    // Again, from the process's parsed copy; it is carol's alone.
    let again = s.get(&format!("/_matrix/client/v3/sync?filter={id}"), Some(&carol.token)).await.1;
    assert_eq!(timeline(&again, &room).len(), 3);
    assert_error(&s.get(&format!("/_matrix/client/v3/sync?filter={id}"), Some(&bob.token)).await, 404, "M_NOT_FOUND");
    assert_error(&s.get("/_matrix/client/v3/sync?filter=abc", Some(&carol.token)).await, 400, "M_INVALID_PARAM");
    assert_error(
        &s.get(&format!("/_matrix/client/v3/user/{}/filter/{id}", carol.user_id), Some(&bob.token)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/user/{}/filter/999", carol.user_id), Some(&carol.token)).await,
        404,
        "M_NOT_FOUND",
    );
    s.stop().await;
}

/// The timelines of all rooms are read at once: each room keeps its own newest `limit` events,
/// from the start for a fresh sync and after the token for an incremental one.
async fn each_room_has_its_own_timeline_limit(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let mut rooms = Vec::new();
    for (name, count) in [("a", 5), ("b", 1), ("c", 12)] {
        let room = s.create_room(&alice, json!({})).await;
        for n in 0..count {
            s.send_text(&alice, &room, &format!("{name}{n}")).await;
        }
        rooms.push(room);
    }
    let bodies = |response: &Value, room: &str| -> Vec<String> {
        timeline(response, room).iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
    };
    let filter = json!({"room": {"timeline": {"limit": 3}}});
    let first = s.sync(&alice, None, 0, Some(&filter)).await;
    assert_eq!(bodies(&first, &rooms[0]), ["a2", "a3", "a4"]);
    assert_eq!(bodies(&first, &rooms[1]), ["b0"]);
    assert_eq!(timeline(&first, &rooms[1]).len(), 3, "room b shows its newest 3 events, state included");
    assert_eq!(bodies(&first, &rooms[2]), ["c9", "c10", "c11"]);
    for room in [&rooms[0], &rooms[2]] {
        assert_eq!(first["rooms"]["join"][room]["timeline"]["limited"], true);
    }

    let since = first["next_batch"].as_str().unwrap();
    for n in 5..7 {
        s.send_text(&alice, &rooms[0], &format!("a{n}")).await;
    }
    for n in 12..16 {
        s.send_text(&alice, &rooms[2], &format!("c{n}")).await;
    }
    let next = s.sync(&alice, Some(since), 0, Some(&filter)).await;
    assert_eq!(bodies(&next, &rooms[0]), ["a5", "a6"]);
    assert_eq!(next["rooms"]["join"][&rooms[0]]["timeline"]["limited"], false);
    assert_eq!(bodies(&next, &rooms[2]), ["c13", "c14", "c15"]);
    assert_eq!(next["rooms"]["join"][&rooms[2]]["timeline"]["limited"], true);
    assert!(next["rooms"]["join"].get(&rooms[1]).is_none(), "room b has nothing new: {next}");
    s.stop().await;
}

/// An incremental sync over a gap (more new events than the limit) shows the state that changed
/// before its timeline, and the members of every room whose memberships changed.
async fn gap_shows_changed_state_and_members(backend: Backend) {
    let (s, alice, bob, room, token) = alice_and_bob(backend).await;
    let quiet = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &quiet).await.0, StatusCode::OK);
    let token = s.sync(&bob, Some(&token), 0, None).await["next_batch"].as_str().unwrap().to_owned();

    let carol = s.register_fast("carol").await;
    assert_eq!(s.invite(&alice, &room, &carol.user_id).await.0, StatusCode::OK);
    assert_eq!(s.join(&carol, &room).await.0, StatusCode::OK);
    assert_eq!(s.join(&carol, &quiet).await.0, StatusCode::OK);
    for n in 0..5 {
        s.send_text(&alice, &room, &format!("m{n}")).await;
    }

    let filter = json!({"room": {"timeline": {"limit": 3}}});
    let next = s.sync(&bob, Some(&token), 0, Some(&filter)).await;
    let joined = &next["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{next}");
    let state_members: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(state_members, [carol.user_id.as_str()], "the gap's state: {joined}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 3, "{joined}");
    // No gap in the quiet room: Carol's join is in its timeline, and its summary counts her.
    let quiet_room = &next["rooms"]["join"][&quiet];
    assert_eq!(quiet_room["timeline"]["limited"], false, "{quiet_room}");
    assert_eq!(quiet_room["summary"]["m.joined_member_count"], 3, "{quiet_room}");
    s.stop().await;
}

async fn invites_and_leaves(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let token = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let room = s.create_room(&alice, json!({"name": "Secret plans", "invite": [bob.user_id], "is_direct": true})).await;
    let invited = s.sync(&bob, Some(&token), 5_000, None).await;
    let stripped = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap().clone();
    assert!(stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret plans"));
    let own = stripped.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()).unwrap();
    assert_eq!(
        (own["content"]["membership"].as_str(), own["content"]["is_direct"].as_bool()),
        (Some("invite"), Some(true))
    );
    assert!(stripped.iter().all(|e| e.get("event_id").is_none()), "stripped state has no event IDs");
    let inviter = stripped.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str());
    assert_eq!(inviter.expect("the inviter's member event")["content"]["displayname"], "alice");

    let token = invited["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let joined = s.sync(&bob, Some(&token), 5_000, None).await;
    // A new join brings the room from its start: its state in `state` or in the timeline.
    let room_json = &joined["rooms"]["join"][&room];
    let everything: Vec<&Value> = room_json["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(room_json["timeline"]["events"].as_array().unwrap())
        .collect();
    assert!(everything.iter().any(|e| e["type"] == "m.room.create"), "{room_json}");

    let token = joined["next_batch"].as_str().unwrap().to_owned();
    let kick = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({"user_id": bob.user_id, "reason": "bye"}),
        )
        .await;
    assert_eq!(kick.0, StatusCode::OK);
    let left = s.sync(&bob, Some(&token), 5_000, None).await;
    let leave_events = left["rooms"]["leave"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let last = leave_events.last().unwrap();
    assert_eq!(
        (last["content"]["membership"].as_str(), last["content"]["reason"].as_str()),
        (Some("leave"), Some("bye"))
    );
    // After leaving, the room's new messages are not delivered.
    let token = left["next_batch"].as_str().unwrap().to_owned();
    s.send_text(&alice, &room, "bob is gone").await;
    let after = s.sync(&bob, Some(&token), 300, None).await;
    assert_eq!(after["rooms"]["join"], json!({}));
    assert_eq!(after["rooms"]["leave"], json!({}));
    s.stop().await;
}

/// Syncs that wake together share their reads on PostgreSQL (one statement for all of them): each
/// must still get exactly its own to-device messages, its own unread counts, and every event once.
async fn syncs_woken_together_get_their_own_news(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut members = Vec::new();
    for i in 0..16 {
        let member = s.register_fast(&format!("member{i}")).await;
        assert_eq!(s.join(&member, &room).await.0, StatusCode::OK);
        members.push(member);
    }
    let next = |sync: &Value| sync["next_batch"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for member in &members {
        tokens.push(next(&s.sync(member, None, 0, None).await));
    }
    let first = s.send_text(&alice, &room, "first").await;
    // Every other member has read it, so their counts differ.
    for member in members.iter().step_by(2) {
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", urlencode(&first));
        assert_eq!(s.post(&path, Some(&member.token), json!({})).await.0, StatusCode::OK);
    }
    let messages: serde_json::Map<String, Value> =
        members.iter().enumerate().map(|(i, m)| (m.user_id.clone(), json!({m.device_id.clone(): {"n": i}}))).collect();
    let path = "/_matrix/client/v3/sendToDevice/m.room_key_request/batch1";
    assert_eq!(s.put(path, Some(&alice.token), json!({"messages": messages})).await.0, StatusCode::OK);

    let syncs = members.iter().zip(&tokens).map(|(member, token)| s.sync(member, Some(token), 10_000, None));
    let answers = futures_util::future::join_all(syncs).await;
    for (i, answer) in answers.iter().enumerate() {
        let events: Vec<Value> = timeline(answer, &room).iter().map(|e| e["event_id"].clone()).collect();
        assert_eq!(events, [json!(first)], "member {i}: {answer}");
        assert_eq!(answer["to_device"]["events"].as_array().map(Vec::len), Some(1), "member {i}: {answer}");
        assert_eq!(answer["to_device"]["events"][0]["content"]["n"], i, "member {i}: {answer}");
        let unread = &answer["rooms"]["join"][&room]["unread_notifications"]["notification_count"];
        assert_eq!(*unread, if i % 2 == 0 { 0 } else { 1 }, "member {i}: {answer}");
    }
    let acknowledging: Vec<String> = answers.iter().map(next).collect();

    // All of them waiting when the next message comes: they wake at the same moment. (A sync
    // woken by something else, such as presence, goes on from its new token.)
    let until_news = |member: &User, token: String| {
        let (s, member, room) = (&s, member.clone(), room.as_str());
        async move {
            let (mut token, mut to_device) = (token, Vec::new());
            loop {
                let answer = s.sync(&member, Some(&token), 30_000, None).await;
                to_device.extend(answer["to_device"]["events"].as_array().cloned().unwrap_or_default());
                token = next(&answer);
                if !timeline(&answer, room).is_empty() {
                    return (answer, to_device);
                }
            }
        }
    };
    let syncs = members.iter().zip(&acknowledging).map(|(member, token)| until_news(member, token.clone()));
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.send_text(&alice, &room, "second").await
    };
    let (answers, second) = tokio::join!(futures_util::future::join_all(syncs), send);
    for (i, (answer, to_device)) in answers.iter().enumerate() {
        let events: Vec<Value> = timeline(answer, &room).iter().map(|e| e["event_id"].clone()).collect();
        assert_eq!(events, [json!(second)], "member {i}: {answer}");
        assert!(to_device.is_empty(), "member {i}: acknowledged, yet {to_device:?}");
        let unread = &answer["rooms"]["join"][&room]["unread_notifications"]["notification_count"];
        assert_eq!(*unread, if i % 2 == 0 { 1 } else { 2 }, "member {i}: {answer}");
    }
    // The acknowledgement deleted each device's message: the old token no longer brings it back.
    for (i, (member, token)) in members.iter().zip(&tokens).enumerate() {
        let again = s.sync(member, Some(token), 0, None).await;
        assert_eq!(again["to_device"]["events"], json!([]), "member {i}: {again}");
    }
    s.stop().await;
}

/// A long-poll woken by new messages alone takes its memberships and key counts from the device's
/// previous answer instead of reading them again: what changes them (keys uploaded or claimed,
/// a new room) must wake the user as a change, so that the next answer reads them afresh.
async fn message_wakes_answer_from_the_remembered_start(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.listen.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.presence.enabled = false;
    })
    .await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let upload =
        |keys: Value| s.post("/_matrix/client/v3/keys/upload", Some(&bob.token), json!({"one_time_keys": keys}));
    let keys = |prefix: &str, n: usize| -> Value {
        (0..n).map(|i| (format!("signed_curve25519:{prefix}{i}"), json!({"key": format!("{prefix}{i}")}))).collect()
    };
    assert_eq!(upload(keys("a", 3)).await.0, StatusCode::OK);
    // With PostgreSQL, the bus wakes every sync once its announcement went unanswered (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    // Bob waits; Alice's message wakes him. He answers from memory unless something else changed.
    let remembered = || s.metric("axon_sync_starts_remembered_total");
    let poll_woken_by_message = |since: String, text: &'static str, from_memory: bool| {
        let (s, alice, bob, room) = (&s, &alice, &bob, &room);
        async move {
            let before = remembered().await;
            let waiting = s.sync(bob, Some(&since), 30_000, None);
            let send = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.send_text(alice, room, text).await
            };
            let (answer, sent) = tokio::join!(waiting, send);
            assert_eq!(timeline(&answer, room).last().unwrap()["event_id"], sent.as_str(), "{answer}");
            assert_eq!(remembered().await, before + i64::from(from_memory), "answered from memory: {from_memory}");
            answer
        }
    };
    // Several times over: a sync woken as the message commits must find it (its bound is taken from
    // memory, which must hold the commit before the wake).
    let mut answers = Vec::new();
    for _ in 0..10 {
        let answer = poll_woken_by_message(since, "message", true).await;
        since = answer["next_batch"].as_str().unwrap().to_owned();
        answers.push(answer);
    }
    // Each message is one more unread notification.
    let unread: Vec<i64> = answers
        .iter()
        .map(|a| a["rooms"]["join"][&room]["unread_notifications"]["notification_count"].as_i64().unwrap())
        .collect();
    assert_eq!(unread, (1..=10).collect::<Vec<i64>>(), "{answers:?}");
    assert!(answers.iter().all(|a| a["device_one_time_keys_count"]["signed_curve25519"] == 3));

    // A claim takes one of Bob's keys; an upload adds two: the next answers read and count them.
    let claim = json!({"one_time_keys": {&bob.user_id: {&bob.device_id: "signed_curve25519"}}});
    let (status, claimed) = s.post("/_matrix/client/v3/keys/claim", Some(&alice.token), claim).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let answer = poll_woken_by_message(since, "after the claim", false).await;
    assert_eq!(answer["device_one_time_keys_count"]["signed_curve25519"], 2, "{answer}");
    since = answer["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(upload(keys("b", 2)).await.0, StatusCode::OK);
    let answer = poll_woken_by_message(since, "after the upload", false).await;
    assert_eq!(answer["device_one_time_keys_count"]["signed_curve25519"], 4, "{answer}");
    since = answer["next_batch"].as_str().unwrap().to_owned();

    // Joining a room between polls: the next answer reads it (and its messages are news after).
    let other = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &other).await.0, StatusCode::OK);
    let before = remembered().await;
    let joined = s.sync(&bob, Some(&since), 0, None).await;
    assert!(joined["rooms"]["join"][&other]["timeline"]["events"].is_array(), "{joined}");
    assert_eq!(remembered().await, before, "a membership change makes the sync read its start");
    since = joined["next_batch"].as_str().unwrap().to_owned();
    let waiting = s.sync(&bob, Some(&since), 30_000, None);
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.send_text(&alice, &other, "in the new room").await
    };
    let (answer, sent) = tokio::join!(waiting, send);
    assert_eq!(timeline(&answer, &other).last().unwrap()["event_id"], sent.as_str(), "{answer}");
    assert_eq!(remembered().await, before + 1);
    assert_eq!(s.metric("axon_sync_starts_outdated_total").await, 0);
    since = answer["next_batch"].as_str().unwrap().to_owned();

    // Forgetting a room wakes nobody, and changes the memberships: the read that follows the next
    // message finds the newest membership change gone, and the answer is built again, in full.
    let leave = format!("/_matrix/client/v3/rooms/{other}/leave");
    assert_eq!(s.post(&leave, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let left = s.sync(&bob, Some(&since), 0, None).await;
    assert!(left["rooms"]["leave"][&other].is_object(), "{left}");
    since = left["next_batch"].as_str().unwrap().to_owned();
    let forget = format!("/_matrix/client/v3/rooms/{other}/forget");
    assert_eq!(s.post(&forget, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let answer = poll_woken_by_message(since, "after forgetting", true).await;
    assert!(answer["rooms"]["leave"].as_object().unwrap().is_empty(), "{answer}");
    assert_eq!(s.metric("axon_sync_starts_outdated_total").await, 1);
    s.stop().await;
}
