//! Push rules (spec: "Push Rules"): reading the ruleset. Every account has the server-default
//! ruleset of the current spec (ruma's); changing rules, pushers and notification counts are not
//! built yet and answer 404 `M_UNRECOGNIZED` (issue: push notifications).

use ruma::{
    api::client::push::{get_pushrules_all::v3 as get_all, get_pushrules_global_scope::v3 as get_global},
    push::Ruleset,
};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn all_rules(_: Services, req: Ruma<get_all::Request>) -> Result<get_all::Response> {
    let session = req.require_session()?;
    Ok(get_all::Response::new(Ruleset::server_default(&session.user_id)))
}

pub async fn global_rules(_: Services, req: Ruma<get_global::Request>) -> Result<get_global::Response> {
    let session = req.require_session()?;
    Ok(get_global::Response::new(Ruleset::server_default(&session.user_id)))
}
