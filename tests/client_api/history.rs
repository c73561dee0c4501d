//! Ordering under concurrent writers, long histories, /context and member lists.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

use crate::common::{
    assert_error, forward_extremity_count, prev_events, timeline, urlencode, Backend, TestServer, User,
};

crate::backend_tests!(
    event_by_timestamp,
    concurrent_senders_one_room,
    concurrent_senders_many_rooms,
    a_failed_message_fails_alone,
    a_send_whose_client_hangs_up_completes,
    an_orphaned_reservation_is_dropped,
    ten_thousand_messages_reach_create,
    context_and_members_at,
    state_and_auth_chain_from_storage,
    forked_dag_is_resolved_and_merged,
    message_filters,
    end_is_omitted_at_the_room_start,
);

async fn concurrent_senders_one_room(backend: Backend) {
    let s = TestServer::start(backend).await;
    let owner = s.register_fast("owner").await;
    let room = s.create_room(&owner, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..50 {
        let user = s.register_fast(&format!("sender{i}")).await;
        assert_eq!(s.join(&user, &room).await.0, StatusCode::OK);
        senders.push(user);
    }
    // 50 clients at once, each sending 6 messages one after another.
    let sent: Vec<Vec<String>> = futures::future::join_all(senders.iter().map(|user| {
        let (s, room) = (&s, &room);
        async move {
            let mut ids = Vec::new();
            for n in 0..6 {
                ids.push(s.send_text(user, room, &format!("{} #{n}", user.localpart)).await);
            }
            ids
        }
    }))
    .await;

    let seen_by_owner = s.all_messages(&owner, &room, 37).await;
    let seen_by_sender = s.all_messages(&senders[7], &room, 100).await;
    let ids = |events: &[serde_json::Value]| {
        events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&seen_by_owner), ids(&seen_by_sender), "every reader sees one and the same order");
    let texts: Vec<_> = seen_by_owner.iter().filter(|e| e["type"] == "m.room.message").collect();
    assert_eq!(texts.len(), 300, "no event lost or duplicated");
    let unique: std::collections::HashSet<_> = ids(&seen_by_owner).into_iter().collect();
    assert_eq!(unique.len(), seen_by_owner.len(), "no duplicates");
    for (user, user_ids) in senders.iter().zip(&sent) {
        let order: Vec<_> = texts
            .iter()
            .filter(|e| e["sender"] == user.user_id.as_str())
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            order,
            user_ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "each sender's messages in sending order"
        );
    }
    assert_eq!(seen_by_owner[0]["type"], "m.room.create");

    // The DAG is a single line: one forward extremity, each event pointing at the one before.
    let pool = s.db.pool().await;
    assert_eq!(forward_extremity_count(&pool, &room).await, 1);
    let all = ids(&seen_by_owner);
    for pair in all.windows(2) {
        assert_eq!(prev_events(&pool, &pair[1]).await, vec![pair[0].clone()]);
    }
    pool.close().await;
    s.stop().await;
}

/// `count` users, each in a room of its own that it created.
async fn writers_in_rooms_of_their_own(s: &TestServer, count: usize) -> Vec<(User, String)> {
    let mut rooms = Vec::new();
    for i in 0..count {
        let user = s.register_fast(&format!("writer{i}")).await;
        let room = s.create_room(&user, json!({})).await;
        rooms.push((user, room));
    }
    rooms
}

/// Event positions reserved and not yet stored or given back (PostgreSQL).
async fn positions_in_flight(pool: &sqlx::AnyPool) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM event_positions_in_flight").fetch_one(pool).await.unwrap().get(0)
}

