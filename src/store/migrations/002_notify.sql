-- The notification outbox, rebuilt for exactly-once sending (see src/notify/).
--
-- An item is claimed by moving it to `sending` with `attempts` raised by one
-- before any network call; `attempts` is then the attempt's id. An outcome or a
-- delivery report is only applied to the attempt it belongs to. A row found in
-- `sending` at start-up is an attempt whose result was never recorded.
-- `dedup_key` makes enqueueing the same event twice a no-op.

CREATE TABLE outbox_v2 (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
    channel          TEXT NOT NULL CHECK (channel IN
                       ('sms_kannel', 'sms_smpp', 'webhook', 'sip_message', 'mwi', 'smart_caller_id')),
    recipient        TEXT NOT NULL,
    payload          TEXT NOT NULL,        -- JSON
    state            TEXT NOT NULL CHECK (state IN
                       ('pending', 'sending', 'sent', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    deadline_at      INTEGER NOT NULL,
    dedup_key        TEXT UNIQUE,
    gateway_id       TEXT,                 -- the gateway's message id, for delivery reports
    outcome          TEXT,                 -- last result or reason, for people
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

INSERT INTO outbox_v2 (id, delivery_id, channel, recipient, payload, state, attempts,
                       next_attempt_at, deadline_at, outcome, created_at, updated_at)
    SELECT id, delivery_id, channel, recipient, payload, state, attempts,
           next_attempt_at, deadline_at, outcome, created_at, created_at
    FROM outbox;

DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;

CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_by_gateway_id ON outbox(channel, gateway_id) WHERE gateway_id IS NOT NULL;

-- Per-user choice of channels; a user without a row gets `[notify] default_channels`.
CREATE TABLE notify_preferences (
    extension   TEXT PRIMARY KEY NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    channels    TEXT NOT NULL,             -- comma-separated channel names, may be empty
    updated_at  INTEGER NOT NULL
) STRICT;
