//! FreeSWITCH Event Socket (ESL) codec: bytes from the event socket in,
//! typed messages out; typed commands in, command text out.
//!
//! Owns: ESL framing (header block up to the first blank line, then
//! `Content-Length` bytes), the classification of frames by `Content-Type`,
//! the three event encodings (plain, json, xml) decoded into one [`Event`]
//! type, and the text of every command the adapter sends.
//! Must not know: sockets, clocks, calls or sessions. It does no I/O.
//!
//! Wire facts (checked against FreeSWITCH 1.11.1 captures in
//! `tests/data/esl/` and against `mod_event_socket.c` / `switch_event.c`):
//!
//! * FreeSWITCH ends every line with a bare `\n`; a frame's header block ends
//!   at the first `\n\n`. Header order is not fixed (`text/event-*` frames put
//!   `Content-Length` first, `log/data` has headers after it).
//! * Top-level header values are sent raw, except in the outbound `connect`
//!   reply, which is a whole serialized `CHANNEL_DATA` event (no
//!   `Content-Length`, every value percent-encoded, `Reply-Text: %2BOK%0A`).
//! * Plain event bodies are themselves a header block with percent-encoded
//!   values; an event with a body (`BACKGROUND_JOB`) carries its own nested
//!   `Content-Length` and the body after a blank line.
//! * One event may repeat a header name (`Hangup-Cause` twice, a second
//!   `Event-Name: PRIVATE_COMMAND` inside `COMMAND`), in JSON too. Every value
//!   is kept in order and lookups return the first.
//! * `api` failures are `api/response` bodies starting `-ERR`; command
//!   failures are `Reply-Text: -ERR ...`.
//!
//! A decode error that [`DecodeError::is_fatal`] leaves the buffer untouched:
//! the stream cannot be resynchronised and the connection must be closed. A
//! non-fatal error ([`DecodeError::Malformed`]) has consumed exactly one frame
//! whose content could not be understood; the stream is still in sync.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// Default cap on one frame's header block, blank line included.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Default cap on one frame's body (the `show channels as json` reply of a
/// busy switch is the largest thing we expect).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Default cap on the number of headers in a frame or in one event.
pub const MAX_HEADERS: usize = 4096;

/// Caps on what a peer can make the decoder buffer and allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_header_block: usize,
    pub max_body: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_block: MAX_HEADER_BLOCK,
            max_body: MAX_BODY,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Why bytes from FreeSWITCH could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "esl header block is longer than {limit} bytes without a blank line; \
         the peer is not speaking the event socket protocol, close the connection"
    )]
    HeaderBlockTooLarge { limit: usize },
    #[error("esl frame has more than {limit} headers; close the connection")]
    TooManyHeaders { limit: usize },
    #[error("esl header block is not valid utf-8 (byte {offset}); close the connection")]
    NonUtf8Header { offset: usize },
    #[error("esl header line {line_number} {problem}; close the connection")]
    MalformedHeader {
        line_number: usize,
        problem: &'static str,
    },
    #[error("esl content-length {value:?} is not a decimal byte count; close the connection")]
    BadContentLength { value: String },
    #[error("esl frame has two different content-length headers; close the connection")]
    ConflictingContentLength,
    #[error(
        "esl content-length {length} exceeds the {limit}-byte limit; \
         close the connection or raise the limit"
    )]
    BodyTooLarge { length: u64, limit: usize },
    #[error(
        "malformed {content_type} frame: {reason}; the frame was skipped \
         and the stream is still usable"
    )]
    Malformed {
        content_type: String,
        reason: String,
    },
}

impl DecodeError {
    /// True when the stream can no longer be framed and the connection must
    /// be closed; false when one frame was consumed and skipped.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::Malformed { .. })
    }
}

/// Header names and values in wire order. Names compare ASCII
/// case-insensitively (as FreeSWITCH's own lookups do); duplicates are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value of `name`. "Last wins" would misreport events that
    /// embed a second header set (`COMMAND` carries `PRIVATE_COMMAND`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One ESL frame as it was on the wire: raw header values, raw body (empty
/// when there was no `Content-Length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Headers,
    pub body: Bytes,
}

impl Frame {
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("Content-Type").map(str::trim)
    }
}

/// How an event was encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Plain,
    Json,
    Xml,
}

impl EventFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }
}

impl fmt::Display for EventFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A FreeSWITCH event, whatever its wire format: decoded header values (no
/// percent- or XML-encoding left) in order, and the body if it had one.
///
/// `Content-Length` of a body-carrying event stays in the headers in all three
/// formats (JSON sends it as a header too). JSON array headers become one
/// header per element; the plain format sends FreeSWITCH's own
/// `ARRAY::a|:b` string, which is kept as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    format: EventFormat,
    headers: Headers,
    body: Option<String>,
}

impl Event {
    pub fn format(&self) -> EventFormat {
        self.format
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    /// `Event-Name` (the first one: see [`Headers::get`]).
    pub fn name(&self) -> Option<&str> {
        self.header("Event-Name")
    }

    /// `Event-Subclass` of a `CUSTOM` event.
    pub fn subclass(&self) -> Option<&str> {
        self.header("Event-Subclass")
    }

    pub fn unique_id(&self) -> Option<&str> {
        self.header("Unique-ID")
    }

    /// `Job-UUID` of a `BACKGROUND_JOB`, equal to the bgapi reply's.
    pub fn job_uuid(&self) -> Option<&str> {
        self.header("Job-UUID")
    }

    pub fn application(&self) -> Option<&str> {
        self.header("Application")
    }

    /// The `Event-UUID` the client gave in `sendmsg`, or a fresh one per execute.
    pub fn application_uuid(&self) -> Option<&str> {
        self.header("Application-UUID")
    }

    /// May be stale: `park`/`socket` ended by hangup report the previous
    /// application's response.
    pub fn application_response(&self) -> Option<&str> {
        self.header("Application-Response")
    }

    pub fn hangup_cause(&self) -> Option<&str> {
        self.header("Hangup-Cause")
    }

    /// A channel variable, `variable_<name>`; only some events carry them.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| {
            let rest = n.strip_prefix("variable_")?;
            rest.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    /// Not monotonic in arrival order; do not use it to order events.
    pub fn event_sequence(&self) -> Option<u64> {
        self.header("Event-Sequence")?.trim().parse().ok()
    }
}

/// `command/reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// `Reply-Text`, decoded, without trailing line breaks (the connect reply
    /// sends `%2BOK%0A`, i.e. "+OK\n"). Empty if the header is missing.
    pub reply_text: String,
    /// The separate `Job-UUID` header of a bgapi reply.
    pub job_uuid: Option<String>,
    /// All headers; percent-decoded for the connect reply, raw otherwise.
    pub headers: Headers,
    /// The outbound `connect` reply is a serialized `CHANNEL_DATA` event.
    pub channel_data: Option<Event>,
}

