use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(
    change_password_with_uia,
    change_password_keeping_devices,
    wrong_password_in_uia,
    deactivate_account
);

async fn change_password_with_uia(backend: Backend) {
    let s = TestServer::start(backend).await;
    let erin = s.register("erin").await;
    let other = s.login(&erin, None).await;

    let (status, body) =
        s.post("/_matrix/client/v3/account/password", Some(&erin.token), json!({"new_password": "brand-new"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = body["session"].as_str().unwrap();

    let auth = TestServer::password_auth(&erin, Some(session));
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/password",
            Some(&erin.token),
            json!({"new_password": "brand-new", "auth": auth}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Other devices are logged out by default; the one that asked stays.
    assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(&other.token)).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&erin.token)).await.0, StatusCode::OK);
    let old = json!({"type": "m.login.password", "user": "erin", "password": erin.password});
    assert_error(&s.post("/_matrix/client/v3/login", None, old).await, 403, "M_FORBIDDEN");
    let new = json!({"type": "m.login.password", "user": "erin", "password": "brand-new"});
    assert_eq!(s.post("/_matrix/client/v3/login", None, new).await.0, StatusCode::OK);
    s.stop().await;
}

async fn change_password_keeping_devices(backend: Backend) {
    let s = TestServer::start(backend).await;
    let finn = s.register("finn").await;
    let other = s.login(&finn, None).await;
    // A stage may be completed without asking for a session first.
    let auth = TestServer::password_auth(&finn, None);
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/password",
            Some(&finn.token),
            json!({"new_password": "n3w", "logout_devices": false, "auth": auth}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&other.token)).await.0, StatusCode::OK);
    s.stop().await;
}

async fn wrong_password_in_uia(backend: Backend) {
    let s = TestServer::start(backend).await;
    let gus = s.register("gus").await;
    let ivy = s.register("ivy").await;
    let (_, body) = s.post("/_matrix/client/v3/account/password", Some(&gus.token), json!({"new_password": "x"})).await;
    let session = body["session"].as_str().unwrap().to_owned();

    let mut auth = TestServer::password_auth(&gus, Some(&session));
    auth["password"] = json!("wrong");
    let result = s
        .post("/_matrix/client/v3/account/password", Some(&gus.token), json!({"new_password": "x", "auth": auth}))
        .await;
    assert_error(&result, 401, "M_FORBIDDEN");
    assert_eq!(result.1["flows"], json!([{"stages": ["m.login.password"]}]));

    // Another user's password does not authenticate gus, nor does another user's session.
    let ivy_auth = TestServer::password_auth(&ivy, Some(&session));
    let result = s
        .post("/_matrix/client/v3/account/password", Some(&gus.token), json!({"new_password": "x", "auth": ivy_auth}))
        .await;
    assert_error(&result, 401, "M_FORBIDDEN");
    let result = s
        .post(
            "/_matrix/client/v3/account/password",
            Some(&ivy.token),
            json!({"new_password": "x", "auth": TestServer::password_auth(&ivy, Some(&session))}),
        )
        .await;
    assert_error(&result, 401, "M_FORBIDDEN");
    assert_ne!(result.1["session"], session.as_str());

    // Nothing changed: the old password still logs in.
    let login = json!({"type": "m.login.password", "user": "gus", "password": gus.password});
    assert_eq!(s.post("/_matrix/client/v3/login", None, login).await.0, StatusCode::OK);
    s.stop().await;
}

async fn deactivate_account(backend: Backend) {
    let s = TestServer::start(backend).await;
    let hal = s.register("hal").await;
    let viewer = s.register("viewer").await;
    s.put("/_matrix/client/v3/profile/@hal:localhost/displayname", Some(&hal.token), json!({"displayname": "Hal"}))
        .await;
    let second = s.login(&hal, None).await;

    let (status, _) = s.post("/_matrix/client/v3/account/deactivate", Some(&hal.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&hal.token),
            json!({"auth": TestServer::password_auth(&hal, None)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    for token in [&hal.token, &second.token] {
        assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(token)).await, 401, "M_UNKNOWN_TOKEN");
    }
    let login = json!({"type": "m.login.password", "user": "hal", "password": hal.password});
    assert_error(&s.post("/_matrix/client/v3/login", None, login).await, 403, "M_USER_DEACTIVATED");
    assert_error(&s.get("/_matrix/client/v3/register/available?username=hal", None).await, 400, "M_USER_IN_USE");
    assert_error(&s.get("/_matrix/client/v3/profile/@hal:localhost", Some(&viewer.token)).await, 404, "M_NOT_FOUND");
    s.stop().await;
}
