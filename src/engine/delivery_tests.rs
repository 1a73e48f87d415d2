//! Scenario tests of the session engine on virtual time: exact offsets,
//! exact action sequences, no sleeping.

use super::*;
use crate::engine::Action;

const CALLER: &str = "caller-1";
const TARGET: &str = "target-1";

fn config() -> SessionConfig {
    SessionConfig {
        caller: CallId(CALLER.into()),
        sender_name: "Alice".into(),
        sender_number: Extension::new("1001"),
        target: Extension::new("1002"),
        origin: OriginateId("m1".into()),
        capture_path: "/data/m1.sln192".into(),
        capture_format: AudioFormat::Slin {
            sample_rate: 192_000,
        },
        listen_path: "/data/m1.listen.sln".into(),
        ring_timeout: Duration::from_secs(30),
        max_message: Duration::from_secs(120),
        min_play_samples: 800,
        menu_timeout: Duration::from_secs(8),
        stream: false,
    }
}

struct Run {
    session: Delivery,
    t0: Instant,
}

impl Run {
    fn new() -> Self {
        let t0 = Instant::now();
        Self {
            session: Delivery::start(config(), t0),
            t0,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn input(&mut self, ms: u64, input: Input) -> Vec<Action> {
        let now = self.at(ms);
        self.session.handle_input(now, input);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }
}

fn caller() -> CallId {
    CallId(CALLER.into())
}

fn target() -> CallId {
    CallId(TARGET.into())
}

fn plays(actions: &[Action]) -> Vec<(CallId, Media, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Play { call, request } => {
                Some((call.clone(), request.media.clone(), request.from_sample))
            }
            _ => None,
        })
        .collect()
}

fn listen_media() -> Media {
    Media::File {
        path: "/data/m1.listen.sln".into(),
        format: AudioFormat::Slin { sample_rate: 8000 },
    }
}

fn finished(at: u64, key: Option<char>) -> Input {
    Input::PlaybackFinished {
        call: target(),
        stopped_at_sample: at,
        interrupted_by: key,
    }
}

#[test]
fn start_answers_beeps_records_and_rings_at_once() {
    let mut run = Run::new();
    let actions = run.drain();
    assert!(
        matches!(&actions[0], Action::StartRecording { call, request }
        if *call == caller() && request.path.ends_with("m1.sln192") && request.max_duration == Duration::from_secs(120)),
        "the recording is attached before the answer: the first word is in it"
    );
    assert_eq!(actions[1], Action::Answer(caller()));
    assert_eq!(
        plays(&actions),
        vec![(caller(), Media::Sound("beep".into()), 0)]
    );
    let originate = actions.iter().find_map(|a| match a {
        Action::Originate(o) => Some(o.clone()),
        _ => None,
    });
    let originate = originate.expect("the target is rung at once");
    assert_eq!(
        (
            originate.target.as_str(),
            originate.caller_id_name.as_str(),
            originate.caller_id_number.as_str()
        ),
        ("1002", "IVM Alice", "1001")
    );
    assert!(actions.contains(&Action::MessageState(MessageState::Recording)));
    assert!(actions.contains(&Action::StartTimer {
        id: TimerId::MaxMessage,
        at: run.at(120_000)
    }));
}

#[test]
fn answer_three_seconds_in_plays_from_the_first_sample_and_chains_exactly() {
    let mut run = Run::new();
    run.drain();
    // 3 s of speech are in the listen stream when the target answers.
    run.input(2_900, Input::ListenGrew { samples: 23_200 });
    let actions = run.input(
        3_000,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    assert_eq!(
        plays(&actions),
        vec![
            (caller(), Media::Sound("accepted".into()), 0),
            (target(), listen_media(), 0)
        ],
        "the caller hears 'accepted', the target the message from sample 0"
    );
    // The play ran to the end of what was on disk, which had grown meanwhile.
    run.input(5_000, Input::ListenGrew { samples: 40_160 });
    let actions = run.input(5_900, finished(39_360, None));
    assert_eq!(
        plays(&actions),
        vec![(target(), listen_media(), 39_360)],
        "continue exactly where it stopped"
    );
    // Too little ahead to be worth a play: wait for more.
    let actions = run.input(6_000, finished(39_900, None));
    assert!(plays(&actions).is_empty());
    let actions = run.input(6_100, Input::ListenGrew { samples: 40_699 });
    assert!(
        plays(&actions).is_empty(),
        "799 samples ahead is below the minimum"
    );
    let actions = run.input(6_110, Input::ListenGrew { samples: 40_700 });
    assert_eq!(plays(&actions), vec![(target(), listen_media(), 39_900)]);
}

#[test]
fn a_late_report_never_moves_the_listener_backwards() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 16_000 });
    run.input(
        100,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(1_000, Input::ListenGrew { samples: 32_000 });
    let actions = run.input(2_000, finished(24_000, None));
    assert_eq!(plays(&actions), vec![(target(), listen_media(), 24_000)]);
    run.input(2_500, Input::ListenGrew { samples: 48_000 });
    let actions = run.input(3_000, finished(20_000, None));
    assert_eq!(plays(&actions), vec![(target(), listen_media(), 24_000)]);
}

