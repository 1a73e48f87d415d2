//! A deterministic speech-like test signal whose every 10 ms identifies the
//! moment of the message it came from: the caller's "voice" in integration
//! tests and benchmarks, so what a listener heard can be measured by
//! correlation ([`super::analysis::align`]) instead of trusted from the
//! code's own timestamps.
//!
//! Owns: the signal. Bursts of 0.3-1.2 s ("words") separated by pauses of
//! 0.2-0.8 s of digital silence; each burst is band-limited (200-3400 Hz)
//! pseudo-random noise with a syllable-rate envelope, at about -20 dBFS RMS
//! (peaks near -9 dBFS, so +6 dB still does not clip). Noise makes the time
//! code: any 10 ms of it correlates with its own source position at ~1.0
//! after a mu-law round trip and any level change, and with any other
//! position at < 0.7, so position is decoded continuously, to the sample,
//! with no period to be ambiguous about. Pure: same seed, same samples.
//! Must not know: how it is played or analysed.

use std::ops::Range;

/// How to make the signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalConfig {
    pub sample_rate: u32,
    /// Length of the whole signal, lead-in included.
    pub duration_ms: u32,
    /// Silence before the first burst (0, or 500 for a caller who waits
    /// for the beep).
    pub lead_in_ms: u32,
    /// RMS level of a burst at full envelope, in dBFS.
    pub level_dbfs: f32,
    pub seed: u64,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            sample_rate: 8_000,
            duration_ms: 10_000,
            lead_in_ms: 0,
            level_dbfs: -20.0,
            seed: 1,
        }
    }
}

/// The generated signal and where its bursts are.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSignal {
    pub samples: Vec<i16>,
    pub sample_rate: u32,
    /// Sample ranges of the bursts, in order.
    pub bursts: Vec<Range<usize>>,
}

impl TestSignal {
    /// Total burst ("speech") duration in milliseconds.
    pub fn speech_ms(&self) -> f64 {
        let samples: usize = self.bursts.iter().map(|b| b.len()).sum();
        samples as f64 * 1000.0 / f64::from(self.sample_rate)
    }
}

/// xorshift64*: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Approximately standard normal (sum of four uniforms, variance 1).
    fn normal(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.unit()).sum();
        (sum - 2.0) * 3f64.sqrt()
    }
}

/// Band-pass taps (windowed sinc difference), 200-3400 Hz.
fn band_pass(sample_rate: u32) -> Vec<f64> {
    let rate = f64::from(sample_rate);
    let (low, high) = (200.0 / rate, 3_400.0f64.min(rate * 0.45) / rate);
    let length = 63usize;
    let middle = (length / 2) as f64;
    let sinc = |cutoff: f64, t: f64| {
        if t == 0.0 {
            2.0 * cutoff
        } else {
            (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
        }
    };
    (0..length)
        .map(|i| {
            let t = i as f64 - middle;
            let window = 0.42
                - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (length - 1) as f64).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / (length - 1) as f64).cos();
            (sinc(high, t) - sinc(low, t)) * window
        })
        .collect()
}

