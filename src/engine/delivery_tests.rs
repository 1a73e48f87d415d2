//! Scenario tests of the session engine on virtual time: exact offsets,
//! exact action sequences, no sleeping.

use super::*;
use crate::domain::{Activity, DeliveryRules, Presence, Reaction, UserStatus};
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
        external: false,
    }
}

struct Run {
    session: Delivery,
    t0: Instant,
}

impl Run {
    /// A delivery to a target whose presence says nothing: rung.
    fn new() -> Self {
        Self::with(Presence::default(), DeliveryRules::default())
    }

    fn with(presence: Presence, rules: DeliveryRules) -> Self {
        let t0 = Instant::now();
        let mut session = Delivery::start(config(), t0);
        session.handle_input(t0, Input::Reachability { presence, rules });
        Self { session, t0 }
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
        state: DeliveryState::Unheard,
        quiet: false
    }));
    assert_eq!(
        plays(&actions),
        vec![(caller(), Media::Sound("not-answered-stored".into()), 0)],
        "the caller learns the message was stored, not that it was rejected"
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
        state: DeliveryState::Unheard,
        quiet: false
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
        state: DeliveryState::Unheard,
        quiet: false
    }));
    assert_eq!(
        plays(&actions),
        vec![(caller(), Media::Sound("not-answered-stored".into()), 0)]
    );
}

#[test]
fn the_caller_hears_what_became_of_the_message_for_each_cause() {
    for (cause, prompt, state) in [
        (
            HangupCause::NoAnswer,
            "not-answered-stored",
            DeliveryState::Unheard,
        ),
        (
            HangupCause::Normal,
            "not-answered-stored",
            DeliveryState::Unheard,
        ),
        (
            HangupCause::Other(41),
            "not-answered-stored",
            DeliveryState::Unheard,
        ),
        (HangupCause::Busy, "rejected", DeliveryState::Rejected),
        (HangupCause::Rejected, "rejected", DeliveryState::Rejected),
        (
            HangupCause::Unreachable,
            "not-available-stored",
            DeliveryState::Unreachable,
        ),
    ] {
        let mut run = Run::new();
        run.drain();
        let actions = run.input(
            4_000,
            Input::OriginateFailed {
                origin: OriginateId("m1".into()),
                cause,
            },
        );
        assert_eq!(
            plays(&actions),
            vec![(caller(), Media::Sound(prompt.into()), 0)],
            "{cause:?}"
        );
        assert_eq!(run.session.delivery_state(), state, "{cause:?}");
    }
}

#[test]
fn a_caller_who_has_hung_up_hears_nothing_but_the_message_is_stored() {
    let mut run = Run::new();
    run.drain();
    run.input(
        2_000,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    let actions = run.input(
        30_000,
        Input::OriginateFailed {
            origin: OriginateId("m1".into()),
            cause: HangupCause::NoAnswer,
        },
    );
    assert!(plays(&actions).is_empty(), "no play to a call that is gone");
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unheard,
        quiet: false
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

fn presence(registered: Option<bool>, activity: Activity, status: UserStatus) -> Presence {
    Presence {
        registered,
        activity,
        status,
        ..Presence::default()
    }
}

#[test]
fn the_target_is_rung_only_once_presence_and_rules_are_known() {
    let t0 = Instant::now();
    let mut session = Delivery::start(config(), t0);
    let actions: Vec<Action> = std::iter::from_fn(|| session.poll_action()).collect();
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Originate(_))),
        "not rung before the lookup: {actions:?}"
    );
    assert_eq!(
        actions.last(),
        Some(&Action::LookupReachability {
            user: Extension::new("1002")
        })
    );
    // Answer, beep and recording do not wait for the lookup.
    assert!(actions.contains(&Action::Answer(caller())));
    assert_eq!(session.delivery_state(), DeliveryState::Pending);
    let rules = DeliveryRules {
        ring_timeout_seconds: Some(12),
        ..DeliveryRules::default()
    };
    session.handle_input(
        t0 + Duration::from_millis(3),
        Input::Reachability {
            presence: presence(Some(true), Activity::Idle, UserStatus::Available),
            rules,
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| session.poll_action()).collect();
    let Some(Action::Originate(ring)) = actions.first() else {
        panic!("rung at once: {actions:?}");
    };
    assert_eq!(ring.ring_timeout, Duration::from_secs(12), "the user's own");
    assert!(actions.contains(&Action::StartTimer {
        id: TimerId::RingBackstop,
        at: t0 + Duration::from_millis(3) + Duration::from_secs(12) + RING_GRACE
    }));
    assert_eq!(session.delivery_state(), DeliveryState::Ringing);
}

