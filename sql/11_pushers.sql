-- Pushers (client-server API "Push Notifications"): where to deliver a user's notifications.
-- A pusher is identified by (app_id, pushkey, user_id) and belongs to the device whose access
-- token created it; deleting the device deletes it. `last_stream_ordering` is the events
-- stream position up to which the pusher has been handled, so a restart neither resends nor
-- skips a notification.

CREATE TABLE pushers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_id TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    pushkey_ts INTEGER NOT NULL,            -- ms since the epoch, when it was last set
    lang TEXT NOT NULL,
    data TEXT NOT NULL,                     -- JSON object, as given
    profile_tag TEXT NOT NULL DEFAULT '',
    last_stream_ordering INTEGER NOT NULL,
    last_success_ts INTEGER,
    failing_since_ts INTEGER
);
CREATE UNIQUE INDEX pushers_key ON pushers (app_id, pushkey, user_id);
CREATE INDEX pushers_by_user ON pushers (user_id, device_id);
