//! `users`: accounts and their password hashes.

use sqlx::Row;

use super::Storage;
use crate::error::Result;

pub struct UserRow {
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
}

impl Storage {
    /// Inserts a new account; `false` when the user ID is taken (also by a deactivated account,
    /// whose ID is never handed out again).
    pub async fn insert_user(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(i64::from(is_admin))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT password_hash, is_admin, deactivated FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| UserRow {
            password_hash: r.get(0),
            is_admin: r.get::<i64, _>(1) != 0,
            deactivated: r.get::<i64, _>(2) != 0,
        }))
    }

    /// Replaces the password hash; `false` when there is no such account.
    pub async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(password_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the account deactivated and forgets its password; its ID stays reserved.
    pub async fn mark_user_deactivated(&self, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
