-- Presence (the online indicator): one row per user whose presence was ever set, rewritten only
-- when the state changes, with a position in the presence stream.
CREATE TABLE presence (
    user_id         TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    status_msg      TEXT,
    last_active_ts  INTEGER NOT NULL,
    stream_id       INTEGER NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
INSERT INTO stream_counters (stream, position) VALUES ('presence', 0);
