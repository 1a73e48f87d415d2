-- Presence (S6) and per-user delivery rules.
--
-- `presence` (from 001) gains what the switch says beyond a device state
-- (whether a phone is registered is known, how many contacts) and the time an
-- `away` ends. `registered` stays 1 exactly when `registration` is
-- 'registered'.

ALTER TABLE presence ADD COLUMN registration TEXT NOT NULL DEFAULT 'unknown'
    CHECK (registration IN ('unknown', 'registered', 'unregistered'));
ALTER TABLE presence ADD COLUMN contacts INTEGER NOT NULL DEFAULT 0 CHECK (contacts >= 0);
ALTER TABLE presence ADD COLUMN away_until INTEGER;

CREATE TABLE user_rules (
    extension             TEXT PRIMARY KEY NOT NULL REFERENCES users(extension) ON DELETE CASCADE,
    offline               TEXT NOT NULL DEFAULT 'store' CHECK (offline IN ('store', 'ring')),
    dnd                   TEXT NOT NULL DEFAULT 'store' CHECK (dnd IN ('store', 'ring')),
    busy                  TEXT NOT NULL DEFAULT 'ring' CHECK (busy IN ('ring', 'wait', 'store')),
    ring_timeout_seconds  INTEGER CHECK (ring_timeout_seconds BETWEEN 5 AND 300),
    updated_at            INTEGER NOT NULL
) STRICT;
