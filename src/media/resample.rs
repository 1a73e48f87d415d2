//! Decimation to 8 kHz (the telephone rate the catch-up and the listener's
//! stream run at) from any whole multiple of it: 16, 24, 32, 48, 96, 192 kHz.
//!
//! Owns: the anti-alias low-pass (a Kaiser-windowed sinc, linear phase,
//! 0-3.4 kHz passband, >= 60 dB down from 4 kHz) and exact sample accounting:
//! output sample `n` is centred on input sample `n * factor`, so positions
//! map both ways with no drift, however the input is chunked.
//! Must not know: files, clocks, where the samples go.

use super::error::MediaError;

/// The rate everything downstream works at.
pub const TARGET_RATE: u32 = 8_000;

/// Highest input rate accepted (Asterisk's `sln192`).
const MAX_INPUT_RATE: u32 = 192_000;
const PASSBAND_EDGE_HZ: f64 = 3_400.0;
const STOPBAND_EDGE_HZ: f64 = 4_000.0;
const STOPBAND_ATTENUATION_DB: f64 = 60.0;
/// Drop consumed input from the front once this much has piled up, so
/// memory stays bounded without shifting the buffer on every push.
const COMPACT_AFTER: usize = 16 * 1024;

/// A streaming integer-ratio decimator to [`TARGET_RATE`].
#[derive(Debug, Clone)]
pub struct Decimator {
    factor: usize,
    taps: Vec<f32>,
    /// Half the filter length: the filter looks this far ahead and behind.
    half: usize,
    /// Input samples from absolute index `buffer_start` on; the `half`
    /// samples before input 0 are implicit zeros, stored at the front.
    buffer: Vec<f32>,
    buffer_start: i64,
    input_seen: u64,
    output_produced: u64,
    finished: bool,
}

