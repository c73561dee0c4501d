//! `GET /voip/turnServer` (spec: "Voice over IP"). Axon configures no TURN server: the spec's
//! answer is then an empty object, which clients read as "no relay" and do not poll again soon.

use ruma::api::client::voip::get_turn_server_info::v3 as turn_server;
use serde_json::{json, Value as JsonValue};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn turn_server(_: Services, req: Ruma<turn_server::Request>) -> Result<JsonValue> {
    req.require_session()?;
    Ok(json!({}))
}
