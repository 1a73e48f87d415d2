//! FastAGI codec: the environment and replies Asterisk sends in, typed
//! commands out as single command lines.
//!
//! Owns: AGI framing (the `agi_*: value` environment block ended by an empty
//! line, one-line replies, `NNN-` ... `NNN ` multi-line replies, the bare
//! `HANGUP` notification), the parsing of `200 result=N (data) endpos=M`, the
//! query string of `agi_network_script`, and the quoting of command
//! arguments. Must not know: sockets, clocks, calls or sessions; it does no
//! I/O. The transport lives in `switch::asterisk::agi`.
//!
//! Wire facts, measured on Asterisk 22.10 (captures in `tests/data/agi/`) and
//! checked against `res/res_agi.c`:
//!
//! * Lines end with a bare `\n` both ways. Asterisk does not strip a `\r` from
//!   a command: `GET VARIABLE "EXTEN"\r` asks for the variable `EXTEN\r`.
//!   We tolerate `\r\n` from Asterisk, and never send `\r`.
//! * `HANGUP` is a notification, not a reply. It comes while no command runs,
//!   right after the reply of the command the hang-up interrupted, or before
//!   the `511` reply of a command sent just after the hang-up. It can come
//!   twice: Asterisk sends another one when the AGI side closes its half of
//!   the connection, even on a live channel.
//! * After a hang-up Asterisk keeps the AGI running in "dead" mode: `GET
//!   VARIABLE` still works, media commands get `511 Command Not Permitted on
//!   a dead channel or intercept routine`. It never closes the socket itself;
//!   the AGI side must.
//! * Asterisk reads a command line into an 8192-byte buffer (2048 in older
//!   releases). A longer line is cut and the rest runs as further commands,
//!   each answered, so one line can get several replies. [`encode`] refuses
//!   lines over [`MAX_COMMAND_LEN`].
//! * `endpos` can be `-1` (`CONTROL STREAM FILE` at end of file); it decodes
//!   as `None`.
//! * `agi_network_script` is the URL path after `host:port/` with its query,
//!   verbatim: `ivm?target=+15551234` (a `+` stays a `+`).

use bytes::{Buf, BytesMut};

/// Longest line accepted from Asterisk, without its `\n`.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Largest environment block, empty line included.
pub const MAX_ENV_LEN: usize = 16 * 1024;
/// Most variables in one environment (Asterisk 22 sends 22 plus one per
/// AGI() argument, at most 127 of those).
pub const MAX_ENV_VARS: usize = 256;
/// Largest multi-line reply (a `520` usage text is 40–1100 bytes).
pub const MAX_MULTILINE_LEN: usize = 16 * 1024;
/// Longest command line [`encode`] produces, `\n` included: what every
/// Asterisk release since 1.4 reads in one piece (`AGI_BUF_LEN` 2048).
pub const MAX_COMMAND_LEN: usize = 2047;

#[derive(Debug, thiserror::Error)]
pub enum AgiError {
    #[error("agi line longer than {limit} bytes; is the peer an asterisk fastagi client?")]
    LineTooLong { limit: usize },
    #[error("agi environment larger than {limit} bytes or missing its empty line")]
    EnvironmentTooLarge { limit: usize },
    #[error("agi environment has more than {limit} variables")]
    TooManyVariables { limit: usize },
    #[error(
        "malformed agi environment line {line_number}: expected `agi_name: value`; \
         is the peer an asterisk fastagi client?"
    )]
    MalformedEnvironment { line_number: usize },
    #[error("malformed agi reply starting {excerpt:?}")]
    MalformedReply { excerpt: String },
    #[error("agi multi-line reply larger than {limit} bytes")]
    ReplyTooLarge { limit: usize },
    #[error("agi argument `{field}` {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: &'static str,
    },
    #[error("agi command is {len} bytes; asterisk reads at most {limit} in one line")]
    CommandTooLong { len: usize, limit: usize },
    #[error("the agi connection was closed")]
    Closed,
    #[error("a command was interrupted while being written; drop this agi session")]
    Broken,
    #[error("agi i/o: {0}")]
    Io(#[from] std::io::Error),
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// The variables Asterisk sends when an AGI starts, in arrival order, with
/// the parsed `agi_network_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgiEnvironment {
    /// Names without the `agi_` prefix.
    vars: Vec<(String, String)>,
    script_path: String,
    /// Percent-decoded query parameters of `agi_network_script`, in order.
    query: Vec<(String, String)>,
}

