//! Full-text search of events (PostgreSQL `tsvector` in `events.search_vector`, SQLite FTS5 in
//! `event_search`), the user directory, and `reports`.

use sqlx::Row;

use super::{
    events::{event_column_count, event_columns_of_e, event_row},
    placeholders, Backend, EventRow, Storage,
};
use crate::error::Result;

/// What `/search` asks of the index: every word (letters and digits only, see `rooms::search`)
/// must occur, as a word or a word's prefix.
pub struct EventSearch<'a> {
    pub words: &'a [String],
    pub room_ids: &'a [&'a str],
    pub event_types: &'a [&'a str],
    /// Only events before this stream position (the `recent` order's cursor).
    pub before: i64,
    pub by_rank: bool,
    pub offset: i64,
    pub limit: i64,
}

/// A user directory entry: user ID, then the JSON-encoded display name and avatar URL.
pub type DirectoryRow = (String, Option<String>, Option<String>);

impl Storage {
    /// Matching events, best rank or newest first, with their rank (higher is better).
    pub async fn search_events(&self, q: &EventSearch<'_>) -> Result<Vec<(EventRow, f64)>> {
        if q.words.is_empty() || q.room_ids.is_empty() || q.event_types.is_empty() {
            return Ok(Vec::new());
        }
        let (from, rank, filter) = self.search_sql(5, q.room_ids.len(), q.event_types.len());
        let columns = event_columns_of_e();
        let fields = event_column_count();
        let order = if q.by_rank { "rank DESC, e.stream_ordering DESC" } else { "e.stream_ordering DESC" };
        let sql =
            format!("SELECT {columns}, {rank} AS rank FROM {from} WHERE {filter} ORDER BY {order} LIMIT $2 OFFSET $3");
        let mut query = sqlx::query(&sql).bind(self.search_query(q.words)).bind(q.limit).bind(q.offset).bind(q.before);
        for id in q.room_ids.iter().chain(q.event_types) {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let rank: f64 = r.get(fields);
                (event_row(r), rank)
            })
            .collect())
    }

    /// How many events match in all (the spec's approximate `count`).
    pub async fn count_search_events(&self, q: &EventSearch<'_>) -> Result<i64> {
        if q.words.is_empty() || q.room_ids.is_empty() || q.event_types.is_empty() {
            return Ok(0);
        }
        let (from, _, filter) = self.search_sql(3, q.room_ids.len(), q.event_types.len());
        let sql = format!("SELECT COUNT(*) FROM {from} WHERE {filter}");
        let mut query = sqlx::query(&sql).bind(self.search_query(q.words)).bind(i64::MAX);
        for id in q.room_ids.iter().chain(q.event_types) {
            query = query.bind(*id);
        }
        Ok(query.fetch_one(&self.pool).await?.get(0))
    }

    /// The dialect's FROM, rank expression and WHERE of a search, with `$1` the query, `$before`
    /// the cursor, then the room IDs and event types from `$before + 1` on.
    fn search_sql(&self, first_list: usize, rooms: usize, types: usize) -> (String, &'static str, String) {
        let before = first_list - 1;
        let lists = format!(
            "e.room_id IN ({}) AND e.event_type IN ({}) AND e.stream_ordering < ${before}",
            placeholders(first_list, rooms),
            placeholders(first_list + rooms, types)
        );
        match self.backend {
            Backend::Postgres => (
                "events e, to_tsquery('english', $1) q".to_owned(),
                "CAST(ts_rank_cd(e.search_vector, q) AS DOUBLE PRECISION)",
                format!("e.search_vector @@ q AND {lists}"),
            ),
            Backend::Sqlite => (
                "event_search JOIN events e ON e.stream_ordering = event_search.rowid".to_owned(),
                "-bm25(event_search)",
                format!("event_search MATCH $1 AND {lists}"),
            ),
        }
    }

    /// The words as the dialect's query: all of them, each as a prefix.
    fn search_query(&self, words: &[String]) -> String {
        match self.backend {
            Backend::Postgres => words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & "),
            Backend::Sqlite => words.iter().map(|w| format!("\"{w}\"*")).collect::<Vec<_>>().join(" "),
        }
    }

    /// Active users whose localpart or display name contains `term` (lower case), who share a
    /// joined room with `searcher` or are in a room of the public directory (or all of them with
    /// `everyone`); up to `limit`.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        term: &str,
        everyone: bool,
        limit: i64,
    ) -> Result<Vec<DirectoryRow>> {
        let escaped = term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let rows = sqlx::query(
            "SELECT u.user_id, dn.value, av.value FROM users u \
             LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname' \
             LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url' \
             WHERE u.deactivated = 0 \
               AND (LOWER(u.user_id) LIKE $2 ESCAPE '\\' OR LOWER(dn.value) LIKE $3 ESCAPE '\\') \
               AND ($5 = 1 OR EXISTS (SELECT 1 FROM room_memberships mine JOIN room_memberships theirs \
                              ON theirs.room_id = mine.room_id AND theirs.user_id = u.user_id \
                            WHERE mine.user_id = $1 AND mine.membership = 'join' AND theirs.membership = 'join') \
                    OR EXISTS (SELECT 1 FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id \
                               WHERE m.user_id = u.user_id AND m.membership = 'join' AND r.published = 1)) \
             ORDER BY u.user_id LIMIT $4",
        )
        .bind(searcher)
        .bind(format!("@%{escaped}%:%"))
        .bind(format!("%{escaped}%"))
        .bind(limit)
        .bind(i64::from(everyone))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Records a report for the administrators.
    pub async fn insert_report(
        &self,
        reporter: &str,
        room_id: Option<&str>,
        event_id: Option<&str>,
        target_user_id: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO reports (reporter, room_id, event_id, target_user_id, reason, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(reporter)
        .bind(room_id)
        .bind(event_id)
        .bind(target_user_id)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
