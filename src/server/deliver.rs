//! One instant message's I/O: its store rows and files, the media pump
//! from the switch's recording to the stored message and the listen stream,
//! and the notifications when it was not heard. The decisions are
//! `engine::Delivery`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::MediaMode;
use crate::domain::{DeliveryState, Extension, Media, MessageId, MessageState};
use crate::engine::{Action, Delivery, Input, SessionConfig};
use crate::store::{NewMessage, StoreError};
use crate::switch::asterisk::audiosocket::{
    MediaCommand, MediaEnd, MediaEvent, MediaHandle, MediaServer, SAMPLE_RATE, SharedLog,
};
use crate::switch::{CallId, OriginateId};

use super::drive::{FlowMedia, drive};
use super::pump::{self, Pump};
use super::router::Caller;
use super::{CAPTURE_SETTLE, Ctx, MENU_TIMEOUT, ServerError, notifications, reserve};

/// One message from `caller` to `target`: its store rows and files, its
/// media pump, and its delivery flow.
pub(super) async fn deliver(
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
    // `[delivery] media = "stream"` where the switch has the live path.
    let media_server = match ctx.config.delivery.media {
        MediaMode::Stream => ctx.switch.media_server(),
        MediaMode::Files => None,
    };
    let stem = format!("{}-{}", crate::store::now_ms(), origin.0);
    let capture = ctx.messages_dir.join(format!("{stem}.{capture_extension}"));
    let message_path = ctx.messages_dir.join(format!("{stem}.sln"));
    let listen_path = ctx.messages_dir.join(format!("{stem}.listen.sln"));
    let relative = format!("messages/{stem}.sln");
    // Room to say `failed` later, should this message fill the disk: the
    // reserve a previous failure used is made again first, if it fits.
    let dir = ctx.data_dir.clone();
    let _ = tokio::task::spawn_blocking(move || reserve::ensure(&dir)).await;
    let message_id = match create_message(ctx, sender.as_str(), target.as_str(), &relative).await {
        Ok(id) => id,
        Err(e) => return cannot_start(ctx, &caller.call, e, &mut inputs).await,
    };
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
        stream: media_server.is_some(),
        // The adapter's own test of "outside the PBX".
        external: crate::switch::peer::DialPolicy::from_numbering(&ctx.config.numbering)
            .is_external(target.as_str()),
    };
    let (pump, live) = match media_server {
        Some(server) => (
            None,
            Some(Live::new(server, caller.call.clone(), &message_path, ctx)),
        ),
        None => match Pump::new(
            &capture,
            capture_format,
            &message_path,
            &listen_path,
            ctx.config.delivery.catch_up_speed as f32,
        ) {
            Ok(pump) => (Some(pump), None),
            Err(e) => {
                // Nothing was recorded: the row goes, as if never begun.
                let data_dir = ctx.data_dir.clone();
                let _ = ctx
                    .store
                    .call(move |s| {
                        s.set_message_state(message_id, MessageState::Failed, Some(0))?;
                        s.delete_message(message_id, &data_dir)
                    })
                    .await;
                return cannot_start(ctx, &caller.call, e, &mut inputs).await;
            }
        },
    };
    let flow = Delivery::start(config, Instant::now().into_std());
    let mut media = DeliveryMedia {
        message_id,
        sender,
        sender_name,
        target,
        caller: caller.call.clone(),
        capture: capture.clone(),
        pump,
        live,
        capture_stopping: None,
        capture_seen: (0, Instant::now()),
        last_capture_len: 0,
        recording_done: false,
        wav_written: false,
        listener: None,
        last_listen: 0,
        store_failed: None,
        store_trouble: None,
        unwritten_delivery: None,
        listen_path: listen_path.clone(),
        message_path: message_path.clone(),
    };
    let driven = drive(ctx, flow, &mut inputs, &mut media).await;
    if media.store_failed.is_some() {
        // The capture and the listen stream only served the call: their
        // room goes back to the disk, the message (what was written) stays.
        let _ = std::fs::remove_file(&capture);
        let _ = std::fs::remove_file(&listen_path);
        // A delivery state the full disk refused after `failed` was
        // written: tried again in the room just given back.
        if let Some((state, position)) = media.unwritten_delivery.take() {
            let target = media.target.clone();
            let written = ctx
                .store
                .call(move |s| {
                    s.set_delivery_progress(message_id, target.as_str(), state, position)
                })
                .await;
            if !matches!(written, Ok(Ok(()))) {
                warn!(%message_id, "the delivery's last state could not be stored");
            }
        }
        // That room makes the reserve again at once: the next message on
        // this disk may fail as soon as it starts.
        let dir = ctx.data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || reserve::ensure(&dir)).await;
    }
    driven?;
    if media.recording_done && !media.wav_written {
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
    /// Files mode: the switch's recording into the message and listen stream.
    pump: Option<Pump>,
    /// Stream mode: the legs on ivm's media server.
    live: Option<Live>,
    /// Since when the recording has been stopping (caller gone or stopped).
    capture_stopping: Option<Instant>,
    /// Files mode: bytes of the switch's recording read, and since when.
    capture_seen: (u64, Instant),
    last_capture_len: u64,
    recording_done: bool,
    /// The message's WAV is written (stream mode: at the recording's end).
    wav_written: bool,
    /// The listener's position and when its current play started.
    listener: Option<(u64, Option<Instant>)>,
    last_listen: u64,
    /// The message could not be written (disk full, a write error): the
    /// samples of it that are kept.
    store_failed: Option<u64>,
    /// A state could not be written: the message fails at the next tick.
    store_trouble: Option<String>,
    /// The delivery state the store refused last, written with `failed`.
    unwritten_delivery: Option<(DeliveryState, u64)>,
    listen_path: PathBuf,
    /// The stored 8 kHz message.
    message_path: PathBuf,
}

