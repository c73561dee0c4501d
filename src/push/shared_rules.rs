//! One event, many recipients: most of their rules are the same rules (the server defaults), and a
//! rule's outcome for an event depends on the recipient only through the rule itself, and through
//! their display name for `contains_display_name` (spec: "Conditions"; the rest of the context,
//! room, member count and power levels, is the event's). So each distinct rule is evaluated once
//! per event; rules that name the recipient (their user ID, their localpart) are distinct per
//! recipient, and the display name's condition is evaluated for each.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
};

use ruma::push::{Action, AnyPushRuleRef, FlattenedJson, PushCondition, PushConditionRoomCtx, Ruleset};

/// Names each rule by a keyed hash of what it is: equal rules get equal names, and as the key is
/// secret and random per process, a user cannot shape a rule of theirs to be taken for another.
#[derive(Default)]
pub struct RuleNames {
    key: RandomState,
}

/// A ruleset with the name of each rule, in the order `Ruleset::iter` gives them; `None` for a
/// rule whose outcome depends on the recipient beyond the rule.
pub struct NamedRuleset {
    pub ruleset: Ruleset,
    names: Vec<Option<u64>>,
}

impl RuleNames {
    pub fn name(&self, ruleset: Ruleset) -> NamedRuleset {
        let names = ruleset.iter().map(|rule| self.name_of(rule)).collect();
        NamedRuleset { ruleset, names }
    }

    fn name_of(&self, rule: AnyPushRuleRef<'_>) -> Option<u64> {
        // The kinds are evaluated differently, so a rule's kind is part of its identity. An
        // override and an underride rule are evaluated alike.
        let identity = match rule {
            AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => {
                if r.conditions.iter().any(depends_on_recipient) {
                    return None;
                }
                format!("conditional {}", serde_json::to_string(r).ok()?)
            }
            AnyPushRuleRef::Content(r) => format!("content {}", serde_json::to_string(r).ok()?),
            AnyPushRuleRef::Room(r) => format!("room {}", serde_json::to_string(r).ok()?),
            AnyPushRuleRef::Sender(r) => format!("sender {}", serde_json::to_string(r).ok()?),
            _ => return None,
        };
        Some(self.key.hash_one(identity))
    }
}

/// Conditions that read the recipient's part of the context (their display name), and those this
/// code does not know.
fn depends_on_recipient(condition: &PushCondition) -> bool {
    !matches!(
        condition,
        PushCondition::EventMatch(_)
            | PushCondition::RoomMemberCount(_)
            | PushCondition::SenderNotificationPermission(_)
            | PushCondition::EventPropertyIs(_)
            | PushCondition::EventPropertyContains(_)
    )
}

/// The outcomes of the named rules for one event.
#[derive(Default)]
pub struct EventOutcomes {
    applies: HashMap<u64, bool>,
}

impl EventOutcomes {
    /// The actions of the first rule of `rules` that applies to the event for the recipient of
    /// `context`, who must not be its sender (ruma applies no rule to one's own event, which the
    /// shared outcomes would not know).
    pub async fn first_match<'r>(
        &mut self,
        rules: &'r NamedRuleset,
        event: &FlattenedJson,
        context: &PushConditionRoomCtx,
    ) -> &'r [Action] {
        for (rule, name) in rules.ruleset.iter().zip(&rules.names) {
            let applies = match name.and_then(|n| self.applies.get(&n).copied()) {
                Some(known) => known,
                None => {
                    let applies = rule.applies(event, context).await;
                    if let Some(n) = name {
                        self.applies.insert(*n, applies);
                    }
                    applies
                }
            };
            if applies {
                return rule.actions();
            }
        }
        &[]
    }
}
