//! Push notifications against a real HTTP push gateway started on 127.0.0.1: rules, pushers,
//! counts in sync, /notifications, and delivery through outages and restarts.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::{
    assert_error, hold_push_evaluation, release_push_evaluation, urlencode, Backend, TestServer, User,
};

crate::backend_tests!(
    push_rules_crud_and_sync,
    malformed_rules_and_pushers,
    pusher_lifecycle,
    dm_group_and_mention_pushes_with_counts,
    counts_of_rooms_with_and_without_new_events,
    muted_room_does_not_notify,
    event_id_only_format,
    rejected_pushkey_removes_pusher,
    delivery_survives_gateway_outage_and_restart,
    threaded_receipts_clear_their_thread,
    receipts_before_evaluation_count,
    slow_gateway_delays_nobody_else,
);

/// A push gateway (Push Gateway API) that records what it receives and rejects what it is told to.
#[derive(Clone, Default)]
pub(crate) struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    reject: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    pub(crate) async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        let gateway = Self::default();
        gateway.serve(listener);
        (gateway, url)
    }

    fn serve(&self, listener: TcpListener) {
        let gateway = self.clone();
        let app = axum::Router::new().route(
            "/_matrix/push/v1/notify",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let gateway = gateway.clone();
                async move {
                    gateway.received.lock().unwrap().push(body["notification"].clone());
                    axum::Json(json!({"rejected": *gateway.reject.lock().unwrap()}))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until a received notification satisfies `wanted`, and returns it.
    pub(crate) async fn wait_for(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            if let Some(found) = self.received().into_iter().find(|n| wanted(n)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the gateway never received {what}; it has {:?}", self.received());
    }
}

pub(crate) async fn add_pusher(
    s: &TestServer,
    user: &User,
    pushkey: &str,
    url: &str,
    extra: Value,
) -> (StatusCode, Value) {
    let mut data = json!({"url": url});
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            data[k] = v.clone();
        }
    }
    s.post(
        "/_matrix/client/v3/pushers/set",
        Some(&user.token),
        json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": data,
        }),
    )
    .await
}

