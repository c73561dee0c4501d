//! What Element calls at start and in daily use beyond messaging: search, the user directory,
//! reports, room upgrades, the answers of a text-only server for media, VoIP and bridges, and the
//! previous state of state events.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, timeline, Backend, TestServer, User};

crate::backend_tests!(
    search_room_events,
    search_pages_and_context,
    user_directory,
    reports,
    room_upgrade,
    text_only_answers,
    previous_state_in_unsigned
);

async fn search(s: &TestServer, user: &User, criteria: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/search", Some(&user.token), json!({"search_categories": {"room_events": criteria}}))
        .await
}

fn result_bodies(body: &Value) -> Vec<String> {
    body["search_categories"]["room_events"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {body}"))
        .iter()
        .map(|r| {
            let content = &r["result"]["content"];
            content["body"].as_str().or(content["name"].as_str()).or(content["topic"].as_str()).unwrap().to_owned()
        })
        .collect()
}

async fn search_room_events(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let eve = s.register_fast("eve").await;
    let room = s.create_room(&alice, json!({"name": "Gardening club", "topic": "tomatoes and basil"})).await;
    s.invite(&alice, &room, &bob.user_id).await;
    s.join(&bob, &room).await;
    s.send_text(&alice, &room, "The tomatoes are ripening nicely").await;
    s.send_text(&bob, &room, "Mine got eaten by snails").await;
    let doomed = s.send_text(&bob, &room, "secret tomato recipe").await;
    s.send_text(&alice, &room, "nul\u{0}bytes and \"quotes\" & operators: tomato | !").await;
    let other = s.create_room(&eve, json!({})).await;
    s.send_text(&eve, &other, "eve's tomato stash").await;

    let (status, body) = search(&s, &bob, json!({"search_term": "tomato", "order_by": "recent"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = result_bodies(&body);
    // Prefix matching finds "tomatoes" too; eve's room, which bob is not in, is not searched.
    assert_eq!(
        found,
        [
            "nul\u{0}bytes and \"quotes\" & operators: tomato | !",
            "secret tomato recipe",
            "The tomatoes are ripening nicely",
            "tomatoes and basil"
        ],
        "{body}"
    );
    let category = &body["search_categories"]["room_events"];
    assert_eq!(category["count"], 4, "{body}");
    assert_eq!(category["highlights"], json!(["tomato"]));
    assert!(category["results"][0]["rank"].is_number());

    // Keys narrow what is searched; several words must all match; ranking orders by relevance.
    let (_, body) = search(&s, &bob, json!({"search_term": "basil", "keys": ["content.body"]})).await;
    assert!(result_bodies(&body).is_empty(), "{body}");
    let (_, body) = search(&s, &bob, json!({"search_term": "GARDENING", "keys": ["content.name"]})).await;
    assert_eq!(result_bodies(&body), ["Gardening club"]);
    let (_, body) = search(&s, &bob, json!({"search_term": "tomato recipe"})).await;
    assert_eq!(result_bodies(&body), ["secret tomato recipe"]);
    let (_, body) = search(&s, &bob, json!({"search_term": "snails", "filter": {"senders": [alice.user_id]}})).await;
    assert!(result_bodies(&body).is_empty(), "{body}");

    // A redacted message leaves the index.
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{doomed}/r1");
    assert_eq!(s.put(&path, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let (_, body) = search(&s, &bob, json!({"search_term": "recipe"})).await;
    assert!(result_bodies(&body).is_empty(), "{body}");

    // Query syntax in the term is plain text; an empty term finds nothing; bad keys are errors.
    for term in ["&|!", "\"", ":*", "' OR 1=1 --", ""] {
        let (status, body) = search(&s, &bob, json!({"search_term": term})).await;
        assert_eq!(status, StatusCode::OK, "{term}: {body}");
        assert!(result_bodies(&body).is_empty(), "{term}: {body}");
    }
    assert_error(&search(&s, &bob, json!({"search_term": "x", "keys": ["content.url"]})).await, 400, "M_INVALID_PARAM");
    assert_error(&search(&s, &bob, json!({"term": "x"})).await, 400, "M_BAD_JSON");
    let (status, body) = s.post("/_matrix/client/v3/search", Some(&bob.token), json!({"search_categories": {}})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"search_categories": {}})));

    // History visibility: a user who joins a "joined"-visibility room later does not find older messages.
    let closed = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    let path = format!("/_matrix/client/v3/rooms/{closed}/state/m.room.history_visibility/");
    assert_eq!(s.put(&path, Some(&alice.token), json!({"history_visibility": "joined"})).await.0, StatusCode::OK);
    s.send_text(&alice, &closed, "before carrot").await;
    s.join(&eve, &closed).await;
    s.send_text(&alice, &closed, "after carrot").await;
    let (_, body) = search(&s, &eve, json!({"search_term": "carrot"})).await;
    assert_eq!(result_bodies(&body), ["after carrot"], "{body}");
    s.stop().await;
}

async fn search_pages_and_context(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    assert_eq!(s.put(&path, Some(&alice.token), json!({"displayname": "Alice"})).await.0, StatusCode::OK);
    let room = s.create_room(&alice, json!({})).await;
    for i in 0..25 {
        s.send_text(&alice, &room, &format!("apple number {i}")).await;
    }
    for order in ["recent", "rank"] {
        let mut seen = Vec::new();
        let mut next_batch: Option<String> = None;
        loop {
            let criteria = json!({"search_term": "apple", "order_by": order, "filter": {"limit": 10}});
            let mut request = json!({"search_categories": {"room_events": criteria}});
            let mut path = "/_matrix/client/v3/search".to_owned();
            if let Some(batch) = &next_batch {
                path.push_str(&format!("?next_batch={batch}"));
                request["next_batch"] = json!(batch);
            }
            let (status, body) = s.post(&path, Some(&alice.token), request).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            seen.extend(result_bodies(&body));
            match body["search_categories"]["room_events"]["next_batch"].as_str() {
                Some(batch) => next_batch = Some(batch.to_owned()),
                None => break,
            }
            assert!(seen.len() <= 30, "pagination does not end: {seen:?}");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 25, "{order}: every match once: {seen:?}");
        if order == "recent" {
            assert_eq!(seen[0], "apple number 24");
            assert_eq!(seen[24], "apple number 0");
        }
    }
    let (status, body) = search(&s, &alice, json!({"search_term": "x", "order_by": "rank"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = "/_matrix/client/v3/search?next_batch=garbage";
    let criteria = json!({"search_term": "apple"});
    let request = json!({"search_categories": {"room_events": criteria}, "next_batch": "garbage"});
    assert_error(&s.post(path, Some(&alice.token), request).await, 400, "M_INVALID_PARAM");

    // Context around a result, with the sender's profile in the room.
    let criteria = json!({
        "search_term": "number 12",
        "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true},
        "include_state": true,
    });
    let (_, body) = search(&s, &alice, criteria).await;
    let category = &body["search_categories"]["room_events"];
    assert_eq!(result_bodies(&body), ["apple number 12"], "{body}");
    let context = &category["results"][0]["context"];
    let before: Vec<&str> =
        context["events_before"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    let after: Vec<&str> =
        context["events_after"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(before, ["apple number 11", "apple number 10"], "{context}");
    assert_eq!(after, ["apple number 13"], "{context}");
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice", "{context}");
    let state = category["state"][&room].as_array().unwrap_or_else(|| panic!("state in {body}"));
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{body}");
    s.stop().await;
}

async fn user_directory(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let bobby = s.register_fast("bobby").await;
    let robert = s.register_fast("robert").await;
    let stranger = s.register_fast("bobcat").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", robert.user_id);
    assert_eq!(s.put(&path, Some(&robert.token), json!({"displayname": "Bob Roberts"})).await.0, StatusCode::OK);
    // alice shares a private room with bob; bobby is in a public room; bobcat shares nothing.
    let private = s.create_room(&alice, json!({})).await;
    s.invite(&alice, &private, &bob.user_id).await;
    s.join(&bob, &private).await;
    let public = s.create_room(&robert, json!({"visibility": "public", "preset": "public_chat"})).await;
    s.join(&bobby, &public).await;
    s.create_room(&stranger, json!({})).await;

    let find = |term: &str, limit: u64| {
        let body = json!({"search_term": term, "limit": limit});
        let (s, token) = (&s, alice.token.clone());
        async move { s.post("/_matrix/client/v3/user_directory/search", Some(&token), body).await }
    };
    let (status, body) = find("bob", 10).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["results"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    // bob (shares a room), bobby and robert (public room; robert by display name); not bobcat.
    assert_eq!(ids, [bob.user_id.as_str(), bobby.user_id.as_str(), robert.user_id.as_str()], "{body}");
    assert_eq!(body["limited"], false);
    assert_eq!(body["results"][2]["display_name"], "Bob Roberts");
    let (_, body) = find("bob", 2).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert_eq!(body["limited"], true);
    // The server name is not part of what matches; LIKE wildcards are literal.
    let (_, body) = find("localhost", 10).await;
    assert_eq!(body["results"], json!([]), "{body}");
    let (_, body) = find("%", 10).await;
    assert_eq!(body["results"], json!([]), "{body}");
    assert_error(
        &s.post("/_matrix/client/v3/user_directory/search", Some(&alice.token), json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.post("/_matrix/client/v3/user_directory/search", None, json!({"search_term": "b"})).await,
        401,
        "M_MISSING_TOKEN",
    );

    // An admin may open the directory to every user of the server.
    let s = s.restart(|config| config.user_directory.search_all_users = true).await;
    let body = json!({"search_term": "bob", "limit": 10});
    let (_, body) = s.post("/_matrix/client/v3/user_directory/search", Some(&alice.token), body).await;
    let ids: Vec<&str> = body["results"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [bob.user_id.as_str(), bobby.user_id.as_str(), stranger.user_id.as_str(), robert.user_id.as_str()]);
    s.stop().await;
}

async fn reports(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({})).await;
    let event = s.send_text(&alice, &room, "spam").await;

    let report = |path: String, user: &User, body: Value| {
        let (s, token) = (&s, user.token.clone());
        async move { s.post(&path, Some(&token), body).await }
    };
    let event_path = format!("/_matrix/client/v3/rooms/{room}/report/{event}");
    let (status, body) = report(event_path.clone(), &alice, json!({"reason": "spam", "score": -100})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    // bob is not in the room: the event is not found for him.
    assert_error(&report(event_path.clone(), &bob, json!({"reason": "x"})).await, 404, "M_NOT_FOUND");
    let missing = format!("/_matrix/client/v3/rooms/{room}/report/$missing");
    assert_error(&report(missing, &alice, json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&report(event_path, &alice, json!({"reason": "x".repeat(20_000)})).await, 400, "M_INVALID_PARAM");

    let (status, _) =
        report(format!("/_matrix/client/v3/rooms/{room}/report"), &bob, json!({"reason": "bad room"})).await;
    assert_eq!(status, StatusCode::OK);
    let unknown = report("/_matrix/client/v3/rooms/!nope:localhost/report".into(), &bob, json!({"reason": "x"})).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let user_path = format!("/_matrix/client/v3/users/{}/report", alice.user_id);
    assert_eq!(report(user_path, &bob, json!({"reason": "rude"})).await.0, StatusCode::OK);
    let nobody = report("/_matrix/client/v3/users/@nobody:localhost/report".into(), &bob, json!({"reason": "x"})).await;
    assert_error(&nobody, 404, "M_NOT_FOUND");

    let pool = s.db.pool().await;
    type ReportRow = (String, Option<String>, Option<String>, Option<String>, String);
    let rows: Vec<ReportRow> =
        sqlx::query_as("SELECT reporter, room_id, event_id, target_user_id, reason FROM reports ORDER BY report_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            (alice.user_id.clone(), Some(room.clone()), Some(event.clone()), None, "spam".to_owned()),
            (bob.user_id.clone(), Some(room.clone()), None, None, "bad room".to_owned()),
            (bob.user_id.clone(), None, None, Some(alice.user_id.clone()), "rude".to_owned()),
        ]
    );
    s.stop().await;
}

async fn room_upgrade(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let mallory = s.register_fast("mallory").await;
    let room = s
        .create_room(
            &alice,
            json!({
                "preset": "public_chat", "visibility": "public", "room_alias_name": "town",
                "name": "Town square", "topic": "news", "room_version": "10",
                "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            }),
        )
        .await;
    s.join(&bob, &room).await;
    s.join(&mallory, &room).await;
    let ban = format!("/_matrix/client/v3/rooms/{room}/ban");
    assert_eq!(s.post(&ban, Some(&alice.token), json!({"user_id": mallory.user_id})).await.0, StatusCode::OK);

    let upgrade = |user: &User, body: Value| {
        let (s, token, path) = (&s, user.token.clone(), format!("/_matrix/client/v3/rooms/{room}/upgrade"));
        async move { s.post(&path, Some(&token), body).await }
    };
    assert_error(&upgrade(&bob, json!({"new_version": "11"})).await, 403, "M_FORBIDDEN");
    assert_error(&upgrade(&alice, json!({"new_version": "9"})).await, 400, "M_UNSUPPORTED_ROOM_VERSION");
    assert_error(&upgrade(&alice, json!({})).await, 400, "M_BAD_JSON");
    let (status, body) = upgrade(&alice, json!({"new_version": "11"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    assert_ne!(new_room, room);

    let state = |user: &User, room: &str, kind: &str| {
        let (s, token, path) = (&s, user.token.clone(), format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"));
        async move { s.get(&path, Some(&token)).await.1 }
    };
    assert_eq!(state(&alice, &room, "m.room.tombstone").await["replacement_room"], new_room);
    let create = state(&alice, &new_room, "m.room.create").await;
    assert_eq!(
        (create["room_version"].as_str(), create["predecessor"]["room_id"].as_str()),
        (Some("11"), Some(room.as_str()))
    );
    assert_eq!(state(&alice, &new_room, "m.room.name").await["name"], "Town square");
    assert_eq!(state(&alice, &new_room, "m.room.topic").await["topic"], "news");
    assert_eq!(state(&alice, &new_room, "m.room.encryption").await["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(state(&alice, &new_room, "m.room.join_rules").await["join_rule"], "public");
    let path = format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.member/{}", mallory.user_id);
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["membership"], "ban");
    // The old room: conversation stops (bob, at level 0, may no longer send) and the alias and
    // directory listing move to the new room.
    let old_levels = state(&alice, &room, "m.room.power_levels").await;
    assert_eq!(old_levels["events_default"], 50, "{old_levels}");
    assert_eq!(old_levels["invite"], 50, "{old_levels}");
    let send = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    assert_error(&s.put(&send, Some(&bob.token), json!({"body": "hi"})).await, 403, "M_FORBIDDEN");
    let (_, alias) = s.get("/_matrix/client/v3/directory/room/%23town:localhost", None).await;
    assert_eq!(alias["room_id"], new_room);
    assert_eq!(state(&alice, &new_room, "m.room.canonical_alias").await["alias"], "#town:localhost");
    let (_, listed) = s.get("/_matrix/client/v3/publicRooms", None).await;
    let ids: Vec<&str> = listed["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [new_room.as_str()], "{listed}");
    // bob follows the tombstone.
    assert_eq!(s.join(&bob, &new_room).await.0, StatusCode::OK);
    s.send_text(&bob, &new_room, "moved").await;
    s.stop().await;
}

async fn text_only_answers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let token = Some(alice.token.as_str());
    let (status, body) = s.get("/_matrix/client/v3/voip/turnServer", token).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = s.get("/_matrix/client/v3/thirdparty/protocols", token).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    for path in ["/_matrix/client/v1/media/config", "/_matrix/media/v3/config"] {
        let (status, body) = s.get(path, token).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"m.upload.size": 0})), "{path}");
        assert_error(&s.get(path, None).await, 401, "M_MISSING_TOKEN");
    }
    let (status, body) = s.get("/_matrix/client/v3/account/3pid", token).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"threepids": []})));
    let upload = s.post("/_matrix/media/v3/upload", token, json!({})).await;
    assert_error(&upload, 404, "M_UNRECOGNIZED");
    s.stop().await;
}

async fn previous_state_in_unsigned(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    // As Element creates a DM: initial_state replaces the preset's guest access rather than adding to it.
    let guest_access =
        json!({"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}});
    let room = s
        .create_room(
            &alice,
            json!({"is_direct": true, "invite": [bob.user_id], "preset": "trusted_private_chat", "initial_state": [guest_access]}),
        )
        .await;
    s.join(&bob, &room).await;
    let sync = s.sync(&bob, None, 0, None).await;
    let events = timeline(&sync, &room);
    let join = events
        .iter()
        .find(|e| e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join")
        .unwrap_or_else(|| panic!("bob's join in {sync}"));
    // Element learns that the room is a DM from the invite this join replaced.
    assert_eq!(join["unsigned"]["prev_content"]["membership"], "invite", "{join}");
    assert_eq!(join["unsigned"]["prev_content"]["is_direct"], true, "{join}");
    assert_eq!(join["unsigned"]["prev_sender"], alice.user_id.as_str(), "{join}");
    assert!(join["unsigned"]["replaces_state"].is_string(), "{join}");
    // A new display name reaches the rooms the user is in, with the old one as prev_content.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    assert_eq!(s.put(&path, Some(&alice.token), json!({"displayname": "Alice A."})).await.0, StatusCode::OK);
    let later = s.sync(&bob, Some(&since), 5_000, None).await;
    let renamed = timeline(&later, &room);
    assert_eq!(renamed.len(), 1, "{later}");
    assert_eq!(renamed[0]["content"]["displayname"], "Alice A.", "{later}");
    assert_eq!(renamed[0]["content"]["membership"], "join", "{later}");
    assert_eq!(renamed[0]["unsigned"]["prev_content"]["displayname"], "alice", "{later}");
    // Setting the same name again sends nothing.
    assert_eq!(s.put(&path, Some(&alice.token), json!({"displayname": "Alice A."})).await.0, StatusCode::OK);
    let since = later["next_batch"].as_str().unwrap().to_owned();
    let quiet = s.sync(&bob, Some(&since), 500, None).await;
    assert!(timeline(&quiet, &room).is_empty(), "{quiet}");
    let guest: Vec<&Value> = events.iter().filter(|e| e["type"] == "m.room.guest_access").collect();
    assert_eq!(guest.len(), 1, "{sync}");
    assert_eq!(guest[0]["content"]["guest_access"], "forbidden");
    let create = events.iter().find(|e| e["type"] == "m.room.create");
    if let Some(create) = create {
        assert!(create["unsigned"].get("prev_content").is_none(), "{create}");
    }
    s.stop().await;
}