/// Senders in many rooms at once: on PostgreSQL their messages are stored by shared statements
/// (a batch holds at most one message per room). Each room keeps its own complete, ordered, linear
/// DAG; a retried transaction finds its event; a thread reply marks its root within a batch.
async fn concurrent_senders_many_rooms(backend: Backend) {
    let s = TestServer::start(backend).await;
    let rooms = writers_in_rooms_of_their_own(&s, 12).await;
    let sent: Vec<(Vec<String>, String)> = futures::future::join_all(rooms.iter().map(|(user, room)| {
        let s = &s;
        async move {
            let mut ids = Vec::new();
            for n in 0..8 {
                let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
                let mut body = json!({"msgtype": "m.text", "body": format!("{} #{n}", user.localpart)});
                if n == 5 {
                    body["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": ids[0]});
                }
                // The same transaction twice at once: one event.
                let (first, again) =
                    tokio::join!(s.put(&path, Some(&user.token), body.clone()), s.put(&path, Some(&user.token), body));
                assert_eq!(first.0, StatusCode::OK, "send: {}", first.1);
                assert_eq!(first.1["event_id"], again.1["event_id"], "a retried transaction finds its event");
                ids.push(first.1["event_id"].as_str().unwrap().to_owned());
            }
            let (status, root) =
                s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[0]), Some(&user.token)).await;
            assert_eq!(status, StatusCode::OK, "{root}");
            (
                ids,
                root["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        }
    }))
    .await;

    let pool = s.db.pool().await;
    for ((user, room), (ids, thread_latest)) in rooms.iter().zip(&sent) {
        assert_eq!(thread_latest, &ids[5], "the thread reply marked its root");
        let events = s.all_messages(user, room, 50).await;
        let all: Vec<String> = events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
        let texts: Vec<&String> =
            events.iter().zip(&all).filter(|(e, _)| e["type"] == "m.room.message").map(|(_, id)| id).collect();
        assert_eq!(texts, ids.iter().collect::<Vec<_>>(), "the room holds its own messages, once, in order");
        assert_eq!(forward_extremity_count(&pool, room).await, 1);
        for pair in all.windows(2) {
            assert_eq!(prev_events(&pool, &pair[1]).await, vec![pair[0].clone()]);
        }
    }
    if backend == Backend::Postgres {
        assert_eq!(positions_in_flight(&pool).await, 0, "every reserved position was stored");
    }
    pool.close().await;
    s.stop().await;
}

