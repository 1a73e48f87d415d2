//! Recognising a switch's recording: which encoding, rate and channel count
//! its bytes hold, and where the samples start (S3).
//!
//! Owns: file-extension conventions of Asterisk and FreeSWITCH, RIFF/WAVE
//! header parsing (bounded, never trusting a length it cannot check), and
//! turning recorded bytes into 16-bit samples. Must not know: which switch
//! wrote the file, or how it reaches us.
//!
//! A WAV that is still being recorded has a header whose data length is 0
//! (Asterisk, FreeSWITCH) or `0xFFFF_FFFF` (streaming writers): its data runs
//! to the end of the file, and [`Layout::data_len`] is `None`. A header that
//! has not fully reached the disk yet is `Ok(None)`: ask again when the file
//! has grown, the way a codec treats a partial frame.

use std::path::Path;

use super::AudioFormat;
use super::error::MediaError;
use super::g711;

/// How each sample is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Signed 16-bit little-endian linear PCM.
    Slin16,
    /// G.711 mu-law, one byte a sample.
    Ulaw,
    /// G.711 a-law, one byte a sample.
    Alaw,
}

impl Encoding {
    /// Bytes one sample of one channel takes.
    pub fn bytes_per_sample(self) -> u64 {
        match self {
            Encoding::Slin16 => 2,
            Encoding::Ulaw | Encoding::Alaw => 1,
        }
    }
}

/// What a recording's bytes are: enough to find and decode any sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub encoding: Encoding,
    pub sample_rate: u32,
    /// Interleaved channels; decoding mixes them down to mono.
    pub channels: u16,
    /// Byte offset of the first sample (0 for raw files).
    pub data_offset: u64,
    /// Length of the sample data in bytes; `None` when it runs to the end
    /// of the file (raw files, and WAVs still being recorded).
    pub data_len: Option<u64>,
}

/// The most header bytes we read looking for the `data` chunk: real headers
/// are 44-80 bytes; a file that needs more is not a recording we made.
pub const MAX_WAV_HEADER_BYTES: u64 = 64 * 1024;

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xfffe;
/// Highest rate and channel count we accept from a header: anything above
/// is damage, not audio.
const MAX_SAMPLE_RATE: u32 = 768_000;
const MAX_CHANNELS: u16 = 16;

/// The format a file name announces, from its extension (case-insensitive).
///
/// Asterisk: `.sln` (8 kHz), `.sln12` ... `.sln192`, `.ulaw`, `.alaw`,
/// `.wav`/`.wav16`. FreeSWITCH: `.r8`/`.raw` (8 kHz), `.r16`, `.r24`, `.r32`,
/// `.r48`, `.ul`, `.al`, `.wav`. Also `.pcmu`/`.mu` and `.pcma`/`.al`.
pub fn audio_format_for_extension(extension: &str) -> Option<AudioFormat> {
    let lower = extension.trim_start_matches('.').to_ascii_lowercase();
    let slin = |sample_rate| Some(AudioFormat::Slin { sample_rate });
    match lower.as_str() {
        "sln" | "slin" | "raw" | "r8" => slin(8_000),
        "sln12" => slin(12_000),
        "sln16" | "r16" => slin(16_000),
        "sln24" | "r24" => slin(24_000),
        "sln32" | "r32" => slin(32_000),
        "sln44" => slin(44_100),
        "sln48" | "r48" => slin(48_000),
        "sln96" => slin(96_000),
        "sln192" => slin(192_000),
        "ulaw" | "pcmu" | "mu" | "ul" => Some(AudioFormat::Ulaw),
        "alaw" | "pcma" | "al" => Some(AudioFormat::Alaw),
        "wav" | "wav16" => Some(AudioFormat::Wav),
        _ => None,
    }
}

/// The format of a recording file, from its name.
pub fn audio_format_for_path(path: &Path) -> Result<AudioFormat, MediaError> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    audio_format_for_extension(&extension).ok_or(MediaError::UnknownExtension { extension })
}

