//! The FreeSWITCH adapter: the Event Socket in both directions. The only
//! module that knows FreeSWITCH's applications, API commands, variables and
//! dial strings.
//!
//! * **Outbound** (`outbound.rs`): the dialplan's `socket` application
//!   (`127.0.0.1:8084 async full`) connects to `ivm` once per call leg. Each
//!   such session is owned by one task; the engine's commands on that call
//!   are `sendmsg` executes with `event-lock: true` (run one after another,
//!   never nested) and our own `Event-UUID`, which comes back as the
//!   `Application-UUID` of the matching `CHANNEL_EXECUTE_COMPLETE`.
//!   `myevents` brings every event of the channel (DTMF, `PLAYBACK_STOP`,
//!   `RECORD_STOP`, `CHANNEL_HANGUP_COMPLETE`); `linger` keeps the socket
//!   open until they have all arrived.
//! * **Inbound** (`inbound.rs`): one connection to port 8021 for what is not
//!   "do this on my channel, in turn": `bgapi originate` (correlated by our
//!   `Job-UUID`), `uuid_bridge`, `uuid_kill`, `uuid_record ... stop` (at
//!   once, even while the channel plays something), text messages (the
//!   `chat` API), the message-waiting lamp (`sendevent`), device state
//!   (`sofia_contact`, `PRESENCE_IN` and `sofia::register` events).
//!
//! A target is rung through `[freeswitch] target_dial_string` (`${target}`
//! and `${domain}` filled in here) with `originate` whose application is
//! `&socket(<ivm>:8084 async full)` and whose channel carries the variable
//! `ivm_origin=<id>`: the answered leg connects back over the outbound socket
//! and is reported as [`SwitchEvent::Answered`]. A `-ERR <CAUSE>` in the
//! `BACKGROUND_JOB` becomes [`SwitchEvent::OriginateFailed`].
//!
//! Playback reports the true position: FreeSWITCH's `playback FILE@@N`
//! starts at sample N exactly and plays up to the length the file had when
//! it was opened; the playback's `CHANNEL_EXECUTE_COMPLETE` carries
//! `variable_playback_last_offset_pos`, the absolute position reached
//! (`playback_samples` is wrong after an interruption; `myevents` brings no
//! `PLAYBACK_STOP`). The engine continues from there as the file grows.
//! `playback` flushes the channel's RTP read buffer when it starts: `answer`
//! is queued, not awaited, so that the beep starts with the answer.
//!
//! FreeSWITCH chooses a file's format by its extension (`mod_sndfile`): raw
//! 16-bit linear is `.r8`/`.raw` (8 kHz) or `.r16` (16 kHz); `.r24`/`.r32`
//! are 24/32-bit and there is no raw 16-bit 48 kHz. A path whose extension
//! FreeSWITCH would misread (e.g. Asterisk's `.sln`) is reached through a
//! symlink `<path>.r8` next to it, so that the engine's paths stay its own.

pub mod connection;
pub mod inbound;
pub mod outbound;
pub mod syntax;

use crate::media::AudioFormat;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use self::connection::{ConnectionError, EslConnection, Incoming};
use self::inbound::{InboundClient, InboundError, InboundOptions, InboundState};
use self::outbound::{OutboundConfig, OutboundSession};
pub use self::syntax::{
    BEEP_TONE, ORIGIN_VARIABLE, SOCKET_MODE, cause_from_name, cause_name, dial_target,
    extensions_for, fs_media_path, new_uuid, originate_command,
};
use self::syntax::{
    address_of, check_endpoint, hangup_cause_of, sendevent, sound_file, terminators,
};
use super::{
    CallId, DeviceState, HangupCause, Media, OriginateId, OriginateRequest, PlayRequest,
    RecordRequest, Switch, SwitchError, SwitchEvent,
};
use crate::config::FreeswitchConfig;
use crate::proto::esl::{self, Event, Execute, SendMsg};
use crate::switch::peer::{DialPolicy, channel_name_ok, context_ok, log_safe, origin_caller};

/// What the inbound connection subscribes to. Call events come over each
/// call's outbound socket (`myevents`), so only what no outbound socket
/// sees is asked for here. `CUSTOM` and its subclasses must come last.
pub const INBOUND_EVENTS: &[&str] = &[
    "BACKGROUND_JOB",
    "CHANNEL_HANGUP_COMPLETE",
    "PRESENCE_IN",
    "HEARTBEAT",
    "CHANNEL_CREATE",
    "CUSTOM",
    "sofia::register",
    "sofia::unregister",
    "sofia::expire",
];
/// Commands queued on one call and not yet completed.
const MAX_PENDING_PER_CALL: usize = 64;
/// Recordings running at once on one call.
const MAX_RECORDINGS_PER_CALL: usize = 8;
/// Originates waiting for their outcome.
const MAX_PENDING_ORIGINATES: usize = 10_000;
/// Endpoints whose device state is tracked.
const MAX_DEVICES: usize = 10_000;
/// Channels tracked per endpoint for device state.
const MAX_CHANNELS_PER_DEVICE: usize = 32;
/// After the hang-up, how long the socket may stay open before we close it.
const LINGER_LIMIT: Duration = Duration::from_secs(10);
/// Longest text message body sent as one SIP MESSAGE.
const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Longest wait for FreeSWITCH's `uuid_exists` answer before a session is
/// refused (it answers from memory at once).
const UUID_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Live channels remembered from `CHANNEL_CREATE`; past it a session's
/// channel is asked about with `uuid_exists` instead.
const MAX_TRACKED_CHANNELS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct FreeswitchSwitchOptions {
    /// Where `Media::Sound` names are found (`NAME.wav`, `NAME.r8`, or
    /// `NAME.sln` through an alias); `None` plays `NAME.wav` from
    /// FreeSWITCH's `sound_prefix`, and a built-in tone for `beep`.
    pub sounds_dir: Option<PathBuf>,
    /// The SIP domain of the users (text messages, MWI, device state);
    /// `None` asks FreeSWITCH (`global_getvar domain`) on each connection.
    pub domain: Option<String>,
    /// The Sofia profile that carries text messages.
    pub sip_profile: String,
    /// The address FreeSWITCH connects back to for originated legs, when it
    /// is not the listening address (e.g. `ivm` in another container).
    pub outbound_advertise: Option<SocketAddr>,
    pub outbound: OutboundConfig,
    /// Longest wait for FreeSWITCH to accept one command.
    pub request_timeout: Duration,
    /// After the ring timeout, how long an originate may stay unresolved
    /// before it is reported as failed (its `BACKGROUND_JOB` was lost).
    pub originate_grace: Duration,
    /// Inbound reconnection backoff.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Inbound keepalive period (see [`inbound::DEFAULT_KEEPALIVE`]);
    /// `None` only for tests that script every command.
    pub keepalive: Option<Duration>,
    /// Check the Unique-ID of every outbound socket session against
    /// FreeSWITCH's own view (`CHANNEL_CREATE` events seen on the inbound
    /// connection, else `api uuid_exists`) before it becomes a call
    /// (`[freeswitch] verify_uuids`).
    pub verify_uuids: bool,
    /// Which targets are outside the PBX, and which of them may be dialled
    /// (`[numbering] external_targets`): those go through the caller's own
    /// dialplan context (`loopback/<number>/<user_context>`), never through
    /// `target_dial_string`.
    pub dial_policy: DialPolicy,
}

