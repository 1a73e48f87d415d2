//! Delivery: one instant voice message, from the caller's first word to the
//! end of its live delivery, as a pure state machine on virtual time.
//!
//! Owns: every decision of S2 — answer and beep, record while ringing, when
//! to play what from which offset, catch-up into live audio, the full-duplex
//! key, what the listener's menu choices mean here, what counts as heard,
//! rejected or not answered. Inputs carry `now`; outputs are [`Action`]s
//! the server carries out.
//!
//! The listener plays the *listen stream*: an 8 kHz file the server writes
//! from the caller's recording as it reaches disk (silences compressed while
//! the listener is behind). The engine only sees its length grow
//! ([`Input::ListenGrew`]) and chains plays: each play runs to the end of
//! what is on disk and reports where it truly stopped; the next starts there.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::menu::{Choice, Menu};
use super::presence::{self, Reach, Skip};
use super::{Action, Flow, Input, LISTEN_RATE, TimerId, keys, sound, sounds};
use crate::domain::{
    CallId, DeliveryState, Extension, HangupCause, Media, MessageState, OriginateId,
    OriginateRequest, PlayRequest, RecordRequest,
};
use crate::media::AudioFormat;

#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The caller's channel, already known to the switch.
    pub caller: CallId,
    /// Who sends: shown as `IVM <name>` with this number to the target.
    pub sender_name: String,
    pub sender_number: Extension,
    /// What to ring (extension or number) and the id its answered leg
    /// will carry back.
    pub target: Extension,
    pub origin: OriginateId,
    /// Where the switch records the caller, and in which format.
    pub capture_path: PathBuf,
    pub capture_format: AudioFormat,
    /// The 8 kHz listen stream the server writes for this target.
    pub listen_path: PathBuf,
    pub ring_timeout: Duration,
    pub max_message: Duration,
    /// Do not start a play with less than this much audio ahead (unless the
    /// recording is finished): each play ends at the end of the file, so a
    /// tiny play only adds a seam.
    pub min_play_samples: u64,
    /// How long the menu waits for a key.
    pub menu_timeout: Duration,
    /// Live media: ivm carries both legs' audio itself
    /// ([`Action::StreamCaller`], [`Action::StreamListener`]) instead of
    /// recording to `capture_path` and chaining plays of `listen_path`.
    /// Positions are then samples of the recording itself.
    pub stream: bool,
    /// The target is a number outside the PBX (no user, no presence from
    /// the switch): whether it is rung is asked of the external lookup
    /// ([`Action::LookupExternal`]) instead of the store.
    pub external: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Waiting for the target's presence and rules.
    Looking,
    Ringing,
    Listening {
        call: CallId,
        position: u64,
        playing_since: Option<Instant>,
    },
    Menu(Menu),
    Bridged {
        call: CallId,
    },
    /// Playing a last prompt before hanging up; ends as `state`.
    Closing {
        call: CallId,
        state: DeliveryState,
    },
    Ended(DeliveryState),
}

/// One message's delivery. Feed it with `handle_input`, drain it with
/// `poll_action`.
#[derive(Debug)]
pub struct Delivery {
    config: SessionConfig,
    started: Instant,
    caller_connected: bool,
    recording: bool,
    recording_done: bool,
    /// A prompt was played to the caller that should end the caller's call.
    caller_closing: bool,
    listen_samples: u64,
    target: Target,
    /// How long the target is rung (their rule, else the configured time).
    ring_timeout: Duration,
    message_completed: bool,
    /// Stream mode: the key that asked the listener's stream to stop.
    stream_stop: Option<char>,
    /// Stream mode: the listener hung up mid-stream; its position comes
    /// with `StreamEnded`.
    listener_gone: bool,
    done: bool,
    actions: VecDeque<Action>,
}

