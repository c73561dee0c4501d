//! The Client-Server API calls the workloads make, and the receivers that record arrivals, over
//! long-poll `/sync` or Axon's WebSocket stream (DESIGN.md section 8).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

pub type Result<T> = std::result::Result<T, String>;

/// When each bench message (by id) reached a receiver; more than one arrival is a duplicate.
pub type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const WS_PATH: &str = "/_matrix/client/unstable/org.axon.ws/stream";

/// How a receiver learns of new events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    LongPoll,
    WebSocket,
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    /// Makes user names unique per run, so that a server can be reused.
    pub run: String,
    /// Appended to every message body after a space (`--body-bytes`).
    pub padding: String,
}

#[derive(Clone)]
pub struct User {
    pub token: String,
    pub user_id: String,
}

impl Api {
    pub fn new(base: &str, run: &str, body_bytes: usize) -> Self {
        Self {
            http: reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            run: run.to_owned(),
            padding: "x".repeat(body_bytes),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {body}"));
        }
        Ok(body)
    }

    pub async fn register(&self, name: &str) -> Result<User> {
        let username = format!("bench{}{name}", self.run);
        let body =
            json!({"username": username, "password": format!("pw-{username}"), "auth": {"type": "m.login.dummy"}});
        let mut response =
            self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body.clone())).await;
        if let Err(e) = &response {
            // Servers that want a session first (Synapse) answer 401 with one.
            if e.contains("401") {
                let first =
                    self.http.post(format!("{}/_matrix/client/v3/register", self.base)).json(&json!({})).send().await;
                let session = match first {
                    Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["session"].as_str().map(str::to_owned)),
                    Err(_) => None,
                };
                let mut body = body;
                body["auth"]["session"] = json!(session);
                response = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
            }
        }
        let response = response?;
        Ok(User {
            token: response["access_token"].as_str().ok_or("no access_token")?.to_owned(),
            user_id: response["user_id"].as_str().ok_or("no user_id")?.to_owned(),
        })
    }

    pub async fn create_room(&self, user: &User, body: Value) -> Result<String> {
        let response =
            self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&user.token), Some(body)).await?;
        Ok(response["room_id"].as_str().ok_or("no room_id")?.to_owned())
    }

    pub async fn join(&self, user: &User, room: &str) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(&user.token), Some(json!({})))
            .await
            .map(|_| ())
    }

    pub async fn send(&self, user: &User, room: &str, txn: &str, text: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let body = if self.padding.is_empty() { text.to_owned() } else { format!("{text} {}", self.padding) };
        let response = self
            .call(reqwest::Method::PUT, &path, Some(&user.token), Some(json!({"msgtype": "m.text", "body": body})))
            .await?;
        Ok(response["event_id"].as_str().ok_or("no event_id")?.to_owned())
    }

    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, limit: u64) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", sync_filter(limit));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", urlencode(since)));
        }
        self.call(reqwest::Method::GET, &path, Some(&user.token), None).await
    }

    /// The bench ids of a room's events between two tokens, paged backwards from `from` to `to`.
    async fn messages_between(&self, user: &User, room: &str, from: &str, to: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut from = from.to_owned();
        loop {
            let path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&from={}&to={}",
                urlencode(room),
                urlencode(&from),
                urlencode(to)
            );
            let page = self.call(reqwest::Method::GET, &path, Some(&user.token), None).await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            ids.extend(chunk.iter().filter_map(|e| bench_id(e["content"]["body"].as_str()?).map(str::to_owned)));
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = end.to_owned(),
                _ => return Ok(ids),
            }
        }
    }

    /// The `next_batch` of a sync that asks for almost nothing: where a receiver starts.
    pub async fn position(&self, user: &User) -> Result<String> {
        Ok(self.sync(user, None, 0, 1).await?["next_batch"].as_str().ok_or("no next_batch")?.to_owned())
    }

    /// Whether the server offers Axon's WebSocket stream (`/versions` unstable feature `org.axon.ws`).
    pub async fn offers_websocket(&self) -> bool {
        match self.call(reqwest::Method::GET, "/_matrix/client/versions", None, None).await {
            Ok(versions) => versions["unstable_features"]["org.axon.ws"] == true,
            Err(_) => false,
        }
    }

    /// Opens a WebSocket stream that starts at `since`, with the same filter the long-poll receivers use.
    pub async fn stream(&self, user: &User, since: &str) -> Result<Ws> {
        let url = format!(
            "{}{WS_PATH}?since={}&filter={}",
            self.base.replacen("http", "ws", 1),
            urlencode(since),
            sync_filter(100)
        );
        let mut request = url.into_client_request().map_err(|e| format!("websocket request: {e}"))?;
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", "m.json".parse().map_err(|_| "header")?);
        headers.insert("Authorization", format!("Bearer {}", user.token).parse().map_err(|_| "header")?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("{WS_PATH}: {e}"))?;
        Ok(ws)
    }
}

