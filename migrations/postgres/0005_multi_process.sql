-- Event stream positions reserved by writers and not yet committed, so that readers in every
-- process stop below them (DESIGN.md section 4). Reservations are made one at a time under an
-- advisory lock, so they commit in position order; each is deleted in its event's transaction.
-- Unlogged: after a crash nothing in flight survives anyway.
CREATE UNLOGGED TABLE event_positions_in_flight (
    position    BIGINT PRIMARY KEY,
    created_ts  BIGINT NOT NULL
);
