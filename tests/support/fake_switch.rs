//! A switch in memory, driven by a test's script: the test makes calls come
//! in, answers or fails originates, presses keys and hangs up; the fake
//! reports every command `ivm` gives it, in order, and behaves like a PBX
//! where the server can see it:
//!
//! * `start_recording` creates the file the server named and `say` appends
//!   the caller's voice to it (raw signed linear at the capture rate), as the
//!   PBX's recorder does; `stop_recording` and hang-ups close it;
//! * a play ends at once, as if played faster than real time: a file plays
//!   from `from_sample` to its end as it is on disk at that moment, and
//!   `PlaybackFinished` says where it truly stopped;
//! * a hang-up, by either side, is reported once as `HungUp`.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use ivm::media::AudioFormat;
use ivm::switch::{
    CallId, DeviceState, HangupCause, Media, OriginateId, OriginateRequest, PlayRequest,
    RecordRequest, Switch, SwitchError, SwitchEvent,
};

/// The rate the fake records at: that of Asterisk's `sln48`.
pub const CAPTURE_RATE: u32 = 48_000;

/// What the server asked of the switch.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Answer(CallId),
    Play {
        call: CallId,
        request: PlayRequest,
        /// Where the play ended (what `PlaybackFinished` reported).
        stopped_at: u64,
    },
    StartRecording {
        call: CallId,
        request: RecordRequest,
    },
    StopRecording(CallId),
    Originate(OriginateRequest),
    Bridge(CallId, CallId),
    Connect {
        call: CallId,
        target: String,
    },
    Hangup(CallId, HangupCause),
    Text {
        endpoint: String,
        from: String,
        body: String,
    },
    Lamp {
        mailbox: String,
        new_messages: u32,
        old_messages: u32,
    },
}

impl Command {
    pub fn call(&self) -> Option<&CallId> {
        match self {
            Command::Answer(call)
            | Command::Play { call, .. }
            | Command::StartRecording { call, .. }
            | Command::StopRecording(call)
            | Command::Connect { call, .. }
            | Command::Hangup(call, _) => Some(call),
            _ => None,
        }
    }

