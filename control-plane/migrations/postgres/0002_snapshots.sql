-- Each environment's recent snapshots, as published: what the other replicas read to publish
-- every version in order.
CREATE TABLE snapshots (
    environment TEXT NOT NULL,
    version     BIGINT NOT NULL,
    body        BYTEA NOT NULL,           -- JSON, flag-core's snapshot format
    PRIMARY KEY (environment, version)
);
