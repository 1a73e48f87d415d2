//! The ESL codec against real FreeSWITCH 1.11.1 sessions in `tests/data/esl/`.
//!
//! Each capture's expected decoding comes from `tests/data/esl/README.md`;
//! the numbers below are that file's, not re-derived from the decoder. The
//! decoder's full output for every capture (fed whole and in pieces) and for
//! malformed input is checked by the one codec harness,
//! `tests/codec_transcripts.rs`; this file checks it against the README and
//! checks the command encoder against what the captures sent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::BytesMut;
use ivm::proto::esl::{
    self, ApiResponse, CommandReply, Decoder, DisconnectNotice, Disposition, Event, EventFormat,
    Execute, Frame, LingerTime, LogData, Message, SendMsg,
};

const CAPTURES: [(&str, usize); 10] = [
    ("inbound-auth-ok", 7),
    ("inbound-auth-bad", 3),
    ("inbound-events-plain", 83),
    ("inbound-events-json", 27),
    ("inbound-events-xml", 9),
    ("inbound-filter-and-sendmsg", 20),
    ("outbound-basic", 23),
    ("outbound-nolinger", 21),
    ("outbound-linger-timeout", 16),
    ("log-and-large-body", 59),
];

const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

fn data_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/esl")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn from_fs(capture: &str) -> Vec<u8> {
    data_file(&format!("{capture}.from-fs.bin"))
}

fn to_fs(capture: &str) -> Vec<u8> {
    data_file(&format!("{capture}.to-fs.txt"))
}

/// Every message of a capture, and the offset at which each frame ended.
/// Fails on any error or leftover byte.
fn decode_capture(bytes: &[u8]) -> (Vec<Message>, Vec<usize>) {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(bytes);
    let mut messages = Vec::new();
    let mut ends = Vec::new();
    while let Some(m) = decoder.decode(&mut buf).expect("capture decodes") {
        messages.push(m);
        ends.push(bytes.len() - buf.len());
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    (messages, ends)
}

fn decode(capture: &str) -> Vec<Message> {
    decode_capture(&from_fs(capture)).0
}

fn frames(capture: &str) -> Vec<Frame> {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&from_fs(capture)[..]);
    let mut out = Vec::new();
    while let Some(f) = decoder.decode_frame(&mut buf).expect("capture frames") {
        out.push(f);
    }
    assert!(buf.is_empty());
    out
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::AuthRequest => "auth/request",
        Message::CommandReply(_) => "command/reply",
        Message::ApiResponse(_) => "api/response",
        Message::Event(e) => match e.format() {
            EventFormat::Plain => "text/event-plain",
            EventFormat::Json => "text/event-json",
            EventFormat::Xml => "text/event-xml",
        },
        Message::DisconnectNotice(_) => "text/disconnect-notice",
        Message::LogData(_) => "log/data",
        Message::RudeRejection { .. } => "text/rude-rejection",
        Message::Unknown { .. } => "unknown",
    }
}

fn kinds(messages: &[Message]) -> Vec<&'static str> {
    messages.iter().map(kind).collect()
}

fn kind_counts(messages: &[Message]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        *counts.entry(kind(m)).or_default() += 1;
    }
    counts
}

fn counts_of<'a>(pairs: &[(&'a str, usize)]) -> BTreeMap<&'a str, usize> {
    pairs.iter().copied().collect()
}

fn events(messages: &[Message]) -> Vec<&Event> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn event_counts<'a>(events: &[&'a Event]) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts
            .entry(e.name().expect("every event has a name"))
            .or_default() += 1;
    }
    counts
}

fn named<'a>(events: &[&'a Event], name: &str) -> Vec<&'a Event> {
    events
        .iter()
        .copied()
        .filter(|e| e.name() == Some(name))
        .collect()
}

fn only<'a>(events: &[&'a Event], name: &str) -> &'a Event {
    let found = named(events, name);
    assert_eq!(found.len(), 1, "exactly one {name}");
    found[0]
}

/// Event names, with the application for execute events and the state for
/// CHANNEL_STATE, as the README lists them.
fn event_labels(events: &[&Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let name = e.name().unwrap_or("?");
            match name {
                "CHANNEL_EXECUTE" | "CHANNEL_EXECUTE_COMPLETE" => {
                    format!("{name} {}", e.application().unwrap_or("?"))
                }
                "CHANNEL_STATE" => format!("{name} {}", e.header("Channel-State").unwrap_or("?")),
                _ => name.to_owned(),
            }
        })
        .collect()
}

