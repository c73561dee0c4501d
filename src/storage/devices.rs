//! `devices`: a user's devices, each with the SHA-256 of its one access token.

use sqlx::{any::AnyRow, Row};

use super::{placeholders, Backend, Storage};
use crate::error::Result;

/// PostgreSQL channel on which a revocation of any of a user's access tokens names the user, for
/// the processes that cache sessions (accounts/sessions.rs).
pub const SESSIONS_CHANNEL: &str = "axon_sessions";

/// Who an access token belongs to, and when that device was last seen.
pub struct SessionRow {
    pub user_id: String,
    pub device_id: String,
    pub last_seen_ts: Option<i64>,
}

pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
}

fn device_row(r: AnyRow) -> DeviceRow {
    DeviceRow { device_id: r.get(0), display_name: r.get(1), last_seen_ip: r.get(2), last_seen_ts: r.get(3) }
}

impl Storage {
    pub async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query("SELECT user_id, device_id, last_seen_ts FROM devices WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| SessionRow { user_id: r.get(0), device_id: r.get(1), last_seen_ts: r.get(2) }))
    }

    /// Creates the device, or gives an existing device of this user a new token (the old one
    /// stops working); the display name of an existing device is kept, as the spec asks.
    pub async fn upsert_device(
        &self,
        user_id: &str,
        device_id: &str,
        token_hash: &str,
        display_name: Option<&str>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<()> {
        const UPSERT: &str = "INSERT INTO devices \
             (user_id, device_id, token_hash, display_name, last_seen_ip, last_seen_ts, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash, \
             last_seen_ip = excluded.last_seen_ip, last_seen_ts = excluded.last_seen_ts";
        // A device's new token revokes its old one: other processes must forget it.
        let statement = match self.backend() {
            Backend::Postgres => format!(
                "WITH up AS ({UPSERT} RETURNING user_id) SELECT pg_notify('{SESSIONS_CHANNEL}', user_id) FROM up"
            ),
            Backend::Sqlite => UPSERT.to_owned(),
        };
        sqlx::query(&statement)
            .bind(user_id)
            .bind(device_id)
            .bind(token_hash)
            .bind(display_name)
            .bind(ip)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn devices_of_user(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices \
             WHERE user_id = $1 ORDER BY created_ts, device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(device_row).collect())
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
        let row = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(device_row))
    }

    /// `false` when the user has no such device.
    pub async fn set_device_display_name(&self, user_id: &str, device_id: &str, name: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn record_device_seen(&self, user_id: &str, device_id: &str, ip: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_ip = $3, last_seen_ts = $4 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(ip)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the named devices of the user (and so their tokens); unknown IDs are ignored.
    pub async fn delete_devices(&self, user_id: &str, device_ids: &[&str]) -> Result<u64> {
        let mut deleted = 0;
        // Bounded statements: both dialects cap the number of bind parameters.
        for chunk in device_ids.chunks(500) {
            let which = format!("device_id IN ({})", placeholders(2, chunk.len()));
            let mut tx = self.pool.begin().await?;
            let mut devices = 0;
            for statement in device_deletion(&which) {
                let mut query = sqlx::query(&statement).bind(user_id);
                for id in chunk {
                    query = query.bind(*id);
                }
                devices = query.execute(&mut *tx).await?.rows_affected();
            }
            deleted += devices;
            finish_device_deletion(&mut tx, self.backend(), user_id).await?;
            tx.commit().await?;
        }
        Ok(deleted)
    }

    /// Deletes every device of the user but `keep` (all of them when `keep` is `None`).
    pub async fn delete_devices_except(&self, user_id: &str, keep: Option<&str>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for statement in device_deletion("device_id <> COALESCE($2, '')") {
            deleted = sqlx::query(&statement).bind(user_id).bind(keep).execute(&mut *tx).await?.rows_affected();
        }
        finish_device_deletion(&mut tx, self.backend(), user_id).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

/// The statements deleting the user's (`$1`) devices that match `which`, with what belongs to
/// them: their pushers and queued pushes (pushers belong to the device's access token), their
/// end-to-end keys. The devices themselves go last, so the last statement counts them.
fn device_deletion(which: &str) -> Vec<String> {
    vec![
        format!(
            "DELETE FROM push_queue WHERE (user_id, app_id, pushkey) IN \
             (SELECT user_id, app_id, pushkey FROM pushers WHERE user_id = $1 AND {which})"
        ),
        format!("DELETE FROM pushers WHERE user_id = $1 AND {which}"),
        format!("DELETE FROM device_keys WHERE user_id = $1 AND {which}"),
        format!("DELETE FROM one_time_keys WHERE user_id = $1 AND {which}"),
        format!("DELETE FROM fallback_keys WHERE user_id = $1 AND {which}"),
        format!("DELETE FROM devices WHERE user_id = $1 AND {which}"),
    ]
}

/// Device deletion changes the user's pushers and device list, and revokes access tokens, which
/// other processes must forget when the transaction commits.
async fn finish_device_deletion(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    user_id: &str,
) -> Result<()> {
    super::delivery::next_position(tx, "pushers").await?;
    super::keys::record_device_list_change(tx, user_id).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)").bind(SESSIONS_CHANNEL).bind(user_id).execute(&mut **tx).await?;
    }
    Ok(())
}
