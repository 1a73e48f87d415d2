//! The FreeSWITCH adapter as an attacker on the LAN meets it (issue 11),
//! against a real FreeSWITCH 1.11.1 and real SIP phones: socket sessions on
//! ivm's outbound port with a wrong secret or a Unique-ID FreeSWITCH does
//! not have, a duplicate of a live session, and idle connections. The
//! Asterisk twin is `tests/asterisk_security.rs`.

mod common;

#[path = "support/events.rs"]
mod events;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Pbx, SwitchKind};
use events::{call_event_so_far, next};
use ivm::config::FreeswitchConfig;
use ivm::switch::freeswitch::{FreeswitchSwitch, FreeswitchSwitchOptions, new_uuid};
use ivm::switch::peer::originate_id;
use ivm::switch::{CallId, HangupCause, OriginateRequest, Switch, SwitchEvent};
use ivm_testbed::Phone;
use ivm_testbed::freeswitch::{ESL_PASSWORD, OUTBOUND_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(10);

struct Bed {
    pbx: Pbx,
    switch: FreeswitchSwitch,
    events: mpsc::UnboundedReceiver<SwitchEvent>,
    outbound: SocketAddr,
    _shutdown: watch::Sender<bool>,
}

/// A throwaway FreeSWITCH whose dialplan hands `*77…` to the adapter on
/// its outbound port; `None` when FreeSWITCH is not installed (not CI).
async fn bed_with(options: FreeswitchSwitchOptions) -> Option<Bed> {
    let pbx = Pbx::start(SwitchKind::Freeswitch)?;
    let Pbx::Freeswitch {
        freeswitch,
        outbound_port,
    } = &pbx
    else {
        unreachable!("asked for FreeSWITCH");
    };
    let outbound = SocketAddr::from(([127, 0, 0, 1], *outbound_port));
    let config = FreeswitchConfig {
        esl_address: freeswitch.esl_address(),
        esl_password: ESL_PASSWORD.into(),
        outbound_listen: outbound,
        outbound_secret: OUTBOUND_SECRET.into(),
        ..FreeswitchConfig::default()
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let switch = FreeswitchSwitch::start(config, options, shutdown_rx)
        .await
        .expect("start the adapter");
    let events = switch.events();
    switch.wait_connected(WAIT).await.expect("esl connects");
    Some(Bed {
        pbx,
        switch,
        events,
        outbound,
        _shutdown: shutdown,
    })
}

async fn bed() -> Option<Bed> {
    bed_with(FreeswitchSwitchOptions::default()).await
}

/// FreeSWITCH's answer to `connect`: a channel's data, as the `socket`
/// application sends it (the headers `ivm` reads, with the secret).
fn channel_data(uuid: &str, secret: &str) -> String {
    format!(
        "Event-Name: CHANNEL_DATA\nUnique-ID: {uuid}\nChannel-Name: sofia/internal/1001%40127.0.0.1\n\
         Caller-Caller-ID-Number: 1001\nCaller-Destination-Number: %2A771002\n\
         variable_ivm_secret: {secret}\nvariable_current_application: socket\n\
         Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
    )
}

/// Play a forger on ivm's outbound port: answer `connect` with
/// `channel_data`, `+OK` to every other command. The commands ivm sent
/// before it closed the connection; panics if it stays open.
async fn forged_session(outbound: SocketAddr, channel_data: &str) -> Vec<String> {
    let mut stream = TcpStream::connect(outbound).await.unwrap();
    let mut received = Vec::new();
    let mut commands = Vec::new();
    loop {
        while let Some(end) = received.windows(2).position(|w| w == b"\n\n") {
            let command = String::from_utf8_lossy(&received[..end]).into_owned();
            received.drain(..end + 2);
            let reply = if command == "connect" {
                channel_data.to_owned()
            } else {
                "Content-Type: command/reply\nReply-Text: +OK\n\n".to_owned()
            };
            commands.push(command);
            // Once refused, ivm may already have closed.
            let _ = stream.write_all(reply.as_bytes()).await;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return commands,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("ivm kept the forged session open; it sent {commands:?}"),
        }
    }
}

fn testbed_freeswitch(pbx: &Pbx) -> &ivm_testbed::Freeswitch {
    match pbx {
        Pbx::Freeswitch { freeswitch, .. } => freeswitch,
        Pbx::Asterisk { .. } => unreachable!("a FreeSWITCH bed"),
    }
}

/// The Unique-IDs of FreeSWITCH's channels once `show channels` (CSV, the
/// uuid first) lists `count` of them: it reads FreeSWITCH's core database,
/// which its SQL thread updates a little after the call is up.
fn channels_listed(pbx: &Pbx, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out =
            tokio::task::block_in_place(|| testbed_freeswitch(pbx).api("show channels")).unwrap();
        let mut uuids: Vec<String> = out
            .lines()
            .skip(1)
            .filter(|l| l.contains(','))
            .filter_map(|l| l.split(',').next().map(str::to_owned))
            .collect();
        if uuids.len() == count {
            uuids.sort();
            return uuids;
        }
        assert!(Instant::now() < deadline, "show channels: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether FreeSWITCH itself still has channel `uuid` (asked directly, not
/// through ivm).
fn exists(pbx: &Pbx, uuid: &str) -> bool {
    let out =
        tokio::task::block_in_place(|| testbed_freeswitch(pbx).api(&format!("uuid_exists {uuid}")))
            .unwrap();
    out.trim() == "true"
}

/// The handshake only: what ivm sends to any peer before it knows who it is.
const HANDSHAKE: [&str; 3] = ["connect", "myevents", "linger"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_secret_and_duplicate_sessions_are_closed_before_any_command() {
    let Some(mut bed) = bed().await else { return };
    // A plain call between two phones, not through ivm.
    let mut alice = Phone::start(bed.pbx.sip(), "1001", None).await.unwrap();
    let mut bob = Phone::start(bed.pbx.sip(), "1002", None).await.unwrap();
    alice.dial("1002", bed.pbx.sip()).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    let channels = channels_listed(&bed.pbx, 2);

    let sent = bed.switch.inbound().requests_sent();
    // The right secret, a well-formed UUID FreeSWITCH does not have: one
    // `uuid_exists` is asked, nothing else, and the peer is closed.
    let forged = new_uuid();
    let commands = forged_session(bed.outbound, &channel_data(&forged, OUTBOUND_SECRET)).await;
    assert_eq!(commands, HANDSHAKE);
    assert_eq!(
        bed.switch.inbound().requests_sent(),
        sent + 1,
        "only uuid_exists went to FreeSWITCH"
    );
    // A live channel's UUID without the secret, and unsafe UUIDs with it:
    // FreeSWITCH is not even asked.
    let sent = bed.switch.inbound().requests_sent();
    for (uuid, secret) in [
        (channels[0].as_str(), "wrong-secret-wrong-secret"),
        (channels[0].as_str(), ""),
        ("x{ivm_origin=o}y", OUTBOUND_SECRET),
        ("a,b", OUTBOUND_SECRET),
    ] {
        let commands = forged_session(bed.outbound, &channel_data(uuid, secret)).await;
        assert_eq!(commands, HANDSHAKE, "{uuid} {secret}");
    }
    assert_eq!(bed.switch.inbound().requests_sent(), sent);
    assert_eq!(
        call_event_so_far(&mut bed.events),
        None,
        "no call reached ivm"
    );
    // The plain call is untouched.
    for uuid in &channels {
        assert!(exists(&bed.pbx, uuid), "the plain call survives: {uuid}");
    }
    alice.hangup().await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT).await.unwrap();

    // A real IVM call, then a second session claiming its UUID: refused
    // without a question to FreeSWITCH, the real session stays.
    alice.dial("*771002", bed.pbx.sip()).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    let sent = bed.switch.inbound().requests_sent();
    let commands = forged_session(bed.outbound, &channel_data(&call.0, OUTBOUND_SECRET)).await;
    assert_eq!(commands, HANDSHAKE);
    assert_eq!(bed.switch.inbound().requests_sent(), sent);
    assert_eq!(call_event_so_far(&mut bed.events), None);
    bed.switch
        .answer(&call)
        .await
        .expect("the real session works");
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_do_not_stop_a_real_call() {
    let Some(mut bed) = bed().await else { return };
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(bed.outbound).await.unwrap());
    }
    let mut alice = Phone::start(bed.pbx.sip(), "1001", None).await.unwrap();
    let _bob = Phone::start(bed.pbx.sip(), "1002", None).await.unwrap();
    alice.dial("*771002", bed.pbx.sip()).await.unwrap();
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
        SwitchEvent::OriginateFailed { origin: o, cause } if *o == origin => {
            panic!("the originate failed: {cause:?}")
        }
        _ => None,
    })
    .await;
    // The idle ones got `connect` and were dropped at the handshake deadline.
    let mut closed = 0;
    for mut stream in idle {
        let mut got = Vec::new();
        if let Ok(Ok(_)) = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await
            && got == b"connect\n\n"
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every idle connection is closed");
    alice.hangup().await.unwrap();
}

/// Call set-up with and without the UUID check, on the same machine in the
/// same run: phone dials `*771002` → `IncomingCall`. Prints figures; the
/// assertions are only that every call arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_setup_time_with_and_without_the_uuid_check() {
    const CALLS: usize = 12;
    let mut report = Vec::new();
    for verify_uuids in [true, false] {
        let Some(mut bed) = bed_with(FreeswitchSwitchOptions {
            verify_uuids,
            ..FreeswitchSwitchOptions::default()
        })
        .await
        else {
            return;
        };
        let mut alice = Phone::start(bed.pbx.sip(), "1001", None).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..CALLS {
            let started = Instant::now();
            alice.dial("*771002", bed.pbx.sip()).await.unwrap();
            let call: CallId = next(&mut bed.events, "incoming call", |e| match e {
                SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
                _ => None,
            })
            .await;
            times.push(started.elapsed());
            bed.switch.hangup(&call, HangupCause::Normal).await.unwrap();
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
            "uuid check {}: dial -> IncomingCall over {CALLS} calls: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            if verify_uuids { "on " } else { "off" },
            ms(times[CALLS / 2]),
            ms(times[(CALLS * 95).div_ceil(100) - 1]),
            ms(times[CALLS - 1]),
        ));
    }
    println!("{}", report.join("\n"));
}
