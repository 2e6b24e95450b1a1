-- Thumbnails of local media (spec "Content repository", thumbnails). One row per thumbnail
-- request shape that has been answered: a configured size (made after upload) or, with
-- media.dynamic_thumbnails, any size a client asked for. `req_*` is what was asked for (the
-- cache key); `width`/`height` is what the file is (a "scale" thumbnail is never larger than
-- the original, so several requests may share one file). The file is
-- <media>/thumbnails/<media_id[0:2]>/<media_id>/<file_name>, written before its row.
CREATE TABLE local_media_thumbnails (
    media_id TEXT NOT NULL,
    req_width INTEGER NOT NULL,
    req_height INTEGER NOT NULL,
    method TEXT NOT NULL,                      -- 'crop' or 'scale'
    animated INTEGER NOT NULL,                 -- 1: made for an animated=true request
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    length INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (media_id, req_width, req_height, method, animated)
);
