//! Presence: transitions with short configured timeouts, who sees them, and the switch.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, Backend, TestServer, User};

crate::backend_tests!(
    online_offline_unavailable,
    status_and_audience,
    presence_disabled,
    sending_is_activity_and_newcomers_presence,
    filters_presence_and_account_data,
    deadlines_stay_one_per_user
);

fn presence_of(sync: &Value, user: &User) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["sender"] == user.user_id.as_str())
        .map(|e| e["content"].clone())
}

/// Long-polls as `viewer` until `user`'s presence is `state`; returns the token after it.
async fn wait_for_presence(s: &TestServer, viewer: &User, token: &str, user: &User, state: &str) -> (Value, String) {
    let mut token = token.to_owned();
    for _ in 0..20 {
        let sync = s.sync(viewer, Some(&token), 10_000, None).await;
        token = sync["next_batch"].as_str().unwrap().to_owned();
        if let Some(content) = presence_of(&sync, user).filter(|c| c["presence"] == state) {
            return (content, token);
        }
    }
    panic!("{} never became {state}", user.user_id);
}

/// Alice's public room with bob in it, and bob's first sync token.
async fn alice_and_bob_in_a_room(s: &TestServer) -> (User, User, String, String) {
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let token = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    (alice, bob, room, token)
}

async fn online_offline_unavailable(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.presence.offline_after = 1.0;
        c.presence.idle_after = 2.0;
    })
    .await;
    let (alice, bob, room, token) = alice_and_bob_in_a_room(&s).await;

    // A sync makes alice online; without another within offline_after she goes offline.
    s.sync(&alice, None, 0, None).await;
    let (online, token) = wait_for_presence(&s, &bob, &token, &alice, "online").await;
    assert_eq!(online["currently_active"], true);
    assert!(online["last_active_ago"].as_i64().unwrap() >= 0);
    let (_, token) = wait_for_presence(&s, &bob, &token, &alice, "offline").await;

    // Syncing continuously but doing nothing: online, then unavailable after idle_after.
    s.send_text(&alice, &room, "back").await;
    let keep_syncing = async {
        let mut alice_token = s.sync(&alice, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
        for _ in 0..8 {
            alice_token =
                s.sync(&alice, Some(&alice_token), 500, None).await["next_batch"].as_str().unwrap().to_owned();
        }
    };
    let watch = async {
        let (_, token) = wait_for_presence(&s, &bob, &token, &alice, "online").await;
        wait_for_presence(&s, &bob, &token, &alice, "unavailable").await
    };
    let (_, (unavailable, token)) = tokio::join!(keep_syncing, watch);
    assert_eq!(unavailable["currently_active"], false);
    // last_active_ago counts from her last action (the message), not from the state change.
    assert!(unavailable["last_active_ago"].as_i64().unwrap() >= 1500, "{unavailable}");

    // Activity brings her back.
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id),
        Some(&alice.token),
        json!({"typing": true, "timeout": 1000}),
    )
    .await;
    wait_for_presence(&s, &bob, &token, &alice, "online").await;
    s.stop().await;
}

/// Every sync request starts and ends a sync, and each sets a presence deadline. However many
/// there were, about one deadline per user stays queued (the `/metrics` gauge), and it still fires.
async fn deadlines_stay_one_per_user(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.listen.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.presence.offline_after = 1.0;
    })
    .await;
    let (alice, bob, _, token) = alice_and_bob_in_a_room(&s).await;
    let mut alice_token = s.sync(&alice, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        alice_token = s.sync(&alice, Some(&alice_token), 0, None).await["next_batch"].as_str().unwrap().to_owned();
    }
    let queued = s.metric("axon_presence_deadlines").await;
    assert!((1..=4).contains(&queued), "{queued} deadlines queued for two users after 100 syncs");
    let (_, token) = wait_for_presence(&s, &bob, &token, &alice, "online").await;
    wait_for_presence(&s, &bob, &token, &alice, "offline").await;
    s.stop().await;
}