/// Timeline events only, no presence: what a receiver needs to see the bench's messages.
fn sync_filter(limit: u64) -> String {
    urlencode(&json!({"room": {"timeline": {"limit": limit}}, "presence": {"types": []}}).to_string())
}

pub fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The `<id>` of a body `bench:<id>`, or `bench:<id> <padding>`.
pub fn bench_id(body: &str) -> Option<&str> {
    let id = body.strip_prefix("bench:")?;
    Some(id.split_once(' ').map_or(id, |(id, _)| id))
}

/// Message bodies carry `bench:<id>`; every receiver reports what it saw in a sync response.
pub fn bench_ids(sync: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(rooms) = sync["rooms"]["join"].as_object() {
        for data in rooms.values() {
            for event in data["timeline"]["events"].as_array().into_iter().flatten() {
                if let Some(id) = event["content"]["body"].as_str().and_then(bench_id) {
                    found.push(id.to_owned());
                }
            }
        }
    }
    found
}

/// The sync body of a WebSocket frame, or None for pings and other frames; an error once the stream ends.
pub fn sync_frame(
    message: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<Value>> {
    match message {
        Some(Ok(Message::Text(text))) => {
            let frame: Value = serde_json::from_str(&text).map_err(|e| format!("websocket frame: {e}"))?;
            Ok((frame["type"] == "sync").then(|| frame["body"].clone()))
        }
        Some(Ok(Message::Close(close))) => Err(format!("websocket closed: {close:?}")),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(format!("websocket: {e}")),
        None => Err("websocket ended".into()),
    }
}

/// Records the bench ids of a sync response; a room whose timeline came `limited` (more events
/// than the filter's limit since `since`) is paged back to `since` first, as a client fills the gap.
async fn record(api: &Api, user: &User, seen: &Arrivals, response: &Value, since: Option<&str>) -> Result<()> {
    let mut ids = Vec::new();
    if let (Some(since), Some(rooms)) = (since, response["rooms"]["join"].as_object()) {
        for (room, data) in rooms {
            if data["timeline"]["limited"] == true {
                if let Some(from) = data["timeline"]["prev_batch"].as_str() {
                    ids.extend(api.messages_between(user, room, from, since).await?);
                }
            }
        }
    }
    ids.extend(bench_ids(response));
    let now = Instant::now();
    let mut seen = seen.lock().map_err(|_| "poisoned")?;
    for id in ids {
        seen.entry(id).or_default().push(now);
    }
    Ok(())
}

/// Receivers that record when each bench id arrives and how often, each as its own user.
pub struct Receivers {
    handles: Vec<tokio::task::JoinHandle<Result<()>>>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receivers {
    pub fn spawn(receivers: impl IntoIterator<Item = (Api, User, Arrivals)>, transport: Transport) -> Self {
        let ready = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = receivers
            .into_iter()
            .map(|(api, user, seen)| {
                let (ready, stop) = (ready.clone(), stop.clone());
                tokio::spawn(async move {
                    let since = api.position(&user).await?;
                    match transport {
                        Transport::LongPoll => {
                            ready.fetch_add(1, Ordering::Relaxed);
                            let mut since = Some(since);
                            while !stop.load(Ordering::Relaxed) {
                                let response = api.sync(&user, since.as_deref(), 5_000, 100).await?;
                                record(&api, &user, &seen, &response, since.as_deref()).await?;
                                since = response["next_batch"].as_str().map(str::to_owned);
                            }
                        }
                        Transport::WebSocket => {
                            let mut ws = api.stream(&user, &since).await?;
                            ready.fetch_add(1, Ordering::Relaxed);
                            let mut since = since;
                            while !stop.load(Ordering::Relaxed) {
                                if let Some(body) = sync_frame(ws.next().await)? {
                                    record(&api, &user, &seen, &body, Some(&since)).await?;
                                    if let Some(next) = body["next_batch"].as_str() {
                                        since = next.to_owned();
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        Self { handles, ready, stop }
    }

    /// Waits until every receiver holds its starting position (and its stream, over WebSocket), so that
    /// the timed part starts with all of them listening.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ready.load(Ordering::Relaxed) < self.handles.len() {
            if let Some(failed) = self.handles.iter_mut().find(|h| h.is_finished()) {
                return Err(failed.await.map_err(|e| e.to_string())?.err().unwrap_or("a receiver ended".into()));
            }
            if Instant::now() > deadline {
                return Err("receivers not ready within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A long-poll receiver is ready before its first request reaches the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.abort();
        }
    }
}
