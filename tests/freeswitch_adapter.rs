//! The FreeSWITCH adapter against replayed FreeSWITCH 1.11.1 traffic.
//!
//! A test ESL peer plays FreeSWITCH over real loopback TCP: it connects to
//! the adapter's outbound socket like the dialplan's `socket` application,
//! and accepts the adapter's inbound connection like port 8021. What it sends
//! are the frames of the captures in `tests/data/esl/` (byte-exact copies of
//! real traffic), split at the client commands the capture's `.log.md` shows;
//! what it receives is parsed and compared with the captured `.to-fs.txt`
//! commands and with the codec's own command builders.
//!
//! Where the adapter legitimately differs from the capturing client, the peer
//! adapts the real frames, and only so:
//!
//! * UUIDs the client chooses (`Event-UUID` -> `Application-UUID`, `Job-UUID`)
//!   are the adapter's own: the captured value is replaced by the adapter's,
//!   which has the same length, so every `Content-Length` still holds.
//! * A channel uuid is replaced by another of the same length where two
//!   captures are joined into one call (the target leg of an IVM call).
//! * The originated leg's `connect` reply gets one more header,
//!   `variable_ivm_origin` (that reply has no `Content-Length`).
//! * Commands no capture contains (`set`, the beep's playback, `uuid_bridge`)
//!   are answered with real reply frames (`+OK`) or, for events, real frames
//!   whose header values are edited and whose lengths are recomputed.