impl Default for FreeswitchSwitchOptions {
    fn default() -> Self {
        FreeswitchSwitchOptions {
            sounds_dir: None,
            domain: None,
            sip_profile: "internal".to_owned(),
            outbound_advertise: None,
            outbound: OutboundConfig::default(),
            request_timeout: Duration::from_secs(10),
            originate_grace: Duration::from_secs(15),
            backoff_min: Duration::from_millis(100),
            // A restarted FreeSWITCH is reconnected within a second of
            // listening again.
            backoff_max: Duration::from_secs(1),
            keepalive: Some(inbound::DEFAULT_KEEPALIVE),
            verify_uuids: true,
            dial_policy: DialPolicy::default(),
        }
    }
}

/// The FreeSWITCH switch. Cheap to clone; all clones drive the same switch.
#[derive(Clone)]
pub struct FreeswitchSwitch {
    inner: Arc<Inner>,
}

struct Inner {
    inbound: InboundClient,
    /// `[freeswitch] target_dial_string`.
    dial_string: String,
    options: FreeswitchSwitchOptions,
    /// What FreeSWITCH connects to for originated legs.
    socket_address: SocketAddr,
    listen_address: SocketAddr,
    /// `[freeswitch] outbound_secret`, set on originated legs (`ivm_secret`).
    outbound_secret: String,
    calls: Mutex<HashMap<CallId, CallEntry>>,
    /// FreeSWITCH's live channels as the inbound connection reported them
    /// (`CHANNEL_CREATE` until `CHANNEL_HANGUP_COMPLETE`). Cleared when the
    /// connection changes or events were missed.
    channels: Mutex<HashSet<String>>,
    /// The outbound socket's peer policy; here for its rate-limited
    /// refusal log.
    peers: Option<crate::switch::peer::PeerPolicy>,
    originates: Mutex<Originates>,
    devices: Mutex<Devices>,
    domain: Mutex<Option<String>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<SwitchEvent>>>,
}

struct CallEntry {
    connection: EslConnection,
    state: Arc<Mutex<CallState>>,
}

#[derive(Default)]
struct CallState {
    /// Executes awaiting their `CHANNEL_EXECUTE_COMPLETE`, by Event-UUID.
    pending: HashMap<String, Pending>,
    /// `playback_terminators` as last set on this channel.
    terminators: Option<String>,
    /// The `PLAYBACK_STOP` of the playback now running, once it came.
    playback_stop: Option<PlaybackStop>,
    /// Recordings running: the path FreeSWITCH writes -> the engine's path.
    recordings: HashMap<String, PathBuf>,
    hung_up: bool,
    /// The caller's own dialplan context (the directory's `user_context`,
    /// else the context the call was in), where a number outside the PBX
    /// is dialled for this call.
    user_context: Option<String>,
}

enum Pending {
    /// Nothing waits for it: see [`FreeswitchSwitch::answer`].
    Answer,
    Play {
        from_sample: u64,
    },
    /// A displaced prompt's `read` (see [`FreeswitchSwitch::displace`]).
    Prompt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlaybackStop {
    position: Option<u64>,
    interrupted: bool,
    terminator: Option<char>,
}

#[derive(Default)]
struct Originates {
    /// Job-UUID -> the originate it answers.
    jobs: HashMap<String, OriginateId>,
    /// Originated channel uuid (from `+OK <uuid>`) -> originate, until its
    /// socket connects.
    legs: HashMap<String, OriginateId>,
    /// Originates whose leg already connected back.
    answered: HashSet<OriginateId>,
}

#[derive(Default)]
struct Devices {
    registered: HashMap<String, bool>,
    /// Endpoint -> its channels' states (from `PRESENCE_IN`).
    channels: HashMap<String, HashMap<String, DeviceState>>,
    last: HashMap<String, DeviceState>,
}

/// A poisoned lock only means another task panicked mid-update of a plain
/// map; the map itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FreeswitchSwitch {
    /// Bind the outbound socket listener, start the inbound client (it
    /// reconnects by itself), and start turning both into events.
    pub async fn start(
        config: FreeswitchConfig,
        options: FreeswitchSwitchOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SwitchError> {
        let listener = TcpListener::bind(config.outbound_listen)
            .await
            .map_err(|e| {
                SwitchError::NotConnected(
                    config.outbound_listen.to_string(),
                    format!(
                        "cannot listen for freeswitch's outbound socket: {e}; \
                         change [freeswitch] outbound_listen"
                    ),
                )
            })?;
        let local = listener.local_addr()?;
        // FreeSWITCH must be told an address it can connect to.
        let socket_address = options
            .outbound_advertise
            .unwrap_or(if local.ip().is_unspecified() {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
            } else {
                local
            });
        let mut inbound_options = InboundOptions::new(config.esl_address, &config.esl_password);
        inbound_options.events = INBOUND_EVENTS.iter().map(|s| (*s).to_owned()).collect();
        inbound_options.request_timeout = options.request_timeout;
        inbound_options.backoff_min = options.backoff_min;
        inbound_options.backoff_max = options.backoff_max;
        inbound_options.keepalive = options.keepalive;
        // A secret is required by `ivm serve`; without one (tests of the
        // adapter alone) only the allow list applies.
        let peers = crate::switch::peer::PeerPolicy::from_config(
            &config.outbound_allow,
            &config.outbound_secret,
        )
        .map_err(|e| SwitchError::Refused(format!("outbound_allow: {e}")))?;
        let inbound = InboundClient::start(inbound_options);
        let inner = Arc::new(Inner {
            channels: Mutex::new(HashSet::new()),
            peers: Some(peers.clone()),
            inbound,
            dial_string: config.target_dial_string.clone(),
            domain: Mutex::new(options.domain.clone()),
            options,
            socket_address,
            listen_address: local,
            outbound_secret: config.outbound_secret.clone(),
            calls: Mutex::new(HashMap::new()),
            originates: Mutex::new(Originates::default()),
            devices: Mutex::new(Devices::default()),
            subscribers: Mutex::new(Vec::new()),
        });
        let (session_tx, session_rx) = mpsc::channel(64);
        tokio::spawn(outbound::serve(
            listener,
            session_tx,
            shutdown.clone(),
            OutboundConfig {
                peers: Some(peers),
                ..inner.options.outbound.clone()
            },
        ));
        tokio::spawn(dispatch_sessions(inner.clone(), session_rx));
        tokio::spawn(pump_inbound_events(
            Arc::downgrade(&inner),
            inner.inbound.events(),
            shutdown.clone(),
        ));
        tokio::spawn(watch_connection(Arc::downgrade(&inner), shutdown));
        info!(outbound = %local, esl = %config.esl_address, "freeswitch adapter started");
        Ok(Self { inner })
    }

    /// The address the outbound socket listens on.
    pub fn outbound_address(&self) -> SocketAddr {
        self.inner.listen_address
    }

    /// The address originated legs are told to connect back to.
    pub fn socket_address(&self) -> SocketAddr {
        self.inner.socket_address
    }

    pub fn inbound(&self) -> &InboundClient {
        &self.inner.inbound
    }

    /// Wait until the inbound connection is authenticated and subscribed.
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), SwitchError> {
        self.inner
            .inbound
            .wait_connected(limit)
            .await
            .map_err(|e| inbound_error(&self.inner.inbound, e))
    }