#[test]
fn end_of_recording_plays_the_tail_then_offers_the_menu() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 8_000 });
    run.input(
        500,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(
        900,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    let actions = run.input(1_000, Input::RecordingDone { samples: 8_300 });
    assert!(actions.contains(&Action::MessageState(MessageState::Complete)));
    let actions = run.input(1_500, finished(8_000, None));
    assert_eq!(
        plays(&actions),
        vec![(target(), listen_media(), 8_000)],
        "the last 300 samples still play"
    );
    let actions = run.input(1_600, finished(8_300, None));
    assert!(actions.contains(&Action::DeliveryState {
        state: DeliveryState::Heard,
        position: 8_300
    }));
    assert_eq!(
        plays(&actions),
        vec![(target(), Media::Sound("listener-menu".into()), 0)]
    );
    // 4 saves, then the goodbye prompt ends the call.
    let actions = run.input(2_000, finished(0, Some('4')));
    assert_eq!(
        plays(&actions),
        vec![(target(), Media::Sound("message-saved".into()), 0)]
    );
    let actions = run.input(3_000, finished(0, None));
    assert_eq!(actions, vec![Action::Hangup(target(), HangupCause::Normal)]);
    let actions = run.input(
        3_100,
        Input::HungUp {
            call: target(),
            cause: HangupCause::Normal,
        },
    );
    assert_eq!(actions, vec![Action::Done]);
    assert!(run.session.is_done());
}

#[test]
fn replay_starts_again_from_zero() {
    let mut run = Run::new();
    run.input(0, Input::RecordingDone { samples: 4_000 });
    run.input(
        10,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    run.input(
        20,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(600, finished(4_000, None));
    let actions = run.input(700, finished(0, Some('1')));
    assert_eq!(plays(&actions), vec![(target(), listen_media(), 0)]);
}

#[test]
fn no_answer_stores_the_message_unheard_and_hands_it_to_notifications() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(
        30_000,
        Input::OriginateFailed {
            origin: OriginateId("m1".into()),
            cause: HangupCause::NoAnswer,
        },
    );
    assert!(actions.contains(&Action::DeliveryState {
        state: DeliveryState::Unheard,
        position: 0
    }));
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unheard
    }));
    assert!(
        plays(&actions).is_empty(),
        "no reject tone for a plain no-answer"
    );
    // The caller keeps talking and hangs up; then the session is over.
    run.input(
        40_000,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    let actions = run.input(40_100, Input::RecordingDone { samples: 320_000 });
    assert!(actions.contains(&Action::MessageState(MessageState::Complete)));
    assert_eq!(actions.last(), Some(&Action::Done));
}

#[test]
fn reject_plays_the_reject_tone_to_the_caller_and_says_rejected() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(
        2_000,
        Input::OriginateFailed {
            origin: OriginateId("m1".into()),
            cause: HangupCause::Rejected,
        },
    );
    assert_eq!(
        plays(&actions),
        vec![(caller(), Media::Sound("rejected".into()), 0)]
    );
    assert!(actions.contains(&Action::DeliveryState {
        state: DeliveryState::Rejected,
        position: 0
    }));
    assert!(actions.contains(&Action::TellSenderRejected));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::NotHeard { .. })),
        "nothing goes to a target who rejected"
    );
    assert_eq!(run.session.delivery_state(), DeliveryState::Rejected);
}

#[test]
fn full_duplex_key_from_the_listener_stops_recording_and_bridges() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 8_000 });
    run.input(
        100,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    let actions = run.input(800, finished(5_600, Some('5')));
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::StopRecording(_) | Action::Bridge(..)))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            Action::StopRecording(caller()),
            Action::Bridge(caller(), target())
        ],
        "recording runs until the bridge starts"
    );
    // Either side hanging up ends the other.
    let actions = run.input(
        5_000,
        Input::HungUp {
            call: target(),
            cause: HangupCause::Normal,
        },
    );
    assert_eq!(actions, vec![Action::Hangup(caller(), HangupCause::Normal)]);
}

#[test]
fn full_duplex_key_from_the_caller_works_too() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 8_000 });
    run.input(
        100,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    let actions = run.input(
        500,
        Input::Dtmf {
            call: caller(),
            digit: '5',
        },
    );
    assert!(actions.contains(&Action::Bridge(caller(), target())));
}

#[test]
fn hash_from_the_caller_ends_the_message() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(
        4_000,
        Input::Dtmf {
            call: caller(),
            digit: '#',
        },
    );
    assert_eq!(
        actions,
        vec![
            Action::StopRecording(caller()),
            Action::Hangup(caller(), HangupCause::Normal)
        ]
    );
}

