//! Several processes: two servers on one PostgreSQL database behave as one; SQLite has one owner.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{
    assert_error, forward_extremity_count, prev_events, test_config, timeline, Backend, TestDatabase, TestServer, User,
};

/// A second server on the same SQLite file refuses to start, with a message saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_one_owner() {
    let s = TestServer::start(Backend::Sqlite).await;
    let second = axon::server::start(test_config(&s.db.url)).await;
    let message = second.err().expect("the second server refuses").to_string();
    assert!(message.contains("another axon process"), "{message}");
    s.stop().await;
}

/// A second server on server A's database.
async fn second_server(a: &TestServer) -> TestServer {
    let running_b = axon::server::start(test_config(&a.db.url)).await.expect("second server starts");
    TestServer {
        backend: Backend::Postgres,
        base: format!("http://{}", running_b.client_addr),
        http: reqwest::Client::new(),
        db: TestDatabase::borrowed(&a.db.url),
        running: Some(running_b),
    }
}

/// Stops the second server, then the first (which drops the database).
async fn stop_both(a: TestServer, b: TestServer) {
    if let Some(running) = b.running {
        running.shutdown().await;
    }
    a.stop().await;
}

/// The notifications on the bus of the test server's database within `wait`, as text.
async fn bus_heard(listener: &mut sqlx::postgres::PgListener, wait: Duration) -> Vec<String> {
    let mut heard = Vec::new();
    while let Ok(Ok(notification)) = tokio::time::timeout(wait, listener.recv()).await {
        heard.push(notification.payload().to_owned());
    }
    heard
}

/// A process alone on its database publishes nothing to other processes (each wake would be a
/// statement and a commit that nobody hears); once another process says hello, it answers and
/// publishes its wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_process_publishes_once_it_has_company() {
    let a = TestServer::start(Backend::Postgres).await;
    let mut listener = sqlx::postgres::PgListener::connect(&a.db.url).await.expect("listener connects");
    listener.listen("axon_bus").await.expect("listens");
    let alice = a.register_fast("alice").await;
    let room = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    // The server's announcement at start waits a second for answers; none comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bus_heard(&mut listener, Duration::from_millis(200)).await;
    a.send_text(&alice, &room, "nobody else is here").await;
    let heard = bus_heard(&mut listener, Duration::from_millis(700)).await;
    assert!(heard.is_empty(), "a lone process published {heard:?}");

    // A peer (this test) says hello: the server answers, and publishes from now on.
    let pool = a.db.pool().await;
    sqlx::query("SELECT pg_notify('axon_bus', '{\"from\":\"test-peer\",\"messages\":[\"Hello\"]}')")
        .execute(&pool)
        .await
        .expect("notify");
    let heard = bus_heard(&mut listener, Duration::from_millis(1000)).await;
    assert!(heard.iter().any(|p| p.contains("Present")), "no answer to hello: {heard:?}");
    a.send_text(&alice, &room, "someone is listening").await;
    let heard = bus_heard(&mut listener, Duration::from_millis(1000)).await;
    assert!(heard.iter().any(|p| p.contains("Wake") || p.contains("Evaluated")), "nothing published: {heard:?}");
    drop(pool);
    a.stop().await;
}

