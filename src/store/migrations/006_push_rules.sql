-- Push when available, per user: how many calls about the same newest
-- unheard message (0: never), and quiet hours (minutes of the day in the
-- server's local time; both set or neither, start != end, checked by the
-- store before writing).
ALTER TABLE user_rules ADD COLUMN push_limit INTEGER NOT NULL DEFAULT 3
    CHECK (push_limit BETWEEN 0 AND 20);
ALTER TABLE user_rules ADD COLUMN quiet_start INTEGER CHECK (quiet_start BETWEEN 0 AND 1439);
ALTER TABLE user_rules ADD COLUMN quiet_end INTEGER CHECK (quiet_end BETWEEN 0 AND 1439);

-- Calls placed per (user, newest unheard message): the limit holds across
-- a restart.
CREATE TABLE push_calls (
    extension   TEXT NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    calls       INTEGER NOT NULL CHECK (calls >= 0),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (extension, message_id)
) STRICT;

-- Users owed a push: they returned but could not be called then (quiet
-- hours, still on the call that cleared do-not-disturb). Placed when the
-- window ends or when they next become reachable.
CREATE TABLE push_owed (
    extension  TEXT PRIMARY KEY NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    since      INTEGER NOT NULL
) STRICT;