    fn entry(&self, call: &CallId) -> Result<(EslConnection, Arc<Mutex<CallState>>), SwitchError> {
        lock(&self.inner.calls)
            .get(call)
            .map(|entry| (entry.connection.clone(), entry.state.clone()))
            .ok_or_else(|| SwitchError::NoSuchCall(call.clone()))
    }

    /// The SIP domain: configured, or asked from FreeSWITCH once.
    async fn domain(&self) -> Result<String, SwitchError> {
        if let Some(domain) = lock(&self.inner.domain).clone() {
            return Ok(domain);
        }
        let domain = fetch_domain(&self.inner.inbound).await?;
        *lock(&self.inner.domain) = Some(domain.clone());
        Ok(domain)
    }

    /// The configured dial string for `target`; FreeSWITCH's domain is
    /// asked for only when the template uses it.
    /// How `target` is rung for `caller`: an extension through
    /// `target_dial_string`; a number outside the PBX only if `[numbering]
    /// external_targets` allows it, and then through the caller's own
    /// dialplan context (toll fraud: the caller's outbound restrictions
    /// apply, never ivm's).
    async fn dial_string_for(
        &self,
        caller: Option<&CallId>,
        target: &str,
    ) -> Result<String, SwitchError> {
        let policy = &self.inner.options.dial_policy;
        if !policy.is_external(target) {
            return self.dial_string_of(target).await;
        }
        if !policy.external_allowed(target) {
            return Err(SwitchError::Refused(
                "a target outside the PBX that [numbering] external_targets does not allow".into(),
            ));
        }
        let context = caller.and_then(|call| {
            let (_, state) = self.entry(call).ok()?;
            lock(&state).user_context.clone()
        });
        let Some(context) = context else {
            return Err(SwitchError::Refused(
                "a target outside the PBX, and the caller's own dialplan context is unknown".into(),
            ));
        };
        Ok(format!("loopback/{target}/{context}"))
    }

    async fn dial_string_of(&self, target: &str) -> Result<String, SwitchError> {
        let template = &self.inner.dial_string;
        let domain = if template.contains("${domain}") {
            self.domain().await?
        } else {
            String::new()
        };
        dial_target(template, target, &domain)
    }

    async fn api_ok(&self, command_line: &str) -> Result<String, SwitchError> {
        self.inner
            .inbound
            .api_ok(command_line)
            .await
            .map(|response| response.body)
            .map_err(|e| inbound_error(&self.inner.inbound, e))
    }

    /// Queue `sendmsg` executes on a call's own socket, in order (preceded
    /// by `set playback_terminators=...` when that changes), and wait until
    /// FreeSWITCH has accepted them all. `completion` (an Event-UUID and
    /// what to do on its `CHANNEL_EXECUTE_COMPLETE`) goes with the last one.
    async fn execute_on_call(
        &self,
        call: &CallId,
        steps: Vec<(&str, Option<String>)>,
        completion: Option<(String, Pending)>,
        playback_terminators: Option<String>,
    ) -> Result<(), SwitchError> {
        let (connection, state) = self.entry(call)?;
        let mut answers = Vec::new();
        let completion_uuid = completion.as_ref().map(|(uuid, _)| uuid.clone());
        {
            let mut state = lock(&state);
            if state.hung_up {
                return Err(SwitchError::HungUp);
            }
            if state.pending.len() >= MAX_PENDING_PER_CALL {
                return Err(SwitchError::Refused(format!(
                    "{MAX_PENDING_PER_CALL} commands are already queued on this call"
                )));
            }
            let mut texts = Vec::new();
            if let Some(value) = &playback_terminators
                && state.terminators.as_deref() != Some(value.as_str())
            {
                texts.push(execute_text(
                    "set",
                    Some(&format!("playback_terminators={value}")),
                    None,
                )?);
            }
            let count = steps.len();
            for (index, (app, arg)) in steps.iter().enumerate() {
                let uuid = if index + 1 == count {
                    completion_uuid.as_deref()
                } else {
                    None
                };
                texts.push(execute_text(app, arg.as_deref(), uuid)?);
            }
            for text in texts {
                answers.push(connection.submit(text).map_err(connection_error)?);
            }
            if let Some(value) = playback_terminators {
                state.terminators = Some(value);
            }
            if let Some((uuid, pending)) = completion {
                state.pending.insert(uuid, pending);
            }
        }
        let limit = self.inner.options.request_timeout;
        for answer in answers {
            let result = connection::wait_reply(answer, limit).await;
            let failure = match result {
                Ok(reply) if reply.is_ok() => continue,
                Ok(reply) => SwitchError::Refused(format!("sendmsg: {}", reply.text())),
                Err(e) => connection_error(e),
            };
            if let Some(uuid) = &completion_uuid {
                lock(&state).pending.remove(uuid);
            }
            // A refused set may have left the terminators unknown.
            lock(&state).terminators = None;
            return Err(failure);
        }
        Ok(())
    }

    /// Whether a recording runs on `call`.
    fn recording(&self, call: &CallId) -> Result<bool, SwitchError> {
        let (_, state) = self.entry(call)?;
        Ok(!lock(&state).recordings.is_empty())
    }

    /// A prompt for a caller who is being recorded (the "accepted" or
    /// "rejected" tone while they talk). `playback` flushes the channel's
    /// RTP read buffer when it starts (AUDIO_SYNC), which cut 40–100 ms out
    /// of the recording, and starting any application on the parked channel
    /// (`read`, tried next) still lost 20–30 ms. Instead the sound is only
    /// mixed into what the caller hears (`uuid_displace ... mux`, a media
    /// bug on the write side, which passes what the caller says through
    /// untouched) and nothing is executed: the park loop writes silence
    /// frames for it to ride on, because the shipped `ivm.xml` sets
    /// `send_silence_when_idle` before handing the call over (park reads it
    /// once, when media is up; `ivm doctor` checks it). The prompt's end is
    /// reported after its length; a key pressed meanwhile reaches ivm as a
    /// DTMF event as always.
    async fn displace(&self, call: &CallId, file: String) -> Result<(), SwitchError> {
        let length = sound_length(&file).unwrap_or(DISPLACE_UNKNOWN_LENGTH);
        // Whole seconds: a safety stop should the file not end by itself.
        let limit = length.as_secs() + 2;
        let (_, state) = self.entry(call)?;
        let uuid = new_uuid();
        {
            let mut state = lock(&state);
            if state.hung_up {
                return Err(SwitchError::HungUp);
            }
            state.pending.insert(uuid.clone(), Pending::Prompt);
        }
        if let Err(e) = self
            .api_ok(&format!("uuid_displace {call} start {file} {limit} mux"))
            .await
        {
            lock(&state).pending.remove(&uuid);
            return Err(e);
        }
        let (inner, call) = (self.inner.clone(), call.clone());
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            // Not already reported by a hang-up.
            if lock(&state).pending.remove(&uuid).is_some() {
                inner.emit(SwitchEvent::PlaybackFinished {
                    call,
                    stopped_at_sample: 0,
                    interrupted_by: None,
                });
            }
        });
        Ok(())
    }

    /// What `playback` is given for `media` from `from_sample`.
    fn playable(&self, media: &Media, from_sample: u64) -> Result<String, SwitchError> {
        let (file, seekable) = match media {
            Media::File { path, format } => (fs_media_path(path, *format)?, true),
            Media::Sound(name) => sound_file(self.inner.options.sounds_dir.as_deref(), name)?,
        };
        Ok(if seekable && from_sample > 0 {
            format!("{file}@@{from_sample}")
        } else {
            file
        })
    }
}

