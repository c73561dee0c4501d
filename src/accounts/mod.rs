//! Accounts: registration, password login, devices and their access tokens, deactivation, and
//! user-interactive authentication. Handlers in `client/` call in here; this calls `storage`.

mod credentials;
mod profile;
mod sessions;
mod uia;
pub mod username;

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};

pub use credentials::{hash_password, random_id, token_hash};
pub use profile::DirectoryEntry;
use sessions::{Lookup, SessionCache};

use crate::{
    error::{Error, Result},
    storage::{now_ms, DeviceRow, Storage},
};

/// The user and device an access token stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub(crate) last_seen_ts: Option<i64>,
}

impl Session {
    /// Refuses acting on another user's data (`what` names the data for the error text).
    pub fn require_user(&self, user_id: &UserId, what: &str) -> Result<()> {
        if self.user_id == user_id {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("you may only access your own {what}")))
        }
    }
}

/// Passwords are hashed at most this long (argon2 cost grows with input; nobody types more).
const MAX_PASSWORD_BYTES: usize = 512;
/// Devices' `last_seen_*` is written at most this often per device, to keep writes off every request.
const LAST_SEEN_PRECISION_MS: i64 = 60_000;

#[derive(Clone)]
pub struct Accounts {
    storage: Storage,
    server_name: OwnedServerName,
    registration_token: Option<String>,
    sessions: Arc<SessionCache>,
}

impl Accounts {
    pub fn new(storage: Storage, server_name: OwnedServerName, registration_token: Option<String>) -> Self {
        Self { storage, server_name, registration_token, sessions: Arc::default() }
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// Creates an account. Without a localpart one is generated; without a password the account
    /// cannot log in with one (it can still be given one by `axon reset-password`).
    pub async fn register(&self, localpart: Option<&str>, password: Option<&str>, admin: bool) -> Result<OwnedUserId> {
        let password_hash = match password {
            Some(p) => Some(hash_password(checked_password(p)?.to_owned()).await?),
            None => None,
        };
        loop {
            let user_id = match localpart {
                Some(l) => username::user_id_for_registration(l, &self.server_name)?,
                None => username::user_id_for_registration(&credentials::random_id(12), &self.server_name)?,
            };
            if self.storage.insert_user(user_id.as_str(), password_hash.as_deref(), admin, now_ms()).await? {
                let displayname = serde_json::to_string(user_id.localpart()).map_err(Error::internal)?;
                self.storage.set_profile_field(user_id.as_str(), "displayname", &displayname).await?;
                return Ok(user_id);
            }
            if localpart.is_some() {
                return Err(Error::UserInUse);
            }
        }
    }

    /// `Ok` when the localpart is valid and nobody holds it (deactivated accounts included).
    pub async fn check_username_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let user_id = username::user_id_for_registration(localpart, &self.server_name)?;
        match self.storage.user(user_id.as_str()).await? {
            Some(_) => Err(Error::UserInUse),
            None => Ok(user_id),
        }
    }

    /// Checks a password login; the same error for an unknown user and a wrong password.
    pub async fn check_login(&self, user_id: &UserId, password: &str) -> Result<()> {
        let user = self.storage.user(user_id.as_str()).await?;
        if user.as_ref().is_some_and(|u| u.deactivated) {
            return Err(Error::UserDeactivated);
        }
        if self.password_matches(user_id, password).await? {
            Ok(())
        } else {
            Err(Error::Forbidden("invalid username or password".into()))
        }
    }

    async fn password_matches(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let Some(user) = self.storage.user(user_id.as_str()).await? else { return Ok(false) };
        match (user.deactivated, user.password_hash, password.len() <= MAX_PASSWORD_BYTES) {
            (false, Some(hash), true) => credentials::verify_password(password.to_owned(), hash).await,
            _ => Ok(false),
        }
    }