impl FlowMedia for DeliveryMedia {
    async fn perform(&mut self, ctx: &Ctx, action: &Action) -> Result<bool, ServerError> {
        let message_id = self.message_id;
        if let Some(live) = &mut self.live
            && live.perform(ctx, action).await
        {
            return Ok(true);
        }
        match action {
            Action::StopRecording(_) if self.live.is_none() => {
                self.capture_stopping.get_or_insert_with(Instant::now);
                return Ok(false);
            }
            Action::ListenerAt { position, since } => {
                self.listener = Some((*position, since.map(Instant::from_std)));
            }
            Action::MessageState(state) => {
                let state = *state;
                let duration =
                    (state != MessageState::Recording).then(|| (self.message_samples() / 8) as i64);
                // A delivery state the full disk refused goes with `failed`,
                // in the room the reserve gave back.
                let (target, unwritten) = (self.target.clone(), self.unwritten_delivery.take());
                let write = move |s: &mut crate::store::Store| {
                    s.set_message_state(message_id, state, duration)?;
                    if let Some((delivery, position)) = unwritten {
                        s.set_delivery_progress(message_id, target.as_str(), delivery, position)?;
                    }
                    Ok(())
                };
                self.write_state(ctx, "the message's state", write).await?;
            }
            Action::DeliveryState { state, position } => {
                // Stored in samples of the message, not of the listen stream.
                let position = match &self.pump {
                    Some(pump) => pump.recording_position_at(*position),
                    None => *position,
                };
                let (state, target) = (*state, self.target.clone());
                let write = move |s: &mut crate::store::Store| {
                    s.set_delivery_progress(message_id, target.as_str(), state, position)
                };
                if !self.write_state(ctx, "the delivery's state", write).await? {
                    self.unwritten_delivery = Some((state, position));
                }
            }
            Action::NotHeard { state, quiet } => self.not_heard(ctx, *state, *quiet).await,
            Action::TellSenderRejected => self.rejected(ctx).await,
            _ => return Ok(false),
        }
        Ok(true)
    }