async fn pushers(s: &TestServer, user: &User) -> Vec<Value> {
    let (status, body) = s.get("/_matrix/client/v3/pushers", Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["pushers"].as_array().unwrap().clone()
}

/// Long-polls as `user` until `room_id` shows `event_id`; returns that response.
pub(crate) async fn sync_until_event(s: &TestServer, user: &User, since: &str, room_id: &str, event_id: &str) -> Value {
    let mut since = since.to_owned();
    for _ in 0..50 {
        let sync = s.sync(user, Some(&since), 5_000, None).await;
        if crate::common::timeline(&sync, room_id).iter().any(|e| e["event_id"] == event_id) {
            return sync;
        }
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("{event_id} never reached {}", user.user_id);
}

pub(crate) fn counts(sync: &Value, room_id: &str) -> (i64, i64) {
    let counts = &sync["rooms"]["join"][room_id]["unread_notifications"];
    (counts["notification_count"].as_i64().unwrap(), counts["highlight_count"].as_i64().unwrap())
}

pub(crate) async fn receipt(s: &TestServer, user: &User, room_id: &str, event_id: &str, thread: Option<&str>) {
    let body = thread.map_or_else(|| json!({}), |t| json!({"thread_id": t}));
    let path = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{}", urlencode(event_id));
    let (status, body) = s.post(&path, Some(&user.token), body).await;
    assert_eq!(status, StatusCode::OK, "receipt: {body}");
}

/// Sends a reply in the thread of `root`; returns its event ID.
async fn thread_reply(s: &TestServer, user: &User, room_id: &str, root: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/reply1");
    let reply = json!({"msgtype": "m.text", "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let (status, sent) = s.put(&path, Some(&user.token), reply).await;
    assert_eq!(status, StatusCode::OK);
    sent["event_id"].as_str().unwrap().to_owned()
}

async fn dm(s: &TestServer, alice: &User, bob: &User) -> String {
    let room = s
        .create_room(alice, json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]}))
        .await;
    assert_eq!(s.join(bob, &room).await.0, StatusCode::OK);
    // A sync shows only evaluated events: after it, the invite's push (if any) is queued.
    s.sync(bob, None, 0, None).await;
    room
}

async fn push_rules_crud_and_sync(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let first = s.sync(&alice, None, 0, None).await;
    let rules = first["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules");
    let rules = rules.expect("the first sync carries m.push_rules")["content"]["global"].clone();
    let ids: Vec<&str> = rules["override"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], ".m.rule.master");
    for id in
        [".m.rule.suppress_notices", ".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.roomnotif"]
    {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, all) = s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["global"], rules);
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let base = "/_matrix/client/v3/pushrules/global";
    let cats = json!({"actions": ["notify"], "pattern": "cats"});
    assert_eq!(s.put(&format!("{base}/content/cats"), Some(&alice.token), cats).await.0, StatusCode::OK);
    let dogs = json!({"actions": ["notify"], "pattern": "dogs"});
    let (status, _) = s.put(&format!("{base}/content/dogs?before=cats"), Some(&alice.token), dogs).await;
    assert_eq!(status, StatusCode::OK);
    let (_, content) = s.get(&format!("{base}/content"), Some(&alice.token)).await;
    let order: Vec<&str> =
        content.as_array().map_or_else(Vec::new, |a| a.iter().map(|r| r["rule_id"].as_str().unwrap()).collect());
    let (_, all) = s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    let order_all: Vec<&str> =
        all["global"]["content"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert!(order.is_empty() || order == order_all);
    let dogs_at = order_all.iter().position(|id| *id == "dogs").unwrap();
    let cats_at = order_all.iter().position(|id| *id == "cats").unwrap();
    assert!(dogs_at < cats_at, "before=cats puts dogs first: {order_all:?}");

    let (status, rule) = s.get(&format!("{base}/content/cats"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rule["pattern"], "cats");
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["default"], false);

    let enabled = format!("{base}/content/cats/enabled");
    assert_eq!(s.put(&enabled, Some(&alice.token), json!({"enabled": false})).await.0, StatusCode::OK);
    assert_eq!(s.get(&enabled, Some(&alice.token)).await.1["enabled"], false);
    let actions = format!("{base}/content/cats/actions");
    let new_actions = json!({"actions": ["notify", {"set_tweak": "highlight"}]});
    assert_eq!(s.put(&actions, Some(&alice.token), new_actions).await.0, StatusCode::OK);
    assert_eq!(s.get(&actions, Some(&alice.token)).await.1["actions"], json!(["notify", {"set_tweak": "highlight"}]));
    // Server-default rules can be switched and changed, not deleted.
    let master = format!("{base}/override/.m.rule.master/enabled");
    assert_eq!(s.put(&master, Some(&alice.token), json!({"enabled": true})).await.0, StatusCode::OK);
    assert_eq!(s.get(&master, Some(&alice.token)).await.1["enabled"], true);
    assert_error(
        &s.delete(&format!("{base}/override/.m.rule.master"), Some(&alice.token), None).await,
        400,
        "M_INVALID_PARAM",
    );

    assert_eq!(s.delete(&format!("{base}/content/dogs"), Some(&alice.token), None).await.0, StatusCode::OK);
    assert_error(&s.get(&format!("{base}/content/dogs"), Some(&alice.token)).await, 404, "M_NOT_FOUND");
    assert_error(&s.delete(&format!("{base}/content/dogs"), Some(&alice.token), None).await, 404, "M_NOT_FOUND");

    // Every change reached alice's devices as m.push_rules account data.
    let next = s.sync(&alice, Some(&since), 0, None).await;
    let synced = next["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules");
    let synced = synced.expect("changed rules are synced")["content"]["global"].clone();
    let content: Vec<&str> =
        synced["content"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert!(content.contains(&"cats") && !content.contains(&"dogs"), "{content:?}");
    let master_rule = synced["override"].as_array().unwrap().iter().find(|r| r["rule_id"] == ".m.rule.master").unwrap();
    assert_eq!(master_rule["enabled"], true);
    // Rules are per user.
    let bob = s.register_fast("bob").await;
    assert_error(&s.get(&format!("{base}/content/cats"), Some(&bob.token)).await, 404, "M_NOT_FOUND");
    s.stop().await;
}

async fn malformed_rules_and_pushers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let t = Some(alice.token.as_str());
    let base = "/_matrix/client/v3/pushrules/global";
    let ok_rule = json!({"actions": ["notify"], "pattern": "x"});
    // A rule ID of the server's namespace, a kind that does not exist, an unknown anchor.
    assert_error(&s.put(&format!("{base}/content/.m.rule.mine"), t, ok_rule.clone()).await, 400, "M_INVALID_PARAM");
    let status = s.put(&format!("{base}/nonsense/x"), t, ok_rule.clone()).await.0;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&s.put(&format!("{base}/content/x?before=nope"), t, ok_rule.clone()).await, 404, "M_NOT_FOUND");
    // Bodies of the wrong shape.
    assert_error(&s.put(&format!("{base}/content/x"), t, json!({"actions": "notify"})).await, 400, "M_BAD_JSON");
    assert_error(&s.put(&format!("{base}/content/x"), t, json!({"actions": ["notify"]})).await, 400, "M_BAD_JSON");
    let bad_enabled = s.put(&format!("{base}/override/.m.rule.master/enabled"), t, json!({"enabled": "yes"})).await;
    assert_error(&bad_enabled, 400, "M_BAD_JSON");
    assert_error(
        &s.put(&format!("{base}/override/nope/enabled"), t, json!({"enabled": true})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&s.put(&format!("{base}/override/nope/actions"), t, json!({"actions": []})).await, 404, "M_NOT_FOUND");
    // Nothing was stored by the refused requests.
    let (_, all) = s.get("/_matrix/client/v3/pushrules/", t).await;
    assert!(all["global"]["content"].as_array().unwrap().iter().all(|r| r["default"] == true), "{all}");

    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    assert_error(&add_pusher(&s, &alice, "k", "http://127.0.0.1:9/elsewhere", json!({})).await, 400, "M_INVALID_PARAM");
    assert_error(&add_pusher(&s, &alice, "k", "not a url", json!({})).await, 400, "M_INVALID_PARAM");
    assert_error(&add_pusher(&s, &alice, &"k".repeat(513), url, json!({})).await, 400, "M_INVALID_PARAM");
    let no_url = json!({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A",
        "device_display_name": "D", "lang": "en", "data": {}});
    assert_eq!(s.post("/_matrix/client/v3/pushers/set", t, no_url).await.0, StatusCode::BAD_REQUEST);
    let missing = json!({"kind": "http", "pushkey": "k"});
    assert_error(&s.post("/_matrix/client/v3/pushers/set", t, missing).await, 400, "M_BAD_JSON");
    let email = json!({"kind": "email", "app_id": "m.email", "pushkey": "a@example.org", "app_display_name": "E",
        "device_display_name": "D", "lang": "en", "data": {}});
    assert_error(&s.post("/_matrix/client/v3/pushers/set", t, email).await, 400, "M_INVALID_PARAM");
    assert!(pushers(&s, &alice).await.is_empty());
    s.stop().await;
}

