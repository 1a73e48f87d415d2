//! The runtime of `ivm serve`: wires switch events to session engines, carries
//! out their actions on the switch and the store, and pumps each message's
//! audio from the switch's recording into fragments and a listen stream.
//!
//! Owns: routing (which session a call or an originate belongs to), the
//! per-session task, recovery of messages cut short by a crash. Must not
//! know: any switch's syntax (it holds an `Arc<dyn Switch>`).

mod notifications;
pub mod pump;
mod retrieve;
mod sounds;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::domain::{DeliveryState, Extension, MessageCode, MessageId, MessageState};
use crate::engine::announcement::Announcement;
use crate::engine::pin::Misses;
use crate::engine::retrieval::Request;
use crate::engine::sounds as prompt;
use crate::engine::{Action, Delivery, Flow, Input, SessionConfig, TimerId};
use crate::media::AudioFormat;
use crate::notify::switch::MissedCalls;
use crate::numbering::{DialKind, NumberPlan, Target};
use crate::store::{NewMessage, Store, StoreError, StoreHandle};
use crate::switch::asterisk::{AsteriskSwitch, AsteriskSwitchOptions};
use crate::switch::freeswitch::{FreeswitchSwitch, FreeswitchSwitchOptions};
use crate::switch::{CallId, HangupCause, OriginateId, Switch, SwitchEvent};

use self::pump::Pump;

/// How often the pump looks at the growing recording.
const PUMP_INTERVAL: Duration = Duration::from_millis(10);
/// A recording that has not grown for this long after it was stopped is
/// complete (the switch flushes its last buffer on close).
const CAPTURE_SETTLE: Duration = Duration::from_millis(300);
/// How long the listener menu waits for a key after its prompt.
const MENU_TIMEOUT: Duration = Duration::from_secs(8);
/// How often unheard messages are checked for `[notify] expire_hours`.
const EXPIRE_CHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("switch: {0}")]
    Switch(#[from] crate::switch::SwitchError),
    #[error("no switch configured: add an [asterisk] (or [freeswitch]) section to ivm.toml")]
    NoSwitch,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Notify(String),
}

/// What `run` tells its caller once it is serving.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Where Asterisk's FastAGI connects, when Asterisk is configured.
    pub agi_address: Option<std::net::SocketAddr>,
    /// Where FreeSWITCH's `socket` application connects, when configured.
    pub outbound_address: Option<std::net::SocketAddr>,
}

/// Formats a capture may have been recorded in, by file extension.
const CAPTURE_FORMATS: &[(&str, AudioFormat)] = &[
    (
        "sln48",
        AudioFormat::Slin {
            sample_rate: 48_000,
        },
    ),
    ("r8", AudioFormat::Slin { sample_rate: 8_000 }),
];

struct Ctx {
    config: Config,
    plan: NumberPlan,
    switch: Arc<dyn Switch>,
    store: StoreHandle,
    data_dir: PathBuf,
    messages_dir: PathBuf,
    outbox: crate::notify::Outbox,
    /// Recent retrieval misses per user (the lock-out count).
    misses: Arc<Mutex<Misses>>,
    /// Smart-caller-ID calls in flight: which outbox item each announces.
    missed_calls: Arc<MissedCalls>,
    /// Flows hand a call over to a new flow through the router.
    handoff: mpsc::UnboundedSender<Handoff>,
}

/// A call a flow hands over to the router for a new flow.
#[derive(Debug)]
enum Handoff {
    /// The listener replies: a new message from `from` to `to` on `call`.
    Reply {
        call: CallId,
        from: Extension,
        to: Extension,
    },
}

/// Serve until `shutdown` turns true, on the switches `config` names.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ServerError> {
    let sounds_dir = config.data_dir.join("sounds");
    let mut switches: Vec<Arc<dyn Switch>> = Vec::new();
    let mut ready_info = Ready {
        agi_address: None,
        outbound_address: None,
    };
    if let Some(asterisk) = config.asterisk.clone() {
        let switch = AsteriskSwitch::start(
            asterisk,
            AsteriskSwitchOptions {
                sounds_dir: Some(sounds_dir.clone()),
            },
            shutdown.clone(),
        )
        .await?;
        if let Err(e) = switch.wait_connected(Duration::from_secs(5)).await {
            warn!("not connected to asterisk yet ({e}); retrying in the background");
        }
        ready_info.agi_address = Some(switch.agi_address());
        switches.push(Arc::new(switch));
    }
    if let Some(freeswitch) = config.freeswitch.clone() {
        let switch = FreeswitchSwitch::start(
            freeswitch,
            FreeswitchSwitchOptions {
                sounds_dir: Some(sounds_dir.clone()),
                ..FreeswitchSwitchOptions::default()
            },
            shutdown.clone(),
        )
        .await?;
        ready_info.outbound_address = Some(switch.outbound_address());
        switches.push(Arc::new(switch));
    }
    serve(config, switches, ready_info, shutdown, ready).await
}