/// A message the database refuses (here by a trigger) fails alone: the messages of other rooms
/// stored by the same statement are stored all the same, and their rooms go on.
async fn a_failed_message_fails_alone(backend: Backend) {
    let s = TestServer::start(backend).await;
    let pool = s.db.pool().await;
    let poison = match backend {
        Backend::Postgres => vec![
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'poison'; END $$",
            "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW WHEN (NEW.pdu LIKE '%poison%') \
             EXECUTE FUNCTION refuse_poison()",
        ],
        Backend::Sqlite => vec![
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.pdu LIKE '%poison%' \
             BEGIN SELECT RAISE(ABORT, 'poison'); END",
        ],
    };
    for sql in poison {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let rooms = writers_in_rooms_of_their_own(&s, 8).await;
    let sent: Vec<Vec<Option<String>>> =
        futures::future::join_all(rooms.iter().enumerate().map(|(i, (user, room))| {
            let s = &s;
            async move {
                let mut ids = Vec::new();
                for n in 0..4 {
                    let body = if i == 3 && n == 1 { "poison".to_owned() } else { format!("{i} #{n}") };
                    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
                    let (status, response) =
                        s.put(&path, Some(&user.token), json!({"msgtype": "m.text", "body": body})).await;
                    if body == "poison" {
                        assert!(status.is_server_error(), "the refused message fails: {status} {response}");
                        assert!(response["errcode"].is_string(), "{response}");
                        ids.push(None);
                    } else {
                        assert_eq!(status, StatusCode::OK, "the others are stored: {response}");
                        ids.push(Some(response["event_id"].as_str().unwrap().to_owned()));
                    }
                }
                ids
            }
        }))
        .await;
    for ((user, room), ids) in rooms.iter().zip(&sent) {
        let events = s.all_messages(user, room, 50).await;
        let texts: Vec<&str> =
            events.iter().filter(|e| e["type"] == "m.room.message").map(|e| e["event_id"].as_str().unwrap()).collect();
        assert_eq!(texts, ids.iter().flatten().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(forward_extremity_count(&pool, room).await, 1);
    }
    if backend == Backend::Postgres {
        assert_eq!(positions_in_flight(&pool).await, 0, "the refused message gave its position back");
    }
    pool.close().await;
    s.stop().await;
}

/// Without presence, a sync response without the room's timeline is a long-poll that timed out.
fn without_presence() -> serde_json::Value {
    json!({"presence": {"types": []}})
}

/// Alice's room with bob in it, and bob's sync token.
async fn a_member_waiting(s: &TestServer) -> (User, User, String, String) {
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let since = s.sync(&bob, None, 0, Some(&without_presence())).await["next_batch"].as_str().unwrap().to_owned();
    (alice, bob, room, since)
}

/// Long-polls (20 s each) as `user` from `since` until `event_id` comes: every poll must bring
/// some of the room's events, not end at its timeout. (`push::sync_until_event` lets polls time
/// out, so a delivery held back for half a minute would pass it.)
async fn long_poll_until(s: &TestServer, user: &User, room: &str, mut since: String, event_id: &str) {
    let mut seen = Vec::new();
    while !seen.iter().any(|e| e == event_id) {
        let sync = s.sync(user, Some(&since), 20_000, Some(&without_presence())).await;
        let events = timeline(&sync, room);
        assert!(!events.is_empty(), "the long-poll timed out without {event_id}: {sync}");
        seen.extend(events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
}

/// A client that hangs up while its message is being stored (a phone losing its network) does not
/// stop the write halfway. On PostgreSQL a send dropped after reserving its position and before
/// storing it held back every sync until the reservation went stale (30 s or more); a send dropped
/// after storing would not wake the room's members. Retries of the same transactions then find
/// one event each.
async fn a_send_whose_client_hangs_up_completes(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start(backend).await;
    let (alice, bob, room, since) = a_member_waiting(&s).await;

    let address = s.base.trim_start_matches("http://").to_owned();
    for n in 0..10 {
        let body = json!({"msgtype": "m.text", "body": format!("hung up {n}")}).to_string();
        let request = format!(
            "PUT /_matrix/client/v3/rooms/{}/send/m.room.message/hang{n} HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            urlencode(&room),
            alice.token,
            body.len()
        );
        let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        // Gone without reading the answer.
        drop(client);
    }
    let after = s.send_text(&alice, &room, "after the hang-ups").await;
    long_poll_until(&s, &bob, &room, since, &after).await;

    // The apps retry what got no answer: each transaction has its one event.
    for n in 0..10 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/hang{n}");
        let body = json!({"msgtype": "m.text", "body": format!("hung up {n}")});
        let (status, response) = s.put(&path, Some(&alice.token), body).await;
        assert_eq!(status, StatusCode::OK, "{response}");
    }
    let events = s.all_messages(&alice, &room, 50).await;
    for n in 0..10 {
        let body = format!("hung up {n}");
        let copies = events.iter().filter(|e| e["content"]["body"] == body.as_str()).count();
        assert_eq!(copies, 1, "{body} is stored once");
    }
    if backend == Backend::Postgres {
        let pool = s.db.pool().await;
        assert_eq!(positions_in_flight(&pool).await, 0, "no reservation is left behind");
        pool.close().await;
    }
    s.stop().await;
}

/// A writer that dies between reserving its event's position and storing the event (a crash)
/// leaves a reservation that holds back every process's syncs (PostgreSQL). Housekeeping drops it
/// once it is 30 s old, within seconds: a long-poll gets the messages that followed it.
async fn an_orphaned_reservation_is_dropped(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (alice, bob, room, since) = a_member_waiting(&s).await;
    let pool = s.db.pool().await;
    if backend == Backend::Postgres {
        let died =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 31_000;
        sqlx::query(
            "INSERT INTO event_positions_in_flight (position, created_ts) \
             SELECT nextval(pg_get_serial_sequence('events', 'stream_ordering')), $1",
        )
        .bind(died)
        .execute(&pool)
        .await
        .unwrap();
    }
    let after = s.send_text(&alice, &room, "after the crash").await;
    long_poll_until(&s, &bob, &room, since, &after).await;
    if backend == Backend::Postgres {
        assert_eq!(positions_in_flight(&pool).await, 0);
    }
    pool.close().await;
    s.stop().await;
}

async fn ten_thousand_messages_reach_create(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({"name": "long history"})).await;
    let total = 10_000;
    futures::stream::iter(0..total)
        .map(|n| {
            let (s, alice, room) = (&s, &alice, &room);
            async move {
                let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m{n}");
                let (status, body) =
                    s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": format!("{n}")})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let events = s.all_messages(&alice, &room, 100).await;
    assert_eq!(events[0]["type"], "m.room.create", "pagination reaches the create event");
    let bodies: std::collections::HashSet<String> =
        events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect();
    assert_eq!(bodies.len(), total, "every message seen exactly once");
    assert_eq!(events.iter().filter(|e| e["type"] == "m.room.message").count(), total);
    let ts: Vec<i64> = events.iter().map(|e| e["origin_server_ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "in order");
    s.stop().await;
}

async fn context_and_members_at(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat", "name": "first name"})).await;
    let before: Vec<String> = {
        let mut v = Vec::new();
        for n in 0..5 {
            v.push(s.send_text(&alice, &room, &format!("before {n}")).await);
        }
        v
    };
    let (_, page) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"), Some(&alice.token)).await;
    let token_before_bob = page["start"].as_str().unwrap().to_owned();
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&alice.token),
        json!({"name": "second name"}),
    )
    .await;
    for n in 0..5 {
        s.send_text(&bob, &room, &format!("after {n}")).await;
    }

    let (status, context) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", before[2]), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["event"]["event_id"], before[2].as_str());
    let bodies = |list: &serde_json::Value| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(bodies(&context["events_before"]), ["before 1", "before 0"]);
    assert_eq!(bodies(&context["events_after"]), ["before 3", "before 4"]);
    // The state at the event, from its snapshot: the name then, not now.
    let name = context["state"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], "first name");
    // Paginating on from the context's tokens continues where it ended.
    let (_, older) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&from={}",
                context["start"].as_str().unwrap()
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(older["chunk"][0]["content"]["body"].as_str().map(|_| ()), None, "no message older than 'before 0'");
    let (_, newer) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1&from={}",
                context["end"].as_str().unwrap()
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(newer["chunk"][0]["content"]["membership"], "join", "bob's join follows 'before 4'");

    let members = |query: String| {
        let s = &s;
        let token = bob.token.clone();
        let room = room.clone();
        async move {
            let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/members{query}"), Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let mut users: Vec<String> =
                body["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap().to_owned()).collect();
            users.sort();
            users
        }
    };
    assert_eq!(members(String::new()).await, [alice.user_id.clone(), bob.user_id.clone()]);
    assert_eq!(members(format!("?at={token_before_bob}")).await, vec![alice.user_id.clone()]);
    assert_eq!(members("?membership=join".into()).await.len(), 2);
    assert!(members("?not_membership=join".into()).await.is_empty());
    s.stop().await;
}

/// State storage (snapshots and auth edges) grows with state changes, not with messages; the auth
/// chain of any event comes from storage in one query.
async fn state_and_auth_chain_from_storage(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({"name": "n0"})).await;
    let pool = s.db.pool().await;
    let count = |sql: &'static str| {
        let (pool, room) = (&pool, &room);
        async move { sqlx::query(sql).bind(room).fetch_one(pool).await.unwrap().get::<i64, _>(0) }
    };
    let entries_sql = "SELECT COUNT(*) FROM state_snapshot_entries e JOIN state_snapshots s ON s.snapshot_id = e.snapshot_id WHERE s.room_id = $1";
    let snapshots_sql = "SELECT COUNT(*) FROM state_snapshots WHERE room_id = $1";
    let auth_edges_sql =
        "SELECT COUNT(*) FROM event_auth_edges a JOIN events e ON e.event_id = a.event_id WHERE e.room_id = $1";
    let (entries, snapshots) = (count(entries_sql).await, count(snapshots_sql).await);
    let auth_edges = count(auth_edges_sql).await;
    let mut last = String::new();
    for n in 0..200 {
        last = s.send_text(&alice, &room, &format!("m{n}")).await;
    }
    assert_eq!(
        (count(entries_sql).await, count(snapshots_sql).await),
        (entries, snapshots),
        "messages add no state rows"
    );
    assert_eq!(count(auth_edges_sql).await, auth_edges, "messages add no auth edges");
    for n in 1..=40 {
        s.put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice.token),
            json!({"name": format!("n{n}")}),
        )
        .await;
    }
    let grown = count(entries_sql).await - entries;
    // 40 changes: one delta row each, plus one full snapshot (room state ≈ 8 entries) per 32 deltas.
    assert!((40..=40 + 2 * 10).contains(&grown), "state rows grow with state changes: {grown}");
    assert_eq!(count(snapshots_sql).await - snapshots, 40);
    assert!(count(auth_edges_sql).await - auth_edges >= 40 * 3, "each state event has its auth edges");

    let storage = axon::storage::Storage::open(&s.db.url, 2).await.unwrap();
    let chain = storage.auth_chain(&[last.as_str()]).await.unwrap();
    let types: std::collections::HashSet<String> = storage
        .events(&chain.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    for expected in ["m.room.create", "m.room.member", "m.room.power_levels"] {
        assert!(types.contains(expected), "{expected} in the auth chain: {types:?}");
    }
    assert!(!chain.contains(&last), "an event is not in its own auth chain");
    storage.close().await;
    pool.close().await;
    s.stop().await;
}

/// Two forward extremities (as concurrent events from other servers leave them) are resolved with
/// state resolution v2, and the next event merges them. The fork is made by adding an older event
/// back as an extremity while the server is down: its branch still has bob joined and the old name.
async fn forked_dag_is_resolved_and_merged(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat", "name": "before"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let old_branch = s.send_text(&bob, &room, "bob was here").await;
    let (_, old_name) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/?format=event"), Some(&alice.token)).await;
    let (_, bob_joined) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}?format=event", bob.user_id),
            Some(&alice.token),
        )
        .await;
    s.put(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&alice.token), json!({"name": "after"}))
        .await;
    let ban = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/ban"), Some(&alice.token), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(ban.0, StatusCode::OK);

    let pool = s.db.pool().await;
    sqlx::query("INSERT INTO room_forward_extremities (room_id, event_id) VALUES ($1, $2)")
        .bind(&room)
        .bind(&old_branch)
        .execute(&pool)
        .await
        .unwrap();
    // The stored current state is made to say the old branch's state: only a real resolution of
    // the two branches' snapshots brings back the ban and the new name.
    for (kind, key, event) in [("m.room.name", "", &old_name), ("m.room.member", bob.user_id.as_str(), &bob_joined)] {
        sqlx::query(
            "UPDATE room_current_state SET event_id = $1 WHERE room_id = $2 AND event_type = $3 AND state_key = $4",
        )
        .bind(event["event_id"].as_str().unwrap())
        .bind(&room)
        .bind(kind)
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    }
    let s = s.restart(|_| {}).await;

    // The resolved state keeps the ban and the new name: bob cannot send.
    let refused = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x"),
            Some(&bob.token),
            json!({"body": "sneaky"}),
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);
    let merge = s.send_text(&alice, &room, "merged").await;
    let prevs = prev_events(&pool, &merge).await;
    assert!(prevs.contains(&old_branch) && prevs.len() == 2, "the merge references both branches: {prevs:?}");
    assert_eq!(forward_extremity_count(&pool, &room).await, 1);
    let (_, name) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&alice.token)).await;
    assert_eq!(name["name"], "after");
    let (_, context) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/context/{merge}?limit=0"), Some(&alice.token)).await;
    let bob_member =
        context["state"].as_array().unwrap().iter().find(|e| e["state_key"] == bob.user_id.as_str()).unwrap();
    assert_eq!(
        bob_member["content"]["membership"], "ban",
        "the merged event's state snapshot holds the resolved state"
    );
    // Still one line from here on, and the room keeps working after another restart.
    let s = s.restart(|_| {}).await;
    s.send_text(&alice, &room, "after restart").await;
    pool.close().await;
    s.stop().await;
}