/// How long a displaced prompt is assumed to last when its file cannot be
/// measured.
const DISPLACE_UNKNOWN_LENGTH: Duration = Duration::from_secs(2);

/// How long a sound file plays: the beep tone, raw 16-bit files by their
/// size (`.r8`/`.sln` 8 kHz, `.r16` 16 kHz), WAV by its header.
fn sound_length(file: &str) -> Option<Duration> {
    use std::io::Read;
    if file == syntax::BEEP_TONE {
        return Some(Duration::from_millis(120));
    }
    let path = std::path::Path::new(file);
    let bytes = std::fs::metadata(path).ok()?.len();
    let bytes_per_second = match path.extension()?.to_str()? {
        "r8" | "sln" | "raw" => 16_000,
        "r16" => 32_000,
        "wav" => {
            let mut header = [0u8; 44];
            std::fs::File::open(path)
                .ok()?
                .read_exact(&mut header)
                .ok()?;
            let rate = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
            let channels = u16::from_le_bytes([header[22], header[23]]);
            let bits = u16::from_le_bytes([header[34], header[35]]);
            let per_second = u64::from(rate) * u64::from(channels) * u64::from(bits) / 8;
            if &header[..4] != b"RIFF" || per_second == 0 {
                return None;
            }
            per_second
        }
        _ => return None,
    };
    Some(Duration::from_millis(bytes * 1000 / bytes_per_second))
}

/// `sendmsg` (own channel) executing `app` with `event-lock`.
fn execute_text(
    app: &str,
    arg: Option<&str>,
    event_uuid: Option<&str>,
) -> Result<String, SwitchError> {
    let mut execute = Execute::new(app).event_lock(true);
    if let Some(arg) = arg {
        execute = execute.arg(arg);
    }
    if let Some(uuid) = event_uuid {
        execute = execute.event_uuid(uuid);
    }
    esl::sendmsg(None, &SendMsg::Execute(execute)).map_err(|e| SwitchError::Refused(e.to_string()))
}

fn connection_error(e: ConnectionError) -> SwitchError {
    match e {
        ConnectionError::Timeout(_) => SwitchError::Timeout,
        ConnectionError::Gone | ConnectionError::PeerClosed => SwitchError::HungUp,
        other => SwitchError::Protocol(other.to_string()),
    }
}

fn inbound_error(inbound: &InboundClient, e: InboundError) -> SwitchError {
    match e {
        InboundError::NotConnected { address, state } => {
            SwitchError::NotConnected(address.to_string(), state)
        }
        InboundError::AuthFailed(_) => {
            SwitchError::NotConnected(inbound.address().to_string(), e.to_string())
        }
        InboundError::Timeout { .. } => SwitchError::Timeout,
        InboundError::Refused { command, message } => {
            SwitchError::Refused(format!("{command}: {message}"))
        }
        other => SwitchError::Protocol(other.to_string()),
    }
}

async fn fetch_domain(inbound: &InboundClient) -> Result<String, SwitchError> {
    let response = inbound
        .api("global_getvar domain")
        .await
        .map_err(|e| inbound_error(inbound, e))?;
    let domain = response.body.trim().to_owned();
    if domain.is_empty()
        || response.is_err()
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
    {
        return Err(SwitchError::Refused(format!(
            "freeswitch has no usable global variable `domain` ({domain:?}); \
             set the domain in the adapter's options"
        )));
    }
    Ok(domain)
}

impl Inner {
    fn emit(&self, event: SwitchEvent) {
        debug!(?event, "switch event");
        lock(&self.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }
}

/// Whom FreeSWITCH vouches the caller is: the directory user whose digest
/// credentials sofia checked on this INVITE (`sip_authorized` and
/// `sip_auth_username`). A call let in by an ACL alone, or any other
/// endpoint, vouches for no one: its caller ID is whatever it sent.
fn authenticated_user(data: &crate::proto::esl::Event) -> Option<String> {
    let authorized = data.variable("sip_authorized") == Some("true");
    let user = data
        .variable("sip_auth_username")
        .filter(|u| !u.is_empty())?;
    authorized.then(|| user.to_owned())
}

/// Give every outbound session its own task, once admitted.
async fn dispatch_sessions(inner: Arc<Inner>, mut sessions: mpsc::Receiver<OutboundSession>) {
    while let Some(session) = sessions.recv().await {
        tokio::spawn(admit(inner.clone(), session));
    }
}

/// Why a session was not admitted; logged at warn with the peer address
/// (rate-limited per address), the Unique-ID only at debug. Dropping the
/// session closes its socket: nothing was sent to FreeSWITCH about it.
fn refuse_session(inner: &Inner, session: &OutboundSession, reason: &str) {
    debug!(peer = %session.peer, uuid = %log_safe(session.unique_id()), reason,
        "outbound socket session refused");
    match &inner.peers {
        Some(peers) => {
            peers.refused("esl-outbound", session.peer.ip(), reason);
        }
        None => warn!(peer = %session.peer, reason, "outbound socket session refused"),
    }
}

/// Check what the peer says its channel is, then give the call its task.
/// Nothing names the channel to FreeSWITCH before it passed: its Unique-ID
/// has a safe syntax, is not in use by another session, and (with
/// `verify_uuids`) is a live channel in FreeSWITCH's own view.
async fn admit(inner: Arc<Inner>, session: OutboundSession) {
    let started = tokio::time::Instant::now();
    let uuid = session.unique_id();
    if !channel_name_ok(uuid) {
        return refuse_session(&inner, &session, "unsafe Unique-ID");
    }
    let call = CallId(uuid.to_owned());
    let user_context = session
        .channel_data
        .variable("user_context")
        .or_else(|| session.channel_data.header("Caller-Context"))
        .filter(|c| context_ok(c))
        .map(str::to_owned);
    let state = Arc::new(Mutex::new(CallState {
        user_context,
        ..CallState::default()
    }));
    {
        let mut calls = lock(&inner.calls);
        if calls.contains_key(&call) {
            drop(calls);
            return refuse_session(&inner, &session, "duplicate Unique-ID");
        }
        calls.insert(
            call.clone(),
            CallEntry {
                connection: session.connection.clone(),
                state: state.clone(),
            },
        );
    }
    if inner.options.verify_uuids && !uuid_is_live(&inner, &call.0).await {
        lock(&inner.calls).remove(&call);
        return refuse_session(&inner, &session, "no such channel in freeswitch");
    }
    debug!(%call, checks = ?started.elapsed(), "outbound socket session admitted");
    let data = &session.channel_data;
    let origin = data
        .variable(ORIGIN_VARIABLE)
        .filter(|o| !o.is_empty())
        .map(|o| OriginateId(o.to_owned()));
    let event = match origin {
        Some(origin) => {
            let mut originates = lock(&inner.originates);
            originates.legs.retain(|_, o| *o != origin);
            let still_waiting = originates.jobs.values().any(|o| *o == origin);
            if still_waiting && originates.answered.len() < MAX_PENDING_ORIGINATES {
                originates.answered.insert(origin.clone());
            }
            SwitchEvent::Answered {
                origin,
                call: call.clone(),
            }
        }
        None => SwitchEvent::IncomingCall {
            call: call.clone(),
            caller_number: data
                .header("Caller-Caller-ID-Number")
                .unwrap_or_default()
                .to_owned(),
            caller_name: data
                .header("Caller-Caller-ID-Name")
                .unwrap_or_default()
                .to_owned(),
            dialed: data
                .header("Caller-Destination-Number")
                .or_else(|| data.header("Channel-Destination-Number"))
                .unwrap_or_default()
                .to_owned(),
            origin: None,
            endpoint: authenticated_user(data),
        },
    };
    info!(uuid = %call, peer = %session.peer, "freeswitch call connected");
    tokio::spawn(run_call(inner.clone(), call, session, state));
    inner.emit(event);
}

/// Whether FreeSWITCH has a live channel `uuid`: from the `CHANNEL_CREATE`
/// events seen so far, else asked with `api uuid_exists` (a refusal, no
/// connection or no answer within [`UUID_CHECK_TIMEOUT`] is "no").
async fn uuid_is_live(inner: &Inner, uuid: &str) -> bool {
    if lock(&inner.channels).contains(uuid) {
        return true;
    }
    let command = format!("uuid_exists {uuid}");
    let asked = inner.inbound.api(&command);
    match tokio::time::timeout(UUID_CHECK_TIMEOUT, asked).await {
        Ok(Ok(response)) => response.body.trim() == "true",
        Ok(Err(e)) => {
            debug!(uuid = %log_safe(uuid), error = %e, "uuid_exists could not be asked");
            false
        }
        Err(_) => {
            debug!(uuid = %log_safe(uuid), "no answer to uuid_exists in time");
            false
        }
    }
}

/// One call's outbound socket: turn its events into [`SwitchEvent`]s until
/// it closes.
async fn run_call(
    inner: Arc<Inner>,
    call: CallId,
    session: OutboundSession,
    state: Arc<Mutex<CallState>>,
) {
    let OutboundSession {
        connection,
        mut incoming,
        ..
    } = session;
    let mut finished = false;
    let mut exit_sent = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let limit = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let item = tokio::select! {
            item = incoming.recv() => item,
            () = limit => {
                debug!(uuid = %call, "the socket stayed open after the hang-up; closing it");
                break;
            }
        };
        let Some(item) = item else { break };
        match item {
            Incoming::Event(event) => {
                if event.unique_id() != Some(call.0.as_str()) {
                    continue;
                }
                if handle_call_event(&inner, &call, &state, &event) && !finished {
                    finished = true;
                    finish_call(&inner, &call, &state, hangup_cause_of(&event));
                    deadline = Some(tokio::time::Instant::now() + LINGER_LIMIT);
                }
            }
            Incoming::DisconnectNotice(notice) => {
                // All final events arrive before the linger notice; `exit`
                // makes FreeSWITCH close the socket now.
                if notice.is_linger() && !exit_sent {
                    exit_sent = true;
                    let _ = connection.submit(esl::exit());
                }
                // `disconnect`: FreeSWITCH closes next; nothing more will come.
                if finished && notice.disposition == Some(esl::Disposition::Disconnect) {
                    break;
                }
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + LINGER_LIMIT);
                }
            }
            Incoming::Closed(reason) => {
                if finished {
                    debug!(uuid = %call, %reason, "call socket closed");
                } else {
                    warn!(uuid = %call, %reason, "call socket closed before the hang-up was reported");
                }
                break;
            }
            Incoming::AuthRequest | Incoming::Rejected(_) => {}
        }
    }
    if !finished {
        finish_call(&inner, &call, &state, HangupCause::Normal);
    }
}

