-- Users deactivated with `erase: true` (spec "Account deactivation"): their events are served
-- redacted to users who were not joined when they were sent, as Synapse does.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;
