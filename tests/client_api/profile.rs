use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(displayname_and_avatar, extended_fields_and_limits, only_own_profile);

async fn displayname_and_avatar(backend: Backend) {
    let s = TestServer::start(backend).await;
    let fay = s.register("fay").await;
    let base = "/_matrix/client/v3/profile/@fay:localhost";
    // A new account is named after its localpart until it picks a name.
    assert_eq!(s.get(&format!("{base}/displayname"), None).await.1, json!({"displayname": "fay"}));
    assert_error(&s.get(&format!("{base}/avatar_url"), None).await, 404, "M_NOT_FOUND");

    let (status, body) =
        s.put(&format!("{base}/displayname"), Some(&fay.token), json!({"displayname": "Fay ✨"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        s.put(&format!("{base}/avatar_url"), Some(&fay.token), json!({"avatar_url": "mxc://localhost/abc"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(s.get(&format!("{base}/displayname"), None).await.1, json!({"displayname": "Fay ✨"}));
    assert_eq!(
        s.get(&format!("{base}/avatar_url"), Some(&fay.token)).await.1,
        json!({"avatar_url": "mxc://localhost/abc"})
    );
    assert_eq!(s.get(base, None).await.1, json!({"displayname": "Fay ✨", "avatar_url": "mxc://localhost/abc"}));

    assert_eq!(s.delete(&format!("{base}/avatar_url"), Some(&fay.token), None).await.0, StatusCode::OK);
    assert_eq!(s.get(base, None).await.1, json!({"displayname": "Fay ✨"}));
    assert_error(&s.get("/_matrix/client/v3/profile/@nobody:localhost", None).await, 404, "M_NOT_FOUND");
    assert_error(&s.get("/_matrix/client/v3/profile/not-a-user-id", None).await, 400, "M_INVALID_PARAM");
    s.stop().await;
}

async fn extended_fields_and_limits(backend: Backend) {
    let s = TestServer::start(backend).await;
    let gil = s.register("gil").await;
    let base = "/_matrix/client/v3/profile/@gil:localhost";
    let (status, body) = s
        .put(&format!("{base}/org.example.pronouns"), Some(&gil.token), json!({"org.example.pronouns": ["they"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.get(&format!("{base}/org.example.pronouns"), None).await.1, json!({"org.example.pronouns": ["they"]}));

    assert_error(
        &s.put(&format!("{base}/NotNamespaced"), Some(&gil.token), json!({"NotNamespaced": 1})).await,
        400,
        "M_INVALID_PARAM",
    );
    let long_key = format!("org.{}", "k".repeat(300));
    assert_error(
        &s.put(&format!("{base}/{long_key}"), Some(&gil.token), json!({long_key.clone(): 1})).await,
        400,
        "M_KEY_TOO_LARGE",
    );
    let big = "x".repeat(70 * 1024);
    assert_error(
        &s.put(&format!("{base}/org.example.big"), Some(&gil.token), json!({"org.example.big": big})).await,
        400,
        "M_PROFILE_TOO_LARGE",
    );
    // A body whose key does not match the path is refused, and nothing is stored.
    let mismatch = s.put(&format!("{base}/displayname"), Some(&gil.token), json!({"avatar_url": "mxc://a/b"})).await;
    assert_eq!(mismatch.0, StatusCode::BAD_REQUEST, "{}", mismatch.1);
    assert_eq!(s.get(base, None).await.1, json!({"displayname": "gil", "org.example.pronouns": ["they"]}));
    s.stop().await;
}

async fn only_own_profile(backend: Backend) {
    let s = TestServer::start(backend).await;
    let hank = s.register("hank").await;
    s.register("iris").await;
    let path = "/_matrix/client/v3/profile/@iris:localhost/displayname";
    assert_error(&s.put(path, Some(&hank.token), json!({"displayname": "not iris"})).await, 403, "M_FORBIDDEN");
    assert_error(&s.delete(path, Some(&hank.token), None).await, 403, "M_FORBIDDEN");
    assert_error(&s.put(path, None, json!({"displayname": "anon"})).await, 401, "M_MISSING_TOKEN");
    assert_eq!(s.get(path, None).await.1, json!({"displayname": "iris"}));
    s.stop().await;
}
