//! The Asterisk adapter: FastAGI for call control, AMI for originate,
//! events, presence and SIP MESSAGE. The only module that knows their syntax.
//!
//! Each call that reaches `ivm` is one FastAGI session, owned by one task that
//! runs the engine's commands on it in order. Everything that is not "do this
//! on my channel now" goes through AMI: originate, bridge, hang up with a
//! cause, recording (MixMonitor, so the AGI stays free to play tones), text
//! messages, the message-waiting lamp and device state. AMI events become
//! [`SwitchEvent`]s for the channels `ivm` knows.

pub mod agi;
pub mod ami;
pub mod audiosocket;
mod contacts;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use self::agi::AgiSession;
use self::ami::{AmiClient, AmiClientError, AmiClientOptions, AmiConnection};
use self::audiosocket::MediaServer;
use super::peer::{
    DialPolicy, PeerPolicy, channel_name_ok, context_ok, log_safe, origin_caller, originate_id_ok,
};
use super::{
    CallId, DeviceState, HangupCause, Media, OriginateId, OriginateRequest, PlayRequest,
    RecordRequest, Switch, SwitchError, SwitchEvent,
};
use crate::config::AsteriskConfig;
use crate::media::{ASTERISK_FLUSH_BYTES, AudioFormat, growing_file_stop_position};
use crate::proto::agi::{AgiCommand, AgiReply};
use crate::proto::ami::{AmiAction, AmiMessage};
use crate::proto::audiosocket::Uuid;

/// The FastAGI script name in the dialplan snippet and in originates.
pub const AGI_SCRIPT: &str = "ivm";
/// Query parameter that marks an originated leg coming back.
const ORIGIN_PARAM: &str = "origin";
/// How long to wait for AMI to tell a hang-up's cause the AGI did not know.
const HANGUP_CAUSE_WAIT: Duration = Duration::from_secs(2);
/// How long a failed originate waits for its channel's hang-up cause.
const ORIGINATE_CAUSE_WAIT: Duration = Duration::from_secs(1);
/// How long an ANSWER may take before the call is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AsteriskSwitchOptions {
    /// Where `Media::Sound` names are found; `None` uses Asterisk's sounds.
    pub sounds_dir: Option<PathBuf>,
    /// Which targets may leave the PBX; the default allows none.
    pub dial_policy: DialPolicy,
    /// FastAGI connections still in their handshake from one address.
    pub max_pending_per_peer: usize,
    /// Check every channel a FastAGI peer names against Asterisk's own view
    /// (AMI) before using it. Only measurements turn this off.
    pub verify_channels: bool,
}

impl Default for AsteriskSwitchOptions {
    fn default() -> Self {
        AsteriskSwitchOptions {
            sounds_dir: None,
            dial_policy: DialPolicy::default(),
            max_pending_per_peer: agi::DEFAULT_MAX_PENDING_PER_PEER,
            verify_channels: true,
        }
    }
}

/// The dialplan snippet's own context (`dialplan/asterisk/extensions_ivm.conf`).
/// A caller whose channel is in it came by `Goto`, and its own context is
/// in the channel variable [`CALLER_CONTEXT_VAR`].
const SNIPPET_CONTEXT: &str = "ivm";
/// Set by administrators who `Goto` the `ivm` context instead of including it.
const CALLER_CONTEXT_VAR: &str = "IVM_CALLER_CONTEXT";
/// Deadline of AGI commands that answer at once (GET VARIABLE, HANGUP).
const QUICK_COMMAND: Duration = Duration::from_secs(2);

/// The Asterisk switch. Cheap to clone; all clones drive the same switch.
#[derive(Clone)]
pub struct AsteriskSwitch {
    inner: Arc<Inner>,
}

struct Inner {
    ami: AmiClient,
    config: AsteriskConfig,
    options: AsteriskSwitchOptions,
    agi_address: SocketAddr,
    calls: Mutex<HashMap<CallId, CallEntry>>,
    /// The FastAGI peer policy; here for its rate-limited refusal log.
    peers: PeerPolicy,
    /// Asterisk's live channels as AMI reported them: unique id -> name.
    /// Cleared when AMI reconnects (events may have been missed).
    channels: Mutex<HashMap<String, String>>,
    /// Originated channels (our `ChannelId`) not answered yet.
    originated_channels: Mutex<HashMap<String, OriginateId>>,
    /// Originates that failed, waiting for their channel's `Hangup` cause.
    failing: Mutex<HashMap<String, (OriginateId, HangupCause)>>,
    /// Causes of originated channels that hung up before Asterisk's
    /// `OriginateResponse` said the originate failed.
    early_causes: Mutex<HashMap<String, u16>>,
    /// Calls whose AGI ended without a cause, waiting for AMI's `Hangup`.
    hangup_causes: Mutex<HashMap<String, oneshot::Sender<u16>>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<SwitchEvent>>>,
    /// Contacts per PJSIP AOR, from `ContactStatus`.
    contacts: Mutex<contacts::Contacts>,
    /// The AudioSocket media server, once the live stream is enabled.
    media: Mutex<Option<MediaServer>>,
}

struct CallEntry {
    channel: String,
    /// The dialplan context the caller dialled from (`agi_context`); `None`
    /// for legs `ivm` originated.
    context: Option<String>,
    commands: mpsc::UnboundedSender<CallCommand>,
    /// Moved into a bridge by us: its AGI ends then, but the call goes on
    /// until AMI reports the channel's `Hangup`.
    bridged: bool,
}

