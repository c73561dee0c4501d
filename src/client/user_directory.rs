//! `POST /user_directory/search` (spec: "User directory").

use ruma::api::client::user_directory::search_users::v3 as search_users;
use serde_json::{json, Map, Value as JsonValue};

use crate::{error::Result, http::Ruma, services::Services};

pub async fn search(s: Services, req: Ruma<search_users::Request>) -> Result<JsonValue> {
    let session = req.require_session()?;
    let limit = u64::from(req.body.limit) as usize;
    let everyone = s.config.user_directory.search_all_users;
    let (entries, limited) =
        s.accounts.search_directory(&session.user_id, &req.body.search_term, everyone, limit).await?;
    let results: Vec<JsonValue> = entries
        .into_iter()
        .map(|entry| {
            let mut user = Map::new();
            user.insert("user_id".into(), json!(entry.user_id));
            if let Some(name) = entry.display_name {
                user.insert("display_name".into(), json!(name));
            }
            if let Some(avatar) = entry.avatar_url {
                user.insert("avatar_url".into(), json!(avatar));
            }
            JsonValue::Object(user)
        })
        .collect();
    Ok(json!({"results": results, "limited": limited}))
}
