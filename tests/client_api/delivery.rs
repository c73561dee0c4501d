//! Account data, tags, to-device messages, typing and receipts, through their endpoints and /sync.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(
    account_data_and_tags,
    to_device_until_acknowledged,
    typing_start_stop_expire,
    receipts_and_read_markers,
    default_push_rules,
);

fn next(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

async fn account_data_and_tags(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({})).await;
    let token = next(&s.sync(&alice, None, 0, None).await);
    let global = format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.user_id);
    assert_error(&s.get(&global, Some(&alice.token)).await, 404, "M_NOT_FOUND");
    assert_eq!(s.put(&global, Some(&alice.token), json!({"@bob:localhost": [room]})).await.0, StatusCode::OK);
    assert_eq!(s.get(&global, Some(&alice.token)).await.1, json!({"@bob:localhost": [room]}));
    let per_room = format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/org.example.note", alice.user_id);
    assert_eq!(s.put(&per_room, Some(&alice.token), json!({"text": "remember"})).await.0, StatusCode::OK);
    let tag = format!("/_matrix/client/v3/user/{}/rooms/{room}/tags/m.favourite", alice.user_id);
    assert_eq!(s.put(&tag, Some(&alice.token), json!({"order": 0.5})).await.0, StatusCode::OK);
    let (_, tags) =
        s.get(&format!("/_matrix/client/v3/user/{}/rooms/{room}/tags", alice.user_id), Some(&alice.token)).await;
    assert_eq!(tags, json!({"tags": {"m.favourite": {"order": 0.5}}}));

    let synced = s.sync(&alice, Some(&token), 5_000, None).await;
    let global_events = synced["account_data"]["events"].as_array().unwrap();
    assert!(global_events.iter().any(|e| e["type"] == "m.direct" && e["content"]["@bob:localhost"] == json!([room])));
    let room_events = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(room_events.iter().any(|e| e["type"] == "org.example.note"));
    assert!(room_events.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5));
    // Account data is private: bob sees none of it (only his own default push rules).
    let bobs = s.sync(&bob, None, 0, None).await["account_data"]["events"].clone();
    let types: Vec<&str> = bobs.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["m.push_rules"]);

    assert_eq!(s.delete(&tag, Some(&alice.token), None).await.0, StatusCode::OK);
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/user/{}/rooms/{room}/tags", alice.user_id), Some(&alice.token)).await.1,
        json!({"tags": {}})
    );
    assert_error(&s.put(&global, Some(&bob.token), json!({})).await, 403, "M_FORBIDDEN");
    assert_error(&s.get(&global, Some(&bob.token)).await, 403, "M_FORBIDDEN");
    let managed = format!("/_matrix/client/v3/user/{}/account_data/m.fully_read", alice.user_id);
    assert_error(&s.put(&managed, Some(&alice.token), json!({"event_id": "$x"})).await, 405, "M_BAD_JSON");
    let not_member = format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/x.y", bob.user_id);
    assert_error(&s.put(&not_member, Some(&bob.token), json!({})).await, 403, "M_FORBIDDEN");
    s.stop().await;
}

async fn to_device_until_acknowledged(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let bob_laptop = s.login_fast(&bob).await;
    let phone_token = next(&s.sync(&bob, None, 0, None).await);
    let laptop_token = next(&s.sync(&bob_laptop, None, 0, None).await);

    let send = |txn: &str, messages: Value| {
        let path = format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}");
        let (s, token) = (&s, alice.token.clone());
        async move { s.put(&path, Some(&token), json!({"messages": messages})).await }
    };
    assert_eq!(send("t1", json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}})).await.0, StatusCode::OK);
    assert_eq!(
        send("t1", json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}})).await.0,
        StatusCode::OK,
        "a retry"
    );
    assert_eq!(send("t2", json!({bob.user_id.clone(): {"*": {"n": 2}}})).await.0, StatusCode::OK);

    let phone = s.sync(&bob, Some(&phone_token), 5_000, None).await;
    let contents: Vec<i64> =
        phone["to_device"]["events"].as_array().unwrap().iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect();
    assert_eq!(contents, [1, 2], "the retry was not queued twice");
    assert_eq!(phone["to_device"]["events"][0]["sender"], alice.user_id.as_str());
    assert_eq!(phone["to_device"]["events"][0]["type"], "m.room_key_request");
    let laptop = s.sync(&bob_laptop, Some(&laptop_token), 5_000, None).await;
    let contents: Vec<i64> =
        laptop["to_device"]["events"].as_array().unwrap().iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect();
    assert_eq!(contents, [2], "only '*' reaches the other device");

    // Not acknowledged yet: the same token gets them again; the next token acknowledges them.
    let again = s.sync(&bob, Some(&phone_token), 0, None).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2);
    let acked = s.sync(&bob, Some(&next(&again)), 0, None).await;
    assert_eq!(acked["to_device"]["events"], json!([]));
    let replay = s.sync(&bob, Some(&phone_token), 0, None).await;
    assert_eq!(replay["to_device"]["events"], json!([]), "deleted once acknowledged");
    let bad = s.put("/_matrix/client/v3/sendToDevice/m.x/t3", Some(&alice.token), json!({"messages": "nope"})).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    s.stop().await;
}

