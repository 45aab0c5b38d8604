-- Each environment's recent snapshots, as published: what another process serving the same
-- database reads to publish every version in order.
CREATE TABLE snapshots (
    environment TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        BLOB NOT NULL,            -- JSON, flag-core's snapshot format
    PRIMARY KEY (environment, version)
) STRICT;