async fn pusher_lifecycle(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register("alice").await;
    let bob = s.register_fast("bob").await;
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    assert_eq!(add_pusher(&s, &alice, "key-1", url, json!({"format": "event_id_only"})).await.0, StatusCode::OK);
    let listed = pushers(&s, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "key-1");
    assert_eq!(listed[0]["kind"], "http");
    assert_eq!(listed[0]["data"]["url"], url);
    assert_eq!(listed[0]["data"]["format"], "event_id_only");
    assert_eq!(listed[0]["app_display_name"], "Example");
    // Setting it again updates it.
    assert_eq!(add_pusher(&s, &alice, "key-1", url, json!({})).await.0, StatusCode::OK);
    let listed = pushers(&s, &alice).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["data"].get("format").is_none());

    // Without append, the same app and pushkey of another user is taken over; with it, shared.
    assert_eq!(add_pusher(&s, &bob, "key-1", url, json!({})).await.0, StatusCode::OK);
    assert!(pushers(&s, &alice).await.is_empty());
    assert_eq!(add_pusher(&s, &alice, "key-1", url, json!({})).await.0, StatusCode::OK);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&bob.token),
            json!({"kind": "http", "app_id": "org.example.app", "pushkey": "key-1", "append": true,
                "app_display_name": "Example", "device_display_name": "Phone", "lang": "en", "data": {"url": url}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pushers(&s, &alice).await.len(), 1);
    assert_eq!(pushers(&s, &bob).await.len(), 1);

    // kind null deletes.
    let delete = json!({"kind": null, "app_id": "org.example.app", "pushkey": "key-1"});
    assert_eq!(s.post("/_matrix/client/v3/pushers/set", Some(&bob.token), delete).await.0, StatusCode::OK);
    assert!(pushers(&s, &bob).await.is_empty());

    // A pusher belongs to the access token that made it: logging that device out removes it,
    // logging out another device does not.
    let phone = s.login(&alice, None).await;
    assert_eq!(add_pusher(&s, &phone, "key-2", url, json!({})).await.0, StatusCode::OK);
    assert_eq!(pushers(&s, &alice).await.len(), 2);
    assert_eq!(s.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await.0, StatusCode::OK);
    let left: Vec<Value> = pushers(&s, &alice).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["pushkey"], "key-1");
    assert_eq!(s.post("/_matrix/client/v3/logout/all", Some(&alice.token), json!({})).await.0, StatusCode::OK);
    let again = s.login(&alice, None).await;
    assert!(pushers(&s, &again).await.is_empty());
    s.stop().await;
}

