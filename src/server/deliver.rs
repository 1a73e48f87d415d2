//! One instant message's I/O: its store rows and files, the media pump
//! from the switch's recording to the stored message and the listen stream,
//! and the notifications when it was not heard. The decisions are
//! `engine::Delivery`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::domain::{DeliveryState, Extension, MessageId, MessageState};
use crate::engine::{Action, Delivery, Input, SessionConfig};
use crate::store::{NewMessage, StoreError};
use crate::switch::{CallId, OriginateId};

use super::drive::{FlowMedia, drive};
use super::pump::{self, Pump};
use super::router::Caller;
use super::{CAPTURE_SETTLE, Ctx, MENU_TIMEOUT, ServerError, notifications};

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
            Action::NotHeard { state, quiet } => self.not_heard(ctx, *state, *quiet).await,
            Action::TellSenderRejected => self.rejected(ctx).await,
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
            duration_seconds: (self.pump.message_samples() / 8000) as u32,
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
