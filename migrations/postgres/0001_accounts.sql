-- Accounts, devices and their access tokens, profiles, user-interactive auth sessions.
-- Timestamps are milliseconds since the Unix epoch; flags are 0/1 integers in both dialects.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    password_hash  TEXT,
    is_admin       BIGINT NOT NULL DEFAULT 0,
    deactivated    BIGINT NOT NULL DEFAULT 0,
    created_ts     BIGINT NOT NULL
);

-- One access token per device: logging out deletes the device, so a token can never outlive it.
-- Only the SHA-256 of the token is stored.
CREATE TABLE devices (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    display_name   TEXT,
    last_seen_ip   TEXT,
    last_seen_ts   BIGINT,
    created_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Profile fields (displayname, avatar_url and the extended fields of spec v1.16), values as JSON.
CREATE TABLE profile_fields (
    user_id  TEXT NOT NULL,
    field    TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

CREATE TABLE uia_sessions (
    session_id  TEXT PRIMARY KEY,
    user_id     TEXT,
    completed   TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
