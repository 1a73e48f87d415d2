-- Bearer tokens of the HTTP API. Only the SHA-256 of each token is kept: the
-- token (256 random bits) is printed once by `ivm token create`.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'admin')),
    hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at  INTEGER NOT NULL,
    last_used_at INTEGER
) STRICT;

CREATE INDEX messages_by_state ON messages(state, id);
-- The API reads a page of messages with their deliveries.
CREATE INDEX deliveries_by_message ON deliveries(message_id);