impl Delivery {
    /// A caller dialled a message: answer, beep, record, and ring the target,
    /// all at once.
    pub fn start(config: SessionConfig, now: Instant) -> Self {
        let mut s = Self {
            started: now,
            caller_connected: true,
            recording: true,
            recording_done: false,
            caller_closing: false,
            listen_samples: 0,
            target: Target::Looking,
            ring_timeout: config.ring_timeout,
            message_completed: false,
            stream_stop: None,
            listener_gone: false,
            done: false,
            actions: VecDeque::new(),
            config,
        };
        let caller = s.config.caller.clone();
        if s.config.stream {
            // The stream starts with the answer's first frame; the beep
            // below is the first thing played in it.
            s.push(Action::Answer(caller.clone()));
            s.push(Action::StreamCaller(caller.clone()));
        } else {
            // Recording is attached before the answer: the caller's phone
            // starts sending the moment it is answered, and its first word
            // must be in.
            s.push(Action::StartRecording {
                call: caller.clone(),
                request: RecordRequest {
                    path: s.config.capture_path.clone(),
                    format: s.config.capture_format,
                    max_duration: s.config.max_message,
                },
            });
            s.push(Action::Answer(caller.clone()));
        }
        s.push(Action::Play {
            call: caller,
            request: sound(sounds::BEEP, ""),
        });
        s.push(Action::MessageState(MessageState::Recording));
        s.push(Action::StartTimer {
            id: TimerId::MaxMessage,
            at: now + s.config.max_message,
        });
        // S6: presence decides whether to ring at all.
        let target = s.config.target.clone();
        s.push(if s.config.external {
            Action::LookupExternal { number: target }
        } else {
            Action::LookupReachability { user: target }
        });
        s
    }

    /// The target's presence and rules are known: ring, or store at once.
    fn on_reachability(&mut self, now: Instant, reach: Reach) {
        if self.target != Target::Looking {
            return;
        }
        match reach {
            Reach::Ring(timeout) => {
                self.target = Target::Ringing;
                self.ring_timeout = timeout;
                self.push(Action::Originate(OriginateRequest {
                    id: self.config.origin.clone(),
                    target: self.config.target.as_str().to_owned(),
                    caller_id_name: format!("IVM {}", self.config.sender_name),
                    caller_id_number: self.config.sender_number.as_str().to_owned(),
                    ring_timeout: timeout,
                }));
                self.push(Action::DeliveryState {
                    state: DeliveryState::Ringing,
                    position: 0,
                });
                // The switch's own ring timeout normally ends the ringing;
                // this is the engine's backstop should its answer never come.
                self.push(Action::StartTimer {
                    id: TimerId::RingBackstop,
                    at: now + timeout + RING_GRACE,
                });
            }
            Reach::Store(skip) => self.store_without_ringing(skip),
        }
    }

    /// Not rung (offline, do-not-disturb, away, busy by rule): the message
    /// is stored whole and notified at once; the caller hears why.
    fn store_without_ringing(&mut self, skip: Skip) {
        let state = skip.state();
        self.target = Target::Ended(state);
        self.push(Action::DeliveryState { state, position: 0 });
        self.push(Action::NotHeard {
            state,
            quiet: skip.quiet(),
        });
        self.tell_caller(skip.prompt());
    }

    /// The delivery's state as it stands.
    pub fn delivery_state(&self) -> DeliveryState {
        match &self.target {
            Target::Looking => DeliveryState::Pending,
            Target::Ringing => DeliveryState::Ringing,
            Target::Listening { .. } | Target::Menu(_) | Target::Closing { .. } => {
                DeliveryState::Listening
            }
            Target::Bridged { .. } => DeliveryState::Heard,
            Target::Ended(state) => *state,
        }
    }

