use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(list_get_rename, delete_one_with_uia, delete_many_with_uia, devices_are_private);

async fn list_get_rename(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.register("ann").await;
    let (status, body) = s.get(&format!("/_matrix/client/v3/devices/{}", ann.device_id), Some(&ann.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], ann.device_id.as_str());
    assert_eq!(body["last_seen_ip"], "127.0.0.1");
    assert!(body["last_seen_ts"].as_u64().unwrap() > 1_600_000_000_000);

    let path = format!("/_matrix/client/v3/devices/{}", ann.device_id);
    assert_eq!(s.put(&path, Some(&ann.token), json!({"display_name": "Desk"})).await.0, StatusCode::OK);
    assert_eq!(s.get(&path, Some(&ann.token)).await.1["display_name"], "Desk");
    // A PUT without display_name changes nothing.
    assert_eq!(s.put(&path, Some(&ann.token), json!({})).await.0, StatusCode::OK);
    assert_eq!(s.get(&path, Some(&ann.token)).await.1["display_name"], "Desk");

    assert_error(&s.get("/_matrix/client/v3/devices/NOSUCH", Some(&ann.token)).await, 404, "M_NOT_FOUND");
    assert_error(
        &s.put("/_matrix/client/v3/devices/NOSUCH", Some(&ann.token), json!({"display_name": "x"})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&s.get("/_matrix/client/v3/devices", None).await, 401, "M_MISSING_TOKEN");
    s.stop().await;
}

async fn delete_one_with_uia(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ben = s.register("ben").await;
    let tablet = s.login(&ben, None).await;
    let path = format!("/_matrix/client/v3/devices/{}", tablet.device_id);

    let (status, body) = s.delete(&path, Some(&ben.token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = body["session"].as_str().unwrap();
    // Still there until UIA completes.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&tablet.token)).await.0, StatusCode::OK);

    let auth = TestServer::password_auth(&ben, Some(session));
    let (status, body) = s.delete(&path, Some(&ben.token), Some(json!({"auth": auth}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(&s.get("/_matrix/client/v3/account/whoami", Some(&tablet.token)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&s.get(&path, Some(&ben.token)).await, 404, "M_NOT_FOUND");
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&ben.token)).await.0, StatusCode::OK);
    s.stop().await;
}

async fn delete_many_with_uia(backend: Backend) {
    let s = TestServer::start(backend).await;
    let cal = s.register("cal").await;
    let a = s.login(&cal, None).await;
    let b = s.login(&cal, None).await;
    let body = json!({"devices": [a.device_id, b.device_id, "UNKNOWN"]});
    let (status, _) = s.post("/_matrix/client/v3/delete_devices", Some(&cal.token), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut with_auth = body;
    // The legacy top-level `user` form of m.login.password, as matrix-nio documents it.
    with_auth["auth"] = json!({"type": "m.login.password", "user": "cal", "password": cal.password});
    assert_eq!(s.post("/_matrix/client/v3/delete_devices", Some(&cal.token), with_auth).await.0, StatusCode::OK);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&cal.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_eq!(devices["devices"][0]["device_id"], cal.device_id.as_str());
    s.stop().await;
}

async fn devices_are_private(backend: Backend) {
    let s = TestServer::start(backend).await;
    let dan = s.register("dan").await;
    let eve = s.register("eve").await;
    let path = format!("/_matrix/client/v3/devices/{}", dan.device_id);
    assert_error(&s.get(&path, Some(&eve.token)).await, 404, "M_NOT_FOUND");
    assert_error(&s.put(&path, Some(&eve.token), json!({"display_name": "pwned"})).await, 404, "M_NOT_FOUND");
    // Eve deleting Dan's device ID deletes nothing of Dan's.
    let auth = TestServer::password_auth(&eve, None);
    assert_eq!(s.delete(&path, Some(&eve.token), Some(json!({"auth": auth}))).await.0, StatusCode::OK);
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&dan.token)).await.0, StatusCode::OK);
    s.stop().await;
}
