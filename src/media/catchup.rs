//! The listener's stream: the recording, shortened while the listener is
//! behind live, with an exact map between the two timelines (S2.3).
//!
//! Owns: which recorded samples a listener hears. Fed the recording (8 kHz)
//! in order with how far the listener is behind live, it appends to the
//! listener's stream:
//!
//! * **live** (behind by at most `live_threshold_ms`): the input, unchanged
//!   and without delay, partial frames included;
//! * **behind**: pauses shrink to at most `max_pause_ms` (the detector's
//!   hangover after a word, then a short pre-roll before the next one);
//!   speech is never dropped; with `speed > 1` speech is compressed by WSOLA
//!   (pitch kept) until live.
//!
//! Every output sample is accounted for in [`MapSegment`]s: copied spans map
//! one to one, a WSOLA hop maps its `hop` output samples onto the recording
//! span it moved past, and dropped silence is the gap between segments. So
//! "how much of the message has the listener heard" and a delivery's
//! `playback_position` (in recording samples) are lookups, not estimates.
//!
//! Pure and streaming: no clock, no I/O. Must not know: the switch, files,
//! how `behind` was measured.

use std::collections::VecDeque;

use super::silence::{FRAME_MS, FrameClass, SilenceConfig, SilenceDetector};
use super::stretch::{MAX_TEMPO, Wsola};

/// Catch-up behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatchUpConfig {
    pub sample_rate: u32,
    /// Tempo for speech while behind: 1.0 (the default) leaves speech
    /// untouched; up to 2.0.
    pub speed: f32,
    /// Behind by at most this counts as live: nothing is changed.
    pub live_threshold_ms: u32,
    /// The longest pause kept while behind: the hangover after a word plus
    /// a pre-roll before the next one.
    pub max_pause_ms: u32,
    pub silence: SilenceConfig,
}

impl Default for CatchUpConfig {
    fn default() -> Self {
        CatchUpConfig {
            sample_rate: 8_000,
            speed: 1.0,
            live_threshold_ms: 200,
            max_pause_ms: 150,
            silence: SilenceConfig::default(),
        }
    }
}

/// A span of the listener's stream and the recording span it plays.
///
/// Copied audio has equal lengths; a WSOLA hop has `recording_len >=
/// listener_len`. Recording samples between one segment's end and the next
/// one's start were dropped (pause compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSegment {
    pub listener_start: u64,
    pub listener_len: u64,
    pub recording_start: u64,
    pub recording_len: u64,
}

impl MapSegment {
    pub fn listener_end(&self) -> u64 {
        self.listener_start + self.listener_len
    }

    pub fn recording_end(&self) -> u64 {
        self.recording_start + self.recording_len
    }

    /// Played one to one.
    pub fn is_copy(&self) -> bool {
        self.listener_len == self.recording_len
    }
}

/// Whether the frames over a span are speech.
enum Lookahead {
    AllSpeech,
    SilenceAhead,
    NotYetKnown,
}

/// The streaming listener-stream builder. One per listener.
#[derive(Debug, Clone)]
pub struct CatchUp {
    config: CatchUpConfig,
    detector: SilenceDetector,
    wsola: Wsola,
    frame_len: u64,
    pre_roll_frames: u64,
    live_threshold: i64,
    speed: f64,
    /// Recording samples from `pending_start` to `received`; decided up to
    /// `cursor` (emitted or dropped).
    pending: Vec<i16>,
    pending_start: u64,
    received: u64,
    cursor: u64,
    /// Classes of whole frames from `classes_first_frame`.
    classes: VecDeque<FrameClass>,
    classes_first_frame: u64,
    finished: bool,
    /// The ideal next position while a WSOLA run is under way.
    stretch_ideal: Option<f64>,
    behind_at_push: i64,
    saved_since_push: i64,
    listener_total: u64,
    map: Vec<MapSegment>,
}

/// Keep at least this much decided history before compacting the buffer.
const COMPACT_AFTER: u64 = 8 * 1024;

