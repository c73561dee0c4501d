//! `uia_sessions`: user-interactive authentication in progress. Kept in the database so that the
//! stages of one session may reach different `axon` processes.

use sqlx::Row;

use super::Storage;
use crate::error::Result;

pub struct UiaSessionRow {
    pub user_id: Option<String>,
    /// JSON array of the stage types completed so far.
    pub completed: String,
    pub created_ts: i64,
}

impl Storage {
    pub async fn insert_uia_session(&self, session_id: &str, user_id: Option<&str>, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO uia_sessions (session_id, user_id, completed, created_ts) VALUES ($1, $2, '[]', $3)")
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRow>> {
        let row = sqlx::query("SELECT user_id, completed, created_ts FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| UiaSessionRow { user_id: r.get(0), completed: r.get(1), created_ts: r.get(2) }))
    }

    pub async fn set_uia_completed(&self, session_id: &str, completed_json: &str) -> Result<()> {
        sqlx::query("UPDATE uia_sessions SET completed = $2 WHERE session_id = $1")
            .bind(session_id)
            .bind(completed_json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes the session once its request succeeded, and every session older than `cutoff`.
    pub async fn delete_uia_sessions(&self, session_id: &str, cutoff: i64) -> Result<()> {
        sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1 OR created_ts < $2")
            .bind(session_id)
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
