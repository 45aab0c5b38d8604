-- The metric rows each token added in a minute, against its quota: in the database, so the
-- quota holds across every replica.
CREATE TABLE metric_quota (
    token  TEXT NOT NULL,
    minute BIGINT NOT NULL,
    added  BIGINT NOT NULL,
    PRIMARY KEY (token, minute)
);
