-- The caches stream (issue 13): main writes one row per cache invalidation, numbered by the
-- caches stream's id generator; workers apply each row to their own copy of the cache.
-- keys_json: a JSON list of string keys, or NULL for "the whole cache". Old rows are pruned.
CREATE TABLE cache_invalidations (
    stream_id INTEGER PRIMARY KEY,
    cache_name TEXT NOT NULL,
    keys_json TEXT,
    invalidation_ts INTEGER NOT NULL
);
CREATE INDEX cache_invalidations_ts ON cache_invalidations (invalidation_ts);