/// The layout of a headerless format; `None` for WAV (its header decides).
pub fn raw_layout(format: AudioFormat) -> Option<Layout> {
    let (encoding, sample_rate) = match format {
        AudioFormat::Slin { sample_rate } => (Encoding::Slin16, sample_rate),
        AudioFormat::Ulaw => (Encoding::Ulaw, 8_000),
        AudioFormat::Alaw => (Encoding::Alaw, 8_000),
        AudioFormat::Wav => return None,
    };
    Some(Layout {
        encoding,
        sample_rate,
        channels: 1,
        data_offset: 0,
        data_len: None,
    })
}

/// Recognise a recording from its announced format and its first bytes.
///
/// `head` is the start of the file (at least the header; the whole file is
/// fine). Bytes that begin with a RIFF/WAVE header are read as WAV whatever
/// the format says, because the header cannot lie about being one.
/// `Ok(None)`: a WAV header has not fully arrived yet.
pub fn recognise(format: AudioFormat, head: &[u8]) -> Result<Option<Layout>, MediaError> {
    let looks_like_riff = head.len() >= 12
        && (head.starts_with(b"RIFF") || head.starts_with(b"RF64"))
        && &head[8..12] == b"WAVE";
    match raw_layout(format) {
        Some(layout) if !looks_like_riff => Ok(Some(layout)),
        _ => parse_wav_header(head),
    }
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([pair[0], pair[1]]))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let quad = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]))
}