async fn status_and_audience(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let carol = s.register_fast("carol").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let bob_token = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let carol_token = s.sync(&carol, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    let status = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
    let set = s.put(&status, Some(&alice.token), json!({"presence": "unavailable", "status_msg": "at lunch"})).await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    // Only the spec's three states may be set.
    assert_error(&s.put(&status, Some(&alice.token), json!({"presence": "busy"})).await, 400, "M_INVALID_PARAM");
    let (content, bob_token) = wait_for_presence(&s, &bob, &bob_token, &alice, "unavailable").await;
    assert_eq!(content["status_msg"], "at lunch");
    // Someone who shares no room hears nothing.
    let carol_sync = s.sync(&carol, Some(&carol_token), 300, None).await;
    assert!(presence_of(&carol_sync, &alice).is_none(), "{carol_sync}");

    let (status_code, got) = s.get(&status, Some(&bob.token)).await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!((got["presence"].as_str(), got["status_msg"].as_str()), (Some("unavailable"), Some("at lunch")));
    assert_error(&s.get(&status, Some(&carol.token)).await, 403, "M_FORBIDDEN");
    assert_eq!(s.get(&status, Some(&alice.token)).await.0, StatusCode::OK);
    assert_error(&s.put(&status, Some(&bob.token), json!({"presence": "online"})).await, 403, "M_FORBIDDEN");
    assert_eq!(s.put(&status, Some(&alice.token), json!({"presence": "sleeping"})).await.0, StatusCode::BAD_REQUEST);

    // The same status again is not a change: no new presence position, nothing fanned out.
    let before: Vec<String> = bob_token.split('_').map(str::to_owned).collect();
    assert_eq!(
        s.put(&status, Some(&alice.token), json!({"presence": "unavailable", "status_msg": "at lunch"})).await.0,
        StatusCode::OK
    );
    let after = s.sync(&bob, Some(&bob_token), 300, None).await;
    assert!(presence_of(&after, &alice).is_none());
    let after_token: Vec<&str> = after["next_batch"].as_str().unwrap().split('_').collect();
    assert_eq!(after_token[5], before[5], "presence stream did not move");
    s.stop().await;
}

async fn presence_disabled(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.presence.enabled = false).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    s.sync(&alice, None, 0, None).await;
    let status = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
    assert_eq!(
        s.put(&status, Some(&alice.token), json!({"presence": "online", "status_msg": "hi"})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.sync(&bob, None, 0, None).await["presence"]["events"], json!([]));
    assert_eq!(s.get(&status, Some(&bob.token)).await.1["presence"], "offline");
    s.stop().await;
}

async fn sending_is_activity_and_newcomers_presence(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.presence.offline_after = 5.0;
        c.presence.idle_after = 1.0;
    })
    .await;
    let (alice, bob, room, token) = alice_and_bob_in_a_room(&s).await;
    s.sync(&alice, None, 0, None).await;
    let (_, mut token) = wait_for_presence(&s, &bob, &token, &alice, "online").await;
    // Alice keeps sending for three idle periods: she stays online.
    for n in 0..6 {
        s.send_text(&alice, &room, &format!("still here {n}")).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let sync = s.sync(&bob, Some(&token), 0, None).await;
        token = sync["next_batch"].as_str().unwrap().to_owned();
        assert!(presence_of(&sync, &alice).is_none_or(|p| p["presence"] == "online"), "{sync}");
    }
    let status = s.get(&format!("/_matrix/client/v3/presence/{}/status", alice.user_id), Some(&bob.token)).await.1;
    assert_eq!(status["presence"], "online");

    // Carol, online, joins a room with bob: bob gets her presence at once, though it did not change.
    let carol = s.register_fast("carol").await;
    s.sync(&carol, None, 0, None).await;
    let bob_token = s.sync(&bob, Some(&token), 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let shared = s.create_room(&carol, json!({"invite": [bob.user_id]})).await;
    assert_eq!(s.join(&bob, &shared).await.0, StatusCode::OK);
    let (carol_presence, _) = wait_for_presence(&s, &bob, &bob_token, &carol, "online").await;
    assert!(carol_presence["last_active_ago"].is_i64());
    s.stop().await;
}

/// The top-level `presence` and `account_data` filters (spec: "Filtering"): `presence: {types: []}`
/// keeps presence out, so a long-poll is not woken by it; account data types can be left out.
async fn filters_presence_and_account_data(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let no_presence = json!({"presence": {"types": []}, "account_data": {"not_types": ["org.example.hidden"]}});
    let token = s.sync(&bob, None, 0, Some(&no_presence)).await["next_batch"].as_str().unwrap().to_owned();
    let unfiltered = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    // Alice comes online: the unfiltered long-poll wakes with it, the filtered one waits it out.
    let started = std::time::Instant::now();
    let (filtered, woken) = tokio::join!(s.sync(&bob, Some(&token), 2_000, Some(&no_presence)), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        s.sync(&alice, None, 0, None).await;
        wait_for_presence(&s, &bob, &unfiltered, &alice, "online").await
    });
    assert_eq!(woken.0["presence"], "online");
    assert_eq!(filtered["presence"]["events"], json!([]), "{filtered}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1_900), "a presence change woke the filtered sync");

    // Account data: the excluded type stays out, another one comes through.
    let token = filtered["next_batch"].as_str().unwrap().to_owned();
    for kind in ["org.example.hidden", "org.example.shown"] {
        let path = format!("/_matrix/client/v3/user/{}/account_data/{kind}", bob.user_id);
        assert_eq!(s.put(&path, Some(&bob.token), json!({"k": kind})).await.0, StatusCode::OK);
    }
    let sync = s.sync(&bob, Some(&token), 5_000, Some(&no_presence)).await;
    let types: Vec<&str> =
        sync["account_data"]["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["org.example.shown"], "{sync}");
    s.stop().await;
}
