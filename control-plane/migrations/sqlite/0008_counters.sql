-- Named counters. `readers_revision` grows with every token change; edges compare it to know
-- whose tokens are current. It continues from what it was derived from before: the audit id of
-- the last token change.
CREATE TABLE counters (
    name        TEXT PRIMARY KEY NOT NULL,
    value       INTEGER NOT NULL CHECK (value >= 0)
) STRICT;
INSERT INTO counters (name, value)
    SELECT 'readers_revision', coalesce(max(id), 0) FROM audit
    WHERE action IN ('token.create', 'token.delete');
