//! `device_keys`, `one_time_keys`, `fallback_keys`, `cross_signing_keys`, `cross_user_signatures`
//! and `device_list_changes`: the keys end-to-end encryption clients publish.

use sqlx::{Any, Row, Transaction};

use super::{delivery::next_position, placeholders, Backend, Storage};
use crate::error::Result;

/// A device's keys as `/keys/query` lists them.
pub struct DeviceKeysRow {
    pub device_id: String,
    pub keys: String,
    pub display_name: Option<String>,
}

/// Records that `user_id`'s devices or keys changed, inside `tx`.
pub(super) async fn record_device_list_change(tx: &mut Transaction<'static, Any>, user_id: &str) -> Result<i64> {
    let position = next_position(tx, "device_lists").await?;
    sqlx::query("INSERT INTO device_list_changes (stream_id, user_id) VALUES ($1, $2)")
        .bind(position)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(position)
}

impl Storage {
    /// Stores a device's identity keys (a change for its user's device list when they differ),
    /// its new one-time keys, and its fallback keys (replacing those of the same algorithm).
    pub async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        device_keys: Option<&str>,
        one_time_keys: &[(String, String, String)],
        fallback_keys: &[(String, String, String)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(keys) = device_keys {
            // The transaction writes before it reads: on SQLite one that reads first and then writes
            // fails at once with "database is locked" when another connection committed in between
            // (busy_timeout does not cover upgrading a stale read snapshot). The upsert returns a
            // row only when it stored something new: a new device's keys or a real change.
            let changed = sqlx::query(
                "INSERT INTO device_keys (user_id, device_id, keys) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys \
                 WHERE device_keys.keys <> excluded.keys RETURNING device_id",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(keys)
            .fetch_optional(&mut *tx)
            .await?;
            if changed.is_some() {
                record_device_list_change(&mut tx, user_id).await?;
            }
        }
        for chunk in one_time_keys.chunks(100) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("($1, $2, {})", placeholders(i * 3 + 3, 3))).collect();
            let sql = format!(
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES {} \
                 ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(user_id).bind(device_id);
            for (algorithm, key_id, json) in chunk {
                query = query.bind(algorithm.as_str()).bind(key_id.as_str()).bind(json.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        for (algorithm, key_id, json) in fallback_keys {
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, \
                 key_json = excluded.key_json, used = 0",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .bind(key_id)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Unclaimed one-time keys per algorithm, and the algorithms with an unused fallback key.
    pub async fn key_counts(&self, user_id: &str, device_id: &str) -> Result<(Vec<(String, i64)>, Vec<String>)> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*), 0 FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm \
             UNION ALL SELECT algorithm, 0, 1 FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        let (mut counts, mut fallbacks) = (Vec::new(), Vec::new());
        for row in rows {
            let (algorithm, count, fallback): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if fallback == 1 {
                fallbacks.push(algorithm);
            } else {
                counts.push((algorithm, count));
            }
        }
        Ok((counts, fallbacks))
    }

    /// The keys of the user's devices that still exist: all, or the named ones.
    pub async fn device_keys_of(&self, user_id: &str, device_ids: &[&str]) -> Result<Vec<DeviceKeysRow>> {
        let mut sql = "SELECT k.device_id, k.keys, d.display_name FROM device_keys k \
                       JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1"
            .to_owned();
        if !device_ids.is_empty() {
            sql.push_str(&format!(" AND k.device_id IN ({})", placeholders(2, device_ids.len())));
        }
        let mut query = sqlx::query(&sql).bind(user_id);
        for id in device_ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| DeviceKeysRow { device_id: r.get(0), keys: r.get(1), display_name: r.get(2) })
            .collect())
    }

    /// Claims one one-time key of `algorithm` from the device, or else its fallback key (which
    /// stays, marked used). Each one-time key is handed out once, even to concurrent claimers.
    pub async fn claim_key(&self, user_id: &str, device_id: &str, algorithm: &str) -> Result<Option<(String, String)>> {
        // PostgreSQL: concurrent claimers skip each other's locked row instead of both taking it.
        let lock = if self.backend == Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = \
             (SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
              ORDER BY key_id LIMIT 1 {lock}) RETURNING key_id, key_json"
        );
        let claimed =
            sqlx::query(&sql).bind(user_id).bind(device_id).bind(algorithm).fetch_optional(&self.pool).await?;
        if let Some(row) = claimed {
            return Ok(Some((row.get(0), row.get(1))));
        }
        let fallback = sqlx::query(
            "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
             RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&self.pool)
        .await?;
        Ok(fallback.map(|r| (r.get(0), r.get(1))))
    }