impl CommandReply {
    pub fn is_ok(&self) -> bool {
        self.reply_text.starts_with("+OK")
    }

    pub fn is_err(&self) -> bool {
        self.reply_text.starts_with("-ERR")
    }
}

/// `api/response`: failures are bodies starting `-ERR`, not another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The command's output, exactly (it may lack a final newline).
    pub body: String,
}

impl ApiResponse {
    pub fn is_ok(&self) -> bool {
        self.body.starts_with("+OK")
    }

    pub fn is_err(&self) -> bool {
        self.body.starts_with("-ERR")
    }
}

/// `Content-Disposition` of a disconnect notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The channel hung up and the socket lingers.
    Linger,
    /// The socket is about to close.
    Disconnect,
    Other(String),
}

/// `Linger-Time` of a linger notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LingerTime {
    /// `-1`: FreeSWITCH never closes by itself; the client must `exit`.
    Forever,
    Seconds(u64),
}

/// `text/disconnect-notice`. Inbound notices have only a body; outbound ones
/// add the controlled session and a disposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectNotice {
    pub body: String,
    pub disposition: Option<Disposition>,
    pub controlled_session_uuid: Option<String>,
    pub channel_name: Option<String>,
    pub linger: Option<LingerTime>,
}

impl DisconnectNotice {
    pub fn is_linger(&self) -> bool {
        self.disposition == Some(Disposition::Linger)
    }
}

/// `log/data`: one formatted log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogData {
    pub level: Option<u8>,
    pub file: Option<String>,
    pub function: Option<String>,
    pub line: Option<u32>,
    /// Usually the channel UUID the line is about.
    pub user_data: Option<String>,
    /// The formatted line, with its final newline.
    pub text: String,
    pub headers: Headers,
}

/// A frame classified by its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    AuthRequest,
    CommandReply(CommandReply),
    ApiResponse(ApiResponse),
    Event(Event),
    DisconnectNotice(DisconnectNotice),
    LogData(LogData),
    /// `text/rude-rejection`: the event socket ACL refused us.
    RudeRejection {
        body: String,
    },
    /// Any other or missing `Content-Type`; kept whole, never an error.
    Unknown {
        content_type: Option<String>,
        frame: Frame,
    },
}

impl Message {
    /// Classifies one frame. Only a body that claims a known event format and
    /// cannot be parsed is an error ([`DecodeError::Malformed`], non-fatal).
    pub fn from_frame(frame: Frame, limits: &Limits) -> Result<Message, DecodeError> {
        let Some(content_type) = frame.content_type() else {
            return Ok(Message::Unknown {
                content_type: None,
                frame,
            });
        };
        let content_type = content_type.to_ascii_lowercase();
        let malformed = |reason: String| DecodeError::Malformed {
            content_type: content_type.clone(),
            reason,
        };
        let message = match content_type.as_str() {
            "auth/request" => Message::AuthRequest,
            "command/reply" => Message::CommandReply(command_reply(frame.headers)),
            "api/response" => Message::ApiResponse(ApiResponse {
                body: lossy(&frame.body),
            }),
            "text/event-plain" => {
                Message::Event(parse_plain_event(&frame.body, limits).map_err(malformed)?)
            }
            "text/event-json" => {
                Message::Event(parse_json_event(&frame.body, limits).map_err(malformed)?)
            }
            "text/event-xml" => {
                Message::Event(parse_xml_event(&frame.body, limits).map_err(malformed)?)
            }
            "text/disconnect-notice" => Message::DisconnectNotice(disconnect_notice(&frame)),
            "log/data" => Message::LogData(log_data(frame)),
            "text/rude-rejection" => Message::RudeRejection {
                body: lossy(&frame.body),
            },
            _ => Message::Unknown {
                content_type: Some(content_type),
                frame,
            },
        };
        Ok(message)
    }
}

/// Incremental ESL decoder. Feed it the same growing buffer; it consumes a
/// frame's bytes only once the whole frame has arrived.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    /// Leading `\r`/`\n` bytes already skipped (FreeSWITCH's reader ignores them too).
    skipped: usize,
    /// Buffer prefix already searched for the blank line, so that a slow
    /// peer costs linear rather than quadratic time.
    searched: usize,
    pending: Option<PendingFrame>,
}

#[derive(Debug)]
struct PendingFrame {
    /// Bytes up to and including the blank line.
    header_len: usize,
    headers: Headers,
    body_len: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: Limits) -> Self {
        Decoder {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The next message, `Ok(None)` until a whole frame is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match self.decode_frame(buf)? {
            Some(frame) => Message::from_frame(frame, &self.limits).map(Some),
            None => Ok(None),
        }
    }

    /// The next raw frame, `Ok(None)` until a whole frame is buffered.
    pub fn decode_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < self.skipped.max(self.searched)
            || self
                .pending
                .as_ref()
                .is_some_and(|p| buf.len() < p.header_len)
        {
            // Not the buffer we were fed before; start over.
            self.reset();
        }
        if self.pending.is_none() {
            while self.skipped < buf.len() && matches!(buf[self.skipped], b'\n' | b'\r') {
                self.skipped += 1;
            }
            let from = self.searched.max(self.skipped);
            let Some(at) = find_blank_line(&buf[from..]) else {
                if buf.len() > self.limits.max_header_block {
                    return Err(DecodeError::HeaderBlockTooLarge {
                        limit: self.limits.max_header_block,
                    });
                }
                // The blank line may straddle two reads: rescan the last byte.
                self.searched = buf.len().saturating_sub(1).max(self.skipped);
                return Ok(None);
            };
            let end = from + at;
            let header_len = end + 2;
            if header_len > self.limits.max_header_block {
                return Err(DecodeError::HeaderBlockTooLarge {
                    limit: self.limits.max_header_block,
                });
            }
            let headers = parse_frame_headers(&buf[self.skipped..end], &self.limits)?;
            let body_len = content_length(&headers, &self.limits)?;
            self.pending = Some(PendingFrame {
                header_len,
                headers,
                body_len,
            });
        }
        let Some(pending) = self
            .pending
            .take_if(|p| buf.len() >= p.header_len + p.body_len)
        else {
            return Ok(None);
        };
        buf.advance(pending.header_len);
        let body = buf.split_to(pending.body_len).freeze();
        self.reset();
        Ok(Some(Frame {
            headers: pending.headers,
            body,
        }))
    }

    fn reset(&mut self) {
        self.skipped = 0;
        self.searched = 0;
        self.pending = None;
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n")
}

