//! `whoami`, password change and deactivation (spec: "Account registration and management").

use ruma::api::client::{
    account::{
        change_password::v3 as change_password, deactivate::v3 as deactivate, whoami::v3 as whoami,
        ThirdPartyIdRemovalStatus,
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
