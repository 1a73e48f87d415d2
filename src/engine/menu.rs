//! The listener menu, one for live delivery and retrieval alike: after a
//! message, `1` replay, `2` reply, `3` call back, `4` save, `7` delete. A
//! key may interrupt the prompt, come just before it started, or follow it
//! within the menu timeout; no key in time is [`Choice::NoKey`]; another
//! key says the menu again. The flow that embeds the menu decides what each
//! choice does (delivery hangs up after save; retrieval goes to the next
//! message) and handles hang-ups.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Action, Input, TimerId, keys, sound, sounds};
use crate::domain::CallId;

/// The digits the menu's prompt stops on.
pub const DIGITS: &str = "12347";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Replay,
    Reply,
    CallBack,
    Save,
    Delete,
    /// No key within the timeout after the prompt.
    NoKey,
}

impl Choice {
    pub fn of(digit: char) -> Option<Self> {
        Some(match digit {
            keys::REPLAY => Self::Replay,
            keys::REPLY => Self::Reply,
            keys::CALL_BACK => Self::CallBack,
            keys::SAVE => Self::Save,
            keys::DELETE => Self::Delete,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    call: CallId,
    timeout: Duration,
    prompt_playing: bool,
    deadline: Option<Instant>,
    /// A menu key pressed while the prompt played but not reported as its
    /// interruption (it came just before the prompt started).
    early: Option<char>,
}

impl Menu {
    /// Say the menu on `call`.
    pub fn open(call: CallId, timeout: Duration, out: &mut VecDeque<Action>) -> Self {
        let menu = Self {
            call,
            timeout,
            prompt_playing: true,
            deadline: None,
            early: None,
        };
        menu.say(out);
        menu
    }

    pub fn call(&self) -> &CallId {
        &self.call
    }

    fn say(&self, out: &mut VecDeque<Action>) {
        out.push_back(Action::Play {
            call: self.call.clone(),
            request: sound(sounds::MENU, DIGITS),
        });
    }

    /// Feed an input; returns the listener's choice once made.
    pub fn handle_input(
        &mut self,
        now: Instant,
        input: &Input,
        out: &mut VecDeque<Action>,
    ) -> Option<Choice> {
        match input {
            Input::PlaybackFinished {
                call,
                interrupted_by,
                ..
            } if *call == self.call && self.prompt_playing => {
                match interrupted_by.or(self.early.take()) {
                    Some(digit) => self.key(digit, out),
                    None => {
                        let deadline = now + self.timeout;
                        self.prompt_playing = false;
                        self.deadline = Some(deadline);
                        out.push_back(Action::StartTimer {
                            id: TimerId::Menu,
                            at: deadline,
                        });
                        None
                    }
                }
            }
            Input::Dtmf { call, digit } if *call == self.call => {
                if self.prompt_playing {
                    if Choice::of(*digit).is_some() {
                        self.early.get_or_insert(*digit);
                    }
                    None
                } else {
                    self.key(*digit, out)
                }
            }
            Input::Timer(TimerId::Menu)
                if !self.prompt_playing && self.deadline.is_some_and(|d| now >= d) =>
            {
                self.deadline = None;
                Some(Choice::NoKey)
            }
            _ => None,
        }
    }

    fn key(&mut self, digit: char, out: &mut VecDeque<Action>) -> Option<Choice> {
        let choice = Choice::of(digit);
        if choice.is_none() {
            // Unknown key: say the menu again.
            self.prompt_playing = true;
            self.deadline = None;
            self.early = None;
            self.say(out);
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Media;

    fn call() -> CallId {
        CallId("listener".into())
    }

    fn ended(key: Option<char>) -> Input {
        Input::PlaybackFinished {
            call: call(),
            stopped_at_sample: 0,
            interrupted_by: key,
        }
    }

    fn dtmf(digit: char) -> Input {
        Input::Dtmf {
            call: call(),
            digit,
        }
    }

    struct Run {
        menu: Menu,
        out: VecDeque<Action>,
        t0: Instant,
    }

    impl Run {
        fn open() -> (Self, Vec<Action>) {
            let mut out = VecDeque::new();
            let menu = Menu::open(call(), Duration::from_secs(8), &mut out);
            let mut run = Self {
                menu,
                out,
                t0: Instant::now(),
            };
            let actions = run.drain();
            (run, actions)
        }

        fn input(&mut self, ms: u64, input: Input) -> (Option<Choice>, Vec<Action>) {
            let now = self.t0 + Duration::from_millis(ms);
            let choice = self.menu.handle_input(now, &input, &mut self.out);
            (choice, self.drain())
        }

        fn drain(&mut self) -> Vec<Action> {
            self.out.drain(..).collect()
        }
    }

    fn menu_prompt() -> Action {
        Action::Play {
            call: call(),
            request: PlayRequest {
                media: Media::Sound("listener-menu".into()),
                from_sample: 0,
                interrupt_digits: "12347".into(),
            },
        }
    }

    use crate::domain::PlayRequest;

    #[test]
    fn each_key_is_its_choice_and_others_are_not() {
        let choices: Vec<_> = "12347".chars().map(Choice::of).collect();
        assert_eq!(
            choices,
            [
                Some(Choice::Replay),
                Some(Choice::Reply),
                Some(Choice::CallBack),
                Some(Choice::Save),
                Some(Choice::Delete)
            ]
        );
        assert!("0568*#".chars().all(|d| Choice::of(d).is_none()));
    }

    #[test]
    fn a_key_interrupting_the_prompt_chooses() {
        let (mut run, actions) = Run::open();
        assert_eq!(actions, [menu_prompt()]);
        assert_eq!(
            run.input(500, ended(Some('4'))),
            (Some(Choice::Save), vec![])
        );
    }

    #[test]
    fn a_key_after_the_prompt_chooses_before_the_timeout() {
        let (mut run, _) = Run::open();
        let (choice, actions) = run.input(3_000, ended(None));
        assert_eq!(choice, None);
        assert_eq!(
            actions,
            [Action::StartTimer {
                id: TimerId::Menu,
                at: run.t0 + Duration::from_millis(11_000)
            }]
        );
        assert_eq!(run.input(4_000, dtmf('7')), (Some(Choice::Delete), vec![]));
    }

    #[test]
    fn a_key_just_before_the_prompt_counts_when_it_ends() {
        let (mut run, _) = Run::open();
        assert_eq!(run.input(10, dtmf('2')), (None, vec![]));
        assert_eq!(run.input(20, dtmf('9')), (None, vec![]), "not a menu key");
        assert_eq!(run.input(3_000, ended(None)), (Some(Choice::Reply), vec![]));
    }

    #[test]
    fn an_unknown_key_says_the_menu_again_and_no_key_times_out() {
        let (mut run, _) = Run::open();
        run.input(3_000, ended(None));
        assert_eq!(run.input(4_000, dtmf('9')), (None, vec![menu_prompt()]));
        // The old timer is stale now: it chooses nothing.
        assert_eq!(
            run.input(11_000, Input::Timer(TimerId::Menu)),
            (None, vec![])
        );
        let (_, actions) = run.input(12_000, ended(None));
        assert_eq!(actions.len(), 1);
        assert_eq!(
            run.input(19_999, Input::Timer(TimerId::Menu)),
            (None, vec![])
        );
        assert_eq!(
            run.input(20_000, Input::Timer(TimerId::Menu)),
            (Some(Choice::NoKey), vec![])
        );
    }

    #[test]
    fn inputs_of_other_calls_are_ignored() {
        let (mut run, _) = Run::open();
        let other = Input::Dtmf {
            call: CallId("other".into()),
            digit: '4',
        };
        assert_eq!(run.input(10, other), (None, vec![]));
    }
}