fn parse_frame_headers(block: &[u8], limits: &Limits) -> Result<Headers, DecodeError> {
    let text = std::str::from_utf8(block).map_err(|e| DecodeError::NonUtf8Header {
        offset: e.valid_up_to(),
    })?;
    parse_header_lines(text, limits.max_headers, false).map_err(|e| match e {
        HeaderLinesError::TooMany => DecodeError::TooManyHeaders {
            limit: limits.max_headers,
        },
        HeaderLinesError::Line {
            line_number,
            problem,
        } => DecodeError::MalformedHeader {
            line_number,
            problem,
        },
    })
}

enum HeaderLinesError {
    TooMany,
    Line {
        line_number: usize,
        problem: &'static str,
    },
}

impl HeaderLinesError {
    fn describe(&self, limit: usize) -> String {
        match self {
            HeaderLinesError::TooMany => format!("more than {limit} headers"),
            HeaderLinesError::Line {
                line_number,
                problem,
            } => format!("header line {line_number} {problem}"),
        }
    }
}

/// `Name: value` lines as FreeSWITCH writes and reads them: split at the
/// first colon, spaces after it skipped, a trailing `\r` dropped.
fn parse_header_lines(
    text: &str,
    max_headers: usize,
    percent_decoded: bool,
) -> Result<Headers, HeaderLinesError> {
    let mut headers = Headers::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let line_number = index + 1;
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeaderLinesError::Line {
                line_number,
                problem: "has no colon",
            });
        };
        if name.is_empty() {
            return Err(HeaderLinesError::Line {
                line_number,
                problem: "has an empty header name",
            });
        }
        if headers.len() == max_headers {
            return Err(HeaderLinesError::TooMany);
        }
        let value = value.trim_start_matches(' ');
        let value = if percent_decoded {
            percent_decode(value)
        } else {
            value.to_owned()
        };
        headers.push(name, value);
    }
    Ok(headers)
}

fn content_length(headers: &Headers, limits: &Limits) -> Result<usize, DecodeError> {
    let mut length = None;
    for value in headers.get_all("Content-Length") {
        let parsed = parse_length(value, limits.max_body)?;
        if length.is_some_and(|l| l != parsed) {
            return Err(DecodeError::ConflictingContentLength);
        }
        length = Some(parsed);
    }
    Ok(length.unwrap_or(0))
}