#[test]
fn maximum_length_stops_the_recording_with_a_prompt_then_hangs_up() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(120_000, Input::Timer(TimerId::MaxMessage));
    assert_eq!(actions[0], Action::StopRecording(caller()));
    assert_eq!(
        plays(&actions),
        vec![(caller(), Media::Sound("message-too-long".into()), 0)]
    );
    let actions = run.input(
        121_000,
        Input::PlaybackFinished {
            call: caller(),
            stopped_at_sample: 0,
            interrupted_by: None,
        },
    );
    assert_eq!(actions, vec![Action::Hangup(caller(), HangupCause::Normal)]);
}

#[test]
fn listener_hanging_up_midway_is_unheard_with_its_position() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 16_000 });
    run.input(
        100,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(1_000, finished(7_000, None));
    let actions = run.input(
        1_100,
        Input::HungUp {
            call: target(),
            cause: HangupCause::Normal,
        },
    );
    assert!(actions.contains(&Action::DeliveryState {
        state: DeliveryState::Unheard,
        position: 7_000
    }));
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unheard
    }));
}

#[test]
fn menu_times_out_with_goodbye() {
    let mut run = Run::new();
    run.input(0, Input::RecordingDone { samples: 800 });
    run.input(
        1,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    run.input(
        2,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(200, finished(800, None));
    let actions = run.input(1_000, finished(0, None));
    assert_eq!(
        actions,
        vec![Action::StartTimer {
            id: TimerId::Menu,
            at: run.at(9_000)
        }]
    );
    let actions = run.input(9_000, Input::Timer(TimerId::Menu));
    assert_eq!(
        plays(&actions),
        vec![(target(), Media::Sound("goodbye".into()), 0)]
    );
}

#[test]
fn events_for_other_calls_and_originates_are_ignored() {
    let mut run = Run::new();
    run.drain();
    assert!(
        run.input(
            10,
            Input::Answered {
                origin: OriginateId("other".into()),
                call: target()
            }
        )
        .is_empty()
    );
    assert!(
        run.input(
            10,
            Input::HungUp {
                call: CallId("x".into()),
                cause: HangupCause::Normal
            }
        )
        .is_empty()
    );
    assert!(run.input(10, finished(5, None)).is_empty());
    assert_eq!(run.session.delivery_state(), DeliveryState::Ringing);
}

#[test]
fn ring_timeout_backstop_when_the_switch_never_answers() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(35_000, Input::Timer(TimerId::RingBackstop));
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unheard
    }));
}

/// The caller has gone, the whole message played: the menu is said.
fn at_the_menu() -> Run {
    let mut run = Run::new();
    run.input(0, Input::RecordingDone { samples: 800 });
    run.input(
        1,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    run.input(
        2,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    let actions = run.input(200, finished(800, None));
    assert_eq!(
        plays(&actions),
        vec![(target(), Media::Sound("listener-menu".into()), 0)]
    );
    run
}

#[test]
fn reply_from_the_menu_hands_the_listeners_call_over_to_a_message_back() {
    let mut run = at_the_menu();
    let actions = run.input(1_000, finished(0, Some(keys::REPLY)));
    assert_eq!(
        actions,
        vec![
            Action::Reply {
                call: target(),
                from: Extension::new("1002"),
                to: Extension::new("1001"),
            },
            Action::Done
        ]
    );
}

#[test]
fn call_back_from_the_menu_connects_the_listener_to_the_sender() {
    let mut run = at_the_menu();
    run.input(1_000, finished(0, None));
    let actions = run.input(
        2_000,
        Input::Dtmf {
            call: target(),
            digit: keys::CALL_BACK,
        },
    );
    assert_eq!(
        actions,
        vec![
            Action::CallBack {
                call: target(),
                to: Extension::new("1001"),
            },
            Action::Done
        ]
    );
}

#[test]
fn delete_from_the_menu_says_so_then_hangs_up_as_deleted() {
    let mut run = at_the_menu();
    let actions = run.input(1_000, finished(0, Some(keys::DELETE)));
    assert_eq!(
        actions,
        vec![
            Action::DeliveryState {
                state: DeliveryState::Deleted,
                position: 800
            },
            Action::Play {
                call: target(),
                request: PlayRequest::sound("message-deleted", "")
            }
        ]
    );
    let actions = run.input(2_000, finished(0, None));
    assert_eq!(actions, vec![Action::Hangup(target(), HangupCause::Normal)]);
    let actions = run.input(
        2_100,
        Input::HungUp {
            call: target(),
            cause: HangupCause::Normal,
        },
    );
    assert_eq!(actions, vec![Action::Done]);
    assert_eq!(run.session.delivery_state(), DeliveryState::Deleted);
}
