//! The live relay: the caller's frames in, one continuous 20 ms-paced stream
//! per listener out, from the start at catch-up speed into live with no
//! seam.
//!
//! Owns: the [`FrameLog`] (the caller's audio, appended as it arrives) and a
//! [`Listener`] per target: ONE cursor into the log that serves exactly one
//! frame per tick. Behind live, the log goes through [`CatchUp`] (pauses
//! shortened, speech optionally time-stretched by WSOLA); near live, frames
//! go out unchanged through a small adaptive playout buffer. Nothing changes
//! at the switch between the two, so there is nothing to splice: every
//! recorded sample is played once, or dropped on purpose because it was a
//! pause, never twice. Prompts and tones for the listener go out through the
//! same stream ([`Listener::play_prompt`]), pausing the cursor.
//!
//! The playout buffer (`depth`) starts at 40 ms. An underrun (nothing to
//! send) sends a silent fill frame and deepens it by 20 ms (up to 100 ms);
//! 30 s without one make it 20 ms shallower again. Clock drift between the
//! caller's phone and our ticks is absorbed in pauses: too far behind, the
//! catch-up drops pause frames; too close to live, a silent frame is added
//! to a pause. Speech is neither dropped nor stretched to do it.
//!
//! Pure: no clock, no I/O; a tick is a call to [`Listener::poll_frame`].
//! Must not know: sockets, the switch, files.

use std::collections::VecDeque;

use super::catchup::{CatchUp, CatchUpConfig};
use super::silence::{FRAME_MS, frame_level_dbfs};

/// The caller's audio so far, in arrival order; shared by every listener of
/// one message.
#[derive(Debug, Clone)]
pub struct FrameLog {
    sample_rate: u32,
    frame_len: usize,
    samples: Vec<i16>,
    closed: bool,
}

impl FrameLog {
    pub fn new(sample_rate: u32) -> Self {
        FrameLog {
            sample_rate,
            frame_len: frame_len(sample_rate),
            samples: Vec::new(),
            closed: false,
        }
    }

    /// Append what arrived, in any chunk size; ignored once closed.
    pub fn append(&mut self, samples: &[i16]) {
        if !self.closed {
            self.samples.extend_from_slice(samples);
        }
    }

    /// The message ended: listeners play out what is left, then end.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples in a 20 ms frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Samples received.
    pub fn len(&self) -> u64 {
        self.samples.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whole frames received.
    pub fn frames(&self) -> u64 {
        self.len() / self.frame_len as u64
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

fn frame_len(sample_rate: u32) -> usize {
    (sample_rate as usize * FRAME_MS as usize / 1000).max(1)
}

/// Playout tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayoutConfig {
    pub catch_up: CatchUpConfig,
    /// Playout buffer depth to start with and never go below.
    pub min_depth_ms: u32,
    /// Deepest the buffer grows after underruns.
    pub max_depth_ms: u32,
    /// Behind by more than depth + this, pauses are shortened.
    pub hysteresis_ms: u32,
    /// Ticks without an underrun before the depth shrinks by a frame.
    pub calm_ticks: u32,
    /// Speech is time-stretched (at `catch_up.speed`) only while further
    /// behind than this: near live, WSOLA's look-ahead would starve the
    /// playout buffer.
    pub stretch_above_ms: u32,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        PlayoutConfig {
            catch_up: CatchUpConfig::default(),
            min_depth_ms: 40,
            max_depth_ms: 100,
            hysteresis_ms: 20,
            calm_ticks: 1_500,
            stretch_above_ms: 300,
        }
    }
}

/// Where a frame sent to the listener came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// The message, from this position of the listener's stream (see
    /// [`Listener::catch_up`] for its map onto the recording).
    /// Its first `len` samples are the message, the rest silence (the
    /// last frame, or the end of a word before a pause still undecided).
    Message { listener_position: u64, len: u16 },
    /// A prompt or tone queued with [`Listener::play_prompt`].
    Prompt,
    /// Silence: buffering, an underrun, or a pause lengthened for drift.
    Fill,
}