impl AgiEnvironment {
    /// Builds an environment from `(name, value)` pairs; names may carry the
    /// `agi_` prefix or not.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| {
                let k: String = k.into();
                let k = k.strip_prefix("agi_").map(str::to_owned).unwrap_or(k);
                (k, v.into())
            })
            .collect();
        let script = first(&vars, "network_script").unwrap_or_default();
        let (script_path, query) = parse_network_script(script);
        AgiEnvironment {
            vars,
            script_path,
            query,
        }
    }

    /// A variable by name, with or without the `agi_` prefix; the first one
    /// if Asterisk repeated it.
    pub fn get(&self, name: &str) -> Option<&str> {
        first(&self.vars, name.strip_prefix("agi_").unwrap_or(name))
    }

    /// Every variable in arrival order, names without the `agi_` prefix.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// `agi_channel`, e.g. `PJSIP/1001-00000000`.
    pub fn channel(&self) -> Option<&str> {
        self.get("channel")
    }

    /// `agi_uniqueid`, the channel's unique id.
    pub fn uniqueid(&self) -> Option<&str> {
        self.get("uniqueid")
    }

    /// `agi_callerid`; Asterisk sends `unknown` when there is none.
    pub fn callerid(&self) -> Option<&str> {
        self.get("callerid")
    }

    /// `agi_calleridname`; Asterisk sends `unknown` when there is none.
    pub fn calleridname(&self) -> Option<&str> {
        self.get("calleridname")
    }

    /// `agi_extension`: the dialed extension, e.g. `*771002`.
    pub fn extension(&self) -> Option<&str> {
        self.get("extension")
    }

    /// `agi_context`.
    pub fn context(&self) -> Option<&str> {
        self.get("context")
    }

    /// `agi_network_script` verbatim, e.g. `ivm?target=1002`.
    pub fn network_script(&self) -> Option<&str> {
        self.get("network_script")
    }

    /// The script path of `agi_network_script` without query and leading
    /// `/`, e.g. `ivm`; empty when there is none.
    pub fn script_path(&self) -> &str {
        &self.script_path
    }

    /// A percent-decoded query parameter of `agi_network_script` (`+` is
    /// kept: dialed numbers are E.164). `Some("")` for `?reply` or `?a=`.
    pub fn query(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    /// Every query parameter, percent-decoded, in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// The AGI() application's extra arguments (`agi_arg_1`, ...) in order.
    pub fn args(&self) -> Vec<&str> {
        let mut args = Vec::new();
        for n in 1.. {
            match self.get(&format!("arg_{n}")) {
                Some(value) => args.push(value),
                None => break,
            }
        }
        args
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_network_script(script: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = match script.split_once('?') {
        Some((path, query)) => (path, query),
        None => (script, ""),
    };
    let path = percent_decode(path.trim_start_matches('/'));
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect();
    (path, query)
}

/// `%XX` decoding; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the environment block that opens every AGI session. Partial
/// input is `Ok(None)` and consumes nothing; on success exactly the block
/// and its empty line are consumed. Every name must start with `agi_`, so a
/// peer that is not Asterisk is refused at its first line.
pub fn decode_env(buf: &mut BytesMut) -> Result<Option<AgiEnvironment>, AgiError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            if buf.len() > MAX_ENV_LEN {
                return Err(AgiError::EnvironmentTooLarge { limit: MAX_ENV_LEN });
            }
            return Ok(None);
        };
        if next > MAX_ENV_LEN {
            return Err(AgiError::EnvironmentTooLarge { limit: MAX_ENV_LEN });
        }
        let line_number = vars.len() + 1;
        if line.is_empty() {
            if vars.is_empty() {
                return Err(AgiError::MalformedEnvironment { line_number });
            }
            buf.advance(next);
            return Ok(Some(AgiEnvironment::from_vars(vars)));
        }
        if vars.len() == MAX_ENV_VARS {
            return Err(AgiError::TooManyVariables {
                limit: MAX_ENV_VARS,
            });
        }
        let Some((name, value)) = parse_env_line(line) else {
            return Err(AgiError::MalformedEnvironment { line_number });
        };
        vars.push((name, value));
        pos = next;
    }
}

fn parse_env_line(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let rest = name.strip_prefix(b"agi_")?;
    if rest.is_empty()
        || !rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return None;
    }
    let value = &line[colon + 1..];
    let value = value.strip_prefix(b" ").unwrap_or(value);
    Some((
        String::from_utf8_lossy(rest).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// One thing Asterisk said after the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgiReply {
    /// `200 result=N[ (data)][ endpos=M]`. `raw` is the whole line.
    Success {
        result: i64,
        data: Option<String>,
        endpos: Option<u64>,
        raw: String,
    },
    /// The bare `HANGUP` line: a notification, not the reply to a command.
    Hangup,
    /// `511`: the channel is gone (or in an intercept routine).
    DeadChannel,
    /// `510 Invalid or unknown command`.
    InvalidCommand,
    /// `520`: bad syntax. The usage text Asterisk sent between
    /// `520-Invalid command syntax.  Proper usage follows:` and
    /// `520 End of proper usage.`, lines joined with `\n`; or the text of a
    /// one-line `520`.
    Usage(String),
    /// Any other code, or a `200` whose result is not a number (e.g. the
    /// digit string of `GET DATA`). Multi-line text is joined with `\n`.
    Other { code: u16, text: String },
}

impl AgiReply {
    /// The DTMF digit a `STREAM FILE`, `WAIT FOR DIGIT` or `RECORD FILE`
    /// reports through its result (the digit's ASCII code), if any.
    pub fn dtmf_digit(&self) -> Option<char> {
        match self {
            AgiReply::Success { result, .. } => u8::try_from(*result)
                .ok()
                .map(char::from)
                .filter(|c| is_dtmf(*c)),
            _ => None,
        }
    }
}

/// Decodes one reply or `HANGUP` notification. Partial input is `Ok(None)`
/// and consumes nothing; blank lines between replies are skipped. After an
/// error the stream cannot be resynchronised: close the connection.
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<AgiReply>, AgiError> {
    loop {
        let Some((line, next)) = next_line(buf, 0)? else {
            return Ok(None);
        };
        if line.is_empty() {
            // Carries nothing; consuming it keeps a stream of empty lines
            // from growing the buffer.
            buf.advance(next);
            continue;
        }
        if line == b"HANGUP" {
            buf.advance(next);
            return Ok(Some(AgiReply::Hangup));
        }
        let Some((code, separator)) = reply_code(line) else {
            return Err(malformed(line));
        };
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
        if separator == Some(b'-') {
            return decode_multiline(buf, code, text, next);
        }
        let reply = match code {
            200 => parse_success(&text, line),
            510 => AgiReply::InvalidCommand,
            511 => AgiReply::DeadChannel,
            520 => AgiReply::Usage(text),
            _ => AgiReply::Other { code, text },
        };
        buf.advance(next);
        return Ok(Some(reply));
    }
}

/// `NNN`, `NNN text` or `NNN-text`: the code and the separator, if any.
fn reply_code(line: &[u8]) -> Option<(u16, Option<u8>)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Some((code, None)),
        Some(b' ') => Some((code, Some(b' '))),
        Some(b'-') => Some((code, Some(b'-'))),
        Some(_) => None,
    }
}