fn replies(messages: &[Message]) -> Vec<&CommandReply> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::CommandReply(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn reply_texts(messages: &[Message]) -> Vec<&str> {
    replies(messages)
        .iter()
        .map(|r| r.reply_text.as_str())
        .collect()
}

fn api_responses(messages: &[Message]) -> Vec<&ApiResponse> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::ApiResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn notices(messages: &[Message]) -> Vec<&DisconnectNotice> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::DisconnectNotice(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn logs(messages: &[Message]) -> Vec<&LogData> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::LogData(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn inbound_goodbye(n: &DisconnectNotice) {
    assert_eq!(n.body, GOODBYE);
    assert_eq!(n.disposition, None);
    assert_eq!(n.controlled_session_uuid, None);
    assert_eq!(n.linger, None);
}

fn concat(commands: &[String]) -> Vec<u8> {
    commands.concat().into_bytes()
}

fn job_reply(reply: &CommandReply) -> &str {
    let job = reply.job_uuid.as_deref().expect("bgapi reply has Job-UUID");
    assert_eq!(reply.reply_text, format!("+OK Job-UUID: {job}"));
    job
}

// ---------------------------------------------------------------------------
// Every capture: framing, chunking, truncation
// ---------------------------------------------------------------------------

#[test]
fn every_capture_splits_into_the_listed_number_of_frames() {
    for (capture, expected) in CAPTURES {
        let messages = decode(capture);
        assert_eq!(messages.len(), expected, "{capture}");
        assert!(
            messages
                .iter()
                .all(|m| !matches!(m, Message::Unknown { .. })),
            "{capture}: every frame has a known type"
        );
    }
}

#[test]
fn header_order_is_not_fixed() {
    // Surprise 1: events put Content-Length first, api/response and log/data
    // Content-Type first, and log/data has six headers after Content-Length.
    let names = |f: &Frame| {
        f.headers
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect::<Vec<_>>()
    };
    let plain = frames("inbound-events-plain");
    let event = plain
        .iter()
        .find(|f| f.content_type() == Some("text/event-plain"))
        .unwrap();
    assert_eq!(names(event), ["Content-Length", "Content-Type"]);
    let api = plain
        .iter()
        .find(|f| f.content_type() == Some("api/response"))
        .unwrap();
    assert_eq!(names(api), ["Content-Type", "Content-Length"]);
    let log = frames("log-and-large-body")
        .into_iter()
        .find(|f| f.content_type() == Some("log/data"))
        .unwrap();
    assert_eq!(
        names(&log),
        [
            "Content-Type",
            "Content-Length",
            "Log-Level",
            "Text-Channel",
            "Log-File",
            "Log-Func",
            "Log-Line",
            "User-Data"
        ]
    );
}

// ---------------------------------------------------------------------------
// 1. inbound-auth-ok
// ---------------------------------------------------------------------------

#[test]
fn inbound_auth_ok() {
    let m = decode("inbound-auth-ok");
    assert_eq!(
        kinds(&m),
        [
            "auth/request",
            "command/reply",
            "api/response",
            "api/response",
            "api/response",
            "command/reply",
            "text/disconnect-notice"
        ]
    );
    assert_eq!(reply_texts(&m), ["+OK accepted", "+OK bye"]);
    let api = api_responses(&m);
    assert_eq!(api[0].body.len(), 338);
    assert!(
        api[0]
            .body
            .contains("FreeSWITCH (Version 1.11.1-release  64bit) is ready")
    );
    assert_eq!(api[1].body, "-ERR bogus_command Command not found!\n");
    assert_eq!(api[2].body, "-ERR No such channel!\n");
    // Surprise 14: api failures are api/response with -ERR bodies.
    assert!(api[1].is_err() && api[2].is_err() && !api[0].is_err());
    inbound_goodbye(notices(&m)[0]);

    let sent = [
        esl::auth("ClueCon").unwrap(),
        esl::api("status").unwrap(),
        esl::api("bogus_command").unwrap(),
        esl::api("uuid_getvar 00000000-0000-0000-0000-000000000000 foo").unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("inbound-auth-ok"));
}

// ---------------------------------------------------------------------------
// 2. inbound-auth-bad
// ---------------------------------------------------------------------------

#[test]
fn inbound_auth_bad() {
    let m = decode("inbound-auth-bad");
    assert_eq!(
        kinds(&m),
        ["auth/request", "command/reply", "text/disconnect-notice"]
    );
    let reply = replies(&m)[0];
    assert_eq!(reply.reply_text, "-ERR invalid");
    assert!(reply.is_err());
    inbound_goodbye(notices(&m)[0]);
    assert_eq!(
        concat(&[esl::auth("WrongPassword").unwrap()]),
        to_fs("inbound-auth-bad")
    );
}

// ---------------------------------------------------------------------------
// 3. inbound-events-plain
// ---------------------------------------------------------------------------

const A3: &str = "aaaaaaaa-0003-4000-8000-000000000001";
const B3: &str = "5ebd64cc-d791-42cb-9deb-ef9b25130bed";

#[test]
fn inbound_events_plain_frames_and_replies() {
    let m = decode("inbound-events-plain");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("auth/request", 1),
            ("command/reply", 4),
            ("api/response", 6),
            ("text/event-plain", 71),
            ("text/disconnect-notice", 1),
        ])
    );
    let texts = reply_texts(&m);
    assert_eq!(texts[0], "+OK accepted");
    assert_eq!(texts[1], "+OK event listener enabled plain");
    assert!(texts[2].starts_with("+OK Job-UUID: "));
    assert_eq!(texts[3], "+OK bye");
    // Surprise 5: the Job-UUID twice, in Reply-Text and its own header.
    let job = job_reply(replies(&m)[2]);

    let api: Vec<&str> = api_responses(&m).iter().map(|r| r.body.as_str()).collect();
    let dtmf_reply = format!("+OK {B3} sent DTMF 5.\n");
    assert_eq!(
        api,
        [
            B3, // uuid_getvar: the 36-byte B uuid, no newline (surprise 10)
            "+OK Message sent\n",
            "+OK Message sent\n",
            dtmf_reply.as_str(),
            "+OK Success\n",
            "+OK\n",
        ]
    );
    inbound_goodbye(notices(&m)[0]);

    let events = events(&m);
    let background = only(&events, "BACKGROUND_JOB");
    assert_eq!(background.job_uuid(), Some(job));
    // Surprise 4: the nested body and its own Content-Length.
    assert_eq!(background.body(), Some(format!("+OK {A3}\n").as_str()));
    assert_eq!(background.header("Content-Length"), Some("41"));
    assert_eq!(background.header("Job-Command"), Some("originate"));
    assert!(
        background
            .header("Job-Command-Arg")
            .unwrap()
            .starts_with(&format!("{{origination_uuid={A3},default_password=none,"))
    );
    assert_eq!(background.unique_id(), None);

    // Every api/bgapi produces an API event, here always after its reply.
    let (mut answered, mut api_events) = (0, 0);
    for message in &m {
        match message {
            Message::ApiResponse(_) => answered += 1,
            Message::CommandReply(r) if r.job_uuid.is_some() => answered += 1,
            Message::Event(e) if e.name() == Some("API") => {
                api_events += 1;
                assert!(api_events <= answered, "API event before its reply");
            }
            _ => {}
        }
    }
    assert_eq!(api_events, 7);

    let sent = [
        esl::auth("ClueCon").unwrap(),
        esl::event(EventFormat::Plain, &["ALL"]).unwrap(),
        esl::bgapi(&format!("originate {{origination_uuid={A3},default_password=none,enable_file_write_buffering=false,RECORD_PRE_BUFFER_FRAMES=1}}loopback/fspark &park"), None).unwrap(),
        esl::api(&format!("uuid_getvar {A3} other_loopback_leg_uuid")).unwrap(),
        esl::api(&format!("uuid_broadcast {A3} record_session::/var/spool/ivmfx/rec-plain.r8 aleg")).unwrap(),
        esl::api(&format!("uuid_broadcast {A3} playback::/var/spool/ivmfx/ramp.wav@@8000 aleg")).unwrap(),
        esl::api(&format!("uuid_send_dtmf {B3} 5")).unwrap(),
        esl::api(&format!("uuid_record {A3} stop /var/spool/ivmfx/rec-plain.r8")).unwrap(),
        esl::api(&format!("uuid_kill {A3}")).unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("inbound-events-plain"));
}

