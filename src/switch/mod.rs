//! The `Switch` trait: what the session engine asks of a PBX, in the engine's
//! words, and what it hears back as events.
//!
//! Owns: the trait, device states and the events of a switch; the call
//! vocabulary (call ids, media, hang-up causes) is `crate::domain`'s,
//! re-exported here. Must not know: any PBX's
//! syntax — AGI/AMI live in `asterisk`, the Event Socket in `freeswitch`.
//!
//! Commands return as soon as the switch has accepted them; what happens
//! later (a playback that ends, a call that is answered) arrives as a
//! [`SwitchEvent`]. That is what a sans-IO engine needs: one command out,
//! events in, no waiting inside the engine.

pub mod asterisk;
pub mod freeswitch;
pub mod peer;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::media::AudioFormat;
use crate::proto::audiosocket::Uuid;
use crate::switch::asterisk::audiosocket::MediaServer;

pub use crate::domain::{
    CallId, HangupCause, Media, OriginateId, OriginateRequest, PlayRequest, RecordRequest,
};

/// Registration and call state of an endpoint (a phone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Unknown,
    Idle,
    InUse,
    Busy,
    Ringing,
    OnHold,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchEvent {
    /// A call reached `ivm`: a dialed code, or an originated leg coming back
    /// (then `origin` says which originate rang it).
    IncomingCall {
        call: CallId,
        caller_number: String,
        caller_name: String,
        dialed: String,
        origin: Option<OriginateId>,
        /// Who the switch authenticated the caller as, when it can vouch
        /// (Asterisk: the PJSIP endpoint of the channel); `None` when it
        /// cannot (the caller-ID number is whatever the caller sent).
        /// Retrieval trusts only this; without it a PIN is asked.
        endpoint: Option<String>,
    },
    /// An originated call was answered.
    Answered {
        origin: OriginateId,
        call: CallId,
    },
    /// An originate failed before answer.
    OriginateFailed {
        origin: OriginateId,
        cause: HangupCause,
    },
    HungUp {
        call: CallId,
        cause: HangupCause,
    },
    Dtmf {
        call: CallId,
        digit: char,
    },
    /// Playback ended; `stopped_at_sample` is the true position reached.
    PlaybackFinished {
        call: CallId,
        stopped_at_sample: u64,
        interrupted_by: Option<char>,
    },
    RecordingFinished {
        call: CallId,
        path: PathBuf,
    },
    DeviceStateChanged {
        endpoint: String,
        state: DeviceState,
    },
    /// How many registered contacts an endpoint has now.
    ContactsChanged {
        endpoint: String,
        contacts: u32,
    },
    /// The control connection to the switch went away / came back.
    Disconnected,
    Reconnected,
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("no such call {0}")]
    NoSuchCall(CallId),
    #[error("the call has hung up")]
    HungUp,
    #[error("the switch refused: {0}")]
    Refused(String),
    #[error("not connected to the switch at {0}: {1}")]
    NotConnected(String, String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the switch")]
    Timeout,
}

/// Refuse a dial target that is not digits, letters or `* # + .`: both
/// adapters put it inside a dial string, where anything else could inject.
pub fn check_target(target: &str) -> Result<(), SwitchError> {
    let ok = !target.is_empty()
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '#' | '+' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SwitchError::Refused(format!(
            "cannot dial target {target:?}"
        )))
    }
}

/// What the engine asks of a PBX. Implemented once per switch.
#[async_trait]
pub trait Switch: Send + Sync {
    async fn answer(&self, call: &CallId) -> Result<(), SwitchError>;
    /// Start playback; [`SwitchEvent::PlaybackFinished`] reports the end.
    async fn play(&self, call: &CallId, request: PlayRequest) -> Result<(), SwitchError>;
    /// Start recording the caller; runs until stopped, the limit, or hang-up.
    async fn start_recording(
        &self,
        call: &CallId,
        request: RecordRequest,
    ) -> Result<(), SwitchError>;
    async fn stop_recording(&self, call: &CallId) -> Result<(), SwitchError>;
    /// Ring a target; [`SwitchEvent::Answered`] or `OriginateFailed` follows.
    async fn originate(&self, request: OriginateRequest) -> Result<(), SwitchError>;
    async fn bridge(&self, a: &CallId, b: &CallId) -> Result<(), SwitchError>;
    /// Connect `call` to `target` as a plain call through the switch's own
    /// routing (the listener's "call back"); the call ends when that does.
    async fn connect(&self, call: &CallId, target: &str) -> Result<(), SwitchError>;
    async fn hangup(&self, call: &CallId, cause: HangupCause) -> Result<(), SwitchError>;
    /// A text message to a phone (SIP MESSAGE).
    async fn send_text(&self, endpoint: &str, from: &str, body: &str) -> Result<(), SwitchError>;
    /// The message-waiting lamp of a mailbox.
    async fn set_message_waiting(
        &self,
        mailbox: &str,
        new_messages: u32,
        old_messages: u32,
    ) -> Result<(), SwitchError>;
    async fn device_state(&self, endpoint: &str) -> Result<DeviceState, SwitchError>;
    /// The event stream; each call hands out a new subscription.
    fn events(&self) -> mpsc::UnboundedReceiver<SwitchEvent>;
    /// The recording format this switch writes with the least delay to
    /// disk, and the file extension that selects it.
    fn capture_format(&self) -> (AudioFormat, &'static str);
    /// ivm's own media path to this switch (`[delivery] media = "stream"`),
    /// when it is enabled; `None`: the switch records and plays files.
    fn media_server(&self) -> Option<MediaServer> {
        None
    }
    /// Put the call's audio on the media server under `uuid` (registered
    /// there first). Returns once queued; the call's later commands run
    /// after the stream ends (ivm finishes it, or the call hangs up).
    async fn attach_media(&self, call: &CallId, uuid: Uuid) -> Result<(), SwitchError> {
        let _ = (call, uuid);
        Err(SwitchError::Refused("no live stream on this switch".into()))
    }
}
