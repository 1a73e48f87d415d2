//! The AMI codec against real Asterisk 22 transcripts (`tests/data/ami/`),
//! and the AMI client against a scripted fake Asterisk on loopback.
//!
//! Transcript tests here check the captures' documentation: every capture
//! decodes to the frames its `.md` lists, and our requests encode as the
//! transcripts sent them. The decoder's full output (whole, in pieces,
//! truncated, malformed input) is checked by the one codec harness,
//! `tests/codec_transcripts.rs`. Client tests wait on the connection watch
//! channel, on events and on the fake peer, never on bare sleeps.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ivm::proto::ami::{AmiAction, AmiError, AmiFrame, AmiMessage, decode_all, encode};
use ivm::switch::asterisk::ami::{
    AmiClient, AmiClientError, AmiClientOptions, AmiConnection, AmiResponse,
};
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

// ---------------------------------------------------------------------------
// Transcripts

/// Captures this file documents itself; others in the directory are checked
/// the same way when they carry a `frames` block.
const OWN_CAPTURES: &[&str] = &[
    "login-ok",
    "login-failed",
    "ping",
    "originate",
    "originate-failed",
    "dtmf",
    "core-show-channels",
    "device-state",
    "command",
    "shutdown",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ami")
}

/// (name, bytes) of every `*.from-asterisk.bin`, sorted by name.
fn captures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(data_dir()).expect("tests/data/ami exists") {
        let path = entry.expect("readable directory entry").path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".from-asterisk.bin"))
        else {
            continue;
        };
        let bytes = fs::read(&path).expect("readable capture");
        out.push((name.to_owned(), bytes));
    }
    out.sort();
    assert!(
        OWN_CAPTURES
            .iter()
            .all(|own| out.iter().any(|(name, _)| name == own)),
        "missing captures in {:?}",
        data_dir()
    );
    out
}

fn decode_whole(bytes: &[u8]) -> Vec<AmiFrame> {
    let (frames, left) = decode_all(bytes);
    assert_eq!(left, 0, "capture does not end on a line boundary");
    frames
        .into_iter()
        .map(|frame| frame.expect("capture decodes without error"))
        .collect()
}

/// The ```frames block of a capture's `.md`, if it has one.
fn frames_spec(name: &str) -> Option<Vec<String>> {
    let md = fs::read_to_string(data_dir().join(format!("{name}.md"))).ok()?;
    let start = md.find("```frames\n")? + "```frames\n".len();
    let end = start + md[start..].find("```")?;
    Some(
        md[start..end]
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Splits on spaces; `"..."` keeps spaces (no escapes needed in our specs).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(current);
    }
    out
}

fn check_frame(spec: &str, frame: &AmiFrame) -> Result<(), String> {
    let tokens = tokens(spec);
    let (kind, name) = match tokens.as_slice() {
        [kind, name, ..] => (kind.as_str(), name.as_str()),
        _ => return Err(format!("bad spec line {spec:?}")),
    };
    let message = match (kind, frame) {
        ("banner", AmiFrame::Banner(version)) if version == name => return Ok(()),
        ("response", AmiFrame::Response(message)) | ("event", AmiFrame::Event(message)) => message,
        _ => return Err(format!("{spec:?} does not match {frame:?}")),
    };
    let first = message.fields().next().map(|(_, value)| value);
    if first != Some(name) {
        return Err(format!("{spec:?}: first field is {first:?}"));
    }
    let mut expected: Vec<(String, Vec<String>)> = Vec::new();
    for token in &tokens[2..] {
        if let Some(count) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let count: usize = count.parse().map_err(|_| format!("bad count {token}"))?;
            if message.len() != count {
                return Err(format!("{spec:?}: {} fields in {message:?}", message.len()));
            }
            continue;
        }
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("bad token {token:?}"))?;
        match expected.iter_mut().find(|(k, _)| k == key) {
            Some((_, values)) => values.push(value.to_owned()),
            None => expected.push((key.to_owned(), vec![value.to_owned()])),
        }
    }
    for (key, values) in expected {
        let actual: Vec<&str> = if values.len() == 1 {
            message.get(&key).into_iter().collect()
        } else {
            message.get_all(&key).collect()
        };
        if actual != values {
            return Err(format!("{spec:?}: {key} is {actual:?}"));
        }
    }
    Ok(())
}