#[test]
fn inbound_events_plain_events() {
    let m = decode("inbound-events-plain");
    let events = events(&m);
    assert_eq!(events.len(), 71);
    assert!(events.iter().all(|e| e.format() == EventFormat::Plain));
    let mut expected = counts_of(&[
        ("CHANNEL_STATE", 13),
        ("API", 7),
        ("CHANNEL_CALLSTATE", 5),
        ("CHANNEL_EXECUTE", 5),
        ("CHANNEL_EXECUTE_COMPLETE", 5),
        ("CODEC", 4),
        ("CHANNEL_CREATE", 2),
        ("CHANNEL_ANSWER", 2),
        ("CHANNEL_PARK", 2),
        ("CHANNEL_UNPARK", 2),
        ("CHANNEL_HANGUP", 2),
        ("CHANNEL_HANGUP_COMPLETE", 2),
        ("CHANNEL_DESTROY", 2),
        ("COMMAND", 2),
        ("HEARTBEAT", 2),
        ("RE_SCHEDULE", 2),
    ]);
    for one in [
        "CHANNEL_UUID",
        "CHANNEL_OUTGOING",
        "CHANNEL_ORIGINATE",
        "CALL_UPDATE",
        "BACKGROUND_JOB",
        "RECORD_START",
        "MEDIA_BUG_START",
        "PLAYBACK_START",
        "DTMF",
        "PLAYBACK_STOP",
        "RECORD_STOP",
        "MEDIA_BUG_STOP",
    ] {
        expected.insert(one, 1);
    }
    assert_eq!(event_counts(&events), expected);

    let stop = only(&events, "PLAYBACK_STOP");
    assert_eq!(stop.header("Playback-Status"), Some("done"));
    assert_eq!(
        stop.header("Playback-File-Path"),
        Some("/var/spool/ivmfx/ramp.wav")
    );
    assert_eq!(stop.variable("playback_last_offset_pos"), Some("24000"));
    assert_eq!(stop.variable("playback_samples"), Some("16000"));
    assert_eq!(stop.variable("playback_ms"), Some("2000"));

    let dtmf = only(&events, "DTMF");
    assert_eq!(dtmf.header("DTMF-Digit"), Some("5"));
    assert_eq!(dtmf.header("DTMF-Duration"), Some("2000"));
    assert_eq!(dtmf.header("DTMF-Source"), Some("UNKNOWN"));
    assert_eq!(
        dtmf.unique_id(),
        Some(A3),
        "arrives on leg A, sent from leg B"
    );

    // Each HEARTBEAT is followed by a RE_SCHEDULE of the heartbeat task.
    for (i, e) in events.iter().enumerate() {
        if e.name() == Some("HEARTBEAT") {
            let next = events[i + 1];
            assert_eq!(next.name(), Some("RE_SCHEDULE"));
            assert_eq!(next.header("Task-Desc"), Some("heartbeat"));
        }
    }

    // Surprise 3: values are percent-decoded.
    let first = events[0];
    assert_eq!(first.header("FreeSWITCH-IPv6"), Some("fd00::2"));
    assert!(
        first
            .header("Event-Date-GMT")
            .unwrap()
            .starts_with("Mon, 23 Nov 2026 ")
    );
    assert_eq!(
        first.header("Core-UUID"),
        Some("fc0f8cbe-d7a0-4fbc-b825-71a97d6af211")
    );
}