fn parse_length(value: &str, max: usize) -> Result<usize, DecodeError> {
    let digits = value.trim_end_matches([' ', '\t']);
    let bad = || DecodeError::BadContentLength {
        value: value.chars().take(32).collect(),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let too_large = |length| DecodeError::BodyTooLarge { length, limit: max };
    // All digits, so the only parse failure left is overflow.
    let length: u64 = digits.parse().map_err(|_| too_large(u64::MAX))?;
    match usize::try_from(length) {
        Ok(l) if l <= max => Ok(l),
        _ => Err(too_large(length)),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `switch_url_decode`: `%XX` becomes that byte, anything else is literal
/// (`+` stays `+`). Bytes that are not UTF-8 become U+FFFD: a caller name in
/// Latin-1 must not cost us the event.
fn percent_decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => lossy(e.as_bytes()),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn trim_line_breaks(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

fn command_reply(headers: Headers) -> CommandReply {
    // The connect reply is `switch_event_serialize` of CHANNEL_DATA: every
    // value in it is percent-encoded, and only it has an Event-Name.
    let (headers, channel_data) = if headers.get("Event-Name").is_some() {
        let decoded = Headers(
            headers
                .0
                .into_iter()
                .map(|(n, v)| {
                    let v = percent_decode(&v);
                    (n, v)
                })
                .collect(),
        );
        let event = Event {
            format: EventFormat::Plain,
            headers: decoded.clone(),
            body: None,
        };
        (decoded, Some(event))
    } else {
        (headers, None)
    };
    CommandReply {
        reply_text: trim_line_breaks(headers.get("Reply-Text").unwrap_or("")).to_owned(),
        job_uuid: headers.get("Job-UUID").map(str::to_owned),
        headers,
        channel_data,
    }
}

fn disconnect_notice(frame: &Frame) -> DisconnectNotice {
    let h = &frame.headers;
    let disposition = h.get("Content-Disposition").map(|d| match d.trim() {
        d if d.eq_ignore_ascii_case("linger") => Disposition::Linger,
        d if d.eq_ignore_ascii_case("disconnect") => Disposition::Disconnect,
        d => Disposition::Other(d.to_owned()),
    });
    let linger = h.get("Linger-Time").and_then(|t| {
        let t = t.trim();
        match t.strip_prefix('-') {
            // FreeSWITCH sends -1 for "no time given".
            Some(magnitude) => magnitude.parse::<u64>().ok().map(|_| LingerTime::Forever),
            None => t.parse().ok().map(LingerTime::Seconds),
        }
    });
    DisconnectNotice {
        body: lossy(&frame.body),
        disposition,
        controlled_session_uuid: h.get("Controlled-Session-UUID").map(str::to_owned),
        channel_name: h.get("Channel-Name").map(str::to_owned),
        linger,
    }
}

fn log_data(frame: Frame) -> LogData {
    let h = &frame.headers;
    LogData {
        level: h.get("Log-Level").and_then(|v| v.trim().parse().ok()),
        file: h.get("Log-File").map(str::to_owned),
        function: h.get("Log-Func").map(str::to_owned),
        line: h.get("Log-Line").and_then(|v| v.trim().parse().ok()),
        user_data: h.get("User-Data").map(str::to_owned),
        text: lossy(&frame.body),
        headers: frame.headers,
    }
}

/// `switch_event_serialize(.., encode=TRUE)`: percent-encoded `Name: value`
/// lines, then either a blank line, or `Content-Length: N`, a blank line and
/// N bytes of raw body.
fn parse_plain_event(text: &[u8], limits: &Limits) -> Result<Event, String> {
    let Some(end) = find_blank_line(text) else {
        return Err("event text has no blank line after its headers".to_owned());
    };
    let head = std::str::from_utf8(&text[..end])
        .map_err(|e| format!("event headers are not utf-8 (byte {})", e.valid_up_to()))?;
    let headers = parse_header_lines(head, limits.max_headers, true)
        .map_err(|e| e.describe(limits.max_headers))?;
    let rest = &text[end + 2..];
    let body = match headers.get("Content-Length") {
        Some(value) => {
            let length = parse_length(value, limits.max_body).map_err(|e| e.to_string())?;
            if length != rest.len() {
                return Err(format!(
                    "nested content-length {length} does not match the {} bytes after the headers",
                    rest.len()
                ));
            }
            Some(lossy(rest))
        }
        None if rest.is_empty() => None,
        None => {
            return Err(format!(
                "{} bytes follow the event headers without a nested content-length",
                rest.len()
            ));
        }
    };
    Ok(Event {
        format: EventFormat::Plain,
        headers,
        body,
    })
}

/// The top-level JSON object in document order with duplicate keys kept
/// (`Hangup-Cause` appears twice); a map type would drop one.
struct JsonFields(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for JsonFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = JsonFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object of event headers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonFields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    fields.push(entry);
                }
                Ok(JsonFields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

fn json_scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some(String::new()),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => None,
    }
}

/// `switch_event_serialize_json`: an object of string headers (arrays for
/// array headers) and the body as `_body`.
fn parse_json_event(text: &[u8], limits: &Limits) -> Result<Event, String> {
    let JsonFields(fields) =
        serde_json::from_slice(text).map_err(|e| format!("invalid event json: {e}"))?;
    let mut headers = Headers::new();
    let mut body = None;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("_body") {
            let text = json_scalar(&value).ok_or("_body is not a string")?;
            body.get_or_insert(text);
            continue;
        }
        let values = match &value {
            serde_json::Value::Array(items) => items.iter().map(json_scalar).collect(),
            other => json_scalar(other).map(|v| vec![v]),
        };
        let Some(values) = values else {
            return Err(format!(
                "header {name:?} is neither a string nor an array of strings"
            ));
        };
        for v in values {
            if headers.len() == limits.max_headers {
                return Err(format!("more than {} headers", limits.max_headers));
            }
            headers.push(name.clone(), v);
        }
    }
    Ok(Event {
        format: EventFormat::Json,
        headers,
        body,
    })
}

/// `switch_event_xmlize` rendered by `switch_xml_toxml`:
/// `<event><headers><Name>value</Name>...</headers>[<Content-Length>N</Content-Length><body>text</body>]</event>`.
/// Header values are percent-encoded and then XML-escaped; the body is only
/// XML-escaped. Only this shape is accepted: no attributes, no nesting deeper
/// than a header, no DTDs, so no entity expansion can blow up.
fn parse_xml_event(text: &[u8], limits: &Limits) -> Result<Event, String> {
    let text = std::str::from_utf8(text)
        .map_err(|e| format!("event xml is not utf-8 (byte {})", e.valid_up_to()))?;
    let mut cursor = XmlCursor { rest: text };
    cursor.skip_whitespace();
    if cursor.rest.starts_with("<?") {
        let end = cursor
            .rest
            .find("?>")
            .ok_or("unterminated xml declaration")?;
        cursor.rest = &cursor.rest[end + 2..];
        cursor.skip_whitespace();
    }
    cursor.expect("<event>")?;
    cursor.skip_whitespace();
    let mut headers = Headers::new();
    if !cursor.eat("<headers/>") {
        cursor.expect("<headers>")?;
        loop {
            cursor.skip_whitespace();
            if cursor.eat("</headers>") {
                break;
            }
            let (name, value) = cursor.element()?;
            if headers.len() == limits.max_headers {
                return Err(format!("more than {} headers", limits.max_headers));
            }
            headers.push(name, percent_decode(&xml_unescape(value)?));
        }
    }
    let mut body = None;
    loop {
        cursor.skip_whitespace();
        if cursor.eat("</event>") {
            break;
        }
        if cursor.eat("<body>") {
            // switch_xml_ampencode copies everything after a "<!" raw, so
            // the body may hold '<': its end is the last "</body>".
            let end = cursor.rest.rfind("</body>").ok_or("unterminated <body>")?;
            let raw = &cursor.rest[..end];
            let unescaped = match raw.find("<!") {
                Some(raw_from) => xml_unescape(&raw[..raw_from])? + &raw[raw_from..],
                None => xml_unescape(raw)?,
            };
            body = Some(unescaped);
            cursor.rest = &cursor.rest[end + "</body>".len()..];
            continue;
        }
        let (name, value) = cursor.element()?;
        if !name.eq_ignore_ascii_case("Content-Length") {
            return Err(format!("unexpected element <{name}> in <event>"));
        }
        if headers.len() == limits.max_headers {
            return Err(format!("more than {} headers", limits.max_headers));
        }
        headers.push(name, percent_decode(&xml_unescape(value)?));
    }
    cursor.skip_whitespace();
    if !cursor.rest.is_empty() {
        return Err("text after </event>".to_owned());
    }
    Ok(Event {
        format: EventFormat::Xml,
        headers,
        body,
    })
}

struct XmlCursor<'a> {
    rest: &'a str,
}

impl<'a> XmlCursor<'a> {
    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\r', '\n']);
    }

    fn eat(&mut self, token: &str) -> bool {
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected {token}"))
        }
    }

    /// `<Name>text</Name>` or `<Name/>`; returns the name and the raw text.
    fn element(&mut self) -> Result<(&'a str, &'a str), String> {
        let rest = self.rest.strip_prefix('<').ok_or("expected an element")?;
        let name_len = rest
            .find(|c: char| c == '>' || c == '/' || c == '<' || c.is_ascii_whitespace())
            .ok_or("unterminated element")?;
        let (name, rest) = rest.split_at(name_len);
        if name.is_empty() {
            return Err("element without a name".to_owned());
        }
        if let Some(rest) = rest.strip_prefix("/>") {
            self.rest = rest;
            return Ok((name, ""));
        }
        let rest = rest
            .strip_prefix('>')
            .ok_or_else(|| format!("element <{name}> has attributes or is malformed"))?;
        let text_len = rest
            .find('<')
            .ok_or_else(|| format!("unterminated <{name}>"))?;
        let (text, rest) = rest.split_at(text_len);
        let rest = rest
            .strip_prefix("</")
            .and_then(|r| r.strip_prefix(name))
            .and_then(|r| r.strip_prefix('>'))
            .ok_or_else(|| format!("<{name}> is not closed by </{name}>"))?;
        self.rest = rest;
        Ok((name, text))
    }
}

