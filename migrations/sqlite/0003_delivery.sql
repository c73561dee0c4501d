-- What /sync delivers besides room events: filters, account data, to-device messages, receipts.
-- Each stream's positions come from a row of stream_counters, incremented inside the writing
-- transaction: the row lock makes commit order equal position order, so a reader never sees a
-- position before all lower ones (DESIGN.md section 4) even with several processes.

CREATE TABLE stream_counters (
    stream    TEXT PRIMARY KEY,
    position  INTEGER NOT NULL
);
INSERT INTO stream_counters (stream, position) VALUES ('account_data', 0), ('to_device', 0), ('receipts', 0);

CREATE TABLE filters (
    filter_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    filter     TEXT NOT NULL
);

-- Global account data has room_id ''.
CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    data_type  TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_id  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

-- Messages wait here until the device acknowledges them with its next sync token.
CREATE TABLE to_device_inbox (
    stream_id   INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    content     TEXT NOT NULL
);
CREATE INDEX to_device_inbox_device ON to_device_inbox (user_id, device_id, stream_id);

-- Finding the transaction ID of events a device sent, for local echo in /sync.
CREATE INDEX event_transactions_event ON event_transactions (event_id);

CREATE TABLE to_device_transactions (
    sender     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);

-- The latest receipt of each user, type and thread in a room.
CREATE TABLE receipts (
    room_id       TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    receipt_type  TEXT NOT NULL,
    thread_id     TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    stream_id     INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_id);