#[test]
fn inbound_events_plain_surprises() {
    let m = decode("inbound-events-plain");
    let events = events(&m);

    // 15: duplicate header names; the first value wins, all are kept.
    for hangup in named(&events, "CHANNEL_HANGUP_COMPLETE") {
        assert_eq!(
            hangup.headers().get_all("Hangup-Cause").collect::<Vec<_>>(),
            ["NORMAL_CLEARING", "NORMAL_CLEARING"]
        );
    }
    let codecs_with_write = named(&events, "CODEC")
        .into_iter()
        .filter(|e| e.header("Channel-Write-Codec-Name").is_some())
        .collect::<Vec<_>>();
    assert!(!codecs_with_write.is_empty());
    for codec in codecs_with_write {
        assert_eq!(
            codec.headers().get_all("Channel-Write-Codec-Name").count(),
            2
        );
        assert_eq!(
            codec.headers().get_all("Channel-Write-Codec-Rate").count(),
            2
        );
        assert!(
            codec
                .headers()
                .iter()
                .any(|(n, _)| n == "Channel-Write-codec-bit-rate")
        );
    }
    let commands = named(&events, "COMMAND");
    assert_eq!(commands.len(), 2);
    for command in &commands {
        assert_eq!(
            command.headers().get_all("Event-Name").collect::<Vec<_>>(),
            ["COMMAND", "PRIVATE_COMMAND"]
        );
        assert_eq!(command.headers().get_all("Core-UUID").count(), 2);
        assert_eq!(command.header("call-command"), Some("execute"));
        assert_eq!(command.header("event-lock"), Some("true"));
        assert_eq!(command.header("lead-frames"), Some("5"));
    }
    assert_eq!(commands[0].event_sequence(), Some(686));
    assert_eq!(
        commands[0]
            .headers()
            .get_all("Event-Sequence")
            .collect::<Vec<_>>(),
        ["686", "691"]
    );
    assert_eq!(
        commands[0].header("execute-app-name"),
        Some("record_session")
    );
    assert_eq!(
        commands[1].header("execute-app-arg"),
        Some("/var/spool/ivmfx/ramp.wav@@8000")
    );

    // 16: a temporary Unique-ID before origination_uuid applies.
    let first_codec = named(&events, "CODEC")[0];
    let temporary = first_codec.unique_id().unwrap();
    assert_ne!(temporary, A3);
    let renamed = only(&events, "CHANNEL_UUID");
    assert_eq!(renamed.header("Old-Unique-ID"), Some(temporary));
    assert_eq!(renamed.unique_id(), Some(A3));

    // 17: Event-Sequence and the timestamp are not monotonic in arrival order.
    let sequences: Vec<u64> = events.iter().map(|e| e.event_sequence().unwrap()).collect();
    let timestamps: Vec<u64> = events
        .iter()
        .map(|e| e.header("Event-Date-Timestamp").unwrap().parse().unwrap())
        .collect();
    let decreasing = |v: &[u64]| v.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(decreasing(&sequences), 8);
    assert_eq!(decreasing(&timestamps), 2);
    assert_eq!(
        timestamps.iter().filter(|&&t| t == timestamps[0]).count(),
        30
    );

    // 13: channel variables only on some events.
    let has_variables = |e: &Event| e.headers().iter().any(|(n, _)| n.starts_with("variable_"));
    for name in [
        "DTMF",
        "CHANNEL_STATE",
        "CHANNEL_CALLSTATE",
        "CHANNEL_OUTGOING",
        "CODEC",
    ] {
        assert!(
            !named(&events, name).iter().any(|e| has_variables(e)),
            "{name}"
        );
    }
    for name in [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_PARK",
        "PLAYBACK_STOP",
        "RECORD_STOP",
    ] {
        assert!(
            named(&events, name).iter().all(|e| has_variables(e)),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. inbound-events-json
// ---------------------------------------------------------------------------

const A4: &str = "aaaaaaaa-0004-4000-8000-000000000001";
const B4: &str = "0dd8f1cc-2fdd-4127-beb1-0d5f5ace316d";

#[test]
fn inbound_events_json() {
    let m = decode("inbound-events-json");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("auth/request", 1),
            ("command/reply", 4),
            ("api/response", 6),
            ("text/event-json", 15),
            ("text/disconnect-notice", 1),
        ])
    );
    let texts = reply_texts(&m);
    assert_eq!(texts[1], "+OK event listener enabled json");
    let job = job_reply(replies(&m)[2]);
    assert_eq!(texts[3], "+OK bye");

    let events = events(&m);
    assert_eq!(
        event_counts(&events),
        counts_of(&[
            ("CHANNEL_EXECUTE_COMPLETE", 5),
            ("CHANNEL_ANSWER", 2),
            ("CHANNEL_HANGUP_COMPLETE", 2),
            ("BACKGROUND_JOB", 1),
            ("RECORD_START", 1),
            ("PLAYBACK_START", 1),
            ("DTMF", 1),
            ("PLAYBACK_STOP", 1),
            ("RECORD_STOP", 1),
        ])
    );
    let background = only(&events, "BACKGROUND_JOB");
    assert_eq!(background.job_uuid(), Some(job));
    // Surprise 4 in JSON: Content-Length is a string header, the body `_body`.
    assert_eq!(background.header("Content-Length"), Some("41"));
    assert_eq!(background.body(), Some(format!("+OK {A4}\n").as_str()));
    assert!(background.headers().iter().all(|(n, _)| n != "_body"));
    // Surprise 15 in JSON: a duplicate key survives.
    for hangup in named(&events, "CHANNEL_HANGUP_COMPLETE") {
        assert_eq!(hangup.headers().get_all("Hangup-Cause").count(), 2);
    }
    // Surprise 3: JSON values are plain strings, nothing to percent-decode.
    assert_eq!(events[0].header("FreeSWITCH-IPv6"), Some("fd00::2"));
    let dtmf = only(&events, "DTMF");
    assert_eq!(dtmf.header("DTMF-Digit"), Some("5"));

    let api: Vec<&str> = api_responses(&m).iter().map(|r| r.body.as_str()).collect();
    assert_eq!(api[0], B4);
    assert_eq!(api[5], "+OK\n");
    inbound_goodbye(notices(&m)[0]);

    let sent = [
        esl::auth("ClueCon").unwrap(),
        esl::event(
            EventFormat::Json,
            &[
                "CHANNEL_ANSWER",
                "CHANNEL_HANGUP_COMPLETE",
                "PLAYBACK_START",
                "PLAYBACK_STOP",
                "RECORD_START",
                "RECORD_STOP",
                "DTMF",
                "BACKGROUND_JOB",
                "CHANNEL_EXECUTE_COMPLETE",
            ],
        )
        .unwrap(),
        esl::bgapi(&format!("originate {{origination_uuid={A4},default_password=none,enable_file_write_buffering=false,RECORD_PRE_BUFFER_FRAMES=1}}loopback/fspark &park"), None).unwrap(),
        esl::api(&format!("uuid_getvar {A4} other_loopback_leg_uuid")).unwrap(),
        esl::api(&format!("uuid_broadcast {A4} record_session::/var/spool/ivmfx/rec-json.r8 aleg")).unwrap(),
        esl::api(&format!("uuid_broadcast {A4} playback::/var/spool/ivmfx/ramp.wav@@8000 aleg")).unwrap(),
        esl::api(&format!("uuid_send_dtmf {B4} 5")).unwrap(),
        esl::api(&format!("uuid_record {A4} stop /var/spool/ivmfx/rec-json.r8")).unwrap(),
        esl::api(&format!("uuid_kill {A4}")).unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("inbound-events-json"));
}

