//! The Asterisk adapter as an attacker on the LAN meets it (issue 11), against
//! a real Asterisk 22 and real SIP phones: peers outside the allow list or
//! without the secret, forged channel names and origins, toll fraud through
//! `*77` + an external number, idle connections, and the files `ivm` leaves.

mod common;
#[path = "support/tmpfs.rs"]
mod tmpfs;

#[path = "support/events.rs"]
mod events;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use events::{call_event_so_far, next};
use ivm::config::AsteriskConfig;
use ivm::switch::asterisk::{AsteriskSwitch, AsteriskSwitchOptions};
use ivm::switch::peer::{DialPolicy, originate_id};
use ivm::switch::{CallId, OriginateRequest, Switch, SwitchError, SwitchEvent};
use ivm_testbed::{AGI_SECRET, AMI_SECRET, Asterisk, AsteriskOptions, Phone, free_tcp_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(10);

struct Bed {
    asterisk: Asterisk,
    switch: AsteriskSwitch,
    events: mpsc::UnboundedReceiver<SwitchEvent>,
    agi: SocketAddr,
    _shutdown: watch::Sender<bool>,
}

async fn bed_with(options: AsteriskSwitchOptions) -> Bed {
    let agi_port = free_tcp_port().expect("free port");
    let asterisk = tokio::task::block_in_place(|| Asterisk::start(AsteriskOptions { agi_port }))
        .expect("start asterisk");
    let agi = SocketAddr::from(([127, 0, 0, 1], agi_port));
    let config = AsteriskConfig {
        agi_listen: agi,
        ami_address: asterisk.ami_address(),
        ami_secret: AMI_SECRET.into(),
        agi_secret: AGI_SECRET.into(),
        agi_allow: vec!["127.0.0.1/32".into()],
        ..AsteriskConfig::default()
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let switch = AsteriskSwitch::start(config, options, shutdown_rx)
        .await
        .expect("start the adapter");
    let events = switch.events();
    switch.wait_connected(WAIT).await.expect("ami connects");
    Bed {
        asterisk,
        switch,
        events,
        agi,
        _shutdown: shutdown,
    }
}

async fn bed() -> Bed {
    bed_with(AsteriskSwitchOptions::default()).await
}

/// A FastAGI environment as Asterisk would send it.
fn env(script: &str, channel: &str, uniqueid: &str, secret: Option<&str>) -> Vec<u8> {
    let mut text = format!(
        "agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1/{script}\n\
         agi_channel: {channel}\nagi_uniqueid: {uniqueid}\nagi_callerid: 1001\n\
         agi_context: phones\nagi_extension: *771002\n"
    );
    if let Some(secret) = secret {
        text.push_str(&format!("agi_arg_1: {secret}\n"));
    }
    text.push('\n');
    text.into_bytes()
}

/// The server closes the connection without sending a byte.
async fn assert_closed_silently(mut stream: TcpStream, what: &str) {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await {
        Ok(Ok(_)) | Ok(Err(_)) => assert!(got.is_empty(), "{what}: ivm sent {got:?}"),
        Err(_) => panic!("{what}: the connection was not closed"),
    }
}

async fn fastagi_from(local: &str, agi: SocketAddr, bytes: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(local.parse().unwrap()).unwrap();
    let mut stream = socket.connect(agi).await.unwrap();
    // A refused peer may already be closed; what matters is what comes back.
    let _ = stream.write_all(bytes).await;
    stream
}

/// `(channel, uniqueid)` of the live channels, from Asterisk's own CLI.
fn live_channels(asterisk: &Asterisk) -> Vec<(String, String)> {
    let out = asterisk.cli("core show channels concise").unwrap();
    out.lines()
        .filter(|l| l.contains('!'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split('!').collect();
            Some((fields.first()?.to_string(), fields.last()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_address_or_the_secret_or_with_a_forged_channel_touch_nothing() {
    let mut bed = bed().await;
    // A plain call between two phones, not through ivm.
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    let mut bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();
    alice.dial("1002", &bed.asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    let channels = live_channels(&bed.asterisk);
    assert_eq!(channels.len(), 2, "{channels:?}");
    let (alice_channel, alice_uniqueid) = channels
        .iter()
        .find(|(c, _)| c.starts_with("PJSIP/1001-"))
        .cloned()
        .expect("alice's channel");

    let sent_before = bed.switch.ami().actions_sent();
    // From an address outside agi_allow (127.0.0.1/32), with the secret and
    // a real channel: only the address is wrong.
    let stream = fastagi_from(
        "127.0.0.2:0",
        bed.agi,
        &env("ivm", &alice_channel, &alice_uniqueid, Some(AGI_SECRET)),
    )
    .await;
    assert_closed_silently(stream, "a peer from 127.0.0.2").await;
    // From an allowed address, without the secret / with a wrong one.
    for secret in [None, Some("wrong-secret-wrong-secret"), Some("")] {
        let stream = fastagi_from(
            "127.0.0.1:0",
            bed.agi,
            &env("ivm", &alice_channel, &alice_uniqueid, secret),
        )
        .await;
        assert_closed_silently(stream, &format!("secret {secret:?}")).await;
    }
    assert_eq!(
        bed.switch.ami().actions_sent(),
        sent_before,
        "no AMI action for a refused peer"
    );
    // With the secret: a regular expression for a channel, option injection.
    for channel in ["/./", "PJSIP/1001,F(default^666^1)", "PJSIP/1001|x"] {
        let stream = fastagi_from(
            "127.0.0.1:0",
            bed.agi,
            &env("ivm", channel, "1.2", Some(AGI_SECRET)),
        )
        .await;
        assert_closed_silently(stream, channel).await;
    }
    // A log line forged through the unique id is refused too.
    let stream = fastagi_from(
        "127.0.0.1:0",
        bed.agi,
        &env("ivm", "PJSIP/1001-1", "1.3\rWARN forged", Some(AGI_SECRET)),
    )
    .await;
    assert_closed_silently(stream, "control characters").await;
    assert_eq!(bed.switch.ami().actions_sent(), sent_before);
    // A channel that does not exist, or a real name with another unique id.
    for (channel, uniqueid) in [
        ("PJSIP/1001-0000ffff", "1700000000.999"),
        (alice_channel.as_str(), "1700000000.998"),
    ] {
        let stream = fastagi_from(
            "127.0.0.1:0",
            bed.agi,
            &env("ivm", channel, uniqueid, Some(AGI_SECRET)),
        )
        .await;
        assert_closed_silently(stream, channel).await;
    }
    // The AMI client itself never sends a value starting with `/`.
    let hangup_all = ivm::proto::ami::AmiAction::new("Hangup").field("Channel", "/./");
    assert!(bed.switch.ami().send(hangup_all).await.is_err());

    assert_eq!(
        call_event_so_far(&mut bed.events),
        None,
        "no call reached ivm"
    );
    // The plain call is untouched.
    let after = live_channels(&bed.asterisk);
    assert_eq!(after, channels, "the call between the phones survives");
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_answered_legs_and_duplicate_sessions_are_refused() {
    let mut bed = bed().await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    let mut bob = Phone::start_with(&bed.asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    bed.switch.answer(&call).await.unwrap();
    let (alice_channel, _) = live_channels(&bed.asterisk)
        .into_iter()
        .find(|(_, u)| *u == call.0)
        .expect("alice's channel");

    // The same unique id again: refused, the live session stays.
    let stream = fastagi_from(
        "127.0.0.1:0",
        bed.agi,
        &env("ivm", &alice_channel, &call.0, Some(AGI_SECRET)),
    )
    .await;
    assert_closed_silently(stream, "a duplicate agi_uniqueid").await;

    // A real originate in progress, and a forger who even knows its id but
    // not the channel ivm gave it.
    let origin = originate_id(Some(&call));
    bed.switch
        .originate(OriginateRequest {
            id: origin.clone(),
            target: "1002".into(),
            caller_id_name: "Alice".into(),
            caller_id_number: "1001".into(),
            ring_timeout: WAIT,
        })
        .await
        .unwrap();
    bob.wait_call("CALL_INCOMING", WAIT).await.unwrap();
    for (script, uniqueid) in [
        // An origin of no originate at all (ids ivm used to make).
        ("ivm?origin=s1-1700000000000".to_owned(), call.0.clone()),
        ("ivm?origin=notify-1-1".to_owned(), call.0.clone()),
        // The right origin on a channel that is not the originated one.
        (format!("ivm?origin={}", origin.0), call.0.clone()),
        (
            format!("ivm?origin={}", origin.0),
            format!("ivm-{}", origin.0),
        ),
    ] {
        let stream = fastagi_from(
            "127.0.0.1:0",
            bed.agi,
            &env(&script, &alice_channel, &uniqueid, Some(AGI_SECRET)),
        )
        .await;
        assert_closed_silently(stream, &script).await;
    }
    // The real answer still arrives, and it is the only one.
    bob.answer().await.unwrap();
    let answered = next(&mut bed.events, "the real answer", |e| match e {
        SwitchEvent::Answered { origin: o, call } if *o == origin => Some(call.clone()),
        SwitchEvent::Answered { .. } => panic!("a forged answer got through: {e:?}"),
        _ => None,
    })
    .await;
    assert_eq!(answered.0, format!("ivm-{}", origin.0));
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_targets_are_refused_unless_allowed_then_dialled_in_the_callers_context() {
    // No external_targets: refused before any AMI action.
    let mut bed = bed().await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    alice.dial("*77004915551234", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    let sent = bed.switch.ami().actions_sent();
    let request = |call: &CallId| OriginateRequest {
        id: originate_id(Some(call)),
        target: "004915551234".into(),
        caller_id_name: "Alice".into(),
        caller_id_number: "1001".into(),
        ring_timeout: WAIT,
    };
    let refused = bed.switch.originate(request(&call)).await;
    assert!(
        matches!(refused, Err(SwitchError::Refused(_))),
        "{refused:?}"
    );
    let refused = bed.switch.connect(&call, "004915551234").await;
    assert!(
        matches!(refused, Err(SwitchError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(bed.switch.ami().actions_sent(), sent, "nothing originated");
    alice.hangup().await.unwrap();
    drop(bed);

    // Allowed by a pattern: dialled through the caller's context (`phones`,
    // whose stand-in route rings 1002), not through ivm's.
    let mut bed = bed_with(AsteriskSwitchOptions {
        dial_policy: DialPolicy::new(&["0049X.".into()], 6),
        ..AsteriskSwitchOptions::default()
    })
    .await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    let _bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();
    alice.dial("*77004915551234", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    // Without a caller (a notification), still refused: no context to use.
    let mut orphan = request(&call);
    orphan.id = originate_id(None);
    assert!(bed.switch.originate(orphan).await.is_err());
    let allowed = request(&call);
    let origin = allowed.id.clone();
    bed.switch.originate(allowed).await.expect("originate");
    next(
        &mut bed.events,
        "the answer through the caller's route",
        |e| match e {
            SwitchEvent::Answered { origin: o, .. } if *o == origin => Some(()),
            SwitchEvent::OriginateFailed { origin: o, cause } if *o == origin => {
                panic!("the originate failed ({cause:?}): not dialled in `phones`")
            }
            _ => None,
        },
    )
    .await;
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_do_not_stop_a_real_call() {
    let mut bed = bed().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(bed.agi).await.unwrap());
    }
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    let _bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();
    alice.dial("*771002", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    bed.switch.answer(&call).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    let origin = originate_id(Some(&call));
    bed.switch
        .originate(OriginateRequest {
            id: origin.clone(),
            target: "1002".into(),
            caller_id_name: "Alice".into(),
            caller_id_number: "1001".into(),
            ring_timeout: WAIT,
        })
        .await
        .unwrap();
    next(&mut bed.events, "the target's answer", |e| match e {
        SwitchEvent::Answered { origin: o, .. } if *o == origin => Some(()),
        _ => None,
    })
    .await;
    // The idle ones were dropped after the handshake deadline.
    let mut closed = 0;
    for mut stream in idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every idle connection is closed");
    alice.hangup().await.unwrap();
}

/// Call set-up with and without the channel checks, on the same machine in
/// the same run: phone dials `*771002` → `IncomingCall`. Prints figures; the
/// assertions are only that every call arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_setup_time_with_and_without_the_peer_checks() {
    const CALLS: usize = 12;
    let mut report = Vec::new();
    for verify_channels in [true, false] {
        let mut bed = bed_with(AsteriskSwitchOptions {
            verify_channels,
            ..AsteriskSwitchOptions::default()
        })
        .await;
        let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..CALLS {
            let started = Instant::now();
            alice.dial("*771002", &bed.asterisk).await.unwrap();
            let call = next(&mut bed.events, "incoming call", |e| match e {
                SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
                _ => None,
            })
            .await;
            times.push(started.elapsed());
            bed.switch
                .hangup(&call, ivm::switch::HangupCause::Normal)
                .await
                .unwrap();
            alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
            next(&mut bed.events, "hang-up", |e| match e {
                SwitchEvent::HungUp { call: c, .. } if *c == call => Some(()),
                _ => None,
            })
            .await;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        report.push(format!(
            "peer checks {}: dial -> IncomingCall over {CALLS} calls: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            if verify_channels { "on " } else { "off" },
            ms(times[CALLS / 2]),
            ms(times[(CALLS * 95).div_ceil(100) - 1]),
            ms(times[CALLS - 1]),
        ));
    }
    println!("{}", report.join("\n"));
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Files and directories under `dir`, recursively.
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(tree(&path));
        }
        all.push(path);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star77_to_an_external_number_hears_a_prompt_and_nothing_is_originated() {
    let (asterisk, agi_port) = common::asterisk();
    let ivm = tokio::task::block_in_place(|| common::Ivm::start(&asterisk, agi_port, ""));
    let mut alice = Phone::start(&asterisk, "1001", None).await.unwrap();
    alice.dial("*77004915551234", &asterisk).await.unwrap();
    // Answered for the prompt, then ended by ivm.
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    let log = ivm.log();
    assert!(log.contains("not in the number plan"), "{log}");
    assert!(
        !log.contains("action=Originate"),
        "nothing originated:\n{log}"
    );
    let list = tokio::task::block_in_place(|| ivm.messages());
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_max_message_seconds_is_cut_and_its_files_are_private() {
    let (asterisk, agi_port) = common::asterisk();
    let ivm = tokio::task::block_in_place(|| {
        common::Ivm::start(
            &asterisk,
            agi_port,
            // The engine's ring backstop (ring timeout + 5 s) comes first.
            "[limits]\nmax_message_seconds = 8\n[delivery]\nring_timeout_seconds = 1",
        )
    });
    let mut alice = Phone::start(&asterisk, "1001", None).await.unwrap();
    // Bob never answers: the ring timeout ends first, the length limit must
    // still end the message.
    let _bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    let started = Instant::now();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    alice
        .wait_call("CALL_CLOSED", Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ivm did not end a message past max_message_seconds ({e}):\n{}",
                ivm.log()
            )
        });
    assert!(started.elapsed() >= Duration::from_secs(8));
    let list =
        tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["state"] == "complete"));
    let duration = list[0]["duration_ms"].as_i64().unwrap();
    assert!(duration <= 8_600, "stored {duration} ms of an 8 s limit");

    // Nobody else's: the data directory and the audio are the owner's and
    // the group's (the switch's way in), the database the owner's alone.
    let data = ivm.data_dir();
    assert_eq!(mode(&data) & 0o777, 0o770, "{}", data.display());
    let files = tree(&data);
    assert!(files.iter().any(|p| p.ends_with("ivm.db")), "{files:?}");
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "wav")),
        "{files:?}"
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ivm.db") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        } else {
            assert_eq!(mode(&path) & 0o007, 0, "{}", path.display());
        }
    }
}

/// `ivm` run on a config file, with no switch reachable.
fn ivm_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ivm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn serve_refuses_default_secrets_and_config_check_warns_about_a_readable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ivm.toml");
    let data = dir.path().join("data");
    for (section, names) in [
        ("[asterisk]\n", &["ami_secret", "agi_secret"][..]),
        (
            "[asterisk]\nami_secret = \"ivm\"\nagi_secret = \"0123456789abcdef\"\n",
            &["ami_secret"][..],
        ),
        ("[freeswitch]\n", &["esl_password", "outbound_secret"][..]),
    ] {
        std::fs::write(
            &config,
            format!("data_dir = \"{}\"\n{section}", data.display()),
        )
        .unwrap();
        let out = ivm_cli(&config, &["serve"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        for name in names {
            assert!(stderr.contains(name), "{name} not named: {stderr}");
        }
        assert!(!data.exists(), "nothing started");
        // `ivm doctor` says the same.
        let out = ivm_cli(&config, &["doctor"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        for name in names {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with("FAIL") && l.contains(name)),
                "doctor does not name {name}: {stdout}"
            );
        }
        let _ = std::fs::remove_dir_all(&data);
    }

    std::fs::write(
        &config,
        "[asterisk]\nami_secret = \"a-real-secret-1234\"\nagi_secret = \"0123456789abcdef\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ivm_cli(&config, &["config", "check", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ivm_cli(&config, &["config", "check", config.to_str().unwrap()]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// FreeSWITCH's `socket` application, as far as the handshake goes: answer
/// `connect` with this channel's data, then `myevents` and `linger` with +OK.
async fn fake_socket_application(
    local: &str,
    server: SocketAddr,
    secret: Option<&str>,
) -> TcpStream {
    async fn command(stream: &mut TcpStream) -> Option<String> {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while !text.ends_with(b"\n\n") {
            match stream.read(&mut byte).await {
                Ok(1) => text.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&text).into_owned())
    }
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(local.parse().unwrap()).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    if command(&mut stream).await.as_deref() != Some("connect\n\n") {
        return stream;
    }
    let secret = secret.map_or(String::new(), |s| format!("variable_ivm_secret: {s}\n"));
    let reply = format!(
        "Content-Type: command/reply\nReply-Text: +OK\nEvent-Name: CHANNEL_DATA\nSocket-Mode: async\nControl: full\n\
         Channel-Name: sofia/internal/1001%40127.0.0.1\nUnique-ID: 7f4de4bc-2b6c-4b1e-9a3e-0d4c6e0f6a11\n\
         {secret}Caller-Caller-ID-Number: 1001\n\n"
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    for _ in 0..2 {
        if command(&mut stream).await.is_none() {
            return stream;
        }
    }
    let _ = stream
        .write_all(b"Content-Type: command/reply\nReply-Text: +OK\n\nContent-Type: command/reply\nReply-Text: +OK will linger\n\n")
        .await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_socket_sessions_need_the_address_and_the_secret() {
    use ivm::switch::freeswitch::outbound::{self, OutboundConfig};
    use ivm::switch::peer::PeerPolicy;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sessions_tx, mut sessions) = mpsc::channel(4);
    let (_stop, stop) = watch::channel(false);
    let config = OutboundConfig {
        peers: Some(
            PeerPolicy::from_config(&["127.0.0.1/32".into()], "fs-secret-0123456789").unwrap(),
        ),
        ..OutboundConfig::default()
    };
    tokio::spawn(outbound::serve(listener, sessions_tx, stop, config));

    // Outside outbound_allow: closed before `connect` is even sent.
    let refused =
        fake_socket_application("127.0.0.2:0", address, Some("fs-secret-0123456789")).await;
    assert_closed_silently(refused, "a socket from 127.0.0.2").await;
    // Without the secret, or a wrong one: closed after the handshake.
    for secret in [None, Some("fs-secret-012345678")] {
        let mut stream = fake_socket_application("127.0.0.1:0", address, secret).await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "secret {secret:?}: not closed");
        assert!(sessions.try_recv().is_err(), "secret {secret:?}: a session");
    }
    // With it: a session.
    let _ok = fake_socket_application("127.0.0.1:0", address, Some("fs-secret-0123456789")).await;
    let session = tokio::time::timeout(WAIT, sessions.recv())
        .await
        .expect("a session with the secret")
        .unwrap();
    assert_eq!(session.unique_id(), "7f4de4bc-2b6c-4b1e-9a3e-0d4c6e0f6a11");
}

/// Every AMI action ivm sends works with exactly the classes of
/// `dialplan/asterisk/manager_ivm.conf` (the testbed loads that file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ami_action_ivm_uses_works_with_the_snippets_classes() {
    let mut bed = bed().await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    let _bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();
    // CoreSettings and ModuleCheck (system): whether the live stream runs.
    ivm::switch::asterisk::audiosocket_support(bed.switch.ami())
        .await
        .expect("CoreSettings and ModuleCheck");
    // Getvar DEVICE_STATE (reporting).
    let state = bed.switch.device_state("1002").await.expect("device state");
    assert_eq!(state, ivm::switch::DeviceState::Idle);
    // PJSIPNotify (system) and MessageSend (message).
    bed.switch
        .set_message_waiting("1002", 1, 0)
        .await
        .expect("PJSIPNotify");
    bed.switch
        .send_text("1002", "IVM Alice", "a message is waiting")
        .await
        .expect("MessageSend");
    // On a live call: MixMonitor, StopMixMonitor (system), Getvar of the
    // channel check (reporting), Hangup (system).
    alice.dial("*771002", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    bed.switch.answer(&call).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    bed.switch
        .start_recording(
            &call,
            ivm::switch::RecordRequest {
                path: dir.path().join("capture.sln48"),
                format: ivm::media::AudioFormat::Slin {
                    sample_rate: 48_000,
                },
                max_duration: WAIT,
            },
        )
        .await
        .expect("MixMonitor");
    bed.switch
        .stop_recording(&call)
        .await
        .expect("StopMixMonitor");
    bed.switch
        .hangup(&call, ivm::switch::HangupCause::Normal)
        .await
        .expect("Hangup");
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
}

/// Whether `text` holds `number` as a whole number (not inside a longer
/// run of digits such as a timestamp or a unique id).
fn holds_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The log's lines at info level or above (the harness logs at debug).
fn info_and_above(log: &str) -> Vec<String> {
    log.lines()
        .map(|line| {
            // Drop ANSI colour sequences.
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            plain
        })
        .filter(|line| {
            let level = line.split_whitespace().nth(1).unwrap_or("");
            matches!(level, "INFO" | "WARN" | "ERROR")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_message_not_answered_logs_no_number_or_code_at_info() {
    let (asterisk, agi_port) = common::asterisk();
    let ivm = tokio::task::block_in_place(|| {
        common::Ivm::start(&asterisk, agi_port, "[delivery]\nring_timeout_seconds = 2")
    });
    let mut alice = Phone::start(&asterisk, "1001", None).await.unwrap();
    let _bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    // Past the ring timeout: stored for Bob.
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.hangup().await.unwrap();
    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l.as_array().is_some_and(|l| !l.is_empty()) && l[0]["state"] == "complete"
        })
    });
    let code = list[0]["code"].as_str().expect("a code").to_owned();
    let log = ivm.log();
    let lines = info_and_above(&log);
    assert!(
        lines.iter().any(|l| l.contains("instant message started")),
        "the info lines were found:\n{log}"
    );
    // At debug the numbers are there: the check below can see them.
    assert!(holds_number(&log, "1002"), "{log}");
    let retrieval_number = format!("550{code}1");
    for secret in ["1001", "1002", code.as_str(), retrieval_number.as_str()] {
        let leaks: Vec<&String> = lines.iter().filter(|l| holds_number(l, secret)).collect();
        assert!(leaks.is_empty(), "{secret} at info or above: {leaks:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_message_lets_it_finish_sends_its_notifications_and_exits_0() {
    let (asterisk, agi_port) = common::asterisk();
    let mut ivm = tokio::task::block_in_place(|| {
        common::Ivm::start(
            &asterisk,
            agi_port,
            "[delivery]\nring_timeout_seconds = 2\n[server]\nshutdown_grace_seconds = 20",
        )
    });
    let mut alice = Phone::start(&asterisk, "1001", None).await.unwrap();
    let _bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ivm.sigterm();
    // Alice goes on talking past the ring timeout; ivm waits for her.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ivm.running(), "ivm waits for the call in progress");
    alice.hangup().await.unwrap();
    let status = tokio::task::block_in_place(|| ivm.wait_exit(Duration::from_secs(20)));
    assert!(status.success(), "{status:?}\n{}", ivm.log());
    let list = tokio::task::block_in_place(|| ivm.messages());
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert!(
        matches!(list[0]["state"].as_str(), Some("complete" | "partial")),
        "{list:#}"
    );
    assert!(
        list[0]["duration_ms"].as_i64().unwrap() >= 3_000,
        "{list:#}"
    );
    // Its notifications went out before the exit: none left pending.
    let db = rusqlite::Connection::open(ivm.data_dir().join("ivm.db")).unwrap();
    let states: Vec<String> = db
        .prepare("SELECT state FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!states.is_empty(), "notifications were written");
    assert!(
        states.iter().all(|s| s == "sent" || s == "delivered"),
        "{states:?}\n{}",
        ivm.log()
    );
}

/// The data dir on a 1 MiB tmpfs (the prompts in `[server] sounds_dir`
/// elsewhere), filled during a message, in stream mode (ivm's AudioSocket
/// writer thread writes the message): the caller hears
/// the "could not be recorded" prompt and is hung up, the message is
/// `failed` with what was written, nothing stays `recording`, and the
/// next calls are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_filled_during_a_message_fails_it_with_the_prompt_and_calls_go_on() {
    disk_filled_during_a_message(
        "[delivery]\nmedia = \"stream\"",
        "live delivery through ivm's AudioSocket stream",
    )
    .await;
}

/// The same in files mode (Asterisk's MixMonitor writes a 48 kHz capture,
/// ivm's pump the 8 kHz message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_a_data_dir_filled_during_a_message_fails_it_with_the_prompt() {
    disk_filled_during_a_message(
        "[delivery]\nmedia = \"files\"",
        "live delivery through recorded files",
    )
    .await;
}

async fn disk_filled_during_a_message(config: &str, mode: &str) {
    let (asterisk, agi_port) = common::asterisk();
    // The prompts (0.7 MiB, read-only) live off the messages' filesystem,
    // as `[server] sounds_dir` lets an administrator keep them; Asterisk
    // reads them there (it runs on this host's file system).
    let sounds = tempfile::tempdir().unwrap();
    let config = format!(
        "{config}\n[server]\nsounds_dir = \"{}\"\n",
        sounds.path().display()
    );
    let mut ivm = common::Ivm::unstarted(&asterisk, agi_port, &config);
    let Some(_tmpfs) = tmpfs::Tmpfs::mount_at(&ivm.data_dir(), 1 << 20) else {
        return;
    };
    tokio::task::block_in_place(|| ivm.spawn());
    assert!(ivm.log().contains(mode), "not {mode}:\n{}", ivm.log());
    assert!(
        sounds.path().join("beep.sln").is_file() && !ivm.data_dir().join("sounds").exists(),
        "the prompts are installed in sounds_dir only"
    );
    let dir = tempfile::tempdir().unwrap();
    let talk = dir.path().join("alice.wav");
    let mut speech = common::silence(300);
    speech.extend(common::tone(700.0, 40_000));
    ivm_testbed::write_wav(&talk, &speech).unwrap();
    let mut alice = Phone::start(&asterisk, "1001", Some(&talk)).await.unwrap();
    let _bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The disk fills up, but for about 2 s of the 8 kHz message.
    let (filler_path, filler) = tmpfs::fill(&ivm.data_dir(), "filler");
    let full = filler.metadata().unwrap().len();
    filler.set_len(full.saturating_sub(32 * 1024)).unwrap();
    alice
        .wait_call("CALL_CLOSED", Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("ivm did not end the message ({e}):\n{}", ivm.log()));
    let heard = common::read_wav(&alice.heard_wav());
    let prompt_ms = common::tone_ms(&heard, 1776.7);
    assert!(
        prompt_ms >= 200,
        "the caller heard the error tones: {prompt_ms} ms of its last tone\n{}",
        ivm.log()
    );
    let list =
        tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["state"] != "recording"));
    assert_eq!(list[0]["state"], "failed", "{list:#}");
    // Told by the message's writer or by the store's index, whichever
    // ran out of room first.
    assert!(ivm.log().contains("it ends failed"), "{}", ivm.log());
    // What was written is kept, indexed, on disk.
    let duration = list[0]["duration_ms"].as_i64().unwrap_or(0);
    assert!(
        duration > 0 && list[0]["fragments"].as_i64() >= Some(1),
        "{list:#}"
    );
    let on_disk: u64 = std::fs::read_dir(ivm.data_dir().join("messages"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".sln"))
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    assert!(
        on_disk >= duration as u64 * 16,
        "{on_disk} bytes hold {duration} ms"
    );

    // Other calls are still served on that disk: Carol's *55 is answered,
    // told and hung up by ivm; her own short message ends stored or
    // failed with the prompt — never left `recording`.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    let short = dir.path().join("carol.wav");
    let mut said = common::silence(300);
    said.extend(common::tone(700.0, 700));
    ivm_testbed::write_wav(&short, &said).unwrap();
    let mut carol = Phone::start(&asterisk, "1003", Some(&short)).await.unwrap();
    carol.dial("*55", &asterisk).await.unwrap();
    carol.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    carol
        .wait_call("CALL_CLOSED", Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("*55 was not served ({e}):\n{}", ivm.log()));
    carol.dial("*771002", &asterisk).await.unwrap();
    carol.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = carol.hangup().await;
    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l.as_array().is_some_and(|a| a.len() == 2) && l[0]["state"] != "recording"
        })
    });
    eprintln!("the next message on that disk: {}", list[0]["state"]);
    assert!(
        matches!(list[0]["state"].as_str(), Some("complete" | "failed")),
        "{list:#}\n{}",
        ivm.log()
    );
}
