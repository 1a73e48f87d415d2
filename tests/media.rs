//! The media layer end to end: the measurement tools (`signal`, `analysis`)
//! held to ±5 ms under the impairments a real call adds, then used to check
//! catch-up's delivery; and malformed input never panicking anything.

use ivm::media::AudioFormat;
use ivm::media::analysis::{Alignment, align, percentile};
use ivm::media::catchup::{CatchUp, CatchUpConfig};
use ivm::media::format::decode_file_bytes;
use ivm::media::g711::{alaw_round_trip, ulaw_round_trip};
use ivm::media::signal::{SignalConfig, TestSignal, speech_like};
use ivm::media::silence::frame_level_dbfs;
use ivm::media::wav::read_wav;
use proptest::prelude::*;

const RATE: u32 = 8_000;
const TOLERANCE_MS: f64 = 5.0;

/// One signal for the property tests, made once.
fn shared_signal() -> &'static TestSignal {
    static SIGNAL: std::sync::OnceLock<TestSignal> = std::sync::OnceLock::new();
    SIGNAL.get_or_init(|| signal(3))
}

fn signal(seed: u64) -> TestSignal {
    speech_like(&SignalConfig {
        duration_ms: 12_000,
        lead_in_ms: 500,
        seed,
        ..SignalConfig::default()
    })
}

fn samples_ms(ms: usize) -> usize {
    ms * RATE as usize / 1000
}

fn gain_db(samples: &[i16], db: f64) -> Vec<i16> {
    let factor = 10f64.powf(db / 20.0);
    samples
        .iter()
        .map(|&s| (f64::from(s) * factor).round().clamp(-32_768.0, 32_767.0) as i16)
        .collect()
}

/// A deterministic "random" number in [low, high) per seed and salt.
fn pick(seed: u64, salt: u64, low: f64, high: f64) -> f64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    low + (high - low) * (x >> 11) as f64 / (1u64 << 53) as f64
}

fn near(actual: f64, expected: f64, what: &str, a: &Alignment) {
    assert!(
        (actual - expected).abs() <= TOLERANCE_MS,
        "{what}: {actual} ms, expected {expected} ms\n{a:#?}"
    );
}

/// `into_ms` (+ 37 samples) inside the first burst from `index` on that is
/// long enough to have 100 ms of it left after that.
fn inside_burst(signal: &TestSignal, index: usize, into_ms: usize) -> usize {
    let burst = signal.bursts[index..]
        .iter()
        .find(|burst| burst.len() > samples_ms(into_ms + 100))
        .expect("a long enough burst");
    burst.start + samples_ms(into_ms) + 37
}

fn report(name: &str, a: &Alignment) {
    eprintln!(
        "{name:<34} first_source {:>6.2?} gap {:>6.2} repeat {:>6.2} heard {:>8.2}/{:>8.2} unmatched {:>6.2}",
        a.first_source_ms,
        a.gap_ms_total,
        a.repeat_ms_total,
        a.heard_speech_ms,
        a.source_speech_ms,
        a.unmatched_signal_ms
    );
}

#[test]
fn intact_delayed_mu_law_at_any_level() {
    for seed in 1..=4 {
        let source = signal(seed);
        let delay = samples_ms(pick(seed, 1, 0.0, 3_000.0) as usize);
        let level = pick(seed, 2, -6.0, 6.0);
        let mut heard = vec![0i16; delay];
        heard.extend(ulaw_round_trip(&gain_db(&source.samples, level)));
        let a = align(&source.samples, &heard, RATE);
        report(&format!("intact seed {seed} {level:+.1} dB"), &a);
        near(a.first_source_ms.unwrap(), 0.0, "first source", &a);
        near(a.gap_ms_total, 0.0, "gap", &a);
        near(a.repeat_ms_total, 0.0, "repeat", &a);
        near(a.heard_speech_ms, a.source_speech_ms, "heard speech", &a);
        assert_eq!(a.segments.len(), 1, "{:?}", a.segments);
        assert_eq!(
            a.segments[0].source_start + delay,
            a.segments[0].heard_start
        );
        assert!(
            (a.segments[0].gain.log10() * 20.0 - level).abs() < 0.3,
            "gain {}",
            a.segments[0].gain
        );
        let lags: Vec<f64> = a.lag_series(0.0).iter().map(|p| p.lag_ms).collect();
        let delay_ms = delay as f64 * 1000.0 / f64::from(RATE);
        assert!((percentile(&lags, 50.0).unwrap() - delay_ms).abs() < 0.2);
        assert!((percentile(&lags, 95.0).unwrap() - delay_ms).abs() < 0.2);
    }
}