/// One tick's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// Send this 20 ms frame now.
    Frame {
        samples: Vec<i16>,
        source: FrameSource,
    },
    /// The message is closed and everything was played.
    End,
}

/// Counters a listener keeps, for tests and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    pub message_frames: u64,
    pub prompt_frames: u64,
    /// Silence sent while buffering before the first message frame.
    pub lead_in_fills: u64,
    /// Silence sent because nothing was there to play.
    pub underruns: u64,
    /// Silence added to a pause to keep the buffer at depth.
    pub pause_fills: u64,
    /// The tick (counted from 0) at which the listener reached live.
    pub live_at_tick: Option<u64>,
}

/// One listener's cursor into a [`FrameLog`].
#[derive(Debug, Clone)]
pub struct Listener {
    config: PlayoutConfig,
    frame_len: usize,
    catch_up: CatchUp,
    /// Where in the log this listener started (a frame boundary).
    base: u64,
    /// Log samples pushed into `catch_up` (from the log's start).
    fed: u64,
    finished: bool,
    /// Listener-stream samples decided, not yet sent.
    queue: VecDeque<i16>,
    /// Listener-stream samples sent.
    played: u64,
    prompts: VecDeque<i16>,
    depth: u64,
    buffering: bool,
    calm: u32,
    ticks: u64,
    ended: bool,
    stats: PlayoutStats,
    scratch: Vec<i16>,
}

impl Listener {
    /// A listener that starts at the beginning of the message.
    pub fn new(config: PlayoutConfig, sample_rate: u32) -> Self {
        Self::starting_at(config, sample_rate, 0)
    }

    /// A listener that starts at recording sample `position` (rounded down
    /// to a frame): a resumed or retrieved message.
    pub fn starting_at(config: PlayoutConfig, sample_rate: u32, position: u64) -> Self {
        let frame = frame_len(sample_rate) as u64;
        let base = position / frame * frame;
        let catch_up = CatchUp::new(CatchUpConfig {
            sample_rate,
            ..config.catch_up
        });
        let mut listener = Listener {
            frame_len: frame_len(sample_rate),
            catch_up,
            base,
            fed: base,
            finished: false,
            queue: VecDeque::new(),
            played: 0,
            prompts: VecDeque::new(),
            depth: 0,
            buffering: true,
            calm: 0,
            ticks: 0,
            ended: false,
            stats: PlayoutStats::default(),
            scratch: Vec::new(),
            config,
        };
        listener.set_depth(listener.ms_to_samples(config.min_depth_ms));
        listener
    }

    fn ms_to_samples(&self, ms: u32) -> u64 {
        (u64::from(ms) / u64::from(FRAME_MS)) * self.frame_len as u64
    }

    fn set_depth(&mut self, depth: u64) {
        let min = self
            .ms_to_samples(self.config.min_depth_ms)
            .max(self.frame_len as u64);
        let max = self.ms_to_samples(self.config.max_depth_ms).max(min);
        self.depth = depth.clamp(min, max);
        let threshold = self.depth + self.ms_to_samples(self.config.hysteresis_ms);
        self.catch_up.set_live_threshold_samples(threshold);
    }

    /// Queue a prompt or tone: it plays from the next tick, whole, before
    /// any more of the message (which waits and then catches up). Padded
    /// with silence to whole frames.
    pub fn play_prompt(&mut self, samples: &[i16]) {
        self.prompts.extend(samples);
        let short = self.prompts.len() % self.frame_len;
        if short != 0 {
            self.prompts
                .extend(std::iter::repeat_n(0, self.frame_len - short));
        }
    }

    /// Drop prompts not yet played (a key cut them short).
    pub fn cancel_prompts(&mut self) {
        self.prompts.clear();
    }

    /// The listener's catch-up stream and its map onto the recording.
    pub fn catch_up(&self) -> &CatchUp {
        &self.catch_up
    }

    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// The current playout depth target, in samples.
    pub fn depth_samples(&self) -> u64 {
        self.depth
    }