/// Handle one event of our own channel. True when it is the hang-up.
fn handle_call_event(
    inner: &Inner,
    call: &CallId,
    state: &Mutex<CallState>,
    event: &Event,
) -> bool {
    match event.name() {
        Some("CHANNEL_EXECUTE") => {
            // Our playback starts: any earlier PLAYBACK_STOP is not its own.
            let mut state = lock(state);
            if event
                .application_uuid()
                .is_some_and(|uuid| matches!(state.pending.get(uuid), Some(Pending::Play { .. })))
            {
                state.playback_stop = None;
            }
        }
        Some("PLAYBACK_STOP") => {
            lock(state).playback_stop = Some(playback_stop(event));
        }
        Some("CHANNEL_EXECUTE_COMPLETE") => {
            let Some(uuid) = event.application_uuid() else {
                return false;
            };
            let (pending, stop) = {
                let mut state = lock(state);
                let pending = state.pending.remove(uuid);
                let stop = match pending {
                    Some(Pending::Play { .. }) => state.playback_stop.take(),
                    _ => None,
                };
                (pending, stop)
            };
            match pending {
                Some(Pending::Answer) => {}
                Some(Pending::Prompt) => inner.emit(SwitchEvent::PlaybackFinished {
                    call: call.clone(),
                    stopped_at_sample: 0,
                    interrupted_by: None,
                }),
                Some(Pending::Play { from_sample }) => {
                    // The outbound socket's `myevents` carries no
                    // PLAYBACK_STOP: the channel variables on this event
                    // say where the playback ended.
                    let stop = playback_completed(event).or(stop);
                    if stop.is_none() {
                        // Nothing was played: FILE NOT FOUND, or the
                        // channel had no media (PLAYBACK ERROR).
                        warn!(uuid = %call, response = event.application_response().unwrap_or_default(),
                            "playback ended without playing");
                    }
                    let (stopped_at_sample, interrupted_by) =
                        playback_result(stop.as_ref(), from_sample);
                    inner.emit(SwitchEvent::PlaybackFinished {
                        call: call.clone(),
                        stopped_at_sample,
                        interrupted_by,
                    });
                }
                None => {}
            }
        }
        Some("DTMF") => {
            if let Some(digit) = event.header("DTMF-Digit").and_then(|d| d.chars().next()) {
                inner.emit(SwitchEvent::Dtmf {
                    call: call.clone(),
                    digit,
                });
            }
        }
        Some("RECORD_STOP") => {
            let written = event.header("Record-File-Path").unwrap_or_default();
            let path = lock(state).recordings.remove(written);
            if let Some(path) = path {
                inner.emit(SwitchEvent::RecordingFinished {
                    call: call.clone(),
                    path,
                });
            }
        }
        Some("CHANNEL_HANGUP_COMPLETE") => return true,
        _ => {}
    }
    false
}

/// The call is over: settle what waits on it, forget it, report it.
fn finish_call(inner: &Inner, call: &CallId, state: &Mutex<CallState>, cause: HangupCause) {
    lock(&inner.calls).remove(call);
    let (pending, stop, recordings) = {
        let mut state = lock(state);
        state.hung_up = true;
        (
            std::mem::take(&mut state.pending),
            state.playback_stop.take(),
            std::mem::take(&mut state.recordings),
        )
    };
    for (_, pending) in pending {
        match pending {
            Pending::Answer => {}
            Pending::Prompt => inner.emit(SwitchEvent::PlaybackFinished {
                call: call.clone(),
                stopped_at_sample: 0,
                interrupted_by: None,
            }),
            Pending::Play { from_sample } => {
                let (stopped_at_sample, interrupted_by) =
                    playback_result(stop.as_ref(), from_sample);
                inner.emit(SwitchEvent::PlaybackFinished {
                    call: call.clone(),
                    stopped_at_sample,
                    interrupted_by,
                });
            }
        }
    }
    for (_, path) in recordings {
        inner.emit(SwitchEvent::RecordingFinished {
            call: call.clone(),
            path,
        });
    }
    info!(uuid = %call, ?cause, "freeswitch call ended");
    inner.emit(SwitchEvent::HungUp {
        call: call.clone(),
        cause,
    });
}