/// Serve on switches already started (a test's fake switch, or those `run`
/// started) until `shutdown` turns true. `ready` hears `ready_info` once
/// serving.
pub async fn serve(
    config: Config,
    switches: Vec<Arc<dyn Switch>>,
    ready_info: Ready,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ServerError> {
    if switches.is_empty() {
        return Err(ServerError::NoSwitch);
    }
    let data_dir = config.data_dir.clone();
    let messages_dir = data_dir.join("messages");
    std::fs::create_dir_all(&messages_dir)?;
    let mut store = Store::open(&data_dir)?;
    let recovered = recover(&mut store, &data_dir)?;
    if recovered > 0 {
        info!(
            recovered,
            "messages cut short by a stop were recovered as partial"
        );
    }
    let store = StoreHandle::spawn(store)?;
    sounds::install(&data_dir.join("sounds"))?;
    let plan = NumberPlan::new(config.numbering.clone());
    // One outbox; the switch channels go through the first switch.
    let missed_calls = Arc::new(MissedCalls::default());
    let notify = notifications::start(
        &config.notify,
        store.clone(),
        switches[0].clone(),
        missed_calls.clone(),
        shutdown.clone(),
    )
    .await?;
    let misses = Arc::new(Mutex::new(Misses::default()));
    let mut loops = Vec::new();
    loops.push(tokio::spawn(expire_periodically(
        store.clone(),
        notify.outbox.clone(),
        config.notify.clone(),
        shutdown.clone(),
    )));
    for switch in switches {
        let events = switch.events();
        let (handoff, handoffs) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            plan: plan.clone(),
            config: config.clone(),
            switch,
            store: store.clone(),
            data_dir: data_dir.clone(),
            messages_dir: messages_dir.clone(),
            outbox: notify.outbox.clone(),
            misses: misses.clone(),
            missed_calls: missed_calls.clone(),
            handoff,
        });
        loops.push(tokio::spawn(serve_switch(
            ctx,
            events,
            handoffs,
            shutdown.clone(),
        )));
    }
    info!(?ready_info, "serving");
    if let Some(ready) = ready {
        let _ = ready.send(ready_info);
    }
    for task in loops {
        let _ = task.await;
    }
    // The worker finishes the sends in flight and records their outcomes.
    for task in notify.tasks {
        let _ = task.await;
    }
    info!("stopping");
    Ok(())
}

/// Expire old unheard messages now and every [`EXPIRE_CHECK`] until shutdown.
async fn expire_periodically(
    store: StoreHandle,
    outbox: crate::notify::Outbox,
    config: crate::notify::NotifyConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            _ = tick.tick() => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        };
        if !due {
            break;
        }
        if let Err(e) =
            notifications::expire(&store, &outbox, &config, crate::store::now_ms()).await
        {
            warn!("cannot expire old messages: {e}");
        }
    }
}