/// The rest of an `NNN-` block, whose first line ends at `pos`. Consumes the
/// whole block or nothing.
fn decode_multiline(
    buf: &mut BytesMut,
    code: u16,
    first_text: String,
    mut pos: usize,
) -> Result<Option<AgiReply>, AgiError> {
    let mut body: Vec<String> = Vec::new();
    loop {
        if pos > MAX_MULTILINE_LEN {
            return Err(AgiError::ReplyTooLarge {
                limit: MAX_MULTILINE_LEN,
            });
        }
        let Some((line, next)) = next_line(buf, pos)? else {
            if buf.len() > MAX_MULTILINE_LEN {
                return Err(AgiError::ReplyTooLarge {
                    limit: MAX_MULTILINE_LEN,
                });
            }
            return Ok(None);
        };
        if let Some((end_code, separator)) = reply_code(line)
            && end_code == code
            && separator != Some(b'-')
        {
            if next > MAX_MULTILINE_LEN {
                return Err(AgiError::ReplyTooLarge {
                    limit: MAX_MULTILINE_LEN,
                });
            }
            let last_text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
            let reply = if code == 520 {
                AgiReply::Usage(body.join("\n"))
            } else {
                let mut all = Vec::with_capacity(body.len() + 2);
                all.push(first_text);
                all.append(&mut body);
                all.push(last_text);
                AgiReply::Other {
                    code,
                    text: all.join("\n"),
                }
            };
            buf.advance(next);
            return Ok(Some(reply));
        }
        body.push(String::from_utf8_lossy(line).into_owned());
        pos = next;
    }
}

/// `result=N[ (data)][ key=value ...]`, the text after `200 `. A result that
/// is not a number makes it [`AgiReply::Other`].
fn parse_success(text: &str, line: &[u8]) -> AgiReply {
    let other = || AgiReply::Other {
        code: 200,
        text: text.to_owned(),
    };
    let Some(after) = text.strip_prefix("result=") else {
        return other();
    };
    let (number, tail) = after.split_once(' ').unwrap_or((after, ""));
    let Ok(result) = number.parse::<i64>() else {
        return other();
    };
    let tail = tail.trim_start_matches(' ');
    // The data runs to the LAST `)`: a variable's value may hold `)` and
    // spaces, and only `key=value` tokens without parentheses follow it.
    let (data, tail) = match tail.strip_prefix('(') {
        Some(inner) => match inner.rfind(')') {
            Some(close) => (Some(inner[..close].to_owned()), &inner[close + 1..]),
            None => (None, tail),
        },
        None => (None, tail),
    };
    let endpos = tail
        .split_ascii_whitespace()
        .find_map(|token| token.strip_prefix("endpos="))
        .and_then(|value| value.parse::<u64>().ok());
    AgiReply::Success {
        result,
        data,
        endpos,
        raw: String::from_utf8_lossy(line).into_owned(),
    }
}

fn malformed(line: &[u8]) -> AgiError {
    let end = line.len().min(40);
    AgiError::MalformedReply {
        excerpt: String::from_utf8_lossy(&line[..end]).into_owned(),
    }
}

/// The line starting at `from` (without `\n` and a trailing `\r`) and the
/// offset after its `\n`; `None` if its `\n` has not arrived yet.
fn next_line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, AgiError> {
    let rest = buf.get(from..).unwrap_or_default();
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        if rest.len() > MAX_LINE_LEN {
            return Err(AgiError::LineTooLong {
                limit: MAX_LINE_LEN,
            });
        }
        return Ok(None);
    };
    let line = &rest[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(AgiError::LineTooLong {
            limit: MAX_LINE_LEN,
        });
    }
    Ok(Some((line, from + newline + 1)))
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// The AGI commands `ivm` sends. Strings are quoted for Asterisk's argument
/// parser by [`encode`]; none may hold `\n`, `\r` or NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgiCommand {
    /// `ANSWER`. Blocks up to 500 ms on a channel with no media yet.
    Answer,
    /// `HANGUP`: hang up this channel. Asterisk replies `200 result=1`, then
    /// sends the `HANGUP` notification.
    Hangup,
    /// `STREAM FILE "file" "digits" offset`. `file` has no extension (an
    /// absolute path or a sound name); playback starts at `sample_offset`.
    /// The reply's `endpos` is exact only after a digit: at end of file it
    /// is the length the file had when playback started.
    StreamFile {
        file: String,
        escape_digits: String,
        sample_offset: u64,
    },
    /// `CONTROL STREAM FILE "file" "digits" skipms "ff" "rew" "pause" offsetms`.
    /// `None` digits are sent as `""` (Asterisk's defaults).
    ControlStreamFile {
        file: String,
        escape_digits: String,
        skip_ms: u32,
        forward_digit: Option<char>,
        rewind_digit: Option<char>,
        pause_digit: Option<char>,
        offset_ms: u64,
    },
    /// `RECORD FILE "file" "format" "digits" timeout offset [BEEP] [s=N]`.
    /// `timeout_ms` of -1 records until a digit or hang-up.
    RecordFile {
        file: String,
        format: String,
        escape_digits: String,
        timeout_ms: i32,
        sample_offset: u64,
        beep: bool,
        silence_seconds: Option<u32>,
    },
    /// `GET VARIABLE "name"`: `result=1 (value)`, or `result=0` if unset.
    GetVariable { name: String },
    /// `GET FULL VARIABLE "expression" ["channel"]`: evaluates `${...}`.
    GetFullVariable {
        expression: String,
        channel: Option<String>,
    },
    /// `SET VARIABLE "name" "value"`.
    SetVariable { name: String, value: String },
    /// `EXEC "application" "options"`: options are one argument, commas
    /// separate the application's own arguments. `result=-2`: no such app.
    Exec {
        application: String,
        options: String,
    },
    /// `WAIT FOR DIGIT timeout`; -1 waits forever. Result: the digit's ASCII
    /// code, 0 on timeout, -1 on hang-up.
    WaitForDigit { timeout_ms: i32 },
    /// `VERBOSE "message" level` (level 1–4) to the Asterisk console.
    Verbose { message: String, level: u8 },
    /// `CHANNEL STATUS ["channel"]`: result 6 is "up".
    ChannelStatus { channel: Option<String> },
    /// `SEND TEXT "text"` on channels that support it.
    SendText { text: String },
    /// `SAY DIGITS "digits" "escape digits"`.
    SayDigits {
        digits: String,
        escape_digits: String,
    },
}

