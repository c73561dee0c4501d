//! Profiles (spec: "Profiles"): `displayname`, `avatar_url` and the extended fields of v1.16, stored
//! as one JSON value per field.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::Value as JsonValue;

use super::Accounts;
use crate::error::{Error, Result};

/// The spec's bound on a whole profile, as canonical JSON.
const MAX_PROFILE_BYTES: usize = 64 * 1024;
const MAX_KEY_BYTES: usize = 255;

impl Accounts {
    /// The whole profile of an active local user; `None` for an unknown or deactivated one.
    pub async fn profile(&self, user_id: &UserId) -> Result<Option<BTreeMap<String, JsonValue>>> {
        if !self.is_active_user(user_id).await? {
            return Ok(None);
        }
        let fields = self.storage.profile_fields(user_id.as_str()).await?;
        Ok(Some(fields.into_iter().filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?))).collect()))
    }

    pub async fn profile_field(&self, user_id: &UserId, field: &str) -> Result<Option<JsonValue>> {
        if !self.is_active_user(user_id).await? {
            return Ok(None);
        }
        let value = self.storage.profile_field(user_id.as_str(), field).await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    pub async fn set_profile_field(&self, user_id: &UserId, field: &str, value: &JsonValue) -> Result<()> {
        check_field_name(field)?;
        let mut profile = self.profile(user_id).await?.ok_or_else(|| Error::NotFound("no such user".into()))?;
        profile.insert(field.to_owned(), value.clone());
        let size = serde_json::to_vec(&profile).map_err(Error::internal)?.len();
        if size > MAX_PROFILE_BYTES {
            return Err(Error::ProfileTooLarge(format!(
                "the profile would be {size} bytes; at most {MAX_PROFILE_BYTES} are allowed"
            )));
        }
        let json = serde_json::to_string(value).map_err(Error::internal)?;
        self.storage.set_profile_field(user_id.as_str(), field, &json).await
    }

    pub async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> Result<()> {
        check_field_name(field)?;
        self.storage.delete_profile_field(user_id.as_str(), field).await
    }
}

/// `avatar_url`, `displayname`, `m.tz`, or a namespaced identifier (spec: "Common Namespaced
/// Identifier Grammar"), at most 255 bytes.
fn check_field_name(field: &str) -> Result<()> {
    if field.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLarge(format!("profile keys are at most {MAX_KEY_BYTES} bytes")));
    }
    let namespaced = field.contains('.')
        && field.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if matches!(field, "avatar_url" | "displayname" | "m.tz") || namespaced {
        Ok(())
    } else {
        Err(Error::InvalidParam(format!("{field:?} is not a valid profile key")))
    }
}

/// A user the directory search found, with their global profile.
pub struct DirectoryEntry {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Results a directory search returns at most, whatever the client asks.
const MAX_DIRECTORY_RESULTS: usize = 50;

impl Accounts {
    /// The user directory (spec: "User directory"): users who share a room with `searcher` or sit in
    /// a room of the public directory (`everyone`: any active user), whose localpart or display name
    /// contains `term`. Returns the matches and whether more were left out.
    pub async fn search_directory(
        &self,
        searcher: &UserId,
        term: &str,
        everyone: bool,
        limit: usize,
    ) -> Result<(Vec<DirectoryEntry>, bool)> {
        let term = term.trim().to_lowercase();
        if term.is_empty() {
            return Ok((Vec::new(), false));
        }
        let limit = limit.clamp(1, MAX_DIRECTORY_RESULTS);
        let mut rows = self.storage.search_user_directory(searcher.as_str(), &term, everyone, limit as i64 + 1).await?;
        let limited = rows.len() > limit;
        rows.truncate(limit);
        // By user ID in byte order on both databases (PostgreSQL's collation may differ).
        rows.sort();
        let text = |json: Option<String>| json.and_then(|v| serde_json::from_str::<String>(&v).ok());
        let entries = rows
            .into_iter()
            .map(|(user_id, display_name, avatar_url)| DirectoryEntry {
                user_id,
                display_name: text(display_name),
                avatar_url: text(avatar_url),
            })
            .collect();
        Ok((entries, limited))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_names() {
        use super::check_field_name as check;
        assert!(check("displayname").is_ok());
        assert!(check("org.example.pronouns").is_ok());
        assert!(check("Bad.Key").is_err());
        assert!(check("nodot").is_err());
        assert!(matches!(check(&format!("a.{}", "b".repeat(300))), Err(crate::error::Error::KeyTooLarge(_))));
    }
}
