-- The schema SQLite reached at its migration 0009, in PostgreSQL's types. JSON is kept as the
-- text the service wrote, as on SQLite, so both backends give back the same bytes.

CREATE TABLE environments (
    name        TEXT PRIMARY KEY,
    version     BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE flags (
    key         TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,            -- JSON
    archived    BOOLEAN NOT NULL DEFAULT false,
    revision    BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE flag_states (
    environment TEXT NOT NULL REFERENCES environments(name),
    flag        TEXT NOT NULL REFERENCES flags(key),
    state       TEXT NOT NULL,            -- JSON
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment, flag)
);

CREATE TABLE segments (
    key         TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,            -- JSON: flag-core's wire segment
    archived    BOOLEAN NOT NULL DEFAULT false,
    revision    BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    environment TEXT,
    flag        TEXT,
    segment     TEXT,
    reason      TEXT,
    before      TEXT,                     -- JSON, NULL when created
    after       TEXT                      -- JSON, NULL when deleted
);
CREATE INDEX audit_by_flag ON audit(flag, id);
CREATE INDEX audit_by_environment ON audit(environment, id);
CREATE INDEX audit_by_segment ON audit(segment, id);

CREATE TABLE tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'release', 'admin')),
    environment TEXT REFERENCES environments(name),
    hash        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE counters (
    name        TEXT PRIMARY KEY,
    value       BIGINT NOT NULL CHECK (value >= 0)
);
INSERT INTO counters (name, value) VALUES ('readers_revision', 0);

CREATE TABLE edges (
    name                      TEXT PRIMARY KEY,
    url                       TEXT NOT NULL,
    environment               TEXT NOT NULL REFERENCES environments(name),
    applied_version           BIGINT,
    applied_readers_revision  BIGINT,
    acked_at                  TIMESTAMPTZ,
    last_error                TEXT,
    created_at                TIMESTAMPTZ NOT NULL
);

CREATE TABLE plans (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag        TEXT NOT NULL REFERENCES flags(key),
    environment TEXT NOT NULL REFERENCES environments(name),
    status      TEXT NOT NULL CHECK (status IN ('running', 'held', 'rolled_back', 'completed')),
    body        TEXT NOT NULL,            -- JSON
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX plans_active ON plans(flag, environment) WHERE status IN ('running', 'held');

CREATE TABLE decisions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    plan        BIGINT NOT NULL REFERENCES plans(id),
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    action      TEXT NOT NULL,
    from_stage  TEXT,
    to_stage    TEXT,
    decision    TEXT NOT NULL CHECK (decision IN ('proceed', 'hold', 'rollback')),
    rationale   TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    metrics     TEXT NOT NULL             -- JSON: the readings at that moment
);
CREATE INDEX decisions_by_flag ON decisions(flag, environment, id);

CREATE TABLE metric_counts (
    environment TEXT NOT NULL,
    flag        TEXT NOT NULL,
    variant     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    minute      BIGINT NOT NULL,          -- Unix time / 60
    value       BIGINT NOT NULL CHECK (value >= 0),
    PRIMARY KEY (environment, flag, minute, variant, metric)
);

CREATE TABLE metric_batches (
    environment TEXT NOT NULL,
    id          TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    PRIMARY KEY (environment, id)
);

CREATE TABLE webhooks (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments(name),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook      TEXT NOT NULL,
    url          TEXT NOT NULL,
    event        TEXT NOT NULL,
    payload      TEXT NOT NULL,           -- JSON
    created_at   TIMESTAMPTZ NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at TIMESTAMPTZ,
    failed_at    TIMESTAMPTZ,             -- set when retries are exhausted
    last_error   TEXT
);
CREATE INDEX deliveries_pending ON deliveries(id) WHERE delivered_at IS NULL AND failed_at IS NULL;
