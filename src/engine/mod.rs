//! The call engine: every decision on a call, as pure state machines on
//! virtual time. One flow per kind of call:
//!
//! * [`delivery::Delivery`] — one instant voice message (S2): answer and
//!   beep, record while ringing, chain plays of the listen stream from the
//!   true stop position, the full-duplex key, not-answered hand-off;
//! * [`retrieval::Retrieval`] — `*55` + code, `*55` alone (newest unheard,
//!   then the next) and the answered missed call (S4), with the PIN
//!   dialogue and the lock-out decision of [`pin`];
//! * [`announcement::Announcement`] — answer, say one prompt, hang up (a
//!   call `ivm` cannot serve);
//!
//! and one listener menu ([`menu::Menu`]) that delivery and retrieval both
//! embed; [`dial`] decides which flow a dialled call (or a reply from the
//! menu) gets.
//!
//! Each flow has the same shape ([`Flow`]): `handle_input(now, Input)` /
//! `poll_action()`. Timers are inputs ([`Input::Timer`]) the flow asked for
//! with [`Action::StartTimer`]; data from the store comes back as inputs
//! answering the action that asked for it. A new flow (group fan-out, push
//! when available, floor control) is one more `Flow` over the same
//! `Input`/`Action` words, run by the server's one `drive` loop.
//!
//! Owns: every call decision. Must not know: any switch's syntax, sockets,
//! files, SQLite or the clock (`tests/engine_purity.rs` checks the imports).

pub mod announcement;
pub mod delivery;
pub mod dial;
pub mod intro;
pub mod menu;
pub mod pin;
pub mod presence;
pub mod retrieval;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::domain::{
    CallId, DeliveryRules, Extension, ExternalReach, HangupCause, MessageCode, MessageId,
    OriginateId, OriginateRequest, PlayRequest, Presence, RecordRequest, UserId,
};
pub use crate::domain::{DeliveryState, MessageState};

pub use delivery::{Delivery, SessionConfig};

/// Samples per second of the listen stream and of stored messages.
pub const LISTEN_RATE: u32 = 8000;

/// Sounds the engine plays, by name in `sounds/`.
pub mod sounds {
    pub const BEEP: &str = "beep";
    pub const ACCEPTED: &str = "accepted";
    pub const REJECTED: &str = "rejected";
    pub const MENU: &str = "listener-menu";
    pub const SAVED: &str = "message-saved";
    pub const DELETED: &str = "message-deleted";
    pub const TOO_LONG: &str = "message-too-long";
    pub const GOODBYE: &str = "goodbye";
    pub const INVALID: &str = "invalid-number";
    pub const TOO_MANY: &str = "too-many-messages";
    /// `ivm` carries as many messages as it may: "busy, try again later".
    pub const TRY_LATER: &str = "try-later";
    pub const NO_MESSAGES: &str = "no-messages";
    pub const ERROR: &str = "error";
    /// The message could not be stored (disk full, a write error): "Your
    /// message could not be recorded."
    pub const NOT_RECORDED: &str = "not-recorded";
    /// What the caller hears when the message was stored instead of heard.
    pub const NOT_ANSWERED_STORED: &str = "not-answered-stored";
    pub const NOT_AVAILABLE_STORED: &str = "not-available-stored";
    pub const BUSY_STORED: &str = "busy-stored";
    pub const DND_STORED: &str = "dnd-stored";
    /// Confirmations of the presence star codes.
    pub const DND_ON: &str = "dnd-on";
    pub const AWAY_ON: &str = "away-on";
    pub const AVAILABLE: &str = "available";
    /// `*78`: group messages are not built yet.
    pub const GROUPS_OFF: &str = "groups-not-enabled";
    /// Before the first message of a push when available.
    pub const NEW_MESSAGES: &str = "new-messages";
    /// The intro of a retrieved message starts with it ([`super::intro`]).
    pub const MESSAGE_FROM: &str = "message-from";
}

/// Keys. The full-duplex key works for either side while both are on.
pub mod keys {
    pub const FULL_DUPLEX: char = '5';
    pub const END_MESSAGE: char = '#';
    pub const REPLAY: char = '1';
    pub const REPLY: char = '2';
    pub const CALL_BACK: char = '3';
    pub const SAVE: char = '4';
    pub const DELETE: char = '7';
}