    fn on_input(&mut self, now: Instant, input: Input) {
        if let Target::Menu(menu) = &mut self.target {
            let choice = menu.handle_input(now, &input, &mut self.actions);
            let call = menu.call().clone();
            if let Some(choice) = choice {
                self.on_menu_choice(now, call, choice);
                return;
            }
        }
        match input {
            Input::Answered { origin, call } if origin == self.config.origin => {
                self.on_answered(now, call)
            }
            Input::Answered { .. } => {}
            Input::OriginateFailed { origin, cause } if origin == self.config.origin => {
                self.on_not_answered(cause)
            }
            Input::OriginateFailed { .. } => {}
            Input::HungUp { call, .. } => self.on_hung_up(call),
            Input::Dtmf { call, digit } => self.on_dtmf(call, digit),
            Input::PlaybackFinished {
                call,
                stopped_at_sample,
                interrupted_by,
            } => self.on_playback_finished(now, call, stopped_at_sample, interrupted_by),
            Input::ListenGrew { samples } => {
                self.listen_samples = self.listen_samples.max(samples);
                // A live stream follows the recording by itself.
                if !self.config.stream {
                    self.feed_listener(now);
                }
            }
            Input::RecordingDone { samples } => {
                self.on_recording_done(now, samples, MessageState::Complete)
            }
            Input::RecordingCut { samples } => {
                self.on_recording_done(now, samples, MessageState::Partial)
            }
            Input::RecordingFailed { samples } => self.on_recording_failed(now, samples),
            Input::StreamEnded { call, position } => self.on_stream_ended(now, call, position),
            Input::Timer(_) => self.on_timer(now),
            Input::Reachability { presence, rules } => {
                let reach = presence::decide(&presence, &rules, self.config.ring_timeout);
                self.on_reachability(now, reach);
            }
            Input::ExternalReachability { state } => {
                let reach = presence::decide_external(state, self.config.ring_timeout);
                self.on_reachability(now, reach);
            }
            Input::Found { .. } | Input::PinChecked { .. } => {}
        }
    }

    fn on_recording_done(&mut self, now: Instant, samples: u64, state: MessageState) {
        self.recording = false;
        self.recording_done = true;
        self.listen_samples = self.listen_samples.max(samples);
        if !self.message_completed {
            self.message_completed = true;
            self.push(Action::MessageState(state));
        }
        self.feed_listener(now);
    }

    /// The message cannot be stored any further (disk full, a write
    /// error): it ends `failed` with what was written; a caller still
    /// talking is told and hung up; the target, if any, hears what there is.
    fn on_recording_failed(&mut self, now: Instant, samples: u64) {
        let was_recording = self.recording;
        self.recording = false;
        self.recording_done = true;
        self.listen_samples = self.listen_samples.max(samples);
        if !self.message_completed {
            self.message_completed = true;
            self.push(Action::MessageState(MessageState::Failed));
        }
        if was_recording && self.caller_connected {
            let caller = self.config.caller.clone();
            self.push(Action::StopRecording(caller.clone()));
            self.push(Action::Play {
                call: caller,
                request: sound(sounds::NOT_RECORDED, ""),
            });
            self.caller_closing = true;
        }
        self.feed_listener(now);
    }

