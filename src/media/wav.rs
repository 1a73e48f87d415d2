//! Standard WAV files: the finished message for export (S3), and reading any
//! WAV a switch or a phone wrote back into samples.
//!
//! Owns: writing 16-bit mono PCM WAVs (through `hound`) and reading WAVs
//! (through [`super::format`], which also takes G.711 WAVs and headers of
//! files still being recorded). Must not know: where the samples came from.

use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use super::AudioFormat;
use super::error::MediaError;
use super::format::{self, Layout};

/// Samples read from a WAV file, mixed down to mono.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavAudio {
    pub samples: Vec<i16>,
    pub sample_rate: u32,
    /// Channels in the file before the mix-down.
    pub channels: u16,
}

fn spec(sample_rate: u32) -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Write mono 16-bit samples as a standard PCM WAV to any seekable writer.
pub fn write_wav_to<W: Write + Seek>(
    writer: W,
    samples: &[i16],
    sample_rate: u32,
) -> Result<(), hound::Error> {
    let mut wav = hound::WavWriter::new(writer, spec(sample_rate))?;
    for &sample in samples {
        wav.write_sample(sample)?;
    }
    wav.finalize()
}

/// Write mono 16-bit samples as a standard PCM WAV file at `path`.
///
/// Atomic: the file is written beside `path`, synced, then renamed over it,
/// so a reader never sees half a WAV and a crash leaves the old file.
pub fn write_wav(path: &Path, samples: &[i16], sample_rate: u32) -> Result<(), MediaError> {
    if sample_rate == 0 {
        return Err(MediaError::UnsupportedSampleRate {
            sample_rate,
            what: "a wav needs a sample rate above 0",
        });
    }
    let io_error = |source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(&directory).map_err(io_error)?;
    write_wav_to(BufWriter::new(temp.as_file_mut()), samples, sample_rate).map_err(|source| {
        MediaError::WavWrite {
            path: path.to_path_buf(),
            source,
        }
    })?;
    temp.as_file().sync_all().map_err(io_error)?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

/// Read a WAV held in memory: 16-bit PCM, mu-law or a-law, any rate, any
/// channel count (mixed down). A header whose data length is 0 (still being
/// recorded) reads to the end.
pub fn read_wav_bytes(bytes: &[u8]) -> Result<(Layout, WavAudio), MediaError> {
    match format::decode_file_bytes(AudioFormat::Wav, bytes)? {
        Some((layout, samples)) => Ok((
            layout,
            WavAudio {
                samples,
                sample_rate: layout.sample_rate,
                channels: layout.channels,
            },
        )),
        None => Err(MediaError::BadWav {
            reason: "the file ends inside its header",
        }),
    }
}

/// Read a WAV file into mono samples and its rate.
pub fn read_wav(path: &Path) -> Result<WavAudio, MediaError> {
    let bytes = std::fs::read(path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match format::decode_file_bytes(AudioFormat::Wav, &bytes)? {
        Some((layout, samples)) => Ok(WavAudio {
            samples,
            sample_rate: layout.sample_rate,
            channels: layout.channels,
        }),
        None => Err(MediaError::IncompleteHeader {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ramp(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i * 997) % 65_536) as u16 as i16).collect()
    }

    #[test]
    fn round_trip_through_a_file_at_several_rates() {
        let dir = tempfile::tempdir().unwrap();
        for rate in [8_000, 16_000, 44_100, 48_000, 192_000] {
            let path = dir.path().join(format!("m{rate}.wav"));
            let samples = ramp(1234);
            write_wav(&path, &samples, rate).unwrap();
            let back = read_wav(&path).unwrap();
            assert_eq!(back.sample_rate, rate);
            assert_eq!(back.channels, 1);
            assert_eq!(back.samples, samples);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                44 + 2 * samples.len() as u64
            );
        }
    }

    #[test]
    fn hound_reads_what_we_write() {
        let mut bytes = Cursor::new(Vec::new());
        write_wav_to(&mut bytes, &[1, -2, 3], 8_000).unwrap();
        let mut reader = hound::WavReader::new(Cursor::new(bytes.into_inner())).unwrap();
        let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(samples, vec![1, -2, 3]);
        assert_eq!(reader.spec().sample_rate, 8_000);
    }

    #[test]
    fn an_empty_message_is_a_valid_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.wav");
        write_wav(&path, &[], 8_000).unwrap();
        assert!(read_wav(&path).unwrap().samples.is_empty());
    }

    #[test]
    fn a_wav_still_being_recorded_reads_to_its_end() {
        let mut bytes = Cursor::new(Vec::new());
        write_wav_to(&mut bytes, &[5, 6, 7, 8], 16_000).unwrap();
        let mut bytes = bytes.into_inner();
        bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&9i16.to_le_bytes());
        let (layout, audio) = read_wav_bytes(&bytes).unwrap();
        assert_eq!(layout.data_len, None);
        assert_eq!(audio.samples, vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        assert!(matches!(read_wav(&missing), Err(MediaError::Io { .. })));
        let short = dir.path().join("short.wav");
        std::fs::write(&short, b"RIFF\0\0").unwrap();
        let err = read_wav(&short).unwrap_err();
        assert!(
            matches!(err, MediaError::IncompleteHeader { len: 6, .. }),
            "{err}"
        );
        assert!(matches!(
            write_wav(&dir.path().join("x.wav"), &[1], 0),
            Err(MediaError::UnsupportedSampleRate { .. })
        ));
    }
}
