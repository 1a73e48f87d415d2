//! The words every layer shares: typed ids, the states of messages and
//! deliveries (each with the one checked mapping to the TEXT the store keeps),
//! and the call vocabulary the engine speaks and the switches carry out.
//!
//! Owns: these types and their string forms. Must not know: SQL, sockets,
//! files, the clock, any switch's syntax. The engine, the store and the
//! switch adapters import from here; this module imports nothing of theirs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::media::AudioFormat;

/// A stored message (`messages.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MessageId(pub i64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An item of the notification outbox (`outbox.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OutboxId(pub i64);

impl fmt::Display for OutboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A party by the digits the number plan names it: a user's extension (the
/// key of `users`) or an outside number. Senders and targets are these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
pub struct Extension(pub String);

impl Extension {
    pub fn new(digits: impl Into<String>) -> Self {
        Self(digits.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user: the extension that keys `users`.
pub type UserId = Extension;

/// The retrieval code of one delivery (unique per target): digits only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MessageCode(String);

impl MessageCode {
    /// At most this many digits (the number plan uses 4 to 10).
    pub const MAX_DIGITS: usize = 16;

    /// A code of 1 to [`Self::MAX_DIGITS`] ASCII digits, else None.
    pub fn parse(digits: &str) -> Option<Self> {
        let ok = !digits.is_empty()
            && digits.len() <= Self::MAX_DIGITS
            && digits.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| Self(digits.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored state string that names no state: the database was edited by
/// hand or by a newer `ivm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {text:?}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub text: String,
}

/// Declares a state enum with its one mapping to and from its stored TEXT.
macro_rules! stored_states {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The TEXT the store keeps.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: $kind, text: text.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

stored_states! {
    /// `messages.state`.
    MessageState, "message" {
        Recording => "recording",
        Complete => "complete",
        Partial => "partial",
        Failed => "failed",
    }
}

stored_states! {
    /// `deliveries.state`: where one target stands with one message.
    DeliveryState, "delivery" {
        Pending => "pending",
        Ringing => "ringing",
        Listening => "listening",
        Heard => "heard",
        Unheard => "unheard",
        Rejected => "rejected",
        Busy => "busy",
        Unreachable => "unreachable",
        Expired => "expired",
        Deleted => "deleted",
    }
}

stored_states! {
    /// `presence.device_state`: what the switch last said of a user's phones.
    Activity, "device" {
        Unknown => "unknown",
        Idle => "idle",
        Ringing => "ringing",
        OnCall => "in_use",
        Unavailable => "unavailable",
    }
}

stored_states! {
    /// `presence.user_status`: what the user said of themselves.
    UserStatus, "user" {
        Available => "available",
        Dnd => "dnd",
        Away => "away",
    }
}

stored_states! {
    /// What the external (HLR-style) lookup says of a number outside the
    /// PBX: the `state` of its JSON answer (`[presence.external]`; not
    /// stored). A lookup that fails counts as `Unknown`.
    ExternalReach, "external" {
        Reachable => "reachable",
        Unreachable => "unreachable",
        Busy => "busy",
        Unknown => "unknown",
    }
}

stored_states! {
    /// What to do with a message for a user in one situation (`user_rules`).
    Reaction, "rule" {
        Ring => "ring",
        Store => "store",
        Wait => "wait",
    }
}

/// A user's presence as the store keeps it: the switch's side (registered,
/// how many contacts, ringing / on a call / idle) and the user's own
/// (available, do-not-disturb, away until a time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// None: the switch never said.
    pub registered: Option<bool>,
    pub contacts: u32,
    pub activity: Activity,
    /// As set; an `away` whose `away_until_ms` has passed reads `available`
    /// (the store resolves that when it answers).
    pub status: UserStatus,
    pub away_until_ms: Option<i64>,
    pub updated_at_ms: i64,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            registered: None,
            contacts: 0,
            activity: Activity::Unknown,
            status: UserStatus::Available,
            away_until_ms: None,
            updated_at_ms: 0,
        }
    }
}

/// A user's delivery rules (`ivm user rules`): what happens to a message
/// when they are offline, on do-not-disturb, or on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeliveryRules {
    /// `store` (default: do not ring, notify at once) or `ring`.
    pub offline: Reaction,
    /// `store` (default: notify silently, the lamp only) or `ring`.
    pub dnd: Reaction,
    /// `ring` (default: call waiting), `wait` (stored, delivered when the
    /// call ends) or `store`.
    pub busy: Reaction,
    /// Seconds to ring; None: `[delivery] ring_timeout_seconds`.
    pub ring_timeout_seconds: Option<u32>,
    /// How many calls push-when-available places about the same newest
    /// unheard message (0: never pushed).
    pub push_limit: u32,
    /// When push-when-available calls nobody (the server's local time);
    /// a push held back is placed when the window ends.
    pub quiet_hours: Option<QuietHours>,
}

/// Push-when-available's default number of calls per message.
pub const DEFAULT_PUSH_LIMIT: u32 = 3;

/// A daily window of the server's local time, as minutes of the day:
/// from `start` (included) to `end` (excluded); `start > end` crosses
/// midnight. Never empty and never the whole day (`start != end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: u16,
    end: u16,
}

/// Minutes in a day.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

impl QuietHours {
    /// The window from `start` to `end` (minutes of the day); None when
    /// either is not a minute of a day or they are equal.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start < MINUTES_PER_DAY && end < MINUTES_PER_DAY && start != end)
            .then_some(Self { start, end })
    }

