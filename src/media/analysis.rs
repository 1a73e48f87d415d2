//! Measuring what a listener heard against what the caller said, by
//! correlation: which part of the source every heard 10 ms came from, and
//! from that the clipped start, gaps, repeats and delays of a delivery.
//!
//! Owns: alignment of a heard recording to its source and the numbers
//! derived from it. Used by integration tests and benchmarks; never by the
//! product. Must not know: how the audio travelled, or anything the code
//! under test says about its own timing.
//!
//! Method. Every heard 10 ms block with signal is located in the source by
//! normalised cross-correlation: first where the previous block predicts
//! (audio is mostly contiguous), then in a window around it (a dropped
//! frame, a compressed pause, a repeat), then, when lost, over the whole
//! source. Blocks that agree on one offset form a run; each run's ends are
//! then refined sample by sample (the heard sample equals the source sample
//! at that offset, up to gain and mu-law error), so a 20 ms hole measures
//! 20 ms, not "two blocks". Gain is normalised away, so level changes do
//! not matter. The source is expected to be [`super::signal::speech_like`]
//! (noise bursts between digital silence): with it a wrong position never
//! correlates above ~0.7.

/// Tuning for [`align_with`]. The defaults suit 8 kHz telephone audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignConfig {
    /// Analysis block length.
    pub block_ms: u32,
    /// A heard block below this RMS level has no signal and is not located.
    pub signal_dbfs: f32,
    /// Lowest normalised correlation accepted as a match.
    pub min_correlation: f64,
    /// Where to look around the predicted position before searching all.
    pub search_back_ms: u32,
    pub search_ahead_ms: u32,
    /// A source sample at least this loud is speech (the generator's pauses
    /// are digital silence; its bursts are far above this).
    pub speech_threshold: i16,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            block_ms: 10,
            signal_dbfs: -50.0,
            min_correlation: 0.8,
            search_back_ms: 1_500,
            search_ahead_ms: 5_000,
            speech_threshold: 64,
        }
    }
}

/// A stretch of the heard audio that is the source at a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignedSegment {
    pub heard_start: usize,
    pub heard_end: usize,
    pub source_start: usize,
    /// Heard level relative to the source (1.0 = same level).
    pub gain: f64,
}

impl AlignedSegment {
    pub fn len(&self) -> usize {
        self.heard_end - self.heard_start
    }

    pub fn is_empty(&self) -> bool {
        self.heard_end == self.heard_start
    }

    pub fn source_end(&self) -> usize {
        self.source_start + self.len()
    }
}

/// A span of the source, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceSpan {
    pub start_ms: f64,
    pub len_ms: f64,
}

/// One point of the lag series: a heard 10 ms block and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagPoint {
    /// Position in the heard stream.
    pub heard_ms: f64,
    /// Position in the source.
    pub source_ms: f64,
    /// Heard wall time minus source wall time: how late this was heard.
    pub lag_ms: f64,
}

/// What the listener heard, measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alignment {
    pub sample_rate: u32,
    /// Heard audio that is the source, in heard order.
    pub segments: Vec<AlignedSegment>,
    /// Heard position of the first located signal (answer to first audio,
    /// when the heard recording starts at answer).
    pub first_heard_ms: Option<f64>,
    /// Source position of the first heard speech, from the start of the
    /// source's first speech: 0 = the message started intact.
    pub first_source_ms: Option<f64>,
    /// Source position (from its start) just past the last heard speech.
    pub last_source_ms: Option<f64>,
    /// Source speech between the first and last heard that was never heard
    /// (pauses do not count: compressing them is not a gap).
    pub gap_ms_total: f64,
    pub gaps: Vec<SourceSpan>,
    /// Source speech heard more than once, counted once per extra time.
    pub repeat_ms_total: f64,
    pub repeats: Vec<SourceSpan>,
    /// Distinct source speech heard.
    pub heard_speech_ms: f64,
    /// All speech in the source.
    pub source_speech_ms: f64,
    /// Heard signal that matched no part of the source (prompts, tones,
    /// concealment noise, distortion).
    pub unmatched_signal_ms: f64,
    /// Every 10 ms of heard speech and its source position, with the lag
    /// for timelines that start together ([`Self::lag_series`] shifts it).
    /// Pauses are left out: silence matches silence anywhere.
    pub speech_points: Vec<LagPoint>,
}

