//! Asterisk Manager Interface (AMI) codec: bytes from Asterisk's manager
//! port in, [`AmiFrame`]s out; [`AmiAction`]s in, request bytes out.
//!
//! Owns: AMI framing (one banner line, then `Key: Value` lines up to a blank
//! line), classification of a message as a response or an event, the caps on
//! what a peer can make us buffer, and the rules that keep a request from
//! smuggling extra headers. Must not know: sockets, clocks, ActionID
//! correlation, logins or reconnection (that is `switch::asterisk::ami`).
//!
//! Wire facts, checked against Asterisk 22.10 captures in `tests/data/ami/`
//! and against `main/manager.c`:
//!
//! * On connect Asterisk sends one line, `Asterisk Call Manager/11.0.0\r\n`
//!   (the AMI version, not Asterisk's), before anything is asked.
//! * Every line ends with `\r\n`; a message ends with an empty line. We also
//!   accept a bare `\n` (Asterisk itself does on input).
//! * A message is a response when its *first* field is `Response:` and an
//!   event when it is `Event:`. Only the first field counts: the
//!   `OriginateResponse` event carries a `Response: Success|Failure` field of
//!   its own further down.
//! * A key may repeat (`Output:` lines of a `Command` reply, `ChanVariable`,
//!   `Variable`); every value is kept in order and `get` returns the first.
//!   Values may be empty (`AccountCode: `).
//! * Asterisk before 14 answered `Command` with `Response: Follows`, then the
//!   raw command output (which may hold blank lines), a `--END COMMAND--` line
//!   and the blank line. That output is framed safely and kept as `Output`
//!   fields, the same shape Asterisk 14+ sends.
//! * Asterisk reads a request line into a 1025-byte buffer and silently
//!   drops longer ones, and keeps at most 128 header lines of a request
//!   (`AST_MAX_MANHEADERS`); [`encode`] refuses what would be mangled.
//!
//! A decode error that [`AmiError::is_fatal`] leaves the stream out of sync
//! and the decoder refuses further input: close the connection. A non-fatal
//! error ([`AmiError::Malformed`]) consumed exactly one message, up to and
//! including its blank line; the stream is still usable.

use std::fmt;

use bytes::{Buf, BytesMut};

/// Longest line we accept from Asterisk, line ending excluded.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Largest message (all its lines with their endings) we accept.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most fields in one message.
pub const MAX_FIELDS: usize = 512;
/// Longest request line Asterisk reads whole, `\r\n` included
/// (`main/manager.c`: a session's `char inbuf[1025]`).
pub const MAX_ACTION_LINE_BYTES: usize = 1024;
/// Most header lines Asterisk keeps from one request, `Action` and
/// `ActionID` included (`AST_MAX_MANHEADERS`).
pub const MAX_ACTION_FIELDS: usize = 128;

/// The line that ends the raw output of a legacy `Response: Follows`.
const END_COMMAND: &[u8] = b"--END COMMAND--";
/// Longest excerpt of peer text quoted in an error.
const EXCERPT_CHARS: usize = 80;

/// Why bytes from Asterisk could not be decoded, or an action not encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmiError {
    #[error(
        "expected the AMI banner `Asterisk Call Manager/<version>`, got {line:?}; \
         check that the address is Asterisk's manager port (manager.conf `port`)"
    )]
    NotAmi { line: String },
    #[error("ami line longer than {limit} bytes; close the connection")]
    LineTooLong { limit: usize },
    #[error("ami message longer than {limit} bytes without a blank line; close the connection")]
    MessageTooLarge { limit: usize },
    #[error("ami message has more than {limit} fields; close the connection")]
    TooManyFields { limit: usize },
    #[error("the ami decoder already failed; close the connection and start a new decoder")]
    DecoderFailed,
    #[error("malformed ami message skipped ({reason}); the stream is still usable")]
    Malformed { reason: String },
    #[error("ami action name {0:?} must be letters, digits, '_', '-' or '.'")]
    InvalidActionName(String),
    #[error("ami field name {0:?} must be printable ascii without spaces or ':'")]
    InvalidFieldName(String),
    #[error("value of ami field {field} holds a line break or control character; remove it")]
    InvalidValue { field: String },
    #[error("ami field {0} is set by the client itself; do not pass it")]
    ReservedField(String),
    #[error(
        "ami field {field} makes a line longer than the {limit} bytes Asterisk reads; \
         shorten the value"
    )]
    ActionLineTooLong { field: String, limit: usize },
    #[error("ami action has more than the {limit} header lines Asterisk keeps")]
    TooManyActionFields { limit: usize },
}

