-- Segments: shared by every environment like flag definitions, and put into every snapshot.
CREATE TABLE segments (
    key         TEXT PRIMARY KEY NOT NULL,
    definition  TEXT NOT NULL,            -- JSON: flag-core's wire segment
    archived    INTEGER NOT NULL DEFAULT 0,
    revision    INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

-- A read token may be bound to one environment: the only one it can read, and the one OFREP
-- evaluates in for it.
ALTER TABLE tokens ADD COLUMN environment TEXT REFERENCES environments(name);

-- Changes to a segment are audited under its key.
ALTER TABLE audit ADD COLUMN segment TEXT;
CREATE INDEX audit_by_segment ON audit(segment, id);