    /// The cross-signing keys of these users: `(user_id, key_type, keys JSON)`.
    pub async fn cross_signing_keys(&self, user_ids: &[&str]) -> Result<Vec<(String, String, String)>> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(500) {
            let sql = format!(
                "SELECT user_id, key_type, keys FROM cross_signing_keys WHERE user_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        }
        Ok(found)
    }

    /// Stores cross-signing keys `(key_type, public key, JSON)` of the user, one change.
    pub async fn set_cross_signing_keys(&self, user_id: &str, keys: &[(&str, &str, String)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (key_type, public_key, json) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, public_key, keys) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, keys = excluded.keys",
            )
            .bind(user_id)
            .bind(*key_type)
            .bind(*public_key)
            .bind(json.as_str())
            .execute(&mut *tx)
            .await?;
        }
        record_device_list_change(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the stored JSON of one of the user's device keys (`Ok(false)` when absent).
    pub async fn replace_device_keys(&self, user_id: &str, device_id: &str, keys: &str) -> Result<bool> {
        self.replace_signed_key(
            "UPDATE device_keys SET keys = $3 WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
            keys,
        )
        .await
    }

    /// Replaces the stored JSON of one of the user's cross-signing keys, found by public key.
    pub async fn replace_cross_signing_key(&self, user_id: &str, public_key: &str, keys: &str) -> Result<bool> {
        let sql = "UPDATE cross_signing_keys SET keys = $3 WHERE user_id = $1 AND public_key = $2";
        self.replace_signed_key(sql, user_id, public_key, keys).await
    }

    /// Runs `update` (binding user, key, JSON) and records the change of the user's device list.
    async fn replace_signed_key(&self, update: &str, user_id: &str, key: &str, keys: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(update).bind(user_id).bind(key).bind(keys).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        record_device_list_change(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn add_cross_user_signature(
        &self,
        signer_id: &str,
        target_user_id: &str,
        target_key_id: &str,
        signer_key_id: &str,
        signature: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO cross_user_signatures (signer_id, target_user_id, target_key_id, signer_key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (signer_id, target_user_id, target_key_id, signer_key_id) \
             DO UPDATE SET signature = excluded.signature",
        )
        .bind(signer_id)
        .bind(target_user_id)
        .bind(target_key_id)
        .bind(signer_key_id)
        .bind(signature)
        .execute(&mut *tx)
        .await?;
        // The signer's own devices learn of it through their device list.
        record_device_list_change(&mut tx, signer_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Signatures `signer_id` made on other users' keys: `(target user, target key ID, signer key
    /// ID, signature)`.
    pub async fn cross_user_signatures(&self, signer_id: &str) -> Result<Vec<(String, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT target_user_id, target_key_id, signer_key_id, signature FROM cross_user_signatures WHERE signer_id = $1",
        )
        .bind(signer_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
    }

    /// Users whose device lists changed in `(after, upto]` and who share a room with `user_id`
    /// (or are that user).
    pub async fn device_list_changes_for(&self, user_id: &str, after: i64, upto: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.user_id FROM device_list_changes c WHERE c.stream_id > $2 AND c.stream_id <= $3 \
             AND (c.user_id = $1 OR c.user_id IN (SELECT other.user_id FROM room_memberships mine \
                 JOIN room_memberships other ON other.room_id = mine.room_id \
                 WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.membership = 'join'))",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}