/// Server B's clients receive, within a long-poll, every kind of change made through server A,
/// and events written through both arrive exactly once in the room's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_postgres() {
    let a = TestServer::start(Backend::Postgres).await;
    let b = second_server(&a).await;
    let alice = a.register_fast("alice").await; // uses server A
    let bob = b.register_fast("bob").await; // uses server B
    let room = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(b.join(&bob, &room).await.0, StatusCode::OK);
    let mut token = b.sync(&bob, None, 0, None).await["next_batch"].as_str().unwrap().to_owned();

    // Each change goes through A while bob long-polls B; each must wake him well before the timeout.
    async fn wait_on_b(b: &TestServer, bob: &User, token: &mut String, found: impl Fn(&Value) -> bool, what: &str) {
        for _ in 0..10 {
            let sync = tokio::time::timeout(Duration::from_secs(20), b.sync(bob, Some(token), 30_000, None))
                .await
                .expect(what);
            *token = sync["next_batch"].as_str().unwrap().to_owned();
            if found(&sync) {
                return;
            }
        }
        panic!("{what} never arrived through the other server");
    }
    let message = a.send_text(&alice, &room, "from A").await;
    wait_on_b(
        &b,
        &bob,
        &mut token,
        |s| timeline(s, &room).iter().any(|e| e["event_id"] == message.as_str()),
        "message",
    )
    .await;

    a.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id),
        Some(&alice.token),
        json!({"typing": true, "timeout": 10000}),
    )
    .await;
    let typing = |s: &Value| {
        s["rooms"]["join"][&room]["ephemeral"]["events"].as_array().is_some_and(|e| {
            e.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([alice.user_id]))
        })
    };
    wait_on_b(&b, &bob, &mut token, typing, "typing").await;

    a.post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{message}"), Some(&alice.token), json!({})).await;
    let receipt = |s: &Value| s.to_string().contains("m.receipt") && s.to_string().contains(&alice.user_id);
    wait_on_b(&b, &bob, &mut token, receipt, "receipt").await;

    a.put(
        &format!("/_matrix/client/v3/presence/{}/status", alice.user_id),
        Some(&alice.token),
        json!({"presence": "unavailable", "status_msg": "on A"}),
    )
    .await;
    let presence = |s: &Value| {
        s["presence"]["events"].as_array().is_some_and(|e| e.iter().any(|e| e["content"]["status_msg"] == "on A"))
    };
    wait_on_b(&b, &bob, &mut token, presence, "presence").await;

    a.put(
        "/_matrix/client/v3/sendToDevice/m.test/tx1",
        Some(&alice.token),
        json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"hello": "B"}}}}),
    )
    .await;
    let to_device =
        |s: &Value| s["to_device"]["events"].as_array().is_some_and(|e| e.iter().any(|e| e["content"]["hello"] == "B"));
    wait_on_b(&b, &bob, &mut token, to_device, "to-device").await;

    let bob_on_a = User { token: bob.token.clone(), ..bob.clone() };
    a.put(
        &format!("/_matrix/client/v3/user/{}/account_data/org.example.x", bob.user_id),
        Some(&bob_on_a.token),
        json!({"from": "A"}),
    )
    .await;
    let account_data = |s: &Value| {
        s["account_data"]["events"].as_array().is_some_and(|e| e.iter().any(|e| e["content"]["from"] == "A"))
    };
    wait_on_b(&b, &bob, &mut token, account_data, "account data").await;

    // Writers on both servers at once: every event once, in the room's order, for a reader on B.
    let writers_a = (0..4).map(|i| {
        let (a, alice, room) = (&a, &alice, &room);
        async move {
            for n in 0..10 {
                a.send_text(alice, room, &format!("a{i}-{n}")).await;
            }
        }
    });
    let writers_b = (0..4).map(|i| {
        let (b, bob, room) = (&b, &bob, &room);
        async move {
            for n in 0..10 {
                b.send_text(bob, room, &format!("b{i}-{n}")).await;
            }
        }
    });
    let reading = async {
        let mut seen = Vec::new();
        let filter = json!({"room": {"timeline": {"limit": 100}}});
        let mut token = token.clone();
        while seen.len() < 80 {
            let sync = tokio::time::timeout(Duration::from_secs(20), b.sync(&bob, Some(&token), 10_000, Some(&filter)))
                .await
                .expect("sync");
            token = sync["next_batch"].as_str().unwrap().to_owned();
            for event in timeline(&sync, &room) {
                if event["content"]["body"].as_str().is_some_and(|body| body.len() <= 5 && body.contains('-')) {
                    seen.push(event["event_id"].as_str().unwrap().to_owned());
                }
            }
        }
        seen
    };
    let (_, _, seen) =
        tokio::join!(futures::future::join_all(writers_a), futures::future::join_all(writers_b), reading);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 80, "no duplicates, none lost");
    let history: Vec<String> = a
        .all_messages(&alice, &room, 100)
        .await
        .into_iter()
        .filter(|e| e["content"]["body"].as_str().is_some_and(|body| body.len() <= 5 && body.contains('-')))
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, history, "delivered in the room's order");
    // Each server's cached room state went stale whenever the other wrote: every event still
    // extends the one before it, and the room has one forward extremity.
    let pool = a.db.pool().await;
    assert_eq!(forward_extremity_count(&pool, &room).await, 1);
    for pair in history.windows(2) {
        assert_eq!(prev_events(&pool, &pair[1]).await, [pair[0].clone()], "a linear DAG");
    }

    // A retried transaction finds its event, whichever server took the first send.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/retried");
    let body = json!({"msgtype": "m.text", "body": "once"});
    let (status, first) = a.put(&path, Some(&alice.token), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    b.send_text(&bob, &room, "in between").await;
    let (status, again) = a.put(&path, Some(&alice.token), body).await;
    assert_eq!((status, &again["event_id"]), (StatusCode::OK, &first["event_id"]), "the same event, not a new one");

    stop_both(a, b).await;
}