#[test]
fn every_capture_decodes_to_its_documented_frames() {
    let mut documented = 0;
    for (name, bytes) in captures() {
        let frames = decode_whole(&bytes);
        assert!(
            matches!(frames.first(), Some(AmiFrame::Banner(_))),
            "{name}: starts with the banner"
        );
        let Some(spec) = frames_spec(&name) else {
            assert!(
                !OWN_CAPTURES.contains(&name.as_str()),
                "{name}.md has no frames block"
            );
            continue;
        };
        documented += 1;
        let spec_frames: Vec<&String> = spec.iter().filter(|line| *line != "eof").collect();
        assert_eq!(
            spec_frames.len(),
            frames.len(),
            "{name}: frame count; decoded {frames:#?}"
        );
        for (line, frame) in spec_frames.iter().zip(&frames) {
            if let Err(problem) = check_frame(line, frame) {
                panic!("{name}: {problem}");
            }
        }
    }
    assert!(documented >= OWN_CAPTURES.len());
}

#[test]
fn our_requests_encode_exactly_as_the_transcripts_sent_them() {
    let mut checked = 0;
    for own in OWN_CAPTURES {
        let sent = fs::read_to_string(data_dir().join(format!("{own}.to-asterisk.txt")))
            .expect("readable transcript");
        for block in sent.split_terminator("\r\n\r\n") {
            let mut lines = block.split("\r\n").map(|line| {
                line.split_once(": ")
                    .unwrap_or_else(|| panic!("{own}: bad line {line:?}"))
            });
            let (Some(("Action", name)), Some(("ActionID", action_id))) =
                (lines.next(), lines.next())
            else {
                panic!("{own}: block does not start with Action, ActionID: {block:?}");
            };
            let mut action = AmiAction::new(name);
            for (key, value) in lines {
                action.push(key, value);
            }
            let encoded = encode(&action, action_id).expect("encodes");
            assert_eq!(
                String::from_utf8_lossy(&encoded),
                format!("{block}\r\n\r\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn capture_facts_the_client_relies_on() {
    let all = captures();
    let frames_of =
        |name: &str| decode_whole(&all.iter().find(|(n, _)| n == name).expect("capture").1);
    // FullyBooted comes after the login response, and only then.
    let login = frames_of("login-ok");
    assert!(
        matches!(&login[1], AmiFrame::Response(r) if r.is("Message", "Authentication accepted"))
    );
    assert!(matches!(&login[2], AmiFrame::Event(e) if e.is("Event", "FullyBooted")));
    // OriginateResponse is an event with its own Response field and our ActionID.
    let originate = frames_of("originate");
    let origin = originate
        .iter()
        .find_map(|f| match f {
            AmiFrame::Event(e) if e.is("Event", "OriginateResponse") => Some(e),
            _ => None,
        })
        .expect("OriginateResponse");
    assert_eq!(origin.response(), Some("Success"));
    assert_eq!(origin.action_id(), Some("orig-1"));
    // Every list item carries the list's ActionID.
    let list = frames_of("core-show-channels");
    let items: Vec<&AmiMessage> = list
        .iter()
        .filter_map(|f| match f {
            AmiFrame::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(items.iter().all(|e| e.action_id() == Some("list-1")));
    assert!(items.last().is_some_and(|e| e.is("EventList", "Complete")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoded_values_never_split_into_extra_lines(
        key in "X-[A-Za-z0-9-]{0,20}",
        value in any::<String>(),
    ) {
        let action = AmiAction::new("Originate").field(key.as_str(), value.as_str());
        if let Ok(bytes) = encode(&action, "ivm-1") {
            let text = String::from_utf8(bytes).expect("utf-8 in, utf-8 out");
            // Action, ActionID, the field, and the blank line: nothing else.
            prop_assert_eq!(text.matches('\n').count(), 4);
            prop_assert_eq!(text.matches('\r').count(), 4);
        } else {
            prop_assert!(value.chars().any(char::is_control) || key.len() + value.len() + 4 > 1024);
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted fake Asterisk

const WAIT: Duration = Duration::from_secs(5);

fn options(address: SocketAddr) -> AmiClientOptions {
    let mut options = AmiClientOptions::new(address, "ivm", "s3cret");
    options.request_timeout = Duration::from_secs(3);
    options.connect_timeout = Duration::from_secs(3);
    options.fully_booted_timeout = Duration::from_secs(3);
    options.backoff_min = Duration::from_millis(20);
    options.backoff_max = Duration::from_millis(200);
    options
}

struct FakeAsterisk {
    listener: TcpListener,
}

impl FakeAsterisk {
    async fn bind() -> Self {
        FakeAsterisk {
            listener: TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback"),
        }
    }

    fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("the client connects")
            .expect("accept");
        Peer::new(stream)
    }

    /// Accepts and logs the client in; FullyBooted follows the response.
    async fn accept_logged_in(&self) -> Peer {
        let mut peer = self.accept().await;
        peer.login_ok().await;
        peer
    }
}

struct Peer {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Peer {
            reader: BufReader::new(read),
            writer: write,
        }
    }

    async fn send(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .await
            .expect("write to client");
    }

    /// The next action the client sent; `None` on EOF.
    async fn read_action(&mut self) -> Option<AmiMessage> {
        let mut action = AmiMessage::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("the client sends something")
                .expect("read from client");
            if n == 0 {
                assert!(action.is_empty(), "EOF in the middle of an action");
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                return Some(action);
            }
            let (key, value) = line.split_once(": ").expect("Key: Value");
            action.push(key, value);
        }
    }

    async fn expect_action(&mut self, name: &str) -> AmiMessage {
        let action = self.read_action().await.expect("an action, not EOF");
        assert_eq!(action.get("Action"), Some(name), "{action:?}");
        assert!(action.action_id().is_some(), "{action:?}");
        action
    }

    async fn login_ok(&mut self) -> String {
        self.send("Asterisk Call Manager/11.0.0\r\n").await;
        let login = self.expect_action("Login").await;
        assert_eq!(login.get("Username"), Some("ivm"));
        assert_eq!(login.get("Secret"), Some("s3cret"));
        let id = login.action_id().unwrap_or_default().to_owned();
        self.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n\
             Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
        ))
        .await;
        id
    }

    async fn expect_eof(&mut self) {
        let mut rest = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("the client closes")
                .expect("read");
            if n == 0 {
                return;
            }
            rest.push_str(&line);
            assert!(rest.len() < 4096, "client keeps talking: {rest:?}");
        }
    }
}

async fn wait_for(
    connection: &mut watch::Receiver<AmiConnection>,
    what: &str,
    mut wanted: impl FnMut(&AmiConnection) -> bool,
) -> AmiConnection {
    tokio::time::timeout(WAIT, connection.wait_for(|state| wanted(state)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .map(|state| state.clone())
        .expect("the client task is alive")
}

async fn next_event(events: &mut broadcast::Receiver<AmiMessage>) -> AmiMessage {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event arrives")
        .expect("no lag, not closed")
}

fn response_with(response: &AmiResponse, key: &str) -> Option<String> {
    response.response.get(key).map(str::to_owned)
}

#[tokio::test]
async fn logs_in_and_is_connected_only_after_fully_booted() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut events = client.events();
    let mut peer = fake.accept().await;
    peer.send("Asterisk Call Manager/11.0.0\r\n").await;
    let login = peer.expect_action("Login").await;
    assert_eq!(login.get("Secret"), Some("s3cret"));
    assert_eq!(
        login.get("Events"),
        None,
        "default: the user's read classes"
    );
    let id = login.action_id().unwrap_or_default().to_owned();
    peer.send(&format!(
        "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n\
         Event: Reload\r\nModule: manager\r\n\r\n"
    ))
    .await;
    // Seen through the event stream: the login was answered, no FullyBooted yet.
    assert_eq!(next_event(&mut events).await.event_name(), Some("Reload"));
    assert_eq!(*client.connection().borrow(), AmiConnection::Connecting);
    assert!(matches!(
        client.send(AmiAction::new("Ping")).await,
        Err(AmiClientError::NotConnected { .. })
    ));
    peer.send("Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
        .await;
    assert_eq!(client.wait_connected(WAIT).await, Ok("11.0.0".to_owned()));
    assert_eq!(
        next_event(&mut events).await.event_name(),
        Some("FullyBooted")
    );
}

#[tokio::test]
async fn fully_booted_before_the_login_response_also_counts() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut peer = fake.accept().await;
    peer.send("Asterisk Call Manager/2.10.0\r\n").await;
    let id = peer
        .expect_action("Login")
        .await
        .action_id()
        .unwrap_or_default()
        .to_owned();
    peer.send(&format!(
        "Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n\
         Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
    ))
    .await;
    assert_eq!(client.wait_connected(WAIT).await, Ok("2.10.0".to_owned()));
}

#[tokio::test]
async fn correlates_responses_by_action_id_among_interleaved_events() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut events = client.events();
    let mut peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");
    assert_eq!(
        next_event(&mut events).await.event_name(),
        Some("FullyBooted")
    );

    let ping = client.send(AmiAction::new("Ping"));
    let originate = client.send(
        AmiAction::new("Originate")
            .field("Channel", "Local/1002@phones")
            .field("Async", "true"),
    );
    let script = async {
        let first = peer.read_action().await.expect("action");
        let second = peer.read_action().await.expect("action");
        let (ping, originate) = if first.is("Action", "Ping") {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(originate.get("Channel"), Some("Local/1002@phones"));
        let ping_id = ping.action_id().unwrap_or_default().to_owned();
        let originate_id = originate.action_id().unwrap_or_default().to_owned();
        assert_ne!(ping_id, originate_id);
        // Answer in the other order, with events in between.
        peer.send(&format!(
            "Event: Newchannel\r\nChannel: Local/1002@phones-00000001;1\r\n\r\n\
             Response: Success\r\nActionID: {originate_id}\r\nMessage: Originate successfully queued\r\n\r\n\
             Event: Newstate\r\nChannel: Local/1002@phones-00000001;1\r\n\r\n\
             Event: OriginateResponse\r\nActionID: {originate_id}\r\nResponse: Success\r\nReason: 4\r\n\r\n\
             Response: Success\r\nActionID: {ping_id}\r\nPing: Pong\r\n\r\n"
        ))
        .await;
        originate_id
    };
    let (ping, originate, originate_id) = tokio::join!(ping, originate, script);
    let ping = ping.expect("ping answered");
    let originate = originate.expect("originate answered");
    assert_eq!(response_with(&ping, "Ping").as_deref(), Some("Pong"));
    assert_eq!(originate.message(), Some("Originate successfully queued"));
    assert_eq!(originate.action_id, originate_id);
    assert!(originate.events.is_empty());

    let names: Vec<String> = [
        next_event(&mut events).await,
        next_event(&mut events).await,
        next_event(&mut events).await,
    ]
    .iter()
    .map(|e| e.event_name().unwrap_or_default().to_owned())
    .collect();
    assert_eq!(names, ["Newchannel", "Newstate", "OriginateResponse"]);
}

#[tokio::test]
async fn collects_an_event_list_until_complete() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");
    let mut events = client.events();

    let list = client.send(AmiAction::new("CoreShowChannels"));
    let script = async {
        let id = peer
            .expect_action("CoreShowChannels")
            .await
            .action_id()
            .unwrap_or_default()
            .to_owned();
        peer.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n\
             Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/1001-00000001\r\n\r\n\
             Event: Hangup\r\nChannel: PJSIP/1003-00000007\r\nCause: 16\r\n\r\n\
             Event: CoreShowChannel\r\nActionID: someone-else\r\nChannel: PJSIP/9\r\n\r\n\
             Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/1002-00000002\r\n\r\n\
             Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
        ))
        .await;
    };
    let (list, ()) = tokio::join!(list, script);
    let list = list.expect("list answered");
    assert!(list.is_success());
    let channels: Vec<&str> = list
        .events
        .iter()
        .filter_map(|e| e.get("Channel"))
        .collect();
    assert_eq!(channels, ["PJSIP/1001-00000001", "PJSIP/1002-00000002"]);
    let complete = list.complete.expect("the closing event");
    assert_eq!(complete.get("ListItems"), Some("2"));
    // Every event, list items included, still reaches subscribers.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(
            next_event(&mut events)
                .await
                .event_name()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(
        seen,
        [
            "CoreShowChannel",
            "Hangup",
            "CoreShowChannel",
            "CoreShowChannel",
            "CoreShowChannelsComplete"
        ]
    );
}

#[tokio::test]
async fn reconnects_by_itself_after_the_peer_closes_and_fails_what_was_pending() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut connection = client.connection();
    let mut peer = fake.accept_logged_in().await;
    let first_login = client.wait_connected(WAIT).await.expect("connected");
    assert_eq!(first_login, "11.0.0");

    // A request in flight when the socket closes fails, saying so.
    let lost = client.send(AmiAction::new("Ping"));
    let script = async {
        peer.expect_action("Ping").await;
        drop(peer);
    };
    let (lost, ()) = tokio::join!(lost, script);
    assert!(
        matches!(&lost, Err(AmiClientError::ConnectionLost { action, .. }) if action == "Ping"),
        "{lost:?}"
    );
    let state = wait_for(&mut connection, "disconnected", |s| {
        !matches!(s, AmiConnection::Connected { .. })
    })
    .await;
    assert!(
        matches!(
            &state,
            AmiConnection::Disconnected(_) | AmiConnection::Connecting
        ),
        "{state:?}"
    );

    // The client comes back by itself; the same handle works again.
    let mut peer = fake.accept().await;
    peer.login_ok().await;
    wait_for(&mut connection, "reconnected", |s| {
        matches!(s, AmiConnection::Connected { .. })
    })
    .await;
    let ping = client.send(AmiAction::new("Ping"));
    let script = async {
        let id = peer
            .expect_action("Ping")
            .await
            .action_id()
            .unwrap_or_default()
            .to_owned();
        peer.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"
        ))
        .await;
    };
    let (ping, ()) = tokio::join!(ping, script);
    assert!(ping.expect("answered after reconnecting").is_success());
}

