//! The media pump of one message: tails the switch's growing recording,
//! turns it into the stored 8 kHz message (indexed in fragments as they
//! reach disk) and into the listener's stream.
//!
//! Owns: the files of a message while it is being recorded. Must not know:
//! the switch, the engine's decisions.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::media::AudioFormat;
use crate::media::catchup::{CatchUp, CatchUpConfig};
use crate::media::resample::Decimator;

/// Fragment length: one second of the stored 8 kHz message.
pub const FRAGMENT_SAMPLES: u64 = 8000;
/// Bytes read from the recording at most per poll (bounded memory).
const MAX_READ: usize = 1 << 20;

/// A fragment that is on disk (synced) and may now be indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub index: u32,
    pub byte_offset: u64,
    pub length: u64,
}

pub struct Pump {
    capture: PathBuf,
    capture_read: u64,
    bytes_per_sample: u64,
    odd_byte: Option<u8>,
    decimator: Decimator,
    message: File,
    message_samples: u64,
    fragments_done: u32,
    listen: File,
    listener: CatchUp,
    /// How much of the listen stream the listener has heard.
    listener_played: u64,
}

impl Pump {
    /// Start pumping `capture` (raw signed linear at `format`'s rate) into
    /// `message` and `listen` (both 8 kHz raw signed linear, created here).
    pub fn new(
        capture: &Path,
        format: AudioFormat,
        message: &Path,
        listen: &Path,
        catch_up_speed: f32,
    ) -> std::io::Result<Self> {
        let rate = match format {
            AudioFormat::Slin { sample_rate } => sample_rate,
            other => {
                return Err(std::io::Error::other(format!(
                    "the pump reads raw signed linear recordings, not {other:?}"
                )));
            }
        };
        let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
        Ok(Self {
            capture: capture.to_owned(),
            capture_read: 0,
            bytes_per_sample: 2,
            odd_byte: None,
            decimator: Decimator::new(rate).map_err(std::io::Error::other)?,
            message: open(message)?,
            message_samples: 0,
            fragments_done: 0,
            listen: open(listen)?,
            listener: CatchUp::new(CatchUpConfig {
                speed: catch_up_speed,
                ..CatchUpConfig::default()
            }),
            listener_played: 0,
        })
    }

    /// Bytes of the switch's recording read so far.
    pub fn capture_read(&self) -> u64 {
        self.capture_read
    }

    pub fn message_samples(&self) -> u64 {
        self.message_samples
    }

    pub fn listen_samples(&self) -> u64 {
        self.listener.listener_len()
    }

    /// How much of the listen stream the listener has heard: while it is
    /// behind live, pauses are shortened (and speech sped up if configured).
    pub fn set_listener_played(&mut self, listen_samples: u64) {
        self.listener_played = listen_samples;
    }

    /// The position in the recorded message a listen-stream position plays.
    pub fn recording_position_at(&self, listen_position: u64) -> u64 {
        self.listener.recording_position_at(listen_position)
    }

