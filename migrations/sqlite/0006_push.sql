-- Push notifications (spec: "Push Notifications"): what each event means for each recipient, the
-- pushers apps registered, and the deliveries waiting for their push gateway.

-- Events are evaluated against their recipients' push rules in stream order, after they commit;
-- this position says how far. Syncs do not show events beyond it, so an event and the counts it
-- raises arrive together.
INSERT INTO stream_counters (stream, position) VALUES ('push_evaluated', (SELECT COALESCE(MAX(stream_ordering), 0) FROM events));
-- Moved by every change to pushers, so that the evaluator rereads them only after one.
INSERT INTO stream_counters (stream, position) VALUES ('pushers', 0);

-- One row per event that notified a user. `unread` turns 0 when a read receipt covers the event,
-- so that counting a room's unread notifications reads only the unread rows.
CREATE TABLE event_push_actions (
    user_id          TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    -- 'main', or the thread root's event ID (spec: "Threaded read receipts").
    thread_id        TEXT NOT NULL,
    actions          TEXT NOT NULL,
    highlight        INTEGER NOT NULL,
    unread           INTEGER NOT NULL,
    ts               INTEGER NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX event_push_actions_unread ON event_push_actions (user_id, room_id, stream_ordering) WHERE unread = 1;

-- HTTP pushers (spec: "Pushers"), owned by the device whose access token created them.
CREATE TABLE pushers (
    user_id     TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    pushkey     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    url         TEXT NOT NULL,
    -- The pusher as the client gave it (GET /pushers answers with it).
    pusher      TEXT NOT NULL,
    pushkey_ts  INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);
CREATE INDEX pushers_device ON pushers (user_id, device_id);

-- Notifications waiting for their push gateway, so that a restart loses none. `notification`
-- holds the event's part of the gateway request; counts and devices are added when it is sent.
CREATE TABLE push_queue (
    queue_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    pushkey          TEXT NOT NULL,
    notification     TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts  INTEGER NOT NULL
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_ts);
CREATE INDEX push_queue_pusher ON push_queue (user_id, app_id, pushkey);
