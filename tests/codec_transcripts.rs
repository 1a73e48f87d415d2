//! One harness for every wire decoder: FastAGI, AMI, the FreeSWITCH Event
//! Socket and SMPP, each tested from transcript files in the same way (after
//! rust-analyzer's data-driven parser tests).
//!
//! Layout, per codec directory `tests/data/<codec>/`:
//!
//! * `NAME.from-<peer>.bin` — bytes a real peer sent (and for SMPP also
//!   `NAME.to-smsc.bin`, the client side, which the same codec decodes);
//! * `malformed/NAME.bin` — hostile or broken input (truncated, oversized
//!   lengths, bad framing), and `synthetic/NAME.bin` — rare but valid wire
//!   cases no capture shows; both written by `tests/data/make_corpora.py`;
//! * next to each input, `<input without .bin>.decoded` — the expected
//!   decoding: every frame the decoder yields, rendered in full (all headers,
//!   bodies, fields), then how the input ended: `end: clean`,
//!   `end: N bytes of an unfinished frame`, or `error: <message>` for a fatal
//!   error (non-fatal ones show as `skipped: <message>` and decoding goes on).
//!
//! A new wire quirk costs one input file: run
//! `UPDATE_EXPECT=1 cargo test --test codec_transcripts`, read the new
//! `.decoded` file, commit both. Without `UPDATE_EXPECT` a missing or
//! different snapshot fails the test, so any change in a decoder's output is
//! seen.
//!
//! Every input is also decoded byte by byte and in several chunk sizes (same
//! result as whole, so a capture cut at any offset decodes to a prefix
//! without an error); real captures must decode without any error and end
//! between frames; every malformed input must show an error (fatal, or a
//! skipped frame) or end in an unfinished frame, never a panic. Property tests feed random bytes and
//! mangled captures to each decoder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

/// What one decoder needs to be driven from a transcript.
trait Codec {
    /// Directory under `tests/data/`.
    const DIR: &'static str;
    fn new() -> Self;
    /// Is `file_name` (ending in `.bin`) a real transcript of this codec?
    fn is_transcript(file_name: &str) -> bool {
        file_name.contains(".from-")
    }
    /// Decodes what it can from the front of `buf`, appending one rendered
    /// block per frame to `out`, until more bytes are needed.
    /// `Err(message)` is fatal: the stream cannot be framed any more.
    fn step(&mut self, buf: &mut BytesMut, out: &mut Vec<String>) -> Result<(), String>;
    /// Bytes seen but not yet decoded into a frame, when the input ends.
    fn unfinished(&self, buf: &BytesMut) -> usize {
        buf.len()
    }
}

/// Feeds `bytes` in pieces of the given sizes (cycled) and renders every
/// frame and how the input ended.
fn decode_chunked<C: Codec>(bytes: &[u8], sizes: &[usize]) -> String {
    let mut codec = C::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut sizes = sizes.iter().copied().map(|s| s.max(1)).cycle();
    loop {
        let size = sizes.next().unwrap_or(bytes.len().max(1));
        let end = (offset + size).min(bytes.len());
        buf.extend_from_slice(&bytes[offset..end]);
        offset = end;
        if let Err(error) = codec.step(&mut buf, &mut out) {
            out.push(format!("error: {error}\n"));
            return out.concat();
        }
        if offset == bytes.len() {
            break;
        }
    }
    match codec.unfinished(&buf) {
        0 => out.push("end: clean\n".into()),
        n => out.push(format!("end: {n} bytes of an unfinished frame\n")),
    }
    out.concat()
}

fn decode_whole<C: Codec>(bytes: &[u8]) -> String {
    decode_chunked::<C>(bytes, &[bytes.len().max(1)])
}

fn data_dir<C: Codec>() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(C::DIR)
}

/// `.bin` files in `dir` accepted by `keep`, sorted.
fn inputs_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            (name.ends_with(".bin") && keep(name)).then_some(path)
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no inputs in {}", dir.display());
    paths
}

fn transcripts<C: Codec>() -> Vec<PathBuf> {
    inputs_in(&data_dir::<C>(), C::is_transcript)
}

fn malformed<C: Codec>() -> Vec<PathBuf> {
    inputs_in(&data_dir::<C>().join("malformed"), |_| true)
}

/// Hand-made inputs for rare but valid wire cases (may be absent).
fn synthetic<C: Codec>() -> Vec<PathBuf> {
    let dir = data_dir::<C>().join("synthetic");
    if dir.exists() {
        inputs_in(&dir, |_| true)
    } else {
        Vec::new()
    }
}

