//! The WebSocket stream (DESIGN.md section 8).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::common::{timeline, Backend, TestServer, User};

crate::backend_tests!(
    header_auth_and_live_frames,
    first_frame_auth_and_close_codes,
    stored_and_inline_filters,
    methods_match_rest,
    resume_without_loss_or_duplicates,
    shutdown_closes_with_4503,
    logout_closes_with_4401,
);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &TestServer, token: Option<&str>, query: &str) -> Ws {
    let url = format!("{}/_matrix/client/unstable/org.axon.ws/stream{query}", s.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "m.json".parse().unwrap());
    if let Some(token) = token {
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (ws, response) = connect_async(request).await.expect("websocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], "m.json");
    ws
}

/// The next JSON frame (skipping pings), within 20 s.
async fn frame(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close code the server ends the connection with.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn request(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    ws.send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into())).await.unwrap();
    loop {
        let answer = frame(ws).await;
        if answer["id"] == id {
            return answer;
        }
    }
}

/// Sync frames until one carries an event of `room` matching `pred`.
async fn until_event(ws: &mut Ws, room: &str, pred: impl Fn(&Value) -> bool) -> (Value, String) {
    loop {
        let f = frame(ws).await;
        if f["type"] != "sync" {
            continue;
        }
        let next = f["body"]["next_batch"].as_str().unwrap().to_owned();
        if let Some(event) = timeline(&f["body"], room).into_iter().find(|e| pred(e)) {
            return (event, next);
        }
    }
}

async fn setup(s: &TestServer) -> (User, User, String) {
    let alice = s.register_fast("alice").await;
    let bob = s.register_fast("bob").await;
    let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    (alice, bob, room)
}

async fn header_auth_and_live_frames(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.axon.ws"], true);
    let (alice, bob, room) = setup(&s).await;
    let mut ws = connect(&s, Some(&bob.token), "").await;
    let initial = frame(&mut ws).await;
    assert_eq!(initial["type"], "sync");
    assert!(initial["body"]["rooms"]["join"][&room].is_object(), "the first frame is an initial sync");
    let sent = s.send_text(&alice, &room, "over the socket").await;
    let (event, next) = until_event(&mut ws, &room, |e| e["event_id"] == sent.as_str()).await;
    assert_eq!(event["content"]["body"], "over the socket");
    // next_batch is a valid since for /sync too.
    let rest = s.sync(&bob, Some(&next), 0, None).await;
    assert_eq!(rest["rooms"]["join"], json!({}));
    assert_eq!(request(&mut ws, "p1", "ping", json!({})).await, json!({"id": "p1", "result": {}}));
    s.stop().await;
}

/// `?filter=` takes a stored filter's ID or a filter as JSON, as `/sync` does; an unknown ID (or
/// another user's) closes the stream with 4410.
async fn stored_and_inline_filters(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&s).await;
    for n in 0..3 {
        s.send_text(&alice, &room, &format!("message {n}")).await;
    }
    let one_event = json!({"room": {"timeline": {"limit": 1}}});
    let (status, stored) =
        s.post(&format!("/_matrix/client/v3/user/{}/filter", bob.user_id), Some(&bob.token), one_event.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let id = stored["filter_id"].as_str().unwrap();
    let inline = format!("?filter={}", crate::common::urlencode(&one_event.to_string()));
    for query in [format!("?filter={id}"), inline] {
        let mut ws = connect(&s, Some(&bob.token), &query).await;
        let initial = frame(&mut ws).await;
        let events = initial["body"]["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
        assert_eq!(events.len(), 1, "{query}: the filter's timeline limit");
        assert_eq!(events[0]["content"]["body"], "message 2");
    }
    let mut unknown = connect(&s, Some(&bob.token), "?filter=999").await;
    assert_eq!(close_code(&mut unknown).await, 4410);
    let mut not_theirs = connect(&s, Some(&alice.token), &format!("?filter={id}")).await;
    assert_eq!(close_code(&mut not_theirs).await, 4410);
    s.stop().await;
}

async fn first_frame_auth_and_close_codes(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, bob, room) = setup(&s).await;
    let mut ws = connect(&s, None, "").await;
    ws.send(Message::Text(json!({"method": "auth", "params": {"access_token": bob.token}}).to_string().into()))
        .await
        .unwrap();
    let initial = frame(&mut ws).await;
    assert!(initial["body"]["rooms"]["join"][&room].is_object());

    let mut bad = connect(&s, Some("axo_unknown"), "").await;
    assert_eq!(close_code(&mut bad).await, 4401);
    let mut bad_frame = connect(&s, None, "").await;
    bad_frame
        .send(Message::Text(json!({"method": "auth", "params": {"access_token": "nope"}}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut bad_frame).await, 4401);
    let mut bad_since = connect(&s, Some(&bob.token), "?since=garbage").await;
    assert_eq!(close_code(&mut bad_since).await, 4410);
    let mut silent = connect(&s, None, "").await;
    assert_eq!(close_code(&mut silent).await, 4408, "no auth frame within 10 s");
    s.stop().await;
}

async fn methods_match_rest(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&s).await;
    let outsider = s.register_fast("outsider").await;
    let mut ws = connect(&s, Some(&alice.token), "").await;
    frame(&mut ws).await;
    let mut bob_ws = connect(&s, Some(&bob.token), "").await;
    frame(&mut bob_ws).await;

    let sent = request(
        &mut ws,
        "txn-1",
        "send",
        json!({"room_id": room, "type": "m.room.message", "content": {"msgtype": "m.text", "body": "hi"}}),
    )
    .await;
    let event_id = sent["result"]["event_id"].as_str().expect("event_id").to_owned();
    let again = request(
        &mut ws,
        "txn-1",
        "send",
        json!({"room_id": room, "type": "m.room.message", "content": {"msgtype": "m.text", "body": "hi"}}),
    )
    .await;
    assert_eq!(again["result"]["event_id"], event_id.as_str(), "same id, same event");
    // The same device's REST send with that transaction ID is the same transaction.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn-1");
    assert_eq!(
        s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "hi"})).await.1["event_id"],
        event_id.as_str()
    );

    let state = request(
        &mut ws,
        "s1",
        "state",
        json!({"room_id": room, "type": "m.room.topic", "state_key": "", "content": {"topic": "ws"}}),
    )
    .await;
    assert!(state["result"]["event_id"].is_string(), "{state}");
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"), Some(&alice.token)).await.1["topic"],
        "ws"
    );

    assert_eq!(
        request(&mut ws, "t1", "typing", json!({"room_id": room, "typing": true, "timeout": 5000})).await["result"],
        json!({})
    );
    loop {
        let f = frame(&mut bob_ws).await;
        let typing = f["body"]["rooms"]["join"][&room]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        if typing.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([alice.user_id])) {
            break;
        }
    }
    assert_eq!(
        request(&mut ws, "r1", "receipt", json!({"room_id": room, "event_id": event_id})).await["result"],
        json!({})
    );
    assert_eq!(
        request(&mut ws, "m1", "read_markers", json!({"room_id": room, "m.fully_read": event_id})).await["result"],
        json!({})
    );

    for (id, method, params, errcode) in [
        ("e1", "fly", json!({}), "M_UNRECOGNIZED"),
        ("e2", "send", json!({"type": "m.room.message", "content": {}}), "M_MISSING_PARAM"),
        ("e3", "send", json!({"room_id": "not-a-room", "type": "m.room.message", "content": {}}), "M_INVALID_PARAM"),
        (
            "e4",
            "send",
            json!({"room_id": room, "type": "m.room.message", "content": {"body": "x".repeat(100_000)}}),
            "M_TOO_LARGE",
        ),
    ] {
        assert_eq!(request(&mut ws, id, method, params).await["error"]["errcode"], errcode, "{method}");
    }
    // A frame many times the server's read buffer (1 KiB) arrives whole.
    let long = "y".repeat(20_000);
    let sent = request(
        &mut ws,
        "l1",
        "send",
        json!({"room_id": room, "type": "m.room.message", "content": {"msgtype": "m.text", "body": long}}),
    )
    .await;
    let long_id = sent["result"]["event_id"].as_str().unwrap_or_else(|| panic!("{sent}"));
    let stored = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{long_id}"), Some(&bob.token)).await;
    assert_eq!(stored.1["content"]["body"], long.as_str());
    let mut outsider_ws = connect(&s, Some(&outsider.token), "").await;
    frame(&mut outsider_ws).await;
    let refused = request(
        &mut outsider_ws,
        "o1",
        "send",
        json!({"room_id": room, "type": "m.room.message", "content": {"body": "let me in"}}),
    )
    .await;
    assert_eq!(refused["error"]["errcode"], "M_FORBIDDEN");
    ws.send(Message::Text("not json".into())).await.unwrap();
    let answer = loop {
        let f = frame(&mut ws).await;
        if f["type"] != "sync" {
            break f;
        }
    };
    assert_eq!(answer["error"]["errcode"], "M_BAD_JSON");
    s.stop().await;
}