#[test]
fn a_dropped_20ms_frame_is_a_20ms_gap() {
    for seed in 1..=4 {
        let source = signal(seed);
        let at = inside_burst(&source, 1, 150);
        let mut heard = source.samples[..at].to_vec();
        heard.extend_from_slice(&source.samples[at + samples_ms(20)..]);
        let heard = ulaw_round_trip(&heard);
        let a = align(&source.samples, &heard, RATE);
        report(&format!("drop 20 ms seed {seed}"), &a);
        near(a.gap_ms_total, 20.0, "gap", &a);
        near(a.repeat_ms_total, 0.0, "repeat", &a);
        near(a.first_source_ms.unwrap(), 0.0, "first source", &a);
        assert_eq!(a.gaps.len(), 1);
        near(a.gaps[0].start_ms, at as f64 / 8.0, "gap position", &a);
    }
}

#[test]
fn several_dropped_frames_add_up() {
    let source = signal(7);
    let mut heard = Vec::new();
    let mut position = 0;
    let mut dropped = 0;
    for index in [0, 2, 3, 5] {
        let at = inside_burst(&source, index, 100);
        heard.extend_from_slice(&source.samples[position..at]);
        position = at + samples_ms(20);
        dropped += 20;
    }
    heard.extend_from_slice(&source.samples[position..]);
    let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
    report("drop 4 x 20 ms", &a);
    near(a.gap_ms_total, f64::from(dropped), "gap", &a);
    assert_eq!(a.gaps.len(), 4);
}

#[test]
fn a_skipped_word_is_one_gap_of_its_length() {
    let source = signal(6);
    let word = source.bursts[2].clone();
    let next = source.bursts[3].start;
    // Skip the word and the pause after it: only the word is a gap.
    let mut heard = source.samples[..word.start].to_vec();
    heard.extend_from_slice(&source.samples[next..]);
    let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
    report("skipped word", &a);
    let word_ms = word.len() as f64 * 1000.0 / f64::from(RATE);
    near(a.gap_ms_total, word_ms, "gap", &a);
    assert_eq!(a.gaps.len(), 1, "{:?}", a.gaps);
    near(a.gaps[0].len_ms, word_ms, "gap span", &a);
    near(
        a.gaps[0].start_ms,
        word.start as f64 / 8.0,
        "gap position",
        &a,
    );
}

#[test]
fn a_40ms_repeat_is_a_40ms_repeat() {
    for seed in 1..=4 {
        let source = signal(seed);
        let at = inside_burst(&source, 2, 200);
        let mut heard = source.samples[..at + samples_ms(40)].to_vec();
        heard.extend_from_slice(&source.samples[at..]);
        let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
        report(&format!("repeat 40 ms seed {seed}"), &a);
        near(a.repeat_ms_total, 40.0, "repeat", &a);
        near(a.gap_ms_total, 0.0, "gap", &a);
        assert_eq!(a.repeats.len(), 1);
    }
}

#[test]
fn removed_pauses_are_not_gaps() {
    for seed in 1..=4 {
        let source = signal(seed);
        let heard: Vec<i16> = source
            .bursts
            .iter()
            .flat_map(|burst| source.samples[burst.clone()].iter().copied())
            .collect();
        let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
        report(&format!("pauses removed seed {seed}"), &a);
        near(a.gap_ms_total, 0.0, "gap", &a);
        near(a.repeat_ms_total, 0.0, "repeat", &a);
        near(a.heard_speech_ms, a.source_speech_ms, "heard speech", &a);
        near(a.first_source_ms.unwrap(), 0.0, "first source", &a);
        assert!(a.segments.len() >= source.bursts.len());
    }
}

#[test]
fn a_clipped_start_is_measured() {
    for (seed, clip_ms) in [(1, 50), (2, 50), (3, 120), (4, 7)] {
        let source = signal(seed);
        let first = source.bursts[0].start;
        let mut heard = vec![0i16; samples_ms(400)];
        heard.extend_from_slice(&source.samples[first + samples_ms(clip_ms)..]);
        let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
        report(&format!("clip {clip_ms} ms seed {seed}"), &a);
        near(
            a.first_source_ms.unwrap(),
            clip_ms as f64,
            "first source",
            &a,
        );
        near(
            a.gap_ms_total,
            0.0,
            "gap (a clipped start is not a gap)",
            &a,
        );
        near(a.first_heard_ms.unwrap(), 400.0, "first heard", &a);
    }
}