fn playback_stop(event: &Event) -> PlaybackStop {
    let position = event
        .variable("playback_last_offset_pos")
        .and_then(|v| v.trim().parse().ok());
    let interrupted = event
        .header("Playback-Status")
        .is_some_and(|s| s.eq_ignore_ascii_case("break"));
    let terminator = event
        .variable("playback_terminator_used")
        .and_then(|t| t.trim().chars().next());
    PlaybackStop {
        position,
        interrupted,
        terminator,
    }
}

/// A playback's end from its `CHANNEL_EXECUTE_COMPLETE`: `FILE PLAYED`
/// (also after a break) means the file was opened and played, and
/// `playback_last_offset_pos` was set to the absolute position reached
/// (the `@@` offset included); `playback_terminator_used` is cleared when
/// `playback` starts and set when a terminator digit stopped it. Any other
/// response leaves both variables as an earlier playback left them: `None`.
fn playback_completed(event: &Event) -> Option<PlaybackStop> {
    if event.application_response() != Some("FILE PLAYED") {
        return None;
    }
    let position = event
        .variable("playback_last_offset_pos")
        .and_then(|v| v.trim().parse().ok())?;
    let terminator = event
        .variable("playback_terminator_used")
        .and_then(|t| t.trim().chars().next());
    Some(PlaybackStop {
        position: Some(position),
        interrupted: terminator.is_some(),
        terminator,
    })
}

/// `chat sip|FROM|TO|BODY|text/plain`: the body on one line, without the
/// separator (line breaks become spaces, `|` becomes `/`).
fn chat_command(from: &str, to: &str, body: &str) -> String {
    let body: String = body
        .chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("chat sip|{from}|{to}|{body}|text/plain")
}

/// Where a playback stopped and which digit stopped it. Without a
/// `PLAYBACK_STOP` nothing was played.
fn playback_result(stop: Option<&PlaybackStop>, from_sample: u64) -> (u64, Option<char>) {
    match stop {
        Some(stop) => (
            stop.position.unwrap_or(from_sample),
            stop.terminator.filter(|_| stop.interrupted),
        ),
        None => (from_sample, None),
    }
}

/// The inbound connection's events: originate outcomes and device state.
async fn pump_inbound_events(
    inner: Weak<Inner>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let event = match event {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "freeswitch events came faster than they were handled"
                );
                // Hang-ups may be among them: ask FreeSWITCH from now on.
                if let Some(inner) = inner.upgrade() {
                    lock(&inner.channels).clear();
                }
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event.name() {
            Some("BACKGROUND_JOB") => background_job(&inner, &event),
            Some("CHANNEL_CREATE") => {
                if let Some(uuid) = event.unique_id() {
                    let mut channels = lock(&inner.channels);
                    if channels.len() < MAX_TRACKED_CHANNELS {
                        channels.insert(uuid.to_owned());
                    }
                }
            }
            Some("CHANNEL_HANGUP_COMPLETE") => {
                if let Some(uuid) = event.unique_id() {
                    lock(&inner.channels).remove(uuid);
                }
                originated_leg_hung_up(&inner, &event);
            }
            Some("PRESENCE_IN") => presence(&inner, &event),
            Some("CUSTOM") => registration(&inner, &event),
            _ => {}
        }
    }
}

fn background_job(inner: &Inner, event: &Event) {
    let Some(job) = event.job_uuid() else { return };
    let body = event.body().unwrap_or_default().trim();
    let failed = {
        let mut originates = lock(&inner.originates);
        let Some(origin) = originates.jobs.remove(job) else {
            return;
        };
        if let Some(cause) = body.strip_prefix("-ERR") {
            originates.answered.remove(&origin);
            Some((origin, cause_from_name(cause.trim())))
        } else {
            // `+OK <uuid>`: the leg may still fail before its socket connects.
            let answered = originates.answered.remove(&origin);
            let leg = body.strip_prefix("+OK").map(str::trim).unwrap_or_default();
            if !answered && !leg.is_empty() && originates.legs.len() < MAX_PENDING_ORIGINATES {
                originates.legs.insert(leg.to_owned(), origin);
            }
            None
        }
    };
    if let Some((origin, cause)) = failed {
        debug!(?origin, ?cause, "originate failed");
        inner.emit(SwitchEvent::OriginateFailed { origin, cause });
    }
}

fn originated_leg_hung_up(inner: &Inner, event: &Event) {
    let Some(uuid) = event.unique_id() else {
        return;
    };
    let origin = lock(&inner.originates).legs.remove(uuid);
    if let Some(origin) = origin {
        // Answered but never connected back (the socket failed), or hung
        // up between answer and connect.
        inner.emit(SwitchEvent::OriginateFailed {
            origin,
            cause: hangup_cause_of(event),
        });
    }
}

/// Report an originate that never resolved (its `BACKGROUND_JOB` was lost
/// with the inbound connection) once it cannot ring any longer.
fn watch_originate(inner: Weak<Inner>, job: String, limit: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        let Some(inner) = inner.upgrade() else { return };
        let origin = {
            let mut originates = lock(&inner.originates);
            let origin = originates.jobs.remove(&job);
            if let Some(origin) = &origin {
                if originates.answered.remove(origin) {
                    return;
                }
                originates.legs.retain(|_, o| o != origin);
            }
            origin
        };
        if let Some(origin) = origin {
            warn!(
                ?origin,
                "no outcome for an originate; reporting it as not answered"
            );
            inner.emit(SwitchEvent::OriginateFailed {
                origin,
                cause: HangupCause::NoAnswer,
            });
        }
    });
}

fn presence(inner: &Inner, event: &Event) {
    let Some(endpoint) = event
        .header("from")
        .map(user_part)
        .filter(|e| !e.is_empty())
    else {
        return;
    };
    let Some(channel) = event.unique_id().map(str::to_owned) else {
        return;
    };
    let state = match event
        .header("answer-state")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "early" | "ringing" => Some(DeviceState::Ringing),
        "confirmed" | "answered" => Some(DeviceState::InUse),
        "terminated" | "hangup" => None,
        _ => return,
    };
    let changed = {
        let mut devices = lock(&inner.devices);
        if !devices.channels.contains_key(endpoint) && devices.channels.len() >= MAX_DEVICES {
            return;
        }
        let channels = devices.channels.entry(endpoint.to_owned()).or_default();
        match state {
            Some(state)
                if channels.len() < MAX_CHANNELS_PER_DEVICE || channels.contains_key(&channel) =>
            {
                channels.insert(channel, state);
            }
            Some(_) => {}
            None => {
                channels.remove(&channel);
            }
        }
        if channels.is_empty() {
            devices.channels.remove(endpoint);
        }
        devices.update(endpoint)
    };
    if let Some(state) = changed {
        inner.emit(SwitchEvent::DeviceStateChanged {
            endpoint: endpoint.to_owned(),
            state,
        });
    }
}

