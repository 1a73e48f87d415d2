//! Transcripts of retrieval: the inputs a call brings, the exact actions
//! the flow answers with. Virtual time, no sleeping.

use std::path::PathBuf;

use super::*;
use crate::engine::{Pin, keys};

const CALL: &str = "in-1";

fn call() -> CallId {
    CallId(CALL.into())
}

fn code() -> MessageCode {
    MessageCode::parse("123456").unwrap()
}

fn config(request: Request) -> RetrievalConfig {
    RetrievalConfig {
        call: call(),
        caller: Extension::new("1002"),
        source: Extension::new("1002"),
        request,
        min_play_samples: 800,
        menu_timeout: Duration::from_secs(8),
        intro: false,
    }
}

fn message(recording: bool) -> StoredMessage {
    StoredMessage {
        id: MessageId(7),
        sender: Extension::new("1001"),
        path: PathBuf::from("/data/messages/7.sln"),
        recording,
        delivery_state: DeliveryState::Unheard,
        age: Duration::from_secs(300),
    }
}

struct Run {
    flow: Retrieval,
    t0: Instant,
}

impl Run {
    fn start(request: Request) -> (Self, Vec<Action>) {
        let mut run = Self {
            flow: Retrieval::start(config(request)),
            t0: Instant::now(),
        };
        let actions = run.drain();
        (run, actions)
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn input(&mut self, ms: u64, input: Input) -> Vec<Action> {
        self.flow.handle_input(self.at(ms), input);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.flow.poll_action()).collect()
    }
}

fn ended(stopped_at: u64, key: Option<char>) -> Input {
    Input::PlaybackFinished {
        call: call(),
        stopped_at_sample: stopped_at,
        interrupted_by: key,
    }
}

fn dtmf(digit: char) -> Input {
    Input::Dtmf {
        call: call(),
        digit,
    }
}

fn found(message: Option<StoredMessage>, misses: usize) -> Input {
    Input::Found {
        message,
        user_known: true,
        recent_misses: counts(misses),
    }
}

/// `misses` from the caller's phone, none from anyone else.
fn counts(misses: usize) -> MissCounts {
    MissCounts {
        from_source: misses,
        mailbox: misses,
    }
}

fn source() -> Extension {
    Extension::new("1002")
}

fn say(name: &str, digits: &str) -> Action {
    Action::Play {
        call: call(),
        request: PlayRequest::sound(name, digits),
    }
}

fn play_file(from: u64) -> Action {
    Action::Play {
        call: call(),
        request: PlayRequest {
            media: Media::File {
                path: PathBuf::from("/data/messages/7.sln"),
                format: AudioFormat::Slin { sample_rate: 8000 },
            },
            from_sample: from,
            interrupt_digits: "#".into(),
        },
    }
}

fn watch() -> Action {
    Action::Watch {
        message: MessageId(7),
        path: PathBuf::from("/data/messages/7.sln"),
    }
}

fn bob() -> UserId {
    UserId::new("1002")
}

fn menu_timer(run: &Run, ms: u64) -> Action {
    Action::StartTimer {
        id: TimerId::Menu,
        at: run.at(ms),
    }
}

/// A message found by code plays after a beep; heard, the sender is told.
fn played_to_the_menu(run: &mut Run) {
    assert_eq!(
        run.input(10, found(Some(message(false)), 0)),
        [say("beep", "")]
    );
    assert_eq!(run.input(300, ended(800, None)), [watch()]);
    assert_eq!(
        run.input(310, Input::RecordingDone { samples: 16_000 }),
        [play_file(0)]
    );
    assert_eq!(
        run.input(2_310, ended(16_000, None)),
        [
            Action::Unwatch,
            Action::SetDeliveryState {
                message: MessageId(7),
                target: bob(),
                state: DeliveryState::Heard
            },
            Action::TellSenderHeard {
                message: MessageId(7),
                sender: Extension::new("1001"),
                target: bob()
            },
            say("listener-menu", "12347"),
        ]
    );
}

#[test]
fn by_code_answers_plays_the_message_and_saves_it_from_the_menu() {
    let (mut run, actions) = Run::start(Request::Code(code()));
    assert_eq!(
        actions,
        [
            Action::Answer(call()),
            Action::Lookup {
                user: bob(),
                query: Query::Code(code()),
                source: source()
            }
        ]
    );
    played_to_the_menu(&mut run);
    assert_eq!(
        run.input(5_000, ended(0, Some(keys::SAVE))),
        [
            Action::Saved {
                message: MessageId(7),
                target: bob()
            },
            say("message-saved", "")
        ]
    );
    assert_eq!(run.input(6_000, ended(0, None)), [say("goodbye", "")]);
    assert_eq!(
        run.input(7_000, ended(0, None)),
        [Action::Hangup(call(), HangupCause::Normal), Action::Done]
    );
    assert!(run.flow.is_done());
}

