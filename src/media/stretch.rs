//! WSOLA (waveform-similarity overlap-add) time compression with known
//! source positions: speech played faster at the same pitch, for catch-up.
//!
//! Owns: the hop geometry, the similarity search and the cross-fade. Each
//! hop of output fades from the natural continuation of what was played
//! (`continuation`) into the recording segment near the ideal position
//! whose waveform best matches that continuation, so joins are coherent and
//! pitch is kept. Every hop says exactly which recording span it consumed,
//! which is what lets catch-up keep an exact position map. Must not know:
//! speech detection, how far behind anyone is.
//!
//! The hop is a cross-fade of two segments, so a run that starts right
//! after copied audio and ends by copying on from its last continuation is
//! seamless at both ends, and at tempo 1.0 it reproduces its input exactly.

/// Hop length in milliseconds (the cross-fade; half a classic Hann frame).
pub const HOP_MS: u32 = 15;
/// Similarity-search half-range in milliseconds (covers an 80 Hz pitch).
pub const SEARCH_MS: u32 = 12;
/// Fastest tempo catch-up may ask for.
pub const MAX_TEMPO: f32 = 2.0;

/// One hop's choice: output `hop` samples fading from recording
/// `continuation..` into `segment..`; afterwards the continuation is
/// `segment + hop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub continuation: u64,
    pub segment: u64,
}

impl Hop {
    /// Recording samples this hop moves past: `segment + hop - continuation`.
    pub fn consumed(&self, hop_len: usize) -> u64 {
        self.segment + hop_len as u64 - self.continuation
    }
}

/// WSOLA geometry for one sample rate.
#[derive(Debug, Clone)]
pub struct Wsola {
    hop: usize,
    search: usize,
    /// Fade-in weights; the fade-out is `1 - rise`. Raised cosine, so the
    /// pair sums to exactly one.
    rise: Vec<f32>,
}

impl Wsola {
    pub fn new(sample_rate: u32) -> Self {
        let hop = ((sample_rate as usize * HOP_MS as usize) / 1000).max(2);
        let search = ((sample_rate as usize * SEARCH_MS as usize) / 1000).max(1);
        let rise = (0..hop)
            .map(|i| (0.5 - 0.5 * (std::f64::consts::PI * i as f64 / hop as f64).cos()) as f32)
            .collect();
        Wsola { hop, search, rise }
    }

    pub fn hop_len(&self) -> usize {
        self.hop
    }

    pub fn search_len(&self) -> usize {
        self.search
    }

    /// Recording samples needed past `ideal` before a hop there can be
    /// chosen: the search's far end plus one hop.
    pub fn lookahead(&self) -> usize {
        self.search + self.hop
    }

    /// Choose the segment for the next hop. `buffer` holds recording
    /// samples from `buffer_start`; it must reach `ideal + lookahead()`
    /// (else `None`: wait for more input). The segment never starts before
    /// `continuation`, so nothing is heard twice.
    pub fn choose(
        &self,
        buffer: &[i16],
        buffer_start: u64,
        continuation: u64,
        ideal: u64,
    ) -> Option<Hop> {
        let end = buffer_start + buffer.len() as u64;
        let hop = self.hop as u64;
        if continuation < buffer_start || continuation + hop > end {
            return None;
        }
        let highest = ideal.max(continuation) + self.search as u64;
        if highest + hop > end {
            return None;
        }
        let lowest = ideal.saturating_sub(self.search as u64).max(continuation);
        let slice = |at: u64| {
            let from = (at - buffer_start) as usize;
            &buffer[from..from + self.hop]
        };
        let target = slice(continuation);
        let target_energy: f64 = target.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let mut best = Hop {
            continuation,
            segment: ideal.clamp(lowest, highest),
        };
        if target_energy <= 0.0 {
            return Some(best);
        }
        let mut best_score = f64::NEG_INFINITY;
        for candidate in lowest..=highest {
            let other = slice(candidate);
            let (mut dot, mut energy) = (0.0f64, 0.0f64);
            for (&a, &b) in target.iter().zip(other) {
                dot += f64::from(a) * f64::from(b);
                energy += f64::from(b) * f64::from(b);
            }
            let score = dot / (energy.sqrt() * target_energy.sqrt() + 1e-9);
            // Ties go to the candidate nearest the ideal position.
            let closer = candidate.abs_diff(ideal) < best.segment.abs_diff(ideal);
            if score > best_score + 1e-9 || ((score - best_score).abs() <= 1e-9 && closer) {
                best_score = score;
                best.segment = candidate;
            }
        }
        Some(best)
    }