enum CallCommand {
    Answer(oneshot::Sender<Result<(), SwitchError>>),
    Play(PlayRequest),
    /// Run the Bridge application with this other channel; returns when
    /// the bridge ends.
    Bridge(String),
    /// Dial a target through the dialplan and hang up when that call ends.
    Dial(String),
    /// Run the AudioSocket application with these arguments; returns when
    /// ivm ends the stream (or the call hangs up). Queued commands follow.
    AudioSocket(String),
}

impl AsteriskSwitch {
    /// Bind the FastAGI listener, start the AMI client (it reconnects by
    /// itself), and start turning both into events.
    pub async fn start(
        config: AsteriskConfig,
        options: AsteriskSwitchOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SwitchError> {
        let listener = TcpListener::bind(config.agi_listen).await.map_err(|e| {
            SwitchError::NotConnected(
                config.agi_listen.to_string(),
                format!("cannot listen for FastAGI: {e}"),
            )
        })?;
        let local = listener.local_addr()?;
        // Asterisk must be told an address it can connect to.
        let agi_address = if local.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
        } else {
            local
        };
        let peers =
            PeerPolicy::from_config(&config.agi_allow, &config.agi_secret).map_err(|e| {
                SwitchError::NotConnected(config.agi_listen.to_string(), format!("agi_allow: {e}"))
            })?;
        let mut ami_options =
            AmiClientOptions::new(config.ami_address, &config.ami_user, &config.ami_secret);
        ami_options.keepalive = Some(ami::DEFAULT_KEEPALIVE);
        let ami = AmiClient::start_with(ami_options);
        let agi_config = agi::AgiServerConfig {
            max_pending_per_peer: options.max_pending_per_peer,
            peers: Some(peers.clone()),
            ..agi::AgiServerConfig::default()
        };
        let inner = Arc::new(Inner {
            ami,
            config,
            options,
            agi_address,
            calls: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            peers,
            hangup_causes: Mutex::new(HashMap::new()),
            originated_channels: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
            early_causes: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            contacts: Mutex::default(),
            media: Mutex::new(None),
        });
        let (session_tx, session_rx) = mpsc::channel(64);
        tokio::spawn(agi::serve_with(
            listener,
            session_tx,
            shutdown.clone(),
            agi_config,
        ));
        tokio::spawn(dispatch_sessions(inner.clone(), session_rx));
        tokio::spawn(pump_ami_events(inner.clone(), shutdown.clone()));
        tokio::spawn(watch_connection(inner.clone(), shutdown));
        info!(agi = %agi_address, ami = %inner.config.ami_address, "asterisk adapter started");
        Ok(Self { inner })
    }

    /// The FastAGI address Asterisk connects to.
    pub fn agi_address(&self) -> SocketAddr {
        self.inner.agi_address
    }

    pub fn ami(&self) -> &AmiClient {
        &self.inner.ami
    }

    /// Wait until AMI is logged in and Asterisk fully booted.
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), SwitchError> {
        self.inner
            .ami
            .wait_connected(limit)
            .await
            .map(drop)
            .map_err(|e| {
                SwitchError::NotConnected(self.inner.config.ami_address.to_string(), e.to_string())
            })
    }

    /// Carry live audio through `server` from now on (`[delivery] media =
    /// "stream"`); see [`audiosocket_support`].
    pub fn enable_media(&self, server: MediaServer) {
        *lock(&self.inner.media) = Some(server);
    }

    fn channel_of(&self, call: &CallId) -> Result<String, SwitchError> {
        lock(&self.inner.calls)
            .get(call)
            .map(|entry| entry.channel.clone())
            .ok_or_else(|| SwitchError::NoSuchCall(call.clone()))
    }

    fn call_commands(
        &self,
        call: &CallId,
    ) -> Result<mpsc::UnboundedSender<CallCommand>, SwitchError> {
        lock(&self.inner.calls)
            .get(call)
            .map(|entry| entry.commands.clone())
            .ok_or_else(|| SwitchError::NoSuchCall(call.clone()))
    }

    /// The context to dial `target` in for `caller`: `ivm`'s own
    /// (`[asterisk] context`) for extensions; for a target outside the PBX
    /// the caller's own context, and only when `[numbering]
    /// external_targets` allows it (toll fraud: the caller's outbound
    /// restrictions apply, never `ivm`'s).
    async fn dial_context(
        &self,
        caller: Option<&CallId>,
        target: &str,
    ) -> Result<String, SwitchError> {
        let policy = &self.inner.options.dial_policy;
        if !policy.is_external(target) {
            return Ok(self.inner.config.context.clone());
        }
        if !policy.external_allowed(target) {
            return Err(SwitchError::Refused(
                "a target outside the PBX that [numbering] external_targets does not allow".into(),
            ));
        }
        let context = match caller {
            Some(call) => caller_context(&self.inner, call).await,
            None => None,
        };
        context.ok_or_else(|| {
            SwitchError::Refused(
                "a target outside the PBX, and the caller's own dialplan context is unknown".into(),
            )
        })
    }

    async fn action(&self, action: AmiAction) -> Result<AmiMessage, SwitchError> {
        let name = action.name.clone();
        let response = self.inner.ami.send(action).await.map_err(ami_error)?;
        if !response.is_success() {
            return Err(SwitchError::Refused(format!(
                "{name}: {}",
                response.message().unwrap_or("no reason given")
            )));
        }
        Ok(response.response)
    }
}

