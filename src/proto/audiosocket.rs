//! AudioSocket codec: Asterisk's live-media TCP protocol (`app_audiosocket`,
//! `chan_audiosocket`, `res_audiosocket`), sans-IO.
//!
//! Owns: the framing `kind:u8 | len:u16 big-endian | payload[len]`, the
//! kinds and their payloads, and which kinds may go which way. Must not know:
//! sockets, clocks, sessions. The transport is
//! `switch::asterisk::audiosocket`.
//!
//! Wire facts (read in `res/res_audiosocket.c` of Asterisk 22, measured on
//! 22.10.1: see `tests/asterisk/NOTES.md`):
//!
//! * Asterisk sends the UUID first (`01 00 10` + 16 raw bytes), then one
//!   audio message per channel frame, DTMF (`03 00 01 '5'`) on each key's
//!   end, and never a hang-up or error message: it just closes the socket.
//! * Audio is signed 16-bit little-endian mono PCM; the kind is the rate
//!   (`0x10` = 8 kHz, `0x11`..`0x18` = 12..192 kHz, 22.7+).
//! * Asterisk accepts from us only audio and hang-up; a UUID, DTMF or error
//!   kind, or an empty audio payload, ends its session. [`encode`] refuses
//!   them, so they cannot be sent by mistake.
//! * Asterisk waits at most 5 ms for the rest of a message it started
//!   reading: every encoder here produces ONE buffer per message, to be
//!   written with one `write()` on a `TCP_NODELAY` socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the payload: kind and length.
pub const HEADER_LEN: usize = 3;

/// Largest payload accepted from a peer by default: 16 KiB is 85 ms of
/// 96 kHz audio, far beyond a channel frame; the wire maximum is 65535.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Message kinds, as on the wire.
pub mod kind {
    pub const HANGUP: u8 = 0x00;
    pub const UUID: u8 = 0x01;
    pub const DTMF: u8 = 0x03;
    pub const SLIN_8K: u8 = 0x10;
    pub const SLIN_192K: u8 = 0x18;
    pub const ERROR: u8 = 0xff;
}

/// Sample rate of each audio kind, `0x10` to `0x18`.
const AUDIO_RATES: [u32; 9] = [
    8_000, 12_000, 16_000, 24_000, 32_000, 44_100, 48_000, 96_000, 192_000,
];

/// The audio kind of a sample rate, if AudioSocket has one.
pub fn audio_kind(sample_rate: u32) -> Option<u8> {
    let index = AUDIO_RATES.iter().position(|&rate| rate == sample_rate)?;
    Some(kind::SLIN_8K + index as u8)
}

/// The sample rate of an audio kind.
pub fn audio_rate(kind: u8) -> Option<u32> {
    let index = kind.checked_sub(kind::SLIN_8K)?;
    AUDIO_RATES.get(usize::from(index)).copied()
}

/// A session UUID in its 16-byte binary form (what `uuid_parse` yields).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parse the hyphenated form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(text: &str) -> Option<Uuid> {
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (index, &c) in bytes.iter().enumerate() {
            if matches!(index, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let value = (c as char).to_digit(16)? as u8;
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) {
                value << 4
            } else {
                value
            };
            nibbles += 1;
        }
        Some(Uuid(out))
    }

    /// A random (version 4) UUID from 16 random bytes.
    pub fn v4_from_bytes(mut bytes: [u8; 16]) -> Uuid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Uuid(bytes)
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// One AudioSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `0x00`: end the session (only we send it; Asterisk closes instead).
    Hangup,
    /// `0x01`: which session this connection is (Asterisk, first message).
    Uuid(Uuid),
    /// `0x03`: a key was released (Asterisk 22.4+); an ASCII digit, `*`,
    /// `#` or `A`-`D`.
    Dtmf(char),
    /// `0x10`-`0x18`: signed 16-bit mono samples at `sample_rate`.
    Audio { sample_rate: u32, samples: Vec<i16> },
    /// `0xff`: an error report; the payload is opaque (Asterisk 22 never
    /// sends one).
    Error(Bytes),
}

