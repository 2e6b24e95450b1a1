-- Issue 12: the media repository (spec "Content repository"): one row per local media id.
-- The bytes live on disk, content-addressed by sha256 (trioserver/media/filestore.py); a row
-- is 'complete' only once its file has been fsynced and renamed into place, so a committed
-- complete row always names a file that exists.
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    -- The user who uploaded it (or, for an id from POST /create, who may upload to it).
    uploader TEXT NOT NULL,
    -- ms since the epoch: when the id was made (POST /upload: when the content arrived).
    created_ts INTEGER NOT NULL,
    -- 'pending': an id from POST /create without content yet; 'complete': has content.
    state TEXT NOT NULL CHECK (state IN ('pending', 'complete')),
    -- A pending id expires (ms since the epoch); NULL once complete.
    expires_ts INTEGER,
    content_type TEXT,
    upload_name TEXT,
    length INTEGER,
    sha256 TEXT,
    -- Quarantined media is never served (admin API later).
    quarantined INTEGER NOT NULL DEFAULT 0
);

-- Counting (and expiring) a user's pending ids.
CREATE INDEX local_media_pending ON local_media (uploader, expires_ts) WHERE state = 'pending';
CREATE INDEX local_media_expiry ON local_media (expires_ts) WHERE state = 'pending';
-- Which rows share a content file.
CREATE INDEX local_media_sha256 ON local_media (sha256);
