-- Full-text search over message bodies, room names and topics (spec: "Server Side Search"): an
-- FTS5 index keyed by stream ordering, written in the event's transaction from the text Axon
-- extracts and deleted from when the event is redacted. Contentless: the text lives in events.pdu.
CREATE VIRTUAL TABLE event_search USING fts5(
    body, content = '', contentless_delete = 1, tokenize = 'porter unicode61 remove_diacritics 2'
);

INSERT INTO event_search (rowid, body)
SELECT stream_ordering, json_extract(pdu, CASE event_type WHEN 'm.room.message' THEN '$.content.body'
                                          WHEN 'm.room.name' THEN '$.content.name' ELSE '$.content.topic' END)
FROM events
WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL AND json_valid(pdu)
  AND json_type(pdu, CASE event_type WHEN 'm.room.message' THEN '$.content.body'
                     WHEN 'm.room.name' THEN '$.content.name' ELSE '$.content.topic' END) = 'text';

-- Reports of events, rooms and users to this server's administrators (spec: "Reporting content").
CREATE TABLE reports (
    report_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter        TEXT NOT NULL,
    room_id         TEXT,
    event_id        TEXT,
    target_user_id  TEXT,
    reason          TEXT NOT NULL,
    created_ts      INTEGER NOT NULL
);
CREATE INDEX reports_created ON reports (created_ts);

-- The state event a state event replaced, for `unsigned.prev_content` and `replaces_state` (spec:
-- "ClientEvent" → UnsignedData). NULL for messages and for the first event of a (type, state key).
ALTER TABLE events ADD COLUMN replaces_state TEXT;