    pub fn start(self) -> u16 {
        self.start
    }

    pub fn end(self) -> u16 {
        self.end
    }

    /// Whether `minute` of the day falls in the window.
    pub fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Why a quiet-hours text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a window such as 22:00-07:00 (HH:MM-HH:MM, 24-hour, start and end differ)")]
pub struct BadQuietHours(pub String);

impl FromStr for QuietHours {
    type Err = BadQuietHours;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadQuietHours(s.to_owned());
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            if h.is_empty() || h.len() > 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minute(start).ok_or_else(bad)?, minute(end).ok_or_else(bad)?);
        Self::new(start, end).ok_or_else(bad)
    }
}

impl Serialize for QuietHours {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Default for DeliveryRules {
    fn default() -> Self {
        Self {
            offline: Reaction::Store,
            dnd: Reaction::Store,
            busy: Reaction::Ring,
            ring_timeout_seconds: None,
            push_limit: DEFAULT_PUSH_LIMIT,
            quiet_hours: None,
        }
    }
}

impl DeliveryState {
    /// Not heard yet: counts as new on the lamp and `*55` alone offers it.
    pub fn is_unheard(self) -> bool {
        matches!(
            self,
            DeliveryState::Unheard | DeliveryState::Busy | DeliveryState::Unreachable
        )
    }

    /// Still in flight: a crash leaves these `unheard`.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            DeliveryState::Pending | DeliveryState::Ringing | DeliveryState::Listening
        )
    }
}

/// One channel (call leg) on the switch; unique for the switch's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallId(pub String);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Chosen by `ivm` for each originate and carried by the switch as an
/// opaque token, so that the answered leg can be matched to what rang it.
/// It is looked up in a table, never parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OriginateId(pub String);

impl fmt::Display for OriginateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// A recorded or recording file, raw or WAV, that may still be growing.
    File { path: PathBuf, format: AudioFormat },
    /// A prompt or tone from `sounds/`, by name without extension.
    Sound(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    pub media: Media,
    /// First sample to play (at the media's own rate).
    pub from_sample: u64,
    /// Digits that stop the playback early (e.g. `"#5"`).
    pub interrupt_digits: String,
}