#[path = "support/events.rs"]
mod events;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use events::next;
use ivm::config::FreeswitchConfig;
use ivm::media::AudioFormat;
use ivm::proto::esl::{self, Execute, SendMsg};
use ivm::switch::freeswitch::outbound::{self, OutboundConfig};
use ivm::switch::freeswitch::{FreeswitchSwitch, FreeswitchSwitchOptions};
use ivm::switch::{
    CallId, HangupCause, Media, OriginateId, OriginateRequest, PlayRequest, RecordRequest, Switch,
    SwitchError, SwitchEvent,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(10);
/// The caller leg of `outbound-basic` (B leg of a loopback call).
const CALLER: &str = "c5d757e8-f319-41a7-8162-ec7b8a27c98e";
/// The leg of `outbound-nolinger`, replaced by the originated leg's uuid.
const NOLINGER_LEG: &str = "cf2d6a8e-c299-4a64-be57-00dee6c9f5f7";
/// The originated leg of `inbound-events-plain` (its `+OK <uuid>`).
const TARGET: &str = "aaaaaaaa-0003-4000-8000-000000000001";

// ---------------------------------------------------------------------------
// Captures
// ---------------------------------------------------------------------------

fn data_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/esl")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One client command of a capture and the frames FreeSWITCH sent after it
/// (up to the next command).
#[derive(Debug, Clone)]
struct Exchange {
    command: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Capture {
    /// Frames before the first command (the inbound `auth/request`).
    preamble: Vec<Vec<u8>>,
    exchanges: Vec<Exchange>,
}

/// `[a, b)` from a log line like `### 1.2 ms  <- FS  from-fs[0, 3561)  ...`.
fn range_after(line: &str, marker: &str) -> Option<(usize, usize)> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let (a, rest) = rest.split_once(", ")?;
    let b = rest.split_once(')')?.0;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl Capture {
    fn load(name: &str) -> Capture {
        let from_fs = data_file(&format!("{name}.from-fs.bin"));
        let to_fs = data_file(&format!("{name}.to-fs.txt"));
        let log = String::from_utf8(data_file(&format!("{name}.log.md"))).unwrap();
        let mut capture = Capture {
            preamble: Vec::new(),
            exchanges: Vec::new(),
        };
        let (mut sent, mut received) = (0, 0);
        for line in log.lines().filter(|l| l.starts_with("###")) {
            if let Some((a, b)) = range_after(line, "to-fs[") {
                assert_eq!(a, sent, "{name}: commands are contiguous");
                sent = b;
                capture.exchanges.push(Exchange {
                    command: to_fs[a..b].to_vec(),
                    frames: Vec::new(),
                });
            } else if let Some((a, b)) = range_after(line, "from-fs[") {
                assert_eq!(a, received, "{name}: frames are contiguous");
                received = b;
                let frame = from_fs[a..b].to_vec();
                match capture.exchanges.last_mut() {
                    Some(exchange) => exchange.frames.push(frame),
                    None => capture.preamble.push(frame),
                }
            }
        }
        assert_eq!(sent, to_fs.len(), "{name}: every command is in the log");
        assert_eq!(received, from_fs.len(), "{name}: every frame is in the log");
        capture
    }

    fn frames(&self, exchange: usize) -> Vec<Vec<u8>> {
        self.exchanges[exchange].frames.clone()
    }

    /// The first frame anywhere whose text contains `needle`.
    fn frame_with(&self, needle: &str) -> Vec<u8> {
        self.preamble
            .iter()
            .chain(self.exchanges.iter().flat_map(|e| e.frames.iter()))
            .find(|f| contains(f, needle))
            .unwrap_or_else(|| panic!("no frame with {needle:?}"))
            .clone()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn is_reply(frame: &[u8]) -> bool {
    contains(frame, "Content-Type: command/reply") || contains(frame, "Content-Type: api/response")
}

fn without_replies(frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frames.into_iter().filter(|f| !is_reply(f)).collect()
}

/// Replace every `from` by `to` (same length, so lengths still hold).
fn substitute(frames: &[Vec<u8>], from: &str, to: &str) -> Vec<Vec<u8>> {
    assert_eq!(from.len(), to.len(), "substitutions keep lengths");
    frames
        .iter()
        .map(|f| {
            let mut out = f.clone();
            let mut i = 0;
            while i + from.len() <= out.len() {
                if &out[i..i + from.len()] == from.as_bytes() {
                    out[i..i + from.len()].copy_from_slice(to.as_bytes());
                    i += from.len();
                } else {
                    i += 1;
                }
            }
            out
        })
        .collect()
}

/// `switch_url_encode`'s unsafe characters, as plain events encode values.
fn fs_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if !(b' '..=b'~').contains(&b) || b"\r\n \"#%&+:;<=>?@[\\]^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A real `text/event-plain` frame with some header values replaced (or
/// added), the outer `Content-Length` recomputed.
fn edit_event(frame: &[u8], edits: &[(&str, &str)]) -> Vec<u8> {
    let text = String::from_utf8(frame.to_vec()).unwrap();
    let (_, body) = text.split_once("\n\n").unwrap();
    let body = body
        .strip_suffix("\n\n")
        .expect("a plain event without a body");
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    for (name, value) in edits {
        let line = format!("{name}: {}", fs_encode(value));
        match lines
            .iter_mut()
            .find(|l| l.split_once(": ").is_some_and(|(n, _)| n == *name))
        {
            Some(existing) => *existing = line,
            None => lines.push(line),
        }
    }
    let body = format!("{}\n\n", lines.join("\n"));
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An `api/response` frame shaped like FreeSWITCH's.
fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// The test peer
// ---------------------------------------------------------------------------

/// A command the adapter sent, parsed the way FreeSWITCH reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    raw: Vec<u8>,
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// Parse one command (`line\nheader: value\n...\n\n[body]`) from the front
/// of `buf`; None until it is complete.
fn parse_command(buf: &[u8]) -> Option<(Sent, usize)> {
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("commands are text");
    let mut lines = head.split('\n');
    let line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("command header has a colon");
            (n.to_owned(), v.trim_start().to_owned())
        })
        .collect();
    let body_len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let total = end + 2 + body_len;
    if buf.len() < total {
        return None;
    }
    Some((
        Sent {
            raw: buf[..total].to_vec(),
            line,
            headers,
            body: buf[end + 2..total].to_vec(),
        },
        total,
    ))
}

fn parse_all(bytes: &[u8]) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((sent, used)) = parse_command(rest) {
        out.push(sent);
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "trailing bytes in a command stream");
    out
}

struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn connect(address: SocketAddr) -> Peer {
        Peer {
            stream: TcpStream::connect(address).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the adapter connects")
            .unwrap();
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next command the adapter sends.
    async fn command(&mut self) -> Sent {
        loop {
            if let Some((sent, used)) = parse_command(&self.buf) {
                self.buf.drain(..used);
                return sent;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a command within the wait")
                .unwrap();
            assert!(n > 0, "the adapter closed instead of sending a command");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, frames: &[Vec<u8>]) {
        for frame in frames {
            self.stream.write_all(frame).await.unwrap();
        }
    }

    /// The adapter closes its side without sending anything more.
    async fn expect_closed(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the adapter closes")
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        );
    }
}

/// The `sendmsg` the adapter must send for an execute, per the codec.
fn expected_execute(app: &str, arg: Option<&str>, event_uuid: Option<&str>) -> String {
    let mut execute = Execute::new(app).event_lock(true);
    if let Some(arg) = arg {
        execute = execute.arg(arg);
    }
    if let Some(uuid) = event_uuid {
        execute = execute.event_uuid(uuid);
    }
    esl::sendmsg(None, &SendMsg::Execute(execute)).unwrap()
}

/// The adapter's `sendmsg` has the captured command's shape: the same
/// command line and headers, plus `event-lock` and our `Event-UUID`.
fn same_execute_as_captured(sent: &Sent, captured: &[u8]) {
    let captured = &parse_all(captured)[0];
    assert_eq!(sent.line, captured.line, "{}", sent.text());
    for (name, value) in &captured.headers {
        assert_eq!(
            sent.header(name),
            Some(value.as_str()),
            "{name} in {}",
            sent.text()
        );
    }
    assert_eq!(sent.header("event-lock"), Some("true"));
    assert!(sent.header("Event-UUID").is_some_and(|u| u.len() == 36));
}

/// Expect an execute of `app` with `arg`; answer `+OK` with a real reply.
async fn expect_execute(peer: &mut Peer, app: &str, arg: &str) -> Sent {
    let sent = peer.command().await;
    assert_eq!(
        sent.text(),
        expected_execute(app, Some(arg), sent.header("Event-UUID")),
        "expected {app} {arg}"
    );
    peer.send(&[ok_reply()]).await;
    sent
}

/// A real `command/reply` `+OK` frame (answer to a `sendmsg`).
fn ok_reply() -> Vec<u8> {
    Capture::load("outbound-basic").exchanges[4].frames[0].clone()
}

// ---------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------

struct Bed {
    switch: FreeswitchSwitch,
    events: mpsc::UnboundedReceiver<SwitchEvent>,
    _shutdown: watch::Sender<bool>,
}

fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn options() -> FreeswitchSwitchOptions {
    FreeswitchSwitchOptions {
        domain: Some("192.0.2.2".into()),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        // The scripted peers answer exactly the commands each capture
        // shows; the checks that add commands have their own tests.
        keepalive: None,
        verify_uuids: false,
        ..FreeswitchSwitchOptions::default()
    }
}

async fn bed_with(esl_address: SocketAddr, options: FreeswitchSwitchOptions) -> Bed {
    let config = FreeswitchConfig {
        esl_address,
        esl_password: "ClueCon".into(),
        outbound_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        target_dial_string: "loopback/${target}".into(),
        ..FreeswitchConfig::default()
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let switch = FreeswitchSwitch::start(config, options, shutdown_rx)
        .await
        .expect("start the adapter");
    let events = switch.events();
    Bed {
        switch,
        events,
        _shutdown: shutdown,
    }
}

async fn bed(esl_address: SocketAddr) -> Bed {
    bed_with(esl_address, options()).await
}

/// The next event that `pick` accepts; others (Reconnected...) are skipped.
/// Every event that arrives within `window`.
async fn drain(
    events: &mut mpsc::UnboundedReceiver<SwitchEvent>,
    window: Duration,
) -> Vec<SwitchEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        out.push(event);
    }
    out
}

/// Play FreeSWITCH's side of the outbound handshake from a capture:
/// `connect`, `myevents`, `linger` as the adapter sends them.
async fn outbound_handshake(peer: &mut Peer, capture: &Capture, connect_reply: Vec<u8>) {
    let connect = peer.command().await;
    assert_eq!(connect.raw, capture.exchanges[0].command, "connect");
    assert_eq!(connect.raw, esl::connect().as_bytes());
    peer.send(&[connect_reply]).await;
    let myevents = peer.command().await;
    assert_eq!(myevents.raw, capture.exchanges[1].command, "myevents");
    peer.send(&capture.frames(1)).await;
    let linger = peer.command().await;
    assert_eq!(linger.raw, esl::linger(None).as_bytes());
    // outbound-basic's own `linger` and its reply (plus the CHANNEL_PARK
    // queued meanwhile).
    let basic = Capture::load("outbound-basic");
    assert_eq!(linger.raw, basic.exchanges[2].command);
    let mut frames = vec![basic.exchanges[2].frames[0].clone()];
    if capture.exchanges[2].command == basic.exchanges[2].command {
        frames = capture.frames(2);
    }
    peer.send(&frames).await;
}

fn ramp(from_sample: u64) -> PlayRequest {
    PlayRequest {
        media: Media::File {
            path: "/var/spool/ivmfx/ramp.wav".into(),
            format: AudioFormat::Wav,
        },
        from_sample,
        interrupt_digits: String::new(),
    }
}

// ---------------------------------------------------------------------------
// Replays
// ---------------------------------------------------------------------------

/// `outbound-basic`: FreeSWITCH's socket application connects, the engine
/// answers and plays a file from sample 12000, a DTMF arrives during the
/// playback, the caller hangs up; the adapter lingers and says `exit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_basic_replays_against_the_adapter() {
    let capture = Capture::load("outbound-basic");
    let mut bed = bed(closed_port()).await;
    let mut fs = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut fs, &capture, capture.exchanges[0].frames[0].clone()).await;

    let (call, caller, name, dialed) = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall {
            call,
            caller_number,
            caller_name,
            dialed,
            origin: None,
            ..
        } => Some((
            call.clone(),
            caller_number.clone(),
            caller_name.clone(),
            dialed.clone(),
        )),
        _ => None,
    })
    .await;
    assert_eq!(call, CallId(CALLER.into()));
    assert_eq!(caller, "0000000000");
    assert_eq!(name, "");
    assert_eq!(dialed, "eslsock");

    // answer: completes when CHANNEL_EXECUTE_COMPLETE carries our Event-UUID.
    let (answered, ()) = tokio::join!(bed.switch.answer(&call), async {
        let sent = fs.command().await;
        same_execute_as_captured(&sent, &capture.exchanges[4].command);
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        assert_eq!(sent.text(), expected_execute("answer", None, Some(&uuid)));
        fs.send(&substitute(
            &capture.frames(4),
            "53d10239-9c56-4313-9e57-1527fdd4d180",
            &uuid,
        ))
        .await;
    });
    answered.expect("answer completes");

    // play from an offset: `playback FILE@@12000`, event-locked.
    let (played, ()) = tokio::join!(bed.switch.play(&call, ramp(12000)), async {
        expect_execute(&mut fs, "set", "playback_terminators=none").await;
        let sent = fs.command().await;
        same_execute_as_captured(&sent, &capture.exchanges[5].command);
        assert_eq!(
            sent.header("execute-app-arg"),
            Some("/var/spool/ivmfx/ramp.wav@@12000")
        );
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        // The rest of the call: DTMF, PLAYBACK_STOP, the caller hangs up,
        // the linger notice.
        fs.send(&substitute(
            &capture.frames(5),
            "442ab563-733c-4d60-9cae-dd392ddb5c99",
            &uuid,
        ))
        .await;
    });
    played.expect("playback accepted");

    let digit = next(&mut bed.events, "Dtmf", |e| match e {
        SwitchEvent::Dtmf { call: c, digit } if *c == call => Some(*digit),
        _ => None,
    })
    .await;
    assert_eq!(digit, '5');
    let (position, interrupted) = next(&mut bed.events, "PlaybackFinished", |e| match e {
        SwitchEvent::PlaybackFinished {
            call: c,
            stopped_at_sample,
            interrupted_by,
        } if *c == call => Some((*stopped_at_sample, *interrupted_by)),
        _ => None,
    })
    .await;
    // variable_playback_last_offset_pos, not 12000 + playback_samples.
    assert_eq!((position, interrupted), (24000, None));
    let cause = next(&mut bed.events, "HungUp", |e| match e {
        SwitchEvent::HungUp { call: c, cause } if *c == call => Some(*cause),
        _ => None,
    })
    .await;
    assert_eq!(cause, HangupCause::Normal);

    // After the linger notice the adapter says exit, as the capture did.
    let exit = fs.command().await;
    assert_eq!(exit.raw, capture.exchanges[6].command);
    fs.send(&capture.frames(6)).await;
    drop(fs);
    // The call is gone: commands on it are refused, not sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        bed.switch.play(&call, ramp(0)).await,
        Err(SwitchError::NoSuchCall(_))
    ));
}

