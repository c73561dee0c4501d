-- End-to-end encryption support (spec: "End-to-End Encryption"): the server stores and hands out
-- the keys clients publish; it never sees message keys.

-- Each device's identity keys (the signed `device_keys` object as uploaded, signatures merged in).
CREATE TABLE device_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    keys       TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys, each claimed (deleted) exactly once.
CREATE TABLE one_time_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm, handed out when no one-time key is left.
CREATE TABLE fallback_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    used       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id     TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    keys        TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures a user made on another user's master key with their user-signing key: shown only to
-- the signer.
CREATE TABLE cross_user_signatures (
    signer_id       TEXT NOT NULL,
    target_user_id  TEXT NOT NULL,
    target_key_id   TEXT NOT NULL,
    signer_key_id   TEXT NOT NULL,
    signature       TEXT NOT NULL,
    PRIMARY KEY (signer_id, target_user_id, target_key_id, signer_key_id)
);

-- Users whose devices or keys changed, in stream order: sync's device_lists and /keys/changes.
CREATE TABLE device_list_changes (
    stream_id  BIGINT PRIMARY KEY,
    user_id    TEXT NOT NULL
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);
INSERT INTO stream_counters (stream, position) VALUES ('device_lists', 0);

-- Server-side key backup (spec: "Server-side key backups"): versions, and the encrypted session
-- keys of each. `etag` changes with every change to a version's keys.
CREATE TABLE backup_versions (
    user_id    TEXT NOT NULL,
    version    BIGINT NOT NULL,
    algorithm  TEXT NOT NULL,
    auth_data  TEXT NOT NULL,
    etag       BIGINT NOT NULL DEFAULT 0,
    deleted    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE backup_keys (
    user_id              TEXT NOT NULL,
    version              BIGINT NOT NULL,
    room_id              TEXT NOT NULL,
    session_id           TEXT NOT NULL,
    first_message_index  BIGINT NOT NULL,
    forwarded_count      BIGINT NOT NULL,
    is_verified          BIGINT NOT NULL,
    key_data             TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
