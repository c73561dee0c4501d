//! End-to-end encryption support (spec: "End-to-End Encryption"): the server stores the keys
//! clients publish (device keys, one-time and fallback keys, cross-signing keys and signatures) and
//! hands them out; it never sees message keys. Changes to a user's devices or keys reach those who
//! share a room with them through sync's `device_lists`.

mod backup;
pub mod signatures;

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedServerName, UserId};
use serde_json::{json, Map, Value as JsonValue};

use self::signatures::{cross_signing_public_key, is_signed_by, merge_signatures, signed_part};
use crate::{
    error::{Error, Result},
    storage::Storage,
    sync::{Notifier, StreamToken},
};

/// One-time keys a device may upload at once, and keys claimed per request.
const MAX_KEYS_PER_UPLOAD: usize = 1000;
const MAX_CLAIMS: usize = 1000;

#[derive(Clone)]
pub struct Keys {
    storage: Storage,
    server_name: OwnedServerName,
    notifier: Arc<Notifier>,
}

/// Uploaded cross-signing keys, as JSON.
#[derive(Default)]
pub struct SigningKeys {
    pub master: Option<JsonValue>,
    pub self_signing: Option<JsonValue>,
    pub user_signing: Option<JsonValue>,
}

fn key_parts(id: &str) -> Result<(&str, &str)> {
    id.split_once(':')
        .filter(|(a, k)| !a.is_empty() && !k.is_empty())
        .ok_or_else(|| Error::InvalidParam(format!("key ID {id:?} is not <algorithm>:<key ID>")))
}

impl Keys {
    pub fn new(storage: Storage, server_name: OwnedServerName, notifier: Arc<Notifier>) -> Self {
        Self { storage, server_name, notifier }
    }

