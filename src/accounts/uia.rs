//! User-interactive authentication (spec: "User-Interactive Authentication API").
//!
//! A request that needs UIA names the flows it accepts. Without `auth` the server answers 401 with
//! the flows and a new session; each stage the client then completes is recorded on the session
//! (in the database, so stages may reach different processes) until one flow is complete.

use ruma::{
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
    UserId,
};
use serde_json::value::to_raw_value;

use super::{credentials, username, Accounts};
use crate::{
    error::{Error, Result},
    storage::now_ms,
};

/// A UIA session older than this is forgotten.
const SESSION_LIFETIME_MS: i64 = 15 * 60 * 1000;

impl Accounts {
    /// Succeeds when `auth` completes one of `flows`; otherwise returns [`Error::Uia`] describing
    /// what remains. `user` is the authenticated user the request acts for, if any: a session
    /// begun by one user cannot be continued by another, and `m.login.password` must name them.
    pub async fn authenticate_uia(
        &self,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
        user: Option<&UserId>,
    ) -> Result<()> {
        let now = now_ms();
        let Some(auth) = auth else {
            let session = self.start_uia_session(user, now).await?;
            return Err(uia_error(flows, Vec::new(), session, None));
        };

        let (session, mut completed) = match auth.session() {
            Some(id) => match self.storage.uia_session(id).await? {
                Some(row)
                    if row.created_ts >= now - SESSION_LIFETIME_MS
                        && row.user_id.as_deref() == user.map(|u| u.as_str()) =>
                {
                    let completed: Vec<AuthType> = serde_json::from_str(&row.completed).unwrap_or_default();
                    (id.to_owned(), completed)
                }
                _ => {
                    let session = self.start_uia_session(user, now).await?;
                    let err = StandardErrorBody::new(ErrorKind::Forbidden, "unknown or expired UIA session".into());
                    return Err(uia_error(flows, Vec::new(), session, Some(err)));
                }
            },
            // A single-stage flow may be completed without asking for a session first.
            None => (self.start_uia_session(user, now).await?, Vec::new()),
        };

        let stage = auth.auth_type();
        let offered = stage.as_ref().is_some_and(|s| flows.iter().any(|f| f.contains(s)));
        let failure = match (stage, offered) {
            (Some(stage), true) => match self.check_stage(auth, user).await? {
                Ok(()) => {
                    if !completed.contains(&stage) {
                        completed.push(stage);
                    }
                    None
                }
                Err(message) => Some(StandardErrorBody::new(ErrorKind::Forbidden, message)),
            },
            _ => Some(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                "this authentication type is not offered here".into(),
            )),
        };

        if failure.is_none() && flows.iter().any(|flow| flow.iter().all(|s| completed.contains(s))) {
            self.storage.delete_uia_sessions(&session, now - SESSION_LIFETIME_MS).await?;
            return Ok(());
        }
        let completed_json = serde_json::to_string(&completed).map_err(Error::internal)?;
        self.storage.set_uia_completed(&session, &completed_json).await?;
        Err(uia_error(flows, completed, session, failure))
    }

    async fn start_uia_session(&self, user: Option<&UserId>, now: i64) -> Result<String> {
        let session = credentials::random_id(24);
        self.storage.insert_uia_session(&session, user.map(|u| u.as_str()), now).await?;
        Ok(session)
    }

    /// `Ok(Err(message))` is a stage the client failed; `Err` is a server failure.
    async fn check_stage(&self, auth: &AuthData, user: Option<&UserId>) -> Result<Result<(), String>> {
        Ok(match auth {
            AuthData::Dummy(_) => Ok(()),
            AuthData::RegistrationToken(t) => match &self.registration_token {
                Some(expected) if constant_time_eq(expected.as_bytes(), t.token.as_bytes()) => Ok(()),
                _ => Err("invalid registration token".into()),
            },
            AuthData::Password(p) => {
                let named = match &p.identifier {
                    UserIdentifier::Matrix(m) => username::user_id_from_login(&m.user, &self.server_name),
                    _ => None,
                };
                match (user, named) {
                    (Some(user), Some(named)) if named == user => {
                        if self.password_matches(user, &p.password).await? {
                            Ok(())
                        } else {
                            Err("invalid password".into())
                        }
                    }
                    _ => Err("the identifier must name the authenticated user".into()),
                }
            }
            _ => Err("this authentication type is not offered here".into()),
        })
    }
}

fn uia_error(
    flows: &[Vec<AuthType>],
    completed: Vec<AuthType>,
    session: String,
    auth_error: Option<StandardErrorBody>,
) -> Error {
    let mut info = UiaaInfo::new(flows.iter().map(|stages| AuthFlow::new(stages.clone())).collect());
    info.completed = completed;
    info.session = Some(session);
    info.params = to_raw_value(&serde_json::json!({})).ok();
    info.auth_error = auth_error.map(Box::new);
    Error::Uia(Box::new(info))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