impl Alignment {
    /// The lag series, one point per heard 10 ms of speech, given where the
    /// two timelines start: `heard_start_minus_source_start_ms` is the wall
    /// time of heard sample 0 minus that of source sample 0. (The heard
    /// samples must be contiguous in wall time: continuous RTP.)
    pub fn lag_series(&self, heard_start_minus_source_start_ms: f64) -> Vec<LagPoint> {
        self.speech_points
            .iter()
            .map(|point| LagPoint {
                lag_ms: point.lag_ms + heard_start_minus_source_start_ms,
                ..*point
            })
            .collect()
    }
}

/// The `p`-th percentile (0-100, nearest rank) of `values`; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Spans of source speech: runs of samples at or above the threshold,
/// with gaps under 20 ms bridged (noise crosses zero).
pub fn speech_spans(source: &[i16], sample_rate: u32, threshold: i16) -> Vec<(usize, usize)> {
    let bridge = (sample_rate / 50).max(1) as usize;
    let threshold = i32::from(threshold);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (index, &sample) in source.iter().enumerate() {
        if i32::from(sample).abs() < threshold {
            continue;
        }
        match spans.last_mut() {
            Some(last) if index - last.1 < bridge => last.1 = index + 1,
            _ => spans.push((index, index + 1)),
        }
    }
    // A word fades in and out: its quiet edges, up to the surrounding
    // digital silence (at most `bridge` away), are part of it.
    let mut previous_end = 0;
    for span in &mut spans {
        let floor = span.0.saturating_sub(bridge).max(previous_end);
        while span.0 > floor && source[span.0 - 1] != 0 {
            span.0 -= 1;
        }
        let ceiling = (span.1 + bridge).min(source.len());
        while span.1 < ceiling && source[span.1] != 0 {
            span.1 += 1;
        }
        previous_end = span.1;
    }
    spans
}

/// Align with the default configuration.
pub fn align(source: &[i16], heard: &[i16], sample_rate: u32) -> Alignment {
    align_with(source, heard, sample_rate, &AlignConfig::default())
}

struct Source {
    samples: Vec<f32>,
    /// prefix[i] = energy of samples[..i].
    prefix: Vec<f64>,
}

impl Source {
    fn new(samples: &[i16]) -> Self {
        let samples: Vec<f32> = samples.iter().map(|&s| f32::from(s)).collect();
        let mut prefix = Vec::with_capacity(samples.len() + 1);
        let mut sum = 0.0f64;
        prefix.push(0.0);
        for &s in &samples {
            sum += f64::from(s) * f64::from(s);
            prefix.push(sum);
        }
        Source { samples, prefix }
    }

    fn energy(&self, start: usize, len: usize) -> f64 {
        self.prefix[start + len] - self.prefix[start]
    }

    /// Normalised correlation of `block` with the source at `start`.
    fn correlation(&self, block: &[f32], block_energy: f64, start: usize) -> f64 {
        let energy = self.energy(start, block.len());
        if energy <= 0.0 || block_energy <= 0.0 {
            return 0.0;
        }
        let window = &self.samples[start..start + block.len()];
        let dot: f32 = window.iter().zip(block).map(|(a, b)| a * b).sum();
        f64::from(dot) / (energy * block_energy).sqrt()
    }