/// A poisoned lock only means another task panicked mid-update of a plain
/// map; the map itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ami_error(e: AmiClientError) -> SwitchError {
    match e {
        AmiClientError::NotConnected { address, state } => {
            SwitchError::NotConnected(address.to_string(), state)
        }
        AmiClientError::Timeout { .. } => SwitchError::Timeout,
        AmiClientError::Refused { action, message } => {
            SwitchError::Refused(format!("{action}: {message}"))
        }
        other => SwitchError::Protocol(other.to_string()),
    }
}

impl Inner {
    fn emit(&self, event: SwitchEvent) {
        debug!(?event, "switch event");
        lock(&self.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }

    fn call_for_uniqueid(&self, uniqueid: &str) -> Option<CallId> {
        let id = CallId(uniqueid.to_owned());
        lock(&self.calls).contains_key(&id).then_some(id)
    }
}

/// Admit every authenticated FastAGI session, each in its own task.
async fn dispatch_sessions(inner: Arc<Inner>, mut sessions: mpsc::Receiver<AgiSession>) {
    while let Some(session) = sessions.recv().await {
        tokio::spawn(admit(inner.clone(), session));
    }
}

/// Why a session was not admitted; logged at warn with the peer address
/// (rate-limited per address), the unique id only at debug.
fn refuse_session(inner: &Inner, session: &AgiSession, reason: &str) {
    debug!(peer = %session.peer_addr(),
        uniqueid = %log_safe(session.env().uniqueid().unwrap_or("")),
        reason, "fastagi session refused");
    inner
        .peers
        .refused("fastagi", session.peer_addr().ip(), reason);
}

/// Check what the peer says about its channel, then give the call its task.
/// Nothing is sent to Asterisk about a channel before it passed: its name
/// and unique id have a safe syntax, the unique id is not in use, the
/// channel exists with that name in Asterisk's own view (AMI), and an
/// answered leg is the very channel `ivm` originated for that origin.
async fn admit(inner: Arc<Inner>, session: AgiSession) {
    let started = Instant::now();
    let env = session.env();
    if env.script_path() != AGI_SCRIPT {
        return refuse_session(&inner, &session, "unknown script");
    }
    let (Some(uniqueid), Some(channel)) = (env.uniqueid(), env.channel()) else {
        return refuse_session(&inner, &session, "no agi_uniqueid or agi_channel");
    };
    if !channel_name_ok(uniqueid) || !channel_name_ok(channel) {
        return refuse_session(&inner, &session, "unsafe channel name or unique id");
    }
    let call = CallId(uniqueid.to_owned());
    let channel = channel.to_owned();
    let origin = match env.query(ORIGIN_PARAM) {
        None => None,
        Some(o) => {
            let origin = OriginateId(o.to_owned());
            // Bound to the channel: only the channel id ivm gave this
            // originate may answer it, and only once.
            let expected = lock(&inner.originated_channels).get(&call.0).cloned();
            if !originate_id_ok(&origin) || expected.as_ref() != Some(&origin) {
                return refuse_session(&inner, &session, "origin of no originate in progress");
            }
            Some(origin)
        }
    };
    let context = match origin {
        Some(_) => None,
        None => env.context().filter(|c| context_ok(c)).map(str::to_owned),
    };
    let (commands, queue) = mpsc::unbounded_channel();
    {
        let mut calls = lock(&inner.calls);
        if calls.contains_key(&call) {
            drop(calls);
            return refuse_session(&inner, &session, "duplicate agi_uniqueid");
        }
        calls.insert(
            call.clone(),
            CallEntry {
                channel: channel.clone(),
                context,
                commands,
                bridged: false,
            },
        );
    }
    if inner.options.verify_channels && !channel_is_live(&inner, &call.0, &channel).await {
        lock(&inner.calls).remove(&call);
        return refuse_session(&inner, &session, "no such channel in asterisk");
    }
    debug!(%call, checks = ?started.elapsed(), "fastagi session admitted");
    let event = match origin {
        Some(origin) => {
            lock(&inner.originated_channels).remove(&call.0);
            SwitchEvent::Answered {
                origin,
                call: call.clone(),
            }
        }
        None => SwitchEvent::IncomingCall {
            call: call.clone(),
            caller_number: env.callerid().unwrap_or_default().to_owned(),
            caller_name: env.calleridname().unwrap_or_default().to_owned(),
            dialed: env.extension().unwrap_or_default().to_owned(),
            origin: None,
            endpoint: env.channel().and_then(pjsip_endpoint).map(str::to_owned),
        },
    };
    tokio::spawn(run_call(inner.clone(), call, session, queue));
    inner.emit(event);
}

/// The PJSIP endpoint a channel belongs to: `PJSIP/<endpoint>-<8 hex>`
/// (the channel was checked against Asterisk's own list before this; the
/// endpoint is the one PJSIP authenticated or matched by its identify
/// rules). Any other technology (Local, IAX2, …) vouches for no one.
pub fn pjsip_endpoint(channel: &str) -> Option<&str> {
    let rest = channel.strip_prefix("PJSIP/")?;
    let (endpoint, seq) = rest.rsplit_once('-')?;
    (!endpoint.is_empty() && seq.len() == 8 && seq.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(endpoint)
}

/// Whether Asterisk has a channel `name` with unique id `uniqueid`: from
/// the AMI channel events seen so far, else asked with `Getvar`.
async fn channel_is_live(inner: &Inner, uniqueid: &str, name: &str) -> bool {
    if let Some(known) = lock(&inner.channels).get(uniqueid) {
        return known == name;
    }
    let action = AmiAction::new("Getvar")
        .field("Channel", name)
        .field("Variable", "UNIQUEID");
    match inner.ami.send(action).await {
        Ok(response) if response.is_success() => response.response.get("Value") == Some(uniqueid),
        _ => false,
    }
}

/// The dialplan context of a call's caller, for external targets: the
/// channel's `agi_context`, or `IVM_CALLER_CONTEXT` when it came to the
/// snippet's context by `Goto`. `None` when unknown (originated legs).
async fn caller_context(inner: &Inner, call: &CallId) -> Option<String> {
    let (channel, context) = {
        let calls = lock(&inner.calls);
        let entry = calls.get(call)?;
        (entry.channel.clone(), entry.context.clone()?)
    };
    if context != SNIPPET_CONTEXT {
        return Some(context);
    }
    let action = AmiAction::new("Getvar")
        .field("Channel", channel)
        .field("Variable", CALLER_CONTEXT_VAR);
    let response = inner.ami.send(action).await.ok()?;
    response
        .response
        .get("Value")
        .filter(|c| context_ok(c) && *c != SNIPPET_CONTEXT)
        .map(str::to_owned)
}

/// One call's FastAGI session: run its commands in order, notice hang-up.
async fn run_call(
    inner: Arc<Inner>,
    call: CallId,
    mut session: AgiSession,
    mut queue: mpsc::UnboundedReceiver<CallCommand>,
) {
    let mut hangup = session.hangup_watch();
    loop {
        tokio::select! {
            command = queue.recv() => {
                let Some(command) = command else { break };
                run_command(&inner, &call, &mut session, command).await;
                if session.hung_up() {
                    break;
                }
            }
            _ = async { hangup.wait_for(|hung_up| *hung_up).await.is_ok() } => break,
        }
    }
    let bridged = lock(&inner.calls)
        .get(&call)
        .is_some_and(|entry| entry.bridged);
    if bridged {
        // Leaving the AGI for the bridge is not a hang-up; AMI's Hangup
        // event of the channel will say when the call really ends.
        drop(session);
        return;
    }
    // A channel hung up by its far end often has no HANGUPCAUSE yet when the
    // AGI hears HANGUP. Asterisk keeps the socket open until we close it and
    // only then finishes the channel, so AMI's Hangup event (with the cause)
    // can only come after the drop below.
    let cause_now = match session
        .command_within(
            &AgiCommand::GetVariable {
                name: "HANGUPCAUSE".into(),
            },
            QUICK_COMMAND,
        )
        .await
    {
        Ok(AgiReply::Success {
            data: Some(code), ..
        }) => code.trim().parse().ok().filter(|c| *c != 0),
        _ => None,
    };
    let (cause_tx, cause_rx) = oneshot::channel();
    lock(&inner.hangup_causes).insert(call.0.clone(), cause_tx);
    drop(session);
    let cause = match cause_now {
        Some(cause) => cause,
        None => tokio::time::timeout(HANGUP_CAUSE_WAIT, cause_rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(16),
    };
    lock(&inner.hangup_causes).remove(&call.0);
    lock(&inner.calls).remove(&call);
    inner.emit(SwitchEvent::HungUp {
        call,
        cause: HangupCause::from_q850(cause),
    });
}

async fn run_command(inner: &Inner, call: &CallId, session: &mut AgiSession, command: CallCommand) {
    match command {
        CallCommand::Answer(reply) => {
            let result =
                match tokio::time::timeout(ANSWER_TIMEOUT, session.command(&AgiCommand::Answer))
                    .await
                {
                    Ok(Ok(AgiReply::Success { result: 0, .. })) => Ok(()),
                    Ok(Ok(AgiReply::Success { .. } | AgiReply::DeadChannel | AgiReply::Hangup)) => {
                        Err(SwitchError::HungUp)
                    }
                    Ok(Ok(other)) => Err(SwitchError::Refused(format!("ANSWER: {other:?}"))),
                    Ok(Err(e)) => Err(SwitchError::Protocol(e.to_string())),
                    Err(_) => Err(SwitchError::Timeout),
                };
            let _ = reply.send(result);
        }
        CallCommand::Dial(dial) => {
            let command = AgiCommand::Exec {
                application: "Dial".into(),
                options: dial,
            };
            match session.command(&command).await {
                Ok(reply) => debug!(%call, ?reply, "call back ended"),
                Err(e) => warn!(%call, "call back failed: {e}"),
            }
            let _ = session
                .command_within(&AgiCommand::Hangup, QUICK_COMMAND)
                .await;
        }
        CallCommand::AudioSocket(arguments) => {
            let command = AgiCommand::Exec {
                application: "AudioSocket".into(),
                options: arguments,
            };
            match session.command(&command).await {
                Ok(reply) => debug!(%call, ?reply, "audiosocket ended"),
                Err(e) => warn!(%call, "audiosocket failed: {e}"),
            }
        }
        CallCommand::Bridge(other) => {
            let bridge = AgiCommand::Exec {
                application: "Bridge".into(),
                options: format!("{other},x"),
            };
            match session.command(&bridge).await {
                Ok(reply) => debug!(%call, ?reply, "bridge ended"),
                Err(e) => warn!(%call, "bridge failed: {e}"),
            }
        }
        CallCommand::Play(request) => {
            let (file, raw) = playable(&inner.options, &request.media);
            let started = Instant::now();
            let reply = session
                .command(&AgiCommand::StreamFile {
                    file,
                    escape_digits: request.interrupt_digits.clone(),
                    sample_offset: request.from_sample,
                })
                .await;
            let (stopped_at_sample, interrupted_by) = match &reply {
                Ok(reply @ AgiReply::Success { endpos, .. }) => {
                    let digit = reply.dtmf_digit();
                    let endpos = endpos.unwrap_or(request.from_sample);
                    let position = match (&raw, digit) {
                        // Only a run to the end of a growing file needs fixing.
                        (Some((path, format)), None) => true_end_of_growing_file(
                            path,
                            *format,
                            request.from_sample,
                            endpos,
                            started.elapsed(),
                        ),
                        _ => endpos,
                    };
                    (position, digit)
                }
                _ => (request.from_sample, None),
            };
            inner.emit(SwitchEvent::PlaybackFinished {
                call: call.clone(),
                stopped_at_sample,
                interrupted_by,
            });
        }
    }
}

/// The name STREAM FILE wants (no extension) and, for raw recordings, what
/// the end-of-file correction needs.
fn playable(
    options: &AsteriskSwitchOptions,
    media: &Media,
) -> (String, Option<(PathBuf, AudioFormat)>) {
    match media {
        Media::File { path, format } => {
            let stem = path.with_extension("").display().to_string();
            let raw = matches!(
                format,
                AudioFormat::Slin { .. } | AudioFormat::Ulaw | AudioFormat::Alaw
            )
            .then(|| (path.clone(), *format));
            (stem, raw)
        }
        Media::Sound(name) => match &options.sounds_dir {
            Some(dir) => (dir.join(name).display().to_string(), None),
            None => (name.clone(), None),
        },
    }
}

fn true_end_of_growing_file(
    path: &std::path::Path,
    format: AudioFormat,
    from_sample: u64,
    endpos: u64,
    elapsed: Duration,
) -> u64 {
    let (Some(rate), Some(bytes_per_sample)) = (format.sample_rate(), format.bytes_per_sample())
    else {
        return endpos;
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return endpos;
    };
    let on_disk = meta.len() / u64::from(bytes_per_sample);
    let expected = from_sample + (elapsed.as_secs_f64() * f64::from(rate)) as u64;
    growing_file_stop_position(
        endpos,
        on_disk,
        expected,
        ASTERISK_FLUSH_BYTES / u64::from(bytes_per_sample),
    )
}

/// AMI events about the channels and devices `ivm` cares for.
async fn pump_ami_events(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut events = inner.ami.events();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let event = match event {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "ami events came faster than they were handled");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event.event_name() {
            Some("Newchannel") => {
                if let (Some(uniqueid), Some(channel)) =
                    (event.get("Uniqueid"), event.get("Channel"))
                {
                    lock(&inner.channels).insert(uniqueid.to_owned(), channel.to_owned());
                }
            }
            Some("Rename") => {
                if let (Some(uniqueid), Some(channel)) =
                    (event.get("Uniqueid"), event.get("Newname"))
                {
                    lock(&inner.channels).insert(uniqueid.to_owned(), channel.to_owned());
                }
            }
            Some("DTMFEnd") if event.is("Direction", "Received") => {
                let call = event
                    .get("Uniqueid")
                    .and_then(|u| inner.call_for_uniqueid(u));
                let digit = event.get("Digit").and_then(|d| d.chars().next());
                if let (Some(call), Some(digit)) = (call, digit) {
                    inner.emit(SwitchEvent::Dtmf { call, digit });
                }
            }
            Some("Hangup") => {
                let uniqueid = event.get("Uniqueid").unwrap_or_default();
                lock(&inner.channels).remove(uniqueid);
                let cause: Option<u16> = event.get("Cause").and_then(|c| c.parse().ok());
                debug!(
                    uniqueid,
                    channel = event.get("Channel"),
                    ?cause,
                    "ami hangup"
                );
                if let Some(waiter) = lock(&inner.hangup_causes).remove(uniqueid)
                    && let Some(cause) = cause
                {
                    let _ = waiter.send(cause);
                }
                let call = CallId(uniqueid.to_owned());
                let bridged_call_ended = {
                    let mut calls = lock(&inner.calls);
                    let bridged = calls.get(&call).is_some_and(|entry| entry.bridged);
                    if bridged {
                        calls.remove(&call);
                    }
                    bridged
                };
                if bridged_call_ended {
                    inner.emit(SwitchEvent::HungUp {
                        call,
                        cause: HangupCause::from_q850(cause.unwrap_or(16)),
                    });
                }
                // An originated channel that ended before it was answered: its
                // cause tells busy, rejected or no answer better than the
                // originate's own reason (0 for Local channels).
                if lock(&inner.originated_channels).remove(uniqueid).is_some() {
                    let failed = lock(&inner.failing).remove(uniqueid);
                    match (failed, cause) {
                        (Some((origin, fallback)), cause) => {
                            inner.emit(SwitchEvent::OriginateFailed {
                                origin,
                                cause: cause
                                    .filter(|c| *c != 0)
                                    .map_or(fallback, HangupCause::from_q850),
                            })
                        }
                        (None, Some(cause)) => {
                            lock(&inner.early_causes).insert(uniqueid.to_owned(), cause);
                        }
                        (None, None) => {}
                    }
                }
            }
            Some("OriginateResponse") => {
                debug!(?event, "originate response");
                // The origin rides in the AGI URL of the originate; reading it
                // back from here cannot race the originate's own response.
                let origin = event
                    .get("Data")
                    .and_then(|data| data.split_once(&format!("?{ORIGIN_PARAM}=")))
                    // The secret follows as the AGI's first argument.
                    .map(|(_, rest)| OriginateId(rest.split(',').next().unwrap_or("").to_owned()));
                if let Some(origin) = origin
                    && !event.is("Response", "Success")
                {
                    let channel_id = format!("ivm-{}", origin.0);
                    let reason = event
                        .get("Reason")
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    let fallback = originate_failure_cause(reason);
                    let early = lock(&inner.early_causes).remove(&channel_id);
                    if let Some(cause) = early {
                        inner.emit(SwitchEvent::OriginateFailed {
                            origin,
                            cause: if cause == 0 {
                                fallback
                            } else {
                                HangupCause::from_q850(cause)
                            },
                        });
                    } else if lock(&inner.originated_channels).contains_key(&channel_id) {
                        // Wait briefly for the channel's Hangup and its cause.
                        lock(&inner.failing).insert(channel_id.clone(), (origin, fallback));
                        let inner = inner.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(ORIGINATE_CAUSE_WAIT).await;
                            lock(&inner.originated_channels).remove(&channel_id);
                            let failed = lock(&inner.failing).remove(&channel_id);
                            if let Some((origin, cause)) = failed {
                                inner.emit(SwitchEvent::OriginateFailed { origin, cause });
                            }
                        });
                    } else {
                        inner.emit(SwitchEvent::OriginateFailed {
                            origin,
                            cause: fallback,
                        });
                    }
                }
            }
            Some("ContactStatus") => {
                let (aor, uri) = (event.get("AOR"), event.get("URI"));
                let status = event.get("ContactStatus");
                if let (Some(aor), Some(uri), Some(status)) = (aor, uri, status)
                    && let Some(contacts) = lock(&inner.contacts).apply(aor, uri, status)
                {
                    inner.emit(SwitchEvent::ContactsChanged {
                        endpoint: aor.to_owned(),
                        contacts,
                    });
                }
            }
            Some("DeviceStateChange") => {
                if let (Some(device), Some(state)) = (event.get("Device"), event.get("State")) {
                    inner.emit(SwitchEvent::DeviceStateChanged {
                        endpoint: endpoint_of_device(device).to_owned(),
                        state: device_state(state),
                    });
                }
            }
            _ => {}
        }
    }
}

