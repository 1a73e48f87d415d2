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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::engine::{Action, DeliveryState, Input, MessageState, Session, SessionConfig};
use crate::media::AudioFormat;
use crate::numbering::{DialKind, NumberPlan, Target};
use crate::store::{NewMessage, Store, StoreError, StoreHandle};
use crate::switch::asterisk::{AsteriskSwitch, AsteriskSwitchOptions};
use crate::switch::freeswitch::{FreeswitchSwitch, FreeswitchSwitchOptions};
use crate::switch::{CallId, HangupCause, Media, OriginateId, PlayRequest, Switch, SwitchEvent};

use self::pump::Pump;

/// How often the pump looks at the growing recording.
const PUMP_INTERVAL: Duration = Duration::from_millis(10);
/// A recording that has not grown for this long after it was stopped is
/// complete (the switch flushes its last buffer on close).
const CAPTURE_SETTLE: Duration = Duration::from_millis(300);
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
    attempts: Arc<retrieve::Attempts>,
    /// Feeds events back to this switch's router: a listener who replies
    /// becomes the caller of a new message on the same call.
    reinject: mpsc::UnboundedSender<SwitchEvent>,
}

impl Ctx {
    /// Start a message from `from` to `to` on a call that is already up, as
    /// if it had dialled the message code and `to` (the listener's reply).
    fn reply(&self, call: CallId, from: &str, to: &str) {
        let _ = self.reinject.send(SwitchEvent::IncomingCall {
            call,
            caller_number: from.to_owned(),
            caller_name: String::new(),
            dialed: format!("{}{}", self.plan.config().message_code, to),
            origin: None,
        });
    }
}

