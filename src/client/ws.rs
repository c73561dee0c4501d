//! The WebSocket stream (DESIGN.md section 8): `GET /_matrix/client/unstable/org.axon.ws/stream`,
//! subprotocol `m.json`. The server pushes `{"type":"sync","body":<a /sync response>}` whenever
//! there is news; the client may call `ping`, `send`, `state`, `typing`, `receipt`, `read_markers`,
//! `set_presence` with `{"id","method","params"}` and gets `{"id","result"}` or `{"id","error"}`.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        Query, State,
    },
    http::{header, HeaderMap},
    response::Response,
};
use futures_util::StreamExt;
use ruma::{api::client::filter::FilterDefinition, EventId, RoomId};
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::rooms::check_message_size;
use crate::{
    accounts::Session,
    error::{Error, Result},
    rooms::{EventDraft, Txn},
    services::Services,
    sync::{StreamToken, SyncFilter, SyncRequest},
};

pub const PATH: &str = "/_matrix/client/unstable/org.axon.ws/stream";
pub const UNSTABLE_FEATURE: &str = "org.axon.ws";

const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A frame the client does not take within this time marks it a slow consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one server-side wait for news lasts before it is renewed.
const SYNC_WAIT: Duration = Duration::from_secs(30);

/// tungstenite's read buffer, which an idle stream keeps (zero-filled, so resident) for the next
/// read: a client's frame is a few hundred bytes, and a larger one (a long message) is read in
/// more steps. 4 KiB here made it the largest part of an idle stream (BENCHMARKS.md).
const WS_BUFFER_BYTES: usize = 1024;

const CLOSE_UNKNOWN_TOKEN: u16 = 4401;
const CLOSE_AUTH_TIMEOUT: u16 = 4408;
const CLOSE_BAD_SINCE: u16 = 4410;
const CLOSE_SLOW_CONSUMER: u16 = 4429;
const CLOSE_SHUTTING_DOWN: u16 = 4503;

#[derive(Deserialize)]
pub struct StreamParams {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: bool,
    set_presence: Option<String>,
}

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(default)]
    id: JsonValue,
    method: String,
    #[serde(default)]
    params: JsonValue,
}

pub async fn upgrade(
    State(s): State<Services>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    // Small buffers: a stream idles far more than it talks, and tungstenite's defaults (128 KiB
    // each way) would make every idle connection cost as much as a busy one.
    ws.protocols(["m.json"])
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| Connection { s, socket }.run(Box::new(params), token))
}

struct Connection {
    s: Services,
    socket: WebSocket,
}

