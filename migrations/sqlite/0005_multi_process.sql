-- SQLite has one process: writes are serialized by the database lock, so positions commit in order
-- and no reservations are needed. The table exists so both dialects share the schema.
CREATE TABLE event_positions_in_flight (
    position    INTEGER PRIMARY KEY,
    created_ts  INTEGER NOT NULL
);
