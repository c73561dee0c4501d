//! `POST /register` (user-interactive) and `GET /register/available`.

use ruma::api::client::{
    account::{get_username_availability::v3 as available, register::v3 as register, register::RegistrationKind},
    uiaa::AuthType,
};

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

pub async fn register(s: Services, req: Ruma<register::Request>) -> Result<register::Response> {
    s.auth_limiter.check(req.client_ip)?;
    let ip = req.client_ip.to_string();
    let body = req.body;
    if body.kind == RegistrationKind::Guest {
        return Err(Error::GuestAccessForbidden);
    }
    if !s.config.registration.enabled {
        return Err(Error::Forbidden("registration is disabled on this server".into()));
    }
    // Tell the client about a bad or taken name before it goes through the auth stages.
    if let Some(name) = &body.username {
        s.accounts.check_username_available(name).await?;
    }
    let stage = if s.config.registration.token.is_some() { AuthType::RegistrationToken } else { AuthType::Dummy };
    s.accounts.authenticate_uia(&[vec![stage]], body.auth.as_ref(), None).await?;

    let user_id = s.accounts.register(body.username.as_deref(), body.password.as_deref(), false).await?;
    tracing::info!(%user_id, "registered");
    let mut response = register::Response::new(user_id.clone());
    if !body.inhibit_login {
        let (token, device_id) = s
            .accounts
            .open_session(&user_id, body.device_id, body.initial_device_display_name.as_deref(), Some(&ip))
            .await?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response)
}

pub async fn username_available(s: Services, req: Ruma<available::Request>) -> Result<available::Response> {
    s.auth_limiter.check(req.client_ip)?;
    s.accounts.check_username_available(&req.body.username).await?;
    Ok(available::Response::new(true))
}