/// A wake-up a flow asked for. A flow holds at most one of each; asking
/// again moves it. A timer that fires late or after its reason went away
/// is ignored by the flow, so the server needs no cancelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The caller reached the maximum message length.
    MaxMessage,
    /// The switch never reported the end of the ringing.
    RingBackstop,
    /// No key after the listener menu's prompt.
    Menu,
    /// No `extension * PIN #` in time.
    Pin,
    /// A prompt that never reported its end.
    Prompt,
}

/// A PIN as keyed: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(pub String);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// A message a listener may retrieve, as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub sender: Extension,
    /// The stored 8 kHz signed linear message (it grows while recorded).
    pub path: PathBuf,
    /// Still being recorded.
    pub recording: bool,
    /// Where its target stood with it.
    pub delivery_state: DeliveryState,
    /// How long ago it was left (for the intro: "five minutes ago").
    pub age: Duration,
}

/// What a retrieval asks the store for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The message addressed to the user under this code.
    Code(MessageCode),
    /// The user's newest message not heard yet, except those already played.
    NewestUnheard { skip: Vec<MessageId> },
}

/// Why a retrieval attempt counts against a user (see [`pin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The caller's own number has no message under that code.
    NoSuchCode,
    /// The PIN did not match.
    WrongPin,
    /// After a right PIN, the user has no message under that code.
    NoSuchCodeForUser,
}

/// Everything a flow hears: switch events for its calls (routed by the
/// server), the media pump's progress, answers from the store, timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Answered {
        origin: OriginateId,
        call: CallId,
    },
    OriginateFailed {
        origin: OriginateId,
        cause: HangupCause,
    },
    HungUp {
        call: CallId,
        cause: HangupCause,
    },
    Dtmf {
        call: CallId,
        digit: char,
    },
    PlaybackFinished {
        call: CallId,
        stopped_at_sample: u64,
        interrupted_by: Option<char>,
    },
    /// The audio being played (the listen stream, or a stored message
    /// still recorded) now holds this many samples.
    ListenGrew {
        samples: u64,
    },
    /// That audio is complete and holds this many samples.
    RecordingDone {
        samples: u64,
    },
    /// The caller's live stream broke off (not a hang-up): the message
    /// holds these samples and is partial.
    RecordingCut {
        samples: u64,
    },
    /// The message could not be written (disk full, a write error): what
    /// reached the disk (`samples`) is kept, nothing more will be stored.
    RecordingFailed {
        samples: u64,
    },
    /// A live stream to `call` ([`Action::StreamListener`]) ended, asked
    /// or not; `position` is how far into the recording it got (samples;
    /// pauses it dropped count as heard).
    StreamEnded {
        call: CallId,
        position: u64,
    },
    /// The answer to [`Action::Lookup`]: the message (if any), whether the
    /// user exists, and the recent misses on the user's mailbox before
    /// this lookup (see [`pin`]).
    Found {
        message: Option<StoredMessage>,
        user_known: bool,
        recent_misses: crate::domain::MissCounts,
    },
    /// The answer to [`Action::VerifyPin`] (`ok` is false, unchecked, when
    /// the counts before the attempt lock it out).
    PinChecked {
        ok: bool,
        recent_misses: crate::domain::MissCounts,
    },
    /// The answer to [`Action::LookupReachability`]: the target's presence
    /// and rules (defaults for a target that is no user).
    Reachability {
        presence: Presence,
        rules: DeliveryRules,
    },
    /// The answer to [`Action::LookupExternal`]: what the external lookup
    /// says of the number (`Unknown` when it is not configured, slow,
    /// dead or answered nonsense).
    ExternalReachability {
        state: ExternalReach,
    },
    /// A wake-up asked for with [`Action::StartTimer`].
    Timer(TimerId),
}

