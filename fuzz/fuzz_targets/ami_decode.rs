//! Fuzz the Asterisk Manager Interface decoder: any bytes, fed in any split,
//! must never panic, and must decode the same whole as in pieces.
#![no_main]

use bytes::BytesMut;
use ivm::proto::ami::{AmiDecoder, AmiError, AmiFrame};
use libfuzzer_sys::fuzz_target;

/// Decodes everything buffered; false after a fatal error. Non-fatal errors
/// consumed one message and are recorded like frames.
fn drain(
    decoder: &mut AmiDecoder,
    buf: &mut BytesMut,
    out: &mut Vec<Result<AmiFrame, AmiError>>,
) -> bool {
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => return true,
            Err(e) if !e.is_fatal() => out.push(Err(e)),
            Err(e) => {
                out.push(Err(e));
                return false;
            }
        }
    }
}

/// Everything before the first fatal error: a cap may trip at a different
/// byte when input arrives in pieces, but never after a different frame.
fn before_fatal(results: &[Result<AmiFrame, AmiError>]) -> &[Result<AmiFrame, AmiError>] {
    let end = results
        .iter()
        .position(|r| matches!(r, Err(e) if e.is_fatal()))
        .unwrap_or(results.len());
    &results[..end]
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size for the second pass; the second
    // decides whether a banner is prepended, so message parsing is reached.
    let (chunk, rest) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first).max(1), rest),
        None => return,
    };
    let mut input = Vec::with_capacity(rest.len() + 32);
    if let Some((flag, rest)) = rest.split_first() {
        if flag & 1 == 1 {
            input.extend_from_slice(b"Asterisk Call Manager/11.0.0\r\n");
        }
        input.extend_from_slice(rest);
    }

    let mut whole = Vec::new();
    let mut decoder = AmiDecoder::new();
    let mut buf = BytesMut::from(&input[..]);
    drain(&mut decoder, &mut buf, &mut whole);

    let mut pieces = Vec::new();
    let mut decoder = AmiDecoder::new();
    let mut buf = BytesMut::new();
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        if !drain(&mut decoder, &mut buf, &mut pieces) {
            break;
        }
    }

    assert_eq!(before_fatal(&whole), before_fatal(&pieces));
});
