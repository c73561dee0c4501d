//! `GET /thirdparty/protocols` (spec: "Third-party Networks"): Axon hosts no bridges, so no
//! protocols. The other third-party lookups answer 404 `M_UNRECOGNIZED`.

use std::collections::BTreeMap;

use ruma::api::client::thirdparty::get_protocols::v3 as protocols;

use crate::{error::Result, http::Ruma, services::Services};

pub async fn protocols(_: Services, req: Ruma<protocols::Request>) -> Result<protocols::Response> {
    req.require_session()?;
    Ok(protocols::Response::new(BTreeMap::new()))
}
