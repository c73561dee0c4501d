//! Events as clients see them (spec: "ClientEvent"): the PDU without its federation fields, with
//! `event_id` and `unsigned` (age, `redacted_because`, the sender device's `transaction_id`).

use std::collections::HashMap;

use serde_json::{json, Map, Value as JsonValue};

use crate::{
    error::Result,
    storage::{now_ms, EventRow, Storage},
};

/// Formats rows for a reader, fetching the redaction events of redacted rows in one query.
pub async fn client_events(storage: &Storage, rows: &[EventRow]) -> Result<Vec<JsonValue>> {
    let redaction_ids: Vec<&str> = rows.iter().filter_map(|r| r.redacted_by.as_deref()).collect();
    let redactions: HashMap<String, JsonValue> = if redaction_ids.is_empty() {
        HashMap::new()
    } else {
        storage.events(&redaction_ids).await?.iter().map(|r| (r.event_id.clone(), client_event(r, None))).collect()
    };
    Ok(rows.iter().map(|r| client_event(r, r.redacted_by.as_ref().and_then(|id| redactions.get(id)))).collect())
}

pub fn client_event(row: &EventRow, redacted_because: Option<&JsonValue>) -> JsonValue {
    let pdu: JsonValue = serde_json::from_str(&row.pdu).unwrap_or(JsonValue::Null);
    let mut event = Map::new();
    for field in ["content", "origin_server_ts", "room_id", "sender", "type", "state_key"] {
        if let Some(value) = pdu.get(field) {
            event.insert(field.to_owned(), value.clone());
        }
    }
    event.insert("event_id".into(), json!(row.event_id));
    // Clients of every room version find a redaction's target at the top level.
    if let Some(redacts) =
        pdu.get("redacts").or_else(|| pdu["content"].get("redacts").filter(|_| row.event_type == "m.room.redaction"))
    {
        event.insert("redacts".into(), redacts.clone());
    }
    let mut unsigned = Map::new();
    if let Some(ts) = pdu["origin_server_ts"].as_i64() {
        unsigned.insert("age".into(), json!((now_ms() - ts).max(0)));
    }
    if let Some(redaction) = redacted_because {
        unsigned.insert("redacted_because".into(), redaction.clone());
    }
    event.insert("unsigned".into(), JsonValue::Object(unsigned));
    JsonValue::Object(event)
}