/// The command line for `command`, `\n` included. Refuses (never panics)
/// anything that could end the line early, and lines Asterisk would cut.
pub fn encode(command: &AgiCommand) -> Result<String, AgiError> {
    let mut line = String::new();
    match command {
        AgiCommand::Answer => line.push_str("ANSWER"),
        AgiCommand::Hangup => line.push_str("HANGUP"),
        AgiCommand::StreamFile {
            file,
            escape_digits,
            sample_offset,
        } => {
            line.push_str("STREAM FILE");
            push_quoted(&mut line, "file", non_empty("file", file)?)?;
            push_quoted(
                &mut line,
                "escape_digits",
                dtmf("escape_digits", escape_digits)?,
            )?;
            push_number(&mut line, sample_offset);
        }
        AgiCommand::ControlStreamFile {
            file,
            escape_digits,
            skip_ms,
            forward_digit,
            rewind_digit,
            pause_digit,
            offset_ms,
        } => {
            line.push_str("CONTROL STREAM FILE");
            push_quoted(&mut line, "file", non_empty("file", file)?)?;
            push_quoted(
                &mut line,
                "escape_digits",
                dtmf("escape_digits", escape_digits)?,
            )?;
            push_number(&mut line, skip_ms);
            for (field, digit) in [
                ("forward_digit", forward_digit),
                ("rewind_digit", rewind_digit),
                ("pause_digit", pause_digit),
            ] {
                let digit = digit.map(String::from).unwrap_or_default();
                push_quoted(&mut line, field, dtmf(field, &digit)?)?;
            }
            push_number(&mut line, offset_ms);
        }
        AgiCommand::RecordFile {
            file,
            format,
            escape_digits,
            timeout_ms,
            sample_offset,
            beep,
            silence_seconds,
        } => {
            line.push_str("RECORD FILE");
            push_quoted(&mut line, "file", non_empty("file", file)?)?;
            if format.is_empty() || !format.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(AgiError::InvalidArgument {
                    field: "format",
                    problem: "must be a format name such as sln or wav",
                });
            }
            push_quoted(&mut line, "format", format)?;
            push_quoted(
                &mut line,
                "escape_digits",
                dtmf("escape_digits", escape_digits)?,
            )?;
            push_number(&mut line, timeout("timeout_ms", *timeout_ms)?);
            // Always sent: without it Asterisk would take `BEEP`/`s=` as
            // the offset's place.
            push_number(&mut line, sample_offset);
            if *beep {
                line.push_str(" BEEP");
            }
            match silence_seconds {
                None => {}
                Some(0) => {
                    return Err(AgiError::InvalidArgument {
                        field: "silence_seconds",
                        problem: "must be at least 1 (use None for no silence detection)",
                    });
                }
                Some(seconds) => {
                    line.push_str(" s=");
                    line.push_str(&seconds.to_string());
                }
            }
        }
        AgiCommand::GetVariable { name } => {
            line.push_str("GET VARIABLE");
            push_quoted(&mut line, "name", non_empty("name", name)?)?;
        }
        AgiCommand::GetFullVariable {
            expression,
            channel,
        } => {
            line.push_str("GET FULL VARIABLE");
            push_quoted(
                &mut line,
                "expression",
                non_empty("expression", expression)?,
            )?;
            if let Some(channel) = channel {
                push_quoted(&mut line, "channel", non_empty("channel", channel)?)?;
            }
        }
        AgiCommand::SetVariable { name, value } => {
            line.push_str("SET VARIABLE");
            push_quoted(&mut line, "name", non_empty("name", name)?)?;
            push_quoted(&mut line, "value", value)?;
        }
        AgiCommand::Exec {
            application,
            options,
        } => {
            line.push_str("EXEC");
            push_quoted(
                &mut line,
                "application",
                non_empty("application", application)?,
            )?;
            push_quoted(&mut line, "options", options)?;
        }
        AgiCommand::WaitForDigit { timeout_ms } => {
            line.push_str("WAIT FOR DIGIT");
            push_number(&mut line, timeout("timeout_ms", *timeout_ms)?);
        }
        AgiCommand::Verbose { message, level } => {
            line.push_str("VERBOSE");
            push_quoted(&mut line, "message", message)?;
            if !(1..=4).contains(level) {
                return Err(AgiError::InvalidArgument {
                    field: "level",
                    problem: "must be 1 to 4",
                });
            }
            push_number(&mut line, level);
        }
        AgiCommand::ChannelStatus { channel } => {
            line.push_str("CHANNEL STATUS");
            if let Some(channel) = channel {
                push_quoted(&mut line, "channel", non_empty("channel", channel)?)?;
            }
        }
        AgiCommand::SendText { text } => {
            line.push_str("SEND TEXT");
            push_quoted(&mut line, "text", text)?;
        }
        AgiCommand::SayDigits {
            digits,
            escape_digits,
        } => {
            line.push_str("SAY DIGITS");
            // Asterisk reads the argument with `%d` before saying it.
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AgiError::InvalidArgument {
                    field: "digits",
                    problem: "must be one or more of 0-9",
                });
            }
            push_quoted(&mut line, "digits", digits)?;
            push_quoted(
                &mut line,
                "escape_digits",
                dtmf("escape_digits", escape_digits)?,
            )?;
        }
    }
    line.push('\n');
    if line.len() > MAX_COMMAND_LEN {
        return Err(AgiError::CommandTooLong {
            len: line.len(),
            limit: MAX_COMMAND_LEN,
        });
    }
    Ok(line)
}

