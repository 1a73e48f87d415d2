//! Transcript tests of delivery in `stream` mode (ivm carries the audio:
//! `StreamCaller`, `StreamListener`, `StopStream`, `StreamEnded`), on
//! virtual time, no sleeping. The `files` mode's are in `delivery_tests.rs`.

use super::*;
use crate::domain::{DeliveryRules, Presence};
use crate::engine::Action;

fn caller() -> CallId {
    CallId("caller-1".into())
}

fn target() -> CallId {
    CallId("target-1".into())
}

fn config() -> SessionConfig {
    SessionConfig {
        caller: caller(),
        sender_name: "Alice".into(),
        sender_number: Extension::new("1001"),
        target: Extension::new("1002"),
        origin: OriginateId("m1".into()),
        capture_path: "/data/m1.sln48".into(),
        capture_format: AudioFormat::Slin {
            sample_rate: 48_000,
        },
        listen_path: "/data/m1.listen.sln".into(),
        ring_timeout: Duration::from_secs(30),
        max_message: Duration::from_secs(120),
        min_play_samples: 800,
        menu_timeout: Duration::from_secs(8),
        stream: true,
        external: false,
    }
}

struct Run {
    session: Delivery,
    t0: Instant,
}

impl Run {
    /// Started; the target's presence lets it be rung at once.
    fn new() -> Self {
        let t0 = Instant::now();
        let mut session = Delivery::start(config(), t0);
        session.handle_input(
            t0,
            Input::Reachability {
                presence: Presence::default(),
                rules: DeliveryRules::default(),
            },
        );
        Self { session, t0 }
    }

    fn input(&mut self, ms: u64, input: Input) -> Vec<Action> {
        self.session
            .handle_input(self.t0 + Duration::from_millis(ms), input);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    /// Started, and the target answered at `ms`.
    fn answered(ms: u64) -> (Self, Vec<Action>) {
        let mut run = Self::new();
        run.drain();
        let actions = run.input(
            ms,
            Input::Answered {
                origin: OriginateId("m1".into()),
                call: target(),
            },
        );
        (run, actions)
    }
}

/// The actions that are not bookkeeping (states, listener position).
fn calls(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::ListenerAt { .. }
                    | Action::StartTimer { .. }
                    | Action::DeliveryState { .. }
            )
        })
        .cloned()
        .collect()
}

fn play(call: CallId, name: &str) -> Action {
    Action::Play {
        call,
        request: PlayRequest::sound(name, ""),
    }
}

fn menu_prompt() -> Action {
    Action::Play {
        call: target(),
        request: PlayRequest::sound(sounds::MENU, "12347"),
    }
}

fn ended(position: u64) -> Input {
    Input::StreamEnded {
        call: target(),
        position,
    }
}

#[test]
fn start_answers_then_streams_the_caller_then_beeps_in_the_stream() {
    let mut run = Run::new();
    let actions = calls(&run.drain());
    assert_eq!(
        actions[..3],
        [
            Action::Answer(caller()),
            Action::StreamCaller(caller()),
            play(caller(), sounds::BEEP),
        ]
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::StartRecording { .. })),
        "no switch recording in stream mode: {actions:?}"
    );
    assert!(
        actions.iter().any(|a| matches!(a, Action::Originate(_))),
        "{actions:?}"
    );
}

#[test]
fn answer_streams_the_whole_message_from_zero_in_one_stream() {
    let (mut run, actions) = Run::answered(2_000);
    assert_eq!(
        calls(&actions),
        vec![
            play(caller(), sounds::ACCEPTED),
            Action::StreamListener {
                call: target(),
                from: 0
            },
        ]
    );
    // The recording grows: the one stream follows it, no new command.
    for (ms, samples) in [(2_100, 17_600), (2_200, 18_400), (9_000, 72_000)] {
        assert_eq!(run.input(ms, Input::ListenGrew { samples }), vec![]);
    }
    let done = run.input(12_000, Input::RecordingDone { samples: 96_000 });
    assert_eq!(
        calls(&done),
        vec![Action::MessageState(MessageState::Complete)]
    );
    // The stream plays to the end of the message, then the menu (through
    // the switch again).
    let menu = run.input(12_150, ended(96_000));
    assert!(menu.contains(&Action::DeliveryState {
        state: DeliveryState::Heard,
        position: 96_000
    }));
    assert_eq!(calls(&menu), vec![menu_prompt()]);
}

#[test]
fn stream_ending_before_the_recording_waits_for_it_then_streams_the_rest() {
    let (mut run, _) = Run::answered(100);
    // The relay reached the end of a closed log before the talker's end
    // was reported: nothing yet.
    assert_eq!(calls(&run.input(5_000, ended(39_840))), vec![]);
    // The recording holds 160 samples more than was streamed: they are
    // streamed, from where the stream stopped, never from earlier.
    let rest = run.input(5_010, Input::RecordingDone { samples: 40_000 });
    assert_eq!(
        calls(&rest),
        vec![
            Action::MessageState(MessageState::Complete),
            Action::StreamListener {
                call: target(),
                from: 39_840
            }
        ]
    );
    let menu = run.input(5_100, ended(40_000));
    assert_eq!(calls(&menu), vec![menu_prompt()]);
}