    /// Append the hop's cross-fade to `out`. `buffer` must hold both spans
    /// (it does whenever [`Self::choose`] returned this hop for it).
    pub fn render(&self, buffer: &[i16], buffer_start: u64, hop: Hop, out: &mut Vec<i16>) {
        let from = (hop.continuation - buffer_start) as usize;
        let to = (hop.segment - buffer_start) as usize;
        let fading_out = &buffer[from..from + self.hop];
        let fading_in = &buffer[to..to + self.hop];
        out.extend(
            fading_out
                .iter()
                .zip(fading_in)
                .zip(&self.rise)
                .map(|((&a, &b), &rise)| {
                    let value = f32::from(a) * (1.0 - rise) + f32::from(b) * rise;
                    value.round() as i16
                }),
        );
    }
}

/// Compress a whole buffer at `tempo` (tests and tools): returns the output
/// and, per hop, the recording span it covered. The tail that does not fill
/// a hop is copied, so nothing at the end is lost.
pub fn compress_whole(samples: &[i16], sample_rate: u32, tempo: f32) -> (Vec<i16>, Vec<Hop>) {
    let wsola = Wsola::new(sample_rate);
    let tempo = f64::from(tempo.clamp(1.0, MAX_TEMPO));
    let mut out = Vec::with_capacity(samples.len());
    let mut hops = Vec::new();
    let mut continuation = 0u64;
    let mut ideal = 0f64;
    while let Some(hop) = wsola.choose(samples, 0, continuation, ideal.round() as u64) {
        wsola.render(samples, 0, hop, &mut out);
        hops.push(hop);
        continuation = hop.segment + wsola.hop_len() as u64;
        ideal += wsola.hop_len() as f64 * tempo;
    }
    out.extend_from_slice(&samples[continuation as usize..]);
    (out, hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (8_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8_000.0).sin()) as i16
            })
            .collect()
    }

    fn zero_crossings(samples: &[i16]) -> usize {
        samples
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count()
    }

    #[test]
    fn tempo_one_reproduces_the_input() {
        let input: Vec<i16> = (0..4000)
            .map(|i| ((i * 7919) % 20_000) as i16 - 10_000)
            .collect();
        let (out, hops) = compress_whole(&input, 8_000, 1.0);
        assert_eq!(out, input);
        assert!(hops.iter().all(|h| h.segment == h.continuation));
    }

    #[test]
    fn faster_keeps_pitch_and_shortens() {
        let input = tone(440.0, 16_000); // 2 s
        for tempo in [1.25f32, 1.5, 2.0] {
            let (out, _) = compress_whole(&input, 8_000, tempo);
            let expected = input.len() as f64 / f64::from(tempo);
            assert!(
                (out.len() as f64 - expected).abs() < 400.0,
                "tempo {tempo}: {}",
                out.len()
            );
            // Same pitch: zero crossings per second unchanged within 3 %.
            let rate_in = zero_crossings(&input) as f64 / input.len() as f64;
            let rate_out = zero_crossings(&out) as f64 / out.len() as f64;
            assert!(
                (rate_out / rate_in - 1.0).abs() < 0.03,
                "tempo {tempo}: {rate_in} vs {rate_out}"
            );
        }
    }

    #[test]
    fn hops_move_forward_and_account_for_everything() {
        let input = tone(180.0, 8_000);
        let (out, hops) = compress_whole(&input, 8_000, 1.5);
        let wsola = Wsola::new(8_000);
        let mut position = 0;
        for hop in &hops {
            assert_eq!(hop.continuation, position);
            assert!(hop.segment >= hop.continuation);
            position += hop.consumed(wsola.hop_len());
        }
        let tail = input.len() as u64 - position;
        assert_eq!(
            out.len() as u64,
            hops.len() as u64 * wsola.hop_len() as u64 + tail
        );
    }

    #[test]
    fn short_or_silent_input_is_copied() {
        let (out, hops) = compress_whole(&[1, 2, 3], 8_000, 2.0);
        assert_eq!(out, vec![1, 2, 3]);
        assert!(hops.is_empty());
        let (out, _) = compress_whole(&[0; 2000], 8_000, 2.0);
        assert!(out.len() < 1200 && out.iter().all(|&s| s == 0));
    }
}
