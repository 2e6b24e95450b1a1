-- Issue 15: the federation sender's knowledge of each destination server (Server-Server API,
-- "Transactions"), kept so that a restart neither hammers a server that is down nor forgets
-- what a server has missed. Written only by the instance with the federation_sender role.
--
-- retry_last_ts / retry_interval (ms): when the last attempt failed and how long to wait after
--   it; 0 / 0 when the destination is healthy. The next attempt is due at their sum.
-- failure_ts: when the current run of failures began (NULL: healthy).
-- last_successful_stream_ordering: every event this server sent, up to this position of the
--   events stream, that the destination should have is delivered (or refused by it for good);
--   NULL when nothing was ever sent. Catch-up after an outage starts from here.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts INTEGER NOT NULL DEFAULT 0,
    retry_interval INTEGER NOT NULL DEFAULT 0,
    failure_ts INTEGER,
    last_successful_stream_ordering INTEGER
);
