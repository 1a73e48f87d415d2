//! A real SIP phone: baresip registered to the testbed switch, driven over
//! its ctrl_tcp socket (netstrings of JSON), speaking a WAV file and
//! recording what it hears to another.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::{SipServer, Supervised, TestbedError, free_tcp_port, free_udp_port, rootfs_command};

const CONFIG_TEMPLATE: &str = include_str!("../../tests/asterisk/baresip/config");
const ACCOUNTS_TEMPLATE: &str = include_str!("../../tests/asterisk/baresip/accounts");
/// Largest ctrl_tcp message accepted from baresip.
const MAX_NETSTRING: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum PhoneEvent {
    /// A call event: `CALL_ESTABLISHED`, `CALL_CLOSED`, `CALL_INCOMING`, ...
    Call { kind: String, param: String },
    /// A SIP MESSAGE arrived.
    Message { from: String, body: String },
    /// Anything else baresip said.
    Other(Value),
}

pub struct Phone {
    extension: String,
    dir: tempfile::TempDir,
    ctrl: OwnedWriteHalf,
    events: mpsc::UnboundedReceiver<PhoneEvent>,
    responses: mpsc::UnboundedReceiver<Value>,
    process: Supervised,
    /// The registrar's loopback SIP port, where [`Phone::call`] dials.
    sip_port: u16,
}

impl Phone {
    /// Start phone `extension` (1001..1003) registered to `pbx`, speaking
    /// `speech` (8 kHz mono s16 WAV; `None`: two minutes of silence), and
    /// wait until the switch has its registration.
    pub async fn start(
        pbx: &dyn SipServer,
        extension: &str,
        speech: Option<&Path>,
    ) -> Result<Self, TestbedError> {
        Self::start_with(pbx, extension, speech, true).await
    }

    /// Like [`Phone::start`]; with `auto_answer` false the phone rings until
    /// [`Phone::answer`] or [`Phone::hangup`] (which rejects the call).
    pub async fn start_with(
        pbx: &dyn SipServer,
        extension: &str,
        speech: Option<&Path>,
        auto_answer: bool,
    ) -> Result<Self, TestbedError> {
        let password = pbx.sip_password(extension);
        Self::start_on(
            pbx.rootfs(),
            pbx.sip_port(),
            extension,
            &password,
            speech,
            auto_answer,
        )
        .await
    }

    /// Like [`Phone::start_with`], registering with any SIP server on
    /// loopback `sip_port` (e.g. one in a container on the host network),
    /// with `password`. `rootfs` is where baresip lives ([`super::rootfs`]).
    pub async fn start_on(
        rootfs: &Path,
        sip_port: u16,
        extension: &str,
        password: &str,
        speech: Option<&Path>,
        auto_answer: bool,
    ) -> Result<Self, TestbedError> {
        let fail = |m: String| TestbedError::Phone(extension.to_owned(), m);
        let dir = tempfile::Builder::new().prefix("ivm-phone-").tempdir()?;
        let audio_in = match speech {
            Some(path) => path.to_owned(),
            None => {
                let path = dir.path().join("silence.wav");
                write_wav(&path, &vec![0i16; 8000 * 120])?;
                path
            }
        };
        // A port picked free can be taken by another process before baresip
        // binds it (tests run in parallel): then baresip exits or never
        // listens, and the phone is started again on other ports.
        let mut attempt = 0;
        let (process, stream) = loop {
            attempt += 1;
            let ctrl_port = free_tcp_port()?;
            let phone_port = free_udp_port()?;
            let fill = |t: &str| {
                t.replace("@@ROOTFS@@", &rootfs.display().to_string())
                    .replace("@@PHONE_PORT@@", &phone_port.to_string())
                    .replace("@@CTRL_PORT@@", &ctrl_port.to_string())
                    .replace("@@AUDIO_IN@@", &audio_in.display().to_string())
                    .replace(
                        "@@AUDIO_OUT@@",
                        &dir.path().join("heard.wav").display().to_string(),
                    )
                    .replace("@@EXT@@", extension)
                    .replace("@@PASS@@", password)
                    .replace("@@SIP_PORT@@", &sip_port.to_string())
                    .replace(
                        "@@ANSWERMODE@@",
                        if auto_answer { "auto" } else { "manual" },
                    )
            };
            std::fs::write(dir.path().join("config"), fill(CONFIG_TEMPLATE))?;
            std::fs::write(dir.path().join("accounts"), fill(ACCOUNTS_TEMPLATE))?;
            let log = std::fs::File::create(dir.path().join("baresip.log"))?;
            let mut cmd: Command = rootfs_command(rootfs, "usr/bin/baresip");
            cmd.arg("-f")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // SIGTERM makes baresip unregister and wait for an answer; a test
            // phone has nothing to say goodbye to, so the grace period is short.
            let mut process = Supervised::spawn(cmd, Duration::from_millis(300))?;
            match connect_while_alive(&mut process, ctrl_port, Duration::from_secs(10)).await {
                Ok(stream) => break (process, stream),
                Err(e) if attempt >= 3 => {
                    let log =
                        std::fs::read_to_string(dir.path().join("baresip.log")).unwrap_or_default();
                    return Err(fail(format!(
                        "ctrl_tcp on port {ctrl_port}: {e}; log: {log}"
                    )));
                }
                Err(_) => process.stop(),
            }
        };
        let (read, ctrl) = stream.into_split();
        let (event_tx, events) = mpsc::unbounded_channel();
        let (response_tx, responses) = mpsc::unbounded_channel();
        tokio::spawn(read_netstrings(read, event_tx, response_tx));
        let mut phone = Self {
            extension: extension.to_owned(),
            dir,
            ctrl,
            events,
            responses,
            process,
            sip_port,
        };
        phone
            .wait_registered(Duration::from_secs(10))
            .await
            .map_err(|e| fail(format!("{e}; log: {}", phone.log())))?;
        Ok(phone)
    }

    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// The WAV of everything this phone heard (time without RTP is omitted).
    pub fn heard_wav(&self) -> PathBuf {
        self.dir.path().join("heard.wav")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Dial a number on the testbed switch (e.g. `*771002`).
    pub async fn dial(&mut self, number: &str, pbx: &dyn SipServer) -> Result<(), TestbedError> {
        let uri = format!("sip:{number}@127.0.0.1:{}", pbx.sip_port());
        self.command("dial", &uri).await.map(drop)
    }

    /// Dial a number on the SIP server this phone registered with.
    pub async fn call(&mut self, number: &str) -> Result<(), TestbedError> {
        let uri = format!("sip:{number}@127.0.0.1:{}", self.sip_port);
        self.command("dial", &uri).await.map(drop)
    }

    /// Answer a ringing call.
    pub async fn answer(&mut self) -> Result<(), TestbedError> {
        self.command("accept", "").await.map(drop)
    }

    pub async fn hangup(&mut self) -> Result<(), TestbedError> {
        self.command("hangup", "").await.map(drop)
    }

    /// Press and release a key (RFC 4733 DTMF).
    pub async fn press(&mut self, digit: char) -> Result<(), TestbedError> {
        self.command("sndcode", &digit.to_string()).await?;
        tokio::time::sleep(Duration::from_millis(120)).await;
        self.command("sndcode", "").await.map(drop)
    }

    /// Send one ctrl_tcp command and wait for its response.
    pub async fn command(&mut self, command: &str, params: &str) -> Result<Value, TestbedError> {
        let body = json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{},", body.len(), body);
        let fail = |m: String| TestbedError::Phone(self.extension.clone(), m);
        self.ctrl
            .write_all(frame.as_bytes())
            .await
            .map_err(|e| fail(format!("ctrl_tcp write: {e}")))?;
        match tokio::time::timeout(Duration::from_secs(5), self.responses.recv()).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(fail("ctrl_tcp closed".into())),
            Err(_) => Err(fail(format!("no response to {command}"))),
        }
    }