impl CatchUp {
    pub fn new(config: CatchUpConfig) -> Self {
        let silence = SilenceConfig {
            sample_rate: config.sample_rate,
            ..config.silence
        };
        let detector = SilenceDetector::new(silence);
        let frame_len = detector.frame_len() as u64;
        let hangover_ms = detector.hangover_frames() * FRAME_MS;
        let pre_roll_frames = u64::from(config.max_pause_ms.saturating_sub(hangover_ms) / FRAME_MS);
        let speed = if config.speed.is_finite() {
            f64::from(config.speed.clamp(1.0, MAX_TEMPO))
        } else {
            1.0
        };
        CatchUp {
            wsola: Wsola::new(config.sample_rate),
            live_threshold: i64::from(config.live_threshold_ms) * i64::from(config.sample_rate)
                / 1000,
            config,
            detector,
            frame_len,
            pre_roll_frames,
            speed,
            pending: Vec::new(),
            pending_start: 0,
            received: 0,
            cursor: 0,
            classes: VecDeque::new(),
            classes_first_frame: 0,
            finished: false,
            stretch_ideal: None,
            behind_at_push: 0,
            saved_since_push: 0,
            listener_total: 0,
            map: Vec::new(),
        }
    }

    pub fn config(&self) -> &CatchUpConfig {
        &self.config
    }

    /// Whether the undecided part of the recording starts in a pause (held
    /// until it is known whether the pause goes on): silence is next.
    pub fn undecided_starts_with_pause(&self) -> bool {
        self.cursor < self.received
            && self
                .class_of(self.cursor / self.frame_len)
                .is_some_and(|class| !class.is_speech())
    }

    /// Change the speech tempo while behind, from the next push on; a WSOLA
    /// run under way ends where it is.
    pub fn set_speed(&mut self, speed: f32) {
        let speed = if speed.is_finite() {
            f64::from(speed.clamp(1.0, MAX_TEMPO))
        } else {
            1.0
        };
        if speed != self.speed {
            self.speed = speed;
            self.stretch_ideal = None;
        }
    }

    /// Change how far behind still counts as live, from the next push on
    /// (a playout buffer that grew after an underrun keeps its depth).
    pub fn set_live_threshold_samples(&mut self, samples: u64) {
        self.live_threshold = i64::try_from(samples).unwrap_or(i64::MAX);
    }

    /// Feed the next recorded samples; append what the listener should hear
    /// next to `out`. `behind_samples`: how far the listener is behind live
    /// as these samples arrive (recorded so far, these included, minus the
    /// recording position the listener is hearing now; see
    /// [`Self::behind_samples`]). What this push saves is subtracted as it
    /// goes, so one large push stops compressing once it has caught up.
    pub fn push(&mut self, recorded: &[i16], behind_samples: u64, out: &mut Vec<i16>) {
        if self.finished {
            return;
        }
        self.behind_at_push = i64::try_from(behind_samples).unwrap_or(i64::MAX);
        self.saved_since_push = 0;
        self.pending.extend_from_slice(recorded);
        self.received += recorded.len() as u64;
        let mut new_classes = Vec::new();
        self.detector.push(recorded, &mut new_classes);
        self.classes.extend(new_classes);
        self.process(out);
    }

