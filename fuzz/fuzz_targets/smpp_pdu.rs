//! Fuzz the SMPP 3.4 PDU decoder: any bytes, fed whole or in pieces, must
//! never panic, must decode the same either way, and whatever it decodes
//! must encode (when SMPP's lengths allow) to bytes that decode the same.
#![no_main]

use bytes::BytesMut;
use ivm::notify::smpp::pdu::{self, Pdu, PduError};
use libfuzzer_sys::fuzz_target;

/// Every PDU in `buf`, then the error that stopped framing (if any).
fn drain(buf: &mut BytesMut, out: &mut Vec<Result<Pdu, PduError>>) -> bool {
    loop {
        match pdu::decode(buf) {
            Ok(Some(p)) => out.push(Ok(p)),
            Ok(None) => return true,
            Err(e) => {
                out.push(Err(e));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((first, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(*first).max(1);

    let mut whole = Vec::new();
    drain(&mut BytesMut::from(input), &mut whole);

    let mut pieces = Vec::new();
    let mut buf = BytesMut::new();
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        if !drain(&mut buf, &mut pieces) {
            break;
        }
    }
    assert_eq!(whole, pieces);

    for decoded in whole.iter().flatten() {
        if let Ok(bytes) = pdu::encode(decoded) {
            let again = pdu::decode(&mut BytesMut::from(&bytes[..]));
            assert_eq!(again.as_ref(), Ok(&Some(decoded.clone())), "{bytes:?}");
        }
    }
});
