-- Full-text search over message bodies, room names and topics (spec: "Server Side Search").
-- The vector is computed in the INSERT of the event itself (no extra round trip on the send path)
-- from the text Axon extracts, and cleared when the event is redacted. Other events stay NULL,
-- outside the partial index.
ALTER TABLE events ADD COLUMN search_vector tsvector;
CREATE INDEX events_search ON events USING gin (search_vector) WHERE search_vector IS NOT NULL;

-- Events stored before this migration: a row whose JSON PostgreSQL cannot turn into text (a \u0000
-- escape) is skipped rather than failing the upgrade.
DO $$
DECLARE r RECORD;
BEGIN
    FOR r IN SELECT stream_ordering, event_type, pdu FROM events
             WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL LOOP
        BEGIN
            UPDATE events SET search_vector = to_tsvector('english', (r.pdu::json) #>> ARRAY['content',
                CASE r.event_type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END])
            WHERE stream_ordering = r.stream_ordering;
        EXCEPTION WHEN others THEN NULL;
        END;
    END LOOP;
END $$;

-- Reports of events, rooms and users to this server's administrators (spec: "Reporting content").
CREATE TABLE reports (
    report_id       BIGSERIAL PRIMARY KEY,
    reporter        TEXT NOT NULL,
    room_id         TEXT,
    event_id        TEXT,
    target_user_id  TEXT,
    reason          TEXT NOT NULL,
    created_ts      BIGINT NOT NULL
);
CREATE INDEX reports_created ON reports (created_ts);

-- The state event a state event replaced, for `unsigned.prev_content` and `replaces_state` (spec:
-- "ClientEvent" → UnsignedData). NULL for messages and for the first event of a (type, state key).
ALTER TABLE events ADD COLUMN replaces_state TEXT;
