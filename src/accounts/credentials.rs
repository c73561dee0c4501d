//! Secrets at rest: access tokens are random and stored only as their SHA-256; passwords are
//! hashed with argon2id.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use rand::{distributions::Alphanumeric, Rng};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A new access token: 48 alphanumeric characters, about 285 bits of entropy.
pub fn new_access_token() -> String {
    let random: String = rand::thread_rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect();
    format!("axo_{random}")
}

/// The form in which a token is stored and looked up: its SHA-256 in lower-case hex. Every
/// request computes it, so the hex is written without a string per byte.
pub fn token_hash(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

/// A device ID in the style clients show to users: ten upper-case letters.
pub fn new_device_id() -> String {
    let mut rng = rand::thread_rng();
    (0..10).map(|_| char::from(b'A' + rng.gen_range(0..26))).collect()
}

/// A random identifier for sessions and generated user names.
pub fn random_id(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Hashes with argon2id (the crate's defaults follow OWASP's recommendation), off the async
/// runtime because a hash takes tens of milliseconds of CPU.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

pub async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    })
    .await
    .map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, b) = (new_access_token(), new_access_token());
        assert_ne!(a, b);
        assert!(a.len() >= 48);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        // The stored form must not change: tokens already stored are looked up by it.
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[tokio::test]
    async fn password_round_trip() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), hash.clone()).await.unwrap());
        assert!(!verify_password("wrong".into(), hash).await.unwrap());
    }
}
