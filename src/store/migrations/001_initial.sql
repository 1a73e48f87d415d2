-- Times are Unix milliseconds (UTC). Audio paths are relative to the data directory.

CREATE TABLE users (
    extension   TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    mobile      TEXT,                      -- E.164, e.g. +15551230001
    pin_hash    TEXT,                      -- argon2 PHC string; never printed
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE groups (
    number      TEXT PRIMARY KEY NOT NULL,
    name        TEXT,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_number TEXT NOT NULL REFERENCES groups(number) ON DELETE CASCADE,
    extension    TEXT NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    PRIMARY KEY (group_number, extension)
) STRICT;

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    sender        TEXT NOT NULL,           -- extension or caller number
    group_number  TEXT,                    -- set for stored-group messages
    state         TEXT NOT NULL CHECK (state IN ('recording', 'complete', 'partial', 'failed')),
    audio_format  TEXT NOT NULL,           -- as recorded by the switch: sln, sln16, sln48, ulaw, alaw, wav
    sample_rate   INTEGER NOT NULL,
    audio_path    TEXT NOT NULL,
    wav_path      TEXT,                    -- the finished message as a standard WAV
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    duration_ms   INTEGER
) STRICT;
CREATE INDEX messages_by_sender ON messages(sender, started_at);

CREATE TABLE fragments (
    message_id   INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL CHECK (idx >= 0),
    byte_offset  INTEGER NOT NULL CHECK (byte_offset >= 0),
    length       INTEGER NOT NULL CHECK (length > 0),
    written_at   INTEGER NOT NULL,
    PRIMARY KEY (message_id, idx)
) STRICT;

CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY,
    message_id         INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    target_kind        TEXT NOT NULL CHECK (target_kind IN ('extension', 'number', 'ip')),
    target             TEXT NOT NULL,
    code               TEXT NOT NULL,      -- retrieval code, unique per target
    state              TEXT NOT NULL CHECK (state IN
                         ('pending', 'ringing', 'listening', 'heard', 'unheard',
                          'rejected', 'busy', 'unreachable', 'expired', 'deleted')),
    answered_at        INTEGER,
    playback_position  INTEGER NOT NULL DEFAULT 0,   -- samples into the message
    outcome            TEXT,
    updated_at         INTEGER NOT NULL,
    UNIQUE (target, code)
) STRICT;
CREATE INDEX deliveries_by_target ON deliveries(target, state);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
    channel          TEXT NOT NULL,        -- sms_kannel, sms_smpp, webhook, sip_message, mwi, smart_caller_id
    recipient        TEXT NOT NULL,
    payload          TEXT NOT NULL,        -- JSON
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    deadline_at      INTEGER NOT NULL,
    outcome          TEXT,
    created_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

CREATE TABLE presence (
    extension     TEXT PRIMARY KEY NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    registered    INTEGER NOT NULL DEFAULT 0 CHECK (registered IN (0, 1)),
    device_state  TEXT NOT NULL DEFAULT 'unknown',  -- idle, ringing, in_use, unavailable, unknown
    user_status   TEXT NOT NULL DEFAULT 'available' CHECK (user_status IN ('available', 'dnd', 'away')),
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE charging_records (
    id            INTEGER PRIMARY KEY,
    action        TEXT NOT NULL,           -- message_sent, delivered, retrieved, sms_sent, ptt_burst, page
    subscriber    TEXT NOT NULL,
    message_id    INTEGER REFERENCES messages(id) ON DELETE SET NULL,
    units         INTEGER NOT NULL DEFAULT 0,
    amount_micros INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;
