-- Reports of abusive content (spec "Reporting content"), kept for the admin API. Who filed a
-- report, when, and what they said; nothing reads these on a hot path.
CREATE TABLE event_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,                     -- the reporter
    reason TEXT,
    content TEXT NOT NULL                      -- the request body as JSON (score, reason)
);
CREATE INDEX event_reports_by_room ON event_reports (room_id);

CREATE TABLE room_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX room_reports_by_room ON room_reports (room_id);

CREATE TABLE user_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX user_reports_by_target ON user_reports (target_user_id);

-- GET /rooms/{roomId}/timestamp_to_event ("jump to date") looks up the event nearest a time;
-- without this it would read the whole room (Synapse keeps the same index).
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts) WHERE outlier = 0;