/// Route one switch's events to its flows until shutdown: the one path
/// from the switch to the engine.
async fn serve_switch(
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
        let origin = OriginateId(format!("ivm-{id}-{}", crate::store::now_ms()));
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
            if too_many {
                return announce(&ctx, &call, prompt::TOO_MANY, &mut inputs).await;
            }
            // A sender is whatever caller ID their switch showed: only
            // digits can be rung back.
            if to.is_empty() || !to.as_str().bytes().all(|b| b.is_ascii_digit()) {
                info!("the sender cannot be replied to");
                return announce(&ctx, &call, prompt::INVALID, &mut inputs).await;
            }
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

struct Caller {
    call: CallId,
    number: String,
    name: String,
    dialed: String,
}

/// Answer, say `prompt`, hang up: for calls `ivm` cannot serve.
async fn announce(
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
    let dialed = match ctx.plan.parse(&caller.dialed) {
        Ok(dialed) => dialed,
        Err(e) => {
            info!(reason = %e, "dialled string not in the number plan");
            return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await;
        }
    };
    if matches!(dialed.kind, DialKind::Retrieve | DialKind::RetrieveNext) {
        let request = match (dialed.kind, dialed.message_code) {
            (DialKind::Retrieve, Some(code)) => match MessageCode::parse(&code) {
                Some(code) => Request::Code(code),
                None => return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await,
            },
            _ => Request::NewestUnheard,
        };
        return retrieve::serve(ctx, &caller, request, inputs).await;
    }
    if too_many {
        return announce(ctx, &caller.call, prompt::TOO_MANY, &mut inputs).await;
    }
    let target = match (dialed.kind, dialed.targets.first()) {
        (DialKind::Message, Some(Target::Extension(t) | Target::Number(t))) => t.clone(),
        (DialKind::Message, Some(Target::Ip(ip))) => ip.to_string(),
        (DialKind::Reply, _) => {
            let to = caller.number.clone();
            match ctx.store.call(move |s| s.last_sender_to(&to)).await?? {
                Some(last) => last,
                None => return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await,
            }
        }
        // Groups are served by a later part of ivm.
        _ => return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await,
    };
    deliver(ctx, caller, Extension(target), origin, inputs).await
}

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
trait FlowMedia: Send {
    /// Carry out a media action; false if it is not one.
    async fn perform(&mut self, ctx: &Ctx, action: &Action) -> Result<bool, ServerError>;
    /// Called every [`PUMP_INTERVAL`] while `wants_ticks`; returns inputs.
    async fn tick(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError>;
    fn wants_ticks(&self) -> bool;
    /// Sees each input before the flow does.
    fn observe(&mut self, _input: &Input) {}
}

/// A flow without media of its own.
struct NoMedia;

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
async fn drive(
    ctx: &Ctx,
    mut flow: impl Flow + Send,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
    media: &mut impl FlowMedia,
) -> Result<(), ServerError> {
    let mut timers = Timers::default();
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
            if media.perform(ctx, &action).await? {
                continue;
            }
            if let Some(input) = perform(ctx, action).await? {
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
        Action::Lookup { user, query } => {
            return retrieve::lookup(ctx, user, query).await.map(Some);
        }
        Action::VerifyPin { user, pin } => {
            return retrieve::verify_pin(ctx, user, pin).await.map(Some);
        }
        Action::CountMiss { user, miss } => {
            retrieve::count_miss(ctx, &user, miss);
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

/// One message from `caller` to `target`: its store rows and files, its
/// media pump, and its delivery flow.
async fn deliver(
    ctx: &Ctx,
    caller: Caller,
    target: Extension,
    origin: OriginateId,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let sender = Extension(caller.number.clone());
    let user = {
        let number = sender.0.clone();
        ctx.store.call(move |s| s.user(&number)).await??
    };
    let sender_name = match user {
        Some(user) => user.name,
        None if !caller.name.is_empty() => caller.name.clone(),
        None => sender.0.clone(),
    };

    let (capture_format, capture_extension) = ctx.switch.capture_format();
    let stem = format!("{}-{}", crate::store::now_ms(), origin.0);
    let capture = ctx.messages_dir.join(format!("{stem}.{capture_extension}"));
    let message_path = ctx.messages_dir.join(format!("{stem}.sln"));
    let listen_path = ctx.messages_dir.join(format!("{stem}.listen.sln"));
    let relative = format!("messages/{stem}.sln");
    let message_id = create_message(ctx, sender.as_str(), target.as_str(), &relative).await?;
    info!(%message_id, "instant message started");

    let config = SessionConfig {
        caller: caller.call.clone(),
        sender_name: sender_name.clone(),
        sender_number: sender.clone(),
        target: target.clone(),
        origin,
        capture_path: capture.clone(),
        capture_format,
        listen_path: listen_path.clone(),
        ring_timeout: Duration::from_secs(u64::from(ctx.config.delivery.ring_timeout_seconds)),
        max_message: Duration::from_secs(u64::from(ctx.config.limits.max_message_seconds)),
        // 100 ms: one Asterisk flush of the capture is 85 ms.
        min_play_samples: 800,
        menu_timeout: MENU_TIMEOUT,
    };
    let pump = Pump::new(
        &capture,
        capture_format,
        &message_path,
        &listen_path,
        ctx.config.delivery.catch_up_speed as f32,
    )?;
    let flow = Delivery::start(config, Instant::now().into_std());
    let mut media = DeliveryMedia {
        message_id,
        sender,
        sender_name,
        target,
        caller: caller.call.clone(),
        capture: capture.clone(),
        pump,
        capture_stopping: None,
        last_capture_len: 0,
        recording_done: false,
        listener: None,
        last_listen: 0,
    };
    drive(ctx, flow, &mut inputs, &mut media).await?;
    if media.recording_done {
        finish_message(ctx, message_id, &message_path, &capture).await;
    }
    Ok(())
}

/// The media of a delivery: the pump from the switch's recording to the
/// stored message and the listen stream, and the message's store rows.
struct DeliveryMedia {
    message_id: MessageId,
    sender: Extension,
    sender_name: String,
    target: Extension,
    caller: CallId,
    capture: PathBuf,
    pump: Pump,
    /// Since when the recording has been stopping (caller gone or stopped).
    capture_stopping: Option<Instant>,
    last_capture_len: u64,
    recording_done: bool,
    /// The listener's position and when its current play started.
    listener: Option<(u64, Option<Instant>)>,
    last_listen: u64,
}

impl FlowMedia for DeliveryMedia {
    async fn perform(&mut self, ctx: &Ctx, action: &Action) -> Result<bool, ServerError> {
        let message_id = self.message_id;
        match action {
            Action::StopRecording(_) => {
                self.capture_stopping.get_or_insert_with(Instant::now);
                return Ok(false);
            }
            Action::ListenerAt { position, since } => {
                self.listener = Some((*position, since.map(Instant::from_std)));
            }
            Action::MessageState(state) => {
                let state = *state;
                let duration = (state != MessageState::Recording)
                    .then(|| (self.pump.message_samples() / 8) as i64);
                ctx.store
                    .call(move |s| s.set_message_state(message_id, state, duration))
                    .await??;
            }
            Action::DeliveryState { state, position } => {
                // Stored in samples of the message, not of the listen stream.
                let position = self.pump.recording_position_at(*position);
                let (state, target) = (*state, self.target.clone());
                ctx.store
                    .call(move |s| {
                        s.set_delivery_progress(message_id, target.as_str(), state, position)
                    })
                    .await??;
            }
            Action::NotHeard { state } => self.not_heard(ctx, *state).await,
            _ => return Ok(false),
        }
        Ok(true)
    }

    async fn tick(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError> {
        let now = Instant::now();
        let mut inputs = Vec::new();
        if let Some((position, since)) = self.listener {
            let played = since.map_or(0, |s| (now.duration_since(s).as_millis() as u64) * 8);
            self.pump
                .set_listener_played((position + played).min(self.pump.listen_samples()));
        }
        let fragments = self.pump.poll()?;
        index(ctx, self.message_id, fragments).await?;
        let listen = self.pump.listen_samples();
        if listen > self.last_listen {
            self.last_listen = listen;
            inputs.push(Input::ListenGrew { samples: listen });
        }
        if let Some(since) = self.capture_stopping {
            let len = std::fs::metadata(&self.capture)
                .map(|m| m.len())
                .unwrap_or(0);
            if len != self.last_capture_len {
                self.last_capture_len = len;
                self.capture_stopping = Some(now);
            } else if now.duration_since(since) >= CAPTURE_SETTLE {
                let fragments = self.pump.finish()?;
                index(ctx, self.message_id, fragments).await?;
                self.recording_done = true;
                inputs.push(Input::RecordingDone {
                    samples: self.pump.listen_samples(),
                });
            }
        }
        Ok(inputs)
    }

    fn wants_ticks(&self) -> bool {
        !self.recording_done
    }

    fn observe(&mut self, input: &Input) {
        if let Input::HungUp { call, .. } = input
            && *call == self.caller
        {
            self.caller_gone();
        }
    }
}

impl DeliveryMedia {
    /// The caller is gone: the recording is stopping.
    fn caller_gone(&mut self) {
        self.capture_stopping.get_or_insert_with(Instant::now);
    }

    async fn not_heard(&self, ctx: &Ctx, state: DeliveryState) {
        let message_id = self.message_id;
        info!(
            %message_id,
            %state,
            "message not heard live: stored for the target"
        );
        let (sender, target) = (self.sender.as_str(), self.target.as_str());
        if state == DeliveryState::Rejected {
            // Nothing to tell the target; the sender hears of it.
            if let Err(e) = notifications::sender_status(
                &ctx.store,
                &ctx.outbox,
                &ctx.config.notify,
                crate::notify::SenderStatus::Rejected,
                message_id,
                sender,
                target,
            )
            .await
            {
                warn!(%message_id, "cannot write the status to the sender: {e}");
            }
        } else {
            let not_heard = notifications::NotHeard {
                message_id,
                target,
                sender,
                sender_name: &self.sender_name,
                duration_seconds: (self.pump.message_samples() / 8000) as u32,
            };
            if let Err(e) = notifications::not_heard(
                &ctx.store,
                &ctx.outbox,
                &ctx.config.notify,
                &ctx.plan,
                not_heard,
            )
            .await
            {
                warn!(%message_id, "cannot write the notifications: {e}");
            }
        }
    }
}

async fn create_message(
    ctx: &Ctx,
    sender: &str,
    target: &str,
    path: &str,
) -> Result<MessageId, ServerError> {
    let (sender, target, path) = (sender.to_owned(), target.to_owned(), path.to_owned());
    let digits = ctx.plan.config().message_code_digits;
    let kind = if target.len() <= ctx.plan.config().extension_max_digits {
        "extension"
    } else {
        "number"
    };
    let id = ctx
        .store
        .call(move |s| {
            // A code is unique per target; retry the rare collision.
            let mut last = None;
            for _ in 0..20 {
                let code = random_code(digits);
                match s.create_message(&NewMessage {
                    sender: &sender,
                    group_number: None,
                    audio_format: "sln",
                    sample_rate: 8000,
                    audio_path: &path,
                    targets: vec![(kind, &target, &code)],
                }) {
                    Ok(id) => return Ok(id),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or(StoreError::Closed))
        })
        .await??;
    Ok(id)
}

fn random_code(digits: usize) -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    (0..digits)
        .map(|_| char::from(b'0' + (OsRng.next_u32() % 10) as u8))
        .collect()
}

async fn index(
    ctx: &Ctx,
    message_id: MessageId,
    fragments: Vec<pump::Fragment>,
) -> Result<(), ServerError> {
    if fragments.is_empty() {
        return Ok(());
    }
    ctx.store
        .call(move |s| {
            for f in fragments {
                s.add_fragment(message_id, f.index, f.byte_offset, f.length)?;
            }
            Ok::<(), StoreError>(())
        })
        .await??;
    Ok(())
}

/// The message is over: keep it as a standard WAV too, drop the capture.
async fn finish_message(ctx: &Ctx, message_id: MessageId, message: &Path, capture: &Path) {
    match write_wav_of(message) {
        Ok(relative) => {
            let _ = ctx
                .store
                .call(move |s| s.set_wav_path(message_id, &relative))
                .await;
            let _ = std::fs::remove_file(capture);
        }
        Err(e) => warn!(%message_id, "cannot write the message's WAV: {e}"),
    }
}

/// Write the message's WAV beside it; returns its path as the store keeps it.
fn write_wav_of(message: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(message)?;
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let wav = message.with_extension("wav");
    // A standard WAV (hound), written to a temporary file and renamed.
    crate::media::wav::write_wav(&wav, &samples, 8000).map_err(std::io::Error::other)?;
    let name = wav
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!("messages/{name}"))
}

/// Messages a stop cut short: state `recording` becomes `partial`; whatever
/// the switch wrote after our last poll is converted and indexed too, and
/// deliveries still in flight become `unheard`.
fn recover(store: &mut Store, data_dir: &Path) -> Result<usize, ServerError> {
    let cut_short = store.messages_in_state(MessageState::Recording)?;
    for (id, audio_path) in &cut_short {
        let message = data_dir.join(audio_path);
        let capture = CAPTURE_FORMATS
            .iter()
            .map(|(extension, format)| (message.with_extension(extension), *format))
            .find(|(path, _)| path.exists());
        if let Some((capture, format)) = capture {
            // Re-derive the stored message from the whole capture.
            let listen = message.with_extension("listen.sln");
            let _ = std::fs::remove_file(&message);
            let _ = std::fs::remove_file(&listen);
            let mut pump = Pump::new(&capture, format, &message, &listen, 1.0)?;
            let fragments = pump.finish()?;
            store.replace_fragments(
                *id,
                &fragments
                    .iter()
                    .map(|f| (f.index, f.byte_offset, f.length))
                    .collect::<Vec<_>>(),
            )?;
            let duration = (pump.message_samples() / 8) as i64;
            store.set_message_state(*id, MessageState::Partial, Some(duration))?;
        } else {
            store.set_message_state(*id, MessageState::Partial, None)?;
        }
        if let Ok(relative) = write_wav_of(&message) {
            store.set_wav_path(*id, &relative)?;
        }
        store.end_open_deliveries(*id, DeliveryState::Unheard)?;
    }
    Ok(cut_short.len())
}
