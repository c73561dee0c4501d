//! Room creation, sending, idempotency, the product limits and malformed input.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(
    create_room_with_presets_and_state,
    send_is_idempotent_per_device_and_txn,
    message_size_boundary,
    member_cap_boundary,
    malformed_room_requests,
    room_versions,
);

async fn create_room_with_presets_and_state(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s
        .create_room(
            &alice,
            json!({
                "preset": "trusted_private_chat", "name": "Plans", "topic": "weekend", "is_direct": true,
                "invite": [bob.user_id], "room_alias_name": "plans",
                "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
                "power_level_content_override": {"events_default": 10},
                "creation_content": {"m.federate": true},
            }),
        )
        .await;
    let (status, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let find = |kind: &str, key: &str| {
        state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    assert_eq!(find("m.room.create", "")["content"]["room_version"], "11");
    assert_eq!(find("m.room.name", "")["content"]["name"], "Plans");
    assert_eq!(find("m.room.topic", "")["content"]["topic"], "weekend");
    assert_eq!(find("m.room.join_rules", "")["content"]["join_rule"], "invite");
    assert_eq!(find("m.room.history_visibility", "")["content"]["history_visibility"], "shared");
    assert_eq!(find("m.room.canonical_alias", "")["content"]["alias"], "#plans:localhost");
    assert_eq!(find("m.room.encryption", "")["content"]["algorithm"], "m.megolm.v1.aes-sha2");
    let pl = find("m.room.power_levels", "")["content"].clone();
    assert_eq!(pl["users"][&alice.user_id], 100);
    assert_eq!(pl["users"][&bob.user_id], 100, "trusted_private_chat gives invitees the creator's level");
    assert_eq!(pl["events_default"], 10);
    let invite = find("m.room.member", &bob.user_id);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);

    let (status, one) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&alice.token)).await;
    assert_eq!((status, one), (StatusCode::OK, json!({"name": "Plans"})));
    let (_, full) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/?format=event"), Some(&alice.token)).await;
    assert_eq!(full["content"]["name"], "Plans");
    assert!(full["event_id"].as_str().unwrap().starts_with('$'));
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.avatar/"), Some(&alice.token)).await,
        404,
        "M_NOT_FOUND",
    );

    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            Some(&alice.token),
            json!({"topic": "sunday"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"), Some(&alice.token)).await.1["topic"],
        "sunday"
    );

    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
    s.stop().await;
}

async fn send_is_idempotent_per_device_and_txn(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    let other_device = s.login(&alice, None).await;
    let room = s.create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn1");
    let body = json!({"msgtype": "m.text", "body": "once"});
    let first = s.put(&path, Some(&alice.token), body.clone()).await;
    let again = s.put(&path, Some(&alice.token), body.clone()).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1["event_id"], again.1["event_id"], "a retry returns the same event");
    // Another device's txn1 is another transaction.
    let elsewhere = s.put(&path, Some(&other_device.token), body).await;
    assert_ne!(elsewhere.1["event_id"], first.1["event_id"]);
    // Retries racing each other (a client resending on a slow network) still make one event.
    let racing = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn2");
    let answers =
        futures::future::join_all((0..6).map(|_| s.put(&racing, Some(&alice.token), json!({"body": "raced"})))).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    assert!(answers.iter().all(|(_, body)| body["event_id"] == answers[0].1["event_id"]), "{answers:?}");
    let texts: Vec<_> =
        s.all_messages(&alice, &room, 50).await.into_iter().filter(|e| e["type"] == "m.room.message").collect();
    assert_eq!(texts.len(), 3, "the retries stored nothing new: {texts:?}");
    // A transaction ID is scoped to its endpoint: the same ID in another room is a new event.
    let other_room = s.create_room(&alice, json!({})).await;
    let other = s
        .put(
            &format!("/_matrix/client/v3/rooms/{other_room}/send/m.room.message/txn1"),
            Some(&alice.token),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(other.0, StatusCode::OK);
    assert_ne!(other.1["event_id"], first.1["event_id"]);
    s.stop().await;
}

async fn message_size_boundary(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let send = |txn: &str, content: serde_json::Value| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let token = alice.token.clone();
        let s = &s;
        async move { s.put(&path, Some(&token), content).await }
    };
    // 99,999 four-byte characters in body and formatted_body: accepted and read back byte-identical.
    let longest = "😀".repeat(99_999);
    let accepted = send(
        "ok",
        json!({"msgtype": "m.text", "body": longest, "format": "org.matrix.custom.html", "formatted_body": longest}),
    )
    .await;
    assert_eq!(accepted.0, StatusCode::OK, "{}", accepted.1);
    let event_id = accepted.1["event_id"].as_str().unwrap();
    let (_, event) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&alice.token)).await;
    assert_eq!(event["content"]["body"].as_str().unwrap().as_bytes(), longest.as_bytes());
    assert_eq!(event["content"]["formatted_body"].as_str().unwrap().as_bytes(), longest.as_bytes());

    let ascii = "a".repeat(99_999);
    assert_eq!(send("ascii", json!({"msgtype": "m.text", "body": ascii})).await.0, StatusCode::OK);
    let before = s.all_messages(&alice, &room, 100).await.len();
    for (txn, content) in [
        ("big1", json!({"msgtype": "m.text", "body": "a".repeat(100_000)})),
        ("big2", json!({"msgtype": "m.text", "body": "😀".repeat(100_000)})),
        ("big3", json!({"msgtype": "m.text", "body": "short", "formatted_body": "é".repeat(100_000)})),
    ] {
        assert_error(&send(txn, content).await, 413, "M_TOO_LARGE");
    }
    assert_eq!(s.all_messages(&alice, &room, 100).await.len(), before, "nothing stored");
    s.stop().await;
}