/// `outbound-nolinger` with the inbound connection down: the hang-up goes
/// over the call's own socket, byte for byte the captured `sendmsg hangup`;
/// FreeSWITCH then closes without a linger notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_nolinger_hangs_up_over_the_call_socket() {
    let capture = Capture::load("outbound-nolinger");
    let mut bed = bed(closed_port()).await;
    let mut fs = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut fs, &capture, capture.exchanges[0].frames[0].clone()).await;
    // The captured client's `event plain` is not needed (myevents already
    // brings everything); its CHANNEL_PARK still arrives.
    fs.send(&without_replies(capture.frames(2))).await;
    let call = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    assert_eq!(call.0, NOLINGER_LEG);

    let (answered, ()) = tokio::join!(bed.switch.answer(&call), async {
        let sent = fs.command().await;
        same_execute_as_captured(&sent, &capture.exchanges[3].command);
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        fs.send(&substitute(
            &capture.frames(3),
            "27e3bdde-2574-4fc7-9ccd-256bdc7f14f4",
            &uuid,
        ))
        .await;
    });
    answered.unwrap();

    let (hung_up, ()) = tokio::join!(bed.switch.hangup(&call, HangupCause::Normal), async {
        let sent = fs.command().await;
        assert_eq!(sent.raw, capture.exchanges[5].command, "{}", sent.text());
        // The captured reply, then the final events and the disconnect
        // notice; the playback exchange was never asked for, so it is not
        // replayed.
        fs.send(&capture.frames(5)).await;
    });
    hung_up.unwrap();
    let cause = next(&mut bed.events, "HungUp", |e| match e {
        SwitchEvent::HungUp { call: c, cause } if *c == call => Some(*cause),
        _ => None,
    })
    .await;
    assert_eq!(cause, HangupCause::Normal);
    drop(fs);
}

/// `outbound-linger-timeout`: FreeSWITCH closes by itself after the linger
/// time; the adapter's `exit` may race it. Exactly one HungUp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_linger_timeout_reports_one_hangup() {
    let capture = Capture::load("outbound-linger-timeout");
    let mut bed = bed(closed_port()).await;
    let mut fs = Peer::connect(bed.switch.outbound_address()).await;
    let connect = fs.command().await;
    assert_eq!(connect.raw, capture.exchanges[0].command);
    fs.send(&capture.frames(0)).await;
    let _myevents = fs.command().await;
    fs.send(&capture.frames(1)).await;
    let linger = fs.command().await;
    assert_eq!(linger.line, "linger");
    // "+OK will linger 2 seconds" and the CHANNEL_PARK.
    fs.send(&capture.frames(2)).await;
    let call = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    let (answered, ()) = tokio::join!(bed.switch.answer(&call), async {
        let sent = fs.command().await;
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        let frames = capture.frames(3);
        let app_uuid = String::from_utf8_lossy(&frames[1])
            .lines()
            .find_map(|l| l.strip_prefix("Application-UUID: ").map(str::to_owned))
            .unwrap();
        // Everything: the answer, the hang-up from outside, both notices.
        fs.send(&substitute(&frames, &app_uuid, &uuid)).await;
    });
    answered.unwrap();
    let exit = fs.command().await;
    assert_eq!(exit.raw, esl::exit().as_bytes());
    drop(fs);
    let events = drain(&mut bed.events, Duration::from_millis(300)).await;
    let hangups: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, SwitchEvent::HungUp { .. }))
        .collect();
    assert_eq!(hangups.len(), 1, "{events:?}");
}

