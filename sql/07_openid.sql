-- OpenID tokens (client-server API "OpenID"): handed to a third party, which exchanges one
-- for the user's id at /_matrix/federation/v1/openid/userinfo until it expires.

CREATE TABLE open_id_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    valid_until_ms INTEGER NOT NULL
);
CREATE INDEX open_id_tokens_by_expiry ON open_id_tokens (valid_until_ms);
