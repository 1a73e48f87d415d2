//! FastAGI above the decoder: the command encoder against the lines the
//! captures in `tests/data/agi/` sent, and the `serve` + `AgiSession` pair
//! against a fake Asterisk on a real loopback socket that replays the
//! captures. The decoder itself is tested from the same captures (whole, in
//! pieces, malformed) by the one codec harness, `tests/codec_transcripts.rs`.
//!
//! Each capture `NAME.from-asterisk.bin` has `NAME.frames`: what an
//! `AgiSession` must report from it, one frame per line (`#` starts a comment):
//!
//! ```text
//! env vars=22 channel="..." script_path="ivm" query=[("target", "1002")]
//! success result=0 data="timeout" endpos=24000   (data/endpos only if present)
//! hangup | dead-channel | invalid-command
//! usage lines=5 bytes=629                         (the text between 520- and 520)
//! other code=404 text="..."
//! ```
//! Strings are written as Rust's `{:?}` writes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ivm::proto::agi::{self, AgiCommand, AgiEnvironment, AgiError, AgiReply, MAX_LINE_LEN};
use ivm::switch::asterisk::agi::{AgiServerConfig, AgiSession, serve, serve_with};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

// ---------------------------------------------------------------------------
// Captures and their expected frames
// ---------------------------------------------------------------------------

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agi")
}

fn capture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(format!("{name}.from-asterisk.bin"))).unwrap()
}

fn sent_lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(data_dir().join(format!("{name}.to-asterisk.txt"))).unwrap();
    text.split_inclusive('\n')
        .map(|line| line.strip_suffix('\n').unwrap_or(line).to_owned())
        .collect()
}