/// Serve until `shutdown` turns true.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ServerError> {
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
    let sounds_dir = data_dir.join("sounds");
    sounds::install(&sounds_dir)?;

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
                dial_policy: crate::switch::peer::DialPolicy::from_numbering(&config.numbering),
                max_pending_per_peer: config.limits.max_pending_connections_per_peer as usize,
                ..AsteriskSwitchOptions::default()
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
    if switches.is_empty() {
        return Err(ServerError::NoSwitch);
    }
    let plan = NumberPlan::new(config.numbering.clone());
    // One outbox; the switch channels go through the first switch.
    let notify = notifications::start(
        &config.notify,
        store.clone(),
        switches[0].clone(),
        shutdown.clone(),
    )
    .await?;
    let attempts = Arc::new(retrieve::Attempts::default());
    let mut loops = Vec::new();
    loops.push(tokio::spawn(expire_periodically(
        store.clone(),
        notify.outbox.clone(),
        config.notify.clone(),
        shutdown.clone(),
    )));
    for switch in switches {
        let events = switch.events();
        let (reinject, reinjected) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            plan: plan.clone(),
            config: config.clone(),
            switch,
            store: store.clone(),
            data_dir: data_dir.clone(),
            messages_dir: messages_dir.clone(),
            outbox: notify.outbox.clone(),
            attempts: attempts.clone(),
            reinject,
        });
        loops.push(tokio::spawn(serve_switch(
            ctx,
            events,
            reinjected,
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

/// Route one switch's events to its sessions until shutdown.
async fn serve_switch(
    ctx: Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<SwitchEvent>,
    mut reinjected: mpsc::UnboundedReceiver<SwitchEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<u64>();
    let mut router = Router::default();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                router.route(&ctx, event, &ended_tx);
            }
            Some(event) = reinjected.recv() => router.route(&ctx, event, &ended_tx),
            Some(id) = ended.recv() => router.forget(id),
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
}

#[derive(Default)]
struct Router {
    next: u64,
    sessions: HashMap<u64, (String, mpsc::UnboundedSender<Input>)>,
    by_call: HashMap<CallId, u64>,
    by_origin: HashMap<OriginateId, u64>,
}

impl Router {
    fn route(&mut self, ctx: &Arc<Ctx>, event: SwitchEvent, ended: &mpsc::UnboundedSender<u64>) {
        let (key, input) = match event {
            SwitchEvent::IncomingCall {
                call,
                caller_number,
                caller_name,
                dialed,
                ..
            } => {
                self.incoming(ctx, call, caller_number, caller_name, dialed, ended);
                return;
            }
            SwitchEvent::Answered { origin, call } => {
                if let Some(outbox_id) = missed_call_outbox_id(&origin) {
                    self.missed_call_answered(ctx, call, outbox_id, ended);
                    return;
                }
                let Some(&id) = self.by_origin.get(&origin) else {
                    warn!(%call, "an answered call for no known message; hanging up");
                    let switch = ctx.switch.clone();
                    tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
                    return;
                };
                self.by_call.insert(call.clone(), id);
                (id, Input::Answered { origin, call })
            }
            SwitchEvent::OriginateFailed { origin, cause } => match self.by_origin.get(&origin) {
                Some(&id) => (id, Input::OriginateFailed { origin, cause }),
                None => return,
            },
            SwitchEvent::HungUp { call, cause } => match self.by_call.remove(&call) {
                Some(id) => (id, Input::HungUp { call, cause }),
                None => return,
            },
            SwitchEvent::Dtmf { call, digit } => match self.by_call.get(&call) {
                Some(&id) => (id, Input::Dtmf { call, digit }),
                None => return,
            },
            SwitchEvent::PlaybackFinished {
                call,
                stopped_at_sample,
                interrupted_by,
            } => match self.by_call.get(&call) {
                Some(&id) => (
                    id,
                    Input::PlaybackFinished {
                        call,
                        stopped_at_sample,
                        interrupted_by,
                    },
                ),
                None => return,
            },
            other => {
                debug!(?other, "switch event with no session");
                return;
            }
        };
        if let Some((_, tx)) = self.sessions.get(&key) {
            let _ = tx.send(input);
        }
    }

    fn forget(&mut self, id: u64) {
        self.sessions.remove(&id);
        self.by_call.retain(|_, s| *s != id);
        self.by_origin.retain(|_, s| *s != id);
    }

    fn active_for(&self, sender: &str) -> usize {
        self.sessions.values().filter(|(s, _)| s == sender).count()
    }

    /// A smart-caller-ID call was answered: its own session plays the message.
    fn missed_call_answered(
        &mut self,
        ctx: &Arc<Ctx>,
        call: CallId,
        outbox_id: i64,
        ended: &mpsc::UnboundedSender<u64>,
    ) {
        let id = self.next;
        self.next += 1;
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.sessions.insert(id, (String::new(), tx));
        self.by_call.insert(call.clone(), id);
        let ctx = ctx.clone();
        let ended = ended.clone();
        tokio::spawn(async move {
            if let Err(e) = retrieve::serve_missed_call(&ctx, &call, outbox_id, &mut rx).await {
                warn!("missed-call session ended with an error: {e}");
            }
            let _ = ended.send(id);
        });
    }

    fn incoming(
        &mut self,
        ctx: &Arc<Ctx>,
        call: CallId,
        caller_number: String,
        caller_name: String,
        dialed: String,
        ended: &mpsc::UnboundedSender<u64>,
    ) {
        let id = self.next;
        self.next += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let too_many = self.active_for(&caller_number)
            >= ctx.config.limits.max_concurrent_messages_per_user as usize;
        self.sessions.insert(id, (caller_number.clone(), tx));
        self.by_call.insert(call.clone(), id);
        let origin = crate::switch::peer::originate_id(Some(&call));
        self.by_origin.insert(origin.clone(), id);
        let ctx = ctx.clone();
        let ended = ended.clone();
        tokio::spawn(async move {
            let caller = Caller {
                call,
                number: caller_number,
                name: caller_name,
                dialed,
            };
            if let Err(e) = run_call(&ctx, caller, origin, rx, too_many).await {
                warn!("session ended with an error: {e}");
            }
            let _ = ended.send(id);
        });
    }
}

/// The outbox id in a smart-caller-ID originate id (`notify-<id>-<attempt>`).
fn missed_call_outbox_id(origin: &OriginateId) -> Option<i64> {
    let rest = origin
        .0
        .strip_prefix(crate::notify::switch::MISSED_CALL_ORIGIN_PREFIX)?;
    rest.split_once('-')?.0.parse().ok()
}

struct Caller {
    call: CallId,
    number: String,
    name: String,
    dialed: String,
}

/// Answer, say `sound`, hang up: for calls `ivm` cannot serve.
async fn refuse(
    ctx: &Ctx,
    call: &CallId,
    sound: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) {
    if ctx.switch.answer(call).await.is_err() {
        return;
    }
    let request = PlayRequest {
        media: Media::Sound(sound.to_owned()),
        from_sample: 0,
        interrupt_digits: String::new(),
    };
    if ctx.switch.play(call, request).await.is_ok() {
        // Wait for the prompt to end (or the caller to go), then hang up.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(input) = inputs.recv().await {
                if matches!(input, Input::PlaybackFinished { .. } | Input::HungUp { .. }) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = ctx.switch.hangup(call, HangupCause::Normal).await;
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
            refuse(ctx, &caller.call, sounds::INVALID, &mut inputs).await;
            return Ok(());
        }
    };
    if matches!(dialed.kind, DialKind::Retrieve | DialKind::RetrieveNext) {
        return retrieve::serve(ctx, &caller, dialed.kind, dialed.message_code, &mut inputs).await;
    }
    if too_many {
        refuse(ctx, &caller.call, sounds::TOO_MANY, &mut inputs).await;
        return Ok(());
    }
    let sender = caller.number.clone();
    let target = match (dialed.kind, dialed.targets.first()) {
        (DialKind::Message, Some(Target::Extension(t) | Target::Number(t))) => t.clone(),
        (DialKind::Message, Some(Target::Ip(ip))) => ip.to_string(),
        (DialKind::Reply, _) => {
            let to = sender.clone();
            match ctx.store.call(move |s| s.last_sender_to(&to)).await?? {
                Some(last) => last,
                None => {
                    refuse(ctx, &caller.call, sounds::INVALID, &mut inputs).await;
                    return Ok(());
                }
            }
        }
        _ => {
            // Groups are served by a later part of ivm.
            refuse(ctx, &caller.call, sounds::INVALID, &mut inputs).await;
            return Ok(());
        }
    };
    let user = {
        let number = sender.clone();
        ctx.store.call(move |s| s.user(&number)).await??
    };
    let sender_name = match user {
        Some(user) => user.name,
        None if !caller.name.is_empty() => caller.name.clone(),
        None => sender.clone(),
    };

    let (capture_format, capture_extension) = ctx.switch.capture_format();
    let stem = format!("{}-{}", crate::store::now_ms(), origin.0);
    let capture = ctx.messages_dir.join(format!("{stem}.{capture_extension}"));
    let message_path = ctx.messages_dir.join(format!("{stem}.sln"));
    let listen_path = ctx.messages_dir.join(format!("{stem}.listen.sln"));
    let relative = format!("messages/{stem}.sln");
    let message_id = create_message(ctx, &sender, &target, &relative).await?;
    info!(message_id, "instant message started");

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
        menu_timeout: Duration::from_secs(8),
    };
    let mut pump = Pump::new(
        &capture,
        capture_format,
        &message_path,
        &listen_path,
        ctx.config.delivery.catch_up_speed as f32,
    )?;
    let mut session = Session::start(config, Instant::now().into_std());
    // Every wake-up the engine asked for: the ring backstop must not replace
    // the max-length timer.
    let mut wakes: std::collections::BTreeSet<Instant> = std::collections::BTreeSet::new();
    let mut capture_stopping: Option<Instant> = None;
    let mut last_capture_len = 0u64;
    let mut recording_done = false;
    let mut listener: Option<(u64, Option<Instant>)> = None;
    let mut last_listen = 0u64;
    let mut tick = tokio::time::interval(PUMP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Done => {
                    finish_message(ctx, message_id, &message_path, &capture).await;
                    return Ok(());
                }
                Action::WakeAt(at) => {
                    let at = Instant::from_std(at);
                    wakes.insert(at);
                }
                Action::StopRecording(call) => {
                    capture_stopping.get_or_insert_with(Instant::now);
                    if let Err(e) = ctx.switch.stop_recording(&call).await {
                        debug!("stop recording: {e}");
                    }
                }
                Action::ListenerAt { position, since } => {
                    listener = Some((position, since.map(Instant::from_std)));
                }
                Action::MessageState(state) => {
                    let (state, duration) = match state {
                        MessageState::Recording => ("recording", None),
                        MessageState::Complete => {
                            ("complete", Some((pump.message_samples() / 8) as i64))
                        }
                    };
                    ctx.store
                        .call(move |s| s.set_message_state(message_id, state, duration))
                        .await??;
                }
                Action::DeliveryState { state, position } => {
                    // Stored in samples of the message, not of the listen stream.
                    let position = pump.recording_position_at(position);
                    let target = target.clone();
                    ctx.store
                        .call(move |s| {
                            s.set_delivery_progress(message_id, &target, state.as_str(), position)
                        })
                        .await??;
                }
                Action::NotHeard { state } => {
                    info!(
                        message_id,
                        state = state.as_str(),
                        "message not heard live: stored for the target"
                    );
                    if state == DeliveryState::Rejected {
                        // Nothing to tell the target; the sender hears of it.
                        if let Err(e) = notifications::sender_status(
                            &ctx.store,
                            &ctx.outbox,
                            &ctx.config.notify,
                            crate::notify::SenderStatus::Rejected,
                            message_id,
                            &sender,
                            &target,
                        )
                        .await
                        {
                            warn!(message_id, "cannot write the status to the sender: {e}");
                        }
                    } else {
                        let not_heard = notifications::NotHeard {
                            message_id,
                            target: &target,
                            sender: &sender,
                            sender_name: &sender_name,
                            duration_seconds: (pump.message_samples() / 8000) as u32,
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
                            warn!(message_id, "cannot write the notifications: {e}");
                        }
                    }
                }
                Action::Reply(call) => {
                    // The listener records a message back on the same call:
                    // the router starts a new session as if it had dialled
                    // the message code and the sender.
                    ctx.reply(call, &target, &sender);
                }
                Action::CallBack(call) => {
                    // A plain call from the listener to the sender.
                    if let Err(e) = ctx.switch.connect(&call, &sender).await {
                        warn!("call back failed: {e}");
                        let _ = ctx.switch.hangup(&call, HangupCause::Normal).await;
                    }
                }
                other => carry_out(ctx, &mut session, other).await,
            }
        }
        let now = Instant::now();
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return Ok(()) };
                if let Input::HungUp { call, .. } = &input
                    && *call == caller.call
                {
                    capture_stopping.get_or_insert(now);
                }
                session.handle_input(Instant::now().into_std(), input);
            }
            _ = async {
                match wakes.first() {
                    Some(at) => tokio::time::sleep_until(*at).await,
                    None => std::future::pending().await,
                }
            } => {
                wakes.pop_first();
                session.handle_input(Instant::now().into_std(), Input::Timer);
            }
            _ = tick.tick() => {
                if recording_done {
                    continue;
                }
                if let Some((position, since)) = listener {
                    let played = since.map_or(0, |s| (now.duration_since(s).as_millis() as u64) * 8);
                    pump.set_listener_played((position + played).min(pump.listen_samples()));
                }
                let fragments = pump.poll()?;
                index(ctx, message_id, fragments).await?;
                let listen = pump.listen_samples();
                if listen > last_listen {
                    last_listen = listen;
                    session.handle_input(Instant::now().into_std(), Input::ListenGrew { samples: listen });
                }
                if let Some(since) = capture_stopping {
                    let len = std::fs::metadata(&capture).map(|m| m.len()).unwrap_or(0);
                    if len != last_capture_len {
                        last_capture_len = len;
                        capture_stopping = Some(now);
                    } else if now.duration_since(since) >= CAPTURE_SETTLE {
                        let fragments = pump.finish()?;
                        index(ctx, message_id, fragments).await?;
                        recording_done = true;
                        session.handle_input(
                            Instant::now().into_std(),
                            Input::RecordingDone { samples: pump.listen_samples() },
                        );
                    }
                }
            }
        }
    }
}

