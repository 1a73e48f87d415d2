//! The runtime of `ivm serve`: routes switch events to the engine's flows
//! (`router`), carries out their actions on the switch, the store and the
//! files (`drive`, `deliver`, `retrieve`, `notifications`), and pumps each
//! message's audio from the switch's recording into fragments and a listen
//! stream (`pump`). Every call decision is the engine's.
//!
//! Owns: starting the switches and the outbox, recovery of messages cut
//! short by a crash. Must not know: any switch's syntax (it holds an
//! `Arc<dyn Switch>`), what a flow decides.

mod deliver;
mod drive;
mod lookup;
mod notifications;
pub mod pump;
mod reserve;
mod retrieve;
mod router;
mod sounds;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::{Config, MediaMode};
use crate::domain::{DeliveryState, Extension, MessageState};
use crate::media::AudioFormat;
use crate::notify::switch::MissedCalls;
use crate::numbering::NumberPlan;
use crate::store::{Store, StoreError, StoreHandle};
use crate::switch::asterisk::audiosocket::{MediaServer, MediaServerConfig};
use crate::switch::asterisk::{AsteriskSwitch, AsteriskSwitchOptions, audiosocket_support};
use crate::switch::freeswitch::{FreeswitchSwitch, FreeswitchSwitchOptions};
use crate::switch::{CallId, Switch};

use self::deliver::write_wav_of;
use self::pump::Pump;
use self::router::serve_switch;

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
    /// Smart-caller-ID calls in flight: which outbox item each announces.
    missed_calls: Arc<MissedCalls>,
    /// Flows hand a call over to a new flow through the router.
    handoff: mpsc::UnboundedSender<Handoff>,
    /// The server's local time of day: quiet hours are in it.
    clock: LocalClock,
    /// `[limits] max_concurrent_messages`, shared by every switch: one per
    /// caller's message while it lasts (answering legs take none).
    permits: crate::switch::peer::MessagePermits,
    /// `[presence.external]`, when configured: shared by every switch (one
    /// cache).
    external: Option<Arc<lookup::ExternalLookup>>,
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
    /// `user` returned (or a push owed to them is due): perhaps call them
    /// with their unheard messages (push when available).
    Push { user: crate::domain::UserId },
}

/// The server's local time as a minute of the day, for quiet hours, and
/// how often owed pushes are looked at. `ivm serve` uses the system's
/// ([`LocalClock::system`]); tests set the minute themselves.
#[derive(Clone)]
pub struct LocalClock {
    minute_of_day: Arc<dyn Fn() -> u16 + Send + Sync>,
    check_every: Duration,
}

impl LocalClock {
    /// The system's local time (`localtime_r`, so `TZ` and
    /// `/etc/localtime` apply); owed pushes looked at every 15 s, so a
    /// push held back by quiet hours goes out within 15 s of their end.
    pub fn system() -> Self {
        Self {
            minute_of_day: Arc::new(local_minute_of_day),
            check_every: Duration::from_secs(15),
        }
    }

    /// A clock whose minute of the day is whatever `minute` holds, owed
    /// pushes looked at every `check_every`.
    pub fn manual(minute: Arc<std::sync::atomic::AtomicU16>, check_every: Duration) -> Self {
        Self {
            minute_of_day: Arc::new(move || {
                minute.load(std::sync::atomic::Ordering::Relaxed) % crate::domain::MINUTES_PER_DAY
            }),
            check_every,
        }
    }

    fn minute(&self) -> u16 {
        (self.minute_of_day)()
    }
}

/// The minute of the day in the server's local time (UTC if the C
/// library cannot say).
fn local_minute_of_day() -> u16 {
    // SAFETY: `time` with a null pointer only returns the time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is plain data; zeroed is a valid value for it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; `localtime_r` is the
    // thread-safe form and writes only `tm`.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return ((now.rem_euclid(86_400)) / 60) as u16;
    }
    u16::try_from(tm.tm_hour * 60 + tm.tm_min)
        .unwrap_or(0)
        .min(crate::domain::MINUTES_PER_DAY - 1)
}