/// Checks a command line written by hand (no `\n`): one line Asterisk will
/// read whole. Returns it with its `\n`.
pub fn encode_raw(line: &str) -> Result<String, AgiError> {
    check_no_line_break("line", line)?;
    if line.trim().is_empty() {
        return Err(AgiError::InvalidArgument {
            field: "line",
            problem: "is empty",
        });
    }
    let line = format!("{line}\n");
    if line.len() > MAX_COMMAND_LEN {
        return Err(AgiError::CommandTooLong {
            len: line.len(),
            limit: MAX_COMMAND_LEN,
        });
    }
    Ok(line)
}

/// Appends ` "value"` the way `parse_args` in res_agi.c reads it back:
/// inside double quotes only `"` and `\` need a backslash.
fn push_quoted(line: &mut String, field: &'static str, value: &str) -> Result<(), AgiError> {
    check_no_line_break(field, value)?;
    line.reserve(value.len() + 3);
    line.push_str(" \"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            line.push('\\');
        }
        line.push(c);
    }
    line.push('"');
    Ok(())
}

fn push_number(line: &mut String, value: impl std::fmt::Display) {
    line.push(' ');
    line.push_str(&value.to_string());
}

fn check_no_line_break(field: &'static str, value: &str) -> Result<(), AgiError> {
    if value.contains(['\n', '\r']) {
        return Err(AgiError::InvalidArgument {
            field,
            problem: "contains a line break, which would start another command",
        });
    }
    if value.contains('\0') {
        return Err(AgiError::InvalidArgument {
            field,
            problem: "contains a NUL byte, which would cut the command",
        });
    }
    Ok(())
}

fn non_empty<'a>(field: &'static str, value: &'a str) -> Result<&'a str, AgiError> {
    if value.is_empty() {
        return Err(AgiError::InvalidArgument {
            field,
            problem: "is empty",
        });
    }
    Ok(value)
}

fn dtmf<'a>(field: &'static str, digits: &'a str) -> Result<&'a str, AgiError> {
    if !digits.chars().all(is_dtmf) {
        return Err(AgiError::InvalidArgument {
            field,
            problem: "may only hold DTMF digits 0-9 * # A-D",
        });
    }
    Ok(digits)
}

fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