async fn carry_out(ctx: &Ctx, session: &mut Session, action: Action) {
    let result = match action {
        Action::Answer(call) => ctx.switch.answer(&call).await,
        Action::Play { call, request } => ctx.switch.play(&call, request).await,
        Action::StartRecording { call, request } => {
            ctx.switch.start_recording(&call, request).await
        }
        Action::Originate(request) => {
            let origin = request.id.clone();
            let result = ctx.switch.originate(request).await;
            if let Err(e) = &result {
                warn!("originate failed: {e}");
                session.handle_input(
                    Instant::now().into_std(),
                    Input::OriginateFailed {
                        origin,
                        cause: HangupCause::Unreachable,
                    },
                );
            }
            result
        }
        Action::Bridge(a, b) => ctx.switch.bridge(&a, &b).await,
        Action::Hangup(call, cause) => ctx.switch.hangup(&call, cause).await,
        other => {
            debug!(?other, "action needs no switch");
            Ok(())
        }
    };
    if let Err(e) = result {
        // Mostly a call that has just hung up; its HungUp event follows.
        debug!("switch action failed: {e}");
    }
}

async fn create_message(
    ctx: &Ctx,
    sender: &str,
    target: &str,
    path: &str,
) -> Result<i64, ServerError> {
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
    message_id: i64,
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
async fn finish_message(ctx: &Ctx, message_id: i64, message: &Path, capture: &Path) {
    match write_wav_of(message) {
        Ok(relative) => {
            let _ = ctx
                .store
                .call(move |s| s.set_wav_path(message_id, &relative))
                .await;
            let _ = std::fs::remove_file(capture);
        }
        Err(e) => warn!(message_id, "cannot write the message's WAV: {e}"),
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
    let cut_short = store.messages_in_state("recording")?;
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
            store.set_message_state(*id, "partial", Some(duration))?;
        } else {
            store.set_message_state(*id, "partial", None)?;
        }
        if let Ok(relative) = write_wav_of(&message) {
            store.set_wav_path(*id, &relative)?;
        }
        store.end_open_deliveries(*id, DeliveryState::Unheard.as_str())?;
    }
    Ok(cut_short.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_call_origin_names_its_outbox_item() {
        let origin = crate::notify::switch::missed_call_origin(42, 3);
        assert_eq!(missed_call_outbox_id(&origin), Some(42));
        assert_eq!(
            missed_call_outbox_id(&OriginateId("s1-1700000000000".into())),
            None
        );
        assert_eq!(
            missed_call_outbox_id(&OriginateId("notify-x-1".into())),
            None
        );
    }
}
