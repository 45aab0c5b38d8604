-- Browsers: `client` tokens, which a page can carry, and the origins each environment's pages
-- may call from (CORS).
ALTER TABLE tokens DROP CONSTRAINT tokens_scope_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_scope_check
    CHECK (scope IN ('client', 'read', 'release', 'admin'));
ALTER TABLE tokens ADD CONSTRAINT client_tokens_have_an_environment
    CHECK (scope <> 'client' OR environment IS NOT NULL);

-- A JSON array of origins, e.g. ["https://app.example.com"].
ALTER TABLE environments ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
