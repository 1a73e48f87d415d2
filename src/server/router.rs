//! The one path from a switch to the engine: each `SwitchEvent` becomes one
//! `engine::Input` for the flow its call or originate id belongs to. Starts
//! a flow per incoming call (by what was dialled), per answered
//! smart-caller-ID call, and per hand-off (a listener's reply).
//!
//! Owns: the tables of calls and originate ids to flows; the per-sender
//! limit. Must not know: any switch's syntax, what a flow decides.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::domain::Extension;
use crate::engine::Input;
use crate::engine::announcement::Announcement;
use crate::engine::dial::{self, Start};
use crate::engine::sounds as prompt;
use crate::switch::{CallId, HangupCause, OriginateId, SwitchEvent};

use super::deliver::deliver;
use super::drive::{NoMedia, drive};
use super::{Ctx, Handoff, ServerError, retrieve};

/// Route one switch's events to its flows until shutdown: the one path
/// from the switch to the engine.
pub(super) async fn serve_switch(
    ctx: Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<SwitchEvent>,
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<u64>();
    let mut router = Router {
        ctx,
        ended: ended_tx,
        next: 0,
        flows: HashMap::new(),
        by_call: HashMap::new(),
        by_origin: HashMap::new(),
    };
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                router.route(event);
            }
            Some(handoff) = handoffs.recv() => router.hand_over(handoff),
            Some(id) = ended.recv() => router.forget(id),
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
}

/// Which flow each call and each originate belongs to.
struct Router {
    ctx: Arc<Ctx>,
    ended: mpsc::UnboundedSender<u64>,
    next: u64,
    /// Running flows: who started them (the per-sender limit) and their inputs.
    flows: HashMap<u64, (String, mpsc::UnboundedSender<Input>)>,
    by_call: HashMap<CallId, u64>,
    by_origin: HashMap<OriginateId, u64>,
}

impl Router {
    fn route(&mut self, event: SwitchEvent) {
        let (flow, input) = match event {
            SwitchEvent::IncomingCall {
                call,
                caller_number,
                caller_name,
                dialed,
                ..
            } => {
                let caller = Caller {
                    call,
                    number: caller_number,
                    name: caller_name,
                    dialed,
                };
                return self.incoming(caller);
            }
            SwitchEvent::Answered { origin, call } => {
                let Some(&flow) = self.by_origin.get(&origin) else {
                    return self.answered_elsewhere(origin, call);
                };
                self.by_call.insert(call.clone(), flow);
                (flow, Input::Answered { origin, call })
            }
            SwitchEvent::OriginateFailed { origin, cause } => match self.by_origin.get(&origin) {
                Some(&flow) => (flow, Input::OriginateFailed { origin, cause }),
                None => {
                    // A missed call that rang out: forget it.
                    self.ctx.missed_calls.take(&origin);
                    return;
                }
            },
            SwitchEvent::HungUp { call, cause } => match self.by_call.remove(&call) {
                Some(flow) => (flow, Input::HungUp { call, cause }),
                None => return,
            },
            SwitchEvent::Dtmf { call, digit } => match self.by_call.get(&call) {
                Some(&flow) => (flow, Input::Dtmf { call, digit }),
                None => return,
            },
            SwitchEvent::PlaybackFinished {
                call,
                stopped_at_sample,
                interrupted_by,
            } => match self.by_call.get(&call) {
                Some(&flow) => (
                    flow,
                    Input::PlaybackFinished {
                        call,
                        stopped_at_sample,
                        interrupted_by,
                    },
                ),
                None => return,
            },
            other => {
                debug!(?other, "switch event with no flow");
                return;
            }
        };
        if let Some((_, tx)) = self.flows.get(&flow) {
            let _ = tx.send(input);
        }
    }

    fn forget(&mut self, id: u64) {
        self.flows.remove(&id);
        self.by_call.retain(|_, flow| *flow != id);
        self.by_origin.retain(|_, flow| *flow != id);
    }

    /// A new flow for `call`, started by `sender`; returns its id, the id
    /// its originate will carry, and its inputs.
    fn open(
        &mut self,
        call: &CallId,
        sender: &str,
    ) -> (u64, OriginateId, mpsc::UnboundedReceiver<Input>) {
        let id = self.next;
        self.next += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.flows.insert(id, (sender.to_owned(), tx));
        self.by_call.insert(call.clone(), id);
        let origin = crate::switch::peer::originate_id(Some(call));
        self.by_origin.insert(origin.clone(), id);
        (id, origin, rx)
    }