async fn typing_start_stop_expire(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let outsider = s.register_fast("outsider").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let token = next(&s.sync(&bob, None, 0, None).await);
    let typing_path = |user: &str| format!("/_matrix/client/v3/rooms/{room}/typing/{user}");
    let typers = |sync: &Value| {
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["type"] == "m.typing"))
            .map(|e| e["content"]["user_ids"].clone())
    };

    let waiting = s.sync(&bob, Some(&token), 10_000, None);
    let start = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.put(&typing_path(&alice.user_id), Some(&alice.token), json!({"typing": true, "timeout": 1000})).await
    };
    let (started, result) = tokio::join!(waiting, start);
    assert_eq!(result.0, StatusCode::OK);
    assert_eq!(typers(&started), Some(json!([alice.user_id])));

    // Without a refresh, typing ends by itself after its timeout.
    let expired = s.sync(&bob, Some(&next(&started)), 10_000, None).await;
    assert_eq!(typers(&expired), Some(json!([])));

    let stopped_token = next(&expired);
    s.put(&typing_path(&alice.user_id), Some(&alice.token), json!({"typing": true, "timeout": 30000})).await;
    let typing_again = s.sync(&bob, Some(&stopped_token), 10_000, None).await;
    assert_eq!(typers(&typing_again), Some(json!([alice.user_id])));
    s.put(&typing_path(&alice.user_id), Some(&alice.token), json!({"typing": false})).await;
    let stopped = s.sync(&bob, Some(&next(&typing_again)), 10_000, None).await;
    assert_eq!(typers(&stopped), Some(json!([])));

    assert_error(
        &s.put(&typing_path(&bob.user_id), Some(&alice.token), json!({"typing": true, "timeout": 1000})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(&typing_path(&outsider.user_id), Some(&outsider.token), json!({"typing": true, "timeout": 1000})).await,
        403,
        "M_FORBIDDEN",
    );
    s.stop().await;
}

async fn receipts_and_read_markers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let event = s.send_text(&alice, &room, "read me").await;
    let alice_token = next(&s.sync(&alice, None, 0, None).await);
    let bob_token = next(&s.sync(&bob, None, 0, None).await);

    let receipt = |kind: &str| format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{event}");
    assert_eq!(s.post(&receipt("m.read"), Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let seen = s.sync(&alice, Some(&alice_token), 5_000, None).await;
    let ephemeral = seen["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap().clone();
    let receipts = ephemeral.iter().find(|e| e["type"] == "m.receipt").expect("receipt delivered");
    assert!(receipts["content"][&event]["m.read"][&bob.user_id]["ts"].is_i64());

    // A private receipt reaches only its owner.
    let alice_token = next(&seen);
    assert_eq!(s.post(&receipt("m.read.private"), Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let own = s.sync(&bob, Some(&bob_token), 5_000, None).await;
    let own_receipts = own["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap().clone();
    assert!(own_receipts.iter().any(|e| e["content"][&event]["m.read.private"][&bob.user_id].is_object()));
    let other = s.sync(&alice, Some(&alice_token), 300, None).await;
    assert!(!other.to_string().contains("m.read.private"));

    let markers = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            Some(&bob.token),
            json!({"m.fully_read": event, "m.read": event}),
        )
        .await;
    assert_eq!(markers.0, StatusCode::OK, "{}", markers.1);
    let (_, fully_read) = s
        .get(
            &format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read", bob.user_id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(fully_read["event_id"], event.as_str());
    let threaded = s.post(&receipt("m.read"), Some(&bob.token), json!({"thread_id": "main"})).await;
    assert_eq!(threaded.0, StatusCode::OK);
    assert_error(
        &s.post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$unknown"), Some(&bob.token), json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    s.stop().await;
}

/// matrix-js-sdk (and so Element) reads the push rules before its first sync.
async fn default_push_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    // `/pushrules/` wraps the ruleset in `global`; `/pushrules/global/` is the ruleset itself.
    for (path, wrapped) in [("/_matrix/client/v3/pushrules/", true), ("/_matrix/client/v3/pushrules/global/", false)] {
        let (status, body) = s.get(path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ruleset = if wrapped { body["global"].clone() } else { body.clone() };
        let ids = |kind: &str| {
            ruleset[kind]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["rule_id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("override").first().map(String::as_str), Some(".m.rule.master"));
        assert!(ids("override").contains(&".m.rule.is_user_mention".to_owned()));
        assert!(ids("underride").contains(&".m.rule.message".to_owned()));
    }
    assert_error(&s.get("/_matrix/client/v3/pushrules/", None).await, 401, "M_MISSING_TOKEN");
    s.stop().await;
}