    fn is_local(&self, user_id: &str) -> bool {
        user_id.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name.as_str())
    }

    /// Wakes the syncs of the user and of everyone sharing a room with them: their device list
    /// changed.
    async fn announce(&self, user_id: &str) -> Result<()> {
        let mut users = self.storage.users_sharing_rooms(user_id).await?;
        users.push(user_id.to_owned());
        self.notifier.wake(users.iter().map(String::as_str));
        Ok(())
    }

    /// Announces a change of the user's devices (a device was added or deleted elsewhere).
    pub async fn devices_changed(&self, user_id: &UserId) -> Result<()> {
        self.announce(user_id.as_str()).await
    }

    /// `/keys/upload`; returns the device's unclaimed one-time keys per algorithm.
    pub async fn upload(
        &self,
        user_id: &UserId,
        device_id: &str,
        device_keys: Option<JsonValue>,
        one_time_keys: &BTreeMap<String, JsonValue>,
        fallback_keys: &BTreeMap<String, JsonValue>,
    ) -> Result<BTreeMap<String, i64>> {
        if one_time_keys.len() + fallback_keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(Error::InvalidParam(format!("at most {MAX_KEYS_PER_UPLOAD} keys per upload")));
        }
        let device_keys = match device_keys {
            Some(keys) => {
                if keys["user_id"] != user_id.as_str() || keys["device_id"] != device_id {
                    return Err(Error::InvalidParam("device_keys must be this device's, of this user".into()));
                }
                Some(serde_json::to_string(&keys).map_err(Error::internal)?)
            }
            None => None,
        };
        let split = |keys: &BTreeMap<String, JsonValue>| -> Result<Vec<(String, String, String)>> {
            keys.iter()
                .map(|(id, key)| {
                    let (algorithm, key_id) = key_parts(id)?;
                    Ok((algorithm.to_owned(), key_id.to_owned(), serde_json::to_string(key).map_err(Error::internal)?))
                })
                .collect()
        };
        let (one_time, fallback) = (split(one_time_keys)?, split(fallback_keys)?);
        self.storage.upload_keys(user_id.as_str(), device_id, device_keys.as_deref(), &one_time, &fallback).await?;
        if device_keys.is_some() {
            self.announce(user_id.as_str()).await?;
        } else if !one_time.is_empty() || !fallback.is_empty() {
            // The device's key counts changed: a sync answering from remembered counts must not.
            self.notifier.wake([user_id.as_str()]);
        }
        let (counts, _) = self.storage.key_counts(user_id.as_str(), device_id).await?;
        Ok(counts.into_iter().collect())
    }

    /// `/keys/query`: device keys and cross-signing keys of local users.
    pub async fn query(&self, requester: &UserId, wanted: &BTreeMap<String, Vec<String>>) -> Result<JsonValue> {
        let mut device_keys = Map::new();
        let mut failures = Map::new();
        let local: Vec<&str> = wanted.keys().map(String::as_str).filter(|u| self.is_local(u)).collect();
        for user in wanted.keys().filter(|u| !local.contains(&u.as_str())) {
            // Federation is not built yet: remote users' servers count as unreachable.
            let server = user.rsplit_once(':').map_or(user.as_str(), |(_, s)| s);
            failures.insert(
                server.to_owned(),
                json!({"errcode": "M_UNAVAILABLE", "error": "federation is not supported yet"}),
            );
        }
        for user in &local {
            let devices: Vec<&str> = wanted[*user].iter().map(String::as_str).collect();
            let mut of_user = Map::new();
            for row in self.storage.device_keys_of(user, &devices).await? {
                let mut keys: JsonValue = serde_json::from_str(&row.keys).unwrap_or_default();
                if let Some(name) = row.display_name {
                    keys["unsigned"]["device_display_name"] = json!(name);
                }
                of_user.insert(row.device_id, keys);
            }
            device_keys.insert((*user).to_owned(), JsonValue::Object(of_user));
        }
        let own_signatures = self.storage.cross_user_signatures(requester.as_str()).await?;
        let (mut master, mut self_signing, mut user_signing) = (Map::new(), Map::new(), Map::new());
        for (user, key_type, keys) in self.storage.cross_signing_keys(&local).await? {
            let mut key: JsonValue = serde_json::from_str(&keys).unwrap_or_default();
            match key_type.as_str() {
                "master" => {
                    // The requester's own signatures of other users' master keys (spec: only the
                    // signer sees them).
                    let public = cross_signing_public_key(&key).unwrap_or_default();
                    for (target, target_key, signer_key, signature) in &own_signatures {
                        if *target == user && *target_key == public {
                            key["signatures"][requester.as_str()][signer_key] = json!(signature);
                        }
                    }
                    master.insert(user, key);
                }
                "self_signing" => {
                    self_signing.insert(user, key);
                }
                "user_signing" if user == requester.as_str() => {
                    user_signing.insert(user, key);
                }
                _ => {}
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": failures,
        }))
    }

    /// `/keys/claim`: one key per requested device and algorithm.
    pub async fn claim(&self, wanted: &BTreeMap<String, BTreeMap<String, String>>) -> Result<JsonValue> {
        if wanted.values().map(BTreeMap::len).sum::<usize>() > MAX_CLAIMS {
            return Err(Error::InvalidParam(format!("at most {MAX_CLAIMS} keys per claim")));
        }
        let mut claimed = Map::new();
        let mut failures = Map::new();
        for (user, devices) in wanted {
            if !self.is_local(user) {
                let server = user.rsplit_once(':').map_or(user.as_str(), |(_, s)| s);
                failures.insert(
                    server.to_owned(),
                    json!({"errcode": "M_UNAVAILABLE", "error": "federation is not supported yet"}),
                );
                continue;
            }
            let mut of_user = Map::new();
            for (device, algorithm) in devices {
                if let Some((key_id, key)) = self.storage.claim_key(user, device, algorithm).await? {
                    let key: JsonValue = serde_json::from_str(&key).unwrap_or_default();
                    of_user.insert(device.clone(), json!({ format!("{algorithm}:{key_id}"): key }));
                }
            }
            if !of_user.is_empty() {
                claimed.insert(user.clone(), JsonValue::Object(of_user));
            }
        }
        // Their devices' key counts changed: a sync answering from remembered counts must not.
        if !claimed.is_empty() {
            self.notifier.wake(claimed.keys().map(String::as_str));
        }
        Ok(json!({"one_time_keys": claimed, "failures": failures}))
    }

    /// Whether storing `keys` would replace cross-signing keys the user already has, which needs
    /// user-interactive auth (spec: `/keys/device_signing/upload`; a first upload does not).
    pub async fn signing_keys_need_auth(&self, user_id: &UserId, keys: &SigningKeys) -> Result<bool> {
        let stored = self.storage.cross_signing_keys(&[user_id.as_str()]).await?;
        if !stored.iter().any(|(_, t, _)| t == "master") {
            return Ok(false);
        }
        let changes = |key_type: &str, new: &Option<JsonValue>| {
            new.as_ref().is_some_and(|new| {
                !stored.iter().any(|(_, t, json)| {
                    t == key_type
                        && serde_json::from_str::<JsonValue>(json)
                            .is_ok_and(|old| signed_part(&old) == signed_part(new))
                })
            })
        };
        Ok(changes("master", &keys.master)
            || changes("self_signing", &keys.self_signing)
            || changes("user_signing", &keys.user_signing))
    }

    /// `/keys/device_signing/upload`: validates and stores cross-signing keys. The self-signing
    /// and user-signing keys must be signed by the master key (the new one, or the stored one).
    pub async fn upload_signing_keys(&self, user_id: &UserId, keys: SigningKeys) -> Result<()> {
        let user = user_id.as_str();
        let stored_master = self
            .storage
            .cross_signing_keys(&[user])
            .await?
            .into_iter()
            .find(|(_, t, _)| t == "master")
            .and_then(|(_, _, json)| serde_json::from_str::<JsonValue>(&json).ok());
        let mut store: Vec<(&str, String, String)> = Vec::new();
        let check = |key: &JsonValue, usage: &str| -> Result<String> {
            if key["user_id"] != user {
                return Err(Error::InvalidParam(format!("the {usage} key must be of user {user}")));
            }
            if !key["usage"].as_array().is_some_and(|u| u.iter().any(|x| x == usage)) {
                return Err(Error::InvalidParam(format!("the {usage} key must have usage {usage}")));
            }
            cross_signing_public_key(key)
                .ok_or_else(|| Error::InvalidParam(format!("the {usage} key must hold exactly one ed25519 key")))
        };
        let master = match &keys.master {
            Some(master) => {
                let public = check(master, "master")?;
                store.push(("master", public.clone(), master.to_string()));
                Some(public)
            }
            None => stored_master.as_ref().and_then(cross_signing_public_key),
        };
        for (usage, key) in [("self_signing", &keys.self_signing), ("user_signing", &keys.user_signing)] {
            let Some(key) = key else { continue };
            let public = check(key, usage)?;
            let master = master.as_deref().ok_or_else(|| Error::InvalidParam("no master key to sign with".into()))?;
            if !is_signed_by(key, user, master, master) {
                return Err(Error::InvalidSignature(format!("the {usage} key is not signed by the master key")));
            }
            store.push((usage, public, key.to_string()));
        }
        if store.is_empty() {
            return Ok(());
        }
        let refs: Vec<(&str, &str, String)> = store.iter().map(|(t, p, j)| (*t, p.as_str(), j.clone())).collect();
        self.storage.set_cross_signing_keys(user, &refs).await?;
        self.announce(user).await
    }

    /// `/keys/signatures/upload`: each signature is checked against the signing key before it is
    /// stored; the ones that fail are returned as `failures`.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: &BTreeMap<String, BTreeMap<String, JsonValue>>,
    ) -> Result<JsonValue> {
        let me = signer.as_str();
        let mut failures: Map<String, JsonValue> = Map::new();
        let mut fail = |user: &str, key: &str, errcode: &str, error: &str| {
            failures
                .entry(user.to_owned())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|m| m.insert(key.to_owned(), json!({"errcode": errcode, "error": error})));
        };
        let my_cross: Vec<(String, String, String)> = self.storage.cross_signing_keys(&[me]).await?;
        let my_public = |key_type: &str| {
            my_cross
                .iter()
                .find(|(_, t, _)| t == key_type)
                .and_then(|(_, _, j)| serde_json::from_str::<JsonValue>(j).ok())
                .and_then(|k| cross_signing_public_key(&k))
        };
        let my_devices = self.storage.device_keys_of(me, &[]).await?;
        let device_key = |device: &str| {
            my_devices
                .iter()
                .find(|d| d.device_id == device)
                .and_then(|d| serde_json::from_str::<JsonValue>(&d.keys).ok())
                .and_then(|k| k["keys"][format!("ed25519:{device}")].as_str().map(str::to_owned))
        };
        let mut changed = false;
        for (target_user, objects) in signed {
            for (key_id, object) in objects {
                // The stored key this object must be (apart from signatures).
                let target_cross = self.storage.cross_signing_keys(&[target_user.as_str()]).await?;
                let stored_cross = target_cross.iter().find(|(_, _, j)| {
                    serde_json::from_str::<JsonValue>(j).ok().and_then(|k| cross_signing_public_key(&k)).as_deref()
                        == Some(key_id.as_str())
                });
                let stored_device = if target_user == me {
                    my_devices.iter().find(|d| d.device_id == *key_id).map(|d| d.keys.clone())
                } else {
                    None
                };
                let Some(stored) = stored_cross.map(|(_, _, j)| j.clone()).or(stored_device.clone()) else {
                    fail(target_user, key_id, "M_NOT_FOUND", "no such key");
                    continue;
                };
                let mut stored: JsonValue = serde_json::from_str(&stored).unwrap_or_default();
                if signed_part(&stored) != signed_part(object) {
                    fail(target_user, key_id, "M_INVALID_SIGNATURE", "the signed object differs from the stored key");
                    continue;
                }
                let Some(mine) = object["signatures"][me].as_object() else {
                    fail(target_user, key_id, "M_INVALID_SIGNATURE", "no signature of yours");
                    continue;
                };
                let mut all_valid = !mine.is_empty();
                for signer_key_id in mine.keys() {
                    let name = signer_key_id.strip_prefix("ed25519:").unwrap_or_default();
                    // Which of my keys may sign this: a device or the self-signing key signs my
                    // master key or devices; the user-signing key signs other users' master keys.
                    let public = if target_user == me {
                        device_key(name)
                            .or_else(|| my_public("self_signing").filter(|p| p == name))
                            .or_else(|| my_public("master").filter(|p| p == name))
                    } else {
                        my_public("user_signing").filter(|p| p == name)
                    };
                    if !public.is_some_and(|public| is_signed_by(object, me, name, &public)) {
                        all_valid = false;
                    }
                }
                if !all_valid {
                    fail(target_user, key_id, "M_INVALID_SIGNATURE", "a signature does not verify");
                    continue;
                }
                if target_user == me {
                    merge_signatures(&mut stored, &json!({"signatures": {me: mine}}));
                    let text = stored.to_string();
                    if stored_cross.is_some() {
                        self.storage.replace_cross_signing_key(me, key_id, &text).await?;
                    } else {
                        self.storage.replace_device_keys(me, key_id, &text).await?;
                    }
                } else {
                    for (signer_key_id, signature) in mine {
                        let signature = signature.as_str().unwrap_or_default();
                        self.storage
                            .add_cross_user_signature(me, target_user, key_id, signer_key_id, signature)
                            .await?;
                    }
                }
                changed = true;
            }
        }
        if changed {
            self.announce(me).await?;
        }
        Ok(json!({ "failures": failures }))
    }

    /// `keys/changes` between two sync tokens, as `(changed, left)`: users sharing a room whose
    /// devices or keys changed or who newly share one, and users who no longer share any.
    pub async fn changes(
        &self,
        user_id: &UserId,
        from: &StreamToken,
        to: &StreamToken,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let me = user_id.as_str();
        let mut changed = self.storage.device_list_changes_for(me, from.device_lists, to.device_lists).await?;
        let mut gone = Vec::new();
        let mut rooms_left = Vec::new();
        for (room, user, membership) in self.storage.membership_changes_in_rooms_of(me, from.events, to.events).await? {
            match (user == me, membership.as_str()) {
                (false, "join") => changed.push(user),
                (false, "leave" | "ban") => gone.push(user),
                (true, "leave" | "ban") => rooms_left.push(room),
                _ => {}
            }
        }
        let rooms_left: Vec<&str> = rooms_left.iter().map(String::as_str).collect();
        if !rooms_left.is_empty() {
            gone.extend(self.storage.members_of_rooms(&rooms_left).await?.into_iter().map(|(_, user, _, _)| user));
        }
        settle_device_lists(&self.storage, me, changed, gone).await
    }
}

/// `device_lists` from what changed: of the users who stopped sharing a room with `me` (`gone`),
/// those who share none any more are `left`; `changed` keeps the others, each once, sorted.
pub async fn settle_device_lists(
    storage: &Storage,
    me: &str,
    mut changed: Vec<String>,
    gone: Vec<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut left = Vec::new();
    if !gone.is_empty() {
        let sharing = storage.users_sharing_rooms(me).await?;
        left = gone.into_iter().filter(|u| u != me && !sharing.contains(u)).collect();
        left.sort_unstable();
        left.dedup();
    }
    changed.retain(|u| !left.contains(u));
    changed.sort_unstable();
    changed.dedup();
    Ok((changed, left))
}