/// Why a stream ends: a close frame to send (code and reason), or `None` when the connection is
/// gone or was dropped without one.
type Ending = Option<(u16, &'static str)>;

impl Connection {
    /// The stream's task. An idle stream holds this future for as long as it is open, so the
    /// futures of what happens rarely (authentication, a client's frame, a revocation check, the
    /// sending of a frame or a ping) are boxed, and the close is sent after the stream's loop, not
    /// from within it: inline, each would add its size to every idle stream (the three sends made
    /// it 5,128 bytes instead of 4,016).
    /// `params` is boxed: both this future and `serve`'s keep their arguments for as long as they
    /// last.
    async fn run(mut self, params: Box<StreamParams>, header_token: Option<String>) {
        if let Some((code, reason)) = self.serve(params, header_token).await {
            let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
            let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
        }
    }

    /// Sends a frame, or reports the client as too slow to take it (a broken one is just gone).
    async fn send(&mut self, frame: impl serde::Serialize) -> std::result::Result<(), Ending> {
        let Ok(text) = serde_json::to_string(&frame) else { return Err(None) };
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(Utf8Bytes::from(text)))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some((CLOSE_SLOW_CONSUMER, "slow consumer"))),
        }
    }

    async fn authenticate(&mut self, header_token: Option<String>) -> std::result::Result<(Session, String), u16> {
        let token = match header_token {
            Some(token) => token,
            // Browsers cannot set headers: the first frame carries the token.
            None => {
                let frame =
                    tokio::time::timeout(AUTH_TIMEOUT, self.socket.next()).await.map_err(|_| CLOSE_AUTH_TIMEOUT)?;
                let Some(Ok(Message::Text(text))) = frame else { return Err(CLOSE_UNKNOWN_TOKEN) };
                let frame: ClientFrame = serde_json::from_str(&text).map_err(|_| CLOSE_UNKNOWN_TOKEN)?;
                match (frame.method.as_str(), frame.params["access_token"].as_str()) {
                    ("auth", Some(token)) => token.to_owned(),
                    _ => return Err(CLOSE_UNKNOWN_TOKEN),
                }
            }
        };
        match self.s.accounts.session_for_token(&token).await {
            Ok(Some(session)) => Ok((session, token)),
            _ => Err(CLOSE_UNKNOWN_TOKEN),
        }
    }

    async fn serve(&mut self, params: Box<StreamParams>, header_token: Option<String>) -> Ending {
        const REVOKED: Ending = Some((CLOSE_UNKNOWN_TOKEN, "the access token was revoked"));
        const SHUTTING_DOWN: Ending = Some((CLOSE_SHUTTING_DOWN, "server shutting down"));
        let (session, access_token) = match Box::pin(self.authenticate(header_token)).await {
            Ok(authenticated) => authenticated,
            Err(code) => return Some((code, "authentication failed")),
        };
        let Ok(since) = params.since.as_deref().map(StreamToken::parse).transpose() else {
            return Some((CLOSE_BAD_SINCE, "since is not a usable sync token"));
        };
        let filter = match params.filter.as_deref() {
            None => Arc::new(SyncFilter::default()),
            Some(text) => match Box::pin(stream_filter(&self.s, &session, text)).await {
                Ok(filter) => filter,
                Err(_) => return Some((CLOSE_BAD_SINCE, "unknown or invalid filter")),
            },
        };
        let mut token = since;
        let mut full_state = params.full_state;
        let set_presence = params.set_presence.unwrap_or_else(|| crate::presence::ONLINE.to_owned());
        let mut shutdown = self.s.shutdown.clone();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut unanswered_pings = 0u8;
        let services = self.s.clone();
        loop {
            let request = SyncRequest {
                user_id: session.user_id.as_str(),
                device_id: session.device_id.as_str(),
                since: token,
                full_state,
                filter: &filter,
                timeout: SYNC_WAIT,
                set_presence: &set_presence,
            };
            // The sync's future is dropped before its answer is handled (its block ends), so the
            // two take the same room in this future's state; the answer is boxed besides, as it
            // would otherwise be reserved twice (the outcome, and the body moved out of it).
            let outcome = {
                let sync = services.sync.sync(&request, shutdown.clone());
                tokio::pin!(sync);
                // Wait for news while answering the client's frames and keeping the connection alive.
                loop {
                    tokio::select! {
                        result = &mut sync => break Some(result.map(Box::new)),
                        frame = self.socket.next() => match frame {
                            Some(Ok(Message::Text(text))) => {
                                if Box::pin(revoked(&services, &access_token)).await {
                                    return REVOKED;
                                }
                                let answer = Box::pin(handle_frame(&services, &session, &text)).await;
                                if let Err(ending) = Box::pin(self.send(answer)).await {
                                    return ending;
                                }
                            }
                            Some(Ok(Message::Pong(_))) => unanswered_pings = 0,
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                            Some(Ok(_)) => {}
                        },
                        _ = ping.tick() => {
                            if unanswered_pings >= 2 {
                                return None;
                            }
                            unanswered_pings += 1;
                            if Box::pin(self.socket.send(Message::Ping(Default::default()))).await.is_err() {
                                return None;
                            }
                        }
                        _ = shutdown.changed() => break None,
                    }
                }
            };
            match outcome {
                None => return SHUTTING_DOWN,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "websocket sync failed");
                    return Some((CLOSE_SHUTTING_DOWN, "sync failed; reconnect"));
                }
                Some(Ok(body)) => {
                    let next = StreamToken::parse(&body.next_batch).ok();
                    // An empty wait (no news before the wait ended) sends nothing.
                    let empty = token.is_some() && next == token;
                    if !empty {
                        if Box::pin(revoked(&services, &access_token)).await {
                            return REVOKED;
                        }
                        if let Err(ending) = Box::pin(self.send(SyncFrame { kind: "sync", body: &body })).await {
                            return ending;
                        }
                    }
                    token = next.or(token);
                    full_state = false;
                }
            }
            if *shutdown.borrow() {
                return SHUTTING_DOWN;
            }
        }
    }
}

/// Whether the stream's token has been revoked (its device logged out) since it connected.
/// Checked before every frame either way, from the session cache where there is one; a database
/// error does not count as revocation, or a hiccup would log clients out.
async fn revoked(s: &Services, token: &str) -> bool {
    matches!(s.accounts.session_for_token(token).await, Ok(None))
}

/// A sync response on the stream: `{"type": "sync", "body": …}` (DESIGN.md, WebSocket protocol).
#[derive(serde::Serialize)]
struct SyncFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    body: &'a crate::sync::SyncResponse,
}

async fn stream_filter(s: &Services, session: &Session, text: &str) -> Result<Arc<SyncFilter>> {
    if !text.trim_start().starts_with('{') {
        return super::sync::stored_sync_filter(s, session.user_id.as_str(), text).await;
    }
    let definition: FilterDefinition = serde_json::from_str(text).map_err(|e| Error::BadJson(e.to_string()))?;
    Ok(Arc::new(SyncFilter::from_definition(&definition)))
}

