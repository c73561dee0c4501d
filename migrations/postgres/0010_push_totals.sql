-- Unread counts without reading every unread notification. In each thread of a room, the
-- notifications a user has read are the oldest ones: every way of reading (a receipt, the user's
-- own event) covers all of them up to a position. So the unread ones are the newest, and their
-- number is the thread's total minus how many came before the oldest unread one: two index
-- lookups, whatever the number unread. Only the push evaluator writes both tables, in stream
-- order, so the numbers follow each other without gaps.

-- How many notifications (highlights) each user has had in each thread of each room, ever.
CREATE TABLE event_push_totals (
    user_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    thread_id      TEXT NOT NULL,
    notifications  BIGINT NOT NULL,
    highlights     BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- How many of the user's notifications (highlights) in the same room and thread came before this one.
ALTER TABLE event_push_actions ADD COLUMN notifications_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE event_push_actions ADD COLUMN highlights_before BIGINT NOT NULL DEFAULT 0;

-- Notifications recorded before this migration.
UPDATE event_push_actions AS a SET notifications_before = n.notifications_before, highlights_before = n.highlights_before
FROM (SELECT user_id, stream_ordering, ROW_NUMBER() OVER w - 1 AS notifications_before,
             SUM(highlight) OVER w - highlight AS highlights_before
      FROM event_push_actions WINDOW w AS (PARTITION BY user_id, room_id, thread_id ORDER BY stream_ordering)) n
WHERE a.user_id = n.user_id AND a.stream_ordering = n.stream_ordering;
INSERT INTO event_push_totals (user_id, room_id, thread_id, notifications, highlights)
SELECT user_id, room_id, thread_id, COUNT(*), SUM(highlight) FROM event_push_actions GROUP BY user_id, room_id, thread_id;

-- The oldest unread notification of a thread is found by its thread.
DROP INDEX event_push_actions_unread;
CREATE INDEX event_push_actions_unread ON event_push_actions (user_id, room_id, thread_id, stream_ordering) WHERE unread = 1;
