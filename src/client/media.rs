//! Media (spec: "Content repository"). Axon carries text only and stores no media: the one media
//! endpoint it serves is the configuration, whose zero `m.upload.size` tells clients that uploads
//! are off, so that Element refuses a file up front instead of failing after the upload. Every
//! other media endpoint answers 404 `M_UNRECOGNIZED`.

use ruma::{
    api::client::{authenticated_media::get_media_config::v1 as config_v1, media::get_media_config::v3 as config_v3},
    UInt,
};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn config(_: Services, req: Ruma<config_v1::Request>) -> Result<config_v1::Response> {
    req.require_session()?;
    Ok(config_v1::Response::new(UInt::MIN))
}

/// The deprecated unauthenticated-media path, which older clients still read.
#[allow(deprecated)] // ruma marks the v3 path deprecated; serving it is the point.
pub async fn legacy_config(_: Services, req: Ruma<config_v3::Request>) -> Result<config_v3::Response> {
    req.require_session()?;
    Ok(config_v3::Response::new(UInt::MIN))
}
