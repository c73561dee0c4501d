//! `whoami`, password change and deactivation (spec: "Account registration and management").

use ruma::api::client::{
    account::{
        change_password::v3 as change_password, deactivate::v3 as deactivate, get_3pids::v3 as get_3pids,
        whoami::v3 as whoami, ThirdPartyIdRemovalStatus,
    },
    uiaa::AuthType,
};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn whoami(_: Services, req: Ruma<whoami::Request>) -> Result<whoami::Response> {
    let session = req.require_session()?;
    let mut response = whoami::Response::new(session.user_id.clone(), false);
    response.device_id = Some(session.device_id.clone());
    Ok(response)
}

/// Axon binds no email addresses or phone numbers to accounts: the list is always empty (Element's
/// account settings read it; adding one answers 404 `M_UNRECOGNIZED`).
/// The field is written out even when empty: Element reads `threepids` without a default.
pub async fn third_party_ids(_: Services, req: Ruma<get_3pids::Request>) -> Result<serde_json::Value> {
    req.require_session()?;
    Ok(serde_json::json!({"threepids": []}))
}

pub async fn change_password(s: Services, req: Ruma<change_password::Request>) -> Result<change_password::Response> {
    let session = req.require_session()?;
    let body = &req.body;
    s.accounts.authenticate_uia(&[vec![AuthType::Password]], body.auth.as_ref(), Some(&session.user_id)).await?;
    s.accounts.set_password(&session.user_id, &body.new_password).await?;
    if body.logout_devices {
        s.accounts.delete_other_devices(&session.user_id, Some(session.device_id.as_str())).await?;
    }
    Ok(change_password::Response::new())
}

pub async fn deactivate(s: Services, req: Ruma<deactivate::Request>) -> Result<deactivate::Response> {
    let session = req.require_session()?;
    s.accounts.authenticate_uia(&[vec![AuthType::Password]], req.body.auth.as_ref(), Some(&session.user_id)).await?;
    s.accounts.deactivate(&session.user_id).await?;
    tracing::info!(user_id = %session.user_id, "deactivated");
    Ok(deactivate::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}
