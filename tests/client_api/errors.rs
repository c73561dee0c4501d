//! Malformed input, size limits, rate limits, and what is stored about secrets.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{assert_error, Backend, TestServer};

crate::backend_tests!(
    not_json_and_bad_json,
    oversized_bodies,
    login_and_register_rate_limits,
    tokens_and_passwords_at_rest,
    metrics_listener,
    parser_panics_are_bad_json,
    concurrent_room_creation,
);

/// Found by fuzzing: ruma's login parser panics on a body without `type`.
async fn parser_panics_are_bad_json(backend: Backend) {
    let s = TestServer::start(backend).await;
    for body in [json!({}), json!({"identifier": {"type": "m.id.user", "user": "x"}, "password": "y"})] {
        assert_error(&s.post("/_matrix/client/v3/login", None, body).await, 400, "M_BAD_JSON");
    }
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
    s.stop().await;
}

/// Found by fuzzing: many rooms created at once must not starve the room writer of connections.
async fn concurrent_room_creation(backend: Backend) {
    let s = TestServer::start(backend).await;
    let user = s.register_fast("creator").await;
    let results = futures::future::join_all(
        (0..24).map(|_| s.post("/_matrix/client/v3/createRoom", Some(&user.token), json!({}))),
    )
    .await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let (_, rooms) = s.get("/_matrix/client/v3/joined_rooms", Some(&user.token)).await;
    assert_eq!(rooms["joined_rooms"].as_array().unwrap().len(), 24);
    s.stop().await;
}

async fn not_json_and_bad_json(backend: Backend) {
    let s = TestServer::start(backend).await;
    let user = s.register("json").await;
    let raw = |path: &str, body: &'static str| {
        s.http.post(s.url(path)).bearer_auth(&user.token).header("Content-Type", "application/json").body(body).send()
    };
    for (path, body) in [
        ("/_matrix/client/v3/login", "{not json"),
        ("/_matrix/client/v3/register", "\u{0}"),
        ("/_matrix/client/v3/account/password", "[1,"),
    ] {
        let response = raw(path, body).await.unwrap();
        let status = response.status();
        let json: serde_json::Value = response.json().await.unwrap();
        assert_error(&(status, json), 400, "M_NOT_JSON");
    }
    for (path, body) in [
        ("/_matrix/client/v3/login", json!({"type": "m.login.password", "password": 5})),
        ("/_matrix/client/v3/register", json!({"username": ["a"]})),
        ("/_matrix/client/v3/delete_devices", json!({"devices": "ABC"})),
        ("/_matrix/client/v3/account/password", json!({"logout_devices": true})),
    ] {
        let result = s.post(path, Some(&user.token), body.clone()).await;
        assert_eq!(result.0, StatusCode::BAD_REQUEST, "{path} {body} → {}", result.1);
        assert!(matches!(result.1["errcode"].as_str(), Some("M_BAD_JSON" | "M_MISSING_PARAM")), "{}", result.1);
    }
    // Nothing was harmed: the account still works.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&user.token)).await.0, StatusCode::OK);
    s.stop().await;
}

async fn oversized_bodies(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.limits.max_request_bytes = 4096).await;
    let big = json!({"type": "m.login.password", "user": "x", "password": "p".repeat(10_000)});
    assert_error(&s.post("/_matrix/client/v3/login", None, big).await, 413, "M_TOO_LARGE");

    // Without a Content-Length (chunked), the body is refused as it streams past the limit.
    let mut stream = tokio::net::TcpStream::connect(s.running.as_ref().unwrap().client_addr).await.unwrap();
    let mut request =
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..8 {
        request.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes());
    }
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
    s.stop().await;
}

async fn login_and_register_rate_limits(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.limits.rate_limiting = true;
        c.limits.auth_burst = 3;
        c.limits.auth_per_minute = 1;
    })
    .await;
    let body = json!({"type": "m.login.password", "user": "nobody", "password": "x"});
    for _ in 0..3 {
        assert_error(&s.post("/_matrix/client/v3/login", None, body.clone()).await, 403, "M_FORBIDDEN");
    }
    let limited = s.post("/_matrix/client/v3/login", None, body).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry > 0 && retry <= 60_000, "{retry}");
    let register = s
        .post("/_matrix/client/v3/register", None, json!({"username": "late", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_error(&register, 429, "M_LIMIT_EXCEEDED");
    // Other endpoints are not limited by it.
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
    s.stop().await;
}

async fn tokens_and_passwords_at_rest(backend: Backend) {
    let s = TestServer::start(backend).await;
    let user = s.register("secret").await;
    let pool = s.db.pool().await;
    let rows = sqlx::query("SELECT token_hash FROM devices").fetch_all(&pool).await.unwrap();
    let stored: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let expected: String = Sha256::digest(user.token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored, vec![expected]);
    assert!(stored.iter().all(|h| !h.contains(&user.token)));

    let hash: String = sqlx::query("SELECT password_hash FROM users").fetch_one(&pool).await.unwrap().get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(&user.password));
    pool.close().await;
    s.stop().await;
}

async fn metrics_listener(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.listen.metrics = Some("127.0.0.1:0".parse().unwrap())).await;
    s.get("/_matrix/client/versions", None).await;
    s.get("/_matrix/client/v3/nowhere", None).await;
    let addr = s.running.as_ref().unwrap().metrics_addr.expect("metrics listener");
    let text = s.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"axon_http_requests_total{method="GET",group="versions",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"group="unmatched",status="404""#), "{text}");
    assert!(text.contains("axon_http_request_duration_seconds_bucket"), "{text}");
    s.stop().await;
}
