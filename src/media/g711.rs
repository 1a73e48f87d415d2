//! G.711 mu-law and a-law: the byte <-> 16-bit linear conversions a switch's
//! `.ulaw`/`.alaw` recordings and G.711 WAV files need.
//!
//! Owns: the codec arithmetic (ITU-T G.711, as in the public-domain Sun
//! reference `g711.c`). Must not know: files, headers, rates.
//!
//! Decoding is a table lookup; both tables are built at compile time from the
//! reference formulas, so there is nothing to get wrong at run time and
//! nothing to panic on: every byte has a value.

/// mu-law byte -> linear sample.
pub const ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
/// a-law byte -> linear sample.
pub const ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

const SIGN_BIT: u8 = 0x80;
const QUANT_MASK: u8 = 0x0f;
const SEG_SHIFT: u8 = 4;
const SEG_MASK: u8 = 0x70;
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude mu-law encodes, in the 14-bit domain.
const ULAW_CLIP: i32 = 8159;

const fn ulaw_formula(byte: u8) -> i16 {
    let u = !byte;
    let mut t = (((u & QUANT_MASK) as i32) << 3) + ULAW_BIAS;
    t <<= ((u & SEG_MASK) >> SEG_SHIFT) as i32;
    let value = if u & SIGN_BIT != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    };
    value as i16
}

const fn alaw_formula(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & QUANT_MASK) as i32) << 4;
    let segment = ((a & SEG_MASK) >> SEG_SHIFT) as i32;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    let value = if a & SIGN_BIT != 0 { t } else { -t };
    value as i16
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_formula(i as u8);
        i += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_formula(i as u8);
        i += 1;
    }
    table
}

/// One mu-law byte to a linear sample.
#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(byte)]
}

/// One a-law byte to a linear sample.
#[inline]
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(byte)]
}

/// Segment of a magnitude: the index of the first end point it does not
/// exceed, 8 when it exceeds them all.
fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    ends.iter()
        .position(|&end| value <= end)
        .map_or(8, |index| index as u8)
}

/// One linear sample to mu-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
    let mut value = i32::from(sample) >> 2;
    let mask: u8 = if value < 0 {
        value = -value;
        0x7f
    } else {
        0xff
    };
    value = value.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(value, &ENDS);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let byte = (seg << 4) | (((value >> (seg + 1)) as u8) & QUANT_MASK);
    byte ^ mask
}

/// One linear sample to a-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
    let mut value = i32::from(sample) >> 3;
    let mask: u8 = if value >= 0 {
        0xd5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &ENDS);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let quant = if seg < 2 { value >> 1 } else { value >> seg };
    let byte = (seg << SEG_SHIFT) | ((quant as u8) & QUANT_MASK);
    byte ^ mask
}

/// Decode mu-law bytes, appending to `out`.
pub fn decode_ulaw(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| ulaw_to_linear(b)));
}

/// Decode a-law bytes, appending to `out`.
pub fn decode_alaw(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| alaw_to_linear(b)));
}

/// Encode samples as mu-law, appending to `out`.
pub fn encode_ulaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_ulaw(s)));
}

/// Encode samples as a-law, appending to `out`.
pub fn encode_alaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_alaw(s)));
}

/// A mu-law round trip (encode, decode): what a PCMU phone path does to audio.
pub fn ulaw_round_trip(samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
        .collect()
}

/// An a-law round trip (encode, decode).
pub fn alaw_round_trip(samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| alaw_to_linear(linear_to_alaw(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_mu_law_values() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn known_a_law_values() {
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for byte in 0..=255u8 {
            // 0x7f and 0xff both decode to 0 in mu-law; 0 encodes as 0xff.
            let expected_ulaw = if byte == 0x7f { 0xff } else { byte };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(byte)), expected_ulaw);
            assert_eq!(
                linear_to_alaw(alaw_to_linear(byte)),
                byte,
                "a-law {byte:#x}"
            );
        }
    }

    #[test]
    fn round_trip_error_is_small_relative_to_the_sample() {
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let magnitude = i32::from(sample).abs();
            let ulaw_err =
                (i32::from(ulaw_to_linear(linear_to_ulaw(sample))) - i32::from(sample)).abs();
            let alaw_err =
                (i32::from(alaw_to_linear(linear_to_alaw(sample))) - i32::from(sample)).abs();
            assert!(
                ulaw_err <= magnitude / 16 + 8 || magnitude > 32124,
                "mu-law {sample}: {ulaw_err}"
            );
            assert!(
                alaw_err <= magnitude / 16 + 16 || magnitude > 32256,
                "a-law {sample}: {alaw_err}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut previous_u = i32::MIN;
        let mut previous_a = i32::MIN;
        for sample in i16::MIN..=i16::MAX {
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            assert!(u >= previous_u && a >= previous_a, "at {sample}");
            previous_u = u;
            previous_a = a;
        }
    }
}
