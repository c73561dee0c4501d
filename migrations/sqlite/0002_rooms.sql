-- Rooms as DAGs of signed events (PDUs), their state, memberships and aliases.

-- This server's ed25519 signing keys (PKCS#8, base64). The newest is used to sign.
CREATE TABLE server_signing_keys (
    key_id      TEXT PRIMARY KEY,
    pkcs8       TEXT NOT NULL,
    created_ts  INTEGER NOT NULL
);

CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY,
    room_version  TEXT NOT NULL,
    creator       TEXT NOT NULL,
    -- Listed in the public room directory.
    published     INTEGER NOT NULL DEFAULT 0,
    -- Stream ordering of the room's newest event. Every event write first updates this row, which
    -- serializes the room's writers across processes and tells a writer whether its cache is stale.
    head_stream   INTEGER NOT NULL DEFAULT 0,
    created_ts    INTEGER NOT NULL
);
CREATE INDEX rooms_published ON rooms (published) WHERE published = 1;

-- State snapshots: a snapshot is its parent plus the entries of its own delta, with a full snapshot
-- (no parent) every so often so that a lookup reads a bounded chain. Messages share the snapshot of
-- the state they were sent in: storage grows with state changes, not with events.
CREATE TABLE state_snapshots (
    snapshot_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id       TEXT NOT NULL,
    parent_id     INTEGER,
    chain_length  INTEGER NOT NULL
);
CREATE TABLE state_snapshot_entries (
    snapshot_id  INTEGER NOT NULL,
    event_type   TEXT NOT NULL,
    state_key    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, event_type, state_key)
);

-- Every PDU, in the order this server accepted them (stream_ordering, global and monotonic).
CREATE TABLE events (
    stream_ordering   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id          TEXT NOT NULL UNIQUE,
    room_id           TEXT NOT NULL,
    depth             INTEGER NOT NULL,
    event_type        TEXT NOT NULL,
    state_key         TEXT,
    sender            TEXT NOT NULL,
    origin_server_ts  INTEGER NOT NULL,
    -- The room state after this event.
    state_snapshot    INTEGER NOT NULL,
    -- Canonical JSON of the PDU; replaced by its redacted form once redacted.
    pdu               TEXT NOT NULL,
    redacted_by       TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key, stream_ordering) WHERE state_key IS NOT NULL;

CREATE TABLE event_edges (
    event_id       TEXT NOT NULL,
    prev_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE TABLE event_auth_edges (
    event_id       TEXT NOT NULL,
    auth_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);
CREATE TABLE room_forward_extremities (
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE room_current_state (
    room_id     TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- The current membership of every user who has one, indexed by user so that a sync finds a user's
-- rooms in one query.
CREATE TABLE room_memberships (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    membership       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    forgotten        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

-- (user, device, transaction ID) → event, so that a retried send stores nothing new.
CREATE TABLE event_transactions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias    TEXT PRIMARY KEY,
    room_id  TEXT NOT NULL,
    creator  TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
