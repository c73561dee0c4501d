//! `profile_fields`: a user's profile, one row per field, values as JSON text.

use sqlx::Row;

use super::Storage;
use crate::error::Result;

impl Storage {
    /// Every field of the user's profile as `(field, JSON value)`, ordered by field name.
    pub async fn profile_fields(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT field, value FROM profile_fields WHERE user_id = $1 ORDER BY field")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn profile_field(&self, user_id: &str, field: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2")
            .bind(user_id)
            .bind(field)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_profile_field(&self, user_id: &str, field: &str, json_value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
        )
        .bind(user_id)
        .bind(field)
        .bind(json_value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_profile_field(&self, user_id: &str, field: &str) -> Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1 AND field = $2")
            .bind(user_id)
            .bind(field)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_profile(&self, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
        Ok(())
    }
}