#[test]
fn a_message_still_recorded_plays_as_it_grows_and_never_repeats() {
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(Some(message(true)), 0));
    run.input(300, ended(800, None));
    assert_eq!(
        run.input(310, Input::ListenGrew { samples: 500 }),
        [],
        "too little"
    );
    assert_eq!(
        run.input(350, Input::ListenGrew { samples: 4_000 }),
        [play_file(0)]
    );
    // Played to the end of what was on disk; more arrives meanwhile.
    assert_eq!(run.input(400, Input::ListenGrew { samples: 6_000 }), []);
    assert_eq!(run.input(800, ended(4_000, None)), [play_file(4_000)]);
    // A report without progress plays again only once the file grew.
    assert_eq!(run.input(900, ended(4_000, None)), []);
    assert_eq!(
        run.input(950, Input::ListenGrew { samples: 6_500 }),
        [play_file(4_000)]
    );
    assert_eq!(run.input(1_300, ended(6_500, None)), []);
    let actions = run.input(1_400, Input::RecordingDone { samples: 7_000 });
    assert_eq!(actions, [play_file(6_500)]);
    let actions = run.input(1_500, ended(7_000, None));
    assert_eq!(actions[0], Action::Unwatch);
    assert_eq!(actions.last(), Some(&say("listener-menu", "12347")));
}

#[test]
fn skipping_with_hash_is_not_heard_and_by_code_says_goodbye() {
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(Some(message(false)), 0));
    run.input(300, ended(800, None));
    run.input(310, Input::RecordingDone { samples: 16_000 });
    assert_eq!(
        run.input(1_000, ended(3_000, Some('#'))),
        [Action::Unwatch, say("goodbye", "")]
    );
}

#[test]
fn newest_unheard_goes_on_to_the_next_after_the_menu_times_out() {
    let (mut run, actions) = Run::start(Request::NewestUnheard);
    assert_eq!(
        actions[1],
        Action::Lookup {
            user: bob(),
            query: Query::NewestUnheard { skip: vec![] },
            source: source()
        }
    );
    played_to_the_menu(&mut run);
    assert_eq!(run.input(5_000, ended(0, None)), [menu_timer(&run, 13_000)]);
    assert_eq!(
        run.input(13_000, Input::Timer(TimerId::Menu)),
        [Action::Lookup {
            user: bob(),
            query: Query::NewestUnheard {
                skip: vec![MessageId(7)]
            },
            source: source()
        }]
    );
    assert_eq!(run.input(13_010, found(None, 0)), [say("goodbye", "")]);
}

#[test]
fn newest_unheard_with_none_says_so() {
    let (mut run, _) = Run::start(Request::NewestUnheard);
    assert_eq!(run.input(10, found(None, 0)), [say("no-messages", "")]);
}

#[test]
fn delete_marks_the_delivery_deleted_and_replay_plays_again_without_marking() {
    let (mut run, _) = Run::start(Request::Code(code()));
    played_to_the_menu(&mut run);
    assert_eq!(
        run.input(5_000, ended(0, Some(keys::REPLAY))),
        [say("beep", "")]
    );
    assert_eq!(run.input(5_300, ended(800, None)), [watch()]);
    assert_eq!(
        run.input(5_310, Input::RecordingDone { samples: 16_000 }),
        [play_file(0)]
    );
    assert_eq!(
        run.input(7_310, ended(16_000, None)),
        [Action::Unwatch, say("listener-menu", "12347")],
        "heard once is enough"
    );
    assert_eq!(
        run.input(8_000, ended(0, Some(keys::DELETE))),
        [
            Action::SetDeliveryState {
                message: MessageId(7),
                target: bob(),
                state: DeliveryState::Deleted
            },
            say("message-deleted", "")
        ]
    );
}

#[test]
fn reply_and_call_back_hand_the_call_over() {
    let (mut run, _) = Run::start(Request::Code(code()));
    played_to_the_menu(&mut run);
    assert_eq!(
        run.input(5_000, ended(0, Some(keys::REPLY))),
        [
            Action::Reply {
                call: call(),
                from: bob(),
                to: Extension::new("1001")
            },
            Action::Done
        ]
    );
    let (mut run, _) = Run::start(Request::Code(code()));
    played_to_the_menu(&mut run);
    run.input(5_000, ended(0, None));
    assert_eq!(
        run.input(6_000, dtmf(keys::CALL_BACK)),
        [
            Action::CallBack {
                call: call(),
                to: Extension::new("1001")
            },
            Action::Done
        ]
    );
}

