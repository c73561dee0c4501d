use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(versions_well_known_capabilities, cors_on_every_endpoint, unknown_paths_and_methods);

async fn versions_well_known_capabilities(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> = body["versions"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(versions.contains(&"v1.12"), "{body}");
    assert_eq!(body["unstable_features"]["org.matrix.e2e_cross_signing"], true, "{body}");

    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.homeserver"]["base_url"], s.base, "announces the address it listens on");

    let user = s.register("cap").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Absent means enabled (the spec's default), and ruma leaves defaults out.
    assert_ne!(body["capabilities"]["m.change_password"]["enabled"], false, "{body}");
    assert_eq!(body["capabilities"]["m.room_versions"]["default"], "11");
    s.stop().await;
}

async fn cors_on_every_endpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    let preflight = s
        .http
        .request(Method::OPTIONS, s.url("/_matrix/client/v3/login"))
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST") && methods.contains("PUT") && methods.contains("DELETE"), "{methods}");
    let headers = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");

    // Plain answers and errors carry the header too, so browsers can read them.
    for path in ["/_matrix/client/versions", "/_matrix/client/v3/account/whoami", "/_matrix/client/v3/nothing"] {
        let response = s.http.get(s.url(path)).header("Origin", "https://app.element.io").send().await.unwrap();
        assert_eq!(response.headers()["access-control-allow-origin"], "*", "{path}");
    }
    // OPTIONS without a CORS request is still answered without an error, and never runs the
    // endpoint's logic (spec: "Web Browser Clients"): /sync would ask for a token, and an unknown
    // path would be M_UNRECOGNIZED.
    for path in ["/_matrix/client/v3/login", "/_matrix/client/v3/sync", "/_matrix/client/v3/nothing"] {
        let bare = s.http.request(Method::OPTIONS, s.url(path)).send().await.unwrap();
        assert_eq!(bare.status(), 204, "{path}");
        assert_eq!(bare.headers()["access-control-allow-origin"], "*", "{path}");
        assert!(bare.text().await.unwrap().is_empty(), "{path}");
    }
    s.stop().await;
}

async fn unknown_paths_and_methods(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_error(&s.get("/_matrix/client/v3/no/such/endpoint", None).await, 404, "M_UNRECOGNIZED");
    // A spec endpoint not built yet.
    let openid = "/_matrix/client/v3/user/@u:localhost/openid/request_token";
    assert_error(&s.post(openid, None, json!({})).await, 404, "M_UNRECOGNIZED");
    assert_error(&s.get("/_matrix/client/v3/createRoom", None).await, 405, "M_UNRECOGNIZED");
    assert_error(&s.call(Method::PUT, "/_matrix/client/v3/login", None, None).await, 405, "M_UNRECOGNIZED");
    assert_error(&s.call(Method::DELETE, "/_matrix/client/versions", None, None).await, 405, "M_UNRECOGNIZED");
    s.stop().await;
}