async fn dm_group_and_mention_pushes_with_counts(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (gateway, url) = Gateway::start().await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let carol = s.register_fast("carol").await;
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &url, json!({})).await.0, StatusCode::OK);
    let direct = dm(&s, &alice, &bob).await;
    let group = s.create_room(&alice, json!({"preset": "public_chat", "name": "Lunch"})).await;
    assert_eq!(s.join(&bob, &group).await.0, StatusCode::OK);
    assert_eq!(s.join(&carol, &group).await.0, StatusCode::OK);
    let since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    // A DM notifies with sound (.m.rule.room_one_to_one); the counts come with the event.
    let hello = s.send_text(&alice, &direct, "hello there").await;
    let sync = sync_until_event(&s, &bob, &since, &direct, &hello).await;
    assert_eq!(counts(&sync, &direct), (1, 0));
    let push = gateway.wait_for("the DM", |n| n["event_id"] == hello.as_str()).await;
    assert_eq!(push["room_id"], direct.as_str());
    assert_eq!(push["type"], "m.room.message");
    assert_eq!(push["sender"], alice.user_id.as_str());
    assert_eq!(push["sender_display_name"], "alice");
    assert_eq!(push["content"]["body"], "hello there");
    assert_eq!(push["prio"], "high");
    assert_eq!(push["counts"]["unread"], 1);
    let device = &push["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "bob-phone");
    assert!(device["pushkey_ts"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(device["data"].get("url").is_none());

    // A group message notifies through .m.rule.message (no sound); carol's own does not reach her.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let lunch = s.send_text(&alice, &group, "lunch at noon").await;
    let sync = sync_until_event(&s, &bob, &since, &group, &lunch).await;
    assert_eq!(counts(&sync, &group), (1, 0));
    let push = gateway.wait_for("the group message", |n| n["event_id"] == lunch.as_str()).await;
    assert_eq!(push["room_name"], "Lunch");
    assert_eq!(push["counts"]["unread"], 2);
    assert!(push["devices"][0]["tweaks"].get("sound").is_none());

    // A mention (m.mentions) highlights.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{group}/send/m.room.message/mention1");
    let body = json!({"msgtype": "m.text", "body": "bob: see you", "m.mentions": {"user_ids": [bob.user_id]}});
    let (status, sent) = s.put(&path, Some(&alice.token), body).await;
    assert_eq!(status, StatusCode::OK);
    let mention = sent["event_id"].as_str().unwrap().to_owned();
    let sync = sync_until_event(&s, &bob, &since, &group, &mention).await;
    assert_eq!(counts(&sync, &group), (2, 1));
    let push = gateway.wait_for("the mention", |n| n["event_id"] == mention.as_str()).await;
    assert_eq!(push["devices"][0]["tweaks"]["highlight"], true);

    // /notifications lists them newest first; only=highlight keeps the mention.
    let (status, list) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> =
        list["notifications"].as_array().unwrap().iter().map(|n| n["event"]["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids[..3], [mention.as_str(), lunch.as_str(), hello.as_str()]);
    // The oldest is the DM's invite, read since bob joined.
    assert_eq!(ids.len(), 4);
    assert_eq!(list["notifications"][3]["event"]["type"], "m.room.member");
    assert_eq!(list["notifications"][3]["read"], true);
    assert_eq!(list["notifications"][0]["read"], false);
    assert_eq!(list["notifications"][0]["room_id"], group.as_str());
    let (_, page) = s.get("/_matrix/client/v3/notifications?limit=2", Some(&bob.token)).await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 2);
    let next = page["next_token"].as_str().expect("a next page");
    let (_, rest) = s.get(&format!("/_matrix/client/v3/notifications?from={next}"), Some(&bob.token)).await;
    assert_eq!(rest["notifications"][0]["event"]["event_id"], hello.as_str());
    let (_, highlights) = s.get("/_matrix/client/v3/notifications?only=highlight", Some(&bob.token)).await;
    let ids: Vec<&str> = highlights["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mention.as_str()]);
    assert_error(&s.get("/_matrix/client/v3/notifications?from=zzz", Some(&bob.token)).await, 400, "M_INVALID_PARAM");
    // Alice's own messages never notify her.
    let (_, own) = s.get("/_matrix/client/v3/notifications", Some(&alice.token)).await;
    assert!(own["notifications"].as_array().unwrap().is_empty(), "{own}");

    // A receipt at the latest event clears the room; the sync shows it.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    receipt(&s, &bob, &group, &mention, None).await;
    let sync = s.sync(&bob, Some(&since), 5_000, None).await;
    assert_eq!(counts(&sync, &group), (0, 0));
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    // Reading the DM too leaves nothing unread: the apps get a badge of zero.
    receipt(&s, &bob, &direct, &hello, None).await;
    let sync = s.sync(&bob, Some(&since), 5_000, None).await;
    assert_eq!(counts(&sync, &direct), (0, 0));
    let badge = gateway.wait_for("a badge reset", |n| n.get("event_id").is_none()).await;
    assert_eq!(badge["counts"]["unread"], 0);
    assert_eq!(badge["devices"][0]["pushkey"], "bob-phone");
    let (_, list) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert!(list["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true), "{list}");
    s.stop().await;
}

/// One sync shows a room for its new event and another only for a receipt: the first room's counts
/// are read with its timeline, the second's apart; both must be right.
async fn counts_of_rooms_with_and_without_new_events(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let direct = dm(&s, &alice, &bob).await;
    let group = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &group).await.0, StatusCode::OK);
    let since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let hello = s.send_text(&alice, &direct, "hello").await;
    let sync = sync_until_event(&s, &bob, &since, &direct, &hello).await;
    assert_eq!(counts(&sync, &direct), (1, 0));
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    receipt(&s, &alice, &direct, &hello, None).await;
    let lunch = s.send_text(&alice, &group, "lunch").await;
    let second = s.send_text(&alice, &group, "at noon").await;
    let sync = sync_until_event(&s, &bob, &since, &group, &second).await;
    assert!(crate::common::timeline(&sync, &group).iter().any(|e| e["event_id"] == lunch), "{sync}");
    assert!(crate::common::timeline(&sync, &direct).is_empty(), "{sync}");
    assert!(sync["rooms"]["join"][&direct]["ephemeral"]["events"].to_string().contains("m.receipt"), "{sync}");
    assert_eq!(counts(&sync, &group), (2, 0));
    assert_eq!(counts(&sync, &direct), (1, 0));
    s.stop().await;
}

async fn muted_room_does_not_notify(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (gateway, url) = Gateway::start().await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &url, json!({})).await.0, StatusCode::OK);
    let muted = dm(&s, &alice, &bob).await;
    let other = dm(&s, &alice, &bob).await;
    // Element's "mute": an override rule matching the room, with no actions.
    let rule = json!({"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": muted}]});
    let path = format!("/_matrix/client/v3/pushrules/global/override/{}", urlencode(&muted));
    assert_eq!(s.put(&path, Some(&bob.token), rule).await.0, StatusCode::OK);

    let since = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let quiet = s.send_text(&alice, &muted, "shh").await;
    let loud = s.send_text(&alice, &other, "hey").await;
    // Pushes go out in event order, so once the later one arrived the muted one would have too.
    gateway.wait_for("the unmuted message", |n| n["event_id"] == loud.as_str()).await;
    assert!(gateway.received().iter().all(|n| n["event_id"] != quiet.as_str()));
    let sync = sync_until_event(&s, &bob, &since, &other, &loud).await;
    assert_eq!(counts(&sync, &other), (1, 0));
    let full = s.sync(&bob, None, 0, None).await;
    assert_eq!(counts(&full, &muted), (0, 0));
    s.stop().await;
}