/// Everything a flow asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    // --- the switch ---
    Answer(CallId),
    Play {
        call: CallId,
        request: PlayRequest,
    },
    StartRecording {
        call: CallId,
        request: RecordRequest,
    },
    StopRecording(CallId),
    /// Live media (`stream` mode): carry the caller's audio through ivm —
    /// recorded as it arrives, prompts to the caller played in the same
    /// stream, keys reported as [`Input::Dtmf`]. `StopRecording` ends it;
    /// then the call takes switch commands again.
    StreamCaller(CallId),
    /// Live media: one continuous stream of the recording to `call` from
    /// sample `from`, catching up to live; [`Input::StreamEnded`] reports
    /// its end (the whole message played, `StopStream`, or a hang-up).
    StreamListener {
        call: CallId,
        from: u64,
    },
    /// End the live stream to `call` now; the call takes switch commands
    /// again.
    StopStream(CallId),
    Originate(OriginateRequest),
    Bridge(CallId, CallId),
    Hangup(CallId, HangupCause),
    /// Connect the call to `to` as a plain call through the switch's own
    /// routing (the listener's "call back").
    CallBack {
        call: CallId,
        to: Extension,
    },
    /// Hand the call over to a new instant message from `from` to `to`
    /// (the listener's "reply"): the call becomes that message's caller.
    Reply {
        call: CallId,
        from: Extension,
        to: Extension,
    },

    // --- the message of a delivery (the server knows which) ---
    /// Persist the message's state.
    MessageState(MessageState),
    /// Persist the delivery's state and how far the listener got (samples
    /// of the listen stream).
    DeliveryState {
        state: DeliveryState,
        position: u64,
    },
    /// Where the listener is: the server's catch-up needs it. `since` is
    /// when the current play started from `position` (None: not playing).
    ListenerAt {
        position: u64,
        since: Option<Instant>,
    },
    /// Ask the store for the target's presence and rules;
    /// [`Input::Reachability`] answers.
    LookupReachability {
        user: UserId,
    },
    /// Ask the external (HLR-style) lookup about a number outside the PBX;
    /// [`Input::ExternalReachability`] answers, within the lookup's own
    /// timeout.
    LookupExternal {
        number: Extension,
    },
    /// The message was not heard live (unheard, busy, unreachable): notify
    /// the target by their channels, or by the lamp alone when `quiet`
    /// (do-not-disturb).
    NotHeard {
        state: DeliveryState,
        quiet: bool,
    },
    /// The target rejected the message: nothing goes to the target; the
    /// sender is told (if `[notify] sender_status` says so).
    TellSenderRejected,

    // --- stored messages (retrieval) ---
    /// Ask the store; [`Input::Found`] answers. `source`: who asks (the
    /// caller's endpoint or number); a lookup by code is checked against
    /// the lock-out and counted as a miss on `user`'s mailbox from `source`
    /// until it finds the message, in one step (see [`pin`]).
    Lookup {
        user: UserId,
        query: Query,
        source: Extension,
    },
    /// Ask the store; [`Input::PinChecked`] answers. Checked against the
    /// lock-out and counted as a miss from `source` until it matches, in
    /// one step.
    VerifyPin {
        user: UserId,
        pin: Pin,
        source: Extension,
    },
    /// A miss against `user` (the server counted it with the attempt; it
    /// logs it).
    CountMiss {
        user: UserId,
        miss: Miss,
    },
    /// `user` is locked out (log it; the flow says so and hangs up).
    LockedOut {
        user: UserId,
    },
    /// Report this message's growth with [`Input::ListenGrew`] and its end
    /// with [`Input::RecordingDone`], until `Unwatch`.
    Watch {
        message: MessageId,
        path: PathBuf,
    },
    Unwatch,
    /// Set a stored delivery's state (and the user's lamp).
    SetDeliveryState {
        message: MessageId,
        target: UserId,
        state: DeliveryState,
    },
    /// The listener kept the message (its state is `heard` already): noted
    /// in the log.
    Saved {
        message: MessageId,
        target: UserId,
    },
    /// Tell the sender their message was heard after all.
    TellSenderHeard {
        message: MessageId,
        sender: Extension,
        target: UserId,
    },

    // --- the flow itself ---
    StartTimer {
        id: TimerId,
        at: Instant,
    },
    /// Nothing more will happen; the server may drop the flow.
    Done,
}

/// The shape of every flow.
pub trait Flow {
    fn handle_input(&mut self, now: Instant, input: Input);
    fn poll_action(&mut self) -> Option<Action>;
    fn is_done(&self) -> bool;
}

fn sound(name: &str, interrupt_digits: &str) -> PlayRequest {
    PlayRequest::sound(name, interrupt_digits)
}