    /// The name of the sound played, if this is a sound's play.
    pub fn sound(&self) -> Option<&str> {
        match self {
            Command::Play {
                request:
                    PlayRequest {
                        media: Media::Sound(name),
                        ..
                    },
                ..
            } => Some(name),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    subscribers: Vec<mpsc::UnboundedSender<SwitchEvent>>,
    /// What `device_state` answers per endpoint (else idle).
    devices: HashMap<String, DeviceState>,
    recordings: HashMap<CallId, std::fs::File>,
    hung_up: HashSet<CallId>,
}

pub struct FakeSwitch {
    state: Mutex<State>,
    commands: mpsc::UnboundedSender<Command>,
    next_call: AtomicU64,
}

/// The test's side: the script.
pub struct Script {
    pub switch: Arc<FakeSwitch>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Every command seen so far, in order.
    pub transcript: Vec<Command>,
}

pub fn fake_switch() -> Script {
    let (commands, rx) = mpsc::unbounded_channel();
    let switch = Arc::new(FakeSwitch {
        state: Mutex::new(State::default()),
        commands,
        next_call: AtomicU64::new(1),
    });
    Script {
        switch,
        commands: rx,
        transcript: Vec::new(),
    }
}

impl FakeSwitch {
    fn emit(&self, event: SwitchEvent) {
        let mut state = self.state.lock().unwrap();
        state.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    fn log(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    fn new_call(&self, prefix: &str) -> CallId {
        CallId(format!(
            "{prefix}-{}",
            self.next_call.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn check_up(&self, call: &CallId) -> Result<(), SwitchError> {
        if self.state.lock().unwrap().hung_up.contains(call) {
            return Err(SwitchError::HungUp);
        }
        Ok(())
    }

    /// The call is over: its recording ends, `HungUp` once.
    fn end_call(&self, call: &CallId, cause: HangupCause) {
        let first = {
            let mut state = self.state.lock().unwrap();
            state.recordings.remove(call);
            state.hung_up.insert(call.clone())
        };
        if first {
            self.emit(SwitchEvent::HungUp {
                call: call.clone(),
                cause,
            });
        }
    }
}

#[async_trait]
impl Switch for FakeSwitch {
    async fn answer(&self, call: &CallId) -> Result<(), SwitchError> {
        self.check_up(call)?;
        self.log(Command::Answer(call.clone()));
        Ok(())
    }

    async fn play(&self, call: &CallId, request: PlayRequest) -> Result<(), SwitchError> {
        self.check_up(call)?;
        let stopped_at = match &request.media {
            Media::File { path, format } => {
                let bytes_per_sample = match format {
                    AudioFormat::Slin { .. } => 2,
                    _ => 1,
                };
                let on_disk = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                (on_disk / bytes_per_sample).max(request.from_sample)
            }
            // A prompt plays whole; its length does not matter here.
            Media::Sound(_) => 8000,
        };
        // The end is reported before the script hears of the play, so a
        // key the script presses next comes after it, as on a phone.
        self.emit(SwitchEvent::PlaybackFinished {
            call: call.clone(),
            stopped_at_sample: stopped_at,
            interrupted_by: None,
        });
        self.log(Command::Play {
            call: call.clone(),
            request,
            stopped_at,
        });
        Ok(())
    }

    async fn start_recording(
        &self,
        call: &CallId,
        request: RecordRequest,
    ) -> Result<(), SwitchError> {
        self.check_up(call)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&request.path)?;
        self.state
            .lock()
            .unwrap()
            .recordings
            .insert(call.clone(), file);
        self.log(Command::StartRecording {
            call: call.clone(),
            request,
        });
        Ok(())
    }

    async fn stop_recording(&self, call: &CallId) -> Result<(), SwitchError> {
        self.state.lock().unwrap().recordings.remove(call);
        self.log(Command::StopRecording(call.clone()));
        Ok(())
    }

    async fn originate(&self, request: OriginateRequest) -> Result<(), SwitchError> {
        ivm::switch::check_target(&request.target)?;
        self.log(Command::Originate(request));
        Ok(())
    }

    async fn bridge(&self, a: &CallId, b: &CallId) -> Result<(), SwitchError> {
        self.check_up(a)?;
        self.check_up(b)?;
        self.log(Command::Bridge(a.clone(), b.clone()));
        Ok(())
    }

    async fn connect(&self, call: &CallId, target: &str) -> Result<(), SwitchError> {
        self.check_up(call)?;
        ivm::switch::check_target(target)?;
        self.log(Command::Connect {
            call: call.clone(),
            target: target.to_owned(),
        });
        Ok(())
    }

    async fn hangup(&self, call: &CallId, cause: HangupCause) -> Result<(), SwitchError> {
        self.check_up(call)?;
        self.log(Command::Hangup(call.clone(), cause));
        self.end_call(call, cause);
        Ok(())
    }

    async fn send_text(&self, endpoint: &str, from: &str, body: &str) -> Result<(), SwitchError> {
        self.log(Command::Text {
            endpoint: endpoint.to_owned(),
            from: from.to_owned(),
            body: body.to_owned(),
        });
        Ok(())
    }

    async fn set_message_waiting(
        &self,
        mailbox: &str,
        new_messages: u32,
        old_messages: u32,
    ) -> Result<(), SwitchError> {
        self.log(Command::Lamp {
            mailbox: mailbox.to_owned(),
            new_messages,
            old_messages,
        });
        Ok(())
    }

    async fn device_state(&self, endpoint: &str) -> Result<DeviceState, SwitchError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .devices
            .get(endpoint)
            .copied()
            .unwrap_or(DeviceState::Idle))
    }

    fn events(&self) -> mpsc::UnboundedReceiver<SwitchEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state.lock().unwrap().subscribers.push(tx);
        rx
    }

    fn capture_format(&self) -> (AudioFormat, &'static str) {
        (
            AudioFormat::Slin {
                sample_rate: CAPTURE_RATE,
            },
            "sln48",
        )
    }
}

/// How long a script waits for the server's next command.
pub const WAIT: Duration = Duration::from_secs(10);

impl Script {
    /// A phone `from` dials `dialed`; returns the new call. The switch
    /// vouches for the caller (an authenticated endpoint named `from`).
    pub fn dial(&self, from: &str, dialed: &str) -> CallId {
        self.dial_as(from, Some(from), dialed)
    }

    /// A call whose caller ID says `from` and that the switch authenticated
    /// as `endpoint` (`None`: it cannot vouch for anyone).
    pub fn dial_as(&self, from: &str, endpoint: Option<&str>, dialed: &str) -> CallId {
        let call = self.switch.new_call("in");
        self.switch.emit(SwitchEvent::IncomingCall {
            call: call.clone(),
            caller_number: from.to_owned(),
            caller_name: String::new(),
            dialed: dialed.to_owned(),
            origin: None,
            endpoint: endpoint.map(str::to_owned),
        });
        call
    }

    /// The phone an originate rang answers; returns its call.
    pub fn answer(&self, origin: &OriginateId) -> CallId {
        let call = self.switch.new_call("out");
        self.switch.emit(SwitchEvent::Answered {
            origin: origin.clone(),
            call: call.clone(),
        });
        call
    }

    /// The phone an originate rang is not answered.
    pub fn fail(&self, origin: &OriginateId, cause: HangupCause) {
        self.switch.emit(SwitchEvent::OriginateFailed {
            origin: origin.clone(),
            cause,
        });
    }

    /// What the switch answers when asked for `endpoint`'s state, without
    /// reporting a change (as if missed while disconnected).
    pub fn set_device_state(&self, endpoint: &str, state: DeviceState) {
        let mut s = self.switch.state.lock().unwrap();
        s.devices.insert(endpoint.to_owned(), state);
    }

    /// The switch reports how many contacts a phone has registered.
    pub fn contacts(&self, endpoint: &str, contacts: u32) {
        self.switch.emit(SwitchEvent::ContactsChanged {
            endpoint: endpoint.to_owned(),
            contacts,
        });
    }

    /// The control connection came back.
    pub fn reconnect(&self) {
        self.switch.emit(SwitchEvent::Reconnected);
    }

    /// The switch reports a phone's state (registration, ringing, on a call).
    pub fn device(&self, endpoint: &str, state: DeviceState) {
        self.switch.emit(SwitchEvent::DeviceStateChanged {
            endpoint: endpoint.to_owned(),
            state,
        });
    }

    pub fn press(&self, call: &CallId, digit: char) {
        self.switch.emit(SwitchEvent::Dtmf {
            call: call.clone(),
            digit,
        });
    }

    /// The phone on `call` hangs up.
    pub fn hang_up(&self, call: &CallId) {
        self.switch.end_call(call, HangupCause::Normal);
    }

    /// The caller on `call` says `samples` (at [`CAPTURE_RATE`]): appended
    /// to the recording the server started. False if none is running.
    pub fn say(&self, call: &CallId, samples: &[i16]) -> bool {
        let mut state = self.switch.state.lock().unwrap();
        let Some(file) = state.recordings.get_mut(call) else {
            return false;
        };
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        file.write_all(&bytes).is_ok()
    }

    /// Wait for the next command that `matches`, keeping the ones before it
    /// in the transcript. Panics (the test fails) after [`WAIT`].
    pub async fn expect(&mut self, what: &str, matches: impl Fn(&Command) -> bool) -> Command {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.commands.recv()).await;
            match next {
                Ok(Some(command)) => {
                    self.transcript.push(command.clone());
                    if matches(&command) {
                        return command;
                    }
                }
                Ok(None) => panic!("the switch is gone, waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {WAIT:?}; the server asked for:\n{:#?}",
                    self.transcript
                ),
            }
        }
    }

    /// Wait for a play of the sound `name` on `call`.
    pub async fn expect_sound(&mut self, call: &CallId, name: &str) -> Command {
        let what = format!("sound {name} on {call}");
        self.expect(&what, |c| c.call() == Some(call) && c.sound() == Some(name))
            .await
    }

    /// Wait for the originate the server places; returns its request.
    pub async fn expect_originate(&mut self) -> OriginateRequest {
        match self
            .expect("an originate", |c| matches!(c, Command::Originate(_)))
            .await
        {
            Command::Originate(request) => request,
            _ => unreachable!(),
        }
    }

    /// Wait until the server records `call`; returns where.
    pub async fn expect_recording(&mut self, call: &CallId) -> PathBuf {
        match self
            .expect(
                "a recording",
                |c| matches!(c, Command::StartRecording { call: c, .. } if c == call),
            )
            .await
        {
            Command::StartRecording { request, .. } => request.path,
            _ => unreachable!(),
        }
    }

    /// The plays of files on `call` seen so far: (from, stopped at, path).
    pub fn file_plays(&self, call: &CallId) -> Vec<(u64, u64, PathBuf)> {
        self.transcript
            .iter()
            .filter_map(|c| match c {
                Command::Play {
                    call: c,
                    request:
                        PlayRequest {
                            media: Media::File { path, .. },
                            from_sample,
                            ..
                        },
                    stopped_at,
                } if c == call => Some((*from_sample, *stopped_at, path.clone())),
                _ => None,
            })
            .collect()
    }
}