#[tokio::test]
async fn a_refused_login_is_a_clear_state_and_retries_back_off() {
    let fake = FakeAsterisk::bind().await;
    let mut opts = options(fake.address());
    opts.backoff_min = Duration::from_millis(100);
    opts.backoff_max = Duration::from_millis(400);
    let client = AmiClient::start_with(opts);
    let mut connection = client.connection();

    let mut attempts = Vec::new();
    for _ in 0..3 {
        let mut peer = fake.accept().await;
        attempts.push(Instant::now());
        peer.send("Asterisk Call Manager/11.0.0\r\n").await;
        let id = peer
            .expect_action("Login")
            .await
            .action_id()
            .unwrap_or_default()
            .to_owned();
        // Asterisk answers and hangs up (after a 1 s pause, skipped here).
        peer.send(&format!(
            "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
        ))
        .await;
        drop(peer);
        let state = wait_for(&mut connection, "login failed", |s| {
            matches!(s, AmiConnection::LoginFailed(_))
        })
        .await;
        assert_eq!(
            state,
            AmiConnection::LoginFailed("Authentication failed".into())
        );
        assert_eq!(
            client.wait_connected(WAIT).await,
            Err(AmiClientError::LoginFailed("Authentication failed".into()))
        );
    }
    // 100 ms, then 200 ms: a backoff, not a hot loop.
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");

    // Once the secret is right, it connects and the error state clears.
    let _peer = fake.accept_logged_in().await;
    let state = wait_for(&mut connection, "connected", |s| {
        matches!(s, AmiConnection::Connected { .. })
    })
    .await;
    assert_eq!(
        state,
        AmiConnection::Connected {
            version: "11.0.0".into()
        }
    );
}