async fn event_id_only_format(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (gateway, url) = Gateway::start().await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &url, json!({"format": "event_id_only"})).await.0, StatusCode::OK);
    let room = dm(&s, &alice, &bob).await;
    let event = s.send_text(&alice, &room, "secret words").await;
    let push = gateway.wait_for("the message", |n| n["event_id"] == event.as_str()).await;
    assert_eq!(push["room_id"], room.as_str());
    assert_eq!(push["counts"]["unread"], 1);
    assert_eq!(push["devices"][0]["data"]["format"], "event_id_only");
    for absent in ["content", "sender", "type", "sender_display_name", "room_name"] {
        assert!(push.get(absent).is_none(), "{absent} in {push}");
    }
    s.stop().await;
}

async fn rejected_pushkey_removes_pusher(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (gateway, url) = Gateway::start().await;
    gateway.reject.lock().unwrap().push("stale-key".into());
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = dm(&s, &alice, &bob).await;
    assert_eq!(add_pusher(&s, &bob, "stale-key", &url, json!({})).await.0, StatusCode::OK);
    let event = s.send_text(&alice, &room, "anyone there?").await;
    gateway.wait_for("the message", |n| n["event_id"] == event.as_str()).await;
    for _ in 0..500 {
        if pushers(&s, &bob).await.is_empty() {
            s.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the rejected pusher was kept");
}

async fn delivery_survives_gateway_outage_and_restart(backend: Backend) {
    let fast_retries = |c: &mut axon::config::Config| {
        c.push.retry_initial = 0.05;
        c.push.retry_max = 0.2;
        c.push.gateway_timeout = 2.0;
    };
    let s = TestServer::start_with(backend, fast_retries).await;
    // The gateway's address is reserved, then closed: it is down.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}/_matrix/push/v1/notify");
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &url, json!({})).await.0, StatusCode::OK);
    let room = dm(&s, &alice, &bob).await;
    let event = s.send_text(&alice, &room, "are you up?").await;

    // Delivery fails and is retried.
    let pool = s.db.pool().await;
    let mut attempts = 0i64;
    for _ in 0..500 {
        attempts = sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(attempts), 0) FROM push_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
        if attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(attempts >= 2, "delivery to a dead gateway is retried");
    pool.close().await;

    // Axon restarts with the push still queued; then the gateway comes back.
    let s = s.restart(fast_retries).await;
    let gateway = Gateway::default();
    gateway.serve(TcpListener::bind(addr).await.unwrap());
    let push = gateway.wait_for("the queued message", |n| n["event_id"] == event.as_str()).await;
    assert_eq!(push["content"]["body"], "are you up?");
    // Once delivered it is sent once, and the queue is empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.received().iter().filter(|n| n["event_id"] == event.as_str()).count(), 1);
    let pool = s.db.pool().await;
    let queued = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM push_queue").fetch_one(&pool).await.unwrap();
    assert_eq!(queued, 0);
    pool.close().await;
    s.stop().await;
}

