//! User ID rules: which localparts may be registered, and how a login identifier names a user.

use ruma::{OwnedUserId, ServerName, UserId};

use crate::error::{Error, Result};

/// Checks a requested localpart and returns it as the user ID it would become.
///
/// Registration accepts the characters of the spec's user ID grammar in lower case
/// (`a-z 0-9 . _ = - / +`); upper case is folded, as clients treat user IDs case-insensitively
/// when they are typed. The whole ID must fit in 255 bytes (spec: "User Identifiers").
pub fn user_id_for_registration(localpart: &str, server_name: &ServerName) -> Result<OwnedUserId> {
    let localpart = localpart.to_lowercase();
    if localpart.is_empty() {
        return Err(Error::InvalidUsername("the user name must not be empty".into()));
    }
    if let Some(bad) =
        localpart.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
    {
        return Err(Error::InvalidUsername(format!(
            "user names may only contain a-z, 0-9 and . _ = - / +, not {bad:?}"
        )));
    }
    if localpart.starts_with('_') {
        return Err(Error::InvalidUsername("user names starting with '_' are reserved".into()));
    }
    let full = format!("@{localpart}:{server_name}");
    if full.len() > 255 {
        return Err(Error::InvalidUsername("the user ID would be longer than 255 bytes".into()));
    }
    UserId::parse(full).map_err(|e| Error::InvalidUsername(e.to_string()))
}

/// Resolves what a client typed at login (a localpart or a full user ID) to a local user ID;
/// `None` when it cannot name a user of this server.
pub fn user_id_from_login(input: &str, server_name: &ServerName) -> Option<OwnedUserId> {
    let input = input.trim();
    let full =
        if input.starts_with('@') { input.to_lowercase() } else { format!("@{}:{server_name}", input.to_lowercase()) };
    let user_id = UserId::parse(full).ok()?;
    (user_id.server_name() == server_name).then_some(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("example.org").unwrap()
    }

    #[test]
    fn registration_rules() {
        assert_eq!(user_id_for_registration("Alice", server()).unwrap().as_str(), "@alice:example.org");
        assert!(matches!(user_id_for_registration("al ice", server()), Err(Error::InvalidUsername(_))));
        assert!(matches!(user_id_for_registration("", server()), Err(Error::InvalidUsername(_))));
        assert!(matches!(user_id_for_registration("_bot", server()), Err(Error::InvalidUsername(_))));
        assert!(matches!(user_id_for_registration(&"a".repeat(260), server()), Err(Error::InvalidUsername(_))));
    }

    #[test]
    fn login_identifiers() {
        assert_eq!(user_id_from_login("bob", server()).unwrap().as_str(), "@bob:example.org");
        assert_eq!(user_id_from_login("@Bob:example.org", server()).unwrap().as_str(), "@bob:example.org");
        assert!(user_id_from_login("@bob:elsewhere.org", server()).is_none());
    }
}
