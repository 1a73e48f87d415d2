//! The PIN dialogue and the lock-out decision of retrieval.
//!
//! From a phone that is not theirs a user keys `extension * PIN #` after a
//! beep. Every miss (a code that is not there, a wrong PIN) counts against
//! the mailbox tried and the source that tried it (the caller's endpoint or
//! number as the switch reports it). A source with [`MAX_MISSES`] misses
//! on a mailbox within [`MISS_WINDOW`] is locked out of it; every source
//! but the mailbox's own phone is locked out once the mailbox has
//! [`MAX_MAILBOX_MISSES`] from everyone (a flood from many sources), so the
//! owner's own phone still works during another source's flood. The counts
//! live in SQLite (the server checks and counts each attempt in one
//! transaction, so they survive a restart and parallel calls cannot get
//! past them); they come in as inputs and [`locked_out`] decides.

use std::time::{Duration, Instant};

use crate::domain::{MissCounts, UserId};

use super::{Pin, TimerId};

/// Misses one source may make on one mailbox within [`MISS_WINDOW`].
pub const MAX_MISSES: usize = 5;
/// Misses from every source together on one mailbox within the window.
pub const MAX_MAILBOX_MISSES: usize = 20;
pub const MISS_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long the caller has to key `extension * PIN #` after the beep.
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(8);
/// Digits kept at most; more are ignored.
const MAX_ENTRY: usize = 32;
/// The digits that stop the beep (the first key of the entry).
pub const ENTRY_DIGITS: &str = "0123456789*#";

/// The decision: with these recent misses on a mailbox, is the source
/// (`own`: the mailbox's own phone) locked out of it?
pub fn locked_out(misses: MissCounts, own: bool) -> bool {
    misses.from_source >= MAX_MISSES || (!own && misses.mailbox >= MAX_MAILBOX_MISSES)
}

/// Whether `source` is `mailbox`'s own phone.
pub fn own(mailbox: &UserId, source: &str) -> bool {
    mailbox.as_str() == source
}

/// What the keyed entry came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Still keying.
    Pending,
    /// `extension * PIN #`.
    Complete { user: UserId, pin: Pin },
    /// Ended by `#` without a `*`, or no `#` in time.
    Invalid,
}

/// Collects `extension * PIN #` from the end of the beep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinEntry {
    digits: String,
    deadline: Option<Instant>,
}

impl PinEntry {
    pub fn new() -> Self {
        Self {
            digits: String::new(),
            deadline: None,
        }
    }

    /// The beep ended, perhaps stopped by the first key. Returns the timer
    /// to start when the entry goes on.
    pub fn beep_ended(
        &mut self,
        now: Instant,
        key: Option<char>,
    ) -> (Entry, Option<(TimerId, Instant)>) {
        if let Some(key) = key {
            let entry = self.key(key);
            if entry != Entry::Pending {
                return (entry, None);
            }
        }
        let deadline = now + ENTRY_TIMEOUT;
        self.deadline = Some(deadline);
        (Entry::Pending, Some((TimerId::Pin, deadline)))
    }

    pub fn key(&mut self, digit: char) -> Entry {
        if digit == '#' {
            return match self.digits.split_once('*') {
                Some((user, pin)) if !user.is_empty() => Entry::Complete {
                    user: UserId::new(user),
                    pin: Pin(pin.to_owned()),
                },
                _ => Entry::Invalid,
            };
        }
        if self.digits.len() < MAX_ENTRY && ENTRY_DIGITS.contains(digit) {
            self.digits.push(digit);
        }
        Entry::Pending
    }

    /// The timer fired: too late unless the deadline is still ahead.
    pub fn timer(&self, now: Instant) -> Entry {
        match self.deadline {
            Some(deadline) if now >= deadline => Entry::Invalid,
            _ => Entry::Pending,
        }
    }
}

impl Default for PinEntry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_misses_from_a_source_lock_it_out_and_a_flood_spares_the_owner() {
        let counts = |from_source, mailbox| MissCounts {
            from_source,
            mailbox,
        };
        assert!(!locked_out(counts(4, 4), false));
        assert!(locked_out(counts(5, 5), false), "the sixth attempt");
        assert!(locked_out(counts(5, 5), true), "the owner's phone too");
        // Another source, after a flood from many.
        assert!(!locked_out(counts(0, 19), false));
        assert!(locked_out(counts(0, 20), false));
        assert!(
            !locked_out(counts(0, 500), true),
            "the owner's phone is spared"
        );
        assert!(own(&UserId::new("1002"), "1002"));
        assert!(!own(&UserId::new("1002"), "1003"));
    }

    #[test]
    fn extension_star_pin_hash_is_an_entry() {
        let t0 = Instant::now();
        let mut entry = PinEntry::new();
        let (state, timer) = entry.beep_ended(t0, Some('1'));
        assert_eq!(state, Entry::Pending);
        assert_eq!(timer, Some((TimerId::Pin, t0 + ENTRY_TIMEOUT)));
        for digit in "002*2468".chars() {
            assert_eq!(entry.key(digit), Entry::Pending);
        }
        assert_eq!(
            entry.key('#'),
            Entry::Complete {
                user: UserId::new("1002"),
                pin: Pin("2468".into())
            }
        );
    }

    #[test]
    fn no_star_no_extension_or_no_hash_in_time_is_invalid() {
        let t0 = Instant::now();
        let mut entry = PinEntry::new();
        entry.beep_ended(t0, None);
        entry.key('1');
        assert_eq!(entry.key('#'), Entry::Invalid);
        let mut entry = PinEntry::new();
        assert_eq!(entry.beep_ended(t0, Some('#')), (Entry::Invalid, None));
        let mut entry = PinEntry::new();
        entry.beep_ended(t0, Some('*'));
        assert_eq!(entry.key('#'), Entry::Invalid, "no extension");
        let mut entry = PinEntry::new();
        entry.beep_ended(t0, None);
        assert_eq!(entry.timer(t0 + Duration::from_secs(7)), Entry::Pending);
        assert_eq!(entry.timer(t0 + ENTRY_TIMEOUT), Entry::Invalid);
    }

    #[test]
    fn a_long_entry_is_capped() {
        let mut entry = PinEntry::new();
        for _ in 0..1000 {
            entry.key('1');
        }
        assert!(entry.digits.len() <= MAX_ENTRY);
    }

    #[test]
    fn a_pin_never_prints() {
        assert_eq!(format!("{:?}", Pin("2468".into())), "Pin(***)");
    }
}
