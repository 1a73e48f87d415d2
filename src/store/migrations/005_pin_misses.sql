-- Retrieval misses (a wrong PIN, a code that is not there), one row each:
-- the mailbox tried, the source that tried it (the caller's endpoint or
-- number as the switch reports it), when. The lock-out counts the rows
-- within its window; older rows are swept as new ones come.
CREATE TABLE pin_misses (
    id         INTEGER PRIMARY KEY,
    mailbox    TEXT NOT NULL,
    source     TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX pin_misses_by_mailbox ON pin_misses (mailbox, at_ms);