/// Answers one client frame.
async fn handle_frame(s: &Services, session: &Session, text: &str) -> JsonValue {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => return json!({"id": null, "error": error_body(&Error::BadJson(format!("not a request frame: {e}")))}),
    };
    match call(s, session, &frame).await {
        Ok(result) => json!({"id": frame.id, "result": result}),
        Err(e) => json!({"id": frame.id, "error": error_body(&e)}),
    }
}

fn error_body(e: &Error) -> JsonValue {
    json!({"errcode": e.errcode(), "error": e.public_message()})
}

fn param<'a>(params: &'a JsonValue, name: &str) -> Result<&'a str> {
    params[name].as_str().ok_or_else(|| Error::MissingParam(format!("params.{name} is required")))
}

fn room_param(params: &JsonValue) -> Result<&RoomId> {
    <&RoomId>::try_from(param(params, "room_id")?).map_err(|e| Error::InvalidParam(format!("room_id: {e}")))
}

async fn call(s: &Services, session: &Session, frame: &ClientFrame) -> Result<JsonValue> {
    let p = &frame.params;
    let user = &session.user_id;
    match frame.method.as_str() {
        "ping" => Ok(json!({})),
        "send" => {
            // The frame's id is the transaction ID, deduplicated exactly like PUT /send.
            let txn_id =
                frame.id.as_str().ok_or_else(|| Error::MissingParam("id must be a string transaction ID".into()))?;
            let room_id = room_param(p)?;
            let kind = param(p, "type")?;
            let content =
                p["content"].as_object().ok_or_else(|| Error::BadJson("params.content must be an object".into()))?;
            check_message_size(kind, content)?;
            if kind == "m.room.redaction" {
                return Err(Error::BadRequest("use the /redact endpoint to redact events".into()));
            }
            let txn = Txn { device_id: session.device_id.as_str(), scope: format!("send {room_id} {kind}"), txn_id };
            let appended = s
                .rooms
                .append(room_id, user, EventDraft::message(kind, JsonValue::Object(content.clone())), Some(txn))
                .await?;
            s.sync.presence().active(user.as_str()).await?;
            Ok(json!({"event_id": appended.event_id}))
        }
        "state" => {
            let room_id = room_param(p)?;
            let content =
                p["content"].as_object().ok_or_else(|| Error::BadJson("params.content must be an object".into()))?;
            let draft = EventDraft::state(
                param(p, "type")?,
                p["state_key"].as_str().unwrap_or(""),
                JsonValue::Object(content.clone()),
            );
            let appended = s.rooms.append(room_id, user, draft, None).await?;
            s.sync.presence().active(user.as_str()).await?;
            Ok(json!({"event_id": appended.event_id}))
        }
        "typing" => {
            let typing =
                p["typing"].as_bool().ok_or_else(|| Error::MissingParam("params.typing is required".into()))?;
            let timeout = typing.then(|| Duration::from_millis(p["timeout"].as_u64().unwrap_or(30_000)));
            s.sync.set_typing(room_param(p)?, user, timeout).await?;
            Ok(json!({}))
        }
        "receipt" => {
            let event_id = <&EventId>::try_from(param(p, "event_id")?)
                .map_err(|e| Error::InvalidParam(format!("event_id: {e}")))?;
            let kind = p["receipt_type"].as_str().unwrap_or("m.read");
            if !matches!(kind, "m.read" | "m.read.private" | "m.fully_read") {
                return Err(Error::InvalidParam("unknown receipt_type".into()));
            }
            s.sync.set_receipt(room_param(p)?, user, kind, event_id, p["thread_id"].as_str()).await?;
            Ok(json!({}))
        }
        "read_markers" => {
            let room_id = room_param(p)?;
            for kind in ["m.fully_read", "m.read", "m.read.private"] {
                if let Some(id) = p[kind].as_str() {
                    let event_id = <&EventId>::try_from(id).map_err(|e| Error::InvalidParam(format!("{kind}: {e}")))?;
                    s.sync.set_receipt(room_id, user, kind, event_id, None).await?;
                }
            }
            Ok(json!({}))
        }
        "set_presence" => {
            let state = param(p, "presence")?;
            if !matches!(state, "online" | "unavailable" | "offline") {
                return Err(Error::InvalidParam("presence must be online, unavailable or offline".into()));
            }
            s.sync.presence().set(user.as_str(), state, p["status_msg"].as_str().map(str::to_owned)).await?;
            Ok(json!({}))
        }
        _ => Err(Error::Unrecognized),
    }
}