/// Serve until `shutdown` turns true, on the switches `config` names; then
/// wind down as [`serve`] says. The switches' connections stay up until
/// the calls are done.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ServerError> {
    let (stop_switches, switches_stopped) = watch::channel(false);
    let sounds_dir = config.sounds_dir();
    let mut switches: Vec<Arc<dyn Switch>> = Vec::new();
    let mut ready_info = Ready {
        agi_address: None,
        outbound_address: None,
    };
    if let Some(asterisk) = config.asterisk.clone() {
        let switch = AsteriskSwitch::start(
            asterisk.clone(),
            AsteriskSwitchOptions {
                sounds_dir: Some(sounds_dir.clone()),
                dial_policy: crate::switch::peer::DialPolicy::from_numbering(&config.numbering),
                max_pending_per_peer: config.limits.max_pending_connections_per_peer as usize,
                ..AsteriskSwitchOptions::default()
            },
            switches_stopped.clone(),
        )
        .await?;
        let switch = Arc::new(switch); // metrics hook
        let probe = switch.clone(); // metrics hook
        let first = async move {
            probe
                .wait_connected(Duration::from_secs(86_400))
                .await
                .is_ok()
        }; // metrics hook
        crate::metrics::watch_switch("asterisk", &(switch.clone() as Arc<dyn Switch>), first); // metrics hook
        if let Err(e) = switch.wait_connected(Duration::from_secs(5)).await {
            warn!("not connected to asterisk yet ({e}); retrying in the background");
        }
        if config.delivery.media == MediaMode::Stream {
            enable_live_stream(&switch, &asterisk, shutdown.clone()).await?;
        } else {
            info!("asterisk: live delivery through recorded files ([delivery] media = \"files\")");
        }
        ready_info.agi_address = Some(switch.agi_address());
        switches.push(switch);
    }
    if let Some(freeswitch) = config.freeswitch.clone() {
        let switch = FreeswitchSwitch::start(
            freeswitch.clone(),
            FreeswitchSwitchOptions {
                sounds_dir: Some(sounds_dir.clone()),
                verify_uuids: freeswitch.verify_uuids,
                dial_policy: crate::switch::peer::DialPolicy::from_numbering(&config.numbering),
                outbound: crate::switch::freeswitch::outbound::OutboundConfig {
                    max_pending_per_peer: config.limits.max_pending_connections_per_peer as usize,
                    ..Default::default()
                },
                ..FreeswitchSwitchOptions::default()
            },
            switches_stopped.clone(),
        )
        .await?;
        ready_info.outbound_address = Some(switch.outbound_address());
        if config.delivery.media == MediaMode::Stream {
            info!("freeswitch: no live stream yet; live delivery through recorded files");
        }
        let switch = Arc::new(switch); // metrics hook
        let probe = switch.clone(); // metrics hook
        let first = async move {
            probe
                .wait_connected(Duration::from_secs(86_400))
                .await
                .is_ok()
        }; // metrics hook
        crate::metrics::watch_switch("freeswitch", &(switch.clone() as Arc<dyn Switch>), first); // metrics hook
        switches.push(switch);
    }
    let served = serve(config, switches, ready_info, shutdown, ready).await;
    let _ = stop_switches.send(true);
    served
}

/// `[delivery] media = "stream"` on Asterisk: start the AudioSocket media
/// server if this Asterisk has `app_audiosocket`, else stay on files.
async fn enable_live_stream(
    switch: &AsteriskSwitch,
    config: &crate::config::AsteriskConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    if let Err(why) = audiosocket_support(switch.ami()).await {
        warn!("asterisk: no live stream ({why}); live delivery through recorded files");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.media_listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot listen for AudioSocket on {}: {e} (change [asterisk] media_listen, or set [delivery] media = \"files\")",
                    config.media_listen
                ),
            )
        })?;
    let server = MediaServer::start(listener, MediaServerConfig::default(), shutdown)?;
    let address = server.local_addr();
    if !address.ip().is_loopback() {
        warn!(%address, "AudioSocket has no authentication: keep this address reachable by Asterisk only");
    }
    info!(%address, "asterisk: live delivery through ivm's AudioSocket stream");
    switch.enable_media(server);
    Ok(())
}