/// `OriginateResponse` `Reason` is the last control frame Asterisk saw
/// (`AST_CONTROL_*`): 1 hang-up, 3 ringing (no answer), 5 busy, 8 congestion.
fn originate_failure_cause(reason: u32) -> HangupCause {
    match reason {
        1 => HangupCause::Rejected,
        3 => HangupCause::NoAnswer,
        5 => HangupCause::Busy,
        _ => HangupCause::Unreachable,
    }
}

fn endpoint_of_device(device: &str) -> &str {
    device
        .split_once('/')
        .map_or(device, |(_, endpoint)| endpoint)
}

fn device_state(state: &str) -> DeviceState {
    match state {
        "NOT_INUSE" => DeviceState::Idle,
        "INUSE" => DeviceState::InUse,
        "BUSY" => DeviceState::Busy,
        "RINGING" | "RINGINUSE" => DeviceState::Ringing,
        "ONHOLD" => DeviceState::OnHold,
        "UNAVAILABLE" => DeviceState::Unavailable,
        // INVALID: no such PJSIP device (a user on another channel driver
        // or a trunk) — not known to be offline.
        _ => DeviceState::Unknown,
    }
}

/// Tell subscribers when AMI goes away and comes back.
async fn watch_connection(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut connection = inner.ami.connection();
    let mut was_connected = matches!(*connection.borrow(), AmiConnection::Connected { .. });
    loop {
        tokio::select! {
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let connected = matches!(
            *connection.borrow_and_update(),
            AmiConnection::Connected { .. }
        );
        if connected != was_connected {
            // Channel events may have been missed: ask Asterisk afresh.
            lock(&inner.channels).clear();
        }
        match (was_connected, connected) {
            (true, false) => inner.emit(SwitchEvent::Disconnected),
            (false, true) => inner.emit(SwitchEvent::Reconnected),
            _ => {}
        }
        was_connected = connected;
    }
}

/// Quote a caller-ID name for `"name" <number>`, dropping what would break it.
fn caller_id(name: &str, number: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | '\\'))
            .collect()
    };
    format!("\"{}\" <{}>", clean(name), clean(number))
}