    /// The recording ended: decide everything left and append it.
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(last) = self.detector.finish() {
            self.classes.push_back(last);
        }
        self.process(out);
    }

    /// How far behind live a listener who has heard `listener_played` of
    /// this stream is, once `about_to_push` more recorded samples arrive.
    pub fn behind_samples(&self, listener_played: u64, about_to_push: u64) -> u64 {
        let live = self.received + about_to_push;
        live.saturating_sub(self.recording_position_at(listener_played))
    }

    /// Behind now, within the current push.
    pub fn behind_now(&self) -> i64 {
        self.behind_at_push - self.saved_since_push
    }

    /// Samples appended to the listener's stream so far.
    pub fn listener_len(&self) -> u64 {
        self.listener_total
    }

    /// Recording samples fed so far.
    pub fn recording_received(&self) -> u64 {
        self.received
    }

    /// Recording samples decided (played or dropped) so far.
    pub fn recording_decided(&self) -> u64 {
        self.cursor
    }

    /// The whole map, in order; listener spans are contiguous from 0.
    pub fn map(&self) -> &[MapSegment] {
        &self.map
    }

    /// The recording position a listener has reached after hearing
    /// `listener_position` samples of the stream: exact in copied audio,
    /// linear within one WSOLA hop; at the end of the stream, everything
    /// decided (a dropped pause at the end counts as heard).
    pub fn recording_position_at(&self, listener_position: u64) -> u64 {
        if listener_position >= self.listener_total {
            return self.cursor;
        }
        let index = self
            .map
            .partition_point(|segment| segment.listener_end() <= listener_position);
        match self.map.get(index) {
            Some(segment) => {
                let into = u128::from(listener_position - segment.listener_start);
                let scaled = into * u128::from(segment.recording_len)
                    / u128::from(segment.listener_len.max(1));
                segment.recording_start + scaled as u64
            }
            None => self.cursor,
        }
    }

    /// Where in the listener's stream recording position `recording_position`
    /// is played; a dropped sample maps to where the stream resumes. `None`
    /// while that part of the recording is not decided yet.
    pub fn listener_position_of(&self, recording_position: u64) -> Option<u64> {
        if recording_position >= self.cursor {
            return (recording_position == self.cursor).then_some(self.listener_total);
        }
        let index = self
            .map
            .partition_point(|segment| segment.recording_end() <= recording_position);
        let Some(segment) = self.map.get(index) else {
            return Some(self.listener_total);
        };
        if recording_position < segment.recording_start {
            return Some(segment.listener_start);
        }
        let into = u128::from(recording_position - segment.recording_start);
        let scaled =
            into * u128::from(segment.listener_len) / u128::from(segment.recording_len.max(1));
        Some(segment.listener_start + scaled as u64)
    }

    fn is_behind(&self) -> bool {
        self.behind_now() > self.live_threshold
    }

    fn class_of(&self, frame: u64) -> Option<FrameClass> {
        let index = frame.checked_sub(self.classes_first_frame)?;
        self.classes.get(usize::try_from(index).ok()?).copied()
    }

    fn frame_end(&self, frame: u64) -> u64 {
        ((frame + 1) * self.frame_len).min(self.received)
    }

    fn slice(&self, from: u64, to: u64) -> &[i16] {
        let start = (from - self.pending_start) as usize;
        let end = (to - self.pending_start) as usize;
        &self.pending[start..end]
    }

    fn record(&mut self, segment: MapSegment) {
        if let Some(last) = self.map.last_mut()
            && last.is_copy()
            && segment.is_copy()
            && last.listener_end() == segment.listener_start
            && last.recording_end() == segment.recording_start
        {
            last.listener_len += segment.listener_len;
            last.recording_len += segment.recording_len;
            return;
        }
        self.map.push(segment);
    }

    fn emit_copy(&mut self, to: u64, out: &mut Vec<i16>) {
        if to <= self.cursor {
            return;
        }
        out.extend_from_slice(self.slice(self.cursor, to));
        let len = to - self.cursor;
        self.record(MapSegment {
            listener_start: self.listener_total,
            listener_len: len,
            recording_start: self.cursor,
            recording_len: len,
        });
        self.listener_total += len;
        self.cursor = to;
    }

    fn drop_until(&mut self, to: u64) {
        if to > self.cursor {
            self.saved_since_push += (to - self.cursor) as i64;
            self.cursor = to;
        }
    }

    /// Is the pause frame `frame` followed by a full pre-roll of pause (so
    /// it is not needed before the next word)? `None`: not known yet.
    fn pause_continues_after(&self, frame: u64) -> Option<bool> {
        for ahead in 1..=self.pre_roll_frames {
            match self.class_of(frame + ahead) {
                Some(class) if class.is_speech() => return Some(false),
                Some(_) => {}
                // Past the end of a finished recording is silence.
                None if self.finished => return Some(true),
                None => return None,
            }
        }
        Some(true)
    }

    fn speech_through(&self, from: u64, to: u64) -> Lookahead {
        let first = from / self.frame_len;
        let last = to.saturating_sub(1) / self.frame_len;
        for frame in first..=last {
            match self.class_of(frame) {
                Some(class) if !class.is_speech() => return Lookahead::SilenceAhead,
                Some(_) => {}
                None => return Lookahead::NotYetKnown,
            }
        }
        if to > self.received {
            return Lookahead::NotYetKnown;
        }
        Lookahead::AllSpeech
    }

    fn process(&mut self, out: &mut Vec<i16>) {
        while self.cursor < self.received {
            if !self.is_behind() {
                // Live: everything as it came, partial frames included.
                self.stretch_ideal = None;
                self.emit_copy(self.received, out);
                break;
            }
            let frame = self.cursor / self.frame_len;
            let frame_end = self.frame_end(frame);
            let Some(class) = self.class_of(frame) else {
                if self.finished {
                    self.emit_copy(self.received, out);
                }
                break;
            };
            if !class.is_speech() {
                self.stretch_ideal = None;
                match self.pause_continues_after(frame) {
                    Some(true) => self.drop_until(frame_end),
                    Some(false) => self.emit_copy(frame_end, out),
                    None => break,
                }
                continue;
            }
            if self.speed <= 1.0 {
                self.emit_copy(frame_end, out);
                continue;
            }
            if !self.stretch_hop(out) {
                if self.stretch_ideal.is_none() || self.finished {
                    self.stretch_ideal = None;
                    self.emit_copy(frame_end, out);
                } else {
                    break;
                }
            }
        }
        self.compact();
    }

    /// One WSOLA hop from the cursor, if the speech ahead allows. On
    /// `false` with a run still under way the caller waits for input; with
    /// none (pause ahead) it copies.
    fn stretch_hop(&mut self, out: &mut Vec<i16>) -> bool {
        let ideal = *self.stretch_ideal.get_or_insert(self.cursor as f64);
        let ideal_position = (ideal.round() as u64).max(self.cursor);
        let needed = ideal_position + self.wsola.lookahead() as u64;
        match self.speech_through(self.cursor, needed) {
            Lookahead::AllSpeech => {}
            Lookahead::SilenceAhead => {
                self.stretch_ideal = None;
                return false;
            }
            Lookahead::NotYetKnown => return false,
        }
        let Some(hop) = self.wsola.choose(
            &self.pending[(self.cursor - self.pending_start) as usize..],
            self.cursor,
            self.cursor,
            ideal_position,
        ) else {
            return false;
        };
        let hop_len = self.wsola.hop_len() as u64;
        let consumed = hop.consumed(self.wsola.hop_len());
        let start = (self.cursor - self.pending_start) as usize;
        self.wsola
            .render(&self.pending[start..], self.cursor, hop, out);
        self.record(MapSegment {
            listener_start: self.listener_total,
            listener_len: hop_len,
            recording_start: self.cursor,
            recording_len: consumed,
        });
        self.listener_total += hop_len;
        self.saved_since_push += (consumed - hop_len) as i64;
        self.cursor += consumed;
        self.stretch_ideal = Some(ideal + hop_len as f64 * self.speed);
        true
    }

    fn compact(&mut self) {
        let droppable = self.cursor - self.pending_start;
        if droppable >= COMPACT_AFTER {
            self.pending.drain(..droppable as usize);
            self.pending_start = self.cursor;
            let first_needed_frame = self.cursor / self.frame_len;
            while self.classes_first_frame < first_needed_frame && !self.classes.is_empty() {
                self.classes.pop_front();
                self.classes_first_frame += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 8_000;

    /// Deterministic noise bursts at about -20 dBFS between digital silence.
    fn message(parts: &[(bool, usize)]) -> Vec<i16> {
        let mut seed = 12_345u32;
        let mut samples = Vec::new();
        for &(speech, ms) in parts {
            for _ in 0..ms * RATE / 1000 {
                if speech {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    samples.push(((seed >> 16) as i16) / 8);
                } else {
                    samples.push(0);
                }
            }
        }
        samples
    }

    fn speech_frames(samples: &[i16]) -> Vec<(usize, usize)> {
        let mut detector = SilenceDetector::new(SilenceConfig::default());
        let mut spans = Vec::new();
        for (index, frame) in samples.chunks(160).enumerate() {
            if detector.classify(frame).is_speech() {
                spans.push((index * 160, index * 160 + frame.len()));
            }
        }
        spans
    }

    /// Run a whole recording through with a fixed `behind`, in `chunk`s.
    fn run(config: CatchUpConfig, input: &[i16], behind: u64, chunk: usize) -> (CatchUp, Vec<i16>) {
        let mut catch_up = CatchUp::new(config);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            catch_up.push(piece, behind, &mut out);
        }
        catch_up.finish(&mut out);
        (catch_up, out)
    }

    fn check_map(catch_up: &CatchUp, input: &[i16], out: &[i16]) {
        assert_eq!(catch_up.listener_len(), out.len() as u64);
        assert_eq!(catch_up.recording_decided(), input.len() as u64);
        let mut listener = 0;
        let mut recording = 0;
        for segment in catch_up.map() {
            assert_eq!(
                segment.listener_start, listener,
                "listener spans contiguous"
            );
            assert!(
                segment.recording_start >= recording,
                "recording spans in order"
            );
            assert!(segment.recording_len >= segment.listener_len);
            if segment.is_copy() {
                let l = segment.listener_start as usize;
                let r = segment.recording_start as usize;
                let n = segment.listener_len as usize;
                assert_eq!(&out[l..l + n], &input[r..r + n], "copied spans are exact");
            }
            listener = segment.listener_end();
            recording = segment.recording_end();
        }
        assert_eq!(listener, out.len() as u64);
        let mut previous = 0;
        for position in 0..=out.len() as u64 {
            let at = catch_up.recording_position_at(position);
            assert!(at >= previous, "monotonic at {position}");
            previous = at;
            if position < out.len() as u64 {
                let back = catch_up.listener_position_of(at).unwrap();
                assert!(back <= position, "inverse at {position}: {back}");
            }
        }
        assert_eq!(
            catch_up.recording_position_at(out.len() as u64),
            input.len() as u64
        );
    }

    fn pauses_ms(samples: &[i16]) -> Vec<usize> {
        let mut runs = Vec::new();
        let mut run = 0;
        for &s in samples {
            if s == 0 {
                run += 1;
            } else {
                if run > 80 {
                    runs.push(run * 1000 / RATE);
                }
                run = 0;
            }
        }
        runs
    }

    fn sample_message() -> Vec<i16> {
        message(&[
            (false, 900),
            (true, 700),
            (false, 600),
            (true, 1_200),
            (false, 330),
            (true, 450),
            (false, 80),
            (true, 500),
            (false, 1_000),
        ])
    }

    #[test]
    fn live_output_equals_input_without_delay() {
        let input = sample_message();
        let mut catch_up = CatchUp::new(CatchUpConfig::default());
        let mut out = Vec::new();
        for piece in input.chunks(97) {
            catch_up.push(piece, 0, &mut out);
            assert_eq!(
                out.len(),
                catch_up.recording_received() as usize,
                "nothing held back"
            );
        }
        catch_up.finish(&mut out);
        assert_eq!(out, input);
        assert_eq!(catch_up.map().len(), 1);
        check_map(&catch_up, &input, &out);
    }

    #[test]
    fn behind_at_speed_one_keeps_every_speech_sample_once_and_shrinks_pauses() {
        let input = sample_message();
        for chunk in [160, 97, 4_096, input.len()] {
            let (catch_up, out) = run(CatchUpConfig::default(), &input, 1_000_000, chunk);
            check_map(&catch_up, &input, &out);
            assert!(catch_up.map().iter().all(MapSegment::is_copy));
            // Every speech frame of the input is inside exactly one segment.
            for (start, end) in speech_frames(&input) {
                let covering: Vec<_> = catch_up
                    .map()
                    .iter()
                    .filter(|s| s.recording_start < end as u64 && s.recording_end() > start as u64)
                    .collect();
                assert_eq!(covering.len(), 1, "frame at {start} chunk {chunk}");
                assert!(
                    covering[0].recording_start <= start as u64
                        && covering[0].recording_end() >= end as u64
                );
            }
            // Pauses: the 80 ms one is untouched, the rest shrink to <= 150 ms.
            let pauses = pauses_ms(&out);
            assert_eq!(pauses.len(), 4, "{pauses:?}");
            assert!(pauses.iter().all(|&ms| ms <= 150), "{pauses:?}");
            assert!(pauses.contains(&80), "{pauses:?}");
            let speech: usize = 700 + 1_200 + 450 + 500;
            assert!(
                out.len() <= (speech + 80 + 3 * 150) * RATE / 1000,
                "{}",
                out.len()
            );
        }
    }

    #[test]
    fn the_message_starts_at_the_first_word_with_a_short_pre_roll() {
        let input = sample_message();
        let (_, out) = run(CatchUpConfig::default(), &input, 1_000_000, 160);
        let first_sound = out.iter().position(|&s| s != 0).unwrap();
        assert!(first_sound <= 50 * RATE / 1000, "{first_sound}");
    }

    #[test]
    fn catching_up_stops_once_live() {
        // Behind by 1.2 s: pause compression saves about 1.3 s over this
        // message, so the last pause is kept whole once caught up.
        let input = message(&[
            (true, 500),
            (false, 700),
            (true, 500),
            (false, 700),
            (true, 500),
            (false, 700),
            (true, 500),
            (false, 700),
            (true, 500),
        ]);
        let (catch_up, out) = run(CatchUpConfig::default(), &input, 9_600, input.len());
        check_map(&catch_up, &input, &out);
        let pauses = pauses_ms(&out);
        assert_eq!(pauses.len(), 4);
        // 1.2 s behind: the first pause saves 560 ms, the second the 440 ms
        // still above the 200 ms live threshold; the rest stay whole.
        assert_eq!(pauses, vec![140, 260, 700, 700]);
        assert!(catch_up.behind_now() <= 200 * RATE as i64 / 1000);
    }

    #[test]
    fn faster_speech_while_behind_is_shorter_and_mapped() {
        let input = sample_message();
        let config = CatchUpConfig {
            speed: 1.5,
            ..CatchUpConfig::default()
        };
        let (plain_map, plain) = run(CatchUpConfig::default(), &input, 1_000_000, 160);
        let (catch_up, out) = run(config, &input, 1_000_000, 160);
        check_map(&catch_up, &input, &out);
        check_map(&plain_map, &input, &plain);
        assert!(catch_up.map().iter().any(|s| !s.is_copy()));
        // Speech is about 2.85 s; at 1.5x about 0.95 s shorter.
        let saved = plain.len() as f64 - out.len() as f64;
        assert!((saved / RATE as f64 - 0.95).abs() < 0.15, "saved {saved}");
        // Pauses are still pauses.
        assert!(pauses_ms(&out).iter().all(|&ms| ms <= 150));
    }

    #[test]
    fn speed_never_applies_when_live() {
        let input = sample_message();
        let config = CatchUpConfig {
            speed: 2.0,
            ..CatchUpConfig::default()
        };
        let (catch_up, out) = run(config, &input, 0, 333);
        assert_eq!(out, input);
        check_map(&catch_up, &input, &out);
    }

    /// An engine's view: the recording grows 20 ms a tick; the listener
    /// answers 1.5 or 3 s in and plays its stream in real time.
    #[test]
    fn a_late_listener_catches_up_and_stays_live() {
        let input = message(&[
            (false, 700),
            (true, 900),
            (false, 500),
            (true, 1_100),
            (false, 400),
            (true, 800),
            (false, 600),
            (true, 1_000),
            (false, 450),
            (true, 700),
            (false, 300),
            (true, 900),
            (false, 300),
        ]);
        // Pauses alone save about 2.4 s of this message; 1.5x speech more.
        for (speed, answer_tick) in [(1.0f32, 75), (1.5, 75), (1.5, 150)] {
            let config = CatchUpConfig {
                speed,
                ..CatchUpConfig::default()
            };
            let mut catch_up = CatchUp::new(config);
            let mut out = Vec::new();
            let mut first_live_tick = None;
            for (tick, piece) in input.chunks(160).enumerate() {
                if tick < answer_tick {
                    continue;
                }
                if tick == answer_tick {
                    // Everything recorded so far arrives at once.
                    let backlog = &input[..tick * 160];
                    let behind = catch_up.behind_samples(0, backlog.len() as u64);
                    catch_up.push(backlog, behind, &mut out);
                }
                let played = ((tick - answer_tick) * 160) as u64;
                let behind = catch_up
                    .behind_samples(played.min(catch_up.listener_len()), piece.len() as u64);
                if behind <= 1_600 && first_live_tick.is_none() {
                    first_live_tick = Some(tick);
                }
                if let Some(live) = first_live_tick {
                    assert!(
                        behind <= 1_600 + 160 || tick < live + 5,
                        "fell behind again at {tick}: {behind}"
                    );
                }
                catch_up.push(piece, behind, &mut out);
            }
            catch_up.finish(&mut out);
            check_map(&catch_up, &input, &out);
            let live = first_live_tick.expect("caught up");
            assert!(
                live < input.len() / 160 - 20,
                "speed {speed}: live only at tick {live}"
            );
            for (start, end) in speech_frames(&input) {
                let heard = catch_up
                    .map()
                    .iter()
                    .any(|s| s.recording_start <= start as u64 && s.recording_end() >= end as u64);
                assert!(heard || speed > 1.0, "speech at {start} lost");
            }
        }
    }
}
