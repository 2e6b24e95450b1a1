-- Guest accounts (spec "Guest Access"): registered with kind=guest, limited to the endpoints
-- the module allows, until they upgrade to a full account through /register.
ALTER TABLE users ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;
