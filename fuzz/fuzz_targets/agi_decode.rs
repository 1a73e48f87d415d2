//! Fuzz the FastAGI codec: any bytes, fed whole or in pieces, through
//! `decode_env` then `decode_reply` must never panic, never loop, and must
//! yield the same frames either way. Any string through `encode` must give
//! either an error or exactly one line.
#![no_main]

use bytes::BytesMut;
use ivm::proto::agi::{self, AgiCommand, AgiEnvironment, AgiReply};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Env(AgiEnvironment),
    Reply(AgiReply),
}

/// Decodes everything buffered. Returns false after an error (the stream
/// cannot be resynchronised, as on a real connection).
fn drain(buf: &mut BytesMut, have_env: &mut bool, out: &mut Vec<Frame>) -> bool {
    loop {
        let before = buf.len();
        let step = if *have_env {
            agi::decode_reply(buf).map(|r| r.map(Frame::Reply))
        } else {
            agi::decode_env(buf).map(|e| e.map(Frame::Env))
        };
        match step {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a frame must consume input");
                *have_env = true;
                out.push(frame);
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size for the second pass.
    let (chunk, input) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first).max(1), rest),
        None => return,
    };

    let mut whole = Vec::new();
    let mut buf = BytesMut::from(input);
    drain(&mut buf, &mut false, &mut whole);

    let mut pieces = Vec::new();
    let mut buf = BytesMut::new();
    let mut have_env = false;
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        if !drain(&mut buf, &mut have_env, &mut pieces) {
            break;
        }
    }

    // A cap may trip at a different point depending on how much had
    // arrived, so compare the frames both passes decoded.
    let n = whole.len().min(pieces.len());
    assert_eq!(whole[..n], pieces[..n]);

    if let Ok(text) = std::str::from_utf8(input) {
        let command = AgiCommand::SetVariable {
            name: "N".into(),
            value: text.into(),
        };
        if let Ok(line) = agi::encode(&command) {
            assert!(line.len() <= agi::MAX_COMMAND_LEN);
            assert_eq!(line.find(['\n', '\r', '\0']), Some(line.len() - 1));
        }
    }
});