    async fn tick(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError> {
        if let Some(error) = self.store_trouble.take()
            && self.store_failed.is_none()
        {
            return Ok(self.store_failed(ctx, error, Vec::new()).await);
        }
        if let Some(live) = &mut self.live {
            let (mut inputs, fragments) = live.poll()?;
            if let Some(stored) = live.store_failed
                && self.store_failed.is_none()
            {
                self.store_failed = Some(stored);
                reserve::release(&ctx.data_dir);
            }
            if let Err(e) = index(ctx, self.message_id, fragments.clone()).await {
                // The store itself is out of room: the same failure.
                let message_id = self.message_id;
                warn!(%message_id, "cannot index the message ({e}): it ends failed");
                reserve::release(&ctx.data_dir);
                if self.store_failed.is_none() {
                    self.store_failed = Some(live.durable.load(Ordering::Acquire));
                    live.store_failed = self.store_failed;
                    inputs.push(Input::RecordingFailed {
                        samples: live.log.with(|l| l.len()),
                    });
                }
                if let Err(e) = index(ctx, message_id, fragments).await {
                    warn!(%message_id, "cannot index what was stored: {e}");
                }
            }
            if inputs
                .iter()
                .any(|i| matches!(i, Input::RecordingDone { .. } | Input::RecordingCut { .. }))
            {
                self.recording_done = true;
                // The message is whole now, whatever the calls still do:
                // its WAV is there before its state says complete.
                finish_message(ctx, self.message_id, &live.message_path, &self.capture).await;
                self.wav_written = true;
            }
            return Ok(inputs);
        }
        let Some(pump) = &mut self.pump else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        let mut inputs = Vec::new();
        if let Some((position, since)) = self.listener {
            let played = since.map_or(0, |s| (now.duration_since(s).as_millis() as u64) * 8);
            pump.set_listener_played((position + played).min(pump.listen_samples()));
        }
        let fragments = match pump.poll() {
            Ok(fragments) => fragments,
            Err(e) => return Ok(self.store_failed(ctx, e, Vec::new()).await),
        };
        // The switch's recording may be what hit the full disk first: it
        // then stops growing and ivm has nothing to write that could fail.
        if pump.capture_read() != self.capture_seen.0 {
            self.capture_seen = (pump.capture_read(), now);
        } else if self.capture_stopping.is_none()
            && now.duration_since(self.capture_seen.1) >= CAPTURE_STALL
            && reserve::available(&ctx.messages_dir).is_some_and(|free| free < DISK_FULL_BELOW)
        {
            let why = "the disk is full: the switch's recording stopped growing";
            return Ok(self.store_failed(ctx, why, Vec::new()).await);
        }
        if let Err(e) = index(ctx, self.message_id, fragments.clone()).await {
            return Ok(self.store_failed(ctx, e, fragments).await);
        }
        let listen = pump.listen_samples();
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
                let fragments = match pump.finish() {
                    Ok(fragments) => fragments,
                    Err(e) => return Ok(self.store_failed(ctx, e, Vec::new()).await),
                };
                if let Err(e) = index(ctx, self.message_id, fragments.clone()).await {
                    return Ok(self.store_failed(ctx, e, fragments).await);
                }
                self.recording_done = true;
                // The message is whole now: its WAV is there before its
                // state says complete (as in stream mode).
                finish_message(ctx, self.message_id, &self.message_path, &self.capture).await;
                self.wav_written = true;
                inputs.push(Input::RecordingDone {
                    samples: pump.listen_samples(),
                });
            }
        }
        Ok(inputs)
    }

    fn wants_ticks(&self) -> bool {
        match &self.live {
            Some(live) => !self.recording_done || live.listener.is_some(),
            None => !self.recording_done,
        }
    }

    fn observe(&mut self, input: &Input) {
        if let Input::HungUp { call, .. } = input
            && let Some(live) = &mut self.live
        {
            live.hung_up(call);
        }
        if let Input::HungUp { call, .. } = input
            && *call == self.caller
        {
            match &mut self.live {
                Some(live) => live.caller_gone(),
                None => self.caller_gone(),
            }
        }
    }
}