impl Message {
    /// Whether Asterisk accepts this kind from us without ending the session.
    pub fn may_send_to_asterisk(&self) -> bool {
        match self {
            Message::Hangup => true,
            Message::Audio { samples, .. } => !samples.is_empty(),
            Message::Uuid(_) | Message::Dtmf(_) | Message::Error(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("audiosocket message kind {0:#04x} is unknown; is the peer asterisk's audiosocket?")]
    UnknownKind(u8),
    #[error("audiosocket payload of {len} bytes is over the {limit}-byte limit")]
    TooLong { len: usize, limit: usize },
    #[error("audiosocket {what} payload has {len} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("audiosocket dtmf byte {0:#04x} is not a key")]
    BadDtmf(u8),
}

/// Decode one message from the front of `buf`: `Ok(None)` until a whole one
/// is there; every error is fatal for the connection (the stream cannot be
/// trusted past it). Payloads over `max_payload` are refused from their
/// header, before they are buffered.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Message>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    let rate = audio_rate(kind);
    if rate.is_none() && !matches!(kind, kind::HANGUP | kind::UUID | kind::DTMF | kind::ERROR) {
        return Err(DecodeError::UnknownKind(kind));
    }
    if len > max_payload {
        return Err(DecodeError::TooLong {
            len,
            limit: max_payload,
        });
    }
    let bad = |what, expected| DecodeError::BadLength {
        what,
        len,
        expected,
    };
    // Length checks from the header alone: a wrong one fails before its
    // payload arrives.
    match kind {
        // Asterisk's hang-up is the bare header; a payload would be
        // dropped unseen, so the message would not be what was sent.
        kind::HANGUP if len != 0 => return Err(bad("hangup", "0")),
        kind::UUID if len != 16 => return Err(bad("uuid", "16")),
        kind::DTMF if len != 1 => return Err(bad("dtmf", "1")),
        _ if rate.is_some() && (len == 0 || len % 2 != 0) => {
            return Err(bad("audio", "an even number above 0"));
        }
        _ => {}
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    let message = match kind {
        kind::HANGUP => Message::Hangup,
        kind::UUID => {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&payload);
            Message::Uuid(Uuid(bytes))
        }
        kind::DTMF => {
            let key = payload[0];
            if !matches!(key, b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D' | b'a'..=b'd') {
                return Err(DecodeError::BadDtmf(key));
            }
            Message::Dtmf(key.to_ascii_uppercase() as char)
        }
        kind::ERROR => Message::Error(payload),
        _ => Message::Audio {
            // Checked above: only audio kinds and the four others get here.
            sample_rate: rate.unwrap_or(8_000),
            samples: payload
                .chunks_exact(2)
                .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                .collect(),
        },
    };
    Ok(Some(message))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("asterisk ends the audiosocket session on a {0} message from us")]
    NotToAsterisk(&'static str),
    #[error("audiosocket has no kind for {0} Hz audio")]
    UnsupportedRate(u32),
    #[error("audio frame of {0} samples does not fit one audiosocket message")]
    FrameTooLong(usize),
}

/// One audio message for Asterisk, header and payload in one buffer.
pub fn encode_audio(sample_rate: u32, samples: &[i16]) -> Result<Bytes, EncodeError> {
    let kind = audio_kind(sample_rate).ok_or(EncodeError::UnsupportedRate(sample_rate))?;
    if samples.is_empty() {
        return Err(EncodeError::NotToAsterisk("zero-length audio"));
    }
    let len =
        u16::try_from(samples.len() * 2).map_err(|_| EncodeError::FrameTooLong(samples.len()))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + usize::from(len));
    out.put_u8(kind);
    out.put_u16(len);
    for sample in samples {
        out.put_i16_le(*sample);
    }
    Ok(out.freeze())
}

/// The hang-up message: Asterisk's `AudioSocket()` returns 0 and the
/// dialplan (or AGI) carries on with the channel up.
pub fn encode_hangup() -> Bytes {
    Bytes::from_static(&[kind::HANGUP, 0, 0])
}