/// Serve on switches already started (a test's fake switch, or those `run`
/// started) until `shutdown` turns true. `ready` hears `ready_info` once
/// serving. On shutdown: new calls are refused, calls in progress go on
/// for up to `[server] shutdown_grace_seconds` (then they are hung up and
/// their flows store what they have), then the outbox sends what is due
/// and finishes the sends in flight; then this returns.
pub async fn serve(
    config: Config,
    switches: Vec<Arc<dyn Switch>>,
    ready_info: Ready,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ServerError> {
    serve_with_clock(
        config,
        switches,
        ready_info,
        shutdown,
        ready,
        LocalClock::system(),
    )
    .await
}

/// [`serve`] on `clock`'s local time (a test's own clock for quiet hours).
pub async fn serve_with_clock(
    config: Config,
    switches: Vec<Arc<dyn Switch>>,
    ready_info: Ready,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
    clock: LocalClock,
) -> Result<(), ServerError> {
    if switches.is_empty() {
        return Err(ServerError::NoSwitch);
    }
    let data_dir = config.data_dir.clone();
    let messages_dir = data_dir.join("messages");
    std::fs::create_dir_all(&messages_dir)?;
    let mut store = Store::open(&data_dir)?;
    let mut recovered = recover(&mut store, &data_dir)?;
    if !recovered.is_empty() {
        info!(
            recovered = recovered.len(),
            "messages cut short by a stop were recovered as partial"
        );
    }
    let store = StoreHandle::spawn(store)?;
    sounds::install(&config.sounds_dir())?;
    reserve::ensure(&data_dir);
    let plan = NumberPlan::new(config.numbering.clone());
    // One outbox; the switch channels go through the first switch.
    let missed_calls = Arc::new(MissedCalls::default());
    // The outbox stops after the calls: what their flows write while they
    // wind up is still sent.
    let (stop_outbox, outbox_stopped) = watch::channel(false);
    let notify = notifications::start(
        &config.notify,
        store.clone(),
        switches[0].clone(),
        missed_calls.clone(),
        outbox_stopped,
    )
    .await?;
    let external = match config.presence.external.clone() {
        Some(lookup) => Some(Arc::new(lookup::ExternalLookup::new(lookup)?)),
        None => None,
    };
    let permits =
        crate::switch::peer::MessagePermits::new(config.limits.max_concurrent_messages as usize);
    let mut loops = Vec::new();
    loops.push(tokio::spawn(upkeep_periodically(
        store.clone(),
        notify.outbox.clone(),
        config.clone(),
        data_dir.clone(),
        shutdown.clone(),
    )));
    // A status set through the API may make a user available: the first
    // switch's router (as for the outbox's channels) calls them with what
    // waits, as after a star code.
    let (status_changed, status_changes) = mpsc::unbounded_channel();
    loops.extend(
        crate::api::beside_server(
            &config.api,
            &store,
            &data_dir,
            Some(status_changed),
            &shutdown,
        )
        .await,
    );
    let mut status_changes = Some(status_changes);
    for (index, switch) in switches.into_iter().enumerate() {
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
            missed_calls: missed_calls.clone(),
            handoff,
            clock: clock.clone(),
            permits: permits.clone(),
            external: external.clone(),
        });
        // Through the first switch's context, like the outbox's channels.
        notify_recovered(&ctx, std::mem::take(&mut recovered)).await;
        if index == 0 {
            // Owed pushes go through the first switch only: one call each.
            loops.push(tokio::spawn(router::push_when_due(
                ctx.clone(),
                shutdown.clone(),
            )));
        }
        if let Some(mut changes) = status_changes.take() {
            let (ctx, mut stop) = (ctx.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        change = changes.recv() => match change {
                            Some(c) => router::status_changed(&ctx, c),
                            None => break,
                        },
                        _ = stop.changed() => break,
                    }
                }
            });
        }
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
    let _ = stop_outbox.send(true);
    // The worker sends what is due, finishes the sends in flight and
    // records their outcomes.
    for task in notify.tasks {
        let _ = task.await;
    }
    info!("stopping");
    Ok(())
}

/// Now and every [`EXPIRE_CHECK`] until shutdown: expire old unheard
/// messages, delete those `[retention]` says are due, make the space
/// reserve again if it was released.
async fn upkeep_periodically(
    store: StoreHandle,
    outbox: crate::notify::Outbox,
    config: Config,
    data_dir: PathBuf,
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
            notifications::expire(&store, &outbox, &config.notify, crate::store::now_ms()).await
        {
            warn!("cannot expire old messages: {e}");
        }
        sweep_retention(&store, &config.retention, &data_dir).await;
        let dir = data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || reserve::ensure(&dir)).await;
    }
}