// ---------------------------------------------------------------------------
// A whole IVM call
// ---------------------------------------------------------------------------

/// Inbound greeting, `auth`, subscription, from `inbound-events-plain`.
async fn inbound_login(listener: &TcpListener, capture: &Capture) -> Peer {
    let mut esl = Peer::accept(listener).await;
    esl.send(&capture.preamble).await;
    let auth = esl.command().await;
    assert_eq!(auth.raw, capture.exchanges[0].command, "auth ClueCon");
    esl.send(&capture.frames(0)).await;
    let subscribe = esl.command().await;
    assert_eq!(
        subscribe.line,
        "event plain BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE PRESENCE_IN HEARTBEAT \
         CHANNEL_CREATE CUSTOM sofia::register sofia::unregister sofia::expire"
    );
    esl.send(&capture.frames(1)).await;
    esl
}

/// With `verify_uuids` (the default), a socket session whose Unique-ID
/// FreeSWITCH does not report as live is closed before anything names it:
/// the adapter asks `uuid_exists` on the inbound connection, hears `false`,
/// and the peer is closed with no call event. A UUID FreeSWITCH said
/// `true` for becomes a call; the same UUID again is refused without a
/// question; one seen in a `CHANNEL_CREATE` needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_duplicate_uuids_are_refused_before_any_command() {
    let basic = Capture::load("outbound-basic");
    let plain = Capture::load("inbound-events-plain");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut bed = bed_with(
        listener.local_addr().unwrap(),
        FreeswitchSwitchOptions {
            verify_uuids: true,
            ..options()
        },
    )
    .await;
    let mut esl = inbound_login(&listener, &plain).await;
    bed.switch.wait_connected(WAIT).await.unwrap();
    let connect_reply = basic.exchanges[0].frames[0].clone();

    // Forged: a well-formed session for a channel FreeSWITCH does not have.
    let mut forger = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut forger, &basic, connect_reply.clone()).await;
    let asked = esl.command().await;
    assert_eq!(asked.line, format!("api uuid_exists {CALLER}"));
    esl.send(&[api_response("false")]).await;
    forger.expect_closed().await;

    // The real one: FreeSWITCH says it is live.
    let mut real = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut real, &basic, connect_reply.clone()).await;
    let asked = esl.command().await;
    assert_eq!(asked.line, format!("api uuid_exists {CALLER}"));
    esl.send(&[api_response("true")]).await;
    let call = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    assert_eq!(call.0, CALLER);

    // The same UUID again while it is live: refused, FreeSWITCH not asked.
    let mut duplicate = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut duplicate, &basic, connect_reply.clone()).await;
    duplicate.expect_closed().await;

    // A channel FreeSWITCH announced with CHANNEL_CREATE: no question. A
    // registration sent after it marks when the adapter has taken it in
    // (inbound events are handled in order).
    let create = edit_event(
        &plain.frame_with("Event-Name: CHANNEL_CREATE"),
        &[("Unique-ID", TARGET)],
    );
    let marker = "Event-Name: CUSTOM\nEvent-Subclass: sofia%3A%3Aregister\n\
                  from-user: 1999\nfrom-host: 192.0.2.2\n\n";
    let marker = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{marker}",
        marker.len()
    );
    esl.send(&[create, marker.into_bytes()]).await;
    next(
        &mut bed.events,
        "the marker's DeviceStateChanged",
        |e| match e {
            SwitchEvent::DeviceStateChanged { endpoint, .. } if endpoint == "1999" => Some(()),
            _ => None,
        },
    )
    .await;
    let announced = substitute(&[connect_reply], CALLER, TARGET).remove(0);
    let mut leg = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut leg, &basic, announced).await;
    let admitted = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    assert_eq!(admitted.0, TARGET);
    // Nothing else happened: no command on the inbound connection (the
    // next thing there is the adapter's `exit` at shutdown) and no event
    // for the refused peers.
    let others = drain(&mut bed.events, Duration::from_millis(200)).await;
    assert!(
        !others.iter().any(|e| matches!(
            e,
            SwitchEvent::IncomingCall { .. } | SwitchEvent::Answered { .. }
        )),
        "{others:?}"
    );
    bed.switch.inbound().shutdown().await;
    assert_eq!(esl.command().await.raw, esl::exit().as_bytes());
    drop(real);
}