fn snapshot_path(input: &Path) -> PathBuf {
    input.with_extension("decoded")
}

/// Compares `actual` with the snapshot next to `input`, or rewrites it when
/// `UPDATE_EXPECT` is set.
fn check_snapshot(input: &Path, actual: &str) {
    let path = snapshot_path(input);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `UPDATE_EXPECT=1 cargo test --test codec_transcripts` and review it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the decoding of {} first at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (rerun with UPDATE_EXPECT=1 if the change is intended, and review the diff)",
            path.display(),
            input.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

fn has_skipped(rendered: &str) -> bool {
    rendered.lines().any(|line| line.starts_with("skipped: "))
}

const CHUNK_SIZES: &[&[usize]] = &[&[1], &[2], &[3], &[7], &[64], &[1000], &[5, 1, 300, 2]];

fn check_codec<C: Codec>() {
    for input in transcripts::<C>() {
        let bytes = std::fs::read(&input).unwrap();
        let whole = decode_whole::<C>(&bytes);
        assert!(
            whole.ends_with("end: clean\n") && !has_skipped(&whole),
            "{}: a real capture must decode without errors and end between frames:\n{}",
            input.display(),
            whole.lines().last().unwrap_or_default()
        );
        check_snapshot(&input, &whole);
        for sizes in CHUNK_SIZES {
            assert_eq!(
                decode_chunked::<C>(&bytes, sizes),
                whole,
                "{} fed in pieces of {sizes:?}",
                input.display()
            );
        }
    }
    for input in synthetic::<C>() {
        let bytes = std::fs::read(&input).unwrap();
        let whole = decode_whole::<C>(&bytes);
        check_snapshot(&input, &whole);
        for sizes in CHUNK_SIZES {
            assert_eq!(
                decode_chunked::<C>(&bytes, sizes),
                whole,
                "{} fed in pieces of {sizes:?}",
                input.display()
            );
        }
    }
    for input in malformed::<C>() {
        let bytes = std::fs::read(&input).unwrap();
        let whole = decode_whole::<C>(&bytes);
        assert!(
            !whole.ends_with("end: clean\n") || has_skipped(&whole),
            "{}: malformed input must give an error or stay unfinished",
            input.display()
        );
        check_snapshot(&input, &whole);
        for sizes in CHUNK_SIZES {
            // A cap may trip at a different byte; it must not panic.
            let _ = decode_chunked::<C>(&bytes, sizes);
        }
    }
}

/// For property tests: one transcript's bytes.
fn pick_transcript<C: Codec>(index: prop::sample::Index) -> Vec<u8> {
    let all = transcripts::<C>();
    std::fs::read(&all[index.index(all.len())]).unwrap()
}

fn check_random_chunking<C: Codec>(index: prop::sample::Index, sizes: &[usize]) {
    let bytes = pick_transcript::<C>(index);
    assert_eq!(
        decode_chunked::<C>(&bytes, sizes),
        decode_whole::<C>(&bytes)
    );
}

/// Everything before the line saying how the input ended.
fn frames_part(rendered: &str) -> &str {
    let body = rendered.strip_suffix('\n').unwrap_or(rendered);
    body.rfind('\n').map_or("", |at| &body[..=at])
}

fn check_mangled<C: Codec>(
    index: prop::sample::Index,
    edits: &[(prop::sample::Index, u8)],
    size: usize,
) {
    let mut bytes = pick_transcript::<C>(index);
    for (at, byte) in edits {
        let at = at.index(bytes.len());
        bytes[at] = *byte;
    }
    // Whole and in pieces agree on every frame before the end (a cap may
    // trip at a different byte, never after a different frame).
    let whole = decode_whole::<C>(&bytes);
    let pieces = decode_chunked::<C>(&bytes, &[size]);
    assert_eq!(frames_part(&whole), frames_part(&pieces));
}

fn check_noise<C: Codec>(bytes: &[u8], sizes: &[usize]) {
    let _ = decode_whole::<C>(bytes);
    let _ = decode_chunked::<C>(bytes, sizes);
}

/// A string as one line: control characters escaped, the rest as is.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_default());
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes as one line: printable ASCII as is, the rest `\xNN`.
fn esc_bytes(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn push_fields<'a>(block: &mut String, fields: impl Iterator<Item = (&'a str, &'a str)>) {
    for (name, value) in fields {
        let _ = writeln!(block, "  {}: {}", esc(name), esc(value));
    }
}

// ---------------------------------------------------------------------------
// FastAGI
// ---------------------------------------------------------------------------

mod agi {
    use super::*;
    use ivm::proto::agi::{AgiEnvironment, decode_env, decode_reply};

    /// Before the environment, then replies.
    pub struct Agi {
        have_env: bool,
    }

    fn render_env(env: &AgiEnvironment) -> String {
        let mut block = format!(
            "env vars={} script_path={:?} query={:?}\n",
            env.len(),
            env.script_path(),
            env.query_pairs()
        );
        push_fields(&mut block, env.vars());
        block
    }

    impl Codec for Agi {
        const DIR: &'static str = "agi";

        fn new() -> Self {
            Agi { have_env: false }
        }

        fn step(&mut self, buf: &mut BytesMut, out: &mut Vec<String>) -> Result<(), String> {
            loop {
                if !self.have_env {
                    let before = buf.len();
                    match decode_env(buf).map_err(|e| e.to_string())? {
                        Some(env) => {
                            out.push(render_env(&env));
                            self.have_env = true;
                        }
                        None => {
                            assert_eq!(buf.len(), before, "a partial environment consumed bytes");
                            return Ok(());
                        }
                    }
                } else {
                    match decode_reply(buf).map_err(|e| e.to_string())? {
                        Some(reply) => out.push(format!("reply {reply:?}\n")),
                        None => return Ok(()),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// AMI
// ---------------------------------------------------------------------------

mod ami {
    use super::*;
    use ivm::proto::ami::{AmiDecoder, AmiFrame};

    pub struct Ami(AmiDecoder);

    impl Codec for Ami {
        const DIR: &'static str = "ami";

        fn new() -> Self {
            Ami(AmiDecoder::new())
        }

        fn step(&mut self, buf: &mut BytesMut, out: &mut Vec<String>) -> Result<(), String> {
            loop {
                match self.0.decode(buf) {
                    Ok(Some(AmiFrame::Banner(version))) => {
                        out.push(format!("banner {}\n", esc(&version)))
                    }
                    Ok(Some(AmiFrame::Response(message))) => {
                        let mut block = "response\n".to_owned();
                        push_fields(&mut block, message.fields());
                        out.push(block);
                    }
                    Ok(Some(AmiFrame::Event(message))) => {
                        let mut block = "event\n".to_owned();
                        push_fields(&mut block, message.fields());
                        out.push(block);
                    }
                    Ok(None) => return Ok(()),
                    Err(e) if e.is_fatal() => return Err(e.to_string()),
                    Err(e) => out.push(format!("skipped: {e}\n")),
                }
            }
        }

        fn unfinished(&self, buf: &BytesMut) -> usize {
            // A message may be half-read with its lines already consumed.
            if self.0.is_mid_message(buf) {
                buf.len().max(1)
            } else {
                0
            }
        }
    }
}

// ---------------------------------------------------------------------------
// FreeSWITCH Event Socket
// ---------------------------------------------------------------------------

mod esl {
    use super::*;
    use ivm::proto::esl::{Decoder, Event, Headers, Message};

    pub struct Esl(Decoder);

    fn push_headers(block: &mut String, headers: &Headers) {
        push_fields(block, headers.iter());
    }

    fn render_event(block: &mut String, event: &Event) {
        let _ = writeln!(block, "event format={}", event.format());
        push_headers(block, event.headers());
        if let Some(body) = event.body() {
            let _ = writeln!(block, "  body: {}", esc(body));
        }
    }

    fn render(message: &Message) -> String {
        let mut block = String::new();
        match message {
            Message::AuthRequest => block.push_str("auth/request\n"),
            Message::CommandReply(reply) => {
                let _ = writeln!(
                    block,
                    "command/reply reply_text={:?} job_uuid={:?}",
                    reply.reply_text, reply.job_uuid
                );
                push_headers(&mut block, &reply.headers);
                if let Some(event) = &reply.channel_data {
                    block.push_str("channel_data ");
                    render_event(&mut block, event);
                }
            }
            Message::ApiResponse(response) => {
                let _ = writeln!(block, "api/response body={}", esc(&response.body));
            }
            Message::Event(event) => render_event(&mut block, event),
            Message::DisconnectNotice(notice) => {
                let _ = writeln!(
                    block,
                    "disconnect-notice disposition={:?} controlled_session_uuid={:?} \
                     channel_name={:?} linger={:?}\n  body: {}",
                    notice.disposition,
                    notice.controlled_session_uuid,
                    notice.channel_name,
                    notice.linger,
                    esc(&notice.body)
                );
            }
            Message::LogData(log) => {
                let _ = writeln!(
                    block,
                    "log/data level={:?} file={:?} function={:?} line={:?} user_data={:?}\n  \
                     text: {}",
                    log.level,
                    log.file,
                    log.function,
                    log.line,
                    log.user_data,
                    esc(&log.text)
                );
                push_headers(&mut block, &log.headers);
            }
            Message::RudeRejection { body } => {
                let _ = writeln!(block, "rude-rejection body={}", esc(body));
            }
            Message::Unknown {
                content_type,
                frame,
            } => {
                let _ = writeln!(
                    block,
                    "unknown content_type={content_type:?}\n  body: {}",
                    esc_bytes(&frame.body)
                );
                push_headers(&mut block, &frame.headers);
            }
        }
        block
    }

    impl Codec for Esl {
        const DIR: &'static str = "esl";

        fn new() -> Self {
            Esl(Decoder::new())
        }

        fn step(&mut self, buf: &mut BytesMut, out: &mut Vec<String>) -> Result<(), String> {
            loop {
                let before = buf.len();
                match self.0.decode(buf) {
                    Ok(Some(message)) => out.push(render(&message)),
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "an unfinished frame consumed bytes");
                        return Ok(());
                    }
                    Err(e) if e.is_fatal() => return Err(e.to_string()),
                    Err(e) => out.push(format!("skipped: {e}\n")),
                }
            }
        }

        fn unfinished(&self, buf: &BytesMut) -> usize {
            // Blank lines between frames are not a frame.
            buf.iter().filter(|b| !matches!(b, b'\r' | b'\n')).count()
        }
    }
}

// ---------------------------------------------------------------------------
// SMPP
// ---------------------------------------------------------------------------

mod smpp {
    use super::*;
    use ivm::notify::smpp::pdu::{self, Body, Pdu, ShortMessage};

    pub struct Smpp;

    fn command_name(id: u32) -> String {
        let name = match id & !pdu::RESPONSE {
            pdu::BIND_RECEIVER => "bind_receiver",
            pdu::BIND_TRANSMITTER => "bind_transmitter",
            pdu::BIND_TRANSCEIVER => "bind_transceiver",
            pdu::SUBMIT_SM => "submit_sm",
            pdu::DELIVER_SM => "deliver_sm",
            pdu::UNBIND => "unbind",
            pdu::ENQUIRE_LINK => "enquire_link",
            0 if id == pdu::GENERIC_NACK => return "generic_nack".into(),
            _ => return format!("command_{id:#010x}"),
        };
        if id & pdu::RESPONSE != 0 {
            format!("{name}_resp")
        } else {
            name.into()
        }
    }

    fn render_short_message(block: &mut String, sm: &ShortMessage) {
        let _ = writeln!(
            block,
            "  service_type={:?} source={}/{}/{:?} destination={}/{}/{:?}\n  \
             esm_class={:#04x} protocol_id={} priority={} schedule={:?} validity={:?}\n  \
             registered_delivery={} replace_if_present={} data_coding={} sm_default_msg_id={}\n  \
             short_message: {}",
            sm.service_type,
            sm.source_addr_ton,
            sm.source_addr_npi,
            sm.source_addr,
            sm.dest_addr_ton,
            sm.dest_addr_npi,
            sm.destination_addr,
            sm.esm_class,
            sm.protocol_id,
            sm.priority_flag,
            sm.schedule_delivery_time,
            sm.validity_period,
            sm.registered_delivery,
            sm.replace_if_present_flag,
            sm.data_coding,
            sm.sm_default_msg_id,
            esc_bytes(&sm.short_message)
        );
        for tlv in &sm.tlvs {
            let _ = writeln!(block, "  tlv {:#06x}: {}", tlv.tag, esc_bytes(&tlv.value));
        }
    }

    fn render(pdu: &Pdu) -> String {
        let mut block = format!(
            "{} status={:#010x} sequence={}\n",
            command_name(pdu.command_id),
            pdu.status,
            pdu.sequence
        );
        match &pdu.body {
            Body::Bind(bind) => {
                let _ = writeln!(block, "  {bind:?}");
            }
            Body::BindResp { system_id } => {
                let _ = writeln!(block, "  system_id={system_id:?}");
            }
            Body::SubmitSm(sm) => render_short_message(&mut block, sm),
            Body::DeliverSm(sm) => {
                render_short_message(&mut block, sm);
                // What the client makes of it: a delivery receipt or not.
                let _ = writeln!(
                    block,
                    "  receipt: {:?}",
                    ivm::notify::smpp::receipt::parse(sm)
                );
            }
            Body::SubmitSmResp { message_id } | Body::DeliverSmResp { message_id } => {
                let _ = writeln!(block, "  message_id={message_id:?}");
            }
            Body::Empty => {}
            Body::Other(raw) => {
                let _ = writeln!(block, "  raw: {}", esc_bytes(raw));
            }
        }
        block
    }

    impl Codec for Smpp {
        const DIR: &'static str = "smpp";

        fn new() -> Self {
            Smpp
        }

        fn is_transcript(file_name: &str) -> bool {
            file_name.contains(".from-") || file_name.contains(".to-")
        }

        fn step(&mut self, buf: &mut BytesMut, out: &mut Vec<String>) -> Result<(), String> {
            loop {
                let before = buf.clone();
                match pdu::decode(buf).map_err(|e| e.to_string())? {
                    Some(pdu) => {
                        let mut block = render(&pdu);
                        // The encoder writes what the decoder read, byte for
                        // byte, or the snapshot says where it does not.
                        let consumed = &before[..before.len() - buf.len()];
                        match pdu::encode(&pdu) {
                            Ok(bytes) if bytes == consumed => {}
                            Ok(bytes) => {
                                let _ = writeln!(block, "  re-encoded: {}", esc_bytes(&bytes));
                            }
                            Err(e) => {
                                let _ = writeln!(block, "  re-encode error: {e}");
                            }
                        }
                        out.push(block);
                    }
                    None => {
                        assert_eq!(buf.len(), before.len(), "an unfinished PDU consumed bytes");
                        return Ok(());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

use agi::Agi;
use ami::Ami;
use esl::Esl;
use smpp::Smpp;

#[test]
fn agi_transcripts() {
    check_codec::<Agi>();
}

#[test]
fn ami_transcripts() {
    check_codec::<Ami>();
}

#[test]
fn esl_transcripts() {
    check_codec::<Esl>();
}

#[test]
fn smpp_transcripts() {
    check_codec::<Smpp>();
}

/// The snapshot files hold what the decoders must yield; this checks the
/// harness itself notices a change (a snapshot that cannot fail is no test).
#[test]
fn a_changed_decoding_fails_its_snapshot() {
    let input = &transcripts::<Esl>()[0];
    let bytes = std::fs::read(input).unwrap();
    let altered = decode_whole::<Esl>(&bytes).replacen("auth/request", "auth/requested", 1);
    let result = std::panic::catch_unwind(|| {
        if std::env::var_os("UPDATE_EXPECT").is_none() {
            check_snapshot(input, &altered);
        } else {
            panic!("not checked while updating");
        }
    });
    assert!(result.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_chunking_matches_whole(
        index in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..400, 1..40),
    ) {
        check_random_chunking::<Agi>(index, &sizes);
        check_random_chunking::<Ami>(index, &sizes);
        check_random_chunking::<Esl>(index, &sizes);
        check_random_chunking::<Smpp>(index, &sizes);
    }

    #[test]
    fn mangled_transcripts_never_panic(
        index in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        size in 1usize..64,
    ) {
        check_mangled::<Agi>(index, &edits, size);
        check_mangled::<Ami>(index, &edits, size);
        check_mangled::<Esl>(index, &edits, size);
        check_mangled::<Smpp>(index, &edits, size);
    }

    /// Random bytes rarely frame as SMPP; these do, for the commands the
    /// codec parses field by field.
    #[test]
    fn framed_smpp_garbage_never_panics(
        command_id in prop_oneof![
            any::<u32>(),
            Just(ivm::notify::smpp::pdu::DELIVER_SM),
            Just(ivm::notify::smpp::pdu::SUBMIT_SM),
            Just(ivm::notify::smpp::pdu::BIND_TRANSCEIVER),
            Just(ivm::notify::smpp::pdu::BIND_TRANSCEIVER | ivm::notify::smpp::pdu::RESPONSE),
            Just(ivm::notify::smpp::pdu::SUBMIT_SM | ivm::notify::smpp::pdu::RESPONSE),
        ],
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = u32::try_from(body.len() + 16).unwrap().to_be_bytes().to_vec();
        bytes.extend(command_id.to_be_bytes());
        bytes.extend([0u8; 8]);
        bytes.extend(&body);
        check_noise::<Smpp>(&bytes, &[1]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        check_noise::<Agi>(&bytes, &sizes);
        check_noise::<Ami>(&bytes, &sizes);
        let mut with_banner = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
        with_banner.extend_from_slice(&bytes);
        check_noise::<Ami>(&with_banner, &sizes);
        check_noise::<Esl>(&bytes, &sizes);
        check_noise::<Smpp>(&bytes, &sizes);
    }
}
