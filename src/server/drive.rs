//! Runs any engine flow: carries out its actions (switch commands, store
//! calls), fires the timers it asked for on the clock, and feeds it the
//! answers, the switch's events and its media's progress as inputs.
//!
//! Owns: the loop every flow runs in. Must not know: what a flow decides.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::engine::{Action, Flow, Input, TimerId};
use crate::notify::Redacted;
use crate::switch::HangupCause;

use super::{Ctx, Handoff, PUMP_INTERVAL, ServerError, retrieve};

/// Wake-ups the flow asked for, fired by the clock.
#[derive(Default)]
struct Timers(HashMap<TimerId, Instant>);

impl Timers {
    fn set(&mut self, id: TimerId, at: std::time::Instant) {
        self.0.insert(id, Instant::from_std(at));
    }

    /// The next timer to fire; pending forever when none is set.
    async fn fire(&mut self) -> TimerId {
        let Some((&id, &at)) = self.0.iter().min_by_key(|(_, at)| **at) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(at).await;
        self.0.remove(&id);
        id
    }
}

/// The media side of a flow: what only its driver knows how to do.
pub(super) trait FlowMedia: Send {
    /// Carry out a media action; false if it is not one.
    async fn perform(&mut self, ctx: &Ctx, action: &Action) -> Result<bool, ServerError>;
    /// Called every [`PUMP_INTERVAL`] while `wants_ticks`; returns inputs.
    async fn tick(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError>;
    fn wants_ticks(&self) -> bool;
    /// Sees each input before the flow does.
    fn observe(&mut self, _input: &Input) {}
}

/// A flow without media of its own.
pub(super) struct NoMedia;

impl FlowMedia for NoMedia {
    async fn perform(&mut self, _: &Ctx, _: &Action) -> Result<bool, ServerError> {
        Ok(false)
    }
    async fn tick(&mut self, _: &Ctx) -> Result<Vec<Input>, ServerError> {
        Ok(Vec::new())
    }
    fn wants_ticks(&self) -> bool {
        false
    }
}

/// Run a flow to its end: carry out its actions, feed it its inputs, its
/// timers and its media's progress.
pub(super) async fn drive(
    ctx: &Ctx,
    mut flow: impl Flow + Send,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
    media: &mut impl FlowMedia,
) -> Result<(), ServerError> {
    let mut timers = Timers::default();
    let mut times = crate::metrics::CallTimes::start(); // metrics hook
    let mut tick = tokio::time::interval(PUMP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Some(action) = flow.poll_action() {
            if action == Action::Done {
                return Ok(());
            }
            if let Action::StartTimer { id, at } = action {
                timers.set(id, at);
                continue;
            }
            let timing = times.before(&action); // metrics hook
            if media.perform(ctx, &action).await? {
                times.done(timing); // metrics hook
                continue;
            }
            let answer = perform(ctx, action).await?;
            times.done(timing); // metrics hook
            if let Some(input) = answer {
                flow.handle_input(Instant::now().into_std(), input);
            }
        }
        let ticking = media.wants_ticks();
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => vec![input],
                None => return Ok(()),
            },
            id = timers.fire() => vec![Input::Timer(id)],
            _ = tick.tick(), if ticking => media.tick(ctx).await?,
        };
        for input in input {
            media.observe(&input);
            times.observe(&input); // metrics hook
            flow.handle_input(Instant::now().into_std(), input);
        }
    }
}

/// Carry out an action any flow may give; returns the input answering it.
async fn perform(ctx: &Ctx, action: Action) -> Result<Option<Input>, ServerError> {
    let result = match action {
        Action::Answer(call) => ctx.switch.answer(&call).await,
        Action::Play { call, request } => ctx.switch.play(&call, request).await,
        Action::StartRecording { call, request } => {
            ctx.switch.start_recording(&call, request).await
        }
        Action::StopRecording(call) => ctx.switch.stop_recording(&call).await,
        Action::Originate(request) => {
            let origin = request.id.clone();
            if let Err(e) = ctx.switch.originate(request).await {
                warn!("originate failed: {e}");
                return Ok(Some(Input::OriginateFailed {
                    origin,
                    cause: HangupCause::Unreachable,
                }));
            }
            Ok(())
        }
        Action::Bridge(a, b) => ctx.switch.bridge(&a, &b).await,
        Action::Hangup(call, cause) => ctx.switch.hangup(&call, cause).await,
        Action::CallBack { call, to } => {
            // A plain call from the listener to the sender.
            if let Err(e) = ctx.switch.connect(&call, to.as_str()).await {
                warn!("call back failed: {e}");
                let _ = ctx.switch.hangup(&call, HangupCause::Normal).await;
            }
            Ok(())
        }
        Action::Reply { call, from, to } => {
            let _ = ctx.handoff.send(Handoff::Reply { call, from, to });
            Ok(())
        }
        Action::Lookup {
            user,
            query,
            source,
        } => {
            return retrieve::lookup(ctx, user, query, source).await.map(Some);
        }
        Action::LookupReachability { user } => {
            let (presence, rules) = super::router::reachability(ctx, user).await?;
            return Ok(Some(Input::Reachability { presence, rules }));
        }
        Action::LookupExternal { number } => {
            let state = match &ctx.external {
                Some(lookup) => lookup.reach(number.as_str()).await,
                None => crate::domain::ExternalReach::Unknown,
            };
            return Ok(Some(Input::ExternalReachability { state }));
        }
        Action::VerifyPin { user, pin, source } => {
            return retrieve::verify_pin(ctx, user, pin, source).await.map(Some);
        }
        Action::CountMiss { user, miss } => {
            retrieve::count_miss(&user, miss);
            Ok(())
        }
        Action::LockedOut { user } => {
            retrieve::locked_out(&user);
            Ok(())
        }
        Action::SetDeliveryState {
            message,
            target,
            state,
        } => {
            retrieve::set_delivery_state(ctx, message, &target, state).await;
            Ok(())
        }
        Action::Saved { message, target } => {
            info!(message_id = %message, user = %Redacted(target.as_str()), "message saved");
            Ok(())
        }
        Action::TellSenderHeard {
            message,
            sender,
            target,
        } => {
            retrieve::tell_sender_heard(ctx, message, &sender, &target).await;
            Ok(())
        }
        other => {
            debug!(?other, "an action this flow's driver does not carry out");
            Ok(())
        }
    };
    if let Err(e) = result {
        // Mostly a call that has just hung up; its HungUp event follows.
        debug!("switch action failed: {e}");
    }
    Ok(None)
}
