//! `backup_versions` and `backup_keys`: server-side key backup, opaque encrypted session keys.

use sqlx::{Any, Row, Transaction};

use super::Storage;
use crate::error::Result;

pub struct BackupVersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up session key.
pub struct BackupKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub key_data: String,
}

/// `etag` and key count of a version after a change made in `tx`.
async fn bump_etag(tx: &mut Transaction<'static, Any>, user_id: &str, version: i64) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 RETURNING etag, \
         (SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2)",
    )
    .bind(user_id)
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.get(0), row.get(1)))
}

/// `AND room_id = … AND session_id = …` for the levels given, binding from `$3`.
fn key_scope(room_id: Option<&str>, session_id: Option<&str>) -> &'static str {
    match (room_id, session_id) {
        (Some(_), Some(_)) => " AND room_id = $3 AND session_id = $4",
        (Some(_), None) => " AND room_id = $3",
        _ => "",
    }
}

impl Storage {
    /// Creates the user's next backup version (it becomes the current one).
    pub async fn create_backup_version(&self, user_id: &str, algorithm: &str, auth_data: &str) -> Result<i64> {
        // Two creations at once may pick the same number: the loser tries the next.
        for _ in 0..5 {
            let row = sqlx::query(
                "INSERT INTO backup_versions (user_id, version, algorithm, auth_data) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM backup_versions WHERE user_id = $1 \
                 ON CONFLICT (user_id, version) DO NOTHING RETURNING version",
            )
            .bind(user_id)
            .bind(algorithm)
            .bind(auth_data)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return Ok(row.get(0));
            }
        }
        Err(crate::error::Error::Conflict("backup versions are being created concurrently; try again".into()))
    }

    /// A version of the user's backup (`None`: the current one), unless deleted.
    pub async fn backup_version(&self, user_id: &str, version: Option<i64>) -> Result<Option<BackupVersionRow>> {
        let which = if version.is_some() {
            "version = $2"
        } else {
            "version = (SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0)"
        };
        let sql = format!(
            "SELECT version, algorithm, auth_data, etag, \
             (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) \
             FROM backup_versions v WHERE user_id = $1 AND deleted = 0 AND {which}"
        );
        let row = sqlx::query(&sql).bind(user_id).bind(version.unwrap_or(0)).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| BackupVersionRow {
            version: r.get(0),
            algorithm: r.get(1),
            auth_data: r.get(2),
            etag: r.get(3),
            count: r.get(4),
        }))
    }

    pub async fn update_backup_auth_data(&self, user_id: &str, version: i64, auth_data: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a version and its keys; its number is never reused.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0")
                .bind(user_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores session keys; one replaces a stored key only when better (spec: verified first,
    /// then the lower first message index, then the lower forwarded count). Returns etag, count.
    pub async fn put_backup_keys(&self, user_id: &str, version: i64, keys: &[BackupKeyRow]) -> Result<(i64, i64)> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, \
                 is_verified, key_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, key_data = excluded.key_data \
                 WHERE excluded.is_verified > backup_keys.is_verified OR (excluded.is_verified = backup_keys.is_verified \
                 AND (excluded.first_message_index < backup_keys.first_message_index \
                 OR (excluded.first_message_index = backup_keys.first_message_index \
                 AND excluded.forwarded_count < backup_keys.forwarded_count)))",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(i64::from(key.is_verified))
            .bind(&key.key_data)
            .execute(&mut *tx)
            .await?;
        }
        let result = bump_etag(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// The backed-up keys of a version: all, a room's, or one session's.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>> {
        let sql = format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, key_data FROM backup_keys \
             WHERE user_id = $1 AND version = $2{} ORDER BY room_id, session_id",
            key_scope(room_id, session_id)
        );
        let mut query = sqlx::query(&sql).bind(user_id).bind(version);
        for value in [room_id, session_id].into_iter().flatten() {
            query = query.bind(value);
        }
        Ok(query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| BackupKeyRow {
                room_id: r.get(0),
                session_id: r.get(1),
                first_message_index: r.get(2),
                forwarded_count: r.get(3),
                is_verified: r.get::<i64, _>(4) == 1,
                key_data: r.get(5),
            })
            .collect())
    }

    /// Deletes backed-up keys (all, a room's, one session's); returns etag and count.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<(i64, i64)> {
        let mut tx = self.pool.begin().await?;
        let sql =
            format!("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2{}", key_scope(room_id, session_id));
        let mut query = sqlx::query(&sql).bind(user_id).bind(version);
        for value in [room_id, session_id].into_iter().flatten() {
            query = query.bind(value);
        }
        query.execute(&mut *tx).await?;
        let result = bump_etag(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(result)
    }
}
