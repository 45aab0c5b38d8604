-- The metric rows each token added in a minute, against its quota: in the database, so the
-- quota holds across every process serving it.
CREATE TABLE metric_quota (
    token  TEXT NOT NULL,
    minute INTEGER NOT NULL,
    added  INTEGER NOT NULL,
    PRIMARY KEY (token, minute)
) STRICT;
