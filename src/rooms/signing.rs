//! This server's ed25519 signing key: generated on first start and kept in the database, so every
//! process of one server signs with the same key.

use ruma::{serde::Base64, signatures::Ed25519KeyPair};

use crate::{
    error::{Error, Result},
    storage::{now_ms, Storage},
};

pub async fn load_or_generate(storage: &Storage) -> Result<Ed25519KeyPair> {
    if storage.newest_signing_key().await?.is_none() {
        let pkcs8 = Ed25519KeyPair::generate();
        let version = crate::accounts::random_id(8);
        storage
            .insert_signing_key(
                &format!("ed25519:{version}"),
                &Base64::<ruma::serde::base64::Standard, _>::new(pkcs8.to_vec()).encode(),
                now_ms(),
            )
            .await?;
    }
    // Read back what is stored: with two processes starting at once, both use the same key.
    let (key_id, pkcs8) =
        storage.newest_signing_key().await?.ok_or_else(|| Error::internal("no signing key stored"))?;
    let der = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(&pkcs8).map_err(Error::internal)?;
    let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
    Ed25519KeyPair::from_der(der.as_bytes(), version).map_err(Error::internal)
}
