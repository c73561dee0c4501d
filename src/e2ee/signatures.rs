//! Checking ed25519 signatures on signed JSON (spec: "Signing JSON"), as cross-signing needs.

use ruma::{
    canonical_json::to_canonical_value,
    serde::{base64::Standard, Base64},
    SigningKeyAlgorithm,
};
use serde_json::Value as JsonValue;

/// Whether `object` carries a valid signature of `signer` (a user ID) with the key
/// `ed25519:<key_name>` whose public part is `public_key` (unpadded base64).
pub fn is_signed_by(object: &JsonValue, signer: &str, key_name: &str, public_key: &str) -> bool {
    let Some(signature) = object["signatures"][signer][format!("ed25519:{key_name}")].as_str() else { return false };
    let mut unsigned = object.clone();
    if let Some(map) = unsigned.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let Ok(canonical) = to_canonical_value(&unsigned) else { return false };
    let (Ok(signature), Ok(public_key)) =
        (Base64::<Standard, Vec<u8>>::parse(signature), Base64::<Standard, Vec<u8>>::parse(public_key))
    else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        canonical.to_string().as_bytes(),
    )
    .is_ok()
}

/// The one ed25519 public key of a cross-signing key object, with its key name (the key itself).
pub fn cross_signing_public_key(key: &JsonValue) -> Option<String> {
    let keys = key["keys"].as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let public = value.as_str()?;
    (id.strip_prefix("ed25519:")? == public).then(|| public.to_owned())
}

/// Copies the signatures of `from` into `into` (same object, signed some more).
pub fn merge_signatures(into: &mut JsonValue, from: &JsonValue) {
    let Some(signers) = from["signatures"].as_object() else { return };
    for (signer, keys) in signers {
        let Some(keys) = keys.as_object() else { continue };
        for (key_id, signature) in keys {
            into["signatures"][signer][key_id] = signature.clone();
        }
    }
}

/// `object` without `signatures` and `unsigned`: what a signature covers.
pub fn signed_part(object: &JsonValue) -> JsonValue {
    let mut part = object.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    part
}

#[cfg(test)]
mod tests {
    use ruma::signatures::Ed25519KeyPair;
    use serde_json::json;

    #[test]
    fn signatures_are_checked() {
        let pkcs8 = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&pkcs8, "KEY".into()).unwrap();
        let public = ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode();
        let mut object = ruma::canonical_json::to_canonical_value(json!({"user_id": "@a:x", "keys": {}}))
            .unwrap()
            .as_object()
            .unwrap()
            .clone();
        ruma::signatures::sign_json("@a:x", &pair, &mut object).unwrap();
        let signed = serde_json::to_value(&object).unwrap();
        assert!(super::is_signed_by(&signed, "@a:x", "KEY", &public));
        let mut tampered = signed.clone();
        tampered["user_id"] = json!("@b:x");
        assert!(!super::is_signed_by(&tampered, "@a:x", "KEY", &public));
        assert!(!super::is_signed_by(&signed, "@b:x", "KEY", &public));
    }
}