#[async_trait]
impl Switch for AsteriskSwitch {
    async fn answer(&self, call: &CallId) -> Result<(), SwitchError> {
        let (reply, answer) = oneshot::channel();
        self.call_commands(call)?
            .send(CallCommand::Answer(reply))
            .map_err(|_| SwitchError::HungUp)?;
        answer.await.map_err(|_| SwitchError::HungUp)?
    }

    async fn play(&self, call: &CallId, request: PlayRequest) -> Result<(), SwitchError> {
        self.call_commands(call)?
            .send(CallCommand::Play(request))
            .map_err(|_| SwitchError::HungUp)
    }

    async fn start_recording(
        &self,
        call: &CallId,
        request: RecordRequest,
    ) -> Result<(), SwitchError> {
        let channel = self.channel_of(call)?;
        // Only what the caller says (r()), so tones played to the caller
        // never end up in the message.
        let options = format!("r({})", request.path.display());
        self.action(
            AmiAction::new("MixMonitor")
                .field("Channel", channel)
                .field("File", "")
                .field("Options", options),
        )
        .await
        .map(drop)
    }

    async fn stop_recording(&self, call: &CallId) -> Result<(), SwitchError> {
        let channel = self.channel_of(call)?;
        self.action(AmiAction::new("StopMixMonitor").field("Channel", channel))
            .await
            .map(drop)
    }