/// The engine's IVM call through the trait, against replayed FreeSWITCH
/// traffic: answer, beep, record with immediate writes, originate the
/// target, play from an offset and continue from `playback_last_offset_pos`,
/// stop the recording, bridge, hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivm_call_drives_freeswitch_through_the_trait() {
    let basic = Capture::load("outbound-basic");
    let plain = Capture::load("inbound-events-plain");
    let nolinger = Capture::load("outbound-nolinger");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut bed = bed(listener.local_addr().unwrap()).await;
    let mut esl = inbound_login(&listener, &plain).await;
    bed.switch.wait_connected(WAIT).await.unwrap();

    // The caller dials the IVM code; FreeSWITCH's socket app connects.
    let mut caller_fs = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut caller_fs, &basic, basic.exchanges[0].frames[0].clone()).await;
    let caller = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    assert_eq!(caller.0, CALLER);

    // 1. answer
    let (answered, ()) = tokio::join!(bed.switch.answer(&caller), async {
        let sent = caller_fs.command().await;
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        caller_fs
            .send(&substitute(
                &basic.frames(4),
                "53d10239-9c56-4313-9e57-1527fdd4d180",
                &uuid,
            ))
            .await;
    });
    answered.unwrap();

    // 2. beep (built-in tone: no sounds directory in this bed)
    let playback_stop = basic.frame_with("Event-Name: PLAYBACK_STOP");
    let playback_complete = basic.frames(5)[4].clone();
    assert!(contains(&playback_complete, "CHANNEL_EXECUTE_COMPLETE"));
    let beep = PlayRequest {
        media: Media::Sound("beep".into()),
        from_sample: 0,
        interrupt_digits: String::new(),
    };
    let (beeped, ()) = tokio::join!(bed.switch.play(&caller, beep), async {
        expect_execute(&mut caller_fs, "set", "playback_terminators=none").await;
        let sent = expect_execute(&mut caller_fs, "playback", "tone_stream://%(120,0,1000)").await;
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        caller_fs
            .send(&[
                edit_event(
                    &playback_stop,
                    &[
                        ("variable_playback_last_offset_pos", "960"),
                        ("Playback-File-Path", "tone_stream://%(120,0,1000)"),
                    ],
                ),
                // The position comes from the completion's variables (a
                // real outbound socket's `myevents` has no PLAYBACK_STOP).
                edit_event(
                    &playback_complete,
                    &[
                        ("Application-UUID", &uuid),
                        ("variable_playback_last_offset_pos", "960"),
                    ],
                ),
            ])
            .await;
    });
    beeped.unwrap();
    let beep_end = next(&mut bed.events, "beep finished", |e| match e {
        SwitchEvent::PlaybackFinished {
            stopped_at_sample, ..
        } => Some(*stopped_at_sample),
        _ => None,
    })
    .await;
    assert_eq!(beep_end, 960);

    // 3. record: the two measured variables (plus read-only) are set on the
    // channel before record_session, as in the captured originate's
    // `{enable_file_write_buffering=false,RECORD_PRE_BUFFER_FRAMES=1}`.
    let recording: PathBuf = "/var/spool/ivmfx/rec-plain.r8".into();
    let record = RecordRequest {
        path: recording.clone(),
        format: AudioFormat::Slin { sample_rate: 8000 },
        max_duration: Duration::from_secs(120),
    };
    let (recorded, ()) = tokio::join!(bed.switch.start_recording(&caller, record), async {
        let captured = String::from_utf8(plain.exchanges[2].command.clone()).unwrap();
        for variable in [
            "enable_file_write_buffering=false",
            "RECORD_PRE_BUFFER_FRAMES=1",
        ] {
            assert!(captured.contains(variable));
            expect_execute(&mut caller_fs, "set", variable).await;
        }
        expect_execute(&mut caller_fs, "set", "RECORD_READ_ONLY=true").await;
        // Mono, whatever the directory's `record_stereo` says.
        expect_execute(&mut caller_fs, "set", "RECORD_STEREO=false").await;
        expect_execute(&mut caller_fs, "set", "RECORD_STEREO_SWAP=false").await;
        // The captured `record_session::/var/spool/ivmfx/rec-plain.r8`, with
        // the engine's limit.
        let captured = String::from_utf8(plain.exchanges[4].command.clone()).unwrap();
        assert!(captured.contains("record_session::/var/spool/ivmfx/rec-plain.r8"));
        expect_execute(
            &mut caller_fs,
            "record_session",
            "/var/spool/ivmfx/rec-plain.r8 +120",
        )
        .await;
    });
    recorded.unwrap();

    // 4. originate the target: bgapi with our Job-UUID; the answered leg
    // comes back over the outbound socket carrying ivm_origin.
    let origin = OriginateId("m1-t1".into());
    let request = OriginateRequest {
        id: origin.clone(),
        target: "fspark".into(),
        caller_id_name: "IVM Alice".into(),
        caller_id_number: "1001".into(),
        ring_timeout: Duration::from_secs(30),
    };
    let socket = bed.switch.socket_address();
    let (originated, ()) = tokio::join!(bed.switch.originate(request), async {
        let sent = esl.command().await;
        let captured = parse_all(&plain.exchanges[2].command).remove(0);
        assert!(captured.line.starts_with("bgapi originate {"));
        assert_eq!(
            sent.line,
            format!(
                "bgapi originate '{{ivm_origin=m1-t1,origination_caller_id_name=IVM Alice,\
                 origination_caller_id_number=1001,originate_timeout=30,default_password=none}}\
                 loopback/fspark' '&socket({socket} async full)'"
            )
        );
        let job = sent.header("Job-UUID").unwrap().to_owned();
        assert_eq!(
            sent.text(),
            esl::bgapi(sent.line.strip_prefix("bgapi ").unwrap(), Some(&job)).unwrap()
        );
        esl.send(&substitute(
            &plain.frames(2),
            "6fd6aee1-d4ef-463d-8fec-349f870fd5aa",
            &job,
        ))
        .await;
    });
    originated.unwrap();

    let mut target_fs = Peer::connect(bed.switch.outbound_address()).await;
    let nolinger_frames: Vec<Exchange> = nolinger
        .exchanges
        .iter()
        .map(|e| Exchange {
            command: e.command.clone(),
            frames: substitute(&e.frames, NOLINGER_LEG, TARGET),
        })
        .collect();
    let connect_reply = String::from_utf8(nolinger_frames[0].frames[0].clone())
        .unwrap()
        .replace(
            "Content-Type: command/reply\n",
            "variable_ivm_origin: m1-t1\nContent-Type: command/reply\n",
        )
        .into_bytes();
    let target_capture = Capture {
        preamble: Vec::new(),
        exchanges: nolinger_frames.clone(),
    };
    outbound_handshake(&mut target_fs, &target_capture, connect_reply).await;
    target_fs
        .send(&without_replies(nolinger_frames[2].frames.clone()))
        .await;
    let target = next(&mut bed.events, "Answered", |e| match e {
        SwitchEvent::Answered { origin: o, call } if *o == origin => Some(call.clone()),
        SwitchEvent::OriginateFailed { .. } => panic!("{e:?}"),
        _ => None,
    })
    .await;
    assert_eq!(target.0, TARGET);

    // 5. play the message from an offset, then continue exactly from
    // playback_last_offset_pos.
    let (played, ()) = tokio::join!(bed.switch.play(&target, ramp(12000)), async {
        expect_execute(&mut target_fs, "set", "playback_terminators=none").await;
        let sent = target_fs.command().await;
        same_execute_as_captured(&sent, &nolinger.exchanges[4].command);
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        target_fs
            .send(&substitute(
                &nolinger_frames[4].frames,
                "03d9a93a-99f8-4c2e-a366-db0256f7160d",
                &uuid,
            ))
            .await;
    });
    played.unwrap();
    let reached = next(
        &mut bed.events,
        "PlaybackFinished on the target",
        |e| match e {
            SwitchEvent::PlaybackFinished {
                call,
                stopped_at_sample,
                ..
            } if *call == target => Some(*stopped_at_sample),
            _ => None,
        },
    )
    .await;
    assert_eq!(reached, 24000);
    let target_stop = nolinger_frames[4].frames[3].clone();
    let target_complete = nolinger_frames[4].frames[4].clone();
    assert!(contains(&target_stop, "PLAYBACK_STOP"));
    let (continued, ()) = tokio::join!(bed.switch.play(&target, ramp(reached)), async {
        // Terminators unchanged: only the playback is sent.
        let sent = target_fs.command().await;
        let uuid = sent.header("Event-UUID").unwrap().to_owned();
        assert_eq!(
            sent.text(),
            expected_execute(
                "playback",
                Some("/var/spool/ivmfx/ramp.wav@@24000"),
                Some(&uuid)
            )
        );
        target_fs.send(&[ok_reply()]).await;
        target_fs
            .send(&[
                edit_event(&target_stop, &[("variable_playback_samples", "0")]),
                edit_event(&target_complete, &[("Application-UUID", &uuid)]),
            ])
            .await;
    });
    continued.unwrap();
    let again = next(&mut bed.events, "second PlaybackFinished", |e| match e {
        SwitchEvent::PlaybackFinished {
            call,
            stopped_at_sample,
            ..
        } if *call == target => Some(*stopped_at_sample),
        _ => None,
    })
    .await;
    assert_eq!(again, 24000);

    // 6. stop the recording at once over the inbound connection (the
    // captured `uuid_record ... stop`); RECORD_STOP on the caller's socket.
    let (stopped, ()) = tokio::join!(bed.switch.stop_recording(&caller), async {
        let sent = esl.command().await;
        let captured = String::from_utf8(plain.exchanges[7].command.clone()).unwrap();
        assert_eq!(
            sent.text(),
            captured.replace("aaaaaaaa-0003-4000-8000-000000000001", CALLER)
        );
        esl.send(&plain.frames(7)).await;
    });
    stopped.unwrap();
    let record_stop = substitute(
        &[plain.frame_with("Event-Name: RECORD_STOP")],
        "aaaaaaaa-0003-4000-8000-000000000001",
        CALLER,
    );
    caller_fs.send(&record_stop).await;
    let finished = next(&mut bed.events, "RecordingFinished", |e| match e {
        SwitchEvent::RecordingFinished { call, path } if *call == caller => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(finished, recording);

    // 7. bridge
    let (bridged, ()) = tokio::join!(bed.switch.bridge(&caller, &target), async {
        let sent = esl.command().await;
        assert_eq!(
            sent.text(),
            esl::api(&format!("uuid_bridge {CALLER} {TARGET}")).unwrap()
        );
        esl.send(&[api_response(&format!("+OK {TARGET}\n"))]).await;
    });
    bridged.unwrap();

    // 8. hang up: `uuid_kill` (the captured one, with the cause), then both
    // legs' final events.
    let (hung_up, ()) = tokio::join!(bed.switch.hangup(&caller, HangupCause::Normal), async {
        let sent = esl.command().await;
        let captured = String::from_utf8(plain.exchanges[8].command.clone()).unwrap();
        assert_eq!(
            sent.text(),
            captured.replace(
                "aaaaaaaa-0003-4000-8000-000000000001\n",
                &format!("{CALLER} NORMAL_CLEARING\n")
            )
        );
        esl.send(&plain.frames(8)).await;
    });
    hung_up.unwrap();
    caller_fs.send(&basic.frames(5)[5..]).await;
    target_fs
        .send(&without_replies(nolinger_frames[5].frames.clone()))
        .await;
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let (call, cause) = next(&mut bed.events, "HungUp", |e| match e {
            SwitchEvent::HungUp { call, cause } => Some((call.clone(), *cause)),
            SwitchEvent::OriginateFailed { .. } => panic!("{e:?}"),
            _ => None,
        })
        .await;
        assert_eq!(cause, HangupCause::Normal);
        ended.push(call);
    }
    ended.sort();
    assert_eq!(ended, vec![target.clone(), caller.clone()]);
    // The caller's socket lingers until the adapter's exit.
    let exit = caller_fs.command().await;
    assert_eq!(exit.raw, basic.exchanges[6].command);
    caller_fs.send(&basic.frames(6)).await;
    drop(caller_fs);
    target_fs.expect_closed().await;
}

