//! The shortest flow: answer, say one prompt, hang up when it ends (or
//! after [`PROMPT_LIMIT`] should its end never be reported). For calls
//! `ivm` cannot serve: a number not in the plan, too many messages at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Action, Flow, Input, TimerId, sound};
use crate::domain::{CallId, HangupCause};

/// How long a prompt may take before the call is ended anyway.
pub const PROMPT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Announcement {
    call: CallId,
    deadline: Instant,
    done: bool,
    actions: VecDeque<Action>,
}

impl Announcement {
    pub fn start(now: Instant, call: CallId, prompt: &str) -> Self {
        let deadline = now + PROMPT_LIMIT;
        let actions = VecDeque::from([
            Action::Answer(call.clone()),
            Action::Play {
                call: call.clone(),
                request: sound(prompt, ""),
            },
            Action::StartTimer {
                id: TimerId::Prompt,
                at: deadline,
            },
        ]);
        Self {
            call,
            deadline,
            done: false,
            actions,
        }
    }

    fn finish(&mut self, hang_up: bool) {
        if hang_up {
            self.actions
                .push_back(Action::Hangup(self.call.clone(), HangupCause::Normal));
        }
        self.actions.push_back(Action::Done);
        self.done = true;
    }
}

impl Flow for Announcement {
    fn handle_input(&mut self, now: Instant, input: Input) {
        if self.done {
            return;
        }
        match input {
            Input::PlaybackFinished { call, .. } if call == self.call => self.finish(true),
            Input::HungUp { call, .. } if call == self.call => self.finish(false),
            Input::Timer(TimerId::Prompt) if now >= self.deadline => self.finish(true),
            _ => {}
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
mod tests {
    use super::*;

    fn drain(flow: &mut Announcement) -> Vec<Action> {
        std::iter::from_fn(|| flow.poll_action()).collect()
    }

    #[test]
    fn answers_says_the_prompt_then_hangs_up() {
        let t0 = Instant::now();
        let call = CallId("c".into());
        let mut flow = Announcement::start(t0, call.clone(), "invalid-number");
        assert_eq!(
            drain(&mut flow),
            [
                Action::Answer(call.clone()),
                Action::Play {
                    call: call.clone(),
                    request: sound("invalid-number", "")
                },
                Action::StartTimer {
                    id: TimerId::Prompt,
                    at: t0 + PROMPT_LIMIT
                }
            ]
        );
        flow.handle_input(
            t0,
            Input::PlaybackFinished {
                call: call.clone(),
                stopped_at_sample: 9000,
                interrupted_by: None,
            },
        );
        assert_eq!(
            drain(&mut flow),
            [Action::Hangup(call, HangupCause::Normal), Action::Done]
        );
        assert!(flow.is_done());
    }

    #[test]
    fn a_caller_who_leaves_or_a_lost_prompt_ends_it_too() {
        let t0 = Instant::now();
        let call = CallId("c".into());
        let mut flow = Announcement::start(t0, call.clone(), "error");
        drain(&mut flow);
        flow.handle_input(
            t0,
            Input::HungUp {
                call: call.clone(),
                cause: HangupCause::Normal,
            },
        );
        assert_eq!(drain(&mut flow), [Action::Done]);
        let mut flow = Announcement::start(t0, call.clone(), "error");
        drain(&mut flow);
        flow.handle_input(t0 + Duration::from_secs(9), Input::Timer(TimerId::Prompt));
        assert!(drain(&mut flow).is_empty());
        flow.handle_input(t0 + PROMPT_LIMIT, Input::Timer(TimerId::Prompt));
        assert_eq!(
            drain(&mut flow),
            [Action::Hangup(call, HangupCause::Normal), Action::Done]
        );
    }
}
