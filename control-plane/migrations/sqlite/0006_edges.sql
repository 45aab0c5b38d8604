-- Edge deployments the control plane pushes each new configuration to, and what each has
-- acknowledged.
CREATE TABLE edges (
    name                      TEXT PRIMARY KEY NOT NULL,
    url                       TEXT NOT NULL,
    environment               TEXT NOT NULL REFERENCES environments(name),
    applied_version           INTEGER,
    applied_readers_revision  INTEGER,
    acked_at                  TEXT,
    last_error                TEXT,
    created_at                TEXT NOT NULL
) STRICT;