/// Zeroth-order modified Bessel function of the first kind (Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half_x = x / 2.0;
    for k in 1..64 {
        let factor = half_x / f64::from(k);
        term *= factor * factor;
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

/// Low-pass taps for `input_rate`: odd length, unity gain at DC.
fn design_low_pass(input_rate: u32) -> Vec<f32> {
    let rate = f64::from(input_rate);
    let cutoff = (PASSBAND_EDGE_HZ + STOPBAND_EDGE_HZ) / 2.0 / rate; // cycles/sample
    let transition = 2.0 * std::f64::consts::PI * (STOPBAND_EDGE_HZ - PASSBAND_EDGE_HZ) / rate;
    let attenuation = STOPBAND_ATTENUATION_DB;
    let beta = 0.1102 * (attenuation - 8.7);
    // Kaiser's length estimate, made odd so the centre tap is a sample.
    let estimate = ((attenuation - 8.0) / (2.285 * transition)).ceil() as usize + 1;
    let length = estimate | 1;
    let middle = (length / 2) as f64;
    let denominator = bessel_i0(beta);
    let mut taps: Vec<f64> = (0..length)
        .map(|i| {
            let t = i as f64 - middle;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let ratio = t / middle;
            let window = bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / denominator;
            sinc * window
        })
        .collect();
    let gain: f64 = taps.iter().sum();
    for tap in &mut taps {
        *tap /= gain;
    }
    taps.into_iter().map(|t| t as f32).collect()
}

fn to_i16(value: f32) -> i16 {
    // `as` saturates; round first so a clean signal is not biased down.
    value.round() as i16
}

impl Decimator {
    /// A decimator from `input_rate` to 8 kHz. The rate must be a whole
    /// multiple of 8 kHz, at most 192 kHz (8 kHz itself passes through).
    pub fn new(input_rate: u32) -> Result<Self, MediaError> {
        if input_rate == 0 || input_rate > MAX_INPUT_RATE || !input_rate.is_multiple_of(TARGET_RATE)
        {
            return Err(MediaError::UnsupportedSampleRate {
                sample_rate: input_rate,
                what: "decimation needs a whole multiple of 8 kHz up to 192 kHz; record as sln, sln16, sln48, sln96 or sln192",
            });
        }
        let factor = (input_rate / TARGET_RATE) as usize;
        let taps = if factor == 1 {
            vec![1.0]
        } else {
            design_low_pass(input_rate)
        };
        let half = taps.len() / 2;
        Ok(Decimator {
            factor,
            half,
            buffer: vec![0.0; half],
            buffer_start: -(half as i64),
            taps,
            input_seen: 0,
            output_produced: 0,
            finished: false,
        })
    }

    /// Input samples per output sample.
    pub fn factor(&self) -> u32 {
        self.factor as u32
    }

    /// Filter length in taps (the look-ahead is half of it).
    pub fn filter_len(&self) -> usize {
        self.taps.len()
    }

    /// Input samples pushed so far.
    pub fn input_seen(&self) -> u64 {
        self.input_seen
    }

    /// Output samples produced so far.
    pub fn output_produced(&self) -> u64 {
        self.output_produced
    }

    /// The input position output sample `output_position` is centred on.
    pub fn input_position(&self, output_position: u64) -> u64 {
        output_position.saturating_mul(self.factor as u64)
    }

    /// The output sample centred at or just before `input_position`.
    pub fn output_position(&self, input_position: u64) -> u64 {
        input_position / self.factor as u64
    }

    /// Feed input in order; append every output sample it completes to `out`.
    /// Output lags input by half the filter (at most 0.36 ms at 8k out).
    pub fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.finished {
            return;
        }
        self.buffer.extend(input.iter().map(|&s| f32::from(s)));
        self.input_seen += input.len() as u64;
        self.produce(out, u64::MAX);
    }

    /// End of input: pad with silence and emit the remaining outputs, so the
    /// total is `ceil(input / factor)`. Further pushes are ignored.
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let total_outputs = self.input_seen.div_ceil(self.factor as u64);
        let last_needed = (total_outputs * self.factor as u64) as i64 + self.half as i64;
        let have_until = self.buffer_start + self.buffer.len() as i64;
        if last_needed > have_until {
            self.buffer
                .resize(self.buffer.len() + (last_needed - have_until) as usize, 0.0);
        }
        self.produce(out, total_outputs);
    }

    /// Emit outputs, at most up to `max_outputs` in total, while their
    /// whole window is in the buffer.
    fn produce(&mut self, out: &mut Vec<i16>, max_outputs: u64) {
        let have_until = self.buffer_start + self.buffer.len() as i64;
        while self.output_produced < max_outputs {
            let centre = (self.output_produced * self.factor as u64) as i64;
            if centre + self.half as i64 >= have_until {
                break;
            }
            let start = (centre - self.half as i64 - self.buffer_start) as usize;
            let window = &self.buffer[start..start + self.taps.len()];
            // h is symmetric, so the convolution is a plain dot product.
            let value: f32 = window.iter().zip(&self.taps).map(|(x, h)| x * h).sum();
            out.push(to_i16(value));
            self.output_produced += 1;
        }
        self.compact();
    }

    fn compact(&mut self) {
        let next_start = (self.output_produced * self.factor as u64) as i64 - self.half as i64;
        let droppable = (next_start - self.buffer_start).max(0) as usize;
        if droppable >= COMPACT_AFTER {
            self.buffer.drain(..droppable);
            self.buffer_start += droppable as i64;
        }
    }
}

