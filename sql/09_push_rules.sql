-- Push rules (client-server API "Push Rules"). A user's own rules are rows of push_rules;
-- the server-default rules live in code (trioserver/push/rules.py) and a user's changes to
-- them (enabled, actions) are rows of push_rule_defaults.

-- Within one (user, kind), a higher priority is evaluated first; new rules take the highest.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    conditions TEXT NOT NULL,   -- JSON list (override and underride rules; else [])
    pattern TEXT,               -- content rules
    actions TEXT NOT NULL,      -- JSON list, as the client sent it
    enabled INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- NULL leaves the attribute as the server ships it.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled INTEGER,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