/// The five predefined entities and numeric character references.
fn xml_unescape(text: &str) -> Result<String, String> {
    if !text.contains('&') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&i| i <= 10)
            .ok_or("unterminated xml entity")?;
        let entity = &after[..semi];
        let ch = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown xml entity &{entity};"))?
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Why a command could not be built. Nothing is ever sent half-built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(
        "{what} contains a line break or nul byte, which would inject esl headers \
         or commands; remove it before sending"
    )]
    LineBreak { what: &'static str },
    #[error("{what} is empty; pass a value")]
    Empty { what: &'static str },
    #[error("{what} contains whitespace; it must be a single token")]
    Whitespace { what: &'static str },
    #[error("{what} starts with whitespace, which freeswitch would misparse; trim it")]
    LeadingWhitespace { what: &'static str },
    #[error(
        "filter header name {name:?} is a keyword of the filter command; \
         it cannot be filtered on"
    )]
    ReservedFilterHeader { name: String },
}

/// FreeSWITCH splits command lines and headers at `\r` or `\n` and reads
/// strings up to a nul, so none of them may appear in any argument.
fn no_breaks(value: &str, what: &'static str) -> Result<(), CommandError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(CommandError::LineBreak { what });
    }
    Ok(())
}

fn line(value: &str, what: &'static str) -> Result<(), CommandError> {
    no_breaks(value, what)?;
    if value.is_empty() {
        return Err(CommandError::Empty { what });
    }
    if value.starts_with(|c: char| c.is_whitespace()) {
        return Err(CommandError::LeadingWhitespace { what });
    }
    Ok(())
}

fn token(value: &str, what: &'static str) -> Result<(), CommandError> {
    line(value, what)?;
    if value.contains(|c: char| c.is_whitespace()) {
        return Err(CommandError::Whitespace { what });
    }
    Ok(())
}

/// `auth PASSWORD`: the answer to `auth/request`.
pub fn auth(password: &str) -> Result<String, CommandError> {
    no_breaks(password, "password")?;
    if password.is_empty() {
        return Err(CommandError::Empty { what: "password" });
    }
    Ok(format!("auth {password}\n\n"))
}

/// `api COMMAND ARGS`: runs synchronously, answered by `api/response`.
/// `command_line` is the API command and its arguments, e.g. `uuid_kill X`.
pub fn api(command_line: &str) -> Result<String, CommandError> {
    line(command_line, "api command")?;
    Ok(format!("api {command_line}\n\n"))
}

/// `bgapi COMMAND ARGS`, answered at once by `+OK Job-UUID: ...` and later by
/// a `BACKGROUND_JOB` event. With `job_uuid` FreeSWITCH uses ours instead of
/// a fresh one.
pub fn bgapi(command_line: &str, job_uuid: Option<&str>) -> Result<String, CommandError> {
    line(command_line, "bgapi command")?;
    match job_uuid {
        Some(uuid) => {
            token(uuid, "job uuid")?;
            Ok(format!("bgapi {command_line}\nJob-UUID: {uuid}\n\n"))
        }
        None => Ok(format!("bgapi {command_line}\n\n")),
    }
}

/// `event FORMAT NAME...` (e.g. `ALL`, or `CUSTOM` followed by subclasses).
pub fn event(format: EventFormat, names: &[&str]) -> Result<String, CommandError> {
    if names.is_empty() {
        return Err(CommandError::Empty { what: "event list" });
    }
    let mut command = format!("event {format}");
    for name in names {
        token(name, "event name")?;
        command.push(' ');
        command.push_str(name);
    }
    command.push_str("\n\n");
    Ok(command)
}

/// `filter HEADER VALUE`: only events whose HEADER equals VALUE pass. Note
/// that events without HEADER (e.g. `BACKGROUND_JOB` for `Unique-ID`) are
/// dropped too.
pub fn filter(header: &str, value: &str) -> Result<String, CommandError> {
    filter_header(header)?;
    line(value, "filter value")?;
    Ok(format!("filter {header} {value}\n\n"))
}

/// `filter delete HEADER [VALUE]`; `HEADER` = `all` removes every filter.
pub fn filter_delete(header: &str, value: Option<&str>) -> Result<String, CommandError> {
    token(header, "filter header")?;
    match value {
        Some(value) => {
            line(value, "filter value")?;
            Ok(format!("filter delete {header} {value}\n\n"))
        }
        None => Ok(format!("filter delete {header}\n\n")),
    }
}

fn filter_header(header: &str) -> Result<(), CommandError> {
    token(header, "filter header")?;
    if header.eq_ignore_ascii_case("delete") || header.eq_ignore_ascii_case("add") {
        return Err(CommandError::ReservedFilterHeader {
            name: header.to_owned(),
        });
    }
    Ok(())
}

/// An application to run on a channel through `sendmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    pub app: &'a str,
    pub arg: Option<&'a str>,
    /// `event-lock: true`: run it before any later message for the channel.
    pub event_lock: bool,
    /// Our id for this execution; the matching `CHANNEL_EXECUTE_COMPLETE`
    /// carries it as `Application-UUID`.
    pub event_uuid: Option<&'a str>,
}

impl<'a> Execute<'a> {
    pub fn new(app: &'a str) -> Self {
        Execute {
            app,
            arg: None,
            event_lock: false,
            event_uuid: None,
        }
    }

    pub fn arg(mut self, arg: &'a str) -> Self {
        self.arg = Some(arg);
        self
    }

