use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(login_flows_and_identifiers, device_id_reuse, logout_and_logout_all, access_token_checks);

async fn login_flows_and_identifiers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (status, body) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["flows"], json!([{"type": "m.login.password"}]));

    let alice = s.register("alice").await;
    let identifiers = [
        json!({"identifier": {"type": "m.id.user", "user": "alice"}}),
        json!({"identifier": {"type": "m.id.user", "user": "@alice:localhost"}}),
        json!({"user": "alice"}),
        json!({"user": "@alice:localhost"}),
    ];
    for mut body in identifiers {
        body["type"] = json!("m.login.password");
        body["password"] = json!(alice.password);
        body["initial_device_display_name"] = json!("Laptop");
        let (status, response) = s.post("/_matrix/client/v3/login", None, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body} → {response}");
        assert_eq!(response["user_id"], "@alice:localhost");
        assert_ne!(response["access_token"], alice.token);
        assert_ne!(response["device_id"], alice.device_id);
    }
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 5);

    let wrong =
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "nope"});
    assert_error(&s.post("/_matrix/client/v3/login", None, wrong).await, 403, "M_FORBIDDEN");
    let nobody =
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"});
    assert_error(&s.post("/_matrix/client/v3/login", None, nobody).await, 403, "M_FORBIDDEN");
    let remote = json!({"type": "m.login.password", "user": "@alice:elsewhere.org", "password": alice.password});
    assert_error(&s.post("/_matrix/client/v3/login", None, remote).await, 403, "M_FORBIDDEN");
    let sso = json!({"type": "m.login.token", "token": "abc"});
    assert_error(&s.post("/_matrix/client/v3/login", None, sso).await, 400, "M_UNKNOWN");
    s.stop().await;
}

async fn device_id_reuse(backend: Backend) {
    let s = TestServer::start(backend).await;
    let bob = s.register("bob").await;
    let first = s.login(&bob, Some("MYPHONE")).await;
    assert_eq!(first.device_id, "MYPHONE");
    s.put("/_matrix/client/v3/devices/MYPHONE", Some(&first.token), json!({"display_name": "Bob's phone"})).await;

    let second = s.login(&bob, Some("MYPHONE")).await;
    assert_eq!(second.device_id, "MYPHONE");
    assert_ne!(second.token, first.token);
    // The device's old token is replaced; its name is kept.
    assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(&first.token)).await, 401, "M_UNKNOWN_TOKEN");
    let (status, who) = s.get("/_matrix/client/v3/account/whoami", Some(&second.token)).await;
    assert_eq!((status, who["device_id"].as_str()), (StatusCode::OK, Some("MYPHONE")));
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&second.token)).await;
    let ids: Vec<_> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2, "{devices}");
    let phone = devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == "MYPHONE").unwrap();
    assert_eq!(phone["display_name"], "Bob's phone");
    s.stop().await;
}

async fn logout_and_logout_all(backend: Backend) {
    let s = TestServer::start(backend).await;
    let carol = s.register("carol").await;
    let phone = s.login(&carol, None).await;
    let laptop = s.login(&carol, None).await;

    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(&phone.token)).await, 401, "M_UNKNOWN_TOKEN");
    // The other devices keep working, and the logged-out device is gone.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&laptop.token)).await.0, StatusCode::OK);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&laptop.token)).await;
    assert!(devices["devices"].as_array().unwrap().iter().all(|d| d["device_id"] != phone.device_id.as_str()));

    let (status, _) = s.post("/_matrix/client/v3/logout/all", Some(&laptop.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for token in [&carol.token, &laptop.token] {
        assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(token)).await, 401, "M_UNKNOWN_TOKEN");
    }
    // Logging in again works after a logout of everything.
    s.login(&carol, None).await;
    s.stop().await;
}

async fn access_token_checks(backend: Backend) {
    let s = TestServer::start(backend).await;
    let dave = s.register("dave").await;
    assert_error(&s.get("/_matrix/client/v3/account/whoami", None).await, 401, "M_MISSING_TOKEN");
    let unknown = s.get("/_matrix/client/v3/account/whoami", Some("axo_not_a_real_token")).await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(unknown.1["soft_logout"], false);
    // The deprecated query parameter still works for old clients.
    let path = format!("/_matrix/client/v3/account/whoami?access_token={}", dave.token);
    assert_eq!(s.get(&path, None).await.1["user_id"], "@dave:localhost");
    let bad_scheme = s
        .http
        .get(s.url("/_matrix/client/v3/account/whoami"))
        .header("Authorization", format!("Basic {}", dave.token))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_scheme.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}
