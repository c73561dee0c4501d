//! The test harness: a real Axon server started in-process on an ephemeral port, on a fresh
//! SQLite file or a fresh PostgreSQL database, driven over real HTTP.
#![allow(dead_code)]

use std::path::PathBuf;

use axon::{config::Config, server::RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares, for each named `async fn(Backend)`, one test per backend: `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

/// A database made for one test and removed after it.
pub struct TestDatabase {
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        // The creation time in the name lets scripts/test sweep only abandoned databases, never
        // those of a suite still running beside it.
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let name = format!("axon_t_{created}_{}", random_suffix());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path: PathBuf = dir.path().join("axon.db");
                Self { url: format!("sqlite://{}", path.display()), admin_url: None, name, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                    panic!(
                        "TEST_DATABASE_URL is not set. Run the suite with scripts/test (it finds or starts \
                         PostgreSQL), or set TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB"
                    )
                });
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at TEST_DATABASE_URL: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                let url = match admin_url.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("TEST_DATABASE_URL must end in /DATABASE"),
                };
                Self { url, admin_url: Some(admin_url), name, _dir: None }
            }
        }
    }

    /// A handle on another handle's database that owns nothing (for a second server on it).
    pub fn borrowed(url: &str) -> Self {
        Self { url: url.to_owned(), admin_url: None, name: String::new(), _dir: None }
    }

    /// Drops the PostgreSQL database; says so when it cannot (scripts/test sweeps it later). A test
    /// must end with [`TestServer::stop`], or its database stays.
    pub async fn drop_database(&self) {
        let Some(admin_url) = &self.admin_url else { return };
        let dropped = match sqlx::PgConnection::connect(admin_url).await {
            Ok(mut admin) => {
                let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                    .execute(&mut admin)
                    .await
                    .map(|_| ());
                let _ = admin.close().await;
                dropped
            }
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            eprintln!("test database {} left behind: {e}", self.name);
        }
    }

    /// A pool on the test database, to look at what the server stored.
    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.expect("connect to test database")
    }
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..12).map(|_| char::from(b'a' + rng.gen_range(0..26))).collect()
}

/// The configuration tests start from: ephemeral port, open registration, no rate limits.
pub fn test_config(db_url: &str) -> Config {
    let mut config = Config::with_server_name("localhost".try_into().expect("server name"));
    config.listen.client = "127.0.0.1:0".parse().expect("addr");
    config.database.url = db_url.to_owned();
    config.database.max_connections = 8;
    config.registration.enabled = true;
    config.limits.rate_limiting = false;
    config
}

pub struct TestServer {
    pub backend: Backend,
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDatabase,
    pub running: Option<RunningServer>,
}

/// A registered user with one logged-in device.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub localpart: String,
    pub password: String,
    pub token: String,
    pub device_id: String,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        // Server logs appear with a failing test's output (RUST_LOG to change the level).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let db = TestDatabase::create(backend).await;
        let mut config = test_config(&db.url);
        tweak(&mut config);
        let running = axon::server::start(config).await.expect("server starts");
        let base = format!("http://{}", running.client_addr);
        Self { backend, base, http: reqwest::Client::new(), db, running: Some(running) }
    }

    /// Stops the server and starts a new one on the same database, as a restart would.
    pub async fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        let mut config = test_config(&self.db.url);
        tweak(&mut config);
        let running = axon::server::start(config).await.expect("server restarts");
        self.base = format!("http://{}", running.client_addr);
        self.running = Some(running);
        self
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.db.drop_database().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional token and JSON body; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, body).await
    }

    /// Registers through the UIA dummy flow and returns the logged-in user.
    pub async fn register(&self, localpart: &str) -> User {
        let password = format!("pw-{localpart}-secret");
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {body}");
        User {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            localpart: localpart.to_owned(),
            password,
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    /// Logs in on a new device.
    pub async fn login(&self, user: &User, device_id: Option<&str>) -> User {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": user.password,
        });
        if let Some(device_id) = device_id {
            body["device_id"] = json!(device_id);
        }
        let (status, body) = self.post("/_matrix/client/v3/login", None, body).await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        User {
            token: body["access_token"].as_str().expect("token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            ..user.clone()
        }
    }

    /// The `m.login.password` UIA body for `user`.
    pub fn password_auth(user: &User, session: Option<&str>) -> Value {
        let mut auth = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": user.password,
        });
        if let Some(session) = session {
            auth["session"] = json!(session);
        }
        auth
    }
}

/// Asserts a Matrix error with the given status and errcode.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(result.0.as_u16(), status, "status of {}", result.1);
    assert_eq!(result.1["errcode"], errcode, "errcode of {}", result.1);
    assert!(result.1["error"].is_string(), "error text in {}", result.1);
}

/// Room helpers.
impl TestServer {
    /// Registers without a password (no argon2 cost), for tests that need many users.
    pub async fn register_fast(&self, localpart: &str) -> User {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": localpart, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {body}");
        User {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            localpart: localpart.to_owned(),
            password: String::new(),
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let (status, response) = self.post("/_matrix/client/v3/createRoom", Some(&user.token), body).await;
        assert_eq!(status, StatusCode::OK, "createRoom: {response}");
        response["room_id"].as_str().expect("room_id").to_owned()
    }

    /// A metric's value on the `/metrics` listener (which the test's config must enable).
    pub async fn metric(&self, name: &str) -> i64 {
        let addr = self.running.as_ref().unwrap().metrics_addr.expect("metrics listener");
        let metrics = self.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    }

    pub async fn send_text(&self, user: &User, room_id: &str, text: &str) -> String {
        let txn = random_suffix();
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let (status, response) = self.put(&path, Some(&user.token), json!({"msgtype": "m.text", "body": text})).await;
        assert_eq!(status, StatusCode::OK, "send: {response}");
        response["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn join(&self, user: &User, room_id: &str) -> (StatusCode, Value) {
        self.post(&format!("/_matrix/client/v3/rooms/{room_id}/join"), Some(&user.token), json!({})).await
    }

    pub async fn invite(&self, by: &User, room_id: &str, user_id: &str) -> (StatusCode, Value) {
        self.post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), Some(&by.token), json!({"user_id": user_id}))
            .await
    }

    /// Every event of the room visible to `user`, oldest first, paging back with /messages.
    pub async fn all_messages(&self, user: &User, room_id: &str, page: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit={page}");
            if let Some(from) = &from {
                path.push_str(&format!("&from={from}"));
            }
            let (status, body) = self.get(&path, Some(&user.token)).await;
            assert_eq!(status, StatusCode::OK, "messages: {body}");
            events.extend(body["chunk"].as_array().expect("chunk").iter().cloned());
            match body["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        events.reverse();
        events
    }
}

/// Percent-encodes everything but ASCII letters and digits, for query parameters.
pub fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The forward extremities of a room and the `prev_events` of an event, as stored.
pub async fn forward_extremity_count(pool: &sqlx::AnyPool, room_id: &str) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM room_forward_extremities WHERE room_id = $1")
        .bind(room_id)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

pub async fn prev_events(pool: &sqlx::AnyPool, event_id: &str) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT prev_event_id FROM event_edges WHERE event_id = $1 ORDER BY prev_event_id")
        .bind(event_id)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Stalls push evaluation: recording an evaluated batch fails (and the evaluator retries) until
/// [`release_push_evaluation`]. Events committed meanwhile wait unevaluated, and unshown.
pub async fn hold_push_evaluation(s: &TestServer) {
    let hold = match s.backend {
        Backend::Sqlite => vec![
            "CREATE TRIGGER hold_evaluation BEFORE UPDATE ON stream_counters WHEN NEW.stream = 'push_evaluated' \
             BEGIN SELECT RAISE(ABORT, 'held by the test'); END",
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION hold_evaluation() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'held by the test'; END $$",
            "CREATE TRIGGER hold_evaluation BEFORE UPDATE ON stream_counters FOR EACH ROW \
             WHEN (NEW.stream = 'push_evaluated') EXECUTE FUNCTION hold_evaluation()",
        ],
    };
    let pool = s.db.pool().await;
    for statement in hold {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
}

pub async fn release_push_evaluation(s: &TestServer) {
    let release = match s.backend {
        Backend::Sqlite => "DROP TRIGGER hold_evaluation",
        Backend::Postgres => "DROP TRIGGER hold_evaluation ON stream_counters",
    };
    sqlx::query(release).execute(&s.db.pool().await).await.unwrap();
}

/// Sync helpers.
impl TestServer {
    /// One /sync; panics unless it answers 200.
    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, filter: Option<&Value>) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        if let Some(filter) = filter {
            path.push_str(&format!("&filter={}", urlencode(&filter.to_string())));
        }
        let (status, body) = self.get(&path, Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        body
    }
}

/// The timeline events of a room in a sync response.
pub fn timeline(sync: &Value, room_id: &str) -> Vec<Value> {
    sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default()
}

impl TestServer {
    /// Logs in a new device of a user made with `register_fast`, who has no password: one is set
    /// through the accounts service first.
    pub async fn login_fast(&self, user: &User) -> User {
        let running = self.running.as_ref().expect("server running");
        let user_id = ruma::UserId::parse(&user.user_id).expect("user id");
        running.services.accounts.set_password(&user_id, "fast-password").await.expect("set password");
        self.login(&User { password: "fast-password".into(), ..user.clone() }, None).await
    }
}
