//! Audio: formats and their recognition (S3), G.711, WAV, decimation to
//! 8 kHz, speech/silence detection, WSOLA time-stretch, the listener's
//! catch-up stream with its exact position map, and the measurement tools
//! (`signal`, `analysis`) the tests and benchmarks use to check delivery by
//! correlation.
//!
//! Owns: what a recording's bytes mean. Must not know: which switch wrote
//! them. Everything here is pure but for the functions whose job is a file.

pub mod analysis;
pub mod catchup;
pub mod error;
pub mod format;
pub mod g711;
pub mod relay;
pub mod resample;
pub mod signal;
pub mod silence;
pub mod stretch;
pub mod wav;

use serde::Serialize;

/// How a recording's samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFormat {
    /// Raw signed 16-bit little-endian linear PCM at the given rate.
    Slin { sample_rate: u32 },
    /// G.711 mu-law, 8 kHz, one byte a sample.
    Ulaw,
    /// G.711 a-law, 8 kHz, one byte a sample.
    Alaw,
    /// RIFF WAV with a header; the rate is in the header.
    Wav,
}

impl AudioFormat {
    /// Samples per second, where the format fixes it.
    pub fn sample_rate(self) -> Option<u32> {
        match self {
            AudioFormat::Slin { sample_rate } => Some(sample_rate),
            AudioFormat::Ulaw | AudioFormat::Alaw => Some(8000),
            AudioFormat::Wav => None,
        }
    }

    /// Bytes per sample of the raw formats.
    pub fn bytes_per_sample(self) -> Option<u32> {
        match self {
            AudioFormat::Slin { .. } => Some(2),
            AudioFormat::Ulaw | AudioFormat::Alaw => Some(1),
            AudioFormat::Wav => None,
        }
    }
}

/// Asterisk's recorders write through a 32 KiB stdio buffer, so a growing
/// recording's size on disk moves in steps of this many bytes.
pub const ASTERISK_FLUSH_BYTES: u64 = 32 * 1024;

/// Where a playback of a growing raw file truly stopped when it ran to the
/// end of what was on disk.
///
/// Asterisk's `STREAM FILE` then reports `endpos` = the file's length when the
/// command *started*, not where it stopped: `endpos` replays audio, the size
/// now skips audio. The true end is one of the flush boundaries between the
/// two (the file grew while playing); the one nearest to where the clock says
/// playback should be wins. All positions are in samples.
pub fn growing_file_stop_position(
    reported_endpos: u64,
    samples_on_disk_now: u64,
    expected_position: u64,
    samples_per_flush: u64,
) -> u64 {
    if samples_on_disk_now <= reported_endpos || samples_per_flush == 0 {
        return reported_endpos;
    }
    let mut best = reported_endpos;
    let mut consider = |candidate: u64| {
        if candidate.abs_diff(expected_position) < best.abs_diff(expected_position) {
            best = candidate;
        }
    };
    let first_boundary = reported_endpos.div_ceil(samples_per_flush) * samples_per_flush;
    let mut boundary = first_boundary;
    // Bounded: one candidate per flush between the two sizes.
    while boundary < samples_on_disk_now {
        consider(boundary);
        boundary += samples_per_flush;
    }
    consider(samples_on_disk_now);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUSH: u64 = ASTERISK_FLUSH_BYTES / 2; // 16384 samples of slin

    #[test]
    fn a_file_that_did_not_grow_stops_at_endpos() {
        assert_eq!(
            growing_file_stop_position(48_000, 48_000, 60_000, FLUSH),
            48_000
        );
    }

    #[test]
    fn the_boundary_nearest_the_clock_wins() {
        // Started with 16384 on disk, two more flushes landed while playing,
        // clock says ~40000 samples were played.
        assert_eq!(
            growing_file_stop_position(16_384, 49_152, 40_000, FLUSH),
            32_768
        );
        assert_eq!(
            growing_file_stop_position(16_384, 49_152, 47_000, FLUSH),
            49_152
        );
        assert_eq!(
            growing_file_stop_position(16_384, 49_152, 17_000, FLUSH),
            16_384
        );
    }

    #[test]
    fn an_unaligned_final_size_is_a_candidate() {
        assert_eq!(
            growing_file_stop_position(10_000, 20_000, 19_000, FLUSH),
            20_000
        );
        assert_eq!(
            growing_file_stop_position(10_000, 20_000, 15_000, FLUSH),
            16_384
        );
    }

    #[test]
    fn zero_flush_size_never_loops() {
        assert_eq!(growing_file_stop_position(1, 100, 50, 0), 1);
    }
}