async fn message_filters(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    s.send_text(&alice, &room, "a1").await;
    s.send_text(&bob, &room, "b1").await;
    s.put(&format!("/_matrix/client/v3/rooms/{room}/send/org.example.custom/c1"), Some(&alice.token), json!({"x": 1}))
        .await;
    let get = |filter: serde_json::Value| {
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50&filter={}",
            urlencode(&filter.to_string())
        );
        let (s, token) = (&s, bob.token.clone());
        async move {
            let (status, body) = s.get(&path, Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let kinds = |body: &serde_json::Value| {
        body["chunk"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(kinds(&get(json!({"types": ["m.room.message"]})).await), ["m.room.message", "m.room.message"]);
    assert_eq!(kinds(&get(json!({"types": ["org.example.*"]})).await), ["org.example.custom"]);
    assert!(!kinds(&get(json!({"not_types": ["m.room.*"]})).await).iter().any(|k| k.starts_with("m.room.")));
    let from_bob = get(json!({"senders": [bob.user_id], "types": ["m.room.message"]})).await;
    assert_eq!(from_bob["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(from_bob["chunk"][0]["content"]["body"], "b1");
    let lazy = get(json!({"types": ["m.room.message"], "lazy_load_members": true})).await;
    let mut members: Vec<String> =
        lazy["state"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap().to_owned()).collect();
    members.sort();
    assert_eq!(members, [alice.user_id.clone(), bob.user_id.clone()], "member events of the chunk's senders");
    assert!(get(json!({"types": ["m.room.message"]})).await["state"].as_array().is_none_or(|s| s.is_empty()));
    s.stop().await;
}

/// Spec: `end` is omitted when no further events are available. A page that takes the room's
/// first event has no `end`; one that stops short of it has one, also when a filter skips most
/// rows (more than one read of the room).
async fn end_is_omitted_at_the_room_start(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    for n in 0..3 {
        s.send_text(&alice, &room, &format!("m{n}")).await;
    }
    for n in 0..150 {
        s.put(&format!("/_matrix/client/v3/rooms/{room}/send/org.example.noise/n{n}"), Some(&alice.token), json!({}))
            .await;
    }
    let page = |limit: usize, from: Option<String>, filter: Option<serde_json::Value>| {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}");
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        if let Some(filter) = filter {
            path.push_str(&format!("&filter={}", urlencode(&filter.to_string())));
        }
        let (s, token) = (&s, alice.token.clone());
        async move {
            let (status, body) = s.get(&path, Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (body["chunk"].as_array().unwrap().len(), body["end"].as_str().map(str::to_owned))
        }
    };
    let (total, end) = page(1000, None, None).await;
    assert!(end.is_none(), "the whole room in one page");
    let (first, end) = page(total - 1, None, None).await;
    assert_eq!(first, total - 1);
    let (rest, end) = page(total - 1, Some(end.expect("one event is left")), None).await;
    assert_eq!((rest, end), (1, None), "the last event, and no token past the room's start");
    let (all, end) = page(total, None, None).await;
    assert_eq!((all, end), (total, None), "a page of exactly the room");

    // Three messages among 150 other events: the first read of limit + 1 rows finds one.
    let messages = Some(json!({"types": ["m.room.message"]}));
    let (two, end) = page(2, None, messages.clone()).await;
    assert_eq!(two, 2);
    let (one, end) = page(2, Some(end.expect("a message is left")), messages.clone()).await;
    assert_eq!((one, end), (1, None), "the first message, then the room's start");
    s.stop().await;
}

/// `/timestamp_to_event`: the closest visible event at or after (`f`) or at or before (`b`) a time.
async fn event_by_timestamp(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let room = s.create_room(&alice, json!({"preset": "private_chat"})).await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let id = s.send_text(&alice, &room, text).await;
        let (_, event) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&id)), Some(&alice.token)).await;
        sent.push((id, event["origin_server_ts"].as_i64().unwrap()));
    }
    let lookup = |ts: i64, dir: &str| {
        let path = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}");
        let (s, token) = (&s, alice.token.clone());
        async move { s.get(&path, Some(&token)).await }
    };
    let (two, two_ts) = sent[1].clone();
    for dir in ["f", "b"] {
        let (status, found) = lookup(two_ts, dir).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(
            (found["event_id"].as_str(), found["origin_server_ts"].as_i64()),
            (Some(two.as_str()), Some(two_ts))
        );
    }
    assert_eq!(lookup(two_ts + 1, "f").await.1["event_id"], sent[2].0.as_str());
    assert_eq!(lookup(two_ts + 1, "b").await.1["event_id"], two.as_str());
    // From the beginning of time forwards: the room's first event, its creation.
    let (_, first) = lookup(0, "f").await;
    let (_, create) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/?format=event"), Some(&alice.token)).await;
    assert_eq!(first["event_id"], create["event_id"], "{first} {create}");
    assert_error(&lookup(sent[2].1 + 60_000, "f").await, 404, "M_NOT_FOUND");
    assert_error(&lookup(0, "b").await, 404, "M_NOT_FOUND");
    let outsider = s.register_fast("outsider").await;
    let path = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=0&dir=f");
    assert_error(&s.get(&path, Some(&outsider.token)).await, 403, "M_FORBIDDEN");
    let (status, _) =
        s.get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=0"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "dir is required");
    s.stop().await;
}
