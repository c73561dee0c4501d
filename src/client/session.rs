//! Login and logout (spec: "Login", "Logout").

use ruma::api::client::{
    session::{
        get_login_types::v3::{self as login_types, LoginType, PasswordLoginType},
        login::v3::{self as login, LoginInfo},
        logout::v3 as logout,
        logout_all::v3 as logout_all,
    },
    uiaa::UserIdentifier,
};

use crate::{
    accounts::username::user_id_from_login,
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

pub async fn login_types(_: Services, _: Ruma<login_types::Request>) -> Result<login_types::Response> {
    Ok(login_types::Response::new(vec![LoginType::Password(PasswordLoginType::new())]))
}

pub async fn login(s: Services, req: Ruma<login::Request>) -> Result<login::Response> {
    s.auth_limiter.check(req.client_ip)?;
    let ip = req.client_ip.to_string();
    let body = req.body;
    let LoginInfo::Password(password) = &body.login_info else {
        return Err(Error::BadRequest("unsupported login type; this server offers m.login.password".into()));
    };
    #[allow(deprecated)] // `user` is the pre-r0.4 way to name the user, still sent by some clients.
    let typed = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.as_str(),
        (None, Some(user)) => user.as_str(),
        (None, None) => return Err(Error::MissingParam("identifier is required".into())),
        _ => return Err(Error::Forbidden("only m.id.user identifiers are supported".into())),
    };
    let user_id = user_id_from_login(typed, s.accounts.server_name())
        .ok_or_else(|| Error::Forbidden("invalid username or password".into()))?;
    s.accounts.check_login(&user_id, &password.password).await?;
    let (token, device_id) = s
        .accounts
        .open_session(&user_id, body.device_id.clone(), body.initial_device_display_name.as_deref(), Some(&ip))
        .await?;
    Ok(login::Response::new(user_id, token, device_id))
}

pub async fn logout(s: Services, req: Ruma<logout::Request>) -> Result<logout::Response> {
    let session = req.require_session()?;
    s.accounts.delete_devices(&session.user_id, &[session.device_id.as_str()]).await?;
    s.keys.devices_changed(&session.user_id).await?;
    Ok(logout::Response::new())
}

pub async fn logout_all(s: Services, req: Ruma<logout_all::Request>) -> Result<logout_all::Response> {
    let session = req.require_session()?;
    s.accounts.delete_other_devices(&session.user_id, None).await?;
    s.keys.devices_changed(&session.user_id).await?;
    Ok(logout_all::Response::new())
}