/// A target not rung: what the caller hears, the state and how it is notified.
fn not_rung(presence: Presence, rules: DeliveryRules) -> (Run, Vec<Action>) {
    let mut run = Run::with(presence, rules);
    let actions = run.drain();
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Originate(_))),
        "not rung: {actions:?}"
    );
    (run, actions)
}

#[test]
fn offline_is_not_rung_stored_and_notified_at_once_and_the_caller_hears_it() {
    let (mut run, actions) = not_rung(
        presence(Some(false), Activity::Unknown, UserStatus::Available),
        DeliveryRules::default(),
    );
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unreachable,
        quiet: false
    }));
    assert_eq!(
        plays(&actions),
        vec![
            (caller(), Media::Sound("beep".into()), 0),
            (caller(), Media::Sound("not-available-stored".into()), 0)
        ]
    );
    // The caller keeps talking; the message is kept whole.
    run.input(
        5_000,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    let actions = run.input(5_300, Input::RecordingDone { samples: 40_000 });
    assert!(actions.contains(&Action::MessageState(MessageState::Complete)));
    assert_eq!(actions.last(), Some(&Action::Done));
    assert_eq!(run.session.delivery_state(), DeliveryState::Unreachable);
}

#[test]
fn dnd_is_stored_and_notified_quietly() {
    let (run, actions) = not_rung(
        presence(Some(true), Activity::Idle, UserStatus::Dnd),
        DeliveryRules::default(),
    );
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Unheard,
        quiet: true
    }));
    assert!(plays(&actions).contains(&(caller(), Media::Sound("dnd-stored".into()), 0)));
    assert_eq!(run.session.delivery_state(), DeliveryState::Unheard);
}

#[test]
fn on_a_call_each_busy_rule() {
    let on_call = presence(Some(true), Activity::OnCall, UserStatus::Available);
    let (_, actions) = not_rung(
        on_call.clone(),
        DeliveryRules {
            busy: Reaction::Store,
            ..DeliveryRules::default()
        },
    );
    assert!(actions.contains(&Action::NotHeard {
        state: DeliveryState::Busy,
        quiet: false
    }));
    assert!(plays(&actions).contains(&(caller(), Media::Sound("busy-stored".into()), 0)));
    let mut run = Run::with(on_call, DeliveryRules::default());
    assert!(
        run.drain()
            .iter()
            .any(|a| matches!(a, Action::Originate(_))),
        "the default rings (call waiting)"
    );
}

#[test]
fn a_late_or_second_answer_to_the_lookup_changes_nothing() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(
        10,
        Input::Reachability {
            presence: presence(Some(false), Activity::Unknown, UserStatus::Dnd),
            rules: DeliveryRules::default(),
        },
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(run.session.delivery_state(), DeliveryState::Ringing);
}

/// A delivery to a number outside the PBX, its lookup answered `state`.
fn external(state: crate::domain::ExternalReach) -> (Delivery, Vec<Action>) {
    let t0 = Instant::now();
    let config = SessionConfig {
        target: Extension::new("004915551234"),
        external: true,
        ..config()
    };
    let mut session = Delivery::start(config, t0);
    let first: Vec<Action> = std::iter::from_fn(|| session.poll_action()).collect();
    assert_eq!(
        first.last(),
        Some(&Action::LookupExternal {
            number: Extension::new("004915551234")
        }),
        "an outside number is asked of the external lookup, not the store"
    );
    assert!(
        !first
            .iter()
            .any(|a| matches!(a, Action::Originate(_) | Action::LookupReachability { .. }))
    );
    session.handle_input(
        t0 + Duration::from_millis(5),
        Input::ExternalReachability { state },
    );
    let actions = std::iter::from_fn(|| session.poll_action()).collect();
    (session, actions)
}