fn expected_frames(name: &str) -> Vec<String> {
    let path = data_dir().join(format!("{name}.frames"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every capture needs its .frames)", path.display()));
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn render_env(env: &AgiEnvironment) -> String {
    format!(
        "env vars={} channel={:?} script_path={:?} query={:?}",
        env.len(),
        env.channel().unwrap_or(""),
        env.script_path(),
        env.query_pairs()
    )
}

fn render_reply(reply: &AgiReply) -> String {
    match reply {
        AgiReply::Success {
            result,
            data,
            endpos,
            raw,
        } => {
            assert!(raw.starts_with("200 result="), "raw {raw:?}");
            let mut s = format!("success result={result}");
            if let Some(data) = data {
                s.push_str(&format!(" data={data:?}"));
            }
            if let Some(endpos) = endpos {
                s.push_str(&format!(" endpos={endpos}"));
            }
            s
        }
        AgiReply::Hangup => "hangup".into(),
        AgiReply::DeadChannel => "dead-channel".into(),
        AgiReply::InvalidCommand => "invalid-command".into(),
        AgiReply::Usage(text) => format!(
            "usage lines={} bytes={}",
            text.split('\n').count(),
            text.len()
        ),
        AgiReply::Other { code, text } => format!("other code={code} text={text:?}"),
    }
}

// ---------------------------------------------------------------------------
// Commands as they were sent in the captures
// ---------------------------------------------------------------------------

#[test]
fn encoder_writes_the_captured_command_lines() {
    let run = "/tmp/ivm-agi-capture";
    let stream = |file: &str, digits: &str, offset| AgiCommand::StreamFile {
        file: file.into(),
        escape_digits: digits.into(),
        sample_offset: offset,
    };
    let typed: Vec<(&str, usize, AgiCommand)> = vec![
        ("session", 0, AgiCommand::Answer),
        ("session", 1, stream("beep", "", 800)),
        ("session", 2, stream(&format!("{run}/snd/short"), "", 4000)),
        ("session", 3, stream(&format!("{run}/snd/short"), "", 20000)),
        ("session", 4, stream("no-such-sound", "", 0)),
        (
            "session",
            5,
            AgiCommand::RecordFile {
                file: format!("{run}/rec/r1"),
                format: "sln".into(),
                escape_digits: "#".into(),
                timeout_ms: 3000,
                sample_offset: 0,
                beep: true,
                silence_seconds: Some(5),
            },
        ),
        (
            "session",
            6,
            AgiCommand::SetVariable {
                name: "IVMTEST".into(),
                value: "a (b) c) \"q\" \\ end".into(),
            },
        ),
        (
            "session",
            7,
            AgiCommand::GetVariable {
                name: "IVMTEST".into(),
            },
        ),
        (
            "session",
            8,
            AgiCommand::GetVariable {
                name: "IVM_UNSET".into(),
            },
        ),
        (
            "session",
            9,
            AgiCommand::GetFullVariable {
                expression: "${CALLERID(num)} ${EXTEN}".into(),
                channel: None,
            },
        ),
        ("session", 10, AgiCommand::ChannelStatus { channel: None }),
        (
            "session",
            11,
            AgiCommand::Verbose {
                message: "hello from the ivm capture".into(),
                level: 1,
            },
        ),
        (
            "session",
            12,
            AgiCommand::SayDigits {
                digits: "12".into(),
                escape_digits: String::new(),
            },
        ),
        ("session", 13, AgiCommand::SendText { text: "hi".into() }),
        (
            "session",
            14,
            AgiCommand::Exec {
                application: "Wait".into(),
                options: "0.1".into(),
            },
        ),
        (
            "session",
            15,
            AgiCommand::Exec {
                application: "NoSuchApp".into(),
                options: String::new(),
            },
        ),
        (
            "session",
            16,
            AgiCommand::ControlStreamFile {
                file: "beep".into(),
                escape_digits: String::new(),
                skip_ms: 3000,
                forward_digit: None,
                rewind_digit: None,
                pause_digit: None,
                offset_ms: 100,
            },
        ),
        (
            "session",
            19,
            AgiCommand::WaitForDigit { timeout_ms: 10000 },
        ),
        ("session", 20, AgiCommand::Answer),
        ("session", 22, stream("beep", "", 0)),
        ("idle-hangup", 1, stream("beep", "", 0)),
        ("digits", 2, stream("tt-monkeys", "#", 0)),
        ("digits", 3, AgiCommand::WaitForDigit { timeout_ms: -1 }),
    ];
    for (name, index, command) in typed {
        let line = agi::encode(&command).unwrap();
        assert_eq!(
            line.strip_suffix('\n'),
            Some(sent_lines(name)[index].as_str()),
            "{name} line {index}"
        );
    }
}

// ---------------------------------------------------------------------------
// serve + AgiSession against a fake Asterisk on loopback
// ---------------------------------------------------------------------------

const STEP: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A capture cut where a real Asterisk would write: the environment, then
/// per command every line up to and including its reply (a `HANGUP` that came
/// first rides along), then whatever came after the last reply.
struct Script {
    env: Vec<u8>,
    replies: Vec<Vec<u8>>,
    tail: Vec<u8>,
}

fn script(name: &str) -> Script {
    let bytes = capture_bytes(name);
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("environment ends")
        + 2;
    let mut replies = Vec::new();
    let mut unit = Vec::new();
    let mut block: Option<Vec<u8>> = None;
    for line in bytes[split..].split_inclusive(|b| *b == b'\n') {
        unit.extend_from_slice(line);
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(code) = &block {
            if text.starts_with(code) && text.get(3) == Some(&b' ') {
                block = None;
                replies.push(std::mem::take(&mut unit));
            }
        } else if text == b"HANGUP" {
        } else if text.get(3) == Some(&b'-') {
            block = Some(text[..3].to_vec());
        } else {
            replies.push(std::mem::take(&mut unit));
        }
    }
    Script {
        env: bytes[..split].to_vec(),
        replies,
        tail: unit,
    }
}

async fn start_server(
    config: AgiServerConfig,
) -> (
    std::net::SocketAddr,
    mpsc::Receiver<AgiSession>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve_with(listener, tx, stop_rx, config));
    (addr, rx, stop_tx, server)
}

/// Plays Asterisk's side of capture `name`: sends the environment in two
/// pieces, answers each expected command line with its recorded reply, sends
/// the tail, then waits for `ivm` to close.
async fn fake_asterisk(addr: std::net::SocketAddr, name: String) {
    let script = script(&name);
    let expected = sent_lines(&name);
    assert_eq!(
        script.replies.len(),
        expected.len(),
        "{name}: replies vs commands"
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    // Two writes, as Asterisk sent it; whether they arrive as two reads
    // does not matter here: every split is decoded alike by the codec
    // harness (tests/codec_transcripts.rs).
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let half = script.env.len() / 2;
    write.write_all(&script.env[..half]).await.unwrap();
    write.write_all(&script.env[half..]).await.unwrap();
    for (want, reply) in expected.iter().zip(&script.replies) {
        let mut line = String::new();
        within("a command", lines.read_line(&mut line))
            .await
            .unwrap();
        assert_eq!(line.strip_suffix('\n'), Some(want.as_str()), "{name}");
        write.write_all(reply).await.unwrap();
    }
    write.write_all(&script.tail).await.unwrap();
    let mut rest = Vec::new();
    within("ivm closing", lines.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "{name}: unexpected {rest:?}");
}

/// Frames as a session sees them: the first hang-up once, where it was
/// noticed (before the reply it preceded).
fn first_hangup_only(frames: Vec<String>) -> Vec<String> {
    let mut seen = false;
    frames
        .into_iter()
        .filter(|frame| {
            if frame == "hangup" {
                let first = !seen;
                seen = true;
                first
            } else {
                true
            }
        })
        .collect()
}

#[tokio::test]
async fn sessions_replay_captures_over_loopback() {
    let (addr, mut sessions, stop, server) = start_server(AgiServerConfig::default()).await;
    // `quirks` is excluded on purpose: it holds lines ivm refuses to send.
    for name in [
        "session",
        "idle-hangup",
        "digits",
        "usage",
        "call-basic",
        "record-hangup",
        "record-dtmf",
    ] {
        let peer = tokio::spawn(fake_asterisk(addr, name.to_owned()));
        let mut session = within("a session", sessions.recv()).await.unwrap();
        let mut got = vec![render_env(session.env())];
        let mut hung_up = false;
        for line in sent_lines(name) {
            let reply = within("a reply", session.command_line(&line))
                .await
                .unwrap_or_else(|e| panic!("{name}: {line}: {e}"));
            if session.hung_up() && !hung_up {
                hung_up = true;
                got.push("hangup".into());
            }
            got.push(render_reply(&reply));
        }
        let mut watch = session.hangup_watch();
        let tail_has_hangup = script(name).tail.starts_with(b"HANGUP");
        if tail_has_hangup {
            within("the final hangup", watch.wait_for(|h| *h))
                .await
                .unwrap();
            if !hung_up {
                got.push("hangup".into());
            }
        }
        assert_eq!(got, first_hangup_only(expected_frames(name)), "{name}");
        drop(session);
        within("the fake asterisk", peer).await.unwrap();
    }
    stop.send(true).unwrap();
    within("serve to stop", server).await.unwrap();
}

async fn connect_with_env(
    addr: std::net::SocketAddr,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(&script("idle-hangup").env).await.unwrap();
    (BufReader::new(read), write)
}

async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut line = String::new();
    within("a line", reader.read_line(&mut line)).await.unwrap();
    line
}

#[tokio::test]
async fn hangup_before_the_reply_then_511() {
    let (addr, mut sessions, _stop, _server) = start_server(AgiServerConfig::default()).await;
    let (mut from_ivm, mut to_ivm) = connect_with_env(addr).await;
    let mut session = within("a session", sessions.recv()).await.unwrap();
    assert_eq!(session.env().query("target"), Some("+15551234"));

    let answer = tokio::spawn(async move {
        let reply = session.command(&AgiCommand::Answer).await;
        (session, reply)
    });
    assert_eq!(read_line(&mut from_ivm).await, "ANSWER\n");
    to_ivm.write_all(b"200 result=0\n").await.unwrap();
    let (mut session, reply) = within("answer", answer).await.unwrap();
    assert!(matches!(reply, Ok(AgiReply::Success { result: 0, .. })));
    assert!(!session.hung_up());

    // The caller hangs up as the command goes out: HANGUP, which the session
    // notices while the command waits, then 511.
    let mut hangup = session.hangup_watch();
    let play = tokio::spawn(async move {
        let reply = session
            .command(&AgiCommand::StreamFile {
                file: "beep".into(),
                escape_digits: String::new(),
                sample_offset: 0,
            })
            .await;
        (session, reply)
    });
    assert_eq!(
        read_line(&mut from_ivm).await,
        "STREAM FILE \"beep\" \"\" 0\n"
    );
    to_ivm.write_all(b"HANGUP\n").await.unwrap();
    within("the hangup noticed mid-command", hangup.wait_for(|h| *h))
        .await
        .unwrap();
    to_ivm
        .write_all(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        .await
        .unwrap();
    let (session, reply) = within("stream file", play).await.unwrap();
    assert_eq!(reply.unwrap(), AgiReply::DeadChannel);
    assert!(session.hung_up());

    drop(session);
    let mut rest = Vec::new();
    within("close", from_ivm.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn hangup_while_idle_wakes_the_watch() {
    let (addr, mut sessions, _stop, _server) = start_server(AgiServerConfig::default()).await;
    let (mut from_ivm, mut to_ivm) = connect_with_env(addr).await;
    let session = within("a session", sessions.recv()).await.unwrap();
    let mut watch = session.hangup_watch();
    assert!(!*watch.borrow());
    to_ivm.write_all(b"HANGUP\n").await.unwrap();
    within("the watch", watch.wait_for(|h| *h)).await.unwrap();
    assert!(session.hung_up());
    drop(session);
    let mut rest = Vec::new();
    within("close", from_ivm.read_to_end(&mut rest))
        .await
        .unwrap();
}

#[tokio::test]
async fn peer_closing_wakes_the_watch_and_fails_commands() {
    let (addr, mut sessions, _stop, _server) = start_server(AgiServerConfig::default()).await;
    let (from_ivm, to_ivm) = connect_with_env(addr).await;
    let mut session = within("a session", sessions.recv()).await.unwrap();
    drop((from_ivm, to_ivm));
    within("the watch", session.hangup_watch().wait_for(|h| *h))
        .await
        .unwrap();
    let err = within("a command", session.command(&AgiCommand::Answer))
        .await
        .unwrap_err();
    assert!(matches!(err, AgiError::Closed | AgiError::Io(_)), "{err}");
}

async fn assert_dropped(mut stream: TcpStream) {
    let mut rest = Vec::new();
    // Closed by the server: EOF (or a reset if our bytes were unread).
    let _ = within("the server to close", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn garbage_and_silent_peers_are_dropped() {
    let config = AgiServerConfig {
        env_timeout: Duration::from_millis(200),
        ..AgiServerConfig::default()
    };
    let (addr, mut sessions, _stop, _server) = start_server(config).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
        &[b'a'; MAX_LINE_LEN + 10][..],
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        assert_dropped(stream).await;
    }
    // Says nothing: dropped after the environment timeout.
    let started = std::time::Instant::now();
    assert_dropped(TcpStream::connect(addr).await.unwrap()).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(sessions.try_recv().is_err(), "no session for bad peers");
}

#[tokio::test]
async fn session_cap_refuses_extra_connections() {
    let config = AgiServerConfig {
        max_sessions: 1,
        ..AgiServerConfig::default()
    };
    let (addr, mut sessions, _stop, _server) = start_server(config).await;
    let first = connect_with_env(addr).await;
    let session = within("a session", sessions.recv()).await.unwrap();

    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second.write_all(&script("idle-hangup").env).await;
    assert_dropped(second).await;

    drop(session);
    drop(first);
    // The permit is back once the session is gone.
    let _third = connect_with_env(addr).await;
    let session = within("another session", sessions.recv()).await.unwrap();
    assert_eq!(session.env().script_path(), "ivm");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, tx, stop_rx));
    // A session handed over: the server is in its accept loop.
    let _peer = connect_with_env(addr).await;
    let session = within("a session", rx.recv()).await.unwrap();
    drop(session);
    stop_tx.send(true).unwrap();
    within("serve to return", server).await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