    /// Issues a new access token on the named device (replacing that device's old token) or on a
    /// new device; returns the token and the device ID.
    pub async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> Result<(String, OwnedDeviceId)> {
        let device_id = device_id.unwrap_or_else(|| credentials::new_device_id().into());
        if device_id.as_str().is_empty() || device_id.as_str().len() > 255 {
            return Err(Error::InvalidParam("device_id must be 1 to 255 bytes".into()));
        }
        let token = credentials::new_access_token();
        let display_name = display_name.map(|n| truncate_chars(n, 255));
        self.storage
            .upsert_device(user_id.as_str(), device_id.as_str(), &token_hash(&token), display_name, ip, now_ms())
            .await?;
        // The device's previous token, if it had one, is revoked.
        self.sessions.forget_user(user_id);
        Ok((token, device_id))
    }

    /// The session an access token belongs to, if it is live.
    pub async fn session_for_token(&self, token: &str) -> Result<Option<Session>> {
        let token_hash = token_hash(token);
        let generation = match self.sessions.get(&token_hash) {
            Lookup::Hit(session) => return Ok(Some(session)),
            Lookup::Miss(generation) => generation,
        };
        let Some(row) = self.storage.session_by_token_hash(&token_hash).await? else { return Ok(None) };
        let (Ok(user_id), device_id) = (UserId::parse(row.user_id), OwnedDeviceId::from(row.device_id)) else {
            return Ok(None);
        };
        let session = Session { user_id, device_id, last_seen_ts: row.last_seen_ts };
        self.sessions.insert(token_hash, session.clone(), generation);
        Ok(Some(session))
    }

    /// Turns the session cache on while every revocation is heard (see `sessions`).
    pub fn hearing_revocations(&self, hearing: bool) {
        self.sessions.set_listening(hearing);
    }

    /// Another process revoked one of the user's tokens.
    pub fn revoked_elsewhere(&self, user_id: &UserId) {
        self.sessions.forget_user(user_id);
    }

    /// Records that the session's device was used from `ip`, at most once a minute per device.
    pub async fn note_device_seen(&self, session: &Session, ip: &str) -> Result<()> {
        let now = now_ms();
        if session.last_seen_ts.is_some_and(|t| now - t < LAST_SEEN_PRECISION_MS) {
            return Ok(());
        }
        self.storage.record_device_seen(session.user_id.as_str(), session.device_id.as_str(), ip, now).await?;
        self.sessions.seen(session, now);
        Ok(())
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRow>> {
        self.storage.devices_of_user(user_id.as_str()).await
    }

    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<Option<DeviceRow>> {
        self.storage.device(user_id.as_str(), device_id).await
    }

    /// `false` when the user has no such device.
    pub async fn rename_device(&self, user_id: &UserId, device_id: &str, name: Option<&str>) -> Result<bool> {
        let name = name.map(|n| truncate_chars(n, 255));
        self.storage.set_device_display_name(user_id.as_str(), device_id, name).await
    }

    /// Deletes devices and with them their access tokens (the spec's logout).
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[&str]) -> Result<u64> {
        let deleted = self.storage.delete_devices(user_id.as_str(), device_ids).await;
        self.sessions.forget_user(user_id);
        deleted
    }

    /// Deletes every device of the user except `keep`.
    pub async fn delete_other_devices(&self, user_id: &UserId, keep: Option<&str>) -> Result<u64> {
        let deleted = self.storage.delete_devices_except(user_id.as_str(), keep).await;
        self.sessions.forget_user(user_id);
        deleted
    }

    /// Sets a new password; `false` when there is no such account.
    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let hash = hash_password(checked_password(password)?.to_owned()).await?;
        self.storage.set_password_hash(user_id.as_str(), &hash).await
    }

    /// Deactivates the account for good: every device logged out, the password and profile erased.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.storage.mark_user_deactivated(user_id.as_str()).await?;
        self.delete_other_devices(user_id, None).await?;
        self.storage.delete_profile(user_id.as_str()).await
    }

    /// Whether the user exists on this server and is not deactivated.
    pub async fn is_active_user(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.storage.user(user_id.as_str()).await?.is_some_and(|u| !u.deactivated))
    }

    pub async fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.storage.user(user_id.as_str()).await?.is_some_and(|u| u.is_admin && !u.deactivated))
    }
}

fn checked_password(password: &str) -> Result<&str> {
    if password.is_empty() {
        return Err(Error::InvalidParam("the password must not be empty".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidParam(format!("the password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(password)
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
