-- Browsers: `client` tokens, which a page can carry, and the origins each environment's pages
-- may call from (CORS). SQLite cannot alter a CHECK, so the tokens table is made anew.
CREATE TABLE tokens_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    scope       TEXT NOT NULL CHECK (scope IN ('client', 'read', 'release', 'admin')),
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    environment TEXT REFERENCES environments(name),
    CHECK (scope <> 'client' OR environment IS NOT NULL)
) STRICT;
INSERT INTO tokens_new (id, name, scope, hash, created_at, environment)
    SELECT id, name, scope, hash, created_at, environment FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;

-- A JSON array of origins, e.g. ["https://app.example.com"].
ALTER TABLE environments ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
