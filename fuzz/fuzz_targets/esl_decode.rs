//! Fuzz the FreeSWITCH Event Socket decoder: any bytes, fed in any split,
//! must never panic, and must decode the same whole as in pieces.
#![no_main]

use bytes::BytesMut;
use ivm::proto::esl::{DecodeError, Decoder, Message};
use libfuzzer_sys::fuzz_target;

/// Decodes everything currently buffered; stops at partial input or a fatal
/// error. Non-fatal errors consumed one frame and are recorded like messages.
fn drain(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    out: &mut Vec<Result<Message, DecodeError>>,
) -> bool {
    loop {
        match decoder.decode(buf) {
            Ok(Some(message)) => out.push(Ok(message)),
            Ok(None) => return true,
            Err(e) if !e.is_fatal() => out.push(Err(e)),
            Err(e) => {
                out.push(Err(e));
                return false;
            }
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
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(input);
    drain(&mut decoder, &mut buf, &mut whole);

    let mut pieces = Vec::new();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        if !drain(&mut decoder, &mut buf, &mut pieces) {
            break;
        }
    }

    // A fatal error may be reported at a different point (e.g. the header
    // cap trips only once enough bytes arrived), so compare only the
    // messages decoded before any fatal error.
    let ok_prefix = |v: &[Result<Message, DecodeError>]| {
        v.iter()
            .take_while(|r| r.as_ref().map_or_else(|e| !e.is_fatal(), |_| true))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (a, b) = (ok_prefix(&whole), ok_prefix(&pieces));
    let n = a.len().min(b.len());
    assert_eq!(a[..n], b[..n]);
});