/// Generate the signal. Bursts and pauses alternate until `duration_ms`;
/// the last burst is cut short if it does not fit (but not below 100 ms).
pub fn speech_like(config: &SignalConfig) -> TestSignal {
    let rate = config.sample_rate.max(1);
    let ms = |value: f64| (value * f64::from(rate) / 1000.0).round() as usize;
    let total = ms(f64::from(config.duration_ms));
    let mut rng = Rng::new(config.seed);
    let taps = band_pass(rate);
    // Scale so the filtered noise has the requested RMS.
    let tap_power: f64 = taps.iter().map(|t| t * t).sum();
    let rms = 32_768.0 * 10f64.powf(f64::from(config.level_dbfs) / 20.0);
    let gain = rms / tap_power.sqrt();
    let ramp = ms(3.0).max(1);

    let mut samples = vec![0i16; total];
    let mut bursts = Vec::new();
    let mut position = ms(f64::from(config.lead_in_ms));
    // A ring of recent noise for the filter; `newest` is its latest slot.
    let mut history = vec![0.0f64; taps.len()];
    let mut newest = 0usize;
    while position < total {
        let wanted = ms(rng.between(300.0, 1_200.0));
        let length = wanted.min(total - position);
        if length < ms(100.0) {
            break;
        }
        let syllable = ms(rng.between(150.0, 260.0)).max(1) as f64;
        let phase = rng.unit();
        for i in 0..length {
            // Filter a fresh noise sample.
            newest = (newest + 1) % history.len();
            history[newest] = rng.normal();
            let (older, newer) = history.split_at(newest + 1);
            // taps[k] weighs the sample k steps back (the taps are symmetric).
            let filtered: f64 = newer
                .iter()
                .chain(older)
                .rev()
                .zip(&taps)
                .map(|(x, h)| x * h)
                .sum();
            let syllables = 0.6
                + 0.4
                    * (std::f64::consts::PI * (i as f64 / syllable + phase))
                        .sin()
                        .abs();
            let edge = (i.min(length - 1 - i) as f64 / ramp as f64).min(1.0);
            let fade = 0.5 - 0.5 * (std::f64::consts::PI * edge).cos();
            // Clip the rare peak at 3.5 sigma: keeps headroom for +6 dB.
            let value = (filtered * gain).clamp(-3.5 * rms, 3.5 * rms) * syllables * fade;
            // Never exactly 0 inside a burst: digital silence marks pauses,
            // so a burst's edges are exact for whoever analyses it.
            let rounded = value.round() as i16;
            samples[position + i] = match rounded {
                0 if value < 0.0 => -1,
                0 => 1,
                other => other,
            };
        }
        bursts.push(position..position + length);
        position += length + ms(rng.between(200.0, 800.0));
    }
    TestSignal {
        samples,
        sample_rate: rate,
        bursts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::silence::frame_level_dbfs;

    #[test]
    fn deterministic_and_seeded() {
        let config = SignalConfig::default();
        assert_eq!(speech_like(&config), speech_like(&config));
        let other = speech_like(&SignalConfig { seed: 2, ..config });
        assert_ne!(other.samples, speech_like(&config).samples);
    }

    #[test]
    fn bursts_and_pauses_have_speech_like_lengths() {
        for seed in 1..20 {
            let signal = speech_like(&SignalConfig {
                seed,
                duration_ms: 20_000,
                lead_in_ms: 500,
                ..SignalConfig::default()
            });
            assert_eq!(signal.samples.len(), 160_000);
            assert_eq!(signal.bursts[0].start, 4_000);
            assert!(signal.samples[..4_000].iter().all(|&s| s == 0));
            for (index, burst) in signal.bursts.iter().enumerate() {
                let last = index == signal.bursts.len() - 1;
                assert!(
                    burst.len() >= 2_400 || (last && burst.len() >= 800),
                    "{burst:?}"
                );
                assert!(burst.len() <= 9_600);
                if let Some(next) = signal.bursts.get(index + 1) {
                    let pause = next.start - burst.end;
                    assert!((1_600..=6_400).contains(&pause), "pause {pause}");
                    assert!(
                        signal.samples[burst.end..next.start]
                            .iter()
                            .all(|&s| s == 0)
                    );
                }
            }
        }
    }

    #[test]
    fn level_and_headroom() {
        let signal = speech_like(&SignalConfig::default());
        let burst = &signal.samples[signal.bursts[0].clone()];
        let level = frame_level_dbfs(burst);
        assert!((-25.0..-19.0).contains(&level), "{level}");
        let peak = signal
            .samples
            .iter()
            .map(|s| i32::from(*s).abs())
            .max()
            .unwrap();
        assert!(peak < 16_384, "peak {peak} leaves 6 dB of headroom");
        // Every 20 ms frame inside a burst (away from its edges) is loud.
        for burst in &signal.bursts {
            for frame in signal.samples[burst.start + 80..burst.end - 80].chunks_exact(160) {
                assert!(frame_level_dbfs(frame) > -30.0);
            }
        }
    }
}
