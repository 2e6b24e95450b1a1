-- End-to-end encryption support: send-to-device messages (the to_device stream), device and
-- one-time keys, cross-signing keys and signatures, and the device_lists stream.

-- Messages waiting for a device; deleted once the device's next /sync acknowledges them.
-- A sendToDevice request has one stream id and at most one message per device.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    message_json TEXT NOT NULL,                -- {"sender", "type", "content"}
    PRIMARY KEY (user_id, device_id, stream_id)
) WITHOUT ROWID;
CREATE INDEX device_inbox_stream ON device_inbox (stream_id);

-- The highest to_device stream id handed out. Delivered messages are deleted, so the inbox's
-- own maximum could go backwards across a restart; this row cannot.
CREATE TABLE to_device_stream_position (
    position INTEGER NOT NULL
);
INSERT INTO to_device_stream_position (position) VALUES (0);

-- Idempotent sendToDevice: a transaction id is scoped to the device and the request path.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    inserted_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, event_type, txn_id)
) WITHOUT ROWID;
CREATE INDEX to_device_txns_ts ON to_device_txns (inserted_ts);

-- One row per change of a user's device list or keys. only_for NULL: every user sharing a
-- room with user_id is told; otherwise only that user is (signatures by a user-signing key).
CREATE TABLE device_lists_stream (
    stream_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    only_for TEXT
);
CREATE INDEX device_lists_stream_id ON device_lists_stream (stream_id);

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ts_added_ms INTEGER NOT NULL,
    key_json TEXT NOT NULL,                    -- canonical JSON, as uploaded
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    ts_added_ms INTEGER NOT NULL,              -- claims hand out the oldest upload first
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
) WITHOUT ROWID;
CREATE INDEX e2e_one_time_keys_claim
    ON e2e_one_time_keys (user_id, device_id, algorithm, ts_added_ms);

CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
) WITHOUT ROWID;

-- The latest cross-signing key of each type per user.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,                    -- master | self_signing | user_signing
    public_key TEXT NOT NULL,                  -- unpadded base64; signatures name it as a device
    key_json TEXT NOT NULL,
    stream_id INTEGER NOT NULL,                -- device_lists position of the upload
    PRIMARY KEY (user_id, key_type)
) WITHOUT ROWID;

-- Signatures uploaded through /keys/signatures/upload, kept apart from the signed JSON.
-- target_device_id is a device id or a cross-signing public key.
CREATE TABLE e2e_cross_signing_signatures (
    user_id TEXT NOT NULL,                     -- who signed
    key_id TEXT NOT NULL,                      -- with which key, e.g. ed25519:<public key>
    target_user_id TEXT NOT NULL,
    target_device_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_device_id, user_id, key_id)
) WITHOUT ROWID;