    /// Read what the switch has written since the last poll. Returns the
    /// fragments completed (and synced) by it.
    pub fn poll(&mut self) -> std::io::Result<Vec<Fragment>> {
        let mut file = match File::open(&self.capture) {
            Ok(file) => file,
            // The switch has not created it yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.capture_read))?;
        let mut bytes = Vec::new();
        file.take(MAX_READ as u64).read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        self.capture_read += bytes.len() as u64;
        let mut raw = Vec::with_capacity(bytes.len() + 1);
        raw.extend(self.odd_byte.take());
        raw.extend_from_slice(&bytes);
        if raw.len() % self.bytes_per_sample as usize == 1 {
            self.odd_byte = raw.pop();
        }
        let samples: Vec<i16> = raw
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut narrow = Vec::with_capacity(samples.len() / self.decimator.factor() as usize + 1);
        self.decimator.push(&samples, &mut narrow);
        self.append(&narrow)
    }

    /// The recording is over: read the rest and index the last, partial
    /// fragment too.
    pub fn finish(&mut self) -> std::io::Result<Vec<Fragment>> {
        let mut fragments = self.poll()?;
        while self.capture_len()? > self.capture_read {
            fragments.extend(self.poll()?);
        }
        let mut narrow = Vec::new();
        self.decimator.finish(&mut narrow);
        fragments.extend(self.append(&narrow)?);
        let mut listen = Vec::new();
        self.listener.finish(&mut listen);
        if !listen.is_empty() {
            self.listen.write_all(&to_bytes(&listen))?;
        }
        let tail = self.message_samples - u64::from(self.fragments_done) * FRAGMENT_SAMPLES;
        if tail > 0 {
            self.message.sync_data()?;
            fragments.push(Fragment {
                index: self.fragments_done,
                byte_offset: u64::from(self.fragments_done) * FRAGMENT_SAMPLES * 2,
                length: tail * 2,
            });
            self.fragments_done += 1;
        }
        self.listen.sync_data()?;
        Ok(fragments)
    }

    /// Writing failed (disk full): keep what reached the message file,
    /// whole samples only, synced if the disk still lets it. Returns the
    /// samples kept and the fragments not indexed yet that hold them.
    pub fn salvage(&mut self) -> (u64, Vec<Fragment>) {
        let indexed = u64::from(self.fragments_done) * FRAGMENT_SAMPLES;
        let on_disk = self.message.metadata().map_or(0, |m| m.len() / 2);
        if self.message.sync_data().is_err() {
            return (indexed, Vec::new());
        }
        let mut fragments = Vec::new();
        let mut start = indexed;
        while start < on_disk {
            let length = (on_disk - start).min(FRAGMENT_SAMPLES);
            fragments.push(Fragment {
                index: self.fragments_done,
                byte_offset: start * 2,
                length: length * 2,
            });
            self.fragments_done += 1;
            start += length;
        }
        self.message_samples = on_disk;
        (on_disk, fragments)
    }

    fn capture_len(&self) -> std::io::Result<u64> {
        match std::fs::metadata(&self.capture) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn append(&mut self, samples: &[i16]) -> std::io::Result<Vec<Fragment>> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        self.message.write_all(&to_bytes(samples))?;
        self.message_samples += samples.len() as u64;
        let behind = self
            .listener
            .behind_samples(self.listener_played, samples.len() as u64);
        let mut listen = Vec::with_capacity(samples.len());
        self.listener.push(samples, behind, &mut listen);
        if !listen.is_empty() {
            self.listen.write_all(&to_bytes(&listen))?;
        }
        let complete = (self.message_samples / FRAGMENT_SAMPLES) as u32;
        let mut fragments = Vec::new();
        if complete > self.fragments_done {
            // Acknowledged means on disk: sync before the index says so.
            self.message.sync_data()?;
            for index in self.fragments_done..complete {
                fragments.push(Fragment {
                    index,
                    byte_offset: u64::from(index) * FRAGMENT_SAMPLES * 2,
                    length: FRAGMENT_SAMPLES * 2,
                });
            }
            self.fragments_done = complete;
        }
        Ok(fragments)
    }
}

fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_capture_becomes_fragments_and_a_listen_stream() {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("c.sln48");
        let (message, listen) = (dir.path().join("m.sln"), dir.path().join("l.sln"));
        let mut pump = Pump::new(
            &capture,
            AudioFormat::Slin {
                sample_rate: 48_000,
            },
            &message,
            &listen,
            1.0,
        )
        .unwrap();
        assert!(pump.poll().unwrap().is_empty(), "no capture yet is fine");
        // 1.5 s at 48 kHz, written in two uneven pieces (one odd byte).
        let loud: Vec<u8> = (0..72_000i32)
            .flat_map(|i| (((i % 48) as i16 - 24) * 500).to_le_bytes())
            .collect();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&capture)
            .unwrap();
        f.write_all(&loud[..50_001]).unwrap();
        f.flush().unwrap();
        let first = pump.poll().unwrap();
        f.write_all(&loud[50_001..]).unwrap();
        f.flush().unwrap();
        let second = pump.poll().unwrap();
        let all: Vec<Fragment> = first.into_iter().chain(second).collect();
        assert_eq!(
            all,
            vec![Fragment {
                index: 0,
                byte_offset: 0,
                length: 16_000
            }]
        );
        let last = pump.finish().unwrap();
        assert_eq!(pump.message_samples(), 12_000);
        assert_eq!(
            last,
            vec![Fragment {
                index: 1,
                byte_offset: 16_000,
                length: 8_000
            }]
        );
        assert_eq!(std::fs::metadata(&message).unwrap().len(), 24_000);
        assert!(pump.listen_samples() > 0);
    }
}