fn timeout(field: &'static str, ms: i32) -> Result<i32, AgiError> {
    if ms < -1 {
        return Err(AgiError::InvalidArgument {
            field,
            problem: "must be -1 (no timeout) or more",
        });
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    const ENV: &[u8] = b"agi_network: yes\n\
        agi_network_script: ivm?target=1002&name=A%20B%2b&flag\n\
        agi_request: agi://127.0.0.1:4573/ivm?target=1002\n\
        agi_channel: PJSIP/1001-00000000\n\
        agi_uniqueid: 1795483341.0\n\
        agi_callerid: 1001\n\
        agi_calleridname: Phone 1001\n\
        agi_extension: *771002\n\
        agi_accountcode: \n\
        agi_arg_1: one\n\
        agi_arg_2: two words\n\
        \n";

    #[test]
    fn environment_accessors_and_query() {
        let mut b = buf(ENV);
        b.extend_from_slice(b"200 result=0\n");
        let env = decode_env(&mut b).unwrap().unwrap();
        assert_eq!(&b[..], b"200 result=0\n", "only the block is consumed");
        assert_eq!(env.len(), 11);
        assert_eq!(env.channel(), Some("PJSIP/1001-00000000"));
        assert_eq!(env.get("agi_channel"), env.get("channel"));
        assert_eq!(env.uniqueid(), Some("1795483341.0"));
        assert_eq!(env.callerid(), Some("1001"));
        assert_eq!(env.calleridname(), Some("Phone 1001"));
        assert_eq!(env.extension(), Some("*771002"));
        assert_eq!(env.get("accountcode"), Some(""));
        assert_eq!(env.get("nope"), None);
        assert_eq!(env.script_path(), "ivm");
        assert_eq!(env.query("target"), Some("1002"));
        assert_eq!(env.query("name"), Some("A B+"));
        assert_eq!(env.query("flag"), Some(""));
        assert_eq!(env.query("other"), None);
        assert_eq!(env.args(), vec!["one", "two words"]);
    }

    #[test]
    fn plus_in_query_is_not_a_space_and_bad_escapes_stay() {
        let env = AgiEnvironment::from_vars([("agi_network_script", "/ivm?target=+4930%zz%4")]);
        assert_eq!(env.script_path(), "ivm");
        assert_eq!(env.query("target"), Some("+4930%zz%4"));
        let env = AgiEnvironment::from_vars([("channel", "x")]);
        assert_eq!(env.script_path(), "");
        assert!(env.query_pairs().is_empty());
    }

    #[test]
    fn environment_partial_consumes_nothing() {
        for cut in 0..ENV.len() {
            let mut b = buf(&ENV[..cut]);
            assert!(decode_env(&mut b).unwrap().is_none(), "cut at {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn environment_tolerates_crlf() {
        let mut b = buf(b"agi_channel: SIP/x\r\nagi_network_script: ivm\r\n\r\n");
        let env = decode_env(&mut b).unwrap().unwrap();
        assert_eq!(env.channel(), Some("SIP/x"));
        assert_eq!(env.script_path(), "ivm");
        assert!(b.is_empty());
    }

    #[test]
    fn environment_refuses_non_agi_peers() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"Host: x\n\n",
            b"\n",
            b"agi_: x\n\n",
            b"agi_a b: x\n\n",
        ] {
            let err = decode_env(&mut buf(bad)).unwrap_err();
            assert!(
                matches!(err, AgiError::MalformedEnvironment { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn environment_caps() {
        let mut b = BytesMut::new();
        while b.len() <= MAX_ENV_LEN {
            b.extend_from_slice(b"agi_x: ");
            b.extend_from_slice(&[b'v'; 200]);
            b.extend_from_slice(b"\n");
        }
        assert!(matches!(
            decode_env(&mut b),
            Err(AgiError::EnvironmentTooLarge { .. })
        ));

        let mut b = BytesMut::new();
        for _ in 0..=MAX_ENV_VARS {
            b.extend_from_slice(b"agi_x: y\n");
        }
        b.extend_from_slice(b"\n");
        assert!(matches!(
            decode_env(&mut b),
            Err(AgiError::TooManyVariables { .. })
        ));

        let mut b = buf(b"agi_x: ");
        b.extend_from_slice(&vec![b'a'; MAX_LINE_LEN + 1]);
        assert!(matches!(
            decode_env(&mut b),
            Err(AgiError::LineTooLong { .. })
        ));
    }

    fn replies(bytes: &[u8]) -> Vec<AgiReply> {
        let mut b = buf(bytes);
        let mut out = Vec::new();
        while let Some(reply) = decode_reply(&mut b).unwrap() {
            out.push(reply);
        }
        assert!(b.is_empty(), "left over: {:?}", &b[..]);
        out
    }

    fn success(result: i64, data: Option<&str>, endpos: Option<u64>, raw: &str) -> AgiReply {
        AgiReply::Success {
            result,
            data: data.map(str::to_owned),
            endpos,
            raw: raw.to_owned(),
        }
    }

    #[test]
    fn success_lines() {
        let got = replies(
            b"200 result=0\n\
              200 result=0 endpos=3520\n\
              200 result=-1 endpos=0\n\
              200 result=35 (dtmf) endpos=6560\n\
              200 result=-1 (hangup) endpos=8000\n\
              200 result=1 (a (b) c) \"q\" \\ end)\n\
              200 result=1 ( *771002)\n\
              200 result=0 endpos=-1\n\
              200 result=1 ()\n\
              200 result=1 (unclosed\n",
        );
        assert_eq!(
            got,
            vec![
                success(0, None, None, "200 result=0"),
                success(0, None, Some(3520), "200 result=0 endpos=3520"),
                success(-1, None, Some(0), "200 result=-1 endpos=0"),
                success(
                    35,
                    Some("dtmf"),
                    Some(6560),
                    "200 result=35 (dtmf) endpos=6560"
                ),
                success(
                    -1,
                    Some("hangup"),
                    Some(8000),
                    "200 result=-1 (hangup) endpos=8000"
                ),
                success(
                    1,
                    Some("a (b) c) \"q\" \\ end"),
                    None,
                    "200 result=1 (a (b) c) \"q\" \\ end)"
                ),
                success(1, Some(" *771002"), None, "200 result=1 ( *771002)"),
                success(0, None, None, "200 result=0 endpos=-1"),
                success(1, Some(""), None, "200 result=1 ()"),
                success(1, None, None, "200 result=1 (unclosed"),
            ]
        );
        assert_eq!(got[3].dtmf_digit(), Some('#'));
        assert_eq!(got[0].dtmf_digit(), None);
        assert_eq!(got[2].dtmf_digit(), None);
    }

    #[test]
    fn data_with_parentheses_then_endpos() {
        let got = replies(b"200 result=0 (a) b (c)) endpos=12\n");
        assert_eq!(
            got,
            vec![success(
                0,
                Some("a) b (c)"),
                Some(12),
                "200 result=0 (a) b (c)) endpos=12"
            )]
        );
    }

    #[test]
    fn non_numeric_result_is_other() {
        assert_eq!(
            replies(b"200 result= (timeout)\n200 nothing\n"),
            vec![
                AgiReply::Other {
                    code: 200,
                    text: "result= (timeout)".into()
                },
                AgiReply::Other {
                    code: 200,
                    text: "nothing".into()
                },
            ]
        );
    }

    #[test]
    fn error_codes_and_hangup() {
        assert_eq!(
            replies(
                b"510 Invalid or unknown command\n\
                  HANGUP\n\
                  511 Command Not Permitted on a dead channel or intercept routine\n\
                  520 Invalid command syntax.  Proper usage not available.\n\
                  404 whatever\n\
                  HANGUP\r\n"
            ),
            vec![
                AgiReply::InvalidCommand,
                AgiReply::Hangup,
                AgiReply::DeadChannel,
                AgiReply::Usage("Invalid command syntax.  Proper usage not available.".into()),
                AgiReply::Other {
                    code: 404,
                    text: "whatever".into()
                },
                AgiReply::Hangup,
            ]
        );
    }

    #[test]
    fn hangup_before_the_reply_of_a_running_command() {
        // What a session sees when the caller hangs up just as it sends a
        // command: the notification, then the command's own reply.
        let mut b = buf(b"HANGUP\n511 Command Not Permitted");
        assert_eq!(decode_reply(&mut b).unwrap(), Some(AgiReply::Hangup));
        assert_eq!(decode_reply(&mut b).unwrap(), None);
        b.extend_from_slice(b" on a dead channel or intercept routine\n");
        assert_eq!(decode_reply(&mut b).unwrap(), Some(AgiReply::DeadChannel));
        assert!(b.is_empty());
    }

    const USAGE: &[u8] = b"520-Invalid command syntax.  Proper usage follows:\n\
        Sets a variable to the current channel.\n\
        \x20   <value>SUCCESS</value>\n\
        \n\
        520 End of proper usage.\n";

    #[test]
    fn usage_block_across_every_chunk_boundary() {
        let whole = replies(USAGE);
        assert_eq!(
            whole,
            vec![AgiReply::Usage(
                "Sets a variable to the current channel.\n    <value>SUCCESS</value>\n".into()
            )]
        );
        for cut in 0..USAGE.len() {
            let mut b = buf(&USAGE[..cut]);
            assert_eq!(decode_reply(&mut b).unwrap(), None, "cut at {cut}");
            assert_eq!(b.len(), cut, "partial input consumed at {cut}");
            b.extend_from_slice(&USAGE[cut..]);
            assert_eq!(decode_reply(&mut b).unwrap(), Some(whole[0].clone()));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn other_multiline_block() {
        assert_eq!(
            replies(b"300-first\nmiddle\n300 last\n"),
            vec![AgiReply::Other {
                code: 300,
                text: "first\nmiddle\nlast".into()
            }]
        );
    }

    #[test]
    fn malformed_replies() {
        for bad in [
            &b"agi_channel: x\n"[..],
            b"20 result=0\n",
            b"200result=0\n",
            b"\x00\xff\x01\n",
            b"hangup\n",
        ] {
            let err = decode_reply(&mut buf(bad)).unwrap_err();
            assert!(matches!(err, AgiError::MalformedReply { .. }), "{bad:?}");
        }
        let mut b = BytesMut::from(&vec![b'2'; MAX_LINE_LEN + 1][..]);
        assert!(matches!(
            decode_reply(&mut b),
            Err(AgiError::LineTooLong { .. })
        ));
        let mut b = buf(b"520-x\n");
        while b.len() <= MAX_MULTILINE_LEN {
            b.extend_from_slice(b"usage text that never ends\n");
        }
        assert!(matches!(
            decode_reply(&mut b),
            Err(AgiError::ReplyTooLarge { .. })
        ));
    }

    #[test]
    fn blank_lines_between_replies_are_skipped() {
        assert_eq!(
            replies(b"\n\r\n200 result=6\n\n"),
            vec![success(6, None, None, "200 result=6")]
        );
    }

    #[test]
    fn encodes_commands_as_res_agi_parses_them() {
        let cases: Vec<(AgiCommand, &str)> = vec![
            (AgiCommand::Answer, "ANSWER\n"),
            (AgiCommand::Hangup, "HANGUP\n"),
            (
                AgiCommand::StreamFile {
                    file: "/var/spool/ivm/m 1".into(),
                    escape_digits: "#5".into(),
                    sample_offset: 8000,
                },
                "STREAM FILE \"/var/spool/ivm/m 1\" \"#5\" 8000\n",
            ),
            (
                AgiCommand::ControlStreamFile {
                    file: "beep".into(),
                    escape_digits: String::new(),
                    skip_ms: 3000,
                    forward_digit: None,
                    rewind_digit: Some('*'),
                    pause_digit: None,
                    offset_ms: 100,
                },
                "CONTROL STREAM FILE \"beep\" \"\" 3000 \"\" \"*\" \"\" 100\n",
            ),
            (
                AgiCommand::RecordFile {
                    file: "/tmp/r".into(),
                    format: "sln".into(),
                    escape_digits: "#".into(),
                    timeout_ms: 3000,
                    sample_offset: 0,
                    beep: true,
                    silence_seconds: Some(5),
                },
                "RECORD FILE \"/tmp/r\" \"sln\" \"#\" 3000 0 BEEP s=5\n",
            ),
            (
                AgiCommand::RecordFile {
                    file: "/tmp/r".into(),
                    format: "sln48".into(),
                    escape_digits: String::new(),
                    timeout_ms: -1,
                    sample_offset: 48000,
                    beep: false,
                    silence_seconds: None,
                },
                "RECORD FILE \"/tmp/r\" \"sln48\" \"\" -1 48000\n",
            ),
            (
                AgiCommand::SetVariable {
                    name: "IVMTEST".into(),
                    value: "a (b) c) \"q\" \\ end".into(),
                },
                "SET VARIABLE \"IVMTEST\" \"a (b) c) \\\"q\\\" \\\\ end\"\n",
            ),
            (
                AgiCommand::GetVariable {
                    name: "CHANNEL(name)".into(),
                },
                "GET VARIABLE \"CHANNEL(name)\"\n",
            ),
            (
                AgiCommand::GetFullVariable {
                    expression: "${CALLERID(num)}".into(),
                    channel: Some("PJSIP/1001-00000001".into()),
                },
                "GET FULL VARIABLE \"${CALLERID(num)}\" \"PJSIP/1001-00000001\"\n",
            ),
            (
                AgiCommand::Exec {
                    application: "Playback".into(),
                    options: "beep&beep,noanswer".into(),
                },
                "EXEC \"Playback\" \"beep&beep,noanswer\"\n",
            ),
            (
                AgiCommand::WaitForDigit { timeout_ms: -1 },
                "WAIT FOR DIGIT -1\n",
            ),
            (
                AgiCommand::Verbose {
                    message: "tab\there".into(),
                    level: 1,
                },
                "VERBOSE \"tab\there\" 1\n",
            ),
            (
                AgiCommand::ChannelStatus { channel: None },
                "CHANNEL STATUS\n",
            ),
            (
                AgiCommand::SendText { text: "hi".into() },
                "SEND TEXT \"hi\"\n",
            ),
            (
                AgiCommand::SayDigits {
                    digits: "12".into(),
                    escape_digits: String::new(),
                },
                "SAY DIGITS \"12\" \"\"\n",
            ),
        ];
        for (command, line) in cases {
            assert_eq!(encode(&command).unwrap(), line, "{command:?}");
        }
    }

    /// res_agi.c's `parse_args`, re-stated: splits on unquoted, unescaped
    /// blanks; `"` toggles quoting; `\` makes the next byte literal.
    fn parse_args(line: &str) -> Vec<String> {
        let mut args = Vec::new();
        let mut current: Option<String> = None;
        let (mut quoted, mut escaped) = (false, false);
        for c in line.chars() {
            match c {
                '"' if !escaped => {
                    quoted = !quoted;
                    current.get_or_insert_with(String::new);
                }
                ' ' | '\t' if !quoted && !escaped => {
                    args.extend(current.take());
                }
                '\\' if !escaped => escaped = true,
                _ => {
                    current.get_or_insert_with(String::new).push(c);
                    escaped = false;
                }
            }
        }
        args.extend(current);
        args
    }

    #[test]
    fn quoting_round_trips_through_asterisks_parser() {
        for value in [
            "",
            "plain",
            "two words",
            "\"quoted\"",
            "back\\slash\\",
            "\\\"",
            "tab\tand  spaces ",
            "ünïcödé (x)",
        ] {
            let line = encode(&AgiCommand::SetVariable {
                name: "N".into(),
                value: value.into(),
            })
            .unwrap();
            let args = parse_args(line.trim_end_matches('\n'));
            assert_eq!(args, vec!["SET", "VARIABLE", "N", value], "{line:?}");
        }
    }

    #[test]
    fn refuses_injection_and_bad_arguments() {
        let injections = ["x\nHANGUP", "x\r", "x\0y"];
        for bad in injections {
            for command in [
                AgiCommand::SetVariable {
                    name: "N".into(),
                    value: bad.into(),
                },
                AgiCommand::StreamFile {
                    file: bad.into(),
                    escape_digits: String::new(),
                    sample_offset: 0,
                },
                AgiCommand::Verbose {
                    message: bad.into(),
                    level: 1,
                },
            ] {
                assert!(
                    matches!(encode(&command), Err(AgiError::InvalidArgument { .. })),
                    "{command:?}"
                );
            }
        }
        let bad = [
            AgiCommand::StreamFile {
                file: String::new(),
                escape_digits: String::new(),
                sample_offset: 0,
            },
            AgiCommand::StreamFile {
                file: "f".into(),
                escape_digits: "1\" 2".into(),
                sample_offset: 0,
            },
            AgiCommand::WaitForDigit { timeout_ms: -2 },
            AgiCommand::Verbose {
                message: "m".into(),
                level: 0,
            },
            AgiCommand::SayDigits {
                digits: "12a".into(),
                escape_digits: String::new(),
            },
            AgiCommand::RecordFile {
                file: "f".into(),
                format: "sln\" x".into(),
                escape_digits: String::new(),
                timeout_ms: 0,
                sample_offset: 0,
                beep: false,
                silence_seconds: None,
            },
            AgiCommand::RecordFile {
                file: "f".into(),
                format: "sln".into(),
                escape_digits: String::new(),
                timeout_ms: 0,
                sample_offset: 0,
                beep: false,
                silence_seconds: Some(0),
            },
            AgiCommand::Exec {
                application: String::new(),
                options: String::new(),
            },
        ];
        for command in bad {
            assert!(
                matches!(encode(&command), Err(AgiError::InvalidArgument { .. })),
                "{command:?}"
            );
        }
    }

    #[test]
    fn refuses_lines_asterisk_would_cut() {
        let fits = "x".repeat(MAX_COMMAND_LEN - "SET VARIABLE \"N\" \"\"\n".len());
        let command = AgiCommand::SetVariable {
            name: "N".into(),
            value: fits.clone(),
        };
        assert_eq!(encode(&command).unwrap().len(), MAX_COMMAND_LEN);
        let command = AgiCommand::SetVariable {
            name: "N".into(),
            value: fits + "x",
        };
        assert!(matches!(
            encode(&command),
            Err(AgiError::CommandTooLong { len, limit: MAX_COMMAND_LEN }) if len == MAX_COMMAND_LEN + 1
        ));
    }

    #[test]
    fn raw_lines() {
        assert_eq!(encode_raw("FOO BAR").unwrap(), "FOO BAR\n");
        assert!(encode_raw("A\nB").is_err());
        assert!(encode_raw(" ").is_err());
        assert!(encode_raw(&"x".repeat(MAX_COMMAND_LEN)).is_err());
    }
}
