-- A batch id counts once per environment: one environment's ids no longer hide another's
-- batches. Ids remembered so far had no environment and are dropped; they were kept a day only.
DROP TABLE metric_batches;
CREATE TABLE metric_batches (
    environment TEXT NOT NULL,
    id          TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    PRIMARY KEY (environment, id)
) STRICT, WITHOUT ROWID;