/// A token revoked through one server stops working on the other, though the other answers
/// tokens it has seen from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_the_other_process() {
    let a = TestServer::start(Backend::Postgres).await;
    let b = second_server(&a).await;
    let whoami = "/_matrix/client/v3/account/whoami";
    let erin = a.register("erin").await;
    let phone = a.login(&erin, Some("PHONE")).await;
    let laptop = a.login(&erin, Some("LAPTOP")).await;
    let tablet = a.login(&erin, Some("TABLET")).await;
    // Each login tells B to forget erin's sessions; let those arrive before B learns the tokens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for user in [&erin, &phone, &laptop, &tablet] {
        assert_eq!(b.get(whoami, Some(&user.token)).await.0, StatusCode::OK);
    }

    // B answers from memory: a row removed behind both servers' backs (no revocation is
    // published) does not reach it. This is what makes the checks below mean something.
    let pool = a.db.pool().await;
    sqlx::query("DELETE FROM devices WHERE device_id = 'TABLET'").execute(&pool).await.unwrap();
    assert_eq!(b.get(whoami, Some(&tablet.token)).await.0, StatusCode::OK, "B caches sessions");

    /// Waits until B refuses the token; a cache that ignored revocations would hold it for a minute.
    async fn refused_on(b: &TestServer, token: &str, what: &str) {
        for _ in 0..100 {
            let answer = b.get("/_matrix/client/v3/account/whoami", Some(token)).await;
            if answer.0 == StatusCode::UNAUTHORIZED {
                assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("B still accepts the token after {what} on A");
    }

    let (status, _) = a.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    refused_on(&b, &phone.token, "logout").await;
    // Forgetting the user's sessions on B forgot the tablet's too, which its row no longer backs.
    refused_on(&b, &tablet.token, "logout").await;
    assert_eq!(b.get(whoami, Some(&laptop.token)).await.0, StatusCode::OK, "other devices keep working");

    // A new token for an existing device revokes the old one.
    let laptop_again = a.login(&erin, Some("LAPTOP")).await;
    refused_on(&b, &laptop.token, "a new login on the device").await;
    assert_eq!(b.get(whoami, Some(&laptop_again.token)).await.0, StatusCode::OK);

    let (status, _) = a.post("/_matrix/client/v3/logout/all", Some(&erin.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for token in [&erin.token, &laptop_again.token] {
        refused_on(&b, token, "logout of all devices").await;
    }

    stop_both(a, b).await;
}