#[test]
fn inserted_silence_delays_but_loses_nothing() {
    let source = signal(5);
    let at = inside_burst(&source, 1, 300);
    let mut heard = source.samples[..at].to_vec();
    heard.extend(std::iter::repeat_n(0, samples_ms(250)));
    heard.extend_from_slice(&source.samples[at..]);
    let a = align(&source.samples, &ulaw_round_trip(&heard), RATE);
    report("inserted 250 ms silence", &a);
    near(a.gap_ms_total, 0.0, "gap", &a);
    near(a.repeat_ms_total, 0.0, "repeat", &a);
    let lags = a.lag_series(0.0);
    let before = lags
        .iter()
        .find(|p| p.source_ms < at as f64 / 8.0 - 20.0)
        .unwrap();
    let after = lags
        .iter()
        .rev()
        .find(|p| p.source_ms > at as f64 / 8.0 + 20.0)
        .unwrap();
    near(after.lag_ms - before.lag_ms, 250.0, "lag step", &a);
}

#[test]
fn everything_at_once_with_a_level_drift_and_a_law() {
    let source = signal(9);
    let mut heard = vec![0i16; samples_ms(1_234)];
    let drop_at = inside_burst(&source, 1, 120);
    let repeat_at = inside_burst(&source, 3, 150);
    let silence_at = inside_burst(&source, 4, 200);
    heard.extend_from_slice(&source.samples[samples_ms(500) + samples_ms(30)..drop_at]);
    heard.extend_from_slice(&source.samples[drop_at + samples_ms(20)..repeat_at + samples_ms(40)]);
    heard.extend_from_slice(&source.samples[repeat_at..silence_at]);
    heard.extend(std::iter::repeat_n(0, samples_ms(100)));
    heard.extend_from_slice(&source.samples[silence_at..]);
    // Level drifts from -6 dB to +6 dB across the call.
    let n = heard.len() as f64;
    let drifted: Vec<i16> = heard
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let db = -6.0 + 12.0 * i as f64 / n;
            (f64::from(s) * 10f64.powf(db / 20.0))
                .round()
                .clamp(-32_768.0, 32_767.0) as i16
        })
        .collect();
    let a = align(&source.samples, &alaw_round_trip(&drifted), RATE);
    report("combined (a-law, drift)", &a);
    near(a.first_source_ms.unwrap(), 30.0, "first source", &a);
    near(a.gap_ms_total, 20.0, "gap", &a);
    near(a.repeat_ms_total, 40.0, "repeat", &a);
}

/// Pause compression measured from the outside: the listener answers 3 s
/// late and, at speed 1.0, hears every word once, from the first one, and
/// the measured positions are exactly those catch-up's own map claims.
#[test]
fn catch_up_delivers_every_word_once_as_measured() {
    let source = signal(11);
    let mut catch_up = CatchUp::new(CatchUpConfig::default());
    let mut stream = Vec::new();
    let answer = samples_ms(3_000);
    catch_up.push(&source.samples[..answer], answer as u64, &mut stream);
    for (tick, piece) in source.samples[answer..].chunks(160).enumerate() {
        let played = (tick * 160) as u64;
        let behind =
            catch_up.behind_samples(played.min(catch_up.listener_len()), piece.len() as u64);
        catch_up.push(piece, behind, &mut stream);
    }
    catch_up.finish(&mut stream);
    assert!(
        stream.len() < source.samples.len() - samples_ms(2_000),
        "pauses were compressed"
    );
    let heard = ulaw_round_trip(&stream);
    let a = align(&source.samples, &heard, RATE);
    report("catch-up speed 1.0", &a);
    near(a.first_source_ms.unwrap(), 0.0, "first source", &a);
    near(a.gap_ms_total, 0.0, "gap", &a);
    near(a.repeat_ms_total, 0.0, "repeat", &a);
    near(a.heard_speech_ms, a.source_speech_ms, "heard speech", &a);
    for segment in &a.segments {
        for h in (segment.heard_start..segment.heard_end).step_by(40) {
            let measured = segment.source_start + (h - segment.heard_start);
            if source.samples[measured] != 0 {
                assert_eq!(
                    catch_up.recording_position_at(h as u64),
                    measured as u64,
                    "at heard {h}"
                );
            }
        }
    }
    // Lag: the listener answered 3 s after the caller started and is live
    // (<= 300 ms behind) by the end.
    let lags: Vec<f64> = a.lag_series(3_000.0).iter().map(|p| p.lag_ms).collect();
    let tail = &lags[lags.len() * 3 / 4..];
    let p95 = percentile(tail, 95.0).unwrap();
    eprintln!(
        "catch-up lag: first {:.0} ms, last-quarter p50 {:.0} ms p95 {p95:.0} ms",
        lags[0],
        percentile(tail, 50.0).unwrap()
    );
    assert!(p95 <= 300.0, "not live: {p95}");
}