// ---------------------------------------------------------------------------
// Originate outcomes, messages, device state
// ---------------------------------------------------------------------------

async fn connected_bed() -> (Bed, Peer, Capture) {
    let plain = Capture::load("inbound-events-plain");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bed = bed(listener.local_addr().unwrap()).await;
    let esl = inbound_login(&listener, &plain).await;
    bed.switch.wait_connected(WAIT).await.unwrap();
    (bed, esl, plain)
}

fn originate_request(id: &str) -> OriginateRequest {
    OriginateRequest {
        id: OriginateId(id.into()),
        target: "1002".into(),
        caller_id_name: "IVM".into(),
        caller_id_number: "1001".into(),
        ring_timeout: Duration::from_secs(5),
    }
}

/// `BACKGROUND_JOB` with `-ERR USER_BUSY` (the captured event, its nested
/// body edited) becomes OriginateFailed { Busy }.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_originate_reports_its_cause() {
    let (mut bed, mut esl, plain) = connected_bed().await;
    let (originated, job) = tokio::join!(bed.switch.originate(originate_request("o1")), async {
        let sent = esl.command().await;
        let job = sent.header("Job-UUID").unwrap().to_owned();
        let reply = substitute(
            &plain.frames(2)[..1],
            "6fd6aee1-d4ef-463d-8fec-349f870fd5aa",
            &job,
        );
        esl.send(&reply).await;
        job
    });
    originated.unwrap();
    let job_event = String::from_utf8(plain.frame_with("Event-Name: BACKGROUND_JOB")).unwrap();
    let (head, _) = job_event
        .split_once("Content-Length: 41\n\n")
        .expect("the nested body");
    let head = head
        .split_once("\n\n")
        .unwrap()
        .1
        .replace("6fd6aee1-d4ef-463d-8fec-349f870fd5aa", &job);
    let body = format!("{head}Content-Length: 15\n\n-ERR USER_BUSY\n");
    let frame = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    );
    esl.send(&[frame.into_bytes()]).await;
    let (origin, cause) = next(&mut bed.events, "OriginateFailed", |e| match e {
        SwitchEvent::OriginateFailed { origin, cause } => Some((origin.clone(), *cause)),
        _ => None,
    })
    .await;
    assert_eq!(origin, OriginateId("o1".into()));
    assert_eq!(cause, HangupCause::Busy);
}

/// A leg that FreeSWITCH reports up (`+OK <uuid>`) but that hangs up before
/// its socket connects fails the originate with the hang-up's cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_originated_leg_that_never_connects_back_fails() {
    let (mut bed, mut esl, plain) = connected_bed().await;
    let (originated, ()) = tokio::join!(bed.switch.originate(originate_request("o2")), async {
        let sent = esl.command().await;
        let job = sent.header("Job-UUID").unwrap().to_owned();
        esl.send(&substitute(
            &plain.frames(2),
            "6fd6aee1-d4ef-463d-8fec-349f870fd5aa",
            &job,
        ))
        .await;
    });
    originated.unwrap();
    // uuid_kill's frames include the leg's CHANNEL_HANGUP_COMPLETE.
    esl.send(&without_replies(plain.frames(8))).await;
    let (origin, cause) = next(&mut bed.events, "OriginateFailed", |e| match e {
        SwitchEvent::OriginateFailed { origin, cause } => Some((origin.clone(), *cause)),
        _ => None,
    })
    .await;
    assert_eq!(origin, OriginateId("o2".into()));
    assert_eq!(cause, HangupCause::Normal);
}