    /// Best correlation for `block` starting anywhere in `low..=high`.
    fn search(
        &self,
        block: &[f32],
        block_energy: f64,
        low: usize,
        high: usize,
    ) -> Option<(usize, f64)> {
        let last_start = self.samples.len().checked_sub(block.len())?;
        let high = high.min(last_start);
        let mut best: Option<(usize, f64)> = None;
        for start in low..=high {
            // Silent source windows cannot match a block with signal.
            if self.energy(start, block.len()) <= 0.0 {
                continue;
            }
            let score = self.correlation(block, block_energy, start);
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((start, score));
            }
        }
        best
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Located {
    heard: usize,
    offset: i64,
    gain: f64,
}

/// A run of located blocks on one offset, and its refined extent.
#[derive(Debug, Clone, Copy)]
struct Run {
    offset: i64,
    first_block: usize,
    last_block: usize,
    first_gain: f64,
    last_gain: f64,
    start: usize,
    end: usize,
}

/// Align `heard` to `source` (both at `sample_rate`).
pub fn align_with(
    source: &[i16],
    heard: &[i16],
    sample_rate: u32,
    config: &AlignConfig,
) -> Alignment {
    let rate = sample_rate.max(1);
    let block = ((rate as usize * config.block_ms as usize) / 1000).max(8);
    let src = Source::new(source);
    let heard_f: Vec<f32> = heard.iter().map(|&s| f32::from(s)).collect();
    let located = locate_blocks(&src, &heard_f, block, rate, config);
    let runs = refine_runs(&src, &heard_f, &located, block);
    account(source, heard, &runs, block, rate, config)
}

/// Half-width (before the prediction) of the first search window; it
/// reaches twice as far ahead.
const NEAR_MS: usize = 300;

fn block_energy(block: &[f32]) -> f64 {
    block.iter().map(|&s| f64::from(s) * f64::from(s)).sum()
}

fn locate_blocks(
    src: &Source,
    heard: &[f32],
    block: usize,
    rate: u32,
    config: &AlignConfig,
) -> Vec<Located> {
    let threshold_energy =
        block as f64 * (32_768.0f64).powi(2) * 10f64.powf(f64::from(config.signal_dbfs) / 10.0);
    let back = (config.search_back_ms as usize * rate as usize) / 1000;
    let ahead = (config.search_ahead_ms as usize * rate as usize) / 1000;
    let mut located: Vec<Located> = Vec::new();
    // Signal blocks not located yet, since the last located one.
    let mut unlocated: Vec<usize> = Vec::new();
    let mut failures = 0u32;
    let gain_of = |chunk: &[f32], start: usize| -> f64 {
        let window = &src.samples[start..start + chunk.len()];
        let dot: f64 = window
            .iter()
            .zip(chunk)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        dot / src.energy(start, chunk.len()).max(1e-9)
    };
    if src.len() < block {
        return located;
    }
    for (index, chunk) in heard.chunks_exact(block).enumerate() {
        let heard_pos = index * block;
        let energy = block_energy(chunk);
        if energy < threshold_energy {
            continue;
        }
        let mut found: Option<(usize, f64)> = None;
        if let Some(previous) = located.last() {
            let predicted = heard_pos as i64 + previous.offset;
            if predicted >= 0 && (predicted as usize) + block <= src.len() {
                let score = src.correlation(chunk, energy, predicted as usize);
                if score >= config.min_correlation.max(0.9) {
                    found = Some((predicted as usize, score));
                }
            }
            // Near first (a dropped frame, a hop, a short repeat); the
            // wide window only once a block has failed (a compressed pause).
            let centre = predicted.max(0) as usize;
            let near = (rate as usize * NEAR_MS) / 1000;
            let windows = [(near, 2 * near, true), (back, ahead, failures >= 1)];
            for (behind, beyond, wanted) in windows {
                if found.is_some() || !wanted {
                    continue;
                }
                found = src
                    .search(
                        chunk,
                        energy,
                        centre.saturating_sub(behind),
                        centre.saturating_add(beyond),
                    )
                    .filter(|&(_, score)| score >= config.min_correlation);
            }
        }
        // Lost (nothing located yet, or two failures in a row): search
        // everything, backing off while a long stretch matches nothing;
        // blocks skipped meanwhile are recovered once a match is found.
        let lost = located.is_empty() || failures >= 2;
        if found.is_none()
            && lost
            && (failures < 2 || failures.is_power_of_two() || failures.is_multiple_of(25))
        {
            found = src
                .search(chunk, energy, 0, src.len())
                .filter(|&(_, score)| score >= config.min_correlation);
        }
        match found {
            Some((start, _)) => {
                let offset = start as i64 - heard_pos as i64;
                // Blocks skipped while lost may belong to this run: try them.
                let mut recovered = Vec::new();
                for &skipped in unlocated.iter().rev() {
                    let predicted = skipped as i64 + offset;
                    if predicted < 0 || predicted as usize + block > src.len() {
                        break;
                    }
                    let skipped_chunk = &heard[skipped..skipped + block];
                    let score = src.correlation(
                        skipped_chunk,
                        block_energy(skipped_chunk),
                        predicted as usize,
                    );
                    if score < config.min_correlation {
                        break;
                    }
                    recovered.push(Located {
                        heard: skipped,
                        offset,
                        gain: gain_of(skipped_chunk, predicted as usize),
                    });
                }
                recovered.reverse();
                located.extend(recovered);
                located.push(Located {
                    heard: heard_pos,
                    offset,
                    gain: gain_of(chunk, start),
                });
                unlocated.clear();
                failures = 0;
            }
            None => {
                unlocated.push(heard_pos);
                failures += 1;
            }
        }
    }
    located
}

/// Does heard sample `h` equal the source at `offset`, scaled by `gain`,
/// within mu-law error and a little slack for gain drift?
fn sample_matches(src: &Source, heard: &[f32], h: usize, offset: i64, gain: f64) -> bool {
    let s = h as i64 + offset;
    if s < 0 || s as usize >= src.len() {
        return false;
    }
    let expected = f64::from(src.samples[s as usize]) * gain;
    let actual = f64::from(heard[h]);
    (actual - expected).abs() <= 0.25 * expected.abs() + 24.0
}

/// The median gain of up to five located blocks: one block that straddles
/// a splice must not set the level for the whole run.
fn median_gain(blocks: &[Located]) -> f64 {
    let mut gains: Vec<f64> = blocks.iter().map(|b| b.gain).collect();
    gains.sort_by(f64::total_cmp);
    gains.get(gains.len() / 2).copied().unwrap_or(1.0)
}

fn refine_runs(src: &Source, heard: &[f32], located: &[Located], block: usize) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut first_index = 0;
    for (index, item) in located.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if run.offset == item.offset => run.last_block = item.heard,
            _ => {
                first_index = index;
                runs.push(Run {
                    offset: item.offset,
                    first_block: item.heard,
                    last_block: item.heard,
                    first_gain: 1.0,
                    last_gain: 1.0,
                    start: item.heard,
                    end: item.heard + block,
                });
            }
        }
        // Gains near each end of the run, from its own blocks.
        if let Some(run) = runs.last_mut() {
            let head_end = (first_index + 5).min(index + 1);
            run.first_gain = median_gain(&located[first_index..head_end]);
            let tail_start = index.saturating_sub(4).max(first_index);
            run.last_gain = median_gain(&located[tail_start..=index]);
        }
    }
    // Stop after this many mismatches in a row: one is mu-law luck.
    const MISSES: usize = 3;
    let count = runs.len();
    for index in 0..count {
        // A neighbour's edge block may hold some of this run's samples.
        let left_bound = if index == 0 {
            0
        } else {
            runs[index - 1].last_block
        };
        let right_bound = runs
            .get(index + 1)
            .map_or(heard.len(), |next| next.first_block + block);
        let run = runs[index];
        // Forward from the start of the last block (its head is this run's
        // even if its tail belongs to the next).
        let mut last_match = None;
        let mut misses = 0;
        let mut h = run.last_block;
        while h < right_bound && misses < MISSES {
            if sample_matches(src, heard, h, run.offset, run.last_gain) {
                last_match = Some(h);
                misses = 0;
            } else {
                misses += 1;
            }
            h += 1;
        }
        let end = last_match.map_or(run.last_block, |m| m + 1);
        // Backward from the end of the first block.
        let mut first_match = None;
        misses = 0;
        let mut h = run.first_block + block;
        while h > left_bound && misses < MISSES {
            h -= 1;
            if sample_matches(src, heard, h, run.offset, run.first_gain) {
                first_match = Some(h);
                misses = 0;
            } else {
                misses += 1;
            }
        }
        let start = first_match.unwrap_or(run.first_block + block);
        runs[index].start = start;
        runs[index].end = end.max(start);
    }
    // Where two runs both claim samples (silence matches silence), split.
    for index in 1..runs.len() {
        let (previous_end, start) = (runs[index - 1].end, runs[index].start);
        if previous_end > start {
            let middle = start + (previous_end - start) / 2;
            runs[index - 1].end = middle.max(runs[index - 1].start);
            runs[index].start = middle.min(runs[index].end);
        }
    }
    runs.retain(|run| run.end > run.start);
    runs
}

