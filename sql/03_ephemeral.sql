-- Receipts, account data (with room tags) and presence: the /sync streams with tables.
-- (Typing is in memory only.) Each row carries the stream id of its latest change, allocated
-- by the stream's writer inside the transaction that writes it.

-- The latest receipt of each (room, type, user, thread); thread_id '' is "unthreaded".
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
) WITHOUT ROWID;
CREATE INDEX receipts_by_room_stream ON receipts (room_id, stream_id);
CREATE INDEX receipts_stream ON receipts (stream_id);

-- Global (room_id '') and per-room account data; room tags are the room's `m.tag` entry.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
) WITHOUT ROWID;
CREATE INDEX account_data_by_user_stream ON account_data (user_id, stream_id);
CREATE INDEX account_data_stream ON account_data (stream_id);

-- The last presence of each local user that was worth telling others about.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts INTEGER NOT NULL,
    currently_active INTEGER NOT NULL,
    stream_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX presence_stream ON presence (stream_id);