/// A refused bgapi is an error of `originate` itself, nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bgapi_is_an_error() {
    let (bed, mut esl, _) = connected_bed().await;
    let (originated, ()) = tokio::join!(bed.switch.originate(originate_request("o3")), async {
        esl.command().await;
        esl.send(&[b"Content-Type: command/reply\nReply-Text: -ERR no reply\n\n".to_vec()])
            .await;
    });
    let err = originated.unwrap_err();
    assert!(err.to_string().contains("-ERR no reply"), "{err}");
}

/// Text messages go by the `chat` API (an `SMS::SEND_MESSAGE` event never
/// reached a phone on a real 1.11.1), the lamp is a `sendevent`; device
/// state asks `sofia_contact` and knows registrations from events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lamp_and_device_state_use_the_inbound_connection() {
    let (mut bed, mut esl, _) = connected_bed().await;
    let ok = b"Content-Type: command/reply\nReply-Text: +OK 1a2b\n\n".to_vec();
    let (sent_text, ()) = tokio::join!(
        bed.switch
            .send_text("1002", "Alice", "new message\nfrom 1001"),
        async {
            let sent = esl.command().await;
            assert_eq!(
                sent.text(),
                "api chat sip|ivm@192.0.2.2|1002@192.0.2.2|new message from 1001|text/plain\n\n"
            );
            esl.send(&[api_response("Sent")]).await;
        }
    );
    sent_text.unwrap();
    let (lamp, ()) = tokio::join!(bed.switch.set_message_waiting("1002", 2, 1), async {
        let sent = esl.command().await;
        assert_eq!(
            sent.text(),
            "sendevent MESSAGE_WAITING\nMWI-Messages-Waiting: yes\n\
             MWI-Message-Account: sip:1002@192.0.2.2\nMWI-Voice-Message: 2/1 (0/0)\n\n"
        );
        esl.send(std::slice::from_ref(&ok)).await;
    });
    lamp.unwrap();
    let (state, ()) = tokio::join!(bed.switch.device_state("1002"), async {
        let sent = esl.command().await;
        assert_eq!(sent.text(), "api sofia_contact */1002@192.0.2.2\n\n");
        esl.send(&[api_response("error/user_not_registered")]).await;
    });
    assert_eq!(state.unwrap(), ivm::switch::DeviceState::Unavailable);
    // A registration event changes the state and is reported.
    let register = "Event-Name: CUSTOM\nEvent-Subclass: sofia%3A%3Aregister\n\
                    from-user: 1002\nfrom-host: 192.0.2.2\n\n";
    esl.send(&[format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{register}",
        register.len()
    )
    .into_bytes()])
        .await;
    let (endpoint, state) = next(&mut bed.events, "DeviceStateChanged", |e| match e {
        SwitchEvent::DeviceStateChanged { endpoint, state } => Some((endpoint.clone(), *state)),
        _ => None,
    })
    .await;
    assert_eq!(
        (endpoint.as_str(), state),
        ("1002", ivm::switch::DeviceState::Idle)
    );
    assert!(bed.switch.send_text("1002 x", "a", "b").await.is_err());
}

// ---------------------------------------------------------------------------
// Reconnection and login failures
// ---------------------------------------------------------------------------

/// The inbound client reconnects after FreeSWITCH closes: Disconnected,
/// then Reconnected, and commands work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_client_reconnects_after_the_peer_closes() {
    let plain = Capture::load("inbound-events-plain");
    let auth_ok = Capture::load("inbound-auth-ok");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut bed = bed(listener.local_addr().unwrap()).await;
    let esl = inbound_login(&listener, &plain).await;
    next(&mut bed.events, "Reconnected (first connection)", |e| {
        matches!(e, SwitchEvent::Reconnected).then_some(())
    })
    .await;
    // FreeSWITCH goes away (e.g. restarts).
    drop(esl);
    next(&mut bed.events, "Disconnected", |e| {
        matches!(e, SwitchEvent::Disconnected).then_some(())
    })
    .await;
    let err = bed.switch.device_state("1002").await.unwrap_err();
    assert!(matches!(err, SwitchError::NotConnected(..)), "{err}");
    let mut esl = inbound_login(&listener, &plain).await;
    next(&mut bed.events, "Reconnected", |e| {
        matches!(e, SwitchEvent::Reconnected).then_some(())
    })
    .await;
    // An api command after the reconnection: the captured `api status`.
    let (status, ()) = tokio::join!(bed.switch.inbound().api("status"), async {
        let sent = esl.command().await;
        assert_eq!(sent.raw, auth_ok.exchanges[1].command);
        esl.send(&auth_ok.frames(1)).await;
    });
    assert!(status.unwrap().body.starts_with("UP "));
}

/// The adapter's keepalive (its default): a FreeSWITCH that keeps the
/// socket open but goes silent after the subscription is asked `api status`
/// (byte for byte the captured command) and, not answering, is replaced by
/// a new connection within 2 s of its last frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_event_socket_is_asked_status_then_replaced_within_two_seconds() {
    let plain = Capture::load("inbound-events-plain");
    let auth_ok = Capture::load("inbound-auth-ok");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut bed = bed_with(
        listener.local_addr().unwrap(),
        FreeswitchSwitchOptions {
            keepalive: FreeswitchSwitchOptions::default().keepalive,
            ..options()
        },
    )
    .await;
    let mut esl = inbound_login(&listener, &plain).await;
    let silent_since = tokio::time::Instant::now();
    let keepalive = esl.command().await;
    assert_eq!(keepalive.raw, auth_ok.exchanges[1].command, "api status");
    // No answer: the adapter gives up on this connection and logs in again.
    let _second = inbound_login(&listener, &plain).await;
    let took = silent_since.elapsed();
    assert!(took < Duration::from_secs(2), "reconnected after {took:?}");
    next(&mut bed.events, "Disconnected", |e| {
        matches!(e, SwitchEvent::Disconnected).then_some(())
    })
    .await;
    bed.switch.wait_connected(WAIT).await.unwrap();
    drop(esl);
}

/// `inbound-auth-bad`: the refusal is reported with what to fix, and
/// retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_says_what_to_fix() {
    let bad = Capture::load("inbound-auth-bad");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bed = bed(listener.local_addr().unwrap()).await;
    for _ in 0..2 {
        let mut esl = Peer::accept(&listener).await;
        esl.send(&bad.preamble).await;
        let auth = esl.command().await;
        // The adapter's password, not the capture's wrong one.
        assert_eq!(auth.raw, b"auth ClueCon\n\n");
        esl.send(&bad.frames(0)).await;
        drop(esl);
    }
    let err = bed.switch.wait_connected(WAIT).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("-ERR invalid"), "{text}");
    assert!(text.contains("esl_password"), "{text}");
}

