//! Fuzz the AudioSocket decoder: any bytes, fed in any split, must never
//! panic, must decode the same whole as in pieces, and every message it
//! yields must re-encode to the bytes it came from.
#![no_main]

use bytes::BytesMut;
use ivm::proto::audiosocket::{DecodeError, MAX_PAYLOAD, Message, decode, encode_as_peer};
use libfuzzer_sys::fuzz_target;

fn drain(buf: &mut BytesMut, out: &mut Vec<Message>) -> Option<DecodeError> {
    loop {
        match decode(buf, MAX_PAYLOAD) {
            Ok(Some(message)) => out.push(message),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (chunk, input) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first).max(1), rest),
        None => return,
    };

    let mut whole = Vec::new();
    let mut buf = BytesMut::from(input);
    let whole_error = drain(&mut buf, &mut whole);
    let consumed = input.len() - buf.len();

    let mut pieces = Vec::new();
    let mut buf = BytesMut::new();
    let mut pieces_error = None;
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        pieces_error = drain(&mut buf, &mut pieces);
        if pieces_error.is_some() {
            break;
        }
    }
    // Errors are decided from a header, so both passes stop at the same one.
    assert_eq!(whole, pieces);
    assert_eq!(whole_error, pieces_error);

    let mut reencoded = Vec::new();
    for message in &whole {
        if let Ok(bytes) = encode_as_peer(message) {
            reencoded.extend_from_slice(&bytes);
        }
    }
    // Lower-case DTMF keys decode upper-case; everything else is exact.
    if whole_error.is_none() {
        assert!(reencoded.eq_ignore_ascii_case(&input[..consumed]));
    }
});