impl AmiError {
    /// True when the stream can no longer be framed and the connection must
    /// be closed; false when one message was consumed and skipped (and for
    /// encode errors, which touch no stream).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            AmiError::NotAmi { .. }
                | AmiError::LineTooLong { .. }
                | AmiError::MessageTooLarge { .. }
                | AmiError::TooManyFields { .. }
                | AmiError::DecoderFailed
        )
    }
}

/// One AMI message: fields in wire order. Keys compare ASCII
/// case-insensitively (as Asterisk's `astman_get_header` does); repeated keys
/// are kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AmiMessage {
    fields: Vec<(String, String)>,
}

impl AmiMessage {
    pub fn new() -> Self {
        AmiMessage::default()
    }

    pub fn from_fields<K, V>(fields: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        AmiMessage {
            fields: fields
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.fields.push((key.into(), value.into()));
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in wire order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` is present with a value equal to `value`, both
    /// compared ASCII case-insensitively.
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `Event:` value: the event's name.
    pub fn event_name(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `Response:` value: `Success`, `Error`, `Goodbye`, `Follows`; on an
    /// `OriginateResponse` event, `Success` or `Failure`.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// `Message:` value, Asterisk's human-readable explanation.
    pub fn message(&self) -> Option<&str> {
        self.get("Message")
    }
}

impl fmt::Debug for AmiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.fields.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// What one decode step yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiFrame {
    /// The greeting line; holds the AMI protocol version (`11.0.0` on
    /// Asterisk 22), not Asterisk's own version.
    Banner(String),
    Response(AmiMessage),
    Event(AmiMessage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Banner,
    Messages,
    Failed,
}

/// Where we are inside a legacy `Response: Follows` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follows {
    No,
    /// After `Response: Follows`, still reading `Key: Value` headers.
    Headers,
    /// Reading raw command output up to `--END COMMAND--`.
    Output,
    /// Saw `--END COMMAND--`; the next blank line ends the message.
    Ended,
}

/// Incremental AMI decoder. Feed it a buffer that bytes from the socket are
/// appended to; it consumes whole lines only, so its work and memory are
/// linear in the input however the input is split.
#[derive(Debug)]
pub struct AmiDecoder {
    stage: Stage,
    message: AmiMessage,
    message_bytes: usize,
    follows: Follows,
    /// Why the current message will be skipped when its blank line arrives.
    malformed: Option<String>,
    /// How much of the buffer's unfinished line has already been searched.
    scanned: usize,
}

impl Default for AmiDecoder {
    fn default() -> Self {
        AmiDecoder::new()
    }
}

impl AmiDecoder {
    pub fn new() -> Self {
        AmiDecoder {
            stage: Stage::Banner,
            message: AmiMessage::new(),
            message_bytes: 0,
            follows: Follows::No,
            malformed: None,
            scanned: 0,
        }
    }

    /// Decodes the next frame from the front of `buf`, consuming what it
    /// used. `Ok(None)`: more bytes are needed (everything complete was
    /// consumed). After a fatal error every later call fails too.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<AmiFrame>, AmiError> {
        if self.stage == Stage::Failed {
            return Err(AmiError::DecoderFailed);
        }
        let result = self.decode_lines(buf);
        if let Err(error) = &result
            && error.is_fatal()
        {
            self.stage = Stage::Failed;
        }
        result
    }

    /// True when part of a message (or of a line) has been seen but not yet
    /// finished: at EOF this means the peer hung up mid-message.
    pub fn is_mid_message(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || self.message_bytes > 0
    }

    fn decode_lines(&mut self, buf: &mut BytesMut) -> Result<Option<AmiFrame>, AmiError> {
        while let Some(newline) = self.find_newline(buf)? {
            let line = buf.split_to(newline + 1);
            self.scanned = 0;
            let content = trim_line_end(&line);
            match self.stage {
                Stage::Banner => {
                    if content.is_empty() {
                        continue;
                    }
                    self.stage = Stage::Messages;
                    return parse_banner(content).map(|version| Some(AmiFrame::Banner(version)));
                }
                Stage::Messages | Stage::Failed => {
                    self.message_bytes += line.len();
                    if self.message_bytes > MAX_MESSAGE_BYTES {
                        return Err(AmiError::MessageTooLarge {
                            limit: MAX_MESSAGE_BYTES,
                        });
                    }
                    if let Some(frame) = self.take_line(content)? {
                        return Ok(Some(frame));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Index of the `\n` ending the first line of `buf`, if it is complete.
    fn find_newline(&mut self, buf: &BytesMut) -> Result<Option<usize>, AmiError> {
        let start = self.scanned.min(buf.len());
        match buf[start..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let newline = start + offset;
                if trim_line_end(&buf[..=newline]).len() > MAX_LINE_BYTES {
                    return Err(AmiError::LineTooLong {
                        limit: MAX_LINE_BYTES,
                    });
                }
                Ok(Some(newline))
            }
            None => {
                self.scanned = buf.len();
                // One byte of slack for the `\r` of a line that is exactly at the cap.
                if buf.len() > MAX_LINE_BYTES + 1 {
                    return Err(AmiError::LineTooLong {
                        limit: MAX_LINE_BYTES,
                    });
                }
                Ok(None)
            }
        }
    }

    /// Adds one line (ending stripped) to the message being built; returns
    /// the finished frame when the line ends it.
    fn take_line(&mut self, content: &[u8]) -> Result<Option<AmiFrame>, AmiError> {
        match self.follows {
            Follows::Headers | Follows::Output => {
                if let Some(before) = content.strip_suffix(END_COMMAND) {
                    if !before.is_empty() {
                        self.push_output(before)?;
                    }
                    self.follows = Follows::Ended;
                    return Ok(None);
                }
                if self.follows == Follows::Headers
                    && let text = String::from_utf8_lossy(content)
                    && let Some((key, value)) = split_field(&text)
                    && !key.contains(' ')
                {
                    self.push_field(key, value)?;
                } else {
                    self.follows = Follows::Output;
                    self.push_output(content)?;
                }
                return Ok(None);
            }
            Follows::No | Follows::Ended => {}
        }

        if content.is_empty() {
            if self.message.is_empty() && self.malformed.is_none() {
                // Stray blank line between messages.
                self.message_bytes = 0;
                return Ok(None);
            }
            return self.finish().map(Some);
        }

        let text = String::from_utf8_lossy(content);
        match split_field(&text) {
            Some((key, value)) => {
                let first = self.message.is_empty();
                self.push_field(key, value)?;
                if first
                    && key.eq_ignore_ascii_case("Response")
                    && value.eq_ignore_ascii_case("Follows")
                {
                    self.follows = Follows::Headers;
                }
            }
            None => {
                if self.malformed.is_none() {
                    self.malformed = Some(format!("line without ':' {:?}", excerpt(content)));
                }
            }
        }
        Ok(None)
    }

    fn push_field(&mut self, key: &str, value: &str) -> Result<(), AmiError> {
        if self.message.len() >= MAX_FIELDS {
            return Err(AmiError::TooManyFields { limit: MAX_FIELDS });
        }
        self.message.push(key, value);
        Ok(())
    }

    fn push_output(&mut self, line: &[u8]) -> Result<(), AmiError> {
        let text = String::from_utf8_lossy(line);
        self.push_field("Output", &text)
    }

    fn finish(&mut self) -> Result<AmiFrame, AmiError> {
        let message = std::mem::take(&mut self.message);
        let malformed = self.malformed.take();
        self.message_bytes = 0;
        self.follows = Follows::No;
        if let Some(reason) = malformed {
            return Err(AmiError::Malformed { reason });
        }
        let Some((first_key, _)) = message.fields.first() else {
            return Err(AmiError::Malformed {
                reason: "empty message".to_owned(),
            });
        };
        if first_key.eq_ignore_ascii_case("Response") {
            Ok(AmiFrame::Response(message))
        } else if first_key.eq_ignore_ascii_case("Event") {
            Ok(AmiFrame::Event(message))
        } else {
            Err(AmiError::Malformed {
                reason: format!(
                    "starts with {:?}, neither Response nor Event",
                    excerpt(first_key.as_bytes())
                ),
            })
        }
    }
}

/// `line` without its `\n` and an optional `\r` before it.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Key: Value` -> (key, value); the key is trimmed, the value loses its
/// leading blanks only. `None` when there is no ':' or the key is empty.
/// Lines are decoded lossily first: Asterisk passes caller names through
/// byte for byte, and one odd byte must not cost the whole event.
fn split_field(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some((key, value.trim_start_matches([' ', '\t'])))
}

fn parse_banner(line: &[u8]) -> Result<String, AmiError> {
    let text = String::from_utf8_lossy(line);
    match text.split_once("Call Manager/") {
        Some((_, version)) if !version.trim().is_empty() => Ok(version.trim().to_owned()),
        _ => Err(AmiError::NotAmi {
            line: excerpt(line),
        }),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// A request to Asterisk: `Action: <name>` plus fields in order (a key may
/// repeat, e.g. `Variable`). The client adds `ActionID`.
#[derive(Clone, PartialEq, Eq)]
pub struct AmiAction {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl AmiAction {
    pub fn new(name: impl Into<String>) -> Self {
        AmiAction {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Builder form of [`AmiAction::push`].
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(key, value);
        self
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.fields.push((key.into(), value.into()));
    }

    /// The first value of `key`, compared ASCII case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Secrets stay out of logs: `Secret` and `Key` values print as `***`.
impl fmt::Debug for AmiAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Fields<'a>(&'a [(String, String)]);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| {
                        let shown =
                            if k.eq_ignore_ascii_case("Secret") || k.eq_ignore_ascii_case("Key") {
                                "***"
                            } else {
                                v.as_str()
                            };
                        (k, shown)
                    }))
                    .finish()
            }
        }
        f.debug_struct("AmiAction")
            .field("name", &self.name)
            .field("fields", &Fields(&self.fields))
            .finish()
    }
}

/// The bytes of `action` with `ActionID: <action_id>`, ready for the socket.
/// Refuses anything that could inject a header (CR, LF or other control
/// characters in a value; odd characters in a name), a caller-supplied
/// `Action`/`ActionID`, and requests Asterisk would silently truncate.
pub fn encode(action: &AmiAction, action_id: &str) -> Result<Vec<u8>, AmiError> {
    if action.name.is_empty()
        || !action
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(AmiError::InvalidActionName(excerpt(action.name.as_bytes())));
    }
    if action.fields.len() + 2 > MAX_ACTION_FIELDS {
        return Err(AmiError::TooManyActionFields {
            limit: MAX_ACTION_FIELDS,
        });
    }
    let mut out = Vec::with_capacity(64);
    push_line(&mut out, "Action", &action.name)?;
    check_value("ActionID", action_id)?;
    push_line(&mut out, "ActionID", action_id)?;
    for (key, value) in &action.fields {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(AmiError::InvalidFieldName(excerpt(key.as_bytes())));
        }
        if key.eq_ignore_ascii_case("Action") || key.eq_ignore_ascii_case("ActionID") {
            return Err(AmiError::ReservedField(key.clone()));
        }
        check_value(key, value)?;
        push_line(&mut out, key, value)?;
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn check_value(key: &str, value: &str) -> Result<(), AmiError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(AmiError::InvalidValue {
            field: key.to_owned(),
        });
    }
    Ok(())
}

