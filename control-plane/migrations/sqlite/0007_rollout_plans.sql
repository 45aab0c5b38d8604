-- Rollout plans: one flag in one environment, taken through ordered stages. The plan itself
-- (stages, current stage, approvals, ...) is JSON in `body`; the columns are what queries need.
CREATE TABLE plans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    flag        TEXT NOT NULL REFERENCES flags(key),
    environment TEXT NOT NULL REFERENCES environments(name),
    status      TEXT NOT NULL CHECK (status IN ('running', 'held', 'rolled_back', 'completed')),
    body        TEXT NOT NULL,            -- JSON
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
-- At most one plan drives a flag in an environment at a time.
CREATE UNIQUE INDEX plans_active ON plans(flag, environment) WHERE status IN ('running', 'held');

-- Every stage transition, manual or automatic, written in the transaction that makes it.
CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    plan        INTEGER NOT NULL REFERENCES plans(id),
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    action      TEXT NOT NULL,
    from_stage  TEXT,
    to_stage    TEXT,
    decision    TEXT NOT NULL CHECK (decision IN ('proceed', 'hold', 'rollback')),
    rationale   TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    metrics     TEXT NOT NULL             -- JSON: the readings at that moment
) STRICT;
CREATE INDEX decisions_by_flag ON decisions(flag, environment, id);

-- Counters reported by apps and edges, summed per minute of the control plane's clock.
CREATE TABLE metric_counts (
    environment TEXT NOT NULL,
    flag        TEXT NOT NULL,
    variant     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    minute      INTEGER NOT NULL,         -- Unix time / 60
    value       INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (environment, flag, minute, variant, metric)
) STRICT, WITHOUT ROWID;

-- Batch ids already counted, so a retried batch is not counted twice.
CREATE TABLE metric_batches (
    id          TEXT PRIMARY KEY NOT NULL,
    minute      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Where an environment's plan notifications go.
CREATE TABLE webhooks (
    name        TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments(name),
    created_at  TEXT NOT NULL
) STRICT;

-- The outbox: one row per notification per webhook, written with the decision that caused it
-- and delivered (with retries) after it commits.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook      TEXT NOT NULL,
    url          TEXT NOT NULL,
    event        TEXT NOT NULL,
    payload      TEXT NOT NULL,           -- JSON
    created_at   TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at TEXT,
    failed_at    TEXT,                    -- set when retries are exhausted
    last_error   TEXT
) STRICT;
CREATE INDEX deliveries_pending ON deliveries(id) WHERE delivered_at IS NULL AND failed_at IS NULL;
