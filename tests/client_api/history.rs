//! Ordering under concurrent writers, long histories, /context and member lists.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

use crate::common::{Backend, TestServer};

crate::backend_tests!(
    concurrent_senders_one_room,
    ten_thousand_messages_reach_create,
    context_and_members_at,
    state_and_auth_chain_from_storage,
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
    let extremities: i64 = sqlx::query("SELECT COUNT(*) FROM room_forward_extremities WHERE room_id = $1")
        .bind(&room)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(extremities, 1);
    let all = ids(&seen_by_owner);
    for pair in all.windows(2) {
        let prev: Vec<String> = sqlx::query("SELECT prev_event_id FROM event_edges WHERE event_id = $1")
            .bind(&pair[1])
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(prev, vec![pair[0].clone()]);
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

/// State storage grows with state changes, not with messages; the auth chain of any event comes
/// from storage in one query.
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
    let (entries, snapshots) = (count(entries_sql).await, count(snapshots_sql).await);
    let mut last = String::new();
    for n in 0..200 {
        last = s.send_text(&alice, &room, &format!("m{n}")).await;
    }
    assert_eq!(
        (count(entries_sql).await, count(snapshots_sql).await),
        (entries, snapshots),
        "messages add no state rows"
    );
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