    /// How much of the recording the listener has heard (dropped pauses
    /// count as heard): the position to resume from, or to store as
    /// `playback_position`.
    pub fn recording_position(&self) -> u64 {
        self.base + self.catch_up.recording_position_at(self.played)
    }

    /// How far behind the talker the listener is, in samples of the log.
    pub fn behind_samples(&self, log: &FrameLog) -> u64 {
        log.len().saturating_sub(self.recording_position())
    }

    fn feed(&mut self, log: &FrameLog) {
        let samples = log.samples();
        let available = if log.is_closed() {
            log.len()
        } else {
            // Whole frames only: the detector judges frames, and a part
            // of one would be decided twice.
            log.frames() * log.frame_len() as u64
        };
        if available > self.fed {
            let start = usize::try_from(self.fed).unwrap_or(usize::MAX);
            let end = usize::try_from(available).unwrap_or(usize::MAX);
            if let Some(new) = samples.get(start..end) {
                let behind = self.catch_up.behind_samples(self.played, new.len() as u64);
                let stretch = behind > self.ms_to_samples(self.config.stretch_above_ms);
                self.catch_up.set_speed(if stretch {
                    self.config.catch_up.speed
                } else {
                    1.0
                });
                self.scratch.clear();
                self.catch_up.push(new, behind, &mut self.scratch);
                self.queue.extend(self.scratch.drain(..));
                self.fed = available;
            }
        }
        if log.is_closed() && !self.finished && self.fed >= log.len() {
            self.finished = true;
            self.scratch.clear();
            self.catch_up.finish(&mut self.scratch);
            self.queue.extend(self.scratch.drain(..));
        }
    }

    fn fill(&self) -> Tick {
        Tick::Frame {
            samples: vec![0; self.frame_len],
            source: FrameSource::Fill,
        }
    }

    /// Is the next queued frame quiet enough to lengthen the pause it is in?
    fn next_frame_is_pause(&self) -> bool {
        let take = self.frame_len.min(self.queue.len());
        let (front, back) = self.queue.as_slices();
        let level = if front.len() >= take {
            frame_level_dbfs(&front[..take])
        } else {
            let mut frame = front.to_vec();
            frame.extend_from_slice(&back[..take - front.len()]);
            frame_level_dbfs(&frame)
        };
        level < self.config.catch_up.silence.speech_off_dbfs
    }

    /// One tick: the frame to send now, given the log as it is now.
    pub fn poll_frame(&mut self, log: &FrameLog) -> Tick {
        if self.ended {
            return Tick::End;
        }
        self.feed(log);
        self.ticks += 1;
        if self.prompts.len() >= self.frame_len {
            self.stats.prompt_frames += 1;
            return Tick::Frame {
                samples: self.prompts.drain(..self.frame_len).collect(),
                source: FrameSource::Prompt,
            };
        }
        if self.finished && self.queue.is_empty() {
            self.ended = true;
            return Tick::End;
        }
        let queued = self.queue.len() as u64;
        if self.buffering {
            if queued >= self.depth || self.finished {
                self.buffering = false;
            } else {
                if self.stats.message_frames == 0 {
                    self.stats.lead_in_fills += 1;
                }
                return self.fill();
            }
        }
        if queued < self.frame_len as u64 && !self.finished {
            if self.catch_up.undecided_starts_with_pause() {
                // A pause is next, held by the catch-up until it knows how
                // long it is: lengthening it by a frame is inaudible.
                self.stats.pause_fills += 1;
                if queued == 0 {
                    return self.fill();
                }
                return self.play(self.queue.len());
            }
            self.stats.underruns += 1;
            self.buffering = true;
            self.calm = 0;
            self.set_depth(self.depth + self.frame_len as u64);
            return self.fill();
        }
        let behind = self.behind_samples(log);
        let live = behind <= self.depth + self.ms_to_samples(self.config.hysteresis_ms);
        if live && self.stats.live_at_tick.is_none() {
            self.stats.live_at_tick = Some(self.ticks - 1);
        }
        if live && !self.finished && behind < self.depth && self.next_frame_is_pause() {
            self.stats.pause_fills += 1;
            return self.fill();
        }
        self.calm += 1;
        if self.calm >= self.config.calm_ticks {
            self.calm = 0;
            self.set_depth(self.depth.saturating_sub(self.frame_len as u64));
        }
        self.play(self.frame_len.min(self.queue.len()))
    }