#[tokio::test]
async fn an_unanswered_action_times_out_and_a_late_answer_is_ignored() {
    let fake = FakeAsterisk::bind().await;
    let mut opts = options(fake.address());
    opts.request_timeout = Duration::from_millis(300);
    let client = AmiClient::start_with(opts);
    let mut peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");

    let slow = client.send(AmiAction::new("Ping"));
    let script = async { peer.expect_action("Ping").await };
    let (slow, slow_action) = tokio::join!(slow, script);
    assert!(
        matches!(&slow, Err(AmiClientError::Timeout { action, .. }) if action == "Ping"),
        "{slow:?}"
    );
    let late_id = slow_action.action_id().unwrap_or_default().to_owned();

    let next = client.send(AmiAction::new("CoreStatus"));
    let script = async {
        let id = peer
            .expect_action("CoreStatus")
            .await
            .action_id()
            .unwrap_or_default()
            .to_owned();
        assert_ne!(id, late_id);
        peer.send(&format!(
            "Response: Success\r\nActionID: {late_id}\r\nPing: Pong\r\n\r\n\
             Response: Success\r\nActionID: {id}\r\nCoreCurrentCalls: 0\r\n\r\n"
        ))
        .await;
    };
    let (next, ()) = tokio::join!(next, script);
    let next = next.expect("answered");
    assert_eq!(
        response_with(&next, "CoreCurrentCalls").as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn not_connected_fails_fast_and_says_why() {
    // A port nobody listens on.
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("bound")
    };
    let client = AmiClient::start_with(options(address));
    let mut connection = client.connection();
    let state = wait_for(&mut connection, "a failed attempt", |s| {
        matches!(s, AmiConnection::Disconnected(_))
    })
    .await;
    assert!(state.to_string().contains("connect to"), "{state}");
    let started = Instant::now();
    let result = client.send(AmiAction::new("Ping")).await;
    assert!(
        matches!(result, Err(AmiClientError::NotConnected { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let waited = client.wait_connected(Duration::from_millis(100)).await;
    assert!(
        matches!(waited, Err(AmiClientError::NotConnected { .. })),
        "{waited:?}"
    );
}

#[tokio::test]
async fn bad_actions_are_refused_before_they_reach_the_wire() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let _peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");
    let injected = AmiAction::new("Originate").field("Channel", "PJSIP/1001\r\nAction: Command");
    assert!(matches!(
        client.send(injected).await,
        Err(AmiClientError::Codec(AmiError::InvalidValue { .. }))
    ));
}

#[tokio::test]
async fn shutdown_logs_off_and_ends_the_task() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");
    let other_handle = client.clone();
    client.shutdown().await;
    peer.expect_action("Logoff").await;
    peer.expect_eof().await;
    assert_eq!(
        *other_handle.connection().borrow(),
        AmiConnection::Disconnected("the ami client was shut down".into())
    );
    assert!(other_handle.send(AmiAction::new("Ping")).await.is_err());
}

#[tokio::test]
async fn dropping_the_last_handle_ends_the_task() {
    let fake = FakeAsterisk::bind().await;
    let client = AmiClient::start_with(options(fake.address()));
    let mut peer = fake.accept_logged_in().await;
    client.wait_connected(WAIT).await.expect("connected");
    let clone = client.clone();
    drop(client);
    // Still one handle: still served.
    let ping = clone.send(AmiAction::new("Ping"));
    let script = async {
        let id = peer
            .expect_action("Ping")
            .await
            .action_id()
            .unwrap_or_default()
            .to_owned();
        peer.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"
        ))
        .await;
    };
    let (ping, ()) = tokio::join!(ping, script);
    assert!(ping.expect("answered").is_success());
    drop(clone);
    peer.expect_action("Logoff").await;
    peer.expect_eof().await;
}

// ---------------------------------------------------------------------------
// The real Asterisk 22, from the testbed.

/// Boot, list, SIGTERM, restart: the client follows on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_asterisk_boot_restart_and_reconnect() {
    let spawned = Instant::now();
    let mut asterisk = tokio::task::block_in_place(|| {
        ivm::testbed::Asterisk::start(ivm::testbed::AsteriskOptions { agi_port: 9 })
    })
    .expect("start asterisk");
    let address: SocketAddr = asterisk.ami_address();
    let mut opts = AmiClientOptions::new(address, "ivm", "ivm");
    opts.backoff_max = Duration::from_millis(500);
    let client = AmiClient::start_with(opts);
    let mut events = client.events();
    let version = client
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connects to the real asterisk");
    eprintln!(
        "spawn -> Connected (FullyBooted): {:?}, AMI {version}",
        spawned.elapsed()
    );

    let ping = client.send(AmiAction::new("Ping")).await.expect("ping");
    assert_eq!(response_with(&ping, "Ping").as_deref(), Some("Pong"));
    let list = client
        .send(AmiAction::new("CoreShowChannels"))
        .await
        .expect("list");
    assert_eq!(
        list.complete
            .and_then(|c| c.get("ListItems").map(str::to_owned))
            .as_deref(),
        Some("0")
    );
    let refused = client
        .send(AmiAction::new("NoSuchThing"))
        .await
        .expect("answered");
    assert!(!refused.is_success());

    // A wrong secret: a clear state after Asterisk's 1 s penalty, no loop.
    let mut wrong = AmiClientOptions::new(address, "ivm", "wrong");
    wrong.backoff_min = Duration::from_secs(2);
    let wrong = AmiClient::start_with(wrong);
    let refused_at = Instant::now();
    let login = wrong.wait_connected(Duration::from_secs(10)).await;
    assert!(
        matches!(&login, Err(AmiClientError::LoginFailed(m)) if m == "Authentication failed"),
        "{login:?}"
    );
    eprintln!("wrong secret -> LoginFailed: {:?}", refused_at.elapsed());
    wrong.shutdown().await;

    let mut connection = client.connection();
    let stopping = Instant::now();
    tokio::task::block_in_place(|| asterisk.stop());
    let shutdown = loop {
        let event = next_event(&mut events).await;
        if event.is("Event", "Shutdown") {
            break event;
        }
    };
    assert_eq!(shutdown.get("Restart"), Some("False"));
    wait_for(&mut connection, "disconnected", |s| {
        matches!(s, AmiConnection::Disconnected(_))
    })
    .await;
    eprintln!("SIGTERM -> Disconnected: {:?}", stopping.elapsed());

    let restarted = Instant::now();
    tokio::task::block_in_place(|| asterisk.restart()).expect("restart asterisk");
    tokio::time::timeout(
        Duration::from_secs(30),
        connection.wait_for(|s| matches!(s, AmiConnection::Connected { .. })),
    )
    .await
    .expect("reconnects")
    .expect("task alive");
    eprintln!("respawn -> Connected again: {:?}", restarted.elapsed());
    let ping = client
        .send(AmiAction::new("Ping"))
        .await
        .expect("ping after restart");
    assert!(ping.is_success());
    client.shutdown().await;
}
