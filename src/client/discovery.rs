//! `/versions`, `/.well-known/matrix/client`, `/capabilities`.

use std::collections::BTreeMap;

use ruma::{
    api::client::discovery::{
        discover_homeserver::{self, HomeserverInfo},
        get_capabilities::v3::{
            self as get_capabilities, Capabilities, ChangePasswordCapability, RoomVersionStability,
            RoomVersionsCapability,
        },
        get_supported_versions,
    },
    RoomVersionId,
};

use crate::{error::Result, http::Ruma, services::Services};

/// The spec versions whose endpoints Axon serves. Endpoints Axon has not built yet answer
/// `404 M_UNRECOGNIZED`, which the spec allows clients to handle (see README).
const SPEC_VERSIONS: &[&str] =
    &["v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"];

pub async fn versions(
    _: Services,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(SPEC_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Element sets up cross-signing at registration only where this flag is set (Synapse sets it too).
    response.unstable_features = BTreeMap::from([
        (super::ws::UNSTABLE_FEATURE.to_owned(), true),
        ("org.matrix.e2e_cross_signing".to_owned(), true),
    ]);
    Ok(response)
}

pub async fn well_known(s: Services, _: Ruma<discover_homeserver::Request>) -> Result<discover_homeserver::Response> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(s.config.public_baseurl())))
}

pub async fn capabilities(_: Services, _: Ruma<get_capabilities::Request>) -> Result<get_capabilities::Response> {
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.room_versions = RoomVersionsCapability::new(
        RoomVersionId::V11,
        BTreeMap::from([
            (RoomVersionId::V10, RoomVersionStability::Stable),
            (RoomVersionId::V11, RoomVersionStability::Stable),
        ]),
    );
    Ok(get_capabilities::Response::new(capabilities))
}