/// Parse a RIFF/WAVE header from the start of a file.
///
/// `Ok(None)` when `head` ends before the `data` chunk's header; an error
/// when the bytes are not a WAV we can decode. Never reads past `head`,
/// never allocates, and gives up after [`MAX_WAV_HEADER_BYTES`].
pub fn parse_wav_header(head: &[u8]) -> Result<Option<Layout>, MediaError> {
    let bad = |reason| Err(MediaError::BadWav { reason });
    // Check the magic as far as it has arrived, so a non-WAV fails at once.
    let magic_ok = |have: &[u8], want: &[u8]| have.iter().zip(want).all(|(a, b)| a == b);
    let riff = head.get(..4.min(head.len())).unwrap_or_default();
    if !magic_ok(riff, b"RIFF") && !magic_ok(riff, b"RF64") {
        return bad("it does not start with RIFF");
    }
    if head.len() > 8 && !magic_ok(&head[8..head.len().min(12)], b"WAVE") {
        return bad("the RIFF type is not WAVE");
    }
    let mut position: usize = 12;
    let mut fmt: Option<(Encoding, u32, u16)> = None;
    loop {
        if position as u64 > MAX_WAV_HEADER_BYTES {
            return bad("no data chunk in the first 64 KiB");
        }
        let (Some(id), Some(size)) = (head.get(position..position + 4), le_u32(head, position + 4))
        else {
            return Ok(None);
        };
        let body = position + 8;
        match id {
            b"fmt " => {
                if size < 16 {
                    return bad("the fmt chunk is shorter than 16 bytes");
                }
                if size > 1024 {
                    return bad("the fmt chunk is implausibly long");
                }
                let Some(chunk) = head.get(body..body + size as usize) else {
                    return Ok(None);
                };
                fmt = Some(parse_fmt_chunk(chunk)?);
            }
            b"data" => {
                let Some((encoding, sample_rate, channels)) = fmt else {
                    return bad("the data chunk comes before the fmt chunk");
                };
                let data_len = match size {
                    // Still recording: the writer fills the length in on close.
                    0 | u32::MAX => None,
                    n => Some(u64::from(n)),
                };
                return Ok(Some(Layout {
                    encoding,
                    sample_rate,
                    channels,
                    data_offset: body as u64,
                    data_len,
                }));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let padded = u64::from(size) + u64::from(size & 1);
        let next = body as u64 + padded;
        if next > MAX_WAV_HEADER_BYTES {
            return bad("no data chunk in the first 64 KiB");
        }
        position = next as usize;
    }
}

fn parse_fmt_chunk(chunk: &[u8]) -> Result<(Encoding, u32, u16), MediaError> {
    let bad = |reason| Err(MediaError::BadWav { reason });
    // The caller checked the chunk is at least 16 bytes.
    let (Some(mut format_tag), Some(channels), Some(sample_rate), Some(bits_per_sample)) = (
        le_u16(chunk, 0),
        le_u16(chunk, 2),
        le_u32(chunk, 4),
        le_u16(chunk, 14),
    ) else {
        return bad("the fmt chunk is truncated");
    };
    if format_tag == WAVE_FORMAT_EXTENSIBLE {
        // The real tag is the first two bytes of the sub-format GUID.
        match le_u16(chunk, 24) {
            Some(tag) => format_tag = tag,
            None => return bad("the extensible fmt chunk has no sub-format"),
        }
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return bad("the channel count is 0 or above 16");
    }
    if sample_rate == 0 || sample_rate > MAX_SAMPLE_RATE {
        return bad("the sample rate is 0 or above 768 kHz");
    }
    let encoding = match (format_tag, bits_per_sample) {
        (WAVE_FORMAT_PCM, 16) => Encoding::Slin16,
        (WAVE_FORMAT_MULAW, 8) => Encoding::Ulaw,
        (WAVE_FORMAT_ALAW, 8) => Encoding::Alaw,
        _ => {
            return Err(MediaError::UnsupportedWavEncoding {
                format_tag,
                bits_per_sample,
            });
        }
    };
    Ok((encoding, sample_rate, channels))
}

impl Layout {
    /// Bytes one frame (one sample of every channel) takes.
    pub fn bytes_per_frame(&self) -> u64 {
        self.encoding.bytes_per_sample() * u64::from(self.channels)
    }

    /// The format a switch would be told to record for this layout.
    pub fn audio_format(&self) -> AudioFormat {
        if self.data_offset > 0 || self.channels != 1 {
            return AudioFormat::Wav;
        }
        match self.encoding {
            Encoding::Slin16 => AudioFormat::Slin {
                sample_rate: self.sample_rate,
            },
            Encoding::Ulaw if self.sample_rate == 8_000 => AudioFormat::Ulaw,
            Encoding::Alaw if self.sample_rate == 8_000 => AudioFormat::Alaw,
            Encoding::Ulaw | Encoding::Alaw => AudioFormat::Wav,
        }
    }

    /// Bytes of sample data in a file of `file_len` bytes: the header's
    /// length when it has one and the file holds it all, else up to the end.
    pub fn data_bytes(&self, file_len: u64) -> u64 {
        let on_disk = file_len.saturating_sub(self.data_offset);
        match self.data_len {
            Some(declared) => declared.min(on_disk),
            None => on_disk,
        }
    }

    /// Whole frames (samples per channel) in a file of `file_len` bytes. A
    /// frame still half-written is not counted.
    pub fn frames_in(&self, file_len: u64) -> u64 {
        self.data_bytes(file_len) / self.bytes_per_frame()
    }

    /// Byte offset in the file of frame `frame`.
    pub fn byte_offset_of_frame(&self, frame: u64) -> u64 {
        self.data_offset
            .saturating_add(frame.saturating_mul(self.bytes_per_frame()))
    }

    /// Decode sample data (starting on a frame boundary) to mono samples,
    /// appending to `out`; channels are averaged. Returns the bytes used: a
    /// trailing partial frame is left for the next call.
    pub fn decode_mono(&self, data: &[u8], out: &mut Vec<i16>) -> usize {
        let frame_bytes = self.bytes_per_frame() as usize;
        let whole = data.len() / frame_bytes * frame_bytes;
        let data = &data[..whole];
        let channels = usize::from(self.channels);
        let sample_at = |bytes: &[u8]| -> i16 {
            match self.encoding {
                Encoding::Slin16 => i16::from_le_bytes([bytes[0], bytes[1]]),
                Encoding::Ulaw => g711::ulaw_to_linear(bytes[0]),
                Encoding::Alaw => g711::alaw_to_linear(bytes[0]),
            }
        };
        let sample_bytes = self.encoding.bytes_per_sample() as usize;
        out.reserve(whole / frame_bytes);
        for frame in data.chunks_exact(frame_bytes) {
            if channels == 1 {
                out.push(sample_at(frame));
            } else {
                let sum: i32 = frame
                    .chunks_exact(sample_bytes)
                    .map(|s| i32::from(sample_at(s)))
                    .sum();
                // The mean of i16 values is an i16.
                out.push((sum / channels as i32) as i16);
            }
        }
        whole
    }
}

/// Decode a whole recording already in memory (header included) to mono
/// samples, with its layout. `Ok(None)`: a WAV header is incomplete.
pub fn decode_file_bytes(
    format: AudioFormat,
    bytes: &[u8],
) -> Result<Option<(Layout, Vec<i16>)>, MediaError> {
    let Some(layout) = recognise(format, bytes)? else {
        return Ok(None);
    };
    let start = usize::try_from(layout.data_offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let len = usize::try_from(layout.data_bytes(bytes.len() as u64)).unwrap_or(usize::MAX);
    let data = &bytes[start..start.saturating_add(len).min(bytes.len())];
    let mut samples = Vec::new();
    layout.decode_mono(data, &mut samples);
    Ok(Some((layout, samples)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canonical 44-byte header, as Asterisk writes it.
    fn wav_header(format_tag: u16, channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
        let block_align = channels * bits / 8;
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&36u32.wrapping_add(data_len).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&format_tag.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
        h.extend_from_slice(&block_align.to_le_bytes());
        h.extend_from_slice(&bits.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_len.to_le_bytes());
        h
    }

    #[test]
    fn extensions_of_both_switches() {
        let slin = |sample_rate| Some(AudioFormat::Slin { sample_rate });
        assert_eq!(audio_format_for_extension("sln"), slin(8_000));
        assert_eq!(audio_format_for_extension(".SLN16"), slin(16_000));
        assert_eq!(audio_format_for_extension("sln44"), slin(44_100));
        assert_eq!(audio_format_for_extension("sln192"), slin(192_000));
        assert_eq!(audio_format_for_extension("r8"), slin(8_000));
        assert_eq!(audio_format_for_extension("raw"), slin(8_000));
        assert_eq!(audio_format_for_extension("r16"), slin(16_000));
        for ulaw in ["ulaw", "pcmu", "mu", "ul"] {
            assert_eq!(audio_format_for_extension(ulaw), Some(AudioFormat::Ulaw));
        }
        for alaw in ["alaw", "pcma", "al"] {
            assert_eq!(audio_format_for_extension(alaw), Some(AudioFormat::Alaw));
        }
        assert_eq!(audio_format_for_extension("WAV"), Some(AudioFormat::Wav));
        assert_eq!(audio_format_for_extension("gsm"), None);
        assert_eq!(audio_format_for_extension(""), None);
        assert!(matches!(
            audio_format_for_path(Path::new("/x/msg.g729")),
            Err(MediaError::UnknownExtension { .. })
        ));
        assert_eq!(
            audio_format_for_path(Path::new("/x/msg.sln48")).ok(),
            slin(48_000)
        );
    }

    #[test]
    fn canonical_pcm_header() {
        let h = wav_header(1, 1, 16_000, 16, 3200);
        let layout = parse_wav_header(&h).unwrap().unwrap();
        assert_eq!(layout.encoding, Encoding::Slin16);
        assert_eq!(layout.sample_rate, 16_000);
        assert_eq!(layout.channels, 1);
        assert_eq!(layout.data_offset, 44);
        assert_eq!(layout.data_len, Some(3200));
        assert_eq!(layout.frames_in(44 + 3200 + 100), 1600); // trailing chunk ignored
        assert_eq!(layout.frames_in(44 + 1001), 500); // half a sample not counted
        assert_eq!(layout.audio_format(), AudioFormat::Wav);
    }

    #[test]
    fn a_header_still_being_recorded_runs_to_end_of_file() {
        for placeholder in [0, u32::MAX] {
            let h = wav_header(1, 1, 8_000, 16, placeholder);
            let layout = parse_wav_header(&h).unwrap().unwrap();
            assert_eq!(layout.data_len, None);
            assert_eq!(layout.frames_in(44 + 16_000), 8_000);
        }
    }

    #[test]
    fn g711_wavs() {
        let u = parse_wav_header(&wav_header(7, 1, 8_000, 8, 80))
            .unwrap()
            .unwrap();
        assert_eq!(u.encoding, Encoding::Ulaw);
        let a = parse_wav_header(&wav_header(6, 1, 8_000, 8, 80))
            .unwrap()
            .unwrap();
        assert_eq!(a.encoding, Encoding::Alaw);
        assert!(matches!(
            parse_wav_header(&wav_header(0x31, 1, 8_000, 0, 65)),
            Err(MediaError::UnsupportedWavEncoding {
                format_tag: 0x31,
                ..
            })
        ));
        assert!(matches!(
            parse_wav_header(&wav_header(3, 1, 8_000, 32, 64)),
            Err(MediaError::UnsupportedWavEncoding { format_tag: 3, .. })
        ));
    }

    #[test]
    fn extensible_fmt_and_extra_chunks() {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&5u32.to_le_bytes());
        h.extend_from_slice(b"abcde\0"); // odd length, padded
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&40u32.to_le_bytes());
        h.extend_from_slice(&0xfffeu16.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&192_000u32.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        h.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        h.extend_from_slice(&3u32.to_le_bytes()); // channel mask
        h.extend_from_slice(&1u16.to_le_bytes()); // sub-format: PCM
        h.extend_from_slice(&[0; 14]);
        h.extend_from_slice(b"data");
        h.extend_from_slice(&8u32.to_le_bytes());
        let offset = h.len() as u64;
        for s in [100i16, 300, -100, -300] {
            h.extend_from_slice(&s.to_le_bytes());
        }
        let (layout, samples) = decode_file_bytes(AudioFormat::Wav, &h).unwrap().unwrap();
        assert_eq!(layout.channels, 2);
        assert_eq!(layout.sample_rate, 48_000);
        assert_eq!(layout.data_offset, offset);
        assert_eq!(samples, vec![200, -200]);
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete_not_an_error() {
        let h = wav_header(1, 1, 8_000, 16, 0);
        for len in 0..h.len() {
            assert!(
                matches!(parse_wav_header(&h[..len]), Ok(None)),
                "prefix {len}"
            );
        }
        assert!(parse_wav_header(&h).unwrap().is_some());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_wav_header(b"RIFX").is_err());
        assert!(parse_wav_header(b"RIFF\0\0\0\0WAVX").is_err());
        let mut no_fmt = b"RIFF\0\0\0\0WAVE".to_vec();
        no_fmt.extend_from_slice(b"data\0\0\0\0");
        assert!(parse_wav_header(&no_fmt).is_err());
        let mut huge = b"RIFF\0\0\0\0WAVE".to_vec();
        huge.extend_from_slice(b"junk");
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_wav_header(&huge).is_err());
        assert!(parse_wav_header(&wav_header(1, 0, 8_000, 16, 0)).is_err());
        assert!(parse_wav_header(&wav_header(1, 1, 0, 16, 0)).is_err());
    }

    #[test]
    fn raw_formats_decode() {
        let bytes = [0x34, 0x12, 0xff, 0xff, 0x01];
        let (layout, samples) = decode_file_bytes(
            AudioFormat::Slin {
                sample_rate: 16_000,
            },
            &bytes,
        )
        .unwrap()
        .unwrap();
        assert_eq!(layout.sample_rate, 16_000);
        assert_eq!(samples, vec![0x1234, -1]);
        let (_, ulaw) = decode_file_bytes(AudioFormat::Ulaw, &[0xff, 0x80])
            .unwrap()
            .unwrap();
        assert_eq!(ulaw, vec![0, 32124]);
        let (_, alaw) = decode_file_bytes(AudioFormat::Alaw, &[0xd5])
            .unwrap()
            .unwrap();
        assert_eq!(alaw, vec![8]);
        assert_eq!(
            layout.audio_format(),
            AudioFormat::Slin {
                sample_rate: 16_000
            }
        );
    }

    #[test]
    fn a_raw_file_that_starts_with_a_wav_header_is_a_wav() {
        let mut bytes = wav_header(7, 1, 8_000, 8, 0);
        bytes.push(0x80);
        let (layout, samples) = decode_file_bytes(AudioFormat::Slin { sample_rate: 8_000 }, &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(layout.encoding, Encoding::Ulaw);
        assert_eq!(samples, vec![32124]);
    }

    #[test]
    fn no_input_panics() {
        // Every 1- and 2-byte mutation of a real header, at every length.
        let base = wav_header(1, 2, 8_000, 16, 4);
        for i in 0..base.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut h = base.clone();
                h[i] = v;
                h.extend_from_slice(&[1, 2, 3, 4, 5]);
                for len in 0..h.len() {
                    let _ = decode_file_bytes(AudioFormat::Wav, &h[..len]);
                }
            }
        }
    }
}
