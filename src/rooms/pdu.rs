//! PDUs: the federation-format events every room is made of (spec: server-server "PDUs", room
//! versions 10 and 11). Built here, hashed and signed with ruma's canonical JSON and signatures.

use std::sync::Arc;

use ruma::{
    canonical_json::{redact, to_canonical_value, CanonicalJsonObject, CanonicalJsonValue},
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    serde::{base64::Standard, Base64},
    signatures::{reference_hash, sign_event, Ed25519KeyPair},
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::{value::RawValue as RawJsonValue, Value as JsonValue};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A PDU as the auth rules and the room layer read it.
#[derive(Debug, Deserialize)]
pub struct Pdu {
    #[serde(skip, default = "placeholder_event_id")]
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    pub depth: ruma::UInt,
    /// Top-level `redacts` (room versions before 11); version 11 keeps it in the content.
    #[serde(default)]
    redacts: Option<OwnedEventId>,
    #[serde(skip)]
    content_redacts: Option<OwnedEventId>,
}

fn placeholder_event_id() -> OwnedEventId {
    // Replaced right after parsing: PDUs of room versions 4+ do not carry their ID.
    EventId::parse("$placeholder").expect("valid placeholder event ID")
}

impl Pdu {
    /// Parses a stored or freshly built PDU, given its event ID.
    pub fn parse(event_id: &str, json: &str) -> Result<Self> {
        let mut pdu: Pdu =
            serde_json::from_str(json).map_err(|e| Error::internal(format!("stored PDU {event_id}: {e}")))?;
        pdu.event_id = EventId::parse(event_id).map_err(Error::internal)?;
        #[derive(Deserialize)]
        struct Redacts {
            redacts: Option<OwnedEventId>,
        }
        if pdu.kind == TimelineEventType::RoomRedaction {
            pdu.content_redacts = serde_json::from_str::<Redacts>(pdu.content.get()).ok().and_then(|r| r.redacts);
        }
        Ok(pdu)
    }

    pub fn content_json(&self) -> JsonValue {
        serde_json::from_str(self.content.get()).unwrap_or(JsonValue::Null)
    }

    /// The event a redaction redacts, wherever the room version puts it.
    pub fn redacted_event(&self) -> Option<&EventId> {
        self.redacts.as_deref().or(self.content_redacts.as_deref())
    }

    /// `content.membership` of a member event.
    pub fn membership(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Membership {
            membership: String,
        }
        (self.kind == TimelineEventType::RoomMember)
            .then(|| serde_json::from_str::<Membership>(self.content.get()).ok().map(|m| m.membership))
            .flatten()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref().or(self.content_redacts.as_ref())
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// What a local user asks to send; the room layer turns it into a PDU.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: JsonValue,
}

impl EventDraft {
    pub fn state(kind: &str, state_key: &str, content: JsonValue) -> Self {
        Self { kind: kind.to_owned(), state_key: Some(state_key.to_owned()), content }
    }
    pub fn message(kind: &str, content: JsonValue) -> Self {
        Self { kind: kind.to_owned(), state_key: None, content }
    }
}

/// The unsigned fields of a new PDU; hashing and signing complete it.
pub struct PduFields<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub draft: &'a EventDraft,
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub depth: u64,
    pub origin_server_ts: u64,
}

/// Builds the PDU JSON, adds its content hash and this server's signature, and derives its event
/// ID (the reference hash, room versions 4+). Returns the ID and the canonical JSON text.
pub fn build_signed_pdu(
    fields: &PduFields<'_>,
    rules: &RoomVersionRules,
    server_name: &str,
    key: &Ed25519KeyPair,
    max_bytes: usize,
) -> Result<(OwnedEventId, String)> {
    let mut object = CanonicalJsonObject::new();
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(ids.iter().map(|i| CanonicalJsonValue::String(i.to_string())).collect())
    };
    object.insert("auth_events".into(), ids(fields.auth_events));
    object.insert("prev_events".into(), ids(fields.prev_events));
    let content = to_canonical_value(&fields.draft.content).map_err(|e| Error::BadJson(format!("content: {e}")))?;
    if !matches!(content, CanonicalJsonValue::Object(_)) {
        return Err(Error::BadJson("content must be a JSON object".into()));
    }
    // Before room version 11 a redaction names its target at the top level too.
    if fields.draft.kind == "m.room.redaction" && !rules.redaction.content_field_redacts {
        if let CanonicalJsonValue::Object(c) = &content {
            if let Some(target) = c.get("redacts") {
                object.insert("redacts".into(), target.clone());
            }
        }
    }
    object.insert("content".into(), content);
    object.insert("depth".into(), CanonicalJsonValue::Integer(int(fields.depth)?));
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(int(fields.origin_server_ts)?));
    object.insert("room_id".into(), CanonicalJsonValue::String(fields.room_id.to_string()));
    object.insert("sender".into(), CanonicalJsonValue::String(fields.sender.to_string()));
    if let Some(state_key) = &fields.draft.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    object.insert("type".into(), CanonicalJsonValue::String(fields.draft.kind.clone()));

    add_content_hash(&mut object)?;
    sign_event(server_name, key, &mut object, &rules.redaction).map_err(Error::internal)?;
    let event_id = format!("${}", reference_hash(&object, rules).map_err(Error::internal)?);
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    if json.len() > max_bytes {
        return Err(Error::TooLarge(format!(
            "the event would be {} bytes; at most {max_bytes} are allowed",
            json.len()
        )));
    }
    Ok((EventId::parse(event_id).map_err(Error::internal)?, json))
}

fn int(n: u64) -> Result<ruma::Int> {
    ruma::Int::try_from(n).map_err(Error::internal)
}

/// The content hash (spec: "Calculating the content hash for an event"): SHA-256 of the canonical
/// JSON without `unsigned`, `signatures` and `hashes`. Computed here rather than by ruma because
/// ruma refuses events over 65,535 bytes, and Axon's text messages may be up to 100,000 characters.
fn add_content_hash(object: &mut CanonicalJsonObject) -> Result<()> {
    let mut hashed = object.clone();
    for field in ["unsigned", "signatures", "hashes"] {
        hashed.remove(field);
    }
    let canonical = serde_json::to_vec(&hashed).map_err(Error::internal)?;
    let digest: [u8; 32] = Sha256::digest(&canonical).into();
    let hash = Base64::<Standard, [u8; 32]>::new(digest).encode();
    let hashes = CanonicalJsonObject::from_iter([("sha256".to_owned(), CanonicalJsonValue::String(hash))]);
    object.insert("hashes".into(), CanonicalJsonValue::Object(hashes));
    Ok(())
}

/// The redacted form of a stored PDU (the room version's redaction algorithm).
pub fn redacted_pdu_json(json: &str, rules: &RoomVersionRules) -> Result<String> {
    let object: CanonicalJsonObject = serde_json::from_str(json).map_err(Error::internal)?;
    let redacted = redact(object, &rules.redaction, None).map_err(Error::internal)?;
    serde_json::to_string(&redacted).map_err(Error::internal)
}

/// Shared handle to a parsed PDU.
pub type PduRef = Arc<Pdu>;