    async fn originate(&self, request: OriginateRequest) -> Result<(), SwitchError> {
        super::check_target(&request.target)?;
        if !originate_id_ok(&request.id) {
            return Err(SwitchError::Refused(format!(
                "originate id {:?} is not one ivm makes",
                request.id.0
            )));
        }
        let context = self
            .dial_context(origin_caller(&request.id).as_ref(), &request.target)
            .await?;
        let data = format!(
            "agi://{}/{AGI_SCRIPT}?{ORIGIN_PARAM}={},{}",
            self.inner.agi_address, request.id.0, self.inner.config.agi_secret
        );
        // Our own channel ids: the answered leg's AGI session and the
        // Hangup of a failed attempt can then be told apart exactly.
        let channel_id = format!("ivm-{}", request.id.0);
        let action = AmiAction::new("Originate")
            .field(
                "Channel",
                // `/n`: no Local optimization, so the leg we know stays the
                // leg that carries the call, also once it is bridged.
                format!("Local/{}@{context}/n", request.target),
            )
            .field("ChannelId", channel_id.clone())
            .field("OtherChannelId", format!("{channel_id}-2"))
            .field("Application", "AGI")
            .field("Data", data)
            .field(
                "CallerID",
                caller_id(&request.caller_id_name, &request.caller_id_number),
            )
            .field("Timeout", request.ring_timeout.as_millis().to_string())
            .field("Async", "true");
        lock(&self.inner.originated_channels).insert(channel_id.clone(), request.id.clone());
        let response = match self.inner.ami.send(action).await {
            Ok(response) if response.is_success() => response,
            Ok(response) => {
                lock(&self.inner.originated_channels).remove(&channel_id);
                return Err(SwitchError::Refused(format!(
                    "Originate: {}",
                    response.message().unwrap_or("no reason given")
                )));
            }
            Err(e) => {
                lock(&self.inner.originated_channels).remove(&channel_id);
                return Err(ami_error(e));
            }
        };
        debug!(action_id = response.action_id, %channel_id, "originate queued");
        Ok(())
    }