fn account(
    source: &[i16],
    heard: &[i16],
    runs: &[Run],
    block: usize,
    rate: u32,
    config: &AlignConfig,
) -> Alignment {
    let ms = |samples: usize| samples as f64 * 1000.0 / f64::from(rate);
    let spans = speech_spans(source, rate, config.speech_threshold);
    let mut is_speech = vec![false; source.len()];
    for &(start, end) in &spans {
        is_speech[start..end].fill(true);
    }
    let mut heard_count = vec![0u16; source.len()];
    let mut segments = Vec::new();
    // (heard, source) of the first heard speech sample.
    let mut first_heard: Option<(usize, usize)> = None;
    let mut speech_points = Vec::new();
    for run in runs {
        // Runs only hold verified positions; clamp anyway, a panic is a bug.
        let Ok(source_start) = usize::try_from(run.start as i64 + run.offset) else {
            continue;
        };
        let len = (run.end - run.start).min(source.len().saturating_sub(source_start));
        let segment = AlignedSegment {
            heard_start: run.start,
            heard_end: run.start + len,
            source_start,
            gain: (run.first_gain + run.last_gain) / 2.0,
        };
        for (h, s) in (segment.heard_start..segment.heard_end).zip(source_start..) {
            heard_count[s] = heard_count[s].saturating_add(1);
            if !is_speech[s] {
                continue;
            }
            first_heard.get_or_insert((h, s));
            if h % block == 0 {
                speech_points.push(LagPoint {
                    heard_ms: ms(h),
                    source_ms: ms(s),
                    lag_ms: ms(h) - ms(s),
                });
            }
        }
        segments.push(segment);
    }
    let first_speech = spans.first().map(|span| span.0);
    let heard_speech: Vec<usize> = (0..source.len())
        .filter(|&s| is_speech[s] && heard_count[s] > 0)
        .collect();
    let (low, high) = match (heard_speech.first(), heard_speech.last()) {
        (Some(&low), Some(&high)) => (low, high + 1),
        _ => (0, 0),
    };
    // Walk the source speech between the first and last heard; pauses are
    // transparent, so a span runs across the pauses inside it but counts
    // only speech. Each open span is (start, speech samples).
    let mut gaps = Vec::new();
    let mut repeats = Vec::new();
    let mut gap_total = 0usize;
    let mut repeat_total = 0usize;
    let mut open_gap: Option<(usize, usize)> = None;
    let mut open_repeat: Option<(usize, usize)> = None;
    let span = |(start, weight): (usize, usize)| SourceSpan {
        start_ms: ms(start),
        len_ms: ms(weight),
    };
    for s in (low..high).filter(|&s| is_speech[s]) {
        if heard_count[s] == 0 {
            gap_total += 1;
            open_gap.get_or_insert((s, 0)).1 += 1;
        } else if let Some(gap) = open_gap.take() {
            gaps.push(span(gap));
        }
        let extra = usize::from(heard_count[s].saturating_sub(1));
        if extra > 0 {
            repeat_total += extra;
            open_repeat.get_or_insert((s, 0)).1 += extra;
        } else if let Some(repeat) = open_repeat.take() {
            repeats.push(span(repeat));
        }
    }
    gaps.extend(open_gap.map(span));
    repeats.extend(open_repeat.map(span));
    // Heard signal outside every segment.
    let mut unmatched = 0usize;
    let threshold = i32::from(config.speech_threshold);
    let mut covered = vec![false; heard.len()];
    for segment in &segments {
        covered[segment.heard_start..segment.heard_end].fill(true);
    }
    for chunk_start in (0..heard.len()).step_by(block) {
        let end = (chunk_start + block).min(heard.len());
        let loud = heard[chunk_start..end]
            .iter()
            .any(|&s| i32::from(s).abs() >= threshold);
        if loud {
            unmatched += (chunk_start..end)
                .filter(|&h| !covered[h] && i32::from(heard[h]).abs() >= threshold)
                .count();
        }
    }
    Alignment {
        sample_rate: rate,
        first_heard_ms: first_heard.map(|(h, _)| ms(h)),
        first_source_ms: match (first_heard, first_speech) {
            (Some((_, first)), Some(speech)) => Some(ms(first.saturating_sub(speech))),
            _ => None,
        },
        last_source_ms: (high > low).then(|| ms(high)),
        gap_ms_total: ms(gap_total),
        gaps,
        repeat_ms_total: ms(repeat_total),
        repeats,
        heard_speech_ms: ms(heard_speech.len()),
        source_speech_ms: ms(spans.iter().map(|(a, b)| b - a).sum()),
        unmatched_signal_ms: ms(unmatched),
        segments,
        speech_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::signal::{SignalConfig, speech_like};

    fn source() -> Vec<i16> {
        speech_like(&SignalConfig {
            duration_ms: 4_000,
            lead_in_ms: 500,
            ..SignalConfig::default()
        })
        .samples
    }

    #[test]
    fn identical_audio_aligns_exactly() {
        let source = source();
        let a = align(&source, &source, 8_000);
        assert_eq!(a.segments.len(), 1, "{:?}", a.segments);
        assert_eq!(a.gap_ms_total, 0.0);
        assert_eq!(a.repeat_ms_total, 0.0);
        assert_eq!(a.first_source_ms, Some(0.0));
        assert_eq!(a.heard_speech_ms, a.source_speech_ms);
        assert_eq!(a.unmatched_signal_ms, 0.0);
    }

    #[test]
    fn silence_and_noise_align_to_nothing() {
        let source = source();
        let a = align(&source, &vec![0; 8_000], 8_000);
        assert!(a.segments.is_empty());
        assert_eq!(a.first_source_ms, None);
        let noise: Vec<i16> = (0..8_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 20) as i16 - 2_048)
            .collect();
        let a = align(&source, &noise, 8_000);
        assert!(a.segments.is_empty(), "{:?}", a.segments);
        assert!(a.unmatched_signal_ms > 900.0);
        assert_eq!(align(&[], &noise, 8_000).segments.len(), 0);
        assert_eq!(align(&source, &[], 8_000).segments.len(), 0);
    }

    #[test]
    fn percentiles() {
        let values = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&values, 50.0), Some(3.0));
        assert_eq!(percentile(&values, 95.0), Some(5.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn lag_series_follows_offsets() {
        let source = source();
        let mut heard = vec![0i16; 2_400]; // answered 300 ms in
        heard.extend_from_slice(&source);
        let a = align(&source, &heard, 8_000);
        let lags = a.lag_series(0.0);
        assert!(!lags.is_empty());
        assert!(
            lags.iter().all(|p| (p.lag_ms - 300.0).abs() < 0.2),
            "{:?}",
            &lags[..3]
        );
        assert!(
            (a.first_heard_ms.unwrap() - 300.0 - 500.0).abs() < 0.2,
            "{:?}",
            a.first_heard_ms
        );
    }
}