fn registration(inner: &Inner, event: &Event) {
    let registered = match event.subclass() {
        Some("sofia::register") => true,
        Some("sofia::unregister" | "sofia::expire") => false,
        _ => return,
    };
    let Some(endpoint) = event
        .header("from-user")
        .or_else(|| event.header("user"))
        .filter(|e| !e.is_empty())
    else {
        return;
    };
    let changed = {
        let mut devices = lock(&inner.devices);
        if !devices.registered.contains_key(endpoint) && devices.registered.len() >= MAX_DEVICES {
            return;
        }
        devices.registered.insert(endpoint.to_owned(), registered);
        devices.update(endpoint)
    };
    if let Some(state) = changed {
        inner.emit(SwitchEvent::DeviceStateChanged {
            endpoint: endpoint.to_owned(),
            state,
        });
    }
}

impl Devices {
    fn state(&self, endpoint: &str, registered: Option<bool>) -> DeviceState {
        let calls = self.channels.get(endpoint);
        if let Some(calls) = calls {
            if calls.values().any(|s| *s == DeviceState::Ringing) {
                return DeviceState::Ringing;
            }
            if !calls.is_empty() {
                return DeviceState::InUse;
            }
        }
        match registered.or_else(|| self.registered.get(endpoint).copied()) {
            Some(true) => DeviceState::Idle,
            Some(false) => DeviceState::Unavailable,
            None => DeviceState::Unknown,
        }
    }

    /// The state now, when it differs from the last one reported.
    fn update(&mut self, endpoint: &str) -> Option<DeviceState> {
        let state = self.state(endpoint, None);
        if self.last.get(endpoint) == Some(&state) {
            return None;
        }
        if self.last.len() < MAX_DEVICES || self.last.contains_key(endpoint) {
            self.last.insert(endpoint.to_owned(), state);
        }
        Some(state)
    }
}

fn user_part(address: &str) -> &str {
    let address = address
        .strip_prefix("sip:")
        .or_else(|| address.strip_prefix("sips:"))
        .unwrap_or(address);
    address.split('@').next().unwrap_or(address)
}

/// Tell subscribers when the inbound connection goes away and comes back;
/// learn the domain on each connection when it is not configured.
async fn watch_connection(inner: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let mut state = strong.inbound.state();
    drop(strong);
    let mut was_connected = matches!(*state.borrow(), InboundState::Connected);
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let connected = matches!(*state.borrow_and_update(), InboundState::Connected);
        let Some(inner) = inner.upgrade() else { return };
        if connected != was_connected {
            // Events may have been missed meanwhile.
            lock(&inner.channels).clear();
        }
        match (was_connected, connected) {
            (true, false) => inner.emit(SwitchEvent::Disconnected),
            (false, true) => {
                inner.emit(SwitchEvent::Reconnected);
                if inner.options.domain.is_none() {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        match fetch_domain(&inner.inbound).await {
                            Ok(domain) => *lock(&inner.domain) = Some(domain),
                            Err(e) => warn!(error = %e, "could not learn freeswitch's domain"),
                        }
                    });
                }
            }
            _ => {}
        }
        was_connected = connected;
    }
}

#[async_trait]
impl Switch for FreeswitchSwitch {
    async fn answer(&self, call: &CallId) -> Result<(), SwitchError> {
        // Queued, not awaited: what the engine asks next (the beep) is
        // queued right behind it and starts the moment the call is
        // answered. `playback` flushes the channel's RTP read buffer when it
        // starts (AUDIO_SYNC); started later, after a round trip through
        // ivm, it threw away the caller's first ~80 ms, which the caller
        // speaks into the recording the moment the call is answered.
        self.execute_on_call(
            call,
            vec![("answer", None)],
            Some((new_uuid(), Pending::Answer)),
            None,
        )
        .await
    }

    async fn play(&self, call: &CallId, request: PlayRequest) -> Result<(), SwitchError> {
        let file = self.playable(&request.media, request.from_sample)?;
        if matches!(request.media, Media::Sound(_))
            && request.interrupt_digits.is_empty()
            && self.recording(call)?
            && !file.contains(char::is_whitespace)
            && matches!(
                *self.inner.inbound.state().borrow(),
                InboundState::Connected
            )
        {
            return self.displace(call, file).await;
        }
        let value = terminators(&request.interrupt_digits)?;
        self.execute_on_call(
            call,
            vec![("playback", Some(file))],
            Some((
                new_uuid(),
                Pending::Play {
                    from_sample: request.from_sample,
                },
            )),
            Some(value),
        )
        .await
    }

    async fn start_recording(
        &self,
        call: &CallId,
        request: RecordRequest,
    ) -> Result<(), SwitchError> {
        let written = fs_media_path(&request.path, request.format)?;
        let (_, state) = self.entry(call)?;
        let seconds = request.max_duration.as_secs();
        let argument = if seconds > 0 {
            format!("{written} +{seconds}")
        } else {
            written.clone()
        };
        {
            let mut state = lock(&state);
            if state.recordings.len() >= MAX_RECORDINGS_PER_CALL {
                return Err(SwitchError::Refused(format!(
                    "{MAX_RECORDINGS_PER_CALL} recordings already run on this call"
                )));
            }
            state
                .recordings
                .insert(written.clone(), request.path.clone());
        }
        // Set on the channel before recording starts: write every 20 ms
        // frame at once (not 64 KiB at a time), no 0.5 s initial hold, only
        // what the caller says (not what is played to them), and mono: the
        // stock directory gives every user `record_stereo=true`, which
        // would interleave an empty second channel into the raw file.
        let result = self
            .execute_on_call(
                call,
                vec![
                    ("set", Some("enable_file_write_buffering=false".to_owned())),
                    ("set", Some("RECORD_PRE_BUFFER_FRAMES=1".to_owned())),
                    ("set", Some("RECORD_READ_ONLY=true".to_owned())),
                    ("set", Some("RECORD_STEREO=false".to_owned())),
                    ("set", Some("RECORD_STEREO_SWAP=false".to_owned())),
                    ("record_session", Some(argument)),
                ],
                None,
                None,
            )
            .await;
        if result.is_err() {
            lock(&state).recordings.remove(&written);
        }
        result
    }