// ---------------------------------------------------------------------------
// 5. inbound-events-xml
// ---------------------------------------------------------------------------

const A5: &str = "aaaaaaaa-0005-4000-8000-000000000001";

#[test]
fn inbound_events_xml() {
    let m = decode("inbound-events-xml");
    assert_eq!(
        kinds(&m),
        [
            "auth/request",
            "command/reply",
            "command/reply",
            "command/reply",
            "text/event-xml",
            "text/event-xml",
            "api/response",
            "command/reply",
            "text/disconnect-notice"
        ]
    );
    let texts = reply_texts(&m);
    assert_eq!(texts[0], "+OK accepted");
    assert_eq!(texts[1], "+OK event listener enabled xml");
    job_reply(replies(&m)[2]);
    assert_eq!(texts[3], "+OK bye");
    assert_eq!(api_responses(&m)[0].body, "+OK\n");
    inbound_goodbye(notices(&m)[0]);

    let events = events(&m);
    assert!(events.iter().all(|e| e.name() == Some("CHANNEL_ANSWER")));
    assert_eq!(events[0].unique_id(), Some(A5), "leg A first");
    let leg_b = events[1].unique_id().unwrap();
    assert_ne!(leg_b, A5);
    assert_eq!(events[0].variable("other_loopback_leg_uuid"), Some(leg_b));
    assert_eq!(events[1].variable("loopback_leg"), Some("B"));
    // Surprise 3 inside XML elements: percent-encoded, decoded here.
    assert_eq!(events[0].header("FreeSWITCH-IPv6"), Some("fd00::2"));
    assert_eq!(
        events[0].header("Caller-Callee-ID-Name"),
        Some("Outbound Call")
    );
    assert!(events.iter().all(|e| e.body().is_none()));

    let xml_lengths: Vec<usize> = frames("inbound-events-xml")
        .iter()
        .filter(|f| f.content_type() == Some("text/event-xml"))
        .map(|f| f.body.len())
        .collect();
    assert_eq!(xml_lengths, [4593, 4456]);

    let sent = [
        esl::auth("ClueCon").unwrap(),
        esl::event(EventFormat::Xml, &["CHANNEL_ANSWER"]).unwrap(),
        esl::bgapi(
            &format!(
                "originate {{origination_uuid={A5},default_password=none}}loopback/fspark &park"
            ),
            None,
        )
        .unwrap(),
        esl::api(&format!("uuid_kill {A5}")).unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("inbound-events-xml"));
}