#[test]
fn catch_up_with_speed_is_measured_without_repeats() {
    let source = signal(12);
    let mut catch_up = CatchUp::new(CatchUpConfig {
        speed: 1.5,
        ..CatchUpConfig::default()
    });
    let mut stream = Vec::new();
    catch_up.push(&source.samples, 1_000_000, &mut stream);
    catch_up.finish(&mut stream);
    let a = align(&source.samples, &ulaw_round_trip(&stream), RATE);
    report("catch-up speed 1.5 (whole behind)", &a);
    near(a.first_source_ms.unwrap(), 0.0, "first source", &a);
    near(a.repeat_ms_total, 0.0, "repeat", &a);
    // WSOLA leaves out a third of the speech by design; the alignment sees
    // that as gaps, and everything it does place is where the map says.
    assert!(a.gap_ms_total > a.source_speech_ms * 0.15, "{a:#?}");
    // (Pause samples are left out: silence matches silence anywhere.)
    let mut checked = 0;
    for segment in &a.segments {
        for h in (segment.heard_start..segment.heard_end).step_by(40) {
            let measured = (segment.source_start + (h - segment.heard_start)) as i64;
            if source.samples[measured as usize] == 0 {
                continue;
            }
            let mapped = catch_up.recording_position_at(h as u64) as i64;
            assert!(
                (mapped - measured).abs() <= 240,
                "at {h}: map {mapped} vs measured {measured}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

/// The committed prompts and tones: each `.wav` holds exactly the samples
/// of its `.sln`, at 8 kHz mono, audible, and the README lists it.
#[test]
fn committed_sounds_are_telephone_format_and_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sounds");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let expected = [
        "beep",
        "accepted",
        "rejected",
        "error",
        "busy",
        "message-from",
        "message-delivered",
        "not-answered-stored",
        "listener-menu",
        "message-saved",
        "message-deleted",
        "no-messages",
        "invalid-number",
        "message-too-long",
        "too-many-messages",
        "goodbye",
    ];
    for name in expected {
        let wav = read_wav(&dir.join(format!("{name}.wav"))).unwrap();
        let raw = std::fs::read(dir.join(format!("{name}.sln"))).unwrap();
        let (_, sln) = decode_file_bytes(AudioFormat::Slin { sample_rate: 8_000 }, &raw)
            .unwrap()
            .unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (8_000, 1), "{name}");
        assert_eq!(wav.samples, sln, "{name}");
        assert!(sln.len() >= 800, "{name} is at least 100 ms");
        assert!(frame_level_dbfs(&sln) > -30.0, "{name} is audible");
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is in the README"
        );
    }
    assert_eq!(
        read_wav(&dir.join("beep.wav")).unwrap().samples.len(),
        960,
        "beep is 120 ms"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recordings_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200), riff in any::<bool>()) {
        let mut bytes = bytes;
        if riff && bytes.len() >= 12 {
            bytes[..4].copy_from_slice(b"RIFF");
            bytes[8..12].copy_from_slice(b"WAVE");
        }
        for format in [AudioFormat::Wav, AudioFormat::Ulaw, AudioFormat::Alaw, AudioFormat::Slin { sample_rate: 16_000 }] {
            let _ = decode_file_bytes(format, &bytes);
        }
    }

    #[test]
    fn catch_up_accounts_for_every_sample(
        pushes in proptest::collection::vec((0usize..3_000, 0u64..40_000, any::<bool>()), 1..30),
        speed in prop_oneof![Just(1.0f32), Just(1.5), Just(2.0)],
    ) {
        let source = &shared_signal().samples;
        let mut catch_up = CatchUp::new(CatchUpConfig { speed, ..CatchUpConfig::default() });
        let mut out = Vec::new();
        let mut position = 0;
        for (len, behind, silent) in pushes {
            let end = (position + len).min(source.len());
            let piece: Vec<i16> = if silent { vec![0; end - position] } else { source[position..end].to_vec() };
            catch_up.push(&piece, behind, &mut out);
            position = end;
        }
        catch_up.finish(&mut out);
        prop_assert_eq!(catch_up.listener_len(), out.len() as u64);
        prop_assert_eq!(catch_up.recording_decided(), position as u64);
        let mut listener = 0;
        let mut recording = 0;
        for segment in catch_up.map() {
            prop_assert_eq!(segment.listener_start, listener);
            prop_assert!(segment.recording_start >= recording);
            prop_assert!(segment.recording_len >= segment.listener_len);
            listener = segment.listener_end();
            recording = segment.recording_end();
        }
        prop_assert_eq!(listener, out.len() as u64);
    }
}
