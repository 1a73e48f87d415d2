//! A streaming speech/silence classifier over 20 ms frames, for catch-up's
//! pause compression.
//!
//! Owns: the frame level (RMS in dBFS), hysteresis between a speech-on and
//! a lower speech-off threshold, a hangover that keeps the quiet frames just
//! after speech as speech so word tails are never cut, and a noise floor
//! that raises the thresholds on a noisy line (capped, so normal speech is
//! never called silence). Must not know: what is done with the verdicts.
//!
//! Errs on the side of speech: a frame it is unsure about is speech, since
//! calling speech silence loses words while the reverse only costs catch-up.

use std::collections::VecDeque;

/// Frame length in milliseconds.
pub const FRAME_MS: u32 = 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameClass {
    /// Above the thresholds, or in speech and not yet quiet.
    Speech,
    /// Quiet, but within the hangover after speech: a word's tail.
    Hangover,
    /// A pause: may be compressed.
    Silence,
}

impl FrameClass {
    /// Speech or its protected tail: never to be dropped.
    pub fn is_speech(self) -> bool {
        !matches!(self, FrameClass::Silence)
    }
}

/// Thresholds and timings. Levels are frame RMS in dBFS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceConfig {
    pub sample_rate: u32,
    /// A frame at or above this starts speech.
    pub speech_on_dbfs: f32,
    /// In speech, a frame below this is quiet.
    pub speech_off_dbfs: f32,
    /// Quiet frames after speech that still count as speech.
    pub hangover_ms: u32,
    /// On a noisy line the on-threshold sits this far above the noise floor
    /// (the quietest frame of the last [`Self::noise_window_ms`], once half
    /// a window has been seen) ...
    pub noise_margin_db: f32,
    /// ... but never above this, so speech at a normal level stays speech.
    pub max_speech_on_dbfs: f32,
    pub noise_window_ms: u32,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            sample_rate: 8_000,
            speech_on_dbfs: -45.0,
            speech_off_dbfs: -50.0,
            hangover_ms: 100,
            noise_margin_db: 10.0,
            max_speech_on_dbfs: -35.0,
            noise_window_ms: 2_000,
        }
    }
}

/// RMS level of a frame in dBFS (full-scale sine = -3 dBFS); -120 for
/// digital silence or an empty frame.
pub fn frame_level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean = energy / frame.len() as f64 / (32_768.0 * 32_768.0);
    if mean <= 1e-12 {
        return -120.0;
    }
    (10.0 * mean.log10()) as f32
}

/// The streaming classifier. Feed frames of [`Self::frame_len`] samples
/// with [`Self::classify`], or any chunks with [`Self::push`].
#[derive(Debug, Clone)]
pub struct SilenceDetector {
    config: SilenceConfig,
    frame_len: usize,
    hangover_frames: u32,
    in_speech: bool,
    quiet_run: u32,
    /// Recent frame levels, for the noise floor.
    recent_levels: VecDeque<f32>,
    noise_window_frames: usize,
    partial: Vec<i16>,
}

impl SilenceDetector {
    pub fn new(config: SilenceConfig) -> Self {
        let frame_len = (config.sample_rate as usize * FRAME_MS as usize / 1000).max(1);
        SilenceDetector {
            frame_len,
            hangover_frames: config.hangover_ms.div_ceil(FRAME_MS),
            in_speech: false,
            quiet_run: 0,
            recent_levels: VecDeque::new(),
            noise_window_frames: (config.noise_window_ms / FRAME_MS).max(1) as usize,
            partial: Vec::new(),
            config,
        }
    }

    /// Samples in one frame (160 at 8 kHz).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Hangover length in frames.
    pub fn hangover_frames(&self) -> u32 {
        self.hangover_frames
    }