async fn member_cap_boundary(backend: Backend) {
    let s = TestServer::start(backend).await;
    let owner = s.register_fast("owner").await;
    let room = s.create_room(&owner, json!({"preset": "public_chat"})).await;
    let mut users = Vec::new();
    for i in 0..100 {
        users.push(s.register_fast(&format!("member{i}")).await);
    }
    // 99 more members bring the room to 100: all accepted (joins and invites both count).
    for (i, user) in users.iter().take(99).enumerate() {
        let result = if i % 2 == 0 { s.join(user, &room).await } else { s.invite(&owner, &room, &user.user_id).await };
        assert_eq!(result.0, StatusCode::OK, "member {i}: {}", result.1);
    }
    let last = &users[99];
    let full = s.join(last, &room).await;
    assert_error(&full, 403, "M_FORBIDDEN");
    assert!(full.1["error"].as_str().unwrap().contains("full"), "{}", full.1);
    let full = s.invite(&owner, &room, &last.user_id).await;
    assert_error(&full, 403, "M_FORBIDDEN");
    assert!(full.1["error"].as_str().unwrap().contains("full"));
    // An invited member joining does not count twice; a leave makes room.
    assert_eq!(s.join(&users[1], &room).await.0, StatusCode::OK);
    assert_eq!(
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&users[0].token), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.join(last, &room).await.0, StatusCode::OK);
    let (_, members) = s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&owner.token)).await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 52);
    s.stop().await;
}

async fn malformed_room_requests(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let t = Some(alice.token.as_str());
    assert_error(
        &s.put("/_matrix/client/v3/rooms/not-a-room/send/m.room.message/1", t, json!({"body": "x"})).await,
        400,
        "M_INVALID_PARAM",
    );
    let unknown =
        s.put("/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/1", t, json!({"body": "x"})).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    assert_error(&s.get("/_matrix/client/v3/rooms/!nope:localhost/messages?dir=b", t).await, 403, "M_FORBIDDEN");
    assert_error(&s.post("/_matrix/client/v3/rooms/!nope:localhost/join", t, json!({})).await, 404, "M_NOT_FOUND");
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/2");
    let array = s.put(&path, t, json!(["not", "an", "object"])).await;
    assert_eq!(array.0, StatusCode::BAD_REQUEST, "{}", array.1);
    let not_json = s.http.put(s.url(&path)).bearer_auth(&alice.token).body("{oops").send().await.unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    // A member event whose content lacks `membership` breaks the auth rules' input: refused.
    let bad_member = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", alice.user_id),
            t,
            json!({"displayname": "x"}),
        )
        .await;
    assert_eq!(bad_member.0, StatusCode::BAD_REQUEST, "{}", bad_member.1);
    let bad_pl = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), t, json!({"users": "everyone"}))
        .await;
    assert!(bad_pl.0 == StatusCode::BAD_REQUEST || bad_pl.0 == StatusCode::FORBIDDEN, "{:?}", bad_pl);
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=garbage"), t).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=sideways"), t).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&s.get(&format!("/_matrix/client/v3/rooms/{room}/event/$nothing"), t).await, 404, "M_NOT_FOUND");
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", t, json!({"room_version": "1"})).await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", t, json!({"invite": ["@ghost:localhost"]})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&s.post("/_matrix/client/v3/createRoom", t, json!({"name": 5})).await, 400, "M_BAD_JSON");
    // A NUL in a type, state key or transaction ID (PostgreSQL text cannot hold one) is refused alike.
    for path in [
        format!("/_matrix/client/v3/rooms/{room}/send/m.a%00b/3"),
        format!("/_matrix/client/v3/rooms/{room}/state/m.topic/a%00b"),
        format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a%00b"),
    ] {
        assert_error(&s.put(&path, t, json!({"body": "x"})).await, 400, "M_INVALID_PARAM");
    }
    // In the body it is only text: stored and served back as sent.
    let nul_body =
        s.put(&format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/4"), t, json!({"body": "a\u{0}b"})).await;
    assert_eq!(nul_body.0, StatusCode::OK, "{}", nul_body.1);
    // Nothing was damaged: the room still works.
    s.send_text(&alice, &room, "still here").await;
    s.stop().await;
}

async fn room_versions(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    for version in ["10", "11"] {
        let room = s.create_room(&alice, json!({"room_version": version})).await;
        let (_, create) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"), Some(&alice.token)).await;
        assert_eq!(create["room_version"], version);
        assert_eq!(create.get("creator").is_some(), version == "10", "v11 drops creator: {create}");
        let event_id = s.send_text(&alice, &room, "hi").await;
        let redact = s
            .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/r1"), Some(&alice.token), json!({}))
            .await;
        assert_eq!(redact.0, StatusCode::OK, "{}", redact.1);
        let (_, event) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&alice.token)).await;
        assert_eq!(event["content"], json!({}), "redacted in v{version}");
    }
    s.stop().await;
}