impl PlayRequest {
    /// A prompt or tone from its start.
    pub fn sound(name: &str, interrupt_digits: &str) -> Self {
        Self {
            media: Media::Sound(name.to_owned()),
            from_sample: 0,
            interrupt_digits: interrupt_digits.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRequest {
    pub path: PathBuf,
    pub format: AudioFormat,
    /// The switch stops by itself after this long.
    pub max_duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateRequest {
    pub id: OriginateId,
    /// What to ring, in the number plan's terms (an extension, a number).
    pub target: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub ring_timeout: Duration,
}

/// Why a channel ended, as ISDN Q.850 causes (what both switches report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HangupCause {
    Normal,
    Busy,
    NoAnswer,
    Rejected,
    Unreachable,
    Other(u16),
}

impl HangupCause {
    pub fn from_q850(code: u16) -> Self {
        match code {
            // Asterisk reports 0 ("not defined") when the far end simply
            // hung up (a SIP BYE): that is normal clearing.
            0 | 16 => HangupCause::Normal,
            17 => HangupCause::Busy,
            18 | 19 => HangupCause::NoAnswer,
            21 => HangupCause::Rejected,
            1 | 3 | 20 | 27 | 38 => HangupCause::Unreachable,
            other => HangupCause::Other(other),
        }
    }

    pub fn q850(self) -> u16 {
        match self {
            HangupCause::Normal => 16,
            HangupCause::Busy => 17,
            HangupCause::NoAnswer => 19,
            HangupCause::Rejected => 21,
            HangupCause::Unreachable => 20,
            HangupCause::Other(code) => code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_parse_print_and_refuse() {
        let night: QuietHours = "22:00-07:00".parse().unwrap();
        assert_eq!((night.start(), night.end()), (22 * 60, 7 * 60));
        assert_eq!(night.to_string(), "22:00-07:00");
        assert_eq!(
            "9:05-17:30".parse::<QuietHours>().unwrap().to_string(),
            "09:05-17:30"
        );
        for bad in [
            "",
            "22:00",
            "22:00-22:00",
            "24:00-07:00",
            "22:60-07:00",
            "22-07",
            "22:00-07:0",
            "-1:00-07:00",
            "22:00-07:00-08:00",
            "aa:bb-cc:dd",
            "123:00-07:00",
        ] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad:?}");
        }
        assert_eq!(QuietHours::new(0, MINUTES_PER_DAY), None);
    }

    #[test]
    fn quiet_hours_include_the_start_exclude_the_end_and_may_cross_midnight() {
        let day: QuietHours = "12:00-14:00".parse().unwrap();
        assert!(!day.contains(11 * 60 + 59));
        assert!(day.contains(12 * 60));
        assert!(day.contains(13 * 60 + 59));
        assert!(!day.contains(14 * 60));
        let night: QuietHours = "22:00-07:00".parse().unwrap();
        for inside in [22 * 60, 23 * 60 + 59, 0, 3 * 60, 6 * 60 + 59] {
            assert!(night.contains(inside), "{inside}");
        }
        for outside in [7 * 60, 12 * 60, 21 * 60 + 59] {
            assert!(!night.contains(outside), "{outside}");
        }
    }

    #[test]
    fn every_state_round_trips_through_its_text_and_nothing_else_parses() {
        for state in MessageState::ALL {
            assert_eq!(state.as_str().parse::<MessageState>(), Ok(*state));
        }
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(*state));
        }
        assert!("Heard".parse::<DeliveryState>().is_err());
        assert!("".parse::<MessageState>().is_err());
    }

    #[test]
    fn the_stored_texts_are_those_the_schema_allows() {
        let schema = include_str!("store/migrations/001_initial.sql");
        for state in DeliveryState::ALL {
            assert!(schema.contains(&format!("'{}'", state.as_str())), "{state}");
        }
        for state in MessageState::ALL {
            assert!(schema.contains(&format!("'{}'", state.as_str())), "{state}");
        }
    }

    #[test]
    fn a_code_is_digits_only() {
        assert!(MessageCode::parse("123456").is_some());
        assert!(MessageCode::parse("").is_none());
        assert!(MessageCode::parse("12a4").is_none());
        assert!(MessageCode::parse(&"1".repeat(17)).is_none());
    }

    #[test]
    fn q850_round_trips_for_named_causes() {
        for cause in [
            HangupCause::Normal,
            HangupCause::Busy,
            HangupCause::NoAnswer,
            HangupCause::Rejected,
            HangupCause::Unreachable,
        ] {
            assert_eq!(HangupCause::from_q850(cause.q850()), cause);
        }
        assert_eq!(HangupCause::from_q850(34), HangupCause::Other(34));
    }
}

/// Recent retrieval misses on one mailbox (see `engine::pin`): those from
/// the source trying now, and those from every source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MissCounts {
    pub from_source: usize,
    pub mailbox: usize,
}