    /// The noise floor now: the quietest recent frame.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.recent_levels
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
    }

    fn thresholds(&self) -> (f32, f32) {
        let floor = self.noise_floor_dbfs();
        // A floor from a few frames is just the quietest syllable so far.
        let floor_known = self.recent_levels.len() * 2 >= self.noise_window_frames;
        let on = if floor_known && floor.is_finite() {
            (floor + self.config.noise_margin_db)
                .min(self.config.max_speech_on_dbfs)
                .max(self.config.speech_on_dbfs)
        } else {
            self.config.speech_on_dbfs
        };
        let hysteresis = self.config.speech_on_dbfs - self.config.speech_off_dbfs;
        (on, on - hysteresis.max(0.0))
    }

    /// Classify the next frame. A short frame (the end of a recording) is
    /// judged on what it has.
    pub fn classify(&mut self, frame: &[i16]) -> FrameClass {
        let level = frame_level_dbfs(frame);
        let (on, off) = self.thresholds();
        self.recent_levels.push_back(level);
        if self.recent_levels.len() > self.noise_window_frames {
            self.recent_levels.pop_front();
        }
        if level >= on || (self.in_speech && level >= off) {
            self.in_speech = true;
            self.quiet_run = 0;
            return FrameClass::Speech;
        }
        if self.in_speech {
            self.quiet_run += 1;
            if self.quiet_run <= self.hangover_frames {
                return FrameClass::Hangover;
            }
            self.in_speech = false;
        }
        FrameClass::Silence
    }

    /// Feed samples in any chunks; append the class of every frame they
    /// complete.
    pub fn push(&mut self, samples: &[i16], out: &mut Vec<FrameClass>) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.frame_len - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == self.frame_len {
                let frame = std::mem::take(&mut self.partial);
                out.push(self.classify(&frame));
                self.partial = frame;
                self.partial.clear();
            }
        }
    }

    /// End of input: the class of the short last frame, if samples are left.
    pub fn finish(&mut self) -> Option<FrameClass> {
        if self.partial.is_empty() {
            return None;
        }
        let frame = std::mem::take(&mut self.partial);
        Some(self.classify(&frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_frame(level: f32, seed: &mut u32) -> Vec<i16> {
        // A square-ish pseudo-random frame at roughly `level` dBFS RMS.
        let amplitude = 32_768.0 * 10f32.powf(level / 20.0);
        (0..160)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if *seed >> 31 == 0 {
                    amplitude as i16
                } else {
                    -(amplitude as i16)
                }
            })
            .collect()
    }

    fn classes(levels: &[f32]) -> Vec<FrameClass> {
        let mut detector = SilenceDetector::new(SilenceConfig::default());
        let mut seed = 1;
        levels
            .iter()
            .map(|&level| {
                if level <= -120.0 {
                    detector.classify(&[0; 160])
                } else {
                    detector.classify(&noise_frame(level, &mut seed))
                }
            })
            .collect()
    }

    use FrameClass::{Hangover as H, Silence as S, Speech as P};

    #[test]
    fn levels() {
        assert_eq!(frame_level_dbfs(&[0; 160]), -120.0);
        assert_eq!(frame_level_dbfs(&[]), -120.0);
        assert!((frame_level_dbfs(&[i16::MIN; 160])).abs() < 0.01);
        assert!((frame_level_dbfs(&[3_277; 160]) + 20.0).abs() < 0.01);
    }

    #[test]
    fn speech_then_pause_keeps_a_hangover() {
        let mut levels = vec![-130.0; 3];
        levels.extend([-20.0; 4]);
        levels.extend([-130.0; 8]);
        let got = classes(&levels);
        let mut want = vec![S; 3];
        want.extend([P; 4]);
        want.extend([H; 5]);
        want.extend([S; 3]);
        assert_eq!(got, want);
    }

    #[test]
    fn hysteresis_keeps_a_fading_word_as_speech() {
        // Starts loud, fades to between the off and on thresholds.
        let got = classes(&[-20.0, -30.0, -47.0, -48.0, -49.0, -60.0]);
        assert_eq!(got, vec![P, P, P, P, P, H]);
        // The same quiet levels from silence never start speech.
        assert_eq!(classes(&[-47.0, -48.0, -49.0]), vec![S, S, S]);
    }

    #[test]
    fn a_short_gap_inside_speech_is_all_hangover() {
        let got = classes(&[-20.0, -130.0, -130.0, -20.0]);
        assert_eq!(got, vec![P, H, H, P]);
    }

    #[test]
    fn a_noisy_line_raises_the_threshold_but_not_above_the_cap() {
        // Background noise at -42 dBFS is above the fixed on-threshold, so
        // it counts as speech until half a noise window (1 s) is known; then
        // the threshold rises to -32 and the noise becomes a pause.
        let mut levels = vec![-42.0; 150];
        levels.push(-25.0); // a word
        levels.extend([-42.0; 7]);
        let got = classes(&levels);
        assert!(got[..50].iter().all(|&c| c == P));
        assert!(
            got[100..150].iter().all(|&c| c == S),
            "steady noise becomes silence"
        );
        assert_eq!(got[150], P);
        assert_eq!(&got[151..156], &[H; 5]);
        assert_eq!(got[156], S);
        // Loud throughout (a monologue with no pauses): the cap at -35 keeps
        // every frame above it speech.
        let got = classes(&[-20.0; 200]);
        assert!(got.iter().all(|&c| c == P));
    }

    #[test]
    fn push_in_chunks_equals_frames() {
        let mut seed = 7;
        let mut samples = Vec::new();
        for level in [-130.0, -20.0, -20.0, -130.0, -130.0, -25.0, -130.0] {
            if level <= -120.0 {
                samples.extend([0; 160]);
            } else {
                samples.extend(noise_frame(level, &mut seed));
            }
        }
        let mut whole = SilenceDetector::new(SilenceConfig::default());
        let mut want = Vec::new();
        whole.push(&samples, &mut want);
        let mut chunked = SilenceDetector::new(SilenceConfig::default());
        let mut got = Vec::new();
        for chunk in samples.chunks(37) {
            chunked.push(chunk, &mut got);
        }
        assert_eq!(got, want);
        assert_eq!(got.len(), 7);
    }
}