#[test]
fn a_code_not_the_callers_counts_a_miss_then_another_phone_proves_it_with_a_pin() {
    let (mut run, _) = Run::start(Request::Code(code()));
    assert_eq!(
        run.input(10, found(None, 0)),
        [
            Action::CountMiss {
                user: bob(),
                miss: Miss::NoSuchCode
            },
            say("beep", "0123456789*#")
        ]
    );
    assert_eq!(
        run.input(300, ended(0, Some('1'))),
        [Action::StartTimer {
            id: TimerId::Pin,
            at: run.at(8_300)
        }]
    );
    for (i, digit) in "003*2468".chars().enumerate() {
        assert_eq!(run.input(400 + i as u64, dtmf(digit)), []);
    }
    assert_eq!(
        run.input(500, dtmf('#')),
        [Action::VerifyPin {
            user: UserId::new("1003"),
            pin: Pin("2468".into()),
            source: source()
        }]
    );
    assert_eq!(
        run.input(
            600,
            Input::PinChecked {
                ok: true,
                recent_misses: counts(1)
            }
        ),
        [Action::Lookup {
            user: UserId::new("1003"),
            query: Query::Code(code()),
            source: source()
        }]
    );
    assert_eq!(
        run.input(700, found(Some(message(false)), 1)),
        [say("beep", "")]
    );
}

#[test]
fn a_wrong_pin_counts_and_ends_and_no_pin_in_time_ends() {
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(None, 0));
    run.input(300, ended(0, None));
    for digit in "1003*1111#".chars() {
        run.input(400, dtmf(digit));
    }
    assert_eq!(
        run.input(
            600,
            Input::PinChecked {
                ok: false,
                recent_misses: counts(2)
            }
        ),
        [
            Action::CountMiss {
                user: UserId::new("1003"),
                miss: Miss::WrongPin
            },
            say("invalid-number", "")
        ]
    );
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(None, 0));
    run.input(300, ended(0, None));
    assert_eq!(run.input(8_299, Input::Timer(TimerId::Pin)), []);
    assert_eq!(
        run.input(8_300, Input::Timer(TimerId::Pin)),
        [say("invalid-number", "")]
    );
}

#[test]
fn locked_out_users_hear_the_error_even_with_the_right_pin() {
    let (mut run, _) = Run::start(Request::Code(code()));
    assert_eq!(
        run.input(10, found(Some(message(false)), 5)),
        [Action::LockedOut { user: bob() }, say("error", "")]
    );
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(None, 4));
    run.input(300, ended(0, None));
    for digit in "1003*2468#".chars() {
        run.input(400, dtmf(digit));
    }
    assert_eq!(
        run.input(
            600,
            Input::PinChecked {
                ok: true,
                recent_misses: counts(5)
            }
        ),
        [
            Action::LockedOut {
                user: UserId::new("1003")
            },
            say("error", "")
        ]
    );
}

#[test]
fn an_answered_missed_call_plays_its_message_without_answering_again() {
    let (mut run, actions) = Run::start(Request::Announced {
        user: bob(),
        code: code(),
    });
    assert_eq!(
        actions,
        [Action::Lookup {
            user: bob(),
            query: Query::Code(code()),
            source: source()
        }]
    );
    // Misses do not lock a call ivm placed itself out.
    played_to_the_menu(&mut run);
}

#[test]
fn hanging_up_anywhere_ends_the_flow_and_stops_watching() {
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(Some(message(true)), 0));
    run.input(300, ended(800, None));
    assert_eq!(
        run.input(
            400,
            Input::HungUp {
                call: call(),
                cause: HangupCause::Normal
            }
        ),
        [Action::Unwatch, Action::Done]
    );
    assert_eq!(run.input(500, Input::ListenGrew { samples: 9_000 }), []);
}

#[test]
fn a_push_plays_the_newest_unheard_without_answering_again() {
    let (mut run, actions) = Run::start(Request::Pushed { user: bob() });
    assert_eq!(
        actions,
        [Action::Lookup {
            user: bob(),
            query: Query::NewestUnheard { skip: Vec::new() },
            source: source()
        }]
    );
    // The intro instead of the beep, then as `*55`.
    assert_eq!(
        run.input(10, found(Some(message(false)), 0)),
        [say("new-messages", "")]
    );
    assert_eq!(run.input(300, ended(800, None)), [watch()]);
    assert_eq!(
        run.input(310, Input::RecordingDone { samples: 16_000 }),
        [play_file(0)]
    );
    let heard = run.input(2_310, ended(16_000, None));
    assert_eq!(heard.last(), Some(&say("listener-menu", "12347")));
    // No key: on to the next unheard, skipping the one just heard.
    assert_eq!(run.input(5_000, ended(0, None)), [menu_timer(&run, 13_000)]);
    assert_eq!(
        run.input(13_000, Input::Timer(TimerId::Menu)),
        [Action::Lookup {
            user: bob(),
            query: Query::NewestUnheard {
                skip: vec![MessageId(7)]
            },
            source: source()
        }]
    );
}

