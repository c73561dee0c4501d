use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, urlencode, Backend, TestServer};

crate::backend_tests!(
    uia_dummy_flow,
    registration_token_flow,
    registration_disabled_and_guests,
    username_rules_and_availability,
    concurrent_registration_of_one_name,
    inhibit_login_and_generated_names,
);

async fn uia_dummy_flow(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (status, body) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "alice", "password": "secret-1"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session = body["session"].as_str().expect("session").to_owned();

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "secret-1", "initial_device_display_name": "Phone",
                   "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let token = body["access_token"].as_str().unwrap();
    let (status, who) = s.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user_id"], "@alice:localhost");
    assert_eq!(who["device_id"], body["device_id"]);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(devices["devices"][0]["display_name"], "Phone");

    // The same session cannot be used again once registration has succeeded.
    let again = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice2", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_error(&again, 401, "M_FORBIDDEN");
    assert_ne!(again.1["session"], session);
    s.stop().await;
}

async fn registration_token_flow(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.registration.token = Some("let-me-in".into())).await;
    let (status, body) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "tok", "password": "pw-secret"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = body["session"].as_str().unwrap().to_owned();

    let dummy = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tok", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_error(&dummy, 401, "M_UNRECOGNIZED");

    let wrong = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tok", "auth": {"type": "m.login.registration_token", "token": "guess", "session": session}}),
        )
        .await;
    assert_error(&wrong, 401, "M_FORBIDDEN");
    assert_eq!(wrong.1["session"], session.as_str(), "a failed stage keeps the session");

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tok", "password": "pw-secret",
                   "auth": {"type": "m.login.registration_token", "token": "let-me-in", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@tok:localhost");
    s.stop().await;
}

async fn registration_disabled_and_guests(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.registration.enabled = false).await;
    let result =
        s.post("/_matrix/client/v3/register", None, json!({"username": "x", "auth": {"type": "m.login.dummy"}})).await;
    assert_error(&result, 403, "M_FORBIDDEN");
    let guest = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_error(&guest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    s.stop().await;
}

async fn username_rules_and_availability(backend: Backend) {
    let s = TestServer::start(backend).await;
    for bad in ["has space", "ümlaut", "_reserved", "a:b", &"x".repeat(250)] {
        let result = s
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_error(&result, 400, "M_INVALID_USERNAME");
        let path = format!("/_matrix/client/v3/register/available?username={}", urlencode(bad));
        assert_error(&s.get(&path, None).await, 400, "M_INVALID_USERNAME");
    }
    let (status, body) = s.get("/_matrix/client/v3/register/available?username=carol", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"available": true})));

    s.register("carol").await;
    assert_error(&s.get("/_matrix/client/v3/register/available?username=carol", None).await, 400, "M_USER_IN_USE");
    // Upper case is folded, so CAROL is carol and taken.
    let taken = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "CAROL", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    assert_error(&s.get("/_matrix/client/v3/register/available", None).await, 400, "M_INVALID_PARAM");
    s.stop().await;
}

async fn concurrent_registration_of_one_name(backend: Backend) {
    let s = TestServer::start(backend).await;
    let attempts = (0..16).map(|i| {
        let s = &s;
        async move {
            s.post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": "racer", "password": format!("pw-{i}"), "auth": {"type": "m.login.dummy"}}),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter(|(status, _)| *status == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "exactly one registration wins: {results:?}");
    for (status, body) in results.iter().filter(|(status, _)| *status != StatusCode::OK) {
        assert_eq!((status.as_u16(), body["errcode"].as_str()), (400, Some("M_USER_IN_USE")), "{body}");
    }
    // The winner's credentials are the ones stored.
    let token = winners[0].1["access_token"].as_str().unwrap();
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(token)).await.0, StatusCode::OK);
    s.stop().await;
}

async fn inhibit_login_and_generated_names(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "quiet", "password": "pw-quiet", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("device_id").is_none_or(|d| d.is_null()), "{body}");

    let (status, body) = s
        .post("/_matrix/client/v3/register", None, json!({"password": "pw-anon", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user_id = body["user_id"].as_str().unwrap();
    assert!(user_id.starts_with('@') && user_id.ends_with(":localhost"), "{user_id}");
    s.stop().await;
}
