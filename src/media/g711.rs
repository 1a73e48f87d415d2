//! G.711 mu-law and a-law: the byte <-> 16-bit linear conversions a switch's
//! `.ulaw`/`.alaw` recordings and G.711 WAV files need.
//!
//! Owns: the slice helpers the media code uses. The codec arithmetic is the
//! `audio-codec-algorithms` crate's, whose encoders match the ITU-T G.191
//! reference for all 65536 inputs (checked below against the G.191 tables in
//! `tests/data/g711/`); the Sun `g711.c` formulas this module used before
//! put 508 negative inputs into the neighbouring mu-law step. Must not know:
//! files, headers, rates. Every byte and every sample has a value: nothing
//! here can panic.

use audio_codec_algorithms as g711;

#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    g711::decode_ulaw(byte)
}

#[inline]
pub fn alaw_to_linear(byte: u8) -> i16 {
    g711::decode_alaw(byte)
}

#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    g711::encode_ulaw(sample)
}

#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    g711::encode_alaw(sample)
}

pub fn decode_ulaw(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| ulaw_to_linear(b)));
}

pub fn decode_alaw(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| alaw_to_linear(b)));
}

pub fn encode_ulaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_ulaw(s)));
}

pub fn encode_alaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_alaw(s)));
}

/// Encode then decode: what a G.711 leg does to `samples`.
pub fn ulaw_round_trip(samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
        .collect()
}

/// Encode then decode: what a G.711 leg does to `samples`.
pub fn alaw_round_trip(samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| alaw_to_linear(linear_to_alaw(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/g711")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Bit-exact with ITU-T G.191 for every input; prints the figure.
    #[test]
    fn encoders_match_the_itu_g191_reference_for_every_input() {
        let (ulaw, alaw) = (
            reference("ulaw-reference.bin"),
            reference("alaw-reference.bin"),
        );
        assert_eq!((ulaw.len(), alaw.len()), (65536, 65536));
        let mut mismatches = (0, 0);
        for (i, sample) in (i16::MIN..=i16::MAX).enumerate() {
            mismatches.0 += usize::from(linear_to_ulaw(sample) != ulaw[i]);
            mismatches.1 += usize::from(linear_to_alaw(sample) != alaw[i]);
        }
        eprintln!(
            "G.711 vs G.191: mu-law {} / 65536 differ, a-law {} / 65536 differ",
            mismatches.0, mismatches.1
        );
        assert_eq!(mismatches, (0, 0));
    }

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