async fn threaded_receipts_clear_their_thread(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let root = s.send_text(&alice, &room, "thread root").await;
    let reply_id = thread_reply(&s, &alice, &room, &root).await;
    let last = s.send_text(&alice, &room, "main again").await;

    let per_thread = json!({"room": {"timeline": {"unread_thread_notifications": true}}});
    let filtered = |sync: &Value| sync["rooms"]["join"][&room].clone();
    let sync = s.sync(&bob, None, 0, Some(&per_thread)).await;
    let joined = filtered(&sync);
    assert_eq!(joined["unread_notifications"]["notification_count"], 2, "{joined}");
    assert_eq!(joined["unread_thread_notifications"][&root]["notification_count"], 1, "{joined}");
    // Without the filter option, one count for the room.
    assert_eq!(counts(&s.sync(&bob, None, 0, None).await, &room), (3, 0));

    // A receipt in the thread clears the thread only.
    receipt(&s, &bob, &room, &reply_id, Some(&root)).await;
    let joined = filtered(&s.sync(&bob, None, 0, Some(&per_thread)).await);
    assert!(joined.get("unread_thread_notifications").is_none_or(|t| t.get(&root).is_none()), "{joined}");
    assert_eq!(joined["unread_notifications"]["notification_count"], 2);
    // A main-timeline receipt clears the main timeline.
    receipt(&s, &bob, &room, &last, Some("main")).await;
    assert_eq!(counts(&s.sync(&bob, None, 0, None).await, &room), (0, 0));
    s.stop().await;
}