#[test]
fn an_external_number_the_lookup_calls_reachable_or_unknown_is_rung() {
    use crate::domain::ExternalReach;
    for state in [ExternalReach::Reachable, ExternalReach::Unknown] {
        let (session, actions) = external(state);
        let Some(Action::Originate(ring)) = actions.first() else {
            panic!("{state}: rung at once: {actions:?}");
        };
        assert_eq!(ring.target, "004915551234");
        assert_eq!(ring.ring_timeout, Duration::from_secs(30));
        assert_eq!(session.delivery_state(), DeliveryState::Ringing);
    }
}

#[test]
fn an_external_number_unreachable_or_busy_is_stored_and_the_caller_told() {
    use crate::domain::ExternalReach;
    for (state, delivery, prompt) in [
        (
            ExternalReach::Unreachable,
            DeliveryState::Unreachable,
            "not-available-stored",
        ),
        (ExternalReach::Busy, DeliveryState::Busy, "busy-stored"),
    ] {
        let (mut session, actions) = external(state);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Originate(_))),
            "{state}: not rung: {actions:?}"
        );
        assert!(actions.contains(&Action::NotHeard {
            state: delivery,
            quiet: false
        }));
        assert_eq!(
            plays(&actions),
            vec![(caller(), Media::Sound(prompt.into()), 0)]
        );
        // A second answer (say, a late one) changes nothing.
        session.handle_input(
            Instant::now(),
            Input::ExternalReachability {
                state: ExternalReach::Reachable,
            },
        );
        assert!(session.poll_action().is_none());
        assert_eq!(session.delivery_state(), delivery);
    }
}

#[test]
fn a_store_failure_ends_the_message_failed_tells_the_caller_and_hangs_up() {
    let mut run = Run::new();
    run.drain();
    run.input(0, Input::ListenGrew { samples: 16_000 });
    run.input(
        500,
        Input::OriginateFailed {
            origin: OriginateId("m1".into()),
            cause: HangupCause::NoAnswer,
        },
    );
    // The disk is full 3 s in: 2 s of the message reached it.
    let actions = run.input(3_000, Input::RecordingFailed { samples: 16_000 });
    assert_eq!(
        actions,
        vec![
            Action::MessageState(MessageState::Failed),
            Action::StopRecording(caller()),
            Action::Play {
                call: caller(),
                request: PlayRequest::sound("not-recorded", ""),
            },
        ],
        "failed once, the caller stops being recorded and hears why"
    );
    let actions = run.input(
        4_000,
        Input::PlaybackFinished {
            call: caller(),
            stopped_at_sample: 0,
            interrupted_by: None,
        },
    );
    assert_eq!(actions, vec![Action::Hangup(caller(), HangupCause::Normal)]);
    // The switch's own end of the recording changes nothing stored.
    let actions = run.input(4_100, Input::RecordingDone { samples: 16_000 });
    assert!(actions.is_empty(), "{actions:?}");
    let actions = run.input(
        4_200,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    assert_eq!(actions, vec![Action::Done]);
    // Nor does the maximum length, later.
    assert!(
        run.input(120_000, Input::Timer(TimerId::MaxMessage))
            .is_empty()
    );
}

#[test]
fn a_store_failure_after_the_caller_left_is_only_failed() {
    let mut run = Run::new();
    run.drain();
    run.input(
        100,
        Input::HungUp {
            call: caller(),
            cause: HangupCause::Normal,
        },
    );
    let actions = run.input(200, Input::RecordingFailed { samples: 800 });
    assert_eq!(actions, vec![Action::MessageState(MessageState::Failed)]);
}

#[test]
fn a_listener_hears_what_was_stored_before_the_failure() {
    let mut run = Run::new();
    run.input(0, Input::ListenGrew { samples: 8_000 });
    run.input(
        100,
        Input::Answered {
            origin: OriginateId("m1".into()),
            call: target(),
        },
    );
    run.input(1_000, finished(8_000, None));
    let actions = run.input(1_200, Input::RecordingFailed { samples: 12_000 });
    assert_eq!(
        plays(&actions),
        vec![
            (caller(), Media::Sound("not-recorded".into()), 0),
            (target(), listen_media(), 8_000)
        ],
        "the caller is told; the listener plays on to the end of what is stored"
    );
    let actions = run.input(1_700, finished(12_000, None));
    assert!(actions.contains(&Action::DeliveryState {
        state: DeliveryState::Heard,
        position: 12_000
    }));
}
