-- The user agent a device was last seen with (GET /admin/whois), next to its last IP.

ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;