    /// Stream mode: the listener's stream ended; act on why.
    fn on_stream_ended(&mut self, now: Instant, call: CallId, heard: u64) {
        let Target::Listening {
            call: listener,
            position,
            playing_since: Some(_),
        } = &self.target
        else {
            return;
        };
        if *listener != call {
            return;
        }
        // Never go backwards.
        let position = heard.max(*position);
        self.target = Target::Listening {
            call: call.clone(),
            position,
            playing_since: None,
        };
        self.push(Action::ListenerAt {
            position,
            since: None,
        });
        if self.listener_gone {
            self.on_hung_up(call);
            return;
        }
        match self.stream_stop.take() {
            Some(keys::FULL_DUPLEX) => self.full_duplex(call),
            Some(_) => self.offer_menu(call, position),
            // The stream ends by itself at the end of the message; before
            // that, the recording's end (`RecordingDone`) decides.
            None if self.recording_done => self.feed_listener(now),
            None => {}
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn is_caller(&self, call: &CallId) -> bool {
        *call == self.config.caller
    }

    fn target_call(&self) -> Option<&CallId> {
        match &self.target {
            Target::Listening { call, .. }
            | Target::Bridged { call }
            | Target::Closing { call, .. } => Some(call),
            Target::Menu(menu) => Some(menu.call()),
            Target::Looking | Target::Ringing | Target::Ended(_) => None,
        }
    }

    fn on_answered(&mut self, now: Instant, call: CallId) {
        if self.target != Target::Ringing {
            // A second answer for the same originate: not ours to keep.
            self.push(Action::Hangup(call, HangupCause::Normal));
            return;
        }
        self.target = Target::Listening {
            call,
            position: 0,
            playing_since: None,
        };
        self.push(Action::DeliveryState {
            state: DeliveryState::Listening,
            position: 0,
        });
        if self.caller_connected {
            let caller = self.config.caller.clone();
            self.push(Action::Play {
                call: caller,
                request: sound(sounds::ACCEPTED, ""),
            });
        }
        self.feed_listener(now);
    }

    /// Start the next play if the listener is waiting and there is audio.
    fn feed_listener(&mut self, now: Instant) {
        let Target::Listening {
            call,
            position,
            playing_since: None,
        } = &self.target
        else {
            return;
        };
        let (call, position) = (call.clone(), *position);
        let ahead = self.listen_samples.saturating_sub(position);
        if self.config.stream {
            if self.recording_done && ahead == 0 {
                self.offer_menu(call, position);
                return;
            }
            self.target = Target::Listening {
                call: call.clone(),
                position,
                playing_since: Some(now),
            };
            self.push(Action::StreamListener {
                call,
                from: position,
            });
            self.push(Action::ListenerAt {
                position,
                since: Some(now),
            });
            return;
        }
        if ahead >= self.config.min_play_samples || (self.recording_done && ahead > 0) {
            self.target = Target::Listening {
                call: call.clone(),
                position,
                playing_since: Some(now),
            };
            let request = PlayRequest {
                media: Media::File {
                    path: self.config.listen_path.clone(),
                    format: AudioFormat::Slin {
                        sample_rate: LISTEN_RATE,
                    },
                },
                from_sample: position,
                interrupt_digits: format!("{}{}", keys::FULL_DUPLEX, keys::END_MESSAGE),
            };
            self.push(Action::Play { call, request });
            self.push(Action::ListenerAt {
                position,
                since: Some(now),
            });
        } else if self.recording_done && ahead == 0 {
            self.offer_menu(call, position);
        }
    }

    fn offer_menu(&mut self, call: CallId, position: u64) {
        self.push(Action::DeliveryState {
            state: DeliveryState::Heard,
            position,
        });
        self.target = Target::Menu(Menu::open(
            call,
            self.config.menu_timeout,
            &mut self.actions,
        ));
    }

    fn on_playback_finished(
        &mut self,
        now: Instant,
        call: CallId,
        stopped_at: u64,
        key: Option<char>,
    ) {
        if self.is_caller(&call) {
            if self.caller_closing && self.caller_connected {
                self.caller_closing = false;
                self.push(Action::Hangup(call, HangupCause::Normal));
            }
            return;
        }
        match self.target.clone() {
            Target::Listening {
                call: listener,
                position,
                playing_since: Some(_),
            } if listener == call => {
                // Never go backwards: a late report must not replay audio.
                let position = stopped_at.max(position);
                self.target = Target::Listening {
                    call: call.clone(),
                    position,
                    playing_since: None,
                };
                self.push(Action::ListenerAt {
                    position,
                    since: None,
                });
                match key {
                    Some(keys::FULL_DUPLEX) => self.full_duplex(call),
                    Some(keys::END_MESSAGE) => self.offer_menu(call, position),
                    _ => self.feed_listener(now),
                }
            }
            Target::Closing { call: listener, .. } if listener == call => {
                self.push(Action::Hangup(call, HangupCause::Normal));
            }
            _ => {}
        }
    }

    fn on_dtmf(&mut self, call: CallId, digit: char) {
        if self.is_caller(&call) {
            match digit {
                keys::END_MESSAGE if self.recording => {
                    self.push(Action::StopRecording(call.clone()));
                    self.push(Action::Hangup(call, HangupCause::Normal));
                }
                keys::FULL_DUPLEX if matches!(self.target, Target::Listening { .. }) => {
                    if let Some(target) = self.target_call().cloned() {
                        self.full_duplex(target);
                    }
                }
                _ => {}
            }
            return;
        }
        // The listener's keys during a play arrive as its interruption; in
        // a live stream they arrive as keys: stop the stream, then act.
        match self.target.clone() {
            Target::Listening {
                call: listener,
                playing_since: Some(_),
                ..
            } if listener == call
                && self.config.stream
                && self.stream_stop.is_none()
                && matches!(digit, keys::FULL_DUPLEX | keys::END_MESSAGE) =>
            {
                self.stream_stop = Some(digit);
                self.push(Action::StopStream(call));
            }
            Target::Listening {
                call: listener,
                playing_since: None,
                position,
            } if listener == call => match digit {
                keys::FULL_DUPLEX => self.full_duplex(call),
                keys::END_MESSAGE => self.offer_menu(call, position),
                _ => {}
            },
            _ => {}
        }
    }

    fn full_duplex(&mut self, target: CallId) {
        if !self.caller_connected {
            return;
        }
        let caller = self.config.caller.clone();
        // The recording runs until the bridge starts.
        if self.recording {
            self.push(Action::StopRecording(caller.clone()));
        }
        // A live stream hands the leg back before the bridge takes it.
        if let Target::Listening {
            playing_since: Some(_),
            ..
        } = &self.target
            && self.config.stream
        {
            self.push(Action::StopStream(target.clone()));
        }
        self.push(Action::Bridge(caller, target.clone()));
        self.push(Action::DeliveryState {
            state: DeliveryState::Heard,
            position: self.listen_samples,
        });
        self.target = Target::Bridged { call: target };
    }

    fn on_menu_choice(&mut self, now: Instant, call: CallId, choice: Choice) {
        match choice {
            Choice::Replay => {
                self.target = Target::Listening {
                    call,
                    position: 0,
                    playing_since: None,
                };
                self.feed_listener(now);
            }
            Choice::Reply => {
                self.target = Target::Ended(DeliveryState::Heard);
                self.push(Action::Reply {
                    call,
                    from: self.config.target.clone(),
                    to: self.config.sender_number.clone(),
                });
            }
            Choice::CallBack => {
                self.target = Target::Ended(DeliveryState::Heard);
                self.push(Action::CallBack {
                    call,
                    to: self.config.sender_number.clone(),
                });
            }
            Choice::Save => self.close_with(call, sounds::SAVED, DeliveryState::Heard),
            Choice::Delete => self.close_with(call, sounds::DELETED, DeliveryState::Deleted),
            Choice::NoKey => self.close_with(call, sounds::GOODBYE, DeliveryState::Heard),
        }
    }

    fn close_with(&mut self, call: CallId, prompt: &str, state: DeliveryState) {
        self.push(Action::DeliveryState {
            state,
            position: self.listen_samples,
        });
        self.push(Action::Play {
            call: call.clone(),
            request: sound(prompt, ""),
        });
        self.target = Target::Closing { call, state };
    }

    fn on_not_answered(&mut self, cause: HangupCause) {
        if self.target != Target::Ringing {
            return;
        }
        // S2.4: a target rejects by declining, being busy, or a reject key.
        let state = match cause {
            HangupCause::Busy | HangupCause::Rejected => DeliveryState::Rejected,
            HangupCause::Unreachable => DeliveryState::Unreachable,
            HangupCause::NoAnswer | HangupCause::Normal | HangupCause::Other(_) => {
                DeliveryState::Unheard
            }
        };
        self.end_delivery(state, 0);
        // The caller always learns what happened; they may keep talking,
        // the message is stored whole. A phone that declines usually says
        // "busy" (SIP 486): both are a rejection (S2.4) and get its tone;
        // "busy — stored" is for a target known to be on a call (presence).
        let prompt = match cause {
            HangupCause::Rejected | HangupCause::Busy => sounds::REJECTED,
            HangupCause::Unreachable => sounds::NOT_AVAILABLE_STORED,
            HangupCause::NoAnswer | HangupCause::Normal | HangupCause::Other(_) => {
                sounds::NOT_ANSWERED_STORED
            }
        };
        self.tell_caller(prompt);
    }

    /// Play `prompt` to the caller if they are still on the line.
    fn tell_caller(&mut self, prompt: &str) {
        if self.caller_connected {
            let caller = self.config.caller.clone();
            self.push(Action::Play {
                call: caller,
                request: sound(prompt, ""),
            });
        }
    }

    fn end_delivery(&mut self, state: DeliveryState, position: u64) {
        self.target = Target::Ended(state);
        self.push(Action::DeliveryState { state, position });
        match state {
            DeliveryState::Heard | DeliveryState::Deleted => {}
            DeliveryState::Rejected => self.push(Action::TellSenderRejected),
            _ => self.push(Action::NotHeard {
                state,
                quiet: false,
            }),
        }
    }

    fn on_hung_up(&mut self, call: CallId) {
        if self.is_caller(&call) {
            self.caller_connected = false;
            self.caller_closing = false;
            if let Target::Bridged { call: target } = &self.target {
                let target = target.clone();
                self.push(Action::Hangup(target, HangupCause::Normal));
                self.target = Target::Ended(DeliveryState::Heard);
            }
            return;
        }
        match self.target.clone() {
            Target::Listening {
                call: listener,
                playing_since: Some(_),
                ..
            } if listener == call && self.config.stream => {
                // How far it got comes with the stream's end.
                self.listener_gone = true;
            }
            Target::Listening {
                call: listener,
                position,
                ..
            } if listener == call => {
                let heard_all = self.recording_done && position >= self.listen_samples;
                let state = if heard_all {
                    DeliveryState::Heard
                } else {
                    DeliveryState::Unheard
                };
                self.end_delivery(state, position);
            }
            Target::Menu(menu) if *menu.call() == call => {
                self.target = Target::Ended(DeliveryState::Heard);
            }
            Target::Closing {
                call: listener,
                state,
            } if listener == call => {
                self.target = Target::Ended(state);
            }
            Target::Bridged { call: listener } if listener == call => {
                self.target = Target::Ended(DeliveryState::Heard);
                if self.caller_connected {
                    let caller = self.config.caller.clone();
                    self.push(Action::Hangup(caller, HangupCause::Normal));
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, now: Instant) {
        if self.recording && self.caller_connected && now >= self.started + self.config.max_message
        {
            let caller = self.config.caller.clone();
            self.push(Action::StopRecording(caller.clone()));
            self.push(Action::Play {
                call: caller,
                request: sound(sounds::TOO_LONG, ""),
            });
            self.caller_closing = true;
        }
        if self.target == Target::Ringing && now >= self.started + self.ring_timeout + RING_GRACE {
            self.end_delivery(DeliveryState::Unheard, 0);
            if !self.caller_closing {
                self.tell_caller(sounds::NOT_ANSWERED_STORED);
            }
        }
    }

    fn check_done(&mut self) {
        let target_over = matches!(self.target, Target::Ended(_));
        if !self.done && target_over && !self.caller_connected && self.recording_done {
            self.done = true;
            self.push(Action::Done);
        }
    }
}

/// Extra time past the ring timeout before the engine stops waiting.
const RING_GRACE: Duration = Duration::from_secs(5);

impl Flow for Delivery {
    fn handle_input(&mut self, now: Instant, input: Input) {
        if self.done {
            return;
        }
        self.on_input(now, input);
        self.check_done();
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "delivery_stream_tests.rs"]
mod stream_tests;
