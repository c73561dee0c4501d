//! Who may do what under the default power levels, redactions, and history visibility.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, Backend, TestServer, User};

crate::backend_tests!(default_power_level_matrix, redactions, history_visibility, knocking);

fn ok(result: &(StatusCode, Value), what: &str) {
    assert_eq!(result.0, StatusCode::OK, "{what}: {}", result.1);
}

async fn state(s: &TestServer, user: &User, room: &str, kind: &str, content: Value) -> (StatusCode, Value) {
    s.put(&format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"), Some(&user.token), content).await
}

async fn act(s: &TestServer, user: &User, room: &str, action: &str, target: &User) -> (StatusCode, Value) {
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/{action}"),
        Some(&user.token),
        json!({"user_id": target.user_id, "reason": "test"}),
    )
    .await
}

async fn default_power_level_matrix(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await; // creator, 100
    let bob = s.register_fast("bob").await; // member, 0
    let carol = s.register_fast("carol").await; // never in the room
    let dave = s.register_fast("dave").await; // invited
    let eve = s.register_fast("eve").await; // banned
    let room = s.create_room(&alice, json!({"invite": [bob.user_id]})).await;
    ok(&s.join(&bob, &room).await, "bob joins when invited");

    // A plain member may invite (private rooms: invite 0) and send, but not moderate or change state.
    ok(&s.invite(&bob, &room, &dave.user_id).await, "member invites");
    let bob_msg = s.send_text(&bob, &room, "from bob").await;
    let alice_msg = s.send_text(&alice, &room, "from alice").await;
    for (kind, content) in [
        ("m.room.name", json!({"name": "bob's"})),
        ("m.room.topic", json!({"topic": "bob's"})),
        ("m.room.power_levels", json!({"users": {bob.user_id.clone(): 100}})),
        ("m.room.join_rules", json!({"join_rule": "public"})),
    ] {
        assert_error(&state(&s, &bob, &room, kind, content).await, 403, "M_FORBIDDEN");
    }
    assert_error(&act(&s, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN");
    assert_error(&act(&s, &bob, &room, "ban", &dave).await, 403, "M_FORBIDDEN");
    let redact = |user: &User, event: &str, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/redact/{event}/{txn}");
        let token = user.token.clone();
        let s = &s;
        async move { s.put(&path, Some(&token), json!({})).await }
    };
    assert_error(&redact(&bob, &alice_msg, "r1").await, 403, "M_FORBIDDEN");
    ok(&redact(&bob, &bob_msg, "r2").await, "member redacts own message");

    // The creator (100) may do all of it.
    ok(&state(&s, &alice, &room, "m.room.name", json!({"name": "Ours"})).await, "creator names");
    ok(&state(&s, &alice, &room, "m.room.topic", json!({"topic": "t"})).await, "creator sets topic");
    ok(&redact(&alice, &bob_msg, "r3").await, "creator redacts others' messages");
    ok(&act(&s, &alice, &room, "ban", &eve).await, "creator bans a non-member");
    ok(&act(&s, &alice, &room, "kick", &bob).await, "creator kicks");
    assert_error(&act(&s, &alice, &room, "kick", &bob).await, 403, "M_FORBIDDEN"); // no longer in the room
    ok(&s.invite(&alice, &room, &bob.user_id).await, "re-invite after kick");
    ok(&s.join(&bob, &room).await, "rejoin");
    ok(
        &state(
            &s,
            &alice,
            &room,
            "m.room.power_levels",
            json!({"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50}}),
        )
        .await,
        "creator changes power levels",
    );
    ok(&state(&s, &bob, &room, "m.room.topic", json!({"topic": "moderator now"})).await, "a moderator sets the topic");
    assert_error(&act(&s, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN"); // cannot kick a higher level

    // A non-member can do nothing in the room.
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x"),
            Some(&carol.token),
            json!({"body": "hi"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&carol.token)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&carol.token)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&carol.token)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.join(&carol, &room).await, 403, "M_FORBIDDEN"); // invite-only
    assert_error(&s.invite(&carol, &room, &carol.user_id).await, 403, "M_FORBIDDEN");

    // An invited user may join but not send before joining.
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/y"),
            Some(&dave.token),
            json!({"body": "hi"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    ok(&s.join(&dave, &room).await, "invitee joins");

    // A banned user can neither join nor be invited, until unbanned.
    assert_error(&s.join(&eve, &room).await, 403, "M_FORBIDDEN");
    assert_error(&s.invite(&alice, &room, &eve.user_id).await, 403, "M_FORBIDDEN");
    ok(&act(&s, &alice, &room, "unban", &eve).await, "unban");
    assert_error(&act(&s, &alice, &room, "unban", &eve).await, 403, "M_FORBIDDEN");
    ok(&s.invite(&alice, &room, &eve.user_id).await, "invite after unban");

    // In a public room inviting needs level 50.
    let public = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    ok(&s.join(&carol, &public).await, "anyone joins a public room");
    assert_error(&s.invite(&carol, &public, &dave.user_id).await, 403, "M_FORBIDDEN");

    // Leaving, then forgetting.
    assert_error(
        &s.post(&format!("/_matrix/client/v3/rooms/{public}/forget"), Some(&carol.token), json!({})).await,
        400,
        "M_UNKNOWN",
    );
    ok(&s.post(&format!("/_matrix/client/v3/rooms/{public}/leave"), Some(&carol.token), json!({})).await, "leave");
    assert_error(
        &s.post(&format!("/_matrix/client/v3/rooms/{public}/leave"), Some(&carol.token), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    ok(&s.post(&format!("/_matrix/client/v3/rooms/{public}/forget"), Some(&carol.token), json!({})).await, "forget");
    s.stop().await;
}

async fn redactions(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat", "topic": "secret topic"})).await;
    ok(&s.join(&bob, &room).await, "join");
    let secret = s.send_text(&alice, &room, "my secret").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{secret}/txn1");
    let (status, body) = s.put(&path, Some(&alice.token), json!({"reason": "oops"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction_id = body["event_id"].as_str().unwrap().to_owned();
    // Idempotent like any send.
    assert_eq!(s.put(&path, Some(&alice.token), json!({"reason": "oops"})).await.1["event_id"], redaction_id.as_str());

    for reader in [&alice, &bob] {
        let (_, event) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{secret}"), Some(&reader.token)).await;
        assert_eq!(event["content"], json!({}), "stripped for every reader");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction_id.as_str());
        assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
        let history = s.all_messages(reader, &room, 10).await;
        assert!(history.iter().all(|e| e["content"]["body"] != "my secret"), "nowhere in history");
        let redaction = history.iter().find(|e| e["event_id"] == redaction_id.as_str()).expect("redaction in timeline");
        assert_eq!(redaction["redacts"], secret.as_str());
    }
    // A sync shows the same: the target stripped with its redaction, and the redaction's target.
    let sync = s.sync(&bob, None, 0, Some(&json!({"room": {"timeline": {"limit": 50}}}))).await;
    let events = crate::common::timeline(&sync, &room);
    let stripped = events.iter().find(|e| e["event_id"] == secret.as_str()).expect("redacted event in the sync");
    assert_eq!(stripped["content"], json!({}), "{stripped}");
    assert_eq!(stripped["unsigned"]["redacted_because"]["event_id"], redaction_id.as_str(), "{stripped}");
    let redaction = events.iter().find(|e| e["event_id"] == redaction_id.as_str()).expect("redaction in the sync");
    assert_eq!(redaction["redacts"], secret.as_str(), "{redaction}");

    // A state event keeps its place in the state with its content stripped.
    let (_, topic) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/?format=event"), Some(&alice.token)).await;
    let topic_id = topic["event_id"].as_str().unwrap();
    ok(
        &s.put(&format!("/_matrix/client/v3/rooms/{room}/redact/{topic_id}/txn2"), Some(&alice.token), json!({})).await,
        "redact topic",
    );
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"), Some(&bob.token)).await.1,
        json!({})
    );
    s.stop().await;
}

async fn history_visibility(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let late = s.register_fast("late").await;
    let outsider = s.register_fast("outsider").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    let texts = |events: Vec<Value>| {
        events.into_iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect::<Vec<_>>()
    };

    // shared: a member joining later sees what came before.
    s.send_text(&alice, &room, "shared-1").await;
    ok(
        &state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await,
        "set joined",
    );
    s.send_text(&alice, &room, "joined-only").await;
    ok(&s.join(&late, &room).await, "late joins");
    s.send_text(&alice, &room, "after-join").await;
    assert_eq!(texts(s.all_messages(&late, &room, 5).await), ["shared-1", "after-join"]);
    assert_eq!(texts(s.all_messages(&alice, &room, 5).await), ["shared-1", "joined-only", "after-join"]);
    let hidden =
        s.all_messages(&alice, &room, 50).await.into_iter().find(|e| e["content"]["body"] == "joined-only").unwrap();
    let hidden_id = hidden["event_id"].as_str().unwrap();
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{hidden_id}"), Some(&late.token)).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, context) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/context/{hidden_id}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/context/{hidden_id}"), Some(&late.token)).await,
        404,
        "M_NOT_FOUND",
    );

    // Someone who left sees nothing sent after they left.
    ok(&s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&late.token), json!({})).await, "leave");
    s.send_text(&alice, &room, "after-leave").await;
    assert_eq!(texts(s.all_messages(&late, &room, 5).await), ["shared-1", "after-join"]);

    // Never a member: nothing, until the room is world_readable.
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&outsider.token)).await,
        403,
        "M_FORBIDDEN",
    );
    ok(
        &state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "world_readable"})).await,
        "world_readable",
    );
    s.send_text(&alice, &room, "for-everyone").await;
    assert_eq!(texts(s.all_messages(&outsider, &room, 5).await), ["for-everyone"]);
    s.stop().await;
}