fn push_line(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), AmiError> {
    let length = key.len() + 2 + value.len() + 2;
    if length > MAX_ACTION_LINE_BYTES {
        return Err(AmiError::ActionLineTooLong {
            field: key.to_owned(),
            limit: MAX_ACTION_LINE_BYTES,
        });
    }
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Convenience for tests and tools: every frame in `bytes`, which must end
/// on a frame boundary. Stops at the first fatal error.
pub fn decode_all(bytes: &[u8]) -> (Vec<Result<AmiFrame, AmiError>>, usize) {
    let mut decoder = AmiDecoder::new();
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(Ok(frame)),
            Ok(None) => break,
            Err(error) => {
                let fatal = error.is_fatal();
                frames.push(Err(error));
                if fatal {
                    break;
                }
            }
        }
    }
    let left = buf.remaining();
    (frames, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(decoder: &mut AmiDecoder, bytes: &[u8]) -> Result<Option<AmiFrame>, AmiError> {
        let mut buf = BytesMut::from(bytes);
        decoder.decode(&mut buf)
    }

    fn after_banner() -> AmiDecoder {
        let mut decoder = AmiDecoder::new();
        let frame = decode_one(&mut decoder, b"Asterisk Call Manager/11.0.0\r\n");
        assert_eq!(frame, Ok(Some(AmiFrame::Banner("11.0.0".into()))));
        decoder
    }

    #[test]
    fn banner_then_response_then_event() {
        let mut decoder = AmiDecoder::new();
        let mut buf = BytesMut::from(
            &b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\
               Message: Authentication accepted\r\n\r\nEvent: FullyBooted\r\nStatus: Fully Booted\r\n\r\n"[..],
        );
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(AmiFrame::Banner("11.0.0".into())))
        );
        let Ok(Some(AmiFrame::Response(response))) = decoder.decode(&mut buf) else {
            panic!("expected a response");
        };
        assert_eq!(response.response(), Some("Success"));
        assert_eq!(response.action_id(), Some("1"));
        assert_eq!(response.get("message"), Some("Authentication accepted"));
        let Ok(Some(AmiFrame::Event(event))) = decoder.decode(&mut buf) else {
            panic!("expected an event");
        };
        assert_eq!(event.event_name(), Some("FullyBooted"));
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_input_waits_and_consumes_nothing_of_an_unfinished_line() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(&b"Response: Succ"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"Response: Succ");
        buf.extend_from_slice(b"ess\r\n");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        buf.extend_from_slice(b"\r\n");
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(AmiFrame::Response(_)))
        ));
    }

    #[test]
    fn bare_newlines_and_stray_blank_lines_are_accepted() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(&b"\n\r\nEvent: Hangup\nCause: 16\n\n"[..]);
        let Ok(Some(AmiFrame::Event(event))) = decoder.decode(&mut buf) else {
            panic!("expected an event");
        };
        assert_eq!(event.get("cause"), Some("16"));
    }

    #[test]
    fn repeated_keys_keep_order_and_empty_values_survive() {
        let mut decoder = after_banner();
        let frame = decode_one(
            &mut decoder,
            b"Event: Newchannel\r\nChanVariable: a=1\r\nAccountCode: \r\nchanvariable: b=2\r\nX:\r\n\r\n",
        );
        let Ok(Some(AmiFrame::Event(event))) = frame else {
            panic!("expected an event: {frame:?}");
        };
        assert_eq!(
            event.get_all("ChanVariable").collect::<Vec<_>>(),
            ["a=1", "b=2"]
        );
        assert_eq!(event.get("AccountCode"), Some(""));
        assert_eq!(event.get("x"), Some(""));
        assert_eq!(event.len(), 5);
    }

    #[test]
    fn only_the_first_field_classifies_a_message() {
        let mut decoder = after_banner();
        let frame = decode_one(
            &mut decoder,
            b"Event: OriginateResponse\r\nActionID: 7\r\nResponse: Failure\r\n\r\n",
        );
        let Ok(Some(AmiFrame::Event(event))) = frame else {
            panic!("expected an event: {frame:?}");
        };
        assert_eq!(event.response(), Some("Failure"));
    }

    #[test]
    fn a_message_of_unknown_kind_is_skipped_and_the_stream_goes_on() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(
            &b"Action: Ping\r\n\r\nno colon here\r\nEvent: X\r\n\r\nEvent: Y\r\n\r\n"[..],
        );
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(AmiError::Malformed { .. })
        ));
        let error = decoder.decode(&mut buf);
        assert!(
            matches!(&error, Err(e @ AmiError::Malformed { .. }) if !e.is_fatal()),
            "{error:?}"
        );
        let Ok(Some(AmiFrame::Event(event))) = decoder.decode(&mut buf) else {
            panic!("expected the next event");
        };
        assert_eq!(event.event_name(), Some("Y"));
    }

    #[test]
    fn not_ami_banner_is_fatal_and_sticky() {
        let mut decoder = AmiDecoder::new();
        let error = decode_one(&mut decoder, b"SSH-2.0-OpenSSH_9.2\r\n");
        assert!(matches!(error, Err(AmiError::NotAmi { .. })));
        assert_eq!(
            decode_one(&mut decoder, b"Event: X\r\n\r\n"),
            Err(AmiError::DecoderFailed)
        );
    }

    #[test]
    fn a_line_over_the_cap_fails_before_its_end_arrives() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(&b"Event: X\r\nBig: "[..]);
        buf.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        assert_eq!(
            decoder.decode(&mut buf),
            Err(AmiError::LineTooLong {
                limit: MAX_LINE_BYTES
            })
        );
    }

    #[test]
    fn a_line_exactly_at_the_cap_is_accepted() {
        let mut decoder = after_banner();
        let mut line = b"Big: ".to_vec();
        line.resize(MAX_LINE_BYTES, b'y');
        let mut buf = BytesMut::from(&b"Event: X\r\n"[..]);
        buf.extend_from_slice(&line);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(AmiFrame::Event(_)))
        ));
    }

    #[test]
    fn message_and_field_caps_hold() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(&b"Event: X\r\n"[..]);
        for _ in 0..MAX_FIELDS {
            buf.extend_from_slice(b"K: v\r\n");
        }
        assert_eq!(
            decoder.decode(&mut buf),
            Err(AmiError::TooManyFields { limit: MAX_FIELDS })
        );

        let mut decoder = after_banner();
        let mut buf = BytesMut::from(&b"Event: X\r\n"[..]);
        let line = format!("K: {}\r\n", "v".repeat(MAX_LINE_BYTES - 3));
        while buf.len() <= MAX_MESSAGE_BYTES {
            buf.extend_from_slice(line.as_bytes());
        }
        assert_eq!(
            decoder.decode(&mut buf),
            Err(AmiError::MessageTooLarge {
                limit: MAX_MESSAGE_BYTES
            })
        );
    }

    #[test]
    fn legacy_follows_output_with_blank_lines_is_framed_as_output_fields() {
        let mut decoder = after_banner();
        let mut buf = BytesMut::from(
            &b"Response: Follows\r\nPrivilege: Command\r\nActionID: 5\r\n\
               Channel (Context Extension Pri ) State Appl. Data\n\n\
               0 active channel(s)\n--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n"[..],
        );
        let Ok(Some(AmiFrame::Response(response))) = decoder.decode(&mut buf) else {
            panic!("expected a response");
        };
        assert_eq!(response.action_id(), Some("5"));
        assert_eq!(
            response.get_all("Output").collect::<Vec<_>>(),
            [
                "Channel (Context Extension Pri ) State Appl. Data",
                "",
                "0 active channel(s)"
            ]
        );
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(AmiFrame::Event(_)))
        ));

        let mut decoder = after_banner();
        let frame = decode_one(
            &mut decoder,
            b"Response: Follows\r\nPrivilege: Command\r\nlast line--END COMMAND--\r\n\r\n",
        );
        let Ok(Some(AmiFrame::Response(response))) = frame else {
            panic!("expected a response: {frame:?}");
        };
        assert_eq!(response.get("Output"), Some("last line"));
    }

    #[test]
    fn encode_writes_action_id_then_fields_in_order() {
        let action = AmiAction::new("Originate")
            .field("Channel", "Local/1002@phones")
            .field("Variable", "A=1")
            .field("Variable", "B=2");
        assert_eq!(
            encode(&action, "ivm-7").as_deref(),
            Ok(
                &b"Action: Originate\r\nActionID: ivm-7\r\nChannel: Local/1002@phones\r\n\
                  Variable: A=1\r\nVariable: B=2\r\n\r\n"[..]
            )
        );
    }

    #[test]
    fn encode_refuses_header_injection_and_oversize() {
        let inject = AmiAction::new("Originate").field("Channel", "x\r\nAction: Command");
        assert!(matches!(
            encode(&inject, "1"),
            Err(AmiError::InvalidValue { .. })
        ));
        let lf = AmiAction::new("Ping");
        assert!(matches!(
            encode(&lf, "1\nEvent: x"),
            Err(AmiError::InvalidValue { .. })
        ));
        assert!(matches!(
            encode(&AmiAction::new("Ping\r\nX"), "1"),
            Err(AmiError::InvalidActionName(_))
        ));
        assert!(matches!(
            encode(&AmiAction::new("Ping").field("Bad Key", "v"), "1"),
            Err(AmiError::InvalidFieldName(_))
        ));
        assert!(matches!(
            encode(&AmiAction::new("Ping").field("a:b", "v"), "1"),
            Err(AmiError::InvalidFieldName(_))
        ));
        assert!(matches!(
            encode(&AmiAction::new("Ping").field("actionid", "v"), "1"),
            Err(AmiError::ReservedField(_))
        ));
        let long = AmiAction::new("Ping").field("K", "v".repeat(MAX_ACTION_LINE_BYTES));
        assert!(matches!(
            encode(&long, "1"),
            Err(AmiError::ActionLineTooLong { .. })
        ));
        let exact = AmiAction::new("Ping").field("K", "v".repeat(MAX_ACTION_LINE_BYTES - 5));
        assert!(encode(&exact, "1").is_ok());
        let mut many = AmiAction::new("Ping");
        for _ in 0..MAX_ACTION_FIELDS - 1 {
            many.push("K", "v");
        }
        assert!(matches!(
            encode(&many, "1"),
            Err(AmiError::TooManyActionFields { .. })
        ));
    }

    #[test]
    fn action_debug_hides_the_secret() {
        let login = AmiAction::new("Login")
            .field("Username", "ivm")
            .field("Secret", "hunter2");
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ivm"));
    }
}