/// A receipt can reach the server before the events it covers are evaluated (a fast client, a
/// busy evaluator): the notifications recorded after it are still counted as read.
async fn receipts_before_evaluation_count(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let before = s.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();
    let root = s.send_text(&alice, &room, "thread root").await;
    let shown = sync_until_event(&s, &bob, &before, &room, &root).await;
    let token = shown["next_batch"].as_str().unwrap().to_owned();
    receipt(&s, &bob, &room, &root, None).await;

    hold_push_evaluation(&s).await;
    let main = s.send_text(&alice, &room, "main timeline").await;
    let reply_id = thread_reply(&s, &alice, &room, &root).await;
    // Bob's client read both before the server evaluated either.
    receipt(&s, &bob, &room, &main, Some("main")).await;
    receipt(&s, &bob, &room, &reply_id, Some(&root)).await;
    release_push_evaluation(&s).await;

    sync_until_event(&s, &bob, &token, &room, &reply_id).await;
    assert_eq!(counts(&s.sync(&bob, None, 0, None).await, &room), (0, 0));
    let per_thread = json!({"room": {"timeline": {"unread_thread_notifications": true}}});
    let joined = &s.sync(&bob, None, 0, Some(&per_thread)).await["rooms"]["join"][&room];
    assert!(joined.get("unread_thread_notifications").is_none_or(|t| t.get(&root).is_none()), "{joined}");
    // The notifications were recorded, unread: only the receipts make them read.
    let (_, listed) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    let ids: Vec<&str> =
        listed["notifications"].as_array().unwrap().iter().filter_map(|n| n["event"]["event_id"].as_str()).collect();
    assert!(ids.contains(&main.as_str()) && ids.contains(&reply_id.as_str()), "{listed}");
    s.stop().await;
}

async fn slow_gateway_delays_nobody_else(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.push.gateway_timeout = 60.0).await;
    // Bob's gateway accepts connections and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/_matrix/push/v1/notify", hanging.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            axum::Json(json!({}))
        }),
    );
    tokio::spawn(async move { axum::serve(hanging, app).await });
    let (gateway, url) = Gateway::start().await;
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let carol = s.register_fast("carol").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    for user in [&bob, &carol] {
        assert_eq!(s.join(user, &room).await.0, StatusCode::OK);
        s.sync(user, None, 0, None).await;
    }
    assert_eq!(add_pusher(&s, &bob, "bob-phone", &hanging_url, json!({})).await.0, StatusCode::OK);
    assert_eq!(add_pusher(&s, &carol, "carol-phone", &url, json!({})).await.0, StatusCode::OK);

    // Each message is accepted and reaches carol's gateway while bob's hangs on the first.
    for text in ["one", "two", "three"] {
        let event = s.send_text(&alice, &room, text).await;
        gateway.wait_for(text, |n| n["event_id"] == event.as_str()).await;
    }
    assert!(gateway.received().iter().all(|n| n["devices"][0]["pushkey"] == "carol-phone"));
    s.stop().await;
}
