-- Environments: each has its own snapshot version, bumped by every change that affects it.
CREATE TABLE environments (
    name        TEXT PRIMARY KEY NOT NULL,
    version     INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  TEXT NOT NULL
) STRICT;

-- A flag's definition, shared by every environment: key, type, variants, off_variant, salt.
CREATE TABLE flags (
    key         TEXT PRIMARY KEY NOT NULL,
    definition  TEXT NOT NULL,            -- JSON
    archived    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

-- A flag's state in one environment: enabled, prerequisites, rules, fallthrough.
CREATE TABLE flag_states (
    environment TEXT NOT NULL REFERENCES environments(name),
    flag        TEXT NOT NULL REFERENCES flags(key),
    state       TEXT NOT NULL,            -- JSON
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (environment, flag)
) STRICT;

-- Who changed what, when, with the record before and after. Written in the same transaction
-- as the change it describes.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    environment TEXT,
    flag        TEXT,
    before      TEXT,                     -- JSON, NULL when created
    after       TEXT                      -- JSON, NULL when deleted
) STRICT;
CREATE INDEX audit_by_flag ON audit(flag, id);
CREATE INDEX audit_by_environment ON audit(environment, id);