    fn too_many(&self, sender: &str) -> bool {
        self.flows.values().filter(|(s, _)| s == sender).count()
            >= self.ctx.config.limits.max_concurrent_messages_per_user as usize
    }

    fn spawn<F>(&self, id: u64, what: &'static str, job: F)
    where
        F: std::future::Future<Output = Result<(), ServerError>> + Send + 'static,
    {
        let ended = self.ended.clone();
        tokio::spawn(async move {
            if let Err(e) = job.await {
                warn!("{what} ended with an error: {e}");
            }
            let _ = ended.send(id);
        });
    }

    fn incoming(&mut self, caller: Caller) {
        let too_many = self.too_many(&caller.number);
        let (id, origin, inputs) = self.open(&caller.call, &caller.number);
        let ctx = self.ctx.clone();
        self.spawn(id, "call", async move {
            run_call(&ctx, caller, origin, inputs, too_many).await
        });
    }

    fn hand_over(&mut self, handoff: Handoff) {
        let Handoff::Reply { call, from, to } = handoff;
        let too_many = self.too_many(from.as_str());
        let (id, origin, mut inputs) = self.open(&call, from.as_str());
        let ctx = self.ctx.clone();
        self.spawn(id, "reply", async move {
            let to = match dial::reply(&to, too_many) {
                Ok(to) => to,
                Err(prompt) => {
                    info!("the reply cannot be sent: {prompt}");
                    return announce(&ctx, &call, prompt, &mut inputs).await;
                }
            };
            let Some(_permit) = ctx.permits.try_acquire() else {
                return busy(&ctx, &call, &mut inputs).await;
            };
            let caller = Caller {
                call,
                number: from.0,
                name: String::new(),
                dialed: String::new(),
            };
            deliver(&ctx, caller, to, origin, inputs).await
        });
    }

    /// An answered originate no flow placed: a smart-caller-ID call plays
    /// the message it announced; anything else is hung up.
    fn answered_elsewhere(&mut self, origin: OriginateId, call: CallId) {
        let Some(item) = self.ctx.missed_calls.take(&origin) else {
            warn!(%call, "an answered call for no known message; hanging up");
            let switch = self.ctx.switch.clone();
            tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
            return;
        };
        let (id, _, inputs) = self.open(&call, "");
        let ctx = self.ctx.clone();
        self.spawn(id, "missed-call retrieval", async move {
            retrieve::missed_call(&ctx, call, item, inputs).await
        });
    }
}

pub(super) struct Caller {
    pub call: CallId,
    pub number: String,
    pub name: String,
    pub dialed: String,
}

/// Answer, say `prompt`, hang up: for calls `ivm` cannot serve.
pub(super) async fn announce(
    ctx: &Ctx,
    call: &CallId,
    prompt: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let flow = Announcement::start(Instant::now().into_std(), call.clone(), prompt);
    drive(ctx, flow, inputs, &mut NoMedia).await
}

async fn run_call(
    ctx: &Ctx,
    caller: Caller,
    origin: OriginateId,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    too_many: bool,
) -> Result<(), ServerError> {
    let dialed = ctx
        .plan
        .parse(&caller.dialed)
        .inspect_err(|e| {
            // The reason quotes the dialled digits: debug only.
            info!(call = %caller.call, "dialled string not in the number plan");
            debug!(reason = %e, "not in the number plan");
        })
        .ok();
    let target = match dial::start(dialed, too_many) {
        Start::Refuse(prompt) => return announce(ctx, &caller.call, prompt, &mut inputs).await,
        Start::Retrieve(request) => return retrieve::serve(ctx, &caller, request, inputs).await,
        Start::Deliver(target) => target,
        Start::ReplyToLast => {
            let to = caller.number.clone();
            match ctx.store.call(move |s| s.last_sender_to(&to)).await?? {
                Some(last) => Extension(last),
                None => return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await,
            }
        }
    };
    // One permit per caller's message, held until its flow ends.
    let Some(_permit) = ctx.permits.try_acquire() else {
        return busy(ctx, &caller.call, &mut inputs).await;
    };
    deliver(ctx, caller, target, origin, inputs).await
}

/// `[limits] max_concurrent_messages` are in progress: the caller hears
/// "busy, try again later" and nothing is stored.
async fn busy(
    ctx: &Ctx,
    call: &CallId,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    info!(
        %call,
        limit = ctx.permits.capacity(),
        "message refused: max_concurrent_messages in progress"
    );
    announce(ctx, call, prompt::TRY_LATER, inputs).await
}
