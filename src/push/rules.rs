//! Push rulesets (spec: "Push Rules"): each account's ruleset is kept as its `m.push_rules`
//! account data, so that every change reaches the user's devices through sync. An account that
//! never changed a rule has the server-default ruleset.

use ruma::{
    push::{ConditionalPushRule, PatternedPushRule, Ruleset},
    UserId,
};
use serde_json::json;

use crate::error::{Error, Result};

/// The server-default ruleset of spec v1.12: ruma's (the current spec's) plus the mention rules
/// that matter to clients of the versions this server advertises (`.m.rule.contains_display_name`,
/// `.m.rule.roomnotif`, `.m.rule.contains_user_name`). ruma disables these for events that carry
/// `m.mentions`, as the spec requires.
pub fn server_default(user_id: &UserId) -> Ruleset {
    let mut ruleset = Ruleset::server_default(user_id);
    let sound_highlight = json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let legacy = |value: serde_json::Value| serde_json::from_value::<ConditionalPushRule>(value);
    let display_name = legacy(json!({
        "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
        "conditions": [{"kind": "contains_display_name"}],
        "actions": sound_highlight,
    }));
    let room_notif = legacy(json!({
        "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "@room"},
            {"kind": "sender_notification_permission", "key": "room"}
        ],
        "actions": ["notify", {"set_tweak": "highlight"}],
    }));
    let user_name = serde_json::from_value::<PatternedPushRule>(json!({
        "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
        "pattern": user_id.localpart(),
        "actions": sound_highlight,
    }));
    if let (Ok(display_name), Ok(room_notif)) = (display_name, room_notif) {
        let mut rules: Vec<ConditionalPushRule> = std::mem::take(&mut ruleset.override_).into_iter().collect();
        // Spec order: …, is_user_mention, contains_display_name, is_room_mention, roomnotif, …
        let after = |rules: &[ConditionalPushRule], id: &str| rules.iter().position(|r| r.rule_id == id);
        let at = after(&rules, ".m.rule.is_user_mention").map_or(rules.len(), |i| i + 1);
        rules.insert(at, display_name);
        let at = after(&rules, ".m.rule.is_room_mention").map_or(rules.len(), |i| i + 1);
        rules.insert(at, room_notif);
        ruleset.override_ = rules.into_iter().collect();
    }
    if let Ok(user_name) = user_name {
        ruleset.content.insert(user_name);
    }
    ruleset
}

/// The ruleset stored as `m.push_rules` content (`{"global": …}`), brought up to date with the
/// server defaults; the server default when nothing (or nothing readable) is stored.
pub fn from_account_data(user_id: &UserId, content: Option<&str>) -> Ruleset {
    let stored = content
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|mut value| serde_json::from_value::<Ruleset>(value["global"].take()).ok());
    match stored {
        Some(mut ruleset) => {
            ruleset.update_with_server_default(server_default(user_id));
            ruleset
        }
        None => server_default(user_id),
    }
}

pub fn to_account_data(ruleset: &Ruleset) -> Result<serde_json::Value> {
    Ok(json!({ "global": serde_json::to_value(ruleset).map_err(Error::internal)? }))
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    #[test]
    fn default_ruleset_has_the_spec_order() {
        let ruleset = super::server_default(user_id!("@alice:example.org"));
        let ids: Vec<&str> = ruleset.override_.iter().map(|r| r.rule_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                ".m.rule.master",
                ".m.rule.suppress_notices",
                ".m.rule.invite_for_me",
                ".m.rule.member_event",
                ".m.rule.is_user_mention",
                ".m.rule.contains_display_name",
                ".m.rule.is_room_mention",
                ".m.rule.roomnotif",
                ".m.rule.tombstone",
                ".m.rule.reaction",
                ".m.rule.room.server_acl",
                ".m.rule.suppress_edits",
            ]
        );
        let underride: Vec<&str> = ruleset.underride.iter().map(|r| r.rule_id.as_str()).collect();
        assert_eq!(
            underride,
            [
                ".m.rule.call",
                ".m.rule.encrypted_room_one_to_one",
                ".m.rule.room_one_to_one",
                ".m.rule.message",
                ".m.rule.encrypted",
            ]
        );
        assert!(ruleset.content.iter().any(|r| r.rule_id == ".m.rule.contains_user_name" && r.pattern == "alice"));
    }

    #[test]
    fn stored_rules_keep_user_changes_and_gain_missing_defaults() {
        let user = user_id!("@alice:example.org");
        let mut ruleset = super::server_default(user);
        ruleset.set_enabled(ruma::push::RuleKind::Override, ".m.rule.master", true).unwrap();
        // Stored before `.m.rule.suppress_edits` existed.
        ruleset.override_.retain(|r| r.rule_id != ".m.rule.suppress_edits");
        let text = super::to_account_data(&ruleset).unwrap().to_string();
        let loaded = super::from_account_data(user, Some(&text));
        assert!(loaded.override_.iter().any(|r| r.rule_id == ".m.rule.master" && r.enabled));
        assert!(loaded.override_.iter().any(|r| r.rule_id == ".m.rule.suppress_edits"));
    }
}
