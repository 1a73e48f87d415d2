//! The PIN dialogue and the lock-out decision of retrieval.
//!
//! From a phone that is not theirs a user keys `extension * PIN #` after a
//! beep. Every miss (a code that is not the caller's, a wrong PIN) counts
//! against that user; with [`MAX_MISSES`] misses within [`MISS_WINDOW`] the
//! user is locked out until the oldest leaves the window. The count lives
//! in [`Misses`] (the server keeps one, shared by all calls); the decision
//! is [`locked_out`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::domain::UserId;

use super::{Pin, TimerId};

/// Misses a user may make within [`MISS_WINDOW`].
pub const MAX_MISSES: usize = 5;
pub const MISS_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long the caller has to key `extension * PIN #` after the beep.
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(8);
/// Digits kept at most; more are ignored.
const MAX_ENTRY: usize = 32;
/// The digits that stop the beep (the first key of the entry).
pub const ENTRY_DIGITS: &str = "0123456789*#";

/// The decision: with this many recent misses, is the user locked out?
pub fn locked_out(recent_misses: usize) -> bool {
    recent_misses >= MAX_MISSES
}

/// Recent misses per user, on the time the caller gives.
#[derive(Debug, Default)]
pub struct Misses {
    by_user: HashMap<UserId, VecDeque<Instant>>,
}

impl Misses {
    /// How many misses of `user` are within the window at `now`.
    pub fn recent(&mut self, user: &UserId, now: Instant) -> usize {
        self.prune(user, now)
    }

    /// Users tracked at most before the stale ones are swept (a caller can
    /// key any extension; the table must not grow without bound).
    const SWEEP_AT: usize = 10_000;

    /// Count a miss at `now`; returns how many are within the window.
    pub fn count(&mut self, user: &UserId, now: Instant) -> usize {
        if self.by_user.len() >= Self::SWEEP_AT {
            self.by_user.retain(|_, list| {
                list.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < MISS_WINDOW)
            });
        }
        self.prune(user, now);
        let list = self.by_user.entry(user.clone()).or_default();
        list.push_back(now);
        list.len()
    }

    fn prune(&mut self, user: &UserId, now: Instant) -> usize {
        let Some(list) = self.by_user.get_mut(user) else {
            return 0;
        };
        while list
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MISS_WINDOW)
        {
            list.pop_front();
        }
        let len = list.len();
        if len == 0 {
            self.by_user.remove(user);
        }
        len
    }
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
    fn the_sixth_miss_within_the_window_is_locked_out() {
        let mut misses = Misses::default();
        let user = UserId::new("1002");
        let t0 = Instant::now();
        for i in 1..=5 {
            assert!(!locked_out(misses.recent(&user, t0)), "attempt {i}");
            assert_eq!(misses.count(&user, t0), i);
        }
        assert!(locked_out(misses.recent(&user, t0)));
        assert!(
            !locked_out(misses.recent(&UserId::new("1003"), t0)),
            "per user"
        );
        assert!(locked_out(
            misses.recent(&user, t0 + Duration::from_secs(599))
        ));
        assert!(
            !locked_out(misses.recent(&user, t0 + Duration::from_secs(600))),
            "the misses leave the window"
        );
    }

    #[test]
    fn stale_users_are_swept_when_the_table_is_full() {
        let mut misses = Misses::default();
        let t0 = Instant::now();
        for i in 0..Misses::SWEEP_AT {
            misses.count(&UserId::new(i.to_string()), t0);
        }
        let later = t0 + MISS_WINDOW;
        assert_eq!(misses.count(&UserId::new("1002"), later), 1);
        assert_eq!(misses.by_user.len(), 1, "only the fresh miss is kept");
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