// ---------------------------------------------------------------------------
// 6. inbound-filter-and-sendmsg
// ---------------------------------------------------------------------------

const A6: &str = "aaaaaaaa-0006-4000-8000-000000000001";
const E6: &str = "eeeeeeee-0006-4000-8000-00000000e001";
const NO_SUCH: &str = "00000000-0000-0000-0000-000000000000";

#[test]
fn inbound_filter_and_sendmsg() {
    let m = decode("inbound-filter-and-sendmsg");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("auth/request", 1),
            ("command/reply", 9),
            ("text/event-plain", 9),
            ("text/disconnect-notice", 1),
        ])
    );
    let texts = reply_texts(&m);
    let added = format!("+OK filter added. [Unique-ID]=[{A6}]");
    let invalid = format!("-ERR invalid session id [{NO_SUCH}]");
    let deleted = format!("+OK filter deleted. [Unique-ID][{A6}]");
    assert_eq!(
        texts[..3],
        [
            "+OK accepted",
            "+OK event listener enabled plain",
            added.as_str()
        ]
    );
    job_reply(replies(&m)[3]);
    assert_eq!(
        texts[4..],
        ["+OK", invalid.as_str(), "+OK", deleted.as_str(), "+OK bye"]
    );
    assert!(replies(&m)[5].is_err());

    let events = events(&m);
    assert_eq!(
        event_labels(&events),
        [
            "CHANNEL_ANSWER",
            "CHANNEL_EXECUTE park",
            "CHANNEL_EXECUTE playback",
            "PLAYBACK_START",
            "PLAYBACK_STOP",
            "CHANNEL_EXECUTE_COMPLETE playback",
            "CHANNEL_HANGUP",
            "CHANNEL_EXECUTE_COMPLETE park",
            "CHANNEL_HANGUP_COMPLETE",
        ]
    );
    // Surprise 6: the filter also dropped BACKGROUND_JOB and leg B.
    assert!(events.iter().all(|e| e.unique_id() == Some(A6)));
    // Surprise 12: our Event-UUID comes back as Application-UUID.
    assert_eq!(events[2].application_uuid(), Some(E6));
    assert_eq!(events[5].application_uuid(), Some(E6));
    assert_eq!(events[5].application_response(), Some("FILE PLAYED"));
    // Surprise 11: park, ended by hangup, reports the stale playback response.
    assert_eq!(events[7].application_response(), Some("FILE PLAYED"));
    assert_ne!(events[7].application_uuid(), Some(E6));
    inbound_goodbye(notices(&m)[0]);

    let playback = Execute::new("playback")
        .arg("/var/spool/ivmfx/ramp.wav@@16000")
        .event_lock(true)
        .event_uuid(E6);
    let sent = [
        esl::auth("ClueCon").unwrap(),
        esl::event(
            EventFormat::Plain,
            &[
                "CHANNEL_ANSWER",
                "CHANNEL_EXECUTE",
                "CHANNEL_EXECUTE_COMPLETE",
                "PLAYBACK_START",
                "PLAYBACK_STOP",
                "CHANNEL_HANGUP",
                "CHANNEL_HANGUP_COMPLETE",
                "BACKGROUND_JOB",
            ],
        )
        .unwrap(),
        esl::filter("Unique-ID", A6).unwrap(),
        esl::bgapi(
            &format!(
                "originate {{origination_uuid={A6},default_password=none}}loopback/fspark &park"
            ),
            None,
        )
        .unwrap(),
        esl::sendmsg(Some(A6), &SendMsg::Execute(playback)).unwrap(),
        esl::sendmsg(
            Some(NO_SUCH),
            &SendMsg::Execute(Execute::new("playback").arg("/var/spool/ivmfx/ramp.wav")),
        )
        .unwrap(),
        esl::sendmsg(
            Some(A6),
            &SendMsg::Hangup {
                cause: "NORMAL_CLEARING",
            },
        )
        .unwrap(),
        esl::filter_delete("Unique-ID", Some(A6)).unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("inbound-filter-and-sendmsg"));
}

// ---------------------------------------------------------------------------
// 7, 8, 8b. outbound sessions
// ---------------------------------------------------------------------------

/// The connect reply (surprise 2) and the controlled channel's UUID.
fn check_connect_reply(capture: &str, m: &[Message]) -> String {
    let first_frame = frames(capture).remove(0);
    assert_eq!(first_frame.headers.get("Content-Length"), None);
    assert_eq!(first_frame.headers.get("Reply-Text"), Some("%2BOK%0A"));
    assert!(first_frame.body.is_empty());

    let Message::CommandReply(reply) = &m[0] else {
        panic!("{capture}: the connect reply comes first")
    };
    assert_eq!(reply.reply_text, "+OK");
    assert!(reply.is_ok());
    assert_eq!(reply.headers.get("Socket-Mode"), Some("async"));
    assert_eq!(reply.headers.get("Control"), Some("full"));
    let data = reply.channel_data.as_ref().expect("channel data");
    assert_eq!(data.name(), Some("CHANNEL_DATA"));
    assert_eq!(
        data.variable("current_application_data"),
        Some("127.0.0.1:8084 async full")
    );
    assert_eq!(data.header("Channel-Callee-ID-Name"), Some("Outbound Call"));
    assert_eq!(data.header("Channel-Name"), Some("loopback/eslsock-b"));
    data.unique_id().expect("unique id").to_owned()
}