    async fn bridge(&self, a: &CallId, b: &CallId) -> Result<(), SwitchError> {
        // `a` runs the Bridge application from its own AGI session, which
        // pulls `b` out of its AGI into the bridge. `x`: when the bridge
        // ends, `b` is hung up instead of going back to where it came from
        // (AMI's Bridge action would send it back into its dialplan, and an
        // originated Local leg would ring its target all over again).
        let channel_b = self.channel_of(b)?;
        let commands = self.call_commands(a)?;
        if let Some(entry) = lock(&self.inner.calls).get_mut(b) {
            entry.bridged = true;
        }
        commands
            .send(CallCommand::Bridge(channel_b))
            .map_err(|_| SwitchError::HungUp)
    }

    async fn connect(&self, call: &CallId, target: &str) -> Result<(), SwitchError> {
        super::check_target(target)?;
        let context = self.dial_context(Some(call), target).await?;
        let dial = format!("Local/{target}@{context}/n");
        self.call_commands(call)?
            .send(CallCommand::Dial(dial))
            .map_err(|_| SwitchError::HungUp)
    }

    async fn hangup(&self, call: &CallId, cause: HangupCause) -> Result<(), SwitchError> {
        let channel = self.channel_of(call)?;
        self.action(
            AmiAction::new("Hangup")
                .field("Channel", channel)
                .field("Cause", cause.q850().to_string()),
        )
        .await
        .map(drop)
    }

    async fn send_text(&self, endpoint: &str, from: &str, body: &str) -> Result<(), SwitchError> {
        self.action(
            AmiAction::new("MessageSend")
                .field("To", format!("pjsip:{endpoint}"))
                .field(
                    "From",
                    format!(
                        "{} <sip:ivm@127.0.0.1>",
                        caller_id(from, "").trim_end_matches(" <>")
                    ),
                )
                .field("Body", body),
        )
        .await
        .map(drop)
    }

    async fn set_message_waiting(
        &self,
        mailbox: &str,
        new_messages: u32,
        old_messages: u32,
    ) -> Result<(), SwitchError> {
        let waiting = if new_messages > 0 { "yes" } else { "no" };
        self.action(
            AmiAction::new("PJSIPNotify")
                .field("Endpoint", mailbox)
                .field("Variable", "Event=message-summary")
                .field(
                    "Variable",
                    "Content-Type=application/simple-message-summary",
                )
                .field("Variable", format!("Content=Messages-Waiting: {waiting}"))
                .field(
                    "Variable",
                    format!("Content=Voice-Message: {new_messages}/{old_messages} (0/0)"),
                ),
        )
        .await
        .map(drop)
    }

