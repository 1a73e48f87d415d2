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
use tracing::{Instrument, debug, info, warn};

use crate::domain::Extension;
use crate::engine::Input;
use crate::engine::announcement::Announcement;
use crate::engine::dial::{self, Start};
use crate::engine::sounds as prompt;
use crate::switch::{CallId, HangupCause, OriginateId, SwitchEvent};

use super::deliver::deliver;
use super::drive::{NoMedia, drive};
use super::{Ctx, Handoff, ServerError, retrieve};

/// After the grace, how long flows have to wind up once their calls were
/// hung up.
const WIND_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Route one switch's events to its flows until shutdown: the one path
/// from the switch to the engine. On shutdown new calls and hand-offs are
/// refused (hung up) while the flows in progress go on, for up to `[server]
/// shutdown_grace_seconds`; then their calls are hung up and the flows get
/// [`WIND_UP`] to store what they have.
pub(super) async fn serve_switch(
    ctx: Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<SwitchEvent>,
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    mut shutdown: watch::Receiver<bool>,
) {
    let grace = std::time::Duration::from_secs(ctx.config.server.shutdown_grace_seconds.into());
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<u64>();
    let mut router = Router {
        ctx,
        ended: ended_tx,
        next: 0,
        flows: HashMap::new(),
        by_call: HashMap::new(),
        by_origin: HashMap::new(),
        draining: false,
    };
    // Before shutdown: never; then the grace's end; then the wind-up's.
    let mut deadline: Option<Instant> = None;
    let mut hung_up_all = false;
    loop {
        if router.draining && router.flows.is_empty() {
            break;
        }
        let until = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The stop first: no call that comes after it gets a flow.
            biased;
            _ = shutdown.wait_for(|stop| *stop), if !router.draining => {
                info!(calls = router.flows.len(), ?grace, "stopping: no new calls; those in progress may finish");
                router.draining = true;
                deadline = Some(Instant::now() + grace);
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                router.route(event);
            }
            Some(handoff) = handoffs.recv() => router.hand_over(handoff),
            Some(id) = ended.recv() => router.forget(id),
            () = until => {
                if hung_up_all {
                    warn!(calls = router.flows.len(), "flows still running after the wind-up; leaving them");
                    break;
                }
                warn!(calls = router.flows.len(), "shutdown grace over: hanging up the calls in progress");
                router.hang_up_all();
                hung_up_all = true;
                deadline = Some(Instant::now() + WIND_UP);
            }
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
    /// Shutting down: no new flows.
    draining: bool,
}

impl Router {
    fn route(&mut self, event: SwitchEvent) {
        let (flow, input) = match event {
            SwitchEvent::IncomingCall {
                call,
                caller_number,
                caller_name,
                dialed,
                endpoint,
                ..
            } => {
                let caller = Caller {
                    call,
                    number: caller_number,
                    name: caller_name,
                    dialed,
                    endpoint,
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

    /// Run a flow's task in its own span (the flow's id and the call's id
    /// as the switch names it — never a number); the router hears when it
    /// ends.
    fn spawn<F>(&self, id: u64, call: &CallId, what: &'static str, job: F)
    where
        F: std::future::Future<Output = Result<(), ServerError>> + Send + 'static,
    {
        let ended = self.ended.clone();
        let span = tracing::info_span!("flow", id, %call, kind = what);
        tokio::spawn(
            async move {
                if let Err(e) = job.await {
                    warn!("{what} ended with an error: {e}");
                }
                let _ = ended.send(id);
            }
            .instrument(span),
        );
    }

    /// Hang up every call a flow holds, and tell each flow its targets
    /// still ringing did not answer: each flow winds up and stores what it
    /// has.
    fn hang_up_all(&self) {
        for call in self.by_call.keys() {
            let (switch, call) = (self.ctx.switch.clone(), call.clone());
            tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
        }
        for (origin, flow) in &self.by_origin {
            if let Some((_, tx)) = self.flows.get(flow) {
                let _ = tx.send(Input::OriginateFailed {
                    origin: origin.clone(),
                    cause: HangupCause::NoAnswer,
                });
            }
        }
    }

    /// Shutting down: `call` gets no flow.
    fn refuse(&self, call: CallId) {
        info!(%call, "call refused: shutting down");
        let switch = self.ctx.switch.clone();
        tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
    }

    fn incoming(&mut self, caller: Caller) {
        if self.draining {
            return self.refuse(caller.call);
        }
        let too_many = self.too_many(&caller.number);
        let (id, origin, inputs) = self.open(&caller.call, &caller.number);
        let ctx = self.ctx.clone();
        let call = caller.call.clone();
        self.spawn(id, &call, "call", async move {
            run_call(&ctx, caller, origin, inputs, too_many).await
        });
    }

    fn hand_over(&mut self, handoff: Handoff) {
        let Handoff::Reply { call, from, to } = handoff;
        if self.draining {
            return self.refuse(call);
        }
        let too_many = self.too_many(from.as_str());
        let (id, origin, mut inputs) = self.open(&call, from.as_str());
        let ctx = self.ctx.clone();
        self.spawn(id, &call.clone(), "reply", async move {
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
                endpoint: None,
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
        self.spawn(id, &call.clone(), "missed-call retrieval", async move {
            retrieve::missed_call(&ctx, call, item, inputs).await
        });
    }
}

pub(super) struct Caller {
    pub call: CallId,
    /// The caller-ID number: the sender of a message.
    pub number: String,
    pub name: String,
    pub dialed: String,
    /// Who the switch vouches the caller is: whose messages retrieval
    /// plays without a PIN (none: a PIN is asked).
    pub endpoint: Option<String>,
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
