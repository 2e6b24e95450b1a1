-- Server-side key backups (client-server API "Server-side key backups"): each user has
-- numbered backup versions; a version holds one encrypted megolm session key per
-- (room_id, session_id). Version numbers are per user and never reused (deleted versions keep
-- their row, flagged, so MAX(version) + 1 stays increasing), like Synapse.

CREATE TABLE room_key_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,          -- JSON, opaque to the server
    etag INTEGER NOT NULL DEFAULT 0,  -- bumped whenever the version's keys change
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE room_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,       -- JSON, opaque to the server
    PRIMARY KEY (user_id, version, room_id, session_id)
);