    /// The next event that satisfies `want`, within `limit`.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut want: impl FnMut(&PhoneEvent) -> bool,
    ) -> Result<PhoneEvent, TestbedError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if want(&event) => return Ok(event),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(TestbedError::Phone(
                        self.extension.clone(),
                        "ctrl_tcp closed".into(),
                    ));
                }
                Err(_) => {
                    return Err(TestbedError::Phone(
                        self.extension.clone(),
                        format!("no matching event within {limit:?}"),
                    ));
                }
            }
        }
    }

    /// Wait for a call event of this kind (`CALL_ESTABLISHED`, `CALL_CLOSED`).
    pub async fn wait_call(&mut self, kind: &str, limit: Duration) -> Result<String, TestbedError> {
        match self
            .wait_for(
                limit,
                |e| matches!(e, PhoneEvent::Call { kind: k, .. } if k == kind),
            )
            .await?
        {
            PhoneEvent::Call { param, .. } => Ok(param),
            _ => Ok(String::new()),
        }
    }

    /// baresip registers before a ctrl_tcp client can connect, so its
    /// REGISTER_OK event is usually gone: ask `reginfo` until it says OK.
    async fn wait_registered(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let info = self
                .command("reginfo", "")
                .await
                .map_err(|e| e.to_string())?;
            let data = info.get("data").and_then(Value::as_str).unwrap_or_default();
            if data.contains("OK") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not registered: {data}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// Connect to baresip's ctrl_tcp `port` while `process` runs, for up to
/// `limit`.
async fn connect_while_alive(
    process: &mut Supervised,
    port: u16,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                if let Some(status) = process.exited() {
                    return Err(std::io::Error::other(format!(
                        "baresip exited ({status}) before listening: {e}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await
            }
        }
    }
}

/// Read `len:json,` netstrings; responses and events go to their channels.
async fn read_netstrings(
    mut read: tokio::net::tcp::OwnedReadHalf,
    events: mpsc::UnboundedSender<PhoneEvent>,
    responses: mpsc::UnboundedSender<Value>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((value, used)) = parse_netstring(&buf) {
            buf.drain(..used);
            let Some(value) = value else { continue };
            if value.get("response").is_some() {
                let _ = responses.send(value);
            } else {
                let _ = events.send(classify(value));
            }
        }
        if buf.len() > MAX_NETSTRING {
            return;
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One netstring from the front of `buf`: (its JSON if it parses, bytes used).
fn parse_netstring(buf: &[u8]) -> Option<(Option<Value>, usize)> {
    let colon = buf.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon]).ok()?.parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() <= end {
        return None;
    }
    let value = serde_json::from_slice(&buf[colon + 1..end]).ok();
    Some((value, end + 1))
}

fn classify(value: Value) -> PhoneEvent {
    let text = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if value.get("message").is_some() {
        return PhoneEvent::Message {
            from: text("from"),
            body: text("body"),
        };
    }
    if value.get("class").and_then(Value::as_str) == Some("call") {
        return PhoneEvent::Call {
            kind: text("type"),
            param: text("param"),
        };
    }
    PhoneEvent::Other(value)
}

/// Write 8 kHz mono 16-bit PCM as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) -> std::io::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out)
}
