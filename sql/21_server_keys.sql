-- Issue 15: other servers' signing keys (Server-Server API, "Retrieving server keys"), as
-- fetched from the server itself or through a notary. One row per (server, key id): the
-- newest knowledge of that key, kept after the server stops listing it, so that the
-- signatures of old events can still be checked.
--
-- valid_until_ts: the response's valid_until_ts, capped at fetched_ts + 7 days (the spec
--   says to use the lesser of the two); a key in `verify_keys` verifies what is dated up to
--   it. expired_ts: set for a key listed in `old_verify_keys`, which verifies events dated
--   before it and never a request.
-- from_server: who answered (the server itself, or the notary).
-- key_json: the whole signed response the key came in, served again by this server's
--   notary endpoint (`POST /_matrix/key/v2/query`) with its own signature added.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired_ts INTEGER,
    fetched_ts INTEGER NOT NULL,
    from_server TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