#[test]
fn hash_from_the_listener_stops_the_stream_then_offers_the_menu_where_it_stopped() {
    let (mut run, _) = Run::answered(100);
    let stop = run.input(
        3_000,
        Input::Dtmf {
            call: target(),
            digit: '#',
        },
    );
    assert_eq!(calls(&stop), vec![Action::StopStream(target())]);
    // A second key while stopping is not a second stop.
    assert_eq!(
        calls(&run.input(
            3_050,
            Input::Dtmf {
                call: target(),
                digit: '#'
            }
        )),
        vec![]
    );
    let menu = run.input(3_100, ended(23_000));
    assert!(menu.contains(&Action::DeliveryState {
        state: DeliveryState::Heard,
        position: 23_000
    }));
    assert_eq!(calls(&menu), vec![menu_prompt()]);
}

#[test]
fn full_duplex_key_from_the_listener_ends_both_streams_then_bridges() {
    let (mut run, _) = Run::answered(100);
    let stop = run.input(
        3_000,
        Input::Dtmf {
            call: target(),
            digit: '5',
        },
    );
    assert_eq!(calls(&stop), vec![Action::StopStream(target())]);
    let bridge = run.input(3_080, ended(22_000));
    assert_eq!(
        calls(&bridge),
        vec![
            Action::StopRecording(caller()),
            Action::Bridge(caller(), target())
        ]
    );
}

#[test]
fn full_duplex_key_from_the_caller_stops_the_listeners_stream_too() {
    let (mut run, _) = Run::answered(100);
    let actions = run.input(
        3_000,
        Input::Dtmf {
            call: caller(),
            digit: '5',
        },
    );
    assert_eq!(
        calls(&actions),
        vec![
            Action::StopRecording(caller()),
            Action::StopStream(target()),
            Action::Bridge(caller(), target())
        ]
    );
}

#[test]
fn listener_hanging_up_mid_stream_is_unheard_at_the_streams_position() {
    let (mut run, _) = Run::answered(100);
    let gone = run.input(
        4_000,
        Input::HungUp {
            call: target(),
            cause: HangupCause::Normal,
        },
    );
    assert_eq!(gone, vec![], "the position comes with the stream's end");
    let end = run.input(4_010, ended(30_000));
    assert!(end.contains(&Action::DeliveryState {
        state: DeliveryState::Unheard,
        position: 30_000
    }));
    assert!(end.contains(&Action::NotHeard {
        state: DeliveryState::Unheard,
        quiet: false
    }));
}

#[test]
fn a_broken_caller_stream_keeps_the_message_as_partial() {
    let (mut run, _) = Run::answered(100);
    let cut = run.input(6_000, Input::RecordingCut { samples: 44_000 });
    assert_eq!(
        calls(&cut),
        vec![Action::MessageState(MessageState::Partial)]
    );
    // The listener still hears all that was kept, then the menu.
    let menu = run.input(6_100, ended(44_000));
    assert_eq!(calls(&menu), vec![menu_prompt()]);
}

#[test]
fn replay_from_the_menu_streams_again_from_zero() {
    let (mut run, _) = Run::answered(100);
    run.input(5_000, Input::RecordingDone { samples: 40_000 });
    run.input(5_100, ended(40_000));
    let again = run.input(
        5_200,
        Input::PlaybackFinished {
            call: target(),
            stopped_at_sample: 0,
            interrupted_by: Some('1'),
        },
    );
    assert!(
        again.contains(&Action::StreamListener {
            call: target(),
            from: 0
        }),
        "{again:?}"
    );
}

#[test]
fn a_late_stream_report_never_moves_the_listener_backwards() {
    let (mut run, _) = Run::answered(100);
    run.input(
        3_000,
        Input::Dtmf {
            call: target(),
            digit: '#',
        },
    );
    // A stream reported ended for another call changes nothing.
    assert_eq!(
        run.input(
            3_050,
            Input::StreamEnded {
                call: caller(),
                position: 5
            }
        ),
        vec![]
    );
    let menu = run.input(3_100, ended(20_000));
    assert!(menu.contains(&Action::DeliveryState {
        state: DeliveryState::Heard,
        position: 20_000
    }));
}

#[test]
fn a_store_failure_finishes_the_callers_stream_then_says_so_and_hangs_up() {
    let mut run = Run::new();
    run.drain();
    let actions = run.input(2_000, Input::RecordingFailed { samples: 4_000 });
    assert_eq!(
        actions,
        vec![
            Action::MessageState(MessageState::Failed),
            Action::StopRecording(caller()),
            Action::Play {
                call: caller(),
                request: PlayRequest::sound("not-recorded", ""),
            },
        ]
    );
    // The talker's stream then ends; the state stays failed.
    let actions = run.input(2_100, Input::RecordingCut { samples: 4_000 });
    assert!(
        !actions.iter().any(|a| matches!(a, Action::MessageState(_))),
        "{actions:?}"
    );
}