/// `[retention]`: delete the messages whose days are up, the same way as
/// `ivm message delete` (rows, retrieval codes, audio files).
async fn sweep_retention(
    store: &StoreHandle,
    retention: &crate::config::RetentionConfig,
    data_dir: &Path,
) {
    let (heard, unheard) = (retention.heard_days, retention.unheard_days);
    if heard == 0 && unheard == 0 {
        return;
    }
    let dir = data_dir.to_owned();
    let swept = store
        .call(move |s| s.sweep_retention(crate::store::now_ms(), heard, unheard, &dir))
        .await;
    match swept {
        Ok(Ok(ids)) if !ids.is_empty() => {
            info!(deleted = ids.len(), "retention: old messages deleted")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!("cannot delete old messages (retention): {e}"),
        Err(e) => warn!("cannot delete old messages (retention): {e}"),
    }
}

/// Messages a stop cut short: state `recording` becomes `partial`; whatever
/// the switch wrote after our last poll is converted and indexed too, and
/// deliveries still in flight become `unheard`.
/// A fragment as the store indexes it: `(index, byte_offset, length)`.
type FragmentRow = (u32, u64, u64);

/// Sync a stored 8 kHz message and cut it into its one-second fragments
/// (the last one shorter): its samples and its fragments.
fn sync_and_fragment(message: &Path) -> std::io::Result<(u64, Vec<FragmentRow>)> {
    let file = std::fs::OpenOptions::new().append(true).open(message)?;
    file.sync_all()?;
    let samples = file.metadata()?.len() / 2;
    let second = pump::FRAGMENT_SAMPLES;
    let fragments = (0..samples.div_ceil(second))
        .map(|i| {
            let start = i * second;
            let length = (samples - start).min(second) * 2;
            (i as u32, start * 2, length)
        })
        .collect();
    Ok((samples, fragments))
}

/// A message a crash cut short, and the targets whose delivery it ended:
/// they are told like any target that did not hear a message live.
struct Recovered {
    id: crate::domain::MessageId,
    sender: String,
    duration_seconds: u32,
    targets: Vec<String>,
}

fn recover(store: &mut Store, data_dir: &Path) -> Result<Vec<Recovered>, ServerError> {
    let mut recovered = Vec::new();
    let cut_short = store.messages_in_state(MessageState::Recording)?;
    for (id, audio_path) in &cut_short {
        let message = data_dir.join(audio_path);
        let capture = CAPTURE_FORMATS
            .iter()
            .map(|(extension, format)| (message.with_extension(extension), *format))
            .find(|(path, _)| path.exists());
        let duration_ms = if let Some((capture, format)) = capture {
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
            Some(duration)
        } else {
            // Stream mode writes the message itself: all that reached the
            // file is kept, synced first, then indexed.
            let duration = match sync_and_fragment(&message) {
                Ok((samples, fragments)) => {
                    store.replace_fragments(*id, &fragments)?;
                    Some((samples / 8) as i64)
                }
                Err(_) => None,
            };
            store.set_message_state(*id, MessageState::Partial, duration)?;
            duration
        };
        if let Ok(relative) = write_wav_of(&message) {
            store.set_wav_path(*id, &relative)?;
        }
        let (sender, targets) = store.end_open_deliveries(*id, DeliveryState::Unheard)?;
        recovered.push(Recovered {
            id: *id,
            sender,
            duration_seconds: u32::try_from(duration_ms.unwrap_or(0) / 1000).unwrap_or(u32::MAX),
            targets,
        });
    }
    // No flow is live now: a delivery still open belongs to a message
    // whose flow was cut off — a listener a crash hung up mid-message, a
    // target still ringing, or a message that failed on a disk too full
    // to write the delivery's last state. It ends `unheard` and the
    // target is told, as for a message not heard live.
    for id in store.finished_messages_with_open_deliveries()? {
        let (sender, targets) = store.end_open_deliveries(id, DeliveryState::Unheard)?;
        if targets.is_empty() {
            continue;
        }
        let duration_ms = store
            .message_info(id)?
            .and_then(|m| m.duration_ms)
            .unwrap_or(0);
        recovered.push(Recovered {
            id,
            sender,
            duration_seconds: u32::try_from(duration_ms / 1000).unwrap_or(u32::MAX),
            targets,
        });
    }
    Ok(recovered)
}

/// Tell the targets of messages a crash cut short, now that the outbox runs.
async fn notify_recovered(ctx: &Ctx, recovered: Vec<Recovered>) {
    for message in recovered {
        let sender = message.sender.clone();
        let name = match ctx.store.call(move |s| s.user(&sender)).await {
            Ok(Ok(Some(user))) => user.name,
            _ => message.sender.clone(),
        };
        for target in &message.targets {
            let not_heard = notifications::NotHeard {
                message_id: message.id,
                target,
                sender: &message.sender,
                sender_name: &name,
                duration_seconds: message.duration_seconds,
                quiet: false,
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
                warn!(message_id = %message.id, "cannot notify a recovered message: {e}");
            }
        }
    }
}