/// Decimate a whole recording at `input_rate` to 8 kHz.
pub fn decimate_to_8k(input: &[i16], input_rate: u32) -> Result<Vec<i16>, MediaError> {
    let mut decimator = Decimator::new(input_rate)?;
    let mut out = Vec::with_capacity(input.len() / decimator.factor + 1);
    decimator.push(input, &mut out);
    decimator.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, amplitude: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
            })
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    const RATES: [u32; 6] = [16_000, 24_000, 32_000, 48_000, 96_000, 192_000];

    #[test]
    fn rejects_rates_that_are_not_multiples_of_8k() {
        for rate in [0, 11_025, 44_100, 22_050, 200_000, 384_000] {
            assert!(Decimator::new(rate).is_err(), "{rate}");
        }
    }

    #[test]
    fn output_count_is_exact() {
        for rate in RATES {
            let factor = (rate / TARGET_RATE) as usize;
            for n in [0, 1, factor - 1, factor, factor + 1, 10 * factor + 3] {
                let out = decimate_to_8k(&vec![100; n], rate).unwrap();
                assert_eq!(out.len(), n.div_ceil(factor), "rate {rate} n {n}");
            }
        }
    }

    #[test]
    fn eight_k_passes_through_unchanged() {
        let input: Vec<i16> = (0..1000).map(|i| (i * 37 % 2000) as i16 - 1000).collect();
        assert_eq!(decimate_to_8k(&input, 8_000).unwrap(), input);
    }

    #[test]
    fn passband_kept_and_alias_band_removed() {
        for rate in RATES {
            let n = rate as usize / 2; // 0.5 s
            for (hz, keep) in [
                (300.0, true),
                (1_000.0, true),
                (3_000.0, true),
                (4_500.0, false),
                (7_000.0, false),
            ] {
                if hz * 2.0 >= f64::from(rate) {
                    continue;
                }
                let out = decimate_to_8k(&tone(rate, hz, 10_000.0, n), rate).unwrap();
                let level = rms(&out[200..out.len() - 200]) / (10_000.0 / 2f64.sqrt());
                let db = 20.0 * level.max(1e-9).log10();
                if keep {
                    assert!(db.abs() < 0.5, "rate {rate} {hz} Hz: {db:.2} dB");
                } else {
                    assert!(db < -50.0, "rate {rate} {hz} Hz leaks: {db:.2} dB");
                }
            }
        }
    }

    #[test]
    fn an_impulse_lands_at_its_mapped_position() {
        for rate in RATES {
            let factor = (rate / TARGET_RATE) as usize;
            let mut input = vec![0i16; 200 * factor];
            let at = 77 * factor;
            input[at] = 30_000;
            let out = decimate_to_8k(&input, rate).unwrap();
            let peak = (0..out.len()).max_by_key(|&i| out[i]).unwrap();
            let decimator = Decimator::new(rate).unwrap();
            assert_eq!(
                peak as u64,
                decimator.output_position(at as u64),
                "rate {rate}"
            );
            assert_eq!(decimator.input_position(peak as u64), at as u64);
        }
    }

    #[test]
    fn streaming_in_any_chunks_equals_one_shot() {
        for rate in [16_000, 48_000, 192_000] {
            let input = tone(rate, 700.0, 8_000.0, rate as usize / 4);
            let whole = decimate_to_8k(&input, rate).unwrap();
            let mut decimator = Decimator::new(rate).unwrap();
            let mut out = Vec::new();
            let mut position = 0;
            let mut chunk = 1;
            while position < input.len() {
                let end = (position + chunk).min(input.len());
                decimator.push(&input[position..end], &mut out);
                // Output never runs ahead of what the input supports.
                assert!(
                    decimator.output_produced()
                        <= decimator.input_seen().div_ceil(decimator.factor() as u64)
                );
                position = end;
                chunk = chunk * 3 % 4099 + 1;
            }
            decimator.finish(&mut out);
            decimator.push(&[1, 2, 3], &mut out);
            assert_eq!(out, whole, "rate {rate}");
        }
    }

    #[test]
    fn full_scale_input_saturates_instead_of_wrapping() {
        let square: Vec<i16> = (0..48_000)
            .map(|i| {
                if (i / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = decimate_to_8k(&square, 48_000).unwrap();
        assert_eq!(out.len(), 8_000);
    }
}