fn check_outbound_disconnect(n: &DisconnectNotice, b_uuid: &str) {
    assert_eq!(n.disposition, Some(Disposition::Disconnect));
    assert_eq!(n.controlled_session_uuid.as_deref(), Some(b_uuid));
    assert_eq!(n.body, GOODBYE);
    assert_eq!(n.linger, None);
}

fn check_linger_notice(n: &DisconnectNotice, b_uuid: &str, linger: LingerTime) {
    assert!(n.is_linger());
    assert_eq!(n.controlled_session_uuid.as_deref(), Some(b_uuid));
    assert_eq!(n.channel_name.as_deref(), Some("loopback/eslsock-b"));
    assert_eq!(n.linger, Some(linger));
    assert_eq!(n.body, "");
}

const PLAYBACK_12000: &str = "/var/spool/ivmfx/ramp.wav@@12000";

#[test]
fn outbound_basic() {
    let m = decode("outbound-basic");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("command/reply", 7),
            ("text/event-plain", 14),
            ("text/disconnect-notice", 2),
        ])
    );
    let b_uuid = check_connect_reply("outbound-basic", &m);
    assert_eq!(
        reply_texts(&m)[1..],
        [
            "+OK Events Enabled",
            "+OK will linger",
            "+OK event listener enabled plain",
            "+OK",
            "+OK",
            "+OK bye"
        ]
    );
    // Surprise 7: CHANNEL_PARK arrives before the reply to `event plain`.
    assert_eq!(
        kinds(&m)[..5],
        [
            "command/reply",
            "command/reply",
            "command/reply",
            "text/event-plain",
            "command/reply"
        ]
    );
    let events = events(&m);
    // Surprise 8: myevents is not narrowed by the later `event plain` list.
    assert_eq!(
        event_labels(&events),
        [
            "CHANNEL_PARK",
            "CHANNEL_EXECUTE answer",
            "CHANNEL_ANSWER",
            "CHANNEL_EXECUTE_COMPLETE answer",
            "CHANNEL_EXECUTE playback",
            "DTMF",
            "PLAYBACK_STOP",
            "CHANNEL_EXECUTE_COMPLETE playback",
            "CHANNEL_UNPARK",
            "CHANNEL_EXECUTE_COMPLETE socket",
            "CHANNEL_HANGUP",
            "CHANNEL_STATE CS_HANGUP",
            "CHANNEL_STATE CS_REPORTING",
            "CHANNEL_HANGUP_COMPLETE",
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.unique_id() == Some(b_uuid.as_str()))
    );
    assert_eq!(events[4].header("Application-Data"), Some(PLAYBACK_12000));
    // Surprise 11: the socket app's completion reports the stale response.
    assert_eq!(events[9].application_response(), Some("FILE PLAYED"));

    // Surprise 9: linger notice, then (after exit) the disconnect notice.
    assert_eq!(
        kinds(&m)[m.len() - 3..],
        [
            "text/disconnect-notice",
            "command/reply",
            "text/disconnect-notice"
        ]
    );
    let n = notices(&m);
    check_linger_notice(n[0], &b_uuid, LingerTime::Forever);
    check_outbound_disconnect(n[1], &b_uuid);

    let playback = Execute::new("playback")
        .arg(PLAYBACK_12000)
        .event_lock(true);
    let sent = [
        esl::connect(),
        esl::myevents(),
        esl::linger(None),
        esl::event(
            EventFormat::Plain,
            &["CHANNEL_EXECUTE_COMPLETE", "PLAYBACK_STOP", "DTMF"],
        )
        .unwrap(),
        esl::sendmsg(None, &SendMsg::Execute(Execute::new("answer"))).unwrap(),
        esl::sendmsg(None, &SendMsg::Execute(playback)).unwrap(),
        esl::exit(),
    ];
    assert_eq!(concat(&sent), to_fs("outbound-basic"));
}

#[test]
fn outbound_nolinger() {
    let m = decode("outbound-nolinger");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("command/reply", 6),
            ("text/event-plain", 14),
            ("text/disconnect-notice", 1),
        ])
    );
    let b_uuid = check_connect_reply("outbound-nolinger", &m);
    assert_eq!(
        reply_texts(&m)[1..],
        [
            "+OK Events Enabled",
            "+OK event listener enabled plain",
            "+OK",
            "+OK",
            "+OK"
        ]
    );
    assert_eq!(
        event_labels(&events(&m)),
        [
            "CHANNEL_PARK",
            "CHANNEL_EXECUTE answer",
            "CHANNEL_ANSWER",
            "CHANNEL_EXECUTE_COMPLETE answer",
            "CHANNEL_EXECUTE playback",
            "DTMF",
            "PLAYBACK_STOP",
            "CHANNEL_EXECUTE_COMPLETE playback",
            "CHANNEL_HANGUP",
            "CHANNEL_UNPARK",
            "CHANNEL_EXECUTE_COMPLETE socket",
            "CHANNEL_STATE CS_HANGUP",
            "CHANNEL_STATE CS_REPORTING",
            "CHANNEL_HANGUP_COMPLETE",
        ]
    );
    // All final events arrive before the notice, which is last.
    assert!(matches!(m.last(), Some(Message::DisconnectNotice(_))));
    check_outbound_disconnect(notices(&m)[0], &b_uuid);

    let playback = Execute::new("playback")
        .arg(PLAYBACK_12000)
        .event_lock(true);
    let sent = [
        esl::connect(),
        esl::myevents(),
        esl::event(
            EventFormat::Plain,
            &["CHANNEL_EXECUTE_COMPLETE", "PLAYBACK_STOP", "DTMF"],
        )
        .unwrap(),
        esl::sendmsg(None, &SendMsg::Execute(Execute::new("answer"))).unwrap(),
        esl::sendmsg(None, &SendMsg::Execute(playback)).unwrap(),
        esl::sendmsg(
            None,
            &SendMsg::Hangup {
                cause: "NORMAL_CLEARING",
            },
        )
        .unwrap(),
    ];
    assert_eq!(concat(&sent), to_fs("outbound-nolinger"));
}

