-- Grows with every change to a flag, in any environment: the flag resource's ETag.
ALTER TABLE flags ADD COLUMN revision INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1);
