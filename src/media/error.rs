//! The media layer's one error type.
//!
//! Owns: what can go wrong reading, recognising, writing and converting
//! audio. Messages are lowercase and say what to do.

use std::path::PathBuf;

/// Everything the media layer can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file name does not say which audio format it holds.
    #[error(
        "unknown recording extension {extension:?}: use .wav, .sln/.sln16/.sln48 (or another .slnN), .r8/.r16/.raw, .ulaw/.pcmu/.mu or .alaw/.pcma/.al"
    )]
    UnknownExtension { extension: String },

    /// The bytes are not a RIFF/WAVE file we can read.
    #[error("not a readable wav file: {reason}")]
    BadWav { reason: &'static str },

    /// A well-formed WAV in an encoding we do not decode.
    #[error(
        "unsupported wav encoding (format tag {format_tag}, {bits_per_sample} bits a sample): record as 16-bit pcm, mu-law or a-law"
    )]
    UnsupportedWavEncoding {
        format_tag: u16,
        bits_per_sample: u16,
    },

    /// A sample rate this operation cannot handle.
    #[error("unsupported sample rate {sample_rate} Hz: {what}")]
    UnsupportedSampleRate {
        sample_rate: u32,
        what: &'static str,
    },

    /// The file ended before a complete header arrived.
    #[error(
        "{path}: the wav header is incomplete ({len} bytes); the file is truncated or still being written"
    )]
    IncompleteHeader { path: PathBuf, len: u64 },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Writing a WAV failed.
    #[error("writing wav {path}: {source}")]
    WavWrite { path: PathBuf, source: hound::Error },
}