    async fn stop_recording(&self, call: &CallId) -> Result<(), SwitchError> {
        let (_, state) = self.entry(call)?;
        let written: Vec<String> = lock(&state).recordings.keys().cloned().collect();
        for path in written {
            // `uuid_record ... stop` acts at once, even while the channel
            // plays something; a queued `stop_record_session` would wait.
            let api = !path.contains(char::is_whitespace)
                && matches!(
                    *self.inner.inbound.state().borrow(),
                    InboundState::Connected
                );
            if api {
                self.api_ok(&format!("uuid_record {call} stop {path}"))
                    .await?;
            } else {
                self.execute_on_call(call, vec![("stop_record_session", Some(path))], None, None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn connect(&self, call: &CallId, target: &str) -> Result<(), SwitchError> {
        super::check_target(target)?;
        // The same dial string as originate, bridged from this call; the
        // call is hung up when the bridge ends.
        let dial = self.dial_string_for(Some(call), target).await?;
        self.execute_on_call(
            call,
            vec![
                ("set", Some("hangup_after_bridge=true".to_owned())),
                ("bridge", Some(dial)),
            ],
            None,
            None,
        )
        .await
    }

    async fn originate(&self, request: OriginateRequest) -> Result<(), SwitchError> {
        let url = self
            .dial_string_for(origin_caller(&request.id).as_ref(), &request.target)
            .await?;
        let mut command = originate_command(&url, &request, self.inner.socket_address)?;
        // The answered leg proves itself like every outbound session.
        if !self.inner.outbound_secret.is_empty() {
            command = command.replacen(
                "'{",
                &format!("'{{ivm_secret={},", self.inner.outbound_secret),
                1,
            );
        }
        let job = new_uuid();
        {
            let mut originates = lock(&self.inner.originates);
            if originates.jobs.len() >= MAX_PENDING_ORIGINATES {
                return Err(SwitchError::Refused(format!(
                    "{MAX_PENDING_ORIGINATES} originates are already waiting for an outcome"
                )));
            }
            originates.jobs.insert(job.clone(), request.id.clone());
        }
        if let Err(e) = self.inner.inbound.bgapi(&command, &job).await {
            lock(&self.inner.originates).jobs.remove(&job);
            return Err(inbound_error(&self.inner.inbound, e));
        }
        watch_originate(
            Arc::downgrade(&self.inner),
            job,
            request.ring_timeout + self.inner.options.originate_grace,
        );
        Ok(())
    }

    async fn bridge(&self, a: &CallId, b: &CallId) -> Result<(), SwitchError> {
        self.entry(a)?;
        self.entry(b)?;
        self.api_ok(&format!("uuid_bridge {a} {b}")).await.map(drop)
    }

    async fn hangup(&self, call: &CallId, cause: HangupCause) -> Result<(), SwitchError> {
        let (connection, _) = self.entry(call)?;
        let name = cause_name(cause);
        match self
            .inner
            .inbound
            .api_ok(&format!("uuid_kill {call} {name}"))
            .await
        {
            Ok(_) => Ok(()),
            // Without the inbound connection, the call's own socket can
            // still hang it up (after whatever it is executing).
            Err(InboundError::NotConnected { .. } | InboundError::AuthFailed(_)) => {
                let text = esl::sendmsg(None, &SendMsg::Hangup { cause: name })
                    .map_err(|e| SwitchError::Refused(e.to_string()))?;
                let reply = connection
                    .command(text, self.inner.options.request_timeout)
                    .await
                    .map_err(connection_error)?;
                if reply.is_ok() {
                    Ok(())
                } else {
                    Err(SwitchError::Refused(format!("hangup: {}", reply.text())))
                }
            }
            Err(e) => Err(inbound_error(&self.inner.inbound, e)),
        }
    }

    async fn send_text(&self, endpoint: &str, from: &str, body: &str) -> Result<(), SwitchError> {
        check_endpoint(endpoint)?;
        if body.len() > MAX_TEXT_BYTES {
            return Err(SwitchError::Refused(format!(
                "a text message is limited to {MAX_TEXT_BYTES} bytes"
            )));
        }
        let domain = self.domain().await?;
        // `from` (the sender's name) is not carried: `chat` sends from a
        // plain `ivm@<domain>`.
        let _ = from;
        // The `chat` API (mod_dptools) sends a SIP MESSAGE through
        // mod_sofia to the registered user. Measured on 1.11.1: a
        // `CUSTOM SMS::SEND_MESSAGE` event is accepted (+OK) but never
        // reaches the phone. Its argument is `|`-separated on one line.
        let command = chat_command(
            &format!("ivm@{domain}"),
            &address_of(endpoint, &domain),
            body,
        );
        let reply = self.api_ok(&command).await?;
        if reply.trim_start().starts_with("Sent") {
            Ok(())
        } else {
            Err(SwitchError::Refused(format!("chat: {}", reply.trim())))
        }
    }

    async fn set_message_waiting(
        &self,
        mailbox: &str,
        new_messages: u32,
        old_messages: u32,
    ) -> Result<(), SwitchError> {
        check_endpoint(mailbox)?;
        let domain = self.domain().await?;
        let waiting = if new_messages > 0 { "yes" } else { "no" };
        let text = sendevent(
            "MESSAGE_WAITING",
            &[
                ("MWI-Messages-Waiting", waiting.to_owned()),
                (
                    "MWI-Message-Account",
                    format!("sip:{}", address_of(mailbox, &domain)),
                ),
                (
                    "MWI-Voice-Message",
                    format!("{new_messages}/{old_messages} (0/0)"),
                ),
            ],
            None,
        );
        let reply = self
            .inner
            .inbound
            .request(text, "sendevent MESSAGE_WAITING")
            .await
            .map_err(|e| inbound_error(&self.inner.inbound, e))?;
        if reply.is_ok() {
            Ok(())
        } else {
            Err(SwitchError::Refused(format!("sendevent: {}", reply.text())))
        }
    }

    async fn device_state(&self, endpoint: &str) -> Result<DeviceState, SwitchError> {
        check_endpoint(endpoint)?;
        let domain = self.domain().await?;
        let response = self
            .inner
            .inbound
            .api(&format!(
                "sofia_contact */{}",
                address_of(endpoint, &domain)
            ))
            .await
            .map_err(|e| inbound_error(&self.inner.inbound, e))?;
        let body = response.body.trim();
        let registered = if body.contains("user_not_registered") {
            Some(false)
        } else if body.starts_with("error/") || body.starts_with("-ERR") || body.is_empty() {
            None
        } else {
            Some(true)
        };
        let user = user_part(endpoint);
        Ok(lock(&self.inner.devices).state(user, registered))
    }

    /// With `enable_file_write_buffering=false` FreeSWITCH writes every 20 ms
    /// frame at once; `.r8` is its raw 16-bit 8 kHz format.
    fn capture_format(&self) -> (AudioFormat, &'static str) {
        (AudioFormat::Slin { sample_rate: 8_000 }, "r8")
    }

    fn events(&self) -> mpsc::UnboundedReceiver<SwitchEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_position_comes_from_playback_stop_only() {
        let stop = PlaybackStop {
            position: Some(24000),
            interrupted: true,
            terminator: Some('#'),
        };
        assert_eq!(playback_result(Some(&stop), 12000), (24000, Some('#')));
        let done = PlaybackStop {
            interrupted: false,
            ..stop
        };
        assert_eq!(playback_result(Some(&done), 12000), (24000, None));
        assert_eq!(playback_result(None, 12000), (12000, None));
    }

    #[test]
    fn chat_command_keeps_the_body_on_one_line_without_separators() {
        assert_eq!(
            chat_command("ivm@d", "1002@d", "a|b\r\nc"),
            "chat sip|ivm@d|1002@d|a/b  c|text/plain"
        );
    }

    #[test]
    fn device_state_prefers_calls_over_registration() {
        let mut devices = Devices::default();
        assert_eq!(devices.state("1002", None), DeviceState::Unknown);
        devices.registered.insert("1002".into(), true);
        assert_eq!(devices.update("1002"), Some(DeviceState::Idle));
        assert_eq!(devices.update("1002"), None);
        devices
            .channels
            .entry("1002".into())
            .or_default()
            .insert("u1".into(), DeviceState::InUse);
        assert_eq!(devices.update("1002"), Some(DeviceState::InUse));
        assert_eq!(devices.state("1002", Some(false)), DeviceState::InUse);
        assert_eq!(user_part("sip:1002@example.com"), "1002");
    }
}
