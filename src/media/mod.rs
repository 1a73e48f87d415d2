//! Audio formats and (later) the fragment store, format detection, WAV
//! export and catch-up.
//!
//! Owns: what a recording's bytes mean. Must not know: which switch wrote them.

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