    async fn device_state(&self, endpoint: &str) -> Result<DeviceState, SwitchError> {
        if endpoint.is_empty() || endpoint.contains(['(', ')', '\r', '\n']) {
            return Err(SwitchError::Refused(format!("bad endpoint {endpoint:?}")));
        }
        let device = if endpoint.contains('/') {
            endpoint.to_owned()
        } else {
            format!("PJSIP/{endpoint}")
        };
        let response = self
            .action(AmiAction::new("Getvar").field("Variable", format!("DEVICE_STATE({device})")))
            .await?;
        Ok(device_state(response.get("Value").unwrap_or_default()))
    }

    /// Asterisk writes recordings through a 32 KiB buffer, so the higher the
    /// rate the sooner audio reaches disk (48 kHz: every 340 ms). Measured
    /// with MixMonitor on Asterisk 22: sln44 and sln48 are written in real
    /// time, sln96 and sln192 only at about 140 KB/s, losing audio.
    fn capture_format(&self) -> (AudioFormat, &'static str) {
        (
            AudioFormat::Slin {
                sample_rate: 48_000,
            },
            "sln48",
        )
    }

    fn events(&self) -> mpsc::UnboundedReceiver<SwitchEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    fn media_server(&self) -> Option<MediaServer> {
        lock(&self.inner.media).clone()
    }

    async fn attach_media(&self, call: &CallId, uuid: Uuid) -> Result<(), SwitchError> {
        let Some(server) = self.media_server() else {
            return Err(SwitchError::Refused(
                "the live stream is not enabled".into(),
            ));
        };
        let arguments = format!("{uuid},{}", server.local_addr());
        self.call_commands(call)?
            .send(CallCommand::AudioSocket(arguments))
            .map_err(|_| SwitchError::HungUp)
    }
}

/// The oldest Asterisk whose AudioSocket ivm's live stream was measured on.
const AUDIOSOCKET_SINCE: (u32, u32) = (22, 10);

/// Whether this Asterisk can carry ivm's live stream: `Ok` with what was
/// found (version, module), or `Err` saying why not. Asks AMI
/// (`CoreSettings`, `ModuleCheck`).
pub async fn audiosocket_support(ami: &AmiClient) -> Result<String, String> {
    let settings = ami
        .send(AmiAction::new("CoreSettings"))
        .await
        .map_err(|e| format!("cannot ask asterisk its version: {e}"))?;
    let version = settings
        .response
        .get("AsteriskVersion")
        .unwrap_or("")
        .to_owned();
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) < AUDIOSOCKET_SINCE {
        return Err(format!(
            "asterisk {version:?} is older than {}.{} (AudioSocket measured from there)",
            AUDIOSOCKET_SINCE.0, AUDIOSOCKET_SINCE.1
        ));
    }
    // `ModuleCheck` (class system, which the snippet grants), not the CLI's
    // `module show` through `Command`: that needs class `command`, which
    // the snippet rightly withholds — with it, stream mode was never used.
    let module = ami
        .send(AmiAction::new("ModuleCheck").field("Module", "app_audiosocket"))
        .await
        .map_err(|e| format!("cannot ask asterisk for app_audiosocket: {e}"))?;
    if !module.is_success() {
        return Err(
            "app_audiosocket is not loaded: add `load = app_audiosocket.so` and `load = res_audiosocket.so` to modules.conf"
                .into(),
        );
    }
    Ok(format!("asterisk {version} with app_audiosocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pjsip_channel_names_an_endpoint() {
        assert_eq!(pjsip_endpoint("PJSIP/1001-0000000a"), Some("1001"));
        assert_eq!(
            pjsip_endpoint("PJSIP/alice-desk-0000001F"),
            Some("alice-desk")
        );
        for channel in [
            "Local/1001@ivm-00000001;2",
            "IAX2/1001-1234",
            "PJSIP/-0000000a",
            "PJSIP/1001",
            "PJSIP/1001-000a",
            "PJSIP/1001-0000000g",
            "SIP/1001-0000000a",
        ] {
            assert_eq!(pjsip_endpoint(channel), None, "{channel}");
        }
    }

    #[test]
    fn caller_id_cannot_be_broken_by_a_name() {
        assert_eq!(caller_id("IVM Alice", "1001"), "\"IVM Alice\" <1001>");
        assert_eq!(caller_id("Eve\" <666>\r\n", "1001"), "\"Eve 666\" <1001>");
    }

    #[test]
    fn device_names_and_states() {
        assert_eq!(endpoint_of_device("PJSIP/1002"), "1002");
        assert_eq!(device_state("NOT_INUSE"), DeviceState::Idle);
        assert_eq!(device_state("RINGINUSE"), DeviceState::Ringing);
        assert_eq!(device_state("weird"), DeviceState::Unknown);
        assert_eq!(device_state("INVALID"), DeviceState::Unknown);
        assert_eq!(device_state("UNAVAILABLE"), DeviceState::Unavailable);
    }

    #[test]
    fn originate_reasons() {
        assert_eq!(originate_failure_cause(5), HangupCause::Busy);
        assert_eq!(originate_failure_cause(3), HangupCause::NoAnswer);
        assert_eq!(originate_failure_cause(0), HangupCause::Unreachable);
    }
}