impl DeliveryMedia {
    /// Files mode: the message or its listen stream could not be written.
    /// What is on disk is synced and indexed, the reserve released so the
    /// store has room to say `failed`; the flow decides the rest.
    /// `unindexed`: fragments on disk whose indexing failed.
    async fn store_failed(
        &mut self,
        ctx: &Ctx,
        error: impl std::fmt::Display,
        unindexed: Vec<pump::Fragment>,
    ) -> Vec<Input> {
        let message_id = self.message_id;
        warn!(%message_id, "cannot store the message ({error}): it ends failed");
        reserve::release(&ctx.data_dir);
        if let Some(live) = &mut self.live {
            // Stream mode: the talker's writer has what is durable; the
            // stream goes on until the flow stops it.
            self.store_failed = Some(live.durable.load(Ordering::Acquire));
            live.store_failed = self.store_failed;
            return vec![Input::RecordingFailed {
                samples: live.log.with(|l| l.len()),
            }];
        }
        self.recording_done = true;
        let Some(pump) = &mut self.pump else {
            return Vec::new();
        };
        let (stored, fragments) = pump.salvage();
        self.store_failed = Some(stored);
        // The switch's capture (up to 6 times the message) is of no more
        // use: its room comes back once the switch closes it (the flow
        // stops the recording next), and the reserve is made again then —
        // not when this flow ends, which a target still ringing delays.
        let _ = std::fs::remove_file(&self.capture);
        let dir = ctx.data_dir.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CAPTURE_SETTLE * 2).await;
            let _ = tokio::task::spawn_blocking(move || reserve::ensure(&dir)).await;
        });
        let fragments = unindexed.into_iter().chain(fragments).collect();
        if let Err(e) = index(ctx, message_id, fragments).await {
            warn!(%message_id, "cannot index what was stored: {e}");
        }
        let on_disk = std::fs::metadata(&self.listen_path).map_or(0, |m| m.len() / 2);
        vec![Input::RecordingFailed {
            samples: pump.listen_samples().min(on_disk),
        }]
    }

    /// Write a state of the message or its delivery; false if the store
    /// refused it. A store out of room does not end the flow — the caller
    /// would be left in silence: the message fails at the next tick (the
    /// flow tells the caller), and the space reserve is kept for that
    /// `failed`. Only a store that is gone ends the flow.
    async fn write_state<F>(&mut self, ctx: &Ctx, what: &str, write: F) -> Result<bool, ServerError>
    where
        F: FnOnce(&mut crate::store::Store) -> Result<(), StoreError> + Send + 'static,
    {
        let Err(e) = ctx.store.call(write).await? else {
            return Ok(true);
        };
        let message_id = self.message_id;
        warn!(%message_id, "cannot store {what}: {e}");
        if self.store_failed.is_none() && !self.recording_done {
            self.store_trouble = Some(e.to_string());
        }
        Ok(false)
    }

    fn message_samples(&self) -> u64 {
        if let Some(stored) = self.store_failed {
            return stored;
        }
        match (&self.pump, &self.live) {
            (Some(pump), _) => pump.message_samples(),
            (None, Some(live)) => live.log.with(|l| l.len()),
            (None, None) => 0,
        }
    }

    /// The caller is gone: the recording is stopping.
    fn caller_gone(&mut self) {
        self.capture_stopping.get_or_insert_with(Instant::now);
    }

    async fn not_heard(&self, ctx: &Ctx, state: DeliveryState, quiet: bool) {
        let message_id = self.message_id;
        info!(
            %message_id,
            %state,
            quiet,
            "message not heard live: stored for the target"
        );
        let not_heard = notifications::NotHeard {
            message_id,
            target: self.target.as_str(),
            sender: self.sender.as_str(),
            sender_name: &self.sender_name,
            duration_seconds: (self.message_samples() / 8000) as u32,
            quiet,
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

    async fn rejected(&self, ctx: &Ctx) {
        let message_id = self.message_id;
        info!(%message_id, state = %DeliveryState::Rejected, "message not heard live: stored for the target");
        if let Err(e) = notifications::sender_status(
            &ctx.store,
            &ctx.outbox,
            &ctx.config.notify,
            crate::notify::SenderStatus::Rejected,
            message_id,
            self.sender.as_str(),
            self.target.as_str(),
        )
        .await
        {
            warn!(%message_id, "cannot write the status to the sender: {e}");
        }
    }
}

/// Stream mode: the caller's leg (talker) and the listener's leg on ivm's
/// media server. The talker's connection writes the stored message itself
/// (synced every 250 ms); fragments are indexed here once a sync covered
/// them.
struct Live {
    server: MediaServer,
    log: SharedLog,
    message_path: PathBuf,
    sounds_dir: PathBuf,
    /// Samples of the message file an `fdatasync` has covered.
    durable: Arc<AtomicU64>,
    fragments_done: u32,
    talker: Option<MediaHandle>,
    talker_connected: bool,
    /// The talker was asked to finish: the caller's later prompts go
    /// through the switch again.
    talker_finishing: bool,
    listener: Option<ListenerLeg>,
    last_len: u64,
    caller: CallId,
    /// When the caller hung up.
    caller_left: Option<Instant>,
    /// The message file could not be written: the samples it keeps.
    store_failed: Option<u64>,
}

/// The listener's leg on the media server.
struct ListenerLeg {
    call: CallId,
    handle: MediaHandle,
    from: u64,
    connected: bool,
    /// When the listener hung up.
    left: Option<Instant>,
}

/// Files mode: how long the switch's recording may not grow (it reaches
/// disk every 340 ms at worst) before a full disk is suspected.
const CAPTURE_STALL: Duration = Duration::from_secs(1);
/// Less room than this left for the switch's recording: the disk is full.
const DISK_FULL_BELOW: u64 = 8 * 1024;

/// How long a caller gone before its stream connected is waited for.
const UNCONNECTED_GRACE: Duration = Duration::from_secs(3);

impl Live {
    fn new(server: MediaServer, caller: CallId, message_path: &Path, ctx: &Ctx) -> Self {
        Live {
            server,
            log: SharedLog::new(SAMPLE_RATE),
            message_path: message_path.to_owned(),
            sounds_dir: ctx.config.sounds_dir(),
            durable: Arc::default(),
            fragments_done: 0,
            talker: None,
            talker_connected: false,
            talker_finishing: false,
            listener: None,
            last_len: 0,
            caller,
            caller_left: None,
            store_failed: None,
        }
    }

    /// Carry out a stream action; false if it is not one for the stream.
    async fn perform(&mut self, ctx: &Ctx, action: &Action) -> bool {
        match action {
            Action::StreamCaller(call) => {
                let handle = self.server.expect_talker_durable(
                    self.log.clone(),
                    self.message_path.clone(),
                    self.durable.clone(),
                );
                if let Err(e) = ctx.switch.attach_media(call, handle.uuid).await {
                    // The caller is gone already; its HungUp follows.
                    debug!("cannot stream the caller: {e}");
                    self.server.forget(handle.uuid);
                }
                self.talker = Some(handle);
            }
            Action::StopRecording(_) => {
                if let Some(talker) = &self.talker {
                    let _ = talker.commands.send(MediaCommand::Finish);
                }
                self.talker_finishing = true;
            }
            Action::Play { call, request } if self.is_talking(call) => {
                // The caller's leg is in the stream: the prompt goes there,
                // seamless; prompts end no wait of the flow's.
                if let Media::Sound(name) = &request.media
                    && let Some(samples) = self.sound(name)
                    && let Some(talker) = &self.talker
                {
                    let _ = talker.commands.send(MediaCommand::Play(samples));
                }
            }
            Action::StreamListener { call, from } => {
                let handle = self.server.expect_listener_from(self.log.clone(), *from);
                if let Err(e) = ctx.switch.attach_media(call, handle.uuid).await {
                    debug!("cannot stream to the listener: {e}");
                    self.server.forget(handle.uuid);
                    let _ = handle.commands.send(MediaCommand::Finish);
                }
                let leg = ListenerLeg {
                    call: call.clone(),
                    handle,
                    from: *from,
                    connected: false,
                    left: None,
                };
                if let Some(old) = self.listener.replace(leg) {
                    self.server.forget(old.handle.uuid);
                    let _ = old.handle.commands.send(MediaCommand::Finish);
                }
            }
            Action::StopStream(call) => {
                if let Some(leg) = &self.listener
                    && leg.call == *call
                {
                    let _ = leg.handle.commands.send(MediaCommand::Finish);
                }
            }
            _ => return false,
        }
        true
    }

    fn is_talking(&self, call: &CallId) -> bool {
        self.talker.is_some() && !self.talker_finishing && *call == self.caller
    }

    /// A prompt's 8 kHz samples (`sounds/NAME.sln`).
    fn sound(&self, name: &str) -> Option<Vec<i16>> {
        let bytes = std::fs::read(self.sounds_dir.join(format!("{name}.sln")))
            .map_err(|e| warn!("cannot read the sound {name}: {e}"))
            .ok()?;
        Some(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )
    }

    /// A call hung up: the listener's leg, if it is that call.
    fn hung_up(&mut self, call: &CallId) {
        if let Some(leg) = &mut self.listener
            && leg.call == *call
        {
            leg.left.get_or_insert_with(Instant::now);
        }
    }

    /// The caller hung up: if its stream never connected, nothing will.
    fn caller_gone(&mut self) {
        self.caller_left.get_or_insert_with(Instant::now);
    }

    /// The caller left and its stream has still not connected after the
    /// handshake's time: it never will.
    fn caller_left_unconnected(&self) -> bool {
        self.caller_left
            .is_some_and(|at| at.elapsed() >= UNCONNECTED_GRACE)
    }

    /// The legs' news as inputs, and the fragments that became durable.
    fn poll(&mut self) -> Result<(Vec<Input>, Vec<pump::Fragment>), ServerError> {
        let caller = &self.caller.clone();
        let mut inputs = Vec::new();
        let mut fragments = self.durable_fragments(false);
        let len = self.log.with(|l| l.len());
        if len > self.last_len {
            self.last_len = len;
            inputs.push(Input::ListenGrew { samples: len });
        }
        let mut talker_end = None;
        if let Some(talker) = &mut self.talker {
            while let Ok(event) = talker.events.try_recv() {
                match event {
                    MediaEvent::Connected => self.talker_connected = true,
                    MediaEvent::Dtmf(digit) => inputs.push(Input::Dtmf {
                        call: caller.clone(),
                        digit,
                    }),
                    MediaEvent::NeverConnected => talker_end = Some((MediaEnd::PeerClosed, 0)),
                    MediaEvent::StoreFailed {
                        stored_samples,
                        error,
                    } => {
                        warn!("cannot store the message ({error}): it ends failed");
                        self.store_failed = Some(stored_samples);
                        inputs.push(Input::RecordingFailed {
                            samples: self.log.with(|l| l.len()),
                        });
                    }
                    MediaEvent::TalkerEnded {
                        end,
                        stored_samples,
                    } => talker_end = Some((end, stored_samples)),
                    MediaEvent::ListenerEnded { .. } => {}
                }
            }
        }
        if let Some(talker) = &self.talker
            && !self.talker_connected
            && talker_end.is_none()
            && self.caller_left_unconnected()
        {
            self.server.forget(talker.uuid);
            talker_end = Some((MediaEnd::PeerClosed, 0));
        }
        if let Some((end, stored)) = talker_end {
            self.talker = None;
            self.log.with(|l| l.close());
            fragments.extend(self.durable_fragments(true));
            let samples = stored.max(self.log.with(|l| l.len()));
            inputs.push(match end {
                // The writer's failure was told already (`RecordingFailed`).
                _ if self.store_failed.is_some() => Input::RecordingDone { samples },
                MediaEnd::Finished | MediaEnd::PeerClosed => Input::RecordingDone { samples },
                MediaEnd::Protocol(why) | MediaEnd::Io(why) => {
                    warn!("the caller's stream broke off ({why}): the message is partial");
                    Input::RecordingCut { samples }
                }
            });
        }
        if let Some(leg) = &mut self.listener {
            let mut ended = None;
            while let Ok(event) = leg.handle.events.try_recv() {
                match event {
                    MediaEvent::Dtmf(digit) => inputs.push(Input::Dtmf {
                        call: leg.call.clone(),
                        digit,
                    }),
                    MediaEvent::ListenerEnded {
                        end,
                        heard_position,
                        stats,
                    } => {
                        debug!(
                            ?end,
                            heard_position,
                            frames = stats.frames_sent,
                            "listener stream ended"
                        );
                        ended = Some(heard_position);
                    }
                    MediaEvent::NeverConnected => ended = Some(leg.from),
                    MediaEvent::Connected => leg.connected = true,
                    MediaEvent::TalkerEnded { .. } | MediaEvent::StoreFailed { .. } => {}
                }
            }
            // Gone before its stream connected: it never will.
            if ended.is_none()
                && !leg.connected
                && leg.left.is_some_and(|at| at.elapsed() >= UNCONNECTED_GRACE)
            {
                self.server.forget(leg.handle.uuid);
                ended = Some(leg.from);
            }
            if let Some(position) = ended {
                inputs.push(Input::StreamEnded {
                    call: leg.call.clone(),
                    position,
                });
                self.listener = None;
            }
        }
        Ok((inputs, fragments))
    }

    /// Whole seconds a sync covered (and, at the end, the synced tail).
    fn durable_fragments(&mut self, end: bool) -> Vec<pump::Fragment> {
        let durable = self.durable.load(Ordering::Acquire);
        let mut fragments = Vec::new();
        let complete = (durable / pump::FRAGMENT_SAMPLES) as u32;
        for index in self.fragments_done..complete {
            fragments.push(pump::Fragment {
                index,
                byte_offset: u64::from(index) * pump::FRAGMENT_SAMPLES * 2,
                length: pump::FRAGMENT_SAMPLES * 2,
            });
        }
        self.fragments_done = self.fragments_done.max(complete);
        let tail = durable.saturating_sub(u64::from(self.fragments_done) * pump::FRAGMENT_SAMPLES);
        if end && tail > 0 {
            fragments.push(pump::Fragment {
                index: self.fragments_done,
                byte_offset: u64::from(self.fragments_done) * pump::FRAGMENT_SAMPLES * 2,
                length: tail * 2,
            });
            self.fragments_done += 1;
        }
        fragments
    }
}

/// The message cannot even begin (no room for its row or its files): the
/// caller hears why, the same prompt as a message that fails later.
async fn cannot_start(
    ctx: &Ctx,
    call: &CallId,
    error: impl std::fmt::Display,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    warn!("cannot store a new message ({error}): the caller is told");
    reserve::release(&ctx.data_dir);
    super::router::announce(ctx, call, crate::engine::sounds::NOT_RECORDED, inputs).await
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
pub(super) fn write_wav_of(message: &Path) -> std::io::Result<String> {
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