#[test]
fn outbound_linger_timeout() {
    let m = decode("outbound-linger-timeout");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("command/reply", 4),
            ("text/event-plain", 10),
            ("text/disconnect-notice", 2),
        ])
    );
    let b_uuid = check_connect_reply("outbound-linger-timeout", &m);
    assert_eq!(
        reply_texts(&m)[1..],
        ["+OK Events Enabled", "+OK will linger 2 seconds", "+OK"]
    );
    let events = events(&m);
    assert_eq!(
        events.last().and_then(|e| e.name()),
        Some("CHANNEL_HANGUP_COMPLETE")
    );
    assert_eq!(
        kinds(&m)[m.len() - 2..],
        ["text/disconnect-notice", "text/disconnect-notice"]
    );
    let n = notices(&m);
    check_linger_notice(n[0], &b_uuid, LingerTime::Seconds(2));
    check_outbound_disconnect(n[1], &b_uuid);

    let sent = [
        esl::connect(),
        esl::myevents(),
        esl::linger(Some(2)),
        esl::sendmsg(None, &SendMsg::Execute(Execute::new("answer"))).unwrap(),
    ];
    assert_eq!(concat(&sent), to_fs("outbound-linger-timeout"));
}

// ---------------------------------------------------------------------------
// 9. log-and-large-body
// ---------------------------------------------------------------------------

#[test]
fn log_and_large_body() {
    let m = decode("log-and-large-body");
    assert_eq!(
        kind_counts(&m),
        counts_of(&[
            ("auth/request", 1),
            ("command/reply", 4),
            ("api/response", 7),
            ("log/data", 46),
            ("text/disconnect-notice", 1),
        ])
    );
    assert_eq!(
        reply_texts(&m),
        [
            "+OK accepted",
            "+OK log level 7 [7]",
            "+OK no longer logging",
            "+OK bye"
        ]
    );
    let api = api_responses(&m);
    let uuids: Vec<String> = (1..=4)
        .map(|n| format!("aaaaaaaa-0009-4000-8000-00000000000{n}"))
        .collect();
    for (reply, uuid) in api[..4].iter().zip(&uuids) {
        assert_eq!(reply.body, format!("+OK {uuid}\n"));
    }
    // `show channels as json`: 6900 bytes, no final newline (surprise 10).
    let channels = &api[4].body;
    assert_eq!(channels.len(), 6900);
    assert!(!channels.ends_with('\n'));
    let parsed: serde_json::Value = serde_json::from_str(channels).unwrap();
    assert_eq!(parsed["row_count"], 8);
    assert!(api[5..].iter().all(|r| r.is_ok()));

    let logs = logs(&m);
    assert!(logs.iter().all(|l| matches!(l.level, Some(5) | Some(7))));
    assert!(logs.iter().any(|l| l.level == Some(5)));
    assert!(logs.iter().any(|l| l.level == Some(7)));
    assert!(logs.iter().all(|l| l.text.ends_with('\n')));
    let hangup = logs
        .iter()
        .find(|l| l.function.as_deref() == Some("switch_ivr_kill_uuid"))
        .expect("the README's example log line");
    assert_eq!(hangup.level, Some(5));
    assert_eq!(hangup.file.as_deref(), Some("switch_ivr.c"));
    assert_eq!(hangup.line, Some(4404));
    assert_eq!(hangup.user_data.as_deref(), Some(uuids[0].as_str()));
    assert_eq!(hangup.headers.get("Text-Channel"), Some("0"));
    assert_eq!(
        hangup.text,
        "2026-11-23 23:30:46.202956 96.93% [NOTICE] switch_ivr.c:4404 Hangup \
         loopback/fspark-a [CS_EXECUTE] [NORMAL_CLEARING]\n"
    );
    inbound_goodbye(notices(&m)[0]);

    let mut sent = vec![esl::auth("ClueCon").unwrap()];
    for uuid in &uuids {
        sent.push(
            esl::api(&format!(
                "originate {{origination_uuid={uuid},default_password=none}}loopback/fspark &park"
            ))
            .unwrap(),
        );
    }
    sent.extend([
        esl::api("show channels as json").unwrap(),
        esl::log("7").unwrap(),
        esl::api(&format!("uuid_kill {}", uuids[0])).unwrap(),
        esl::nolog(),
        esl::api("hupall NORMAL_CLEARING").unwrap(),
        esl::exit(),
    ]);
    assert_eq!(concat(&sent), to_fs("log-and-large-body"));
}