    pub fn event_lock(mut self, on: bool) -> Self {
        self.event_lock = on;
        self
    }

    pub fn event_uuid(mut self, uuid: &'a str) -> Self {
        self.event_uuid = Some(uuid);
        self
    }
}

/// What a `sendmsg` asks the channel to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMsg<'a> {
    Execute(Execute<'a>),
    Hangup { cause: &'a str },
}

/// `sendmsg [UUID]`: without a UUID it addresses the outbound socket's own
/// channel. Answered by `command/reply` (`-ERR invalid session id [..]` if
/// the channel does not exist).
pub fn sendmsg(uuid: Option<&str>, msg: &SendMsg<'_>) -> Result<String, CommandError> {
    let mut command = String::from("sendmsg");
    if let Some(uuid) = uuid {
        token(uuid, "sendmsg uuid")?;
        command.push(' ');
        command.push_str(uuid);
    }
    command.push('\n');
    match msg {
        SendMsg::Execute(exec) => {
            token(exec.app, "application name")?;
            command.push_str("call-command: execute\nexecute-app-name: ");
            command.push_str(exec.app);
            command.push('\n');
            if let Some(arg) = exec.arg {
                no_breaks(arg, "application argument")?;
                command.push_str("execute-app-arg: ");
                command.push_str(arg);
                command.push('\n');
            }
            if exec.event_lock {
                command.push_str("event-lock: true\n");
            }
            if let Some(event_uuid) = exec.event_uuid {
                token(event_uuid, "event uuid")?;
                command.push_str("Event-UUID: ");
                command.push_str(event_uuid);
                command.push('\n');
            }
        }
        SendMsg::Hangup { cause } => {
            token(cause, "hangup cause")?;
            command.push_str("call-command: hangup\nhangup-cause: ");
            command.push_str(cause);
            command.push('\n');
        }
    }
    command.push('\n');
    Ok(command)
}

/// `log LEVEL` (a name like `debug` or a number 0-7): stream `log/data`.
pub fn log(level: &str) -> Result<String, CommandError> {
    token(level, "log level")?;
    Ok(format!("log {level}\n\n"))
}

/// `linger [SECONDS]`: keep the outbound socket open after hangup so the
/// final events arrive. Without a time FreeSWITCH never closes it by itself.
pub fn linger(seconds: Option<u32>) -> String {
    match seconds {
        Some(s) => format!("linger {s}\n\n"),
        None => "linger\n\n".to_owned(),
    }
}

pub fn nolinger() -> String {
    "nolinger\n\n".to_owned()
}

/// Outbound mode: every event of our channel, whatever `event` says later.
pub fn myevents() -> String {
    "myevents\n\n".to_owned()
}

/// Outbound mode: the first command; answered by the channel data.
pub fn connect() -> String {
    "connect\n\n".to_owned()
}

/// Outbound mode: continue the dialplan when the socket closes.
pub fn resume() -> String {
    "resume\n\n".to_owned()
}

pub fn nolog() -> String {
    "nolog\n\n".to_owned()
}

pub fn noevents() -> String {
    "noevents\n\n".to_owned()
}

/// `+OK bye`, a disconnect notice, then FreeSWITCH closes the socket.
pub fn exit() -> String {
    "exit\n\n".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Message> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty(), "leftover: {:?}", buf);
        out
    }

    fn one(bytes: &[u8]) -> Result<Option<Message>, DecodeError> {
        Decoder::new().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn frame_without_body_and_with_body() {
        let msgs = decode_all(
            b"Content-Type: auth/request\n\n\
              Content-Type: api/response\nContent-Length: 4\n\n+OK\n",
        );
        assert_eq!(msgs[0], Message::AuthRequest);
        assert_eq!(
            msgs[1],
            Message::ApiResponse(ApiResponse {
                body: "+OK\n".into()
            })
        );
    }

    #[test]
    fn partial_input_consumes_nothing() {
        let full = b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(Decoder::new().decode(&mut buf), Ok(None), "cut {cut}");
            assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn leading_newlines_are_skipped_like_freeswitch_does() {
        let msgs = decode_all(b"\n\r\nContent-Type: auth/request\n\n");
        assert_eq!(msgs, vec![Message::AuthRequest]);
    }

    #[test]
    fn header_values_keep_their_inner_colons_and_lose_leading_spaces() {
        let mut buf =
            BytesMut::from(&b"Content-Type: command/reply\nReply-Text:   +OK a: b\n\n"[..]);
        let Some(Message::CommandReply(r)) = Decoder::new().decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(r.reply_text, "+OK a: b");
    }

    #[test]
    fn content_length_must_be_plain_digits() {
        for bad in ["-1", "abc", "", "+4", "0x10", "4 4"] {
            let text = format!("Content-Type: api/response\nContent-Length: {bad}\n\n");
            let err = one(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, DecodeError::BadContentLength { .. }),
                "{bad}: {err}"
            );
            assert!(err.is_fatal());
        }
    }

    #[test]
    fn huge_content_length_is_refused_before_the_body_arrives() {
        for huge in ["8388609", "18446744073709551615", "99999999999999999999999"] {
            let text = format!("Content-Length: {huge}\nContent-Type: api/response\n\n");
            let err = one(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, DecodeError::BodyTooLarge { .. }),
                "{huge}: {err}"
            );
        }
        let exact = format!("Content-Length: {MAX_BODY}\n\n");
        assert_eq!(one(exact.as_bytes()), Ok(None));
    }

    #[test]
    fn conflicting_content_lengths_are_an_error() {
        let err = one(b"Content-Length: 1\nContent-Length: 2\n\nab").unwrap_err();
        assert_eq!(err, DecodeError::ConflictingContentLength);
        assert!(decode_all(b"Content-Length: 1\ncontent-length: 1\n\na").len() == 1);
    }

    #[test]
    fn header_block_cap_applies_without_a_blank_line() {
        let limits = Limits {
            max_header_block: 32,
            ..Limits::default()
        };
        let mut decoder = Decoder::with_limits(limits);
        let mut buf = BytesMut::from(&[b'a'; 32][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"a");
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::HeaderBlockTooLarge { limit: 32 })
        );
    }

    #[test]
    fn header_count_is_capped() {
        let limits = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"A: 1\nB: 2\nC: 3\n\n"[..]);
        assert_eq!(
            Decoder::with_limits(limits).decode(&mut buf),
            Err(DecodeError::TooManyHeaders { limit: 2 })
        );
    }

    #[test]
    fn missing_colon_and_bad_utf8_are_fatal() {
        let err = one(b"Content-Type: api/response\nno colon here\n\n").unwrap_err();
        assert_eq!(
            err,
            DecodeError::MalformedHeader {
                line_number: 2,
                problem: "has no colon"
            }
        );
        let err = one(b"Content-Type: api/\xff\n\n").unwrap_err();
        assert_eq!(err, DecodeError::NonUtf8Header { offset: 18 });
        let err = one(b": x\n\n").unwrap_err();
        assert!(matches!(err, DecodeError::MalformedHeader { .. }));
    }

    #[test]
    fn unknown_or_missing_content_type_is_kept_whole() {
        let msgs = decode_all(b"Content-Type: text/new-thing\nContent-Length: 2\n\nhi");
        let Message::Unknown {
            content_type,
            frame,
        } = &msgs[0]
        else {
            panic!()
        };
        assert_eq!(content_type.as_deref(), Some("text/new-thing"));
        assert_eq!(&frame.body[..], b"hi");
        let msgs = decode_all(b"X: y\n\n");
        assert!(matches!(
            &msgs[0],
            Message::Unknown {
                content_type: None,
                ..
            }
        ));
    }

    #[test]
    fn percent_decoding_matches_switch_url_decode() {
        assert_eq!(percent_decode("%2BOK%0A"), "+OK\n");
        assert_eq!(percent_decode("fd00%3a%3A2"), "fd00::2");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn plain_event_with_nested_body() {
        let body = "Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nJob-Command-Arg: %7Ba%3Db%7D\n\
                    Content-Length: 7\n\n+OK x\n\n";
        let frame = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
            body.len()
        );
        let msgs = decode_all(frame.as_bytes());
        let Message::Event(e) = &msgs[0] else {
            panic!()
        };
        assert_eq!(e.name(), Some("BACKGROUND_JOB"));
        assert_eq!(e.job_uuid(), Some("j1"));
        assert_eq!(e.header("job-command-arg"), Some("{a=b}"));
        assert_eq!(e.body(), Some("+OK x\n\n"));
        assert_eq!(e.format(), EventFormat::Plain);
    }

    #[test]
    fn malformed_event_is_not_fatal_and_the_stream_continues() {
        let bad = "Content-Length: 5\nContent-Type: text/event-json\n\n{bad}";
        let good = "Content-Type: auth/request\n\n";
        let mut buf = BytesMut::from(format!("{bad}{good}").as_bytes());
        let mut decoder = Decoder::new();
        let err = decoder.decode(&mut buf).unwrap_err();
        assert!(!err.is_fatal(), "{err}");
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Message::AuthRequest)));
        assert!(buf.is_empty());
    }

    #[test]
    fn plain_event_errors() {
        let limits = Limits::default();
        assert!(parse_plain_event(b"Event-Name: X\n", &limits).is_err());
        assert!(parse_plain_event(b"Event-Name: X\nContent-Length: 9\n\nshort", &limits).is_err());
        assert!(parse_plain_event(b"Event-Name: X\n\ntrailing", &limits).is_err());
        assert!(parse_plain_event(b"Event-Name X\n\n", &limits).is_err());
        assert!(parse_plain_event(b"Event-Name: \xff\n\n", &limits).is_err());
        let e = parse_plain_event(b"Event-Name: X\nA: %FF\n\n", &limits).unwrap();
        assert_eq!(e.header("A"), Some("\u{FFFD}"));
    }

    #[test]
    fn json_event_keeps_duplicates_arrays_and_body() {
        let json =
            br#"{"Event-Name":"CHANNEL_HANGUP_COMPLETE","Hangup-Cause":"A","Hangup-Cause":"B",
            "Arr":["x","y"],"N":5,"Content-Length":"3","_body":"hi\n"}"#;
        let e = parse_json_event(json, &Limits::default()).unwrap();
        assert_eq!(e.hangup_cause(), Some("A"));
        assert_eq!(
            e.headers().get_all("hangup-cause").collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(e.headers().get_all("Arr").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(e.header("N"), Some("5"));
        assert_eq!(e.header("Content-Length"), Some("3"));
        assert_eq!(e.body(), Some("hi\n"));
        assert!(parse_json_event(br#"["a"]"#, &Limits::default()).is_err());
        assert!(parse_json_event(br#"{"a":{"b":"c"}}"#, &Limits::default()).is_err());
        assert!(parse_json_event(br#"{"a":"b""#, &Limits::default()).is_err());
    }

    #[test]
    fn xml_event_decodes_entities_then_percent_encoding() {
        let xml = "<event>\n  <headers>\n    <Event-Name>CUSTOM</Event-Name>\n    \
                   <Event-Subclass>a%3A%3Ab</Event-Subclass>\n    <Empty/>\n    \
                   <Amp>x&amp;y%20z</Amp>\n  </headers>\n  \
                   <Content-Length>9</Content-Length>\n  <body>&lt;b&gt; &#233;&#x41;</body>\n</event>\n";
        let e = parse_xml_event(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(e.name(), Some("CUSTOM"));
        assert_eq!(e.subclass(), Some("a::b"));
        assert_eq!(e.header("Empty"), Some(""));
        assert_eq!(e.header("Amp"), Some("x&y z"));
        assert_eq!(e.header("Content-Length"), Some("9"));
        assert_eq!(e.body(), Some("<b> éA"));
        assert_eq!(e.format(), EventFormat::Xml);
    }

    #[test]
    fn xml_body_after_markup_declaration_is_raw() {
        let xml = "<event><headers><Event-Name>X</Event-Name></headers>\
                   <body>a&amp;b <!-- <raw> & </body> --></body></event>";
        let e = parse_xml_event(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(e.body(), Some("a&b <!-- <raw> & </body> -->"));
    }

    #[test]
    fn xml_rejects_what_it_does_not_understand() {
        let limits = Limits::default();
        for bad in [
            "<event><headers><A x=\"1\">v</A></headers></event>",
            "<event><headers><A>v</B></headers></event>",
            "<event><headers><A>&bogus;</A></headers></event>",
            "<event><headers><A>&#xFFFFFFFF;</A></headers></event>",
            "<event><headers><A>v</A></headers></event>junk",
            "<event><headers><A>v</A>",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><event/>",
            "<event><headers></headers><other>x</other></event>",
        ] {
            assert!(parse_xml_event(bad.as_bytes(), &limits).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_reply_is_decoded_into_channel_data() {
        let frame = b"Event-Name: CHANNEL_DATA\nUnique-ID: u1\nChannel-Name: loopback%2Fx-b\n\
                      Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\n\n";
        let msgs = decode_all(frame);
        let Message::CommandReply(r) = &msgs[0] else {
            panic!()
        };
        assert_eq!(r.reply_text, "+OK");
        assert!(r.is_ok());
        let data = r.channel_data.as_ref().unwrap();
        assert_eq!(data.name(), Some("CHANNEL_DATA"));
        assert_eq!(data.header("Channel-Name"), Some("loopback/x-b"));
        assert_eq!(data.unique_id(), Some("u1"));
    }

    #[test]
    fn bgapi_reply_carries_job_uuid() {
        let msgs = decode_all(
            b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: j\nJob-UUID: j\n\n",
        );
        let Message::CommandReply(r) = &msgs[0] else {
            panic!()
        };
        assert_eq!(r.job_uuid.as_deref(), Some("j"));
        assert!(r.channel_data.is_none());
    }

    #[test]
    fn disconnect_notice_linger_times() {
        let msgs = decode_all(
            b"Content-Type: text/disconnect-notice\nContent-Disposition: linger\n\
              Linger-Time: -1\nContent-Length: 0\n\n\
              Content-Type: text/disconnect-notice\nContent-Disposition: linger\n\
              Linger-Time: 2\nContent-Length: 0\n\n",
        );
        let Message::DisconnectNotice(a) = &msgs[0] else {
            panic!()
        };
        let Message::DisconnectNotice(b) = &msgs[1] else {
            panic!()
        };
        assert_eq!(a.linger, Some(LingerTime::Forever));
        assert_eq!(b.linger, Some(LingerTime::Seconds(2)));
        assert!(a.is_linger());
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(auth("ClueCon").unwrap(), "auth ClueCon\n\n");
        assert_eq!(api("status").unwrap(), "api status\n\n");
        assert_eq!(
            bgapi("originate x &park", Some("j-1")).unwrap(),
            "bgapi originate x &park\nJob-UUID: j-1\n\n"
        );
        assert_eq!(
            event(EventFormat::Json, &["DTMF", "BACKGROUND_JOB"]).unwrap(),
            "event json DTMF BACKGROUND_JOB\n\n"
        );
        assert_eq!(filter("Unique-ID", "u").unwrap(), "filter Unique-ID u\n\n");
        assert_eq!(
            filter_delete("Unique-ID", Some("u")).unwrap(),
            "filter delete Unique-ID u\n\n"
        );
        assert_eq!(filter_delete("all", None).unwrap(), "filter delete all\n\n");
        assert_eq!(
            sendmsg(
                Some("u"),
                &SendMsg::Execute(
                    Execute::new("playback")
                        .arg("/f.wav@@16000")
                        .event_lock(true)
                        .event_uuid("e")
                )
            )
            .unwrap(),
            "sendmsg u\ncall-command: execute\nexecute-app-name: playback\n\
             execute-app-arg: /f.wav@@16000\nevent-lock: true\nEvent-UUID: e\n\n"
        );
        assert_eq!(
            sendmsg(
                None,
                &SendMsg::Hangup {
                    cause: "NORMAL_CLEARING"
                }
            )
            .unwrap(),
            "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
        );
        assert_eq!(linger(None), "linger\n\n");
        assert_eq!(linger(Some(2)), "linger 2\n\n");
        assert_eq!(log("7").unwrap(), "log 7\n\n");
        for fixed in [
            nolinger(),
            myevents(),
            connect(),
            exit(),
            nolog(),
            noevents(),
            resume(),
        ] {
            assert!(fixed.ends_with("\n\n") && !fixed[..fixed.len() - 2].contains('\n'));
        }
    }

    #[test]
    fn commands_refuse_injection() {
        let inj = "x\nexit";
        assert!(matches!(auth(inj), Err(CommandError::LineBreak { .. })));
        assert!(matches!(auth("a\rb"), Err(CommandError::LineBreak { .. })));
        assert!(matches!(auth("a\0b"), Err(CommandError::LineBreak { .. })));
        assert!(api(inj).is_err());
        assert!(api("").is_err());
        assert!(api(" status").is_err());
        assert!(bgapi(inj, None).is_err());
        assert!(bgapi("status", Some("a\nb")).is_err());
        assert!(bgapi("status", Some("a b")).is_err());
        assert!(event(EventFormat::Plain, &[]).is_err());
        assert!(event(EventFormat::Plain, &["A B"]).is_err());
        assert!(event(EventFormat::Plain, &["A\n\nexit"]).is_err());
        assert!(filter("Unique-ID", inj).is_err());
        assert!(filter("delete", "x").is_err());
        assert!(filter("Uni que", "x").is_err());
        assert!(filter_delete(inj, None).is_err());
        assert!(log("7\n").is_err());
        let exec = |e: Execute<'_>| sendmsg(None, &SendMsg::Execute(e));
        assert!(exec(Execute::new("playback").arg("f\ncall-command: hangup")).is_err());
        assert!(exec(Execute::new("play back")).is_err());
        assert!(exec(Execute::new("")).is_err());
        assert!(exec(Execute::new("playback").event_uuid("e\n")).is_err());
        assert!(sendmsg(Some("u\n"), &SendMsg::Hangup { cause: "X" }).is_err());
        assert!(sendmsg(None, &SendMsg::Hangup { cause: "X\nY" }).is_err());
        let err = auth(inj).unwrap_err().to_string();
        assert!(err.starts_with("password contains a line break"), "{err}");
    }

    #[test]
    fn error_messages_are_lowercase() {
        let errors: Vec<String> = vec![
            DecodeError::HeaderBlockTooLarge { limit: 1 }.to_string(),
            DecodeError::BadContentLength { value: "x".into() }.to_string(),
            CommandError::Empty { what: "password" }.to_string(),
        ];
        for e in errors {
            assert!(e.chars().next().is_some_and(|c| c.is_lowercase()), "{e}");
        }
    }
}