/// Knocking (spec: "Knocking on rooms"): only where the join rule is `knock`; the knocker sees the
/// room under `rooms.knock`, a moderator accepts with an invite or refuses with a kick.
async fn knocking(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let carol = s.register_fast("carol").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Club", "room_alias_name": "club",
                   "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    let open = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    let knock = |user: &User, target: &str, body: Value| {
        let path = format!("/_matrix/client/v3/knock/{}", target.replace('#', "%23"));
        let (s, token) = (&s, user.token.clone());
        async move { s.post(&path, Some(&token), body).await }
    };
    assert_error(&knock(&bob, &open, json!({})).await, 403, "M_FORBIDDEN");
    assert_error(&knock(&bob, "!missing:localhost", json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&knock(&alice, &room, json!({})).await, 403, "M_FORBIDDEN");
    let bob_token = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let alice_token = s.sync(&alice, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    let (status, knocked) = knock(&bob, "#club:localhost", json!({"reason": "let me in"})).await;
    assert_eq!((status, &knocked["room_id"]), (StatusCode::OK, &json!(room)), "{knocked}");
    let synced = s.sync(&bob, Some(&bob_token), 0, None).await;
    let stripped = synced["rooms"]["knock"][&room]["knock_state"]["events"].as_array().unwrap().clone();
    let of_type = |t: &str| stripped.iter().find(|e| e["type"] == t).cloned().unwrap_or_default();
    assert_eq!(of_type("m.room.join_rules")["content"]["join_rule"], "knock", "{synced}");
    assert_eq!(of_type("m.room.name")["content"]["name"], "Club");
    assert_eq!(of_type("m.room.member")["content"]["membership"], "knock");
    assert_eq!(synced["rooms"]["join"], json!({}));
    // The room's members see the knock, with its reason.
    let moderator = s.sync(&alice, Some(&alice_token), 0, None).await;
    let events = crate::common::timeline(&moderator, &room);
    let member =
        events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()).unwrap();
    assert_eq!(
        (&member["content"]["membership"], &member["content"]["reason"]),
        (&json!("knock"), &json!("let me in"))
    );
    // Knocking twice is allowed (a new reason); joining without an invite is not.
    ok(&knock(&bob, &room, json!({})).await, "second knock");
    assert_error(&s.join(&bob, &room).await, 403, "M_FORBIDDEN");

    // Accepted: an invite, then bob joins.
    ok(&s.invite(&alice, &room, &bob.user_id).await, "accept");
    let invited = s.sync(&bob, Some(&bob_token), 0, None).await;
    assert!(
        invited["rooms"]["invite"][&room].is_object() && invited["rooms"]["knock"].get(&room).is_none(),
        "{invited}"
    );
    assert_error(&knock(&bob, &room, json!({})).await, 403, "M_FORBIDDEN");
    ok(&s.join(&bob, &room).await, "join after the invite");
    s.send_text(&alice, &room, "members only").await;

    // Refused: a kick ends carol's knock, and her sync shows the room left.
    let carol_token = s.sync(&carol, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    ok(&knock(&carol, &room, json!({})).await, "carol knocks");
    let kick = format!("/_matrix/client/v3/rooms/{room}/kick");
    ok(&s.post(&kick, Some(&alice.token), json!({"user_id": carol.user_id})).await, "refuse");
    let refused = s.sync(&carol, Some(&carol_token), 0, None).await;
    assert!(refused["rooms"]["leave"][&room].is_object(), "{refused}");
    // Of the room's history carol, who never joined, sees her own membership changes only.
    let shown = refused["rooms"]["leave"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert!(!shown.is_empty(), "{refused}");
    assert!(
        shown.iter().all(|e| e["type"] == "m.room.member" && e["state_key"] == carol.user_id.as_str()),
        "{refused}"
    );
    s.stop().await;
}