#[test]
fn a_push_with_nothing_left_to_play_says_goodbye() {
    let (mut run, _) = Run::start(Request::Pushed { user: bob() });
    assert_eq!(run.input(10, found(None, 0)), [say("goodbye", "")]);
}

#[test]
fn a_flood_from_other_sources_locks_them_out_but_not_the_owners_phone() {
    let flood = MissCounts {
        from_source: 0,
        mailbox: pin::MAX_MAILBOX_MISSES,
    };
    // The owner (1002) keys their own PIN on their own phone.
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(None, 0));
    run.input(300, ended(0, None));
    for digit in "1002*246802#".chars() {
        run.input(400, dtmf(digit));
    }
    assert_eq!(
        run.input(
            600,
            Input::PinChecked {
                ok: true,
                recent_misses: flood
            }
        ),
        [Action::Lookup {
            user: bob(),
            query: Query::Code(code()),
            source: source()
        }]
    );
    // The same counts lock out 1003's mailbox to this (another) phone.
    let (mut run, _) = Run::start(Request::Code(code()));
    run.input(10, found(None, 0));
    run.input(300, ended(0, None));
    for digit in "1003*246802#".chars() {
        run.input(400, dtmf(digit));
    }
    assert_eq!(
        run.input(
            600,
            Input::PinChecked {
                ok: true,
                recent_misses: flood
            }
        ),
        [
            Action::LockedOut {
                user: UserId::new("1003")
            },
            say("error", "")
        ]
    );
}

/// With the intro on: "You have new voice messages" (a push), then who
/// left the message and how long ago, the beep, the message; a replay
/// starts at the beep; the next message has its own intro.
#[test]
fn the_intro_says_who_and_how_long_ago_before_each_message_but_not_a_replay() {
    let mut flow = Retrieval::start(RetrievalConfig {
        intro: true,
        ..config(Request::Pushed { user: bob() })
    });
    let started: Vec<Action> = std::iter::from_fn(|| flow.poll_action()).collect();
    assert!(
        matches!(started.as_slice(), [Action::Lookup { .. }]),
        "{started:?}"
    );
    let t0 = Instant::now();
    let mut step = |ms: u64, input: Input| {
        flow.handle_input(t0 + Duration::from_millis(ms), input);
        std::iter::from_fn(|| flow.poll_action()).collect::<Vec<_>>()
    };
    let mut said = vec![step(10, found(Some(message(false)), 0))];
    while said.last().is_some_and(|a| a != &[watch()]) {
        said.push(step(100, ended(800, None)));
    }
    let prompts: Vec<Action> = said.into_iter().flatten().collect();
    let expected: Vec<Action> = [
        "new-messages",
        "message-from",
        "n-1",
        "n-0",
        "n-0",
        "n-1",
        "n-5",
        "minutes-ago",
        "beep",
    ]
    .iter()
    .map(|name| say(name, ""))
    .chain([watch()])
    .collect();
    assert_eq!(prompts, expected);
    assert_eq!(
        step(310, Input::RecordingDone { samples: 16_000 }),
        [play_file(0)]
    );
    let heard = step(2_310, ended(16_000, None));
    assert_eq!(heard.last(), Some(&say("listener-menu", "12347")));
    // Replay: straight to the beep.
    assert_eq!(step(3_000, ended(0, Some(keys::REPLAY))), [say("beep", "")]);
    assert_eq!(step(3_200, ended(800, None)), [watch()]);
    assert_eq!(
        step(3_210, Input::RecordingDone { samples: 16_000 }),
        [play_file(0)]
    );
    step(5_210, ended(16_000, None));
    // Skipped by `#` at the menu's end: the next message, an hour old,
    // from an outside number, gets its own intro (without "new messages").
    assert_eq!(step(6_000, ended(0, None)).len(), 1, "the menu timer");
    let next = step(14_000, Input::Timer(TimerId::Menu));
    assert!(
        matches!(next.as_slice(), [Action::Lookup { .. }]),
        "{next:?}"
    );
    let older = StoredMessage {
        id: MessageId(8),
        sender: Extension::new("5551234"),
        age: Duration::from_secs(3_600 + 59),
        ..message(false)
    };
    assert_eq!(
        step(14_010, found(Some(older), 0)),
        [say("message-from", "")]
    );
    let mut rest = Vec::new();
    for _ in 0..9 {
        rest.extend(step(14_100, ended(800, None)));
    }
    let names: Vec<&str> = rest
        .iter()
        .filter_map(|a| match a {
            Action::Play { request, .. } => match &request.media {
                Media::Sound(name) => Some(name.as_str()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "n-5", "n-5", "n-5", "n-1", "n-2", "n-3", "n-4", "n-1", "hour-ago"
        ]
    );
    assert_eq!(step(14_200, ended(800, None)), [say("beep", "")]);
}
