-- URL previews (GET /preview_url), kept so that the same URL is not fetched again before
-- its preview expires. A URL may have several rows, one per fetch (download_ts): a client's
-- `ts` picks the preview nearest that time (Synapse's history-aware url_cache). Rows are
-- deleted once expired.
CREATE TABLE url_previews (
    url TEXT NOT NULL,
    download_ts INTEGER NOT NULL,              -- ms since the epoch
    expires_ts INTEGER NOT NULL,               -- ms since the epoch
    og TEXT NOT NULL,                          -- the response: OpenGraph JSON object
    PRIMARY KEY (url, download_ts)
);
CREATE INDEX url_previews_by_expiry ON url_previews (expires_ts);