/// An event socket ACL that refuses us (`text/rude-rejection`) is reported
/// as an ACL problem, not as a password or protocol problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_rejection_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bed = bed(listener.local_addr().unwrap()).await;
    let mut esl = Peer::accept(&listener).await;
    let body = "Access Denied, go away.\n";
    esl.send(&[format!(
        "Content-Type: text/rude-rejection\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()])
        .await;
    drop(esl);
    let mut state = bed.switch.inbound().state();
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let ivm::switch::freeswitch::inbound::InboundState::Disconnected(reason) =
                &*state.borrow_and_update()
            {
                return reason.clone();
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("a disconnected state with the reason");
    assert!(reason.contains("ACL"), "{reason}");
    assert!(reason.contains("apply-inbound-acl"), "{reason}");
}

// ---------------------------------------------------------------------------
// Malformed and truncated input
// ---------------------------------------------------------------------------

async fn handshake_with(reply: Vec<u8>, close: bool) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut fs = Peer::connect(address).await;
        let _connect = fs.command().await;
        let _ = fs.stream.write_all(&reply).await;
        if close {
            drop(fs);
        } else {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    let (stream, peer_address) = listener.accept().await.unwrap();
    let config = OutboundConfig {
        handshake_timeout: Duration::from_millis(300),
        ..OutboundConfig::default()
    };
    let result = outbound::handshake(stream, peer_address, &config)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    let _ = peer.await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_fail_with_a_clear_error() {
    let basic = Capture::load("outbound-basic");
    let connect_reply = basic.exchanges[0].frames[0].clone();
    // Truncated anywhere: "in the middle of a message".
    for cut in [1, 100, connect_reply.len() / 2, connect_reply.len() - 1] {
        let err = handshake_with(connect_reply[..cut].to_vec(), true)
            .await
            .unwrap_err();
        assert!(
            err.contains("in the middle of a message"),
            "cut {cut}: {err}"
        );
    }
    // Not UTF-8 in the header block.
    let err = handshake_with(b"Content-Type: command/\xff\n\n".to_vec(), true)
        .await
        .unwrap_err();
    assert!(err.contains("not valid utf-8"), "{err}");
    // A body length no one should buffer.
    let err = handshake_with(
        b"Content-Type: api/response\nContent-Length: 99999999999\n\n".to_vec(),
        false,
    )
    .await
    .unwrap_err();
    assert!(err.contains("exceeds"), "{err}");
    // A reply without channel data: not the socket application.
    let err = handshake_with(ok_reply(), false).await.unwrap_err();
    assert!(err.contains("without channel data"), "{err}");
    // Silence: a timeout, not a hang.
    let err = handshake_with(Vec::new(), false).await.unwrap_err();
    assert!(err.contains("within 300ms"), "{err}");
    // Closed at once.
    let err = handshake_with(Vec::new(), true).await.unwrap_err();
    assert!(err.contains("closed the event socket"), "{err}");
}

/// Garbage in the middle of a call ends the call cleanly: the engine hears
/// HungUp, nothing panics, other calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_during_a_call_ends_it_cleanly() {
    let basic = Capture::load("outbound-basic");
    let mut bed = bed(closed_port()).await;
    let mut fs = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut fs, &basic, basic.exchanges[0].frames[0].clone()).await;
    let call = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    // The answer is accepted (the adapter does not wait for it to
    // complete), then garbage arrives.
    let (answered, ()) = tokio::join!(bed.switch.answer(&call), async {
        let _ = fs.command().await;
        fs.send(&[ok_reply()]).await;
    });
    answered.unwrap();
    // Half an event, then a header line without a colon: fatal.
    fs.send(&[b"Content-Length: 10\nContent-Type: text/event-plain\nno colon\n\n".to_vec()])
        .await;
    let cause = next(&mut bed.events, "HungUp", |e| match e {
        SwitchEvent::HungUp { call: c, cause } if *c == call => Some(*cause),
        _ => None,
    })
    .await;
    assert_eq!(cause, HangupCause::Normal);
    assert!(
        bed.switch.answer(&call).await.is_err(),
        "nothing more can be done on the call"
    );
    fs.expect_closed().await;
    // A malformed event body alone is skipped; the session goes on.
    let mut fs = Peer::connect(bed.switch.outbound_address()).await;
    outbound_handshake(&mut fs, &basic, basic.exchanges[0].frames[0].clone()).await;
    let call = next(&mut bed.events, "IncomingCall", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    fs.send(&[b"Content-Length: 5\nContent-Type: text/event-json\n\n{bad}".to_vec()])
        .await;
    let dtmf = basic.frame_with("Event-Name: DTMF");
    fs.send(&[dtmf]).await;
    let digit = next(&mut bed.events, "Dtmf after a bad frame", |e| match e {
        SwitchEvent::Dtmf { call: c, digit } if *c == call => Some(*digit),
        _ => None,
    })
    .await;
    assert_eq!(digit, '5');
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the peer answers to `connect`, the handshake ends with a
    /// session or an error, never a panic or a hang.
    #[test]
    fn any_reply_to_connect_ends_the_handshake(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        close in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), handshake_with(bytes, close)).await
        });
        prop_assert!(outcome.is_ok(), "the handshake hung");
    }

    /// Real captures cut at any point and followed by noise never make the
    /// connection task panic.
    #[test]
    fn truncated_captures_then_noise_never_panic(
        cut in 0usize..43007,
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let bytes = data_file("outbound-basic.from-fs.bin");
        let mut reply = bytes[..cut.min(bytes.len())].to_vec();
        reply.extend_from_slice(&noise);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), handshake_with(reply, true)).await
        });
        prop_assert!(outcome.is_ok(), "the handshake hung");
    }
}

/// Every captured session splits into commands the way the peer reads them
/// (the harness itself is checked against the captures).
#[test]
fn captured_commands_parse_like_the_adapter_s() {
    for name in [
        "inbound-auth-ok",
        "inbound-events-plain",
        "inbound-filter-and-sendmsg",
        "outbound-basic",
        "outbound-nolinger",
        "outbound-linger-timeout",
    ] {
        let capture = Capture::load(name);
        let commands = parse_all(&data_file(&format!("{name}.to-fs.txt")));
        assert_eq!(commands.len(), capture.exchanges.len(), "{name}");
    }
    let plain = parse_all(&data_file("inbound-filter-and-sendmsg.to-fs.txt"));
    let playback = plain
        .iter()
        .find(|c| c.header("execute-app-name") == Some("playback"))
        .unwrap();
    // The capture's own sendmsg is what the codec builds.
    assert_eq!(
        playback.text(),
        esl::sendmsg(
            Some("aaaaaaaa-0006-4000-8000-000000000001"),
            &SendMsg::Execute(
                Execute::new("playback")
                    .arg("/var/spool/ivmfx/ramp.wav@@16000")
                    .event_lock(true)
                    .event_uuid("eeeeeeee-0006-4000-8000-00000000e001")
            )
        )
        .unwrap()
    );
}
