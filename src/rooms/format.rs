//! Events as clients see them (spec: "ClientEvent"): the PDU without its federation fields, with
//! `event_id` and `unsigned` (age, `redacted_because`, the sender device's `transaction_id`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Map, Value as JsonValue};

use crate::{
    error::Result,
    storage::{now_ms, EventRow, Storage},
};

/// Formats rows for `viewer`, fetching in one query the redaction events of redacted rows and the
/// state events that state rows replaced, and bundling the aggregations of rows with children.
pub async fn client_events<'a>(
    storage: &Storage,
    viewer: &str,
    rows: impl IntoIterator<Item = &'a EventRow>,
) -> Result<Vec<JsonValue>> {
    let rows: Vec<&EventRow> = rows.into_iter().collect();
    let related: Vec<&str> =
        rows.iter().flat_map(|r| [r.redacted_by.as_deref(), r.replaces_state.as_deref()]).flatten().collect();
    let related: HashMap<String, EventRow> = if related.is_empty() {
        HashMap::new()
    } else {
        storage.events(&related).await?.into_iter().map(|r| (r.event_id.clone(), r)).collect()
    };
    let mut events: Vec<JsonValue> = rows
        .iter()
        .map(|r| {
            let redaction = r.redacted_by.as_ref().and_then(|id| related.get(id)).map(|e| client_event(e, None));
            let mut event = client_event(r, redaction.as_ref());
            if let Some(previous) = r.replaces_state.as_ref().and_then(|id| related.get(id)) {
                add_previous_state(&mut event, previous);
            }
            event
        })
        .collect();
    super::relations::bundle_aggregations(storage, viewer, &rows, &mut events, |r| client_event(r, None)).await?;
    Ok(events)
}

/// The PDU fields a client event carries. The rest (hashes, signatures, DAG edges) is skipped
/// while parsing rather than built and thrown away: formatting is most of a large sync's work.
/// `V` is `JsonValue` to work on them, or `&RawValue` to copy them out as they came.
#[derive(Deserialize, Serialize)]
struct ClientFields<V> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<V>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin_server_ts: Option<V>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<V>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<V>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<V>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<V>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<V>,
}

impl<'a, V: Deserialize<'a>> ClientFields<V> {
    /// The fields of the row's PDU; none when it does not parse.
    fn of(row: &'a EventRow) -> Self {
        serde_json::from_str(&row.pdu).unwrap_or(ClientFields {
            content: None,
            origin_server_ts: None,
            room_id: None,
            sender: None,
            kind: None,
            state_key: None,
            redacts: None,
        })
    }
}

/// `unsigned.prev_content`, `prev_sender` and `replaces_state` of a state event (spec:
/// "UnsignedData"): clients read an invite's `is_direct` and profile changes from them.
fn add_previous_state(event: &mut JsonValue, previous: &EventRow) {
    event["unsigned"]["replaces_state"] = json!(previous.event_id);
    event["unsigned"]["prev_sender"] = json!(previous.sender);
    if let Some(content) = ClientFields::<JsonValue>::of(previous).content {
        event["unsigned"]["prev_content"] = content;
    }
}

pub fn client_event(row: &EventRow, redacted_because: Option<&JsonValue>) -> JsonValue {
    let pdu = ClientFields::<JsonValue>::of(row);
    let mut unsigned = Map::new();
    if let Some(ts) = pdu.origin_server_ts.as_ref().and_then(JsonValue::as_i64) {
        unsigned.insert("age".into(), json!((now_ms() - ts).max(0)));
    }
    if let Some(redaction) = redacted_because {
        unsigned.insert("redacted_because".into(), redaction.clone());
    }
    // Clients of every room version find a redaction's target at the top level.
    let redacts = pdu.redacts.or_else(|| {
        pdu.content.as_ref().and_then(|c| c.get("redacts")).filter(|_| row.event_type == "m.room.redaction").cloned()
    });
    let mut event = Map::new();
    let fields = [
        ("content", pdu.content),
        ("origin_server_ts", pdu.origin_server_ts),
        ("room_id", pdu.room_id),
        ("sender", pdu.sender),
        ("type", pdu.kind),
        ("state_key", pdu.state_key),
        ("redacts", redacts),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            event.insert(field.to_owned(), value);
        }
    }
    event.insert("event_id".into(), json!(row.event_id));
    event.insert("unsigned".into(), JsonValue::Object(unsigned));
    JsonValue::Object(event)
}

/// Formats rows as [`client_events`] does, straight to JSON text, with `unsigned.transaction_id`
/// on the events `transaction_ids` maps (event ID → transaction ID). A sync response carries
/// thousands of events: text copied from the PDU skips building, serializing and freeing a
/// `serde_json::Value` tree for each. Rows that need more than their own PDU (redacted, replacing
/// earlier state, with bundled children, redactions) take the `Value` path.
pub async fn client_events_as_text<'a>(
    storage: &Storage,
    viewer: &str,
    rows: impl IntoIterator<Item = &'a EventRow>,
    transaction_ids: &HashMap<String, String>,
) -> Result<Vec<Box<RawValue>>> {
    let rows: Vec<&EventRow> = rows.into_iter().collect();
    let needs_tree = |r: &EventRow| {
        r.redacted_by.is_some() || r.replaces_state.is_some() || r.has_relations || r.event_type == "m.room.redaction"
    };
    let mut trees = client_events(storage, viewer, rows.iter().copied().filter(|r| needs_tree(r))).await?.into_iter();
    let now = now_ms();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let transaction_id = transaction_ids.get(&row.event_id).map(|key| super::transaction_id_of_key(key));
        let text = if needs_tree(row) {
            let mut event = trees.next().unwrap_or_default();
            if let Some(transaction_id) = transaction_id {
                event["unsigned"]["transaction_id"] = json!(transaction_id);
            }
            serde_json::value::to_raw_value(&event)
        } else {
            let pdu = ClientFields::<&RawValue>::of(row);
            let age = pdu.origin_server_ts.and_then(|ts| ts.get().parse::<i64>().ok()).map(|ts| (now - ts).max(0));
            serde_json::value::to_raw_value(&RawClientEvent {
                fields: pdu,
                event_id: &row.event_id,
                unsigned: RawUnsigned { age, transaction_id },
            })
        };
        events.push(text.map_err(crate::error::Error::internal)?);
    }
    Ok(events)
}

#[derive(Serialize)]
struct RawClientEvent<'a> {
    #[serde(flatten)]
    fields: ClientFields<&'a RawValue>,
    event_id: &'a str,
    unsigned: RawUnsigned<'a>,
}

#[derive(Serialize)]
struct RawUnsigned<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
}
