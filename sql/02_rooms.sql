-- Rooms and the event graph. Written only by the events writer (PersistEventStore), except
-- for the room directory and aliases.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public INTEGER NOT NULL DEFAULT 0,      -- published in the room directory
    created_ts INTEGER NOT NULL
);

-- One row per event; stream_ordering is the position in the events stream (the rowid).
CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,                            -- NULL: not a state event
    sender TEXT NOT NULL,
    topological_ordering INTEGER NOT NULL,     -- the event's depth
    origin_server_ts INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    membership TEXT,                           -- for m.room.member events
    state_group INTEGER,                       -- the room state after this event
    replaces_state TEXT,                       -- for state events: the event it replaced
    redacted_by TEXT,                          -- a valid redaction of this event, if any
    rejected TEXT,                             -- why it was rejected (NULL: accepted)
    outlier INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_room_topo ON events (room_id, topological_ordering, stream_ordering);
CREATE INDEX events_by_room_stream ON events (room_id, stream_ordering);

-- The event as stored: its PDU JSON, and the server's own unsigned data kept beside it
-- (replaces_state, prev_content) so that serving needs no second lookup.
CREATE TABLE event_json (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    json TEXT NOT NULL,
    unsigned TEXT
) WITHOUT ROWID;

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;

CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;

-- State is stored as groups: a group is either a full snapshot (prev_group NULL) or a delta on
-- prev_group. Consecutive non-state events share their group, and delta chains are bounded
-- (chain_length), so storage grows with state changes, not with messages x room size.
CREATE TABLE state_groups (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group INTEGER,
    chain_length INTEGER NOT NULL
);
CREATE TABLE state_group_state (
    state_group INTEGER NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, type, state_key)
) WITHOUT ROWID;

CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    event_stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
) WITHOUT ROWID;

-- Every change to current state; event_id NULL means the key was removed (e.g. seed 4).
CREATE TABLE current_state_delta_stream (
    stream_id INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT
);
CREATE INDEX current_state_delta_stream_idx ON current_state_delta_stream (stream_id);

CREATE TABLE room_memberships (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    display_name TEXT,
    avatar_url TEXT,
    event_stream_ordering INTEGER NOT NULL,
    forgotten INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX room_memberships_by_user ON room_memberships (user_id, room_id);
CREATE INDEX room_memberships_by_room ON room_memberships (room_id);

-- The latest membership of each local user in each room they were ever part of. It outlives
-- current_state_events when the server leaves the room (seeds 4 and 6).
CREATE TABLE local_current_membership (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_stream_ordering INTEGER NOT NULL
);
CREATE UNIQUE INDEX local_current_membership_idx ON local_current_membership (user_id, room_id);
CREATE INDEX local_current_membership_room_idx ON local_current_membership (room_id);

-- Only redactions that name a target (seed 5: a redaction without one gets no row).
CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    have_censored INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX redactions_redacts ON redactions (redacts);

-- Idempotent sends: the same (user, device, room, txn id) always maps to the same event.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    inserted_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
) WITHOUT ROWID;

CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- Self-destructing messages (MSC2228, issue 5): written with the event, removed at expiry.
CREATE TABLE event_expiry (
    event_id TEXT PRIMARY KEY,
    expiry_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_expiry_expiry_ts_idx ON event_expiry (expiry_ts);
