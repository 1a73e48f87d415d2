//! Retrieval (S4): `*55` + code plays that message, live if it is still
//! being recorded; `*55` alone plays the newest unheard message, then the
//! next; an answered missed call plays the message it announced. After each
//! message played to its end: the listener menu.
//!
//! Who may retrieve: the addressed target only. A caller is the user whose
//! number the caller ID shows, and codes are looked up per target, so a code
//! of someone else's message finds nothing. From another phone the caller
//! keys `extension * PIN #` after the beep ([`super::pin`]); misses count
//! against the user and too many lock them out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::menu::{Choice, Menu};
use super::pin::{self, Entry, PinEntry};
use super::{
    Action, Flow, Input, LISTEN_RATE, Miss, Query, StoredMessage, TimerId, intro, sound, sounds,
};
use crate::domain::{
    CallId, DeliveryState, Extension, HangupCause, Media, MessageCode, MessageId, MissCounts,
    PlayRequest, UserId,
};
use crate::media::AudioFormat;

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `*55` + code.
    Code(MessageCode),
    /// `*55` alone: the newest unheard, then the next.
    NewestUnheard,
    /// The target answered a missed call that announced this message.
    Announced { user: UserId, code: MessageCode },
    /// `ivm` called the user because they became available: their newest
    /// unheard message, then the next (the call is answered already).
    Pushed { user: UserId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalConfig {
    pub call: CallId,
    /// Who the switch vouches the caller is: the user, unless they key
    /// another with a PIN. Empty when the switch cannot vouch: then every
    /// retrieval asks for extension * PIN.
    pub caller: Extension,
    /// Where the attempts come from, for the lock-out counts: the vouched
    /// endpoint, else the caller-ID number marked as such (so that it can
    /// never pass for the mailbox's own phone).
    pub source: Extension,
    pub request: Request,
    /// While a message is still recorded, play once this much more is on
    /// disk (each play ends at the end of the file).
    pub min_play_samples: u64,
    pub menu_timeout: Duration,
    /// Each message (not a replay) starts with who left it and how long
    /// ago ([`super::intro`]).
    pub intro: bool,
}

/// Which lookup an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// By the caller's own number.
    Caller,
    /// By the extension the caller proved with a PIN.
    AfterPin,
    /// The message a missed call announced.
    Announced,
    /// The next unheard after one played.
    Next,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Playing {
    message: StoredMessage,
    /// A replay from the menu: the menu follows even when skipped.
    replay: bool,
    position: u64,
    playing: bool,
    samples: u64,
    complete: bool,
    /// A play that made no progress at this length: wait for more.
    stalled_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Looking(Stage),
    /// The beep before `extension * PIN #` is playing.
    PinBeep(PinEntry),
    Pin(PinEntry),
    CheckingPin,
    /// The beep that marks where a message starts (after the intro, if
    /// any): `rest` are the prompts still to play before the message.
    Beep {
        message: StoredMessage,
        replay: bool,
        rest: VecDeque<&'static str>,
    },
    Playing(Playing),
    Menu {
        message: StoredMessage,
        menu: Menu,
    },
    /// "Saved" or "deleted" is playing; then the next message.
    Confirming,
    /// The last prompt is playing; then hang up.
    Ending,
    Ended,
}

#[derive(Debug)]
pub struct Retrieval {
    config: RetrievalConfig,
    /// Whose messages: the caller, or the user proved by PIN or announced.
    user: UserId,
    played: Vec<MessageId>,
    step: Step,
    watching: bool,
    done: bool,
    actions: VecDeque<Action>,
}

impl Retrieval {
    pub fn start(config: RetrievalConfig) -> Self {
        let (user, stage, query) = match &config.request {
            Request::Code(code) => (
                config.caller.clone(),
                Stage::Caller,
                Query::Code(code.clone()),
            ),
            Request::NewestUnheard => (
                config.caller.clone(),
                Stage::Caller,
                Query::NewestUnheard { skip: Vec::new() },
            ),
            Request::Announced { user, code } => {
                (user.clone(), Stage::Announced, Query::Code(code.clone()))
            }
            // Nothing (left) to play ends the call with "goodbye".
            Request::Pushed { user } => (
                user.clone(),
                Stage::Next,
                Query::NewestUnheard { skip: Vec::new() },
            ),
        };
        let mut flow = Self {
            user: user.clone(),
            played: Vec::new(),
            step: Step::Looking(stage),
            watching: false,
            done: false,
            actions: VecDeque::new(),
            config,
        };
        if stage == Stage::Caller {
            // A missed call or a push is answered by the switch already.
            flow.push(Action::Answer(flow.config.call.clone()));
        }
        let source = flow.config.source.clone();
        flow.push(Action::Lookup {
            user,
            query,
            source,
        });
        flow
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn call(&self) -> CallId {
        self.config.call.clone()
    }

    /// What to look up now: the code, or the newest unheard not played.
    fn query(&self) -> Query {
        match &self.config.request {
            Request::Code(code) | Request::Announced { code, .. } => Query::Code(code.clone()),
            Request::NewestUnheard | Request::Pushed { .. } => Query::NewestUnheard {
                skip: self.played.clone(),
            },
        }
    }

    fn by_code(&self) -> bool {
        !matches!(
            self.config.request,
            Request::NewestUnheard | Request::Pushed { .. }
        )
    }

    /// Say `prompt`, then hang up.
    fn end_with(&mut self, prompt: &str) {
        self.unwatch();
        self.push(Action::Play {
            call: self.call(),
            request: sound(prompt, ""),
        });
        self.step = Step::Ending;
    }

    fn finish(&mut self) {
        self.unwatch();
        self.step = Step::Ended;
        self.done = true;
        self.push(Action::Done);
    }

    fn unwatch(&mut self) {
        if self.watching {
            self.watching = false;
            self.push(Action::Unwatch);
        }
    }

    fn on_found(
        &mut self,
        stage: Stage,
        message: Option<StoredMessage>,
        user_known: bool,
        recent_misses: MissCounts,
    ) {
        if stage == Stage::Caller
            && pin::locked_out(
                recent_misses,
                pin::own(&self.user, self.config.caller.as_str()),
            )
        {
            self.push(Action::LockedOut {
                user: self.user.clone(),
            });
            return self.end_with(sounds::ERROR);
        }
        if let Some(message) = message {
            return self.begin(message, false);
        }
        match stage {
            Stage::Caller => {
                if !self.by_code() && user_known {
                    return self.end_with(sounds::NO_MESSAGES);
                }
                if self.by_code() {
                    self.push(Action::CountMiss {
                        user: self.user.clone(),
                        miss: Miss::NoSuchCode,
                    });
                }
                // Perhaps the user calls from another phone: extension * PIN #.
                self.push(Action::Play {
                    call: self.call(),
                    request: sound(sounds::BEEP, pin::ENTRY_DIGITS),
                });
                self.step = Step::PinBeep(PinEntry::new());
            }
            Stage::AfterPin => {
                if self.by_code() {
                    self.push(Action::CountMiss {
                        user: self.user.clone(),
                        miss: Miss::NoSuchCodeForUser,
                    });
                    self.end_with(sounds::INVALID);
                } else {
                    self.end_with(sounds::NO_MESSAGES);
                }
            }
            Stage::Announced => self.end_with(sounds::INVALID),
            Stage::Next => self.end_with(sounds::GOODBYE),
        }
    }

    fn on_entry(&mut self, entry: Entry) {
        match entry {
            Entry::Pending => {}
            Entry::Invalid => self.end_with(sounds::INVALID),
            Entry::Complete { user, pin } => {
                self.user = user.clone();
                self.push(Action::VerifyPin {
                    user,
                    pin,
                    source: self.config.source.clone(),
                });
                self.step = Step::CheckingPin;
            }
        }
    }

    fn on_pin_checked(&mut self, ok: bool, recent_misses: MissCounts) {
        let user = self.user.clone();
        if pin::locked_out(recent_misses, pin::own(&user, self.config.caller.as_str())) {
            self.push(Action::LockedOut { user });
            return self.end_with(sounds::ERROR);
        }
        if !ok {
            self.push(Action::CountMiss {
                user,
                miss: Miss::WrongPin,
            });
            return self.end_with(sounds::INVALID);
        }
        let query = self.query();
        self.push(Action::Lookup {
            user,
            query,
            source: self.config.source.clone(),
        });
        self.step = Step::Looking(Stage::AfterPin);
    }

    /// A beep marks where the message starts; then it plays. Before it,
    /// the intro: who left it and how long ago.
    fn begin(&mut self, message: StoredMessage, replay: bool) {
        // A call ivm placed says why before its first message.
        let pushed = matches!(self.config.request, Request::Pushed { .. })
            && self.played.is_empty()
            && !replay;
        let mut cues = VecDeque::new();
        if pushed {
            cues.push_back(sounds::NEW_MESSAGES);
        }
        if self.config.intro && !replay {
            cues.extend(intro::prompts(message.sender.as_str(), message.age));
            cues.push_back(sounds::BEEP);
        } else if !pushed {
            cues.push_back(sounds::BEEP);
        }
        let first = cues.pop_front().unwrap_or(sounds::BEEP);
        self.push(Action::Play {
            call: self.call(),
            request: sound(first, ""),
        });
        self.step = Step::Beep {
            message,
            replay,
            rest: cues,
        };
    }

    fn after_beep(&mut self, message: StoredMessage, replay: bool) {
        self.push(Action::Watch {
            message: message.id,
            path: message.path.clone(),
        });
        self.watching = true;
        self.step = Step::Playing(Playing {
            message,
            replay,
            position: 0,
            playing: false,
            samples: 0,
            complete: false,
            stalled_at: None,
        });
    }

    /// Start the next play if there is audio for it; at the end, the menu.
    fn feed(&mut self) {
        let Step::Playing(p) = &mut self.step else {
            return;
        };
        if p.playing {
            return;
        }
        let ahead = p.samples.saturating_sub(p.position);
        let grown = p.stalled_at.is_none_or(|at| p.samples > at);
        let enough = if p.complete {
            ahead > 0
        } else {
            ahead >= self.config.min_play_samples
        };
        if enough && grown {
            p.playing = true;
            let request = PlayRequest {
                media: Media::File {
                    path: p.message.path.clone(),
                    format: AudioFormat::Slin {
                        sample_rate: LISTEN_RATE,
                    },
                },
                from_sample: p.position,
                interrupt_digits: "#".into(),
            };
            let call = self.call();
            self.push(Action::Play { call, request });
        } else if p.complete && (ahead == 0 || !grown) {
            let (message, replay) = (p.message.clone(), p.replay);
            self.heard(message, replay);
        }
    }

    /// Played to its end: heard (the sender told, the first time); the menu.
    fn heard(&mut self, message: StoredMessage, replay: bool) {
        self.unwatch();
        if !replay {
            self.push(Action::SetDeliveryState {
                message: message.id,
                target: self.user.clone(),
                state: DeliveryState::Heard,
            });
            if message.delivery_state != DeliveryState::Heard {
                self.push(Action::TellSenderHeard {
                    message: message.id,
                    sender: message.sender.clone(),
                    target: self.user.clone(),
                });
            }
        }
        let menu = Menu::open(self.call(), self.config.menu_timeout, &mut self.actions);
        self.step = Step::Menu { message, menu };
    }

    fn on_play_ended(&mut self, stopped_at: u64, key: Option<char>) {
        let Step::Playing(p) = &mut self.step else {
            return;
        };
        p.playing = false;
        if key == Some('#') {
            let (message, replay) = (p.message.clone(), p.replay);
            self.unwatch();
            if replay {
                // Skipping a replay goes back to the menu.
                let menu = Menu::open(self.call(), self.config.menu_timeout, &mut self.actions);
                self.step = Step::Menu { message, menu };
            } else {
                self.played.push(message.id);
                self.next();
            }
            return;
        }
        if stopped_at > p.position {
            p.position = stopped_at;
            p.stalled_at = None;
        } else {
            // No progress: play again only once the file has grown.
            p.stalled_at = Some(p.samples);
        }
        self.feed();
    }

    fn on_choice(&mut self, message: StoredMessage, choice: Choice) {
        match choice {
            Choice::Replay => self.begin(message, true),
            Choice::Reply => {
                self.push(Action::Reply {
                    call: self.call(),
                    from: self.user.clone(),
                    to: message.sender,
                });
                self.finish();
            }
            Choice::CallBack => {
                self.push(Action::CallBack {
                    call: self.call(),
                    to: message.sender,
                });
                self.finish();
            }
            Choice::Save => {
                self.played.push(message.id);
                self.push(Action::Saved {
                    message: message.id,
                    target: self.user.clone(),
                });
                self.push(Action::Play {
                    call: self.call(),
                    request: sound(sounds::SAVED, ""),
                });
                self.step = Step::Confirming;
            }
            Choice::Delete => {
                self.played.push(message.id);
                self.push(Action::SetDeliveryState {
                    message: message.id,
                    target: self.user.clone(),
                    state: DeliveryState::Deleted,
                });
                self.push(Action::Play {
                    call: self.call(),
                    request: sound(sounds::DELETED, ""),
                });
                self.step = Step::Confirming;
            }
            Choice::NoKey => {
                self.played.push(message.id);
                self.next();
            }
        }
    }

    /// After a message: for `*55` alone the next unheard, else goodbye.
    fn next(&mut self) {
        if self.by_code() {
            return self.end_with(sounds::GOODBYE);
        }
        let query = self.query();
        self.push(Action::Lookup {
            user: self.user.clone(),
            query,
            source: self.config.source.clone(),
        });
        self.step = Step::Looking(Stage::Next);
    }

    fn on_input(&mut self, now: Instant, input: Input) {
        if let Input::HungUp { call, .. } = &input
            && *call == self.config.call
        {
            return self.finish();
        }
        if let Step::Menu { message, menu } = &mut self.step {
            if let Some(choice) = menu.handle_input(now, &input, &mut self.actions) {
                let message = message.clone();
                self.on_choice(message, choice);
            }
            return;
        }
        let ours = |call: &CallId| *call == self.config.call;
        match (self.step.clone(), input) {
            (
                Step::Looking(stage),
                Input::Found {
                    message,
                    user_known,
                    recent_misses,
                },
            ) => self.on_found(stage, message, user_known, recent_misses),
            (
                Step::PinBeep(mut entry),
                Input::PlaybackFinished {
                    call,
                    interrupted_by,
                    ..
                },
            ) if ours(&call) => {
                let (state, timer) = entry.beep_ended(now, interrupted_by);
                self.step = Step::Pin(entry);
                if let Some((id, at)) = timer {
                    self.push(Action::StartTimer { id, at });
                }
                self.on_entry(state);
            }
            (Step::Pin(mut entry), Input::Dtmf { call, digit }) if ours(&call) => {
                let state = entry.key(digit);
                self.step = Step::Pin(entry);
                self.on_entry(state);
            }
            (Step::Pin(entry), Input::Timer(TimerId::Pin)) => self.on_entry(entry.timer(now)),
            (Step::CheckingPin, Input::PinChecked { ok, recent_misses }) => {
                self.on_pin_checked(ok, recent_misses)
            }
            (
                Step::Beep {
                    message,
                    replay,
                    mut rest,
                },
                Input::PlaybackFinished { call, .. },
            ) if ours(&call) => match rest.pop_front() {
                Some(next) => {
                    self.push(Action::Play {
                        call,
                        request: sound(next, ""),
                    });
                    self.step = Step::Beep {
                        message,
                        replay,
                        rest,
                    };
                }
                None => self.after_beep(message, replay),
            },
            (Step::Playing(_), Input::ListenGrew { samples }) => {
                if let Step::Playing(p) = &mut self.step {
                    p.samples = p.samples.max(samples);
                }
                self.feed();
            }
            (Step::Playing(_), Input::RecordingDone { samples }) => {
                if let Step::Playing(p) = &mut self.step {
                    p.samples = p.samples.max(samples);
                    p.complete = true;
                }
                self.feed();
            }
            (
                Step::Playing(_),
                Input::PlaybackFinished {
                    call,
                    stopped_at_sample,
                    interrupted_by,
                },
            ) if ours(&call) => self.on_play_ended(stopped_at_sample, interrupted_by),
            (Step::Confirming, Input::PlaybackFinished { call, .. }) if ours(&call) => self.next(),
            (Step::Ending, Input::PlaybackFinished { call, .. }) if ours(&call) => {
                self.push(Action::Hangup(call, HangupCause::Normal));
                self.finish();
            }
            _ => {}
        }
    }
}

impl Flow for Retrieval {
    fn handle_input(&mut self, now: Instant, input: Input) {
        if !self.done {
            self.on_input(now, input);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
#[path = "retrieval_tests.rs"]
mod tests;