/// Any message as bytes, one buffer; refuses what Asterisk would end the
/// session on. [`encode_as_peer`] writes the other direction (for tests and
/// simulators).
pub fn encode(message: &Message) -> Result<Bytes, EncodeError> {
    match message {
        Message::Hangup => Ok(encode_hangup()),
        Message::Audio {
            sample_rate,
            samples,
        } => encode_audio(*sample_rate, samples),
        Message::Uuid(_) => Err(EncodeError::NotToAsterisk("uuid")),
        Message::Dtmf(_) => Err(EncodeError::NotToAsterisk("dtmf")),
        Message::Error(_) => Err(EncodeError::NotToAsterisk("error")),
    }
}

/// A message as Asterisk would send it (any kind), one buffer.
pub fn encode_as_peer(message: &Message) -> Result<Bytes, EncodeError> {
    let (kind, payload): (u8, Vec<u8>) = match message {
        Message::Uuid(uuid) => (kind::UUID, uuid.0.to_vec()),
        Message::Dtmf(key) => (kind::DTMF, vec![*key as u8]),
        Message::Error(payload) => (kind::ERROR, payload.to_vec()),
        Message::Hangup | Message::Audio { .. } => return encode(message),
    };
    let len = u16::try_from(payload.len()).map_err(|_| EncodeError::FrameTooLong(payload.len()))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_u8(kind);
    out.put_u16(len);
    out.put_slice(&payload);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| (c as char).to_digit(16).unwrap_or(0) as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decode(&mut buf, MAX_PAYLOAD)? {
            out.push(message);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    /// The start of a session as Asterisk 22.10.1 sent it (printed by
    /// `tests/audiosocket_asterisk.rs`): the UUID, a first 20 ms frame of
    /// digital silence, later a frame of speech and the key `5`.
    #[test]
    fn an_asterisk_session_transcript_decodes() {
        let mut wire = hex("01 0010 9e2fc966f189401ba84d729722eb8522");
        wire.extend(hex("10 0140"));
        wire.extend([0u8; 320]);
        wire.extend(hex("10 0140"));
        wire.extend((0..160i16).flat_map(|n| (n * 3 - 200).to_le_bytes()));
        wire.extend(hex("03 0001 35"));
        let messages = decode_all(&wire).unwrap();
        assert_eq!(
            messages,
            vec![
                Message::Uuid(Uuid::parse("9e2fc966-f189-401b-a84d-729722eb8522").unwrap()),
                Message::Audio {
                    sample_rate: 8_000,
                    samples: vec![0; 160]
                },
                Message::Audio {
                    sample_rate: 8_000,
                    samples: (0..160).map(|n| n * 3 - 200).collect()
                },
                Message::Dtmf('5'),
            ]
        );
    }

    #[test]
    fn any_split_decodes_the_same() {
        let mut wire = encode_as_peer(&Message::Uuid(Uuid([7; 16])))
            .unwrap()
            .to_vec();
        wire.extend_from_slice(&encode_audio(16_000, &[1, -1, 300, -300]).unwrap());
        wire.extend_from_slice(&encode_as_peer(&Message::Dtmf('#')).unwrap());
        wire.extend_from_slice(&encode_hangup());
        let whole = decode_all(&wire).unwrap();
        assert_eq!(whole.len(), 4);
        for chunk in 1..wire.len() {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(message) = decode(&mut buf, MAX_PAYLOAD).unwrap() {
                    out.push(message);
                }
            }
            assert_eq!(out, whole, "chunk {chunk}");
        }
    }

    #[test]
    fn every_rate_kind_round_trips() {
        for (offset, rate) in AUDIO_RATES.iter().enumerate() {
            let bytes = encode_audio(*rate, &[i16::MIN, 0, i16::MAX]).unwrap();
            assert_eq!(bytes[0], 0x10 + offset as u8);
            assert_eq!(&bytes[1..3], &[0, 6]);
            assert_eq!(
                decode_all(&bytes).unwrap(),
                vec![Message::Audio {
                    sample_rate: *rate,
                    samples: vec![i16::MIN, 0, i16::MAX]
                }]
            );
        }
        assert_eq!(audio_kind(16_000), Some(0x12), "0x12 is slin16, not 0x11");
        assert_eq!(audio_rate(0x19), None);
        assert_eq!(audio_rate(0x0f), None);
    }

    #[test]
    fn a_20ms_frame_is_one_buffer_with_header() {
        let frame = encode_audio(8_000, &[0x0102; 160]).unwrap();
        assert_eq!(frame.len(), 323);
        assert_eq!(&frame[..5], &[0x10, 0x01, 0x40, 0x02, 0x01]);
        assert_eq!(&encode_hangup()[..], &[0, 0, 0]);
    }

    #[test]
    fn kinds_asterisk_refuses_are_never_encoded() {
        for message in [
            Message::Uuid(Uuid([0; 16])),
            Message::Dtmf('1'),
            Message::Error(Bytes::new()),
            Message::Audio {
                sample_rate: 8_000,
                samples: vec![],
            },
        ] {
            assert!(!message.may_send_to_asterisk());
            assert!(encode(&message).is_err(), "{message:?}");
        }
        assert_eq!(
            encode_audio(11_025, &[0]),
            Err(EncodeError::UnsupportedRate(11_025))
        );
        assert_eq!(
            encode_audio(8_000, &vec![0; 40_000]),
            Err(EncodeError::FrameTooLong(40_000))
        );
    }

    #[test]
    fn malformed_input_is_a_clear_error_decided_from_the_header() {
        let cases: [(&str, DecodeError); 8] = [
            ("02 0000", DecodeError::UnknownKind(0x02)),
            // Found by the fuzzer: a hang-up with a payload decoded as a
            // plain hang-up, so it did not re-encode to what came.
            (
                "00 0002",
                DecodeError::BadLength {
                    what: "hangup",
                    len: 2,
                    expected: "0",
                },
            ),
            ("19 0002", DecodeError::UnknownKind(0x19)),
            (
                "01 000f",
                DecodeError::BadLength {
                    what: "uuid",
                    len: 15,
                    expected: "16",
                },
            ),
            (
                "03 0002",
                DecodeError::BadLength {
                    what: "dtmf",
                    len: 2,
                    expected: "1",
                },
            ),
            (
                "10 0000",
                DecodeError::BadLength {
                    what: "audio",
                    len: 0,
                    expected: "an even number above 0",
                },
            ),
            (
                "10 0141",
                DecodeError::BadLength {
                    what: "audio",
                    len: 321,
                    expected: "an even number above 0",
                },
            ),
            (
                "10 ffff",
                DecodeError::TooLong {
                    len: 65_535,
                    limit: MAX_PAYLOAD,
                },
            ),
        ];
        for (header, error) in cases {
            // The header alone, no payload yet: refused already.
            let mut buf = BytesMut::from(&hex(header)[..]);
            assert_eq!(decode(&mut buf, MAX_PAYLOAD), Err(error), "{header}");
        }
        let mut buf = BytesMut::from(&hex("03 0001 78")[..]);
        assert_eq!(
            decode(&mut buf, MAX_PAYLOAD),
            Err(DecodeError::BadDtmf(b'x'))
        );
    }

    #[test]
    fn partial_input_waits() {
        let frame = encode_audio(8_000, &[5; 160]).unwrap();
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode(&mut buf, MAX_PAYLOAD), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn uuid_text_round_trips_and_rejects_garbage() {
        let text = "6f1b3c2a-9d4e-4f5a-8b7c-0d1e2f3a4b5c";
        let uuid = Uuid::parse(text).unwrap();
        assert_eq!(uuid.to_string(), text);
        assert_eq!(Uuid::parse(&text.to_uppercase()), Some(uuid));
        for bad in [
            "",
            "6f1b3c2a9d4e4f5a8b7c0d1e2f3a4b5c",
            "6f1b3c2a-9d4e-4f5a-8b7c-0d1e2f3a4b5g",
            "6f1b3c2a-9d4e-4f5a-8b7c+0d1e2f3a4b5c",
            "6f1b3c2a-9d4e-4f5a-8b7c-0d1e2f3a4b5ć",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
        let v4 = Uuid::v4_from_bytes([0xff; 16]);
        assert_eq!(v4.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