async fn resume_without_loss_or_duplicates(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&s).await;
    let mut ws = connect(&s, Some(&bob.token), "").await;
    let mut token = frame(&mut ws).await["body"]["next_batch"].as_str().unwrap().to_owned();
    let mut seen: Vec<String> = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    for round in 0..3 {
        for n in 0..5 {
            sent.push(s.send_text(&alice, &room, &format!("{round}-{n}")).await);
        }
        // Read one frame, then drop the connection and resume from the last token processed.
        let f = frame(&mut ws).await;
        for event in timeline(&f["body"], &room) {
            seen.push(event["event_id"].as_str().unwrap().to_owned());
        }
        token = f["body"]["next_batch"].as_str().unwrap().to_owned();
        drop(ws);
        ws = connect(&s, Some(&bob.token), &format!("?since={token}")).await;
    }
    while seen.len() < sent.len() {
        let f = frame(&mut ws).await;
        for event in timeline(&f["body"], &room) {
            seen.push(event["event_id"].as_str().unwrap().to_owned());
        }
        token = f["body"]["next_batch"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, sent, "every event once, in order, across reconnects");
    assert_eq!(s.sync(&bob, Some(&token), 0, None).await["rooms"]["join"], json!({}));
    s.stop().await;
}

async fn shutdown_closes_with_4503(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, bob, _) = setup(&s).await;
    let mut ws = connect(&s, Some(&bob.token), "").await;
    frame(&mut ws).await;
    let reader = tokio::spawn(async move { close_code(&mut ws).await });
    s.stop().await;
    assert_eq!(reader.await.unwrap(), 4503);
}

/// A stream whose device logs out ends with 4401 instead of carrying the next news, and takes
/// no more frames.
async fn logout_closes_with_4401(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (alice, bob, room) = setup(&s).await;
    let laptop = s.login_fast(&bob).await;
    let mut ws = connect(&s, Some(&laptop.token), "").await;
    assert!(frame(&mut ws).await["body"]["rooms"]["join"][&room].is_object());
    let mut kept = connect(&s, Some(&bob.token), "").await;
    frame(&mut kept).await;

    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&laptop.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let sent = s.send_text(&alice, &room, "after the logout").await;
    assert_eq!(close_code(&mut ws).await, 4401);
    // The device that stayed logged in still gets the news.
    let (event, _) = until_event(&mut kept, &room, |e| e["event_id"] == sent.as_str()).await;
    assert_eq!(event["content"]["body"], "after the logout");
    s.stop().await;
}