    /// A frame of `take` queued samples, padded with silence.
    fn play(&mut self, take: usize) -> Tick {
        let mut samples: Vec<i16> = self.queue.drain(..take).collect();
        let listener_position = self.played;
        self.played += take as u64;
        samples.resize(self.frame_len, 0);
        self.stats.message_frames += 1;
        Tick::Frame {
            samples,
            source: FrameSource::Message {
                listener_position,
                len: take as u16,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::catchup::MapSegment;

    const RATE: u32 = 8_000;
    const FRAME: usize = 160;

    /// Deterministic noise bursts at about -20 dBFS (never exactly 0)
    /// between digital silence.
    fn message(parts: &[(bool, usize)]) -> Vec<i16> {
        let mut seed = 99u32;
        let mut samples = Vec::new();
        for &(speech, ms) in parts {
            for _ in 0..ms * RATE as usize / 1000 {
                if speech {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let value = ((seed >> 16) as i16) / 8;
                    samples.push(if value == 0 { 1 } else { value });
                } else {
                    samples.push(0);
                }
            }
        }
        samples
    }

    /// Talk with a pause every couple of seconds, `seconds` long.
    fn long_message(seconds: usize) -> Vec<i16> {
        let mut parts = vec![(false, 300)];
        let mut total = 300;
        let mut n = 0;
        while total < seconds * 1000 {
            let talk = 1_200 + (n * 370) % 1_500;
            let pause = 250 + (n * 130) % 900;
            parts.push((true, talk));
            parts.push((false, pause));
            total += talk + pause;
            n += 1;
        }
        message(&parts)
    }

    struct Run {
        ticks: Vec<Tick>,
        listener: Listener,
        /// Behind (samples) at each tick once live.
        live_behind: Vec<u64>,
    }

    /// The caller's phone sends frame k at k·20 ms on its own clock
    /// (`drift_ppm` fast or slow against ours), each delayed by up to
    /// `jitter_ms` (in order, as TCP delivers); the listener joins at
    /// `join_ms` and is ticked every 20 ms of our clock.
    fn simulate(
        input: &[i16],
        drift_ppm: f64,
        jitter_ms: f64,
        join_ms: f64,
        config: PlayoutConfig,
        prompt_at_tick: Option<(usize, Vec<i16>)>,
    ) -> Run {
        let period = 20.0 / (1.0 + drift_ppm * 1e-6);
        let mut seed = 7u32;
        let mut last = 0.0f64;
        let arrivals: Vec<f64> = (0..input.len().div_ceil(FRAME))
            .map(|k| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let jitter = f64::from(seed >> 16) / 65_536.0 * jitter_ms;
                last = last.max((k + 1) as f64 * period + jitter);
                last
            })
            .collect();
        let mut log = FrameLog::new(RATE);
        let mut listener = Listener::new(config, RATE);
        let mut next = 0;
        let mut ticks = Vec::new();
        let mut live_behind = Vec::new();
        for tick in 0..200_000usize {
            let now = join_ms + tick as f64 * 20.0;
            while next < arrivals.len() && arrivals[next] <= now {
                let end = ((next + 1) * FRAME).min(input.len());
                log.append(&input[next * FRAME..end]);
                next += 1;
            }
            if next == arrivals.len() {
                log.close();
            }
            if let Some((at, prompt)) = &prompt_at_tick
                && *at == tick
            {
                listener.play_prompt(prompt);
            }
            let out = listener.poll_frame(&log);
            if listener.stats().live_at_tick.is_some() && !log.is_closed() {
                live_behind.push(listener.behind_samples(&log));
            }
            let end = out == Tick::End;
            ticks.push(out);
            if end {
                break;
            }
        }
        Run {
            ticks,
            listener,
            live_behind,
        }
    }

    /// Every recorded sample is played once or was a dropped pause sample;
    /// the message frames are exactly the catch-up stream.
    fn assert_each_sample_once_or_dropped_silence(run: &Run, input: &[i16]) {
        let mut stream = Vec::new();
        for tick in &run.ticks {
            if let Tick::Frame {
                samples,
                source:
                    FrameSource::Message {
                        listener_position,
                        len,
                    },
            } = tick
            {
                assert_eq!(
                    *listener_position as usize,
                    stream.len(),
                    "no gap, no repeat"
                );
                let len = usize::from(*len);
                assert!(samples[len..].iter().all(|&s| s == 0));
                stream.extend_from_slice(&samples[..len]);
            }
        }
        let catch_up = run.listener.catch_up();
        let len = catch_up.listener_len() as usize;
        assert_eq!(stream.len(), len, "the whole stream was played");
        assert_eq!(catch_up.recording_decided(), input.len() as u64);
        let mut heard = vec![0u32; input.len()];
        let mut listener_end = 0;
        let mut recording_end = 0;
        for segment in catch_up.map() {
            let MapSegment {
                listener_start,
                listener_len,
                recording_start,
                recording_len,
            } = *segment;
            assert_eq!(listener_start, listener_end, "contiguous stream");
            assert!(recording_start >= recording_end, "never backwards");
            // Dropped between segments: pause samples only.
            let dropped = &input[recording_end as usize..recording_start as usize];
            assert!(
                dropped.iter().all(|&s| s == 0),
                "speech dropped at {recording_end}"
            );
            let (l, r) = (listener_start as usize, recording_start as usize);
            if segment.is_copy() {
                assert_eq!(
                    &stream[l..l + listener_len as usize],
                    &input[r..r + recording_len as usize]
                );
            }
            for count in &mut heard[r..r + recording_len as usize] {
                *count += 1;
            }
            listener_end = segment.listener_end();
            recording_end = segment.recording_end();
        }
        assert_eq!(listener_end as usize, len);
        let tail = &input[recording_end as usize..];
        assert!(tail.iter().all(|&s| s == 0), "speech dropped at the end");
        assert!(heard.iter().all(|&n| n <= 1), "a sample was played twice");
        for (index, &sample) in input.iter().enumerate() {
            assert!(
                sample == 0 || heard[index] == 1,
                "speech at {index} not played"
            );
        }
    }

    fn fills_during_speech(run: &Run, input: &[i16]) -> usize {
        // A fill frame between two message frames that are both speech.
        let mut count = 0;
        let mut last_was_speech = false;
        let mut fill_pending = false;
        for tick in &run.ticks {
            match tick {
                Tick::Frame {
                    samples,
                    source: FrameSource::Message { .. },
                } => {
                    let speech = samples.iter().all(|&s| s != 0);
                    if fill_pending && last_was_speech && speech {
                        count += 1;
                    }
                    fill_pending = false;
                    last_was_speech = speech;
                }
                Tick::Frame {
                    source: FrameSource::Fill,
                    ..
                } => fill_pending = true,
                _ => {}
            }
        }
        let _ = input;
        count
    }

    #[test]
    fn a_listener_from_the_start_is_live_at_once_and_hears_it_all_unchanged() {
        let input = long_message(20);
        let run = simulate(&input, 0.0, 0.0, 0.0, PlayoutConfig::default(), None);
        assert_each_sample_once_or_dropped_silence(&run, &input);
        let stats = run.listener.stats();
        assert_eq!(stats.underruns, 0);
        assert_eq!(stats.live_at_tick, Some(stats.lead_in_fills));
        // Nothing was dropped: the stream is the recording.
        assert_eq!(run.listener.catch_up().listener_len(), input.len() as u64);
        assert!(
            run.live_behind.iter().all(|&b| b <= 60 * 8),
            "{:?}",
            run.live_behind.iter().max()
        );
    }

    #[test]
    fn a_late_listener_catches_up_then_plays_live_with_no_seam_under_drift_and_jitter() {
        let input = long_message(90);
        for drift in [-200.0, 0.0, 200.0] {
            for (join_ms, speed) in [(2_000.0, 1.0), (5_000.0, 1.0), (3_000.0, 1.5)] {
                let config = PlayoutConfig {
                    catch_up: CatchUpConfig {
                        speed,
                        ..CatchUpConfig::default()
                    },
                    ..PlayoutConfig::default()
                };
                let run = simulate(&input, drift, 12.0, join_ms, config, None);
                let case = format!("drift {drift} join {join_ms} speed {speed}");
                if speed == 1.0 {
                    assert_each_sample_once_or_dropped_silence(&run, &input);
                }
                let stats = run.listener.stats();
                assert_eq!(stats.underruns, 0, "{case}: {stats:?}");
                // Live well before the 90 s message ends (pauses alone save
                // 0.1-1 s a sentence).
                let live = stats.live_at_tick.unwrap_or(u64::MAX);
                assert!(live * 20 < 40_000, "{case}: live only at {live}");
                assert_eq!(fills_during_speech(&run, &input), 0, "{case}");
                let worst = run.live_behind.iter().max().copied().unwrap_or(0);
                // 40 ms of buffer, 20 ms of hysteresis, 12 ms of jitter and
                // the frame in hand.
                assert!(worst <= 100 * 8, "{case}: behind up to {worst}");
            }
        }
    }

    #[test]
    fn strong_drift_is_absorbed_in_pauses_never_in_speech() {
        // 0.2 % is ten times a bad crystal: a frame of drift every 10 s.
        let input = long_message(120);
        for drift in [-2_000.0, 2_000.0] {
            let run = simulate(&input, drift, 5.0, 1_000.0, PlayoutConfig::default(), None);
            assert_each_sample_once_or_dropped_silence(&run, &input);
            let stats = run.listener.stats();
            assert_eq!(stats.underruns, 0, "drift {drift}: {stats:?}");
            assert_eq!(fills_during_speech(&run, &input), 0);
            if drift < 0.0 {
                assert!(stats.pause_fills >= 5, "{stats:?}");
            }
            let worst = run.live_behind.iter().max().copied().unwrap_or(0);
            assert!(worst <= 100 * 8, "drift {drift}: behind up to {worst}");
        }
    }

    #[test]
    fn a_prompt_goes_out_in_the_same_stream_and_the_message_resumes_where_it_was() {
        let input = long_message(30);
        let beep: Vec<i16> = (0..1_200)
            .map(|n| if n % 16 < 8 { 8_000 } else { -8_000 })
            .collect();
        let run = simulate(
            &input,
            0.0,
            5.0,
            500.0,
            PlayoutConfig::default(),
            Some((400, beep.clone())),
        );
        assert_each_sample_once_or_dropped_silence(&run, &input);
        let prompt: Vec<i16> = run
            .ticks
            .iter()
            .filter_map(|t| match t {
                Tick::Frame {
                    samples,
                    source: FrameSource::Prompt,
                } => Some(samples.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(&prompt[..beep.len()], &beep[..]);
        assert_eq!(prompt.len(), 1_280, "padded to whole frames");
        let first = run.ticks.iter().position(|t| {
            matches!(
                t,
                Tick::Frame {
                    source: FrameSource::Prompt,
                    ..
                }
            )
        });
        assert_eq!(first, Some(400));
        // The listener fell 160 ms behind and caught up again in pauses.
        let worst_end = run
            .live_behind
            .iter()
            .rev()
            .take(50)
            .max()
            .copied()
            .unwrap_or(0);
        assert!(worst_end <= 80 * 8, "{worst_end}");
    }

    #[test]
    fn an_underrun_deepens_the_buffer_and_calm_shrinks_it() {
        let config = PlayoutConfig {
            calm_ticks: 3,
            ..PlayoutConfig::default()
        };
        let mut listener = Listener::new(config, RATE);
        let mut log = FrameLog::new(RATE);
        let frame = vec![1_000i16; FRAME];
        let poll = |listener: &mut Listener, log: &FrameLog| match listener.poll_frame(log) {
            Tick::Frame { source, .. } => source,
            Tick::End => panic!("ended early"),
        };
        assert_eq!(poll(&mut listener, &log), FrameSource::Fill, "buffering");
        log.append(&frame);
        assert_eq!(
            poll(&mut listener, &log),
            FrameSource::Fill,
            "40 ms not there yet"
        );
        log.append(&frame);
        assert_eq!(listener.stats().lead_in_fills, 2);
        let at = |n: u64| FrameSource::Message {
            listener_position: n * FRAME as u64,
            len: FRAME as u16,
        };
        assert_eq!(poll(&mut listener, &log), at(0));
        assert_eq!(poll(&mut listener, &log), at(1));
        // The caller stalls: an underrun, silence, and a deeper buffer.
        assert_eq!(poll(&mut listener, &log), FrameSource::Fill);
        assert_eq!(listener.stats().underruns, 1);
        assert_eq!(listener.depth_samples(), 3 * FRAME as u64);
        log.append(&frame);
        log.append(&frame);
        assert_eq!(poll(&mut listener, &log), FrameSource::Fill, "60 ms now");
        log.append(&frame);
        assert_eq!(poll(&mut listener, &log), at(2), "resumes where it stopped");
        for n in 3..8 {
            log.append(&frame);
            assert_eq!(poll(&mut listener, &log), at(n));
        }
        assert_eq!(listener.stats().underruns, 1);
        assert_eq!(
            listener.depth_samples(),
            2 * FRAME as u64,
            "calm shrinks it back, never below the minimum"
        );
    }

    #[test]
    fn a_listener_can_start_at_a_position() {
        let input = long_message(10);
        let mut log = FrameLog::new(RATE);
        log.append(&input);
        log.close();
        let mut listener = Listener::starting_at(PlayoutConfig::default(), RATE, 40_050);
        assert_eq!(listener.recording_position(), 40_000, "a frame boundary");
        let mut heard = Vec::new();
        while let Tick::Frame { samples, source } = listener.poll_frame(&log) {
            if let FrameSource::Message { len, .. } = source {
                heard.extend_from_slice(&samples[..usize::from(len)]);
            }
        }
        assert_eq!(listener.recording_position(), input.len() as u64);
        // Closed and far behind: pauses shortened, speech from 40000 whole.
        let speech: Vec<i16> = input[40_000..]
            .iter()
            .copied()
            .filter(|&s| s != 0)
            .collect();
        let heard_speech: Vec<i16> = heard.iter().copied().filter(|&s| s != 0).collect();
        assert_eq!(heard_speech, speech);
        let past_end =
            Listener::starting_at(PlayoutConfig::default(), RATE, 10_000_000).poll_frame(&log);
        assert_eq!(past_end, Tick::End);
    }

    #[test]
    fn a_closed_log_plays_out_its_short_last_frame_then_ends() {
        let mut log = FrameLog::new(RATE);
        let mut listener = Listener::new(PlayoutConfig::default(), RATE);
        log.append(&[500; 250]);
        log.close();
        log.append(&[9; 10]);
        assert_eq!(log.len(), 250, "nothing appended after close");
        let mut heard = Vec::new();
        while let Tick::Frame { samples, source } = listener.poll_frame(&log) {
            assert_eq!(samples.len(), FRAME);
            assert!(matches!(source, FrameSource::Message { .. }));
            heard.extend(samples);
        }
        assert_eq!(heard.len(), 320);
        assert!(heard[..250].iter().all(|&s| s == 500));
        assert!(heard[250..].iter().all(|&s| s == 0));
        assert_eq!(listener.poll_frame(&log), Tick::End);
        assert_eq!(listener.recording_position(), 250);
    }
}
