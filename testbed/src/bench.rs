//! `ivm-testbed bench delivery` and `ivm-testbed demo`: repeat the scenario of
//! [`super::scenario`], sum its figures up, and say them readably.
//!
//! Owns: the benchmark's figures (one JSON object) and the text of the demo
//! and the benchmark. Must not know: how a figure is measured (the
//! scenario does that), or the command line.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::scenario::{
    BaselineRun, IvmRun, LIVE_LAG_MS, ScenarioConfig, SwitchKind, run_baseline, run_ivm,
};
use ivm::config::MediaMode;
use ivm::media::analysis::percentile;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: u32,
    pub answer_after_ms: u32,
    pub message_seconds: u32,
    pub switch: SwitchKind,
    /// The `[delivery] media` modes measured, each run in each mode.
    pub media: Vec<MediaMode>,
}

/// The benchmark's result. Times in milliseconds; `None` (JSON `null`)
/// when no run produced the figure.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    /// The switch that carried the calls.
    pub switch: SwitchKind,
    /// `[delivery] media` of these figures: `stream` or `files`.
    pub media: String,
    /// Instant messages tried, and measured end to end.
    pub runs: u32,
    pub runs_ok: u32,
    pub answer_after_ms: u32,
    pub message_seconds: u32,
    /// The call reached ivm (FastAGI or outbound socket connection) → the caller's phone
    /// played the beep.
    pub beep_ms_p50: Option<f64>,
    pub beep_ms_p95: Option<f64>,
    /// The target pressed answer → its phone played the message's first
    /// audio.
    pub answer_to_first_audio_ms_p50: Option<f64>,
    pub answer_to_first_audio_ms_p95: Option<f64>,
    /// Speaker → listener, every heard 10 ms of speech of every run after
    /// catch-up (a run that never got live: once its lag levelled off).
    pub live_lag_ms_p50: Option<f64>,
    pub live_lag_ms_p95: Option<f64>,
    /// Runs in which the target got within 300 ms of the caller.
    pub caught_up_runs: u32,
    /// Speech never heard between the first and last heard word, summed.
    pub gap_ms_total: Option<f64>,
    /// Speech heard twice, summed.
    pub repeat_ms_total: Option<f64>,
    /// The most speech lost at a message's start, and at its end.
    pub clipped_start_ms_max: Option<f64>,
    pub clipped_end_ms_max: Option<f64>,
    /// Plain calls (the caller talks once answered) measured.
    pub baseline_runs_ok: u32,
    /// Dialling → the target's phone played the first word (medians).
    pub baseline_first_word_heard_ms: Option<f64>,
    pub ivm_first_word_heard_ms: Option<f64>,
    /// Dialling → the caller's call closed (medians).
    pub baseline_caller_busy_ms: Option<f64>,
    pub ivm_caller_busy_ms: Option<f64>,
    /// The phone path's own speaker → listener delay on a plain call.
    pub baseline_lag_ms_p50: Option<f64>,
    /// The same figures of the plain calls: speech never heard (summed),
    /// and the most lost at a call's start (the switch's own floor).
    pub baseline_gap_ms_total: Option<f64>,
    pub baseline_clipped_start_ms_max: Option<f64>,
}

/// Run the benchmark: per run one instant message and one plain call with
/// the same message. `report` hears one line per run (and every failure,
/// with its reason).
pub async fn delivery(
    options: &BenchOptions,
    mut report: impl FnMut(String),
) -> Vec<DeliverySummary> {
    let mut ivm_runs: Vec<Vec<IvmRun>> = options.media.iter().map(|_| Vec::new()).collect();
    let mut baseline_runs = Vec::new();
    for index in 0..options.runs {
        let number = index + 1;
        for (mode, runs) in options.media.iter().zip(ivm_runs.iter_mut()) {
            let config = ScenarioConfig {
                message_ms: options.message_seconds.saturating_mul(1000),
                answer_after_ms: options.answer_after_ms,
                seed: u64::from(index) + 1,
                keep_dir: None,
                switch: options.switch,
                media: *mode,
            };
            match run_ivm(&config).await {
                Ok(run) => {
                    let f = &run.figures;
                    report(format!(
                        "run {number}/{} ({mode}): ivm ok: beep {:.0} ms, first audio {:.0} ms after answer, lag p95 {}, gaps {:.0} ms, repeats {:.0} ms, clipped start {:.0} ms",
                        options.runs,
                        f.beep_ms,
                        f.answer_to_first_audio_ms,
                        optional_ms(f.live_lag_ms_p95),
                        f.gap_ms,
                        f.repeat_ms,
                        f.clipped_start_ms,
                    ));
                    runs.push(run);
                }
                Err(e) => report(format!(
                    "run {number}/{} ({mode}): ivm FAILED: {e}",
                    options.runs
                )),
            }
        }
        let config = ScenarioConfig {
            message_ms: options.message_seconds.saturating_mul(1000),
            answer_after_ms: options.answer_after_ms,
            seed: u64::from(index) + 1,
            keep_dir: None,
            switch: options.switch,
            ..ScenarioConfig::default()
        };
        match run_baseline(&config).await {
            Ok(run) => {
                report(format!(
                    "run {number}/{}: baseline ok: first word heard {:.0} ms after dialling",
                    options.runs, run.figures.first_word_heard_ms
                ));
                baseline_runs.push(run);
            }
            Err(e) => report(format!(
                "run {number}/{}: baseline FAILED: {e}",
                options.runs
            )),
        }
    }
    options
        .media
        .iter()
        .zip(&ivm_runs)
        .map(|(mode, runs)| summarise(options, *mode, runs, &baseline_runs))
        .collect()
}

fn summarise(
    options: &BenchOptions,
    media: MediaMode,
    ivm: &[IvmRun],
    baseline: &[BaselineRun],
) -> DeliverySummary {
    let of = |pick: fn(&IvmRun) -> f64| ivm.iter().map(pick).collect::<Vec<f64>>();
    let of_baseline =
        |pick: fn(&BaselineRun) -> f64| baseline.iter().map(pick).collect::<Vec<f64>>();
    let beep = of(|r| r.figures.beep_ms);
    let first_audio = of(|r| r.figures.answer_to_first_audio_ms);
    let live: Vec<f64> = ivm
        .iter()
        .flat_map(|r| r.figures.live_lag_ms.iter().copied())
        .collect();
    let sum = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>());
    let max = |values: Vec<f64>| values.into_iter().reduce(f64::max);
    let baseline_lags: Vec<f64> = baseline
        .iter()
        .filter_map(|r| r.figures.lag_ms_p50)
        .collect();
    DeliverySummary {
        switch: options.switch,
        media: media.to_string(),
        runs: options.runs,
        runs_ok: ivm.len() as u32,
        answer_after_ms: options.answer_after_ms,
        message_seconds: options.message_seconds,
        beep_ms_p50: tenth(percentile(&beep, 50.0)),
        beep_ms_p95: tenth(percentile(&beep, 95.0)),
        answer_to_first_audio_ms_p50: tenth(percentile(&first_audio, 50.0)),
        answer_to_first_audio_ms_p95: tenth(percentile(&first_audio, 95.0)),
        live_lag_ms_p50: tenth(percentile(&live, 50.0)),
        live_lag_ms_p95: tenth(percentile(&live, 95.0)),
        caught_up_runs: ivm
            .iter()
            .filter(|r| r.figures.caught_up_ms.is_some())
            .count() as u32,
        gap_ms_total: tenth(sum(of(|r| r.figures.gap_ms))),
        repeat_ms_total: tenth(sum(of(|r| r.figures.repeat_ms))),
        clipped_start_ms_max: tenth(max(of(|r| r.figures.clipped_start_ms))),
        clipped_end_ms_max: tenth(max(of(|r| r.figures.clipped_end_ms))),
        baseline_runs_ok: baseline.len() as u32,
        baseline_first_word_heard_ms: tenth(percentile(
            &of_baseline(|r| r.figures.first_word_heard_ms),
            50.0,
        )),
        ivm_first_word_heard_ms: tenth(percentile(&of(|r| r.figures.first_word_heard_ms), 50.0)),
        baseline_caller_busy_ms: tenth(percentile(
            &of_baseline(|r| r.figures.caller_busy_ms),
            50.0,
        )),
        ivm_caller_busy_ms: tenth(percentile(&of(|r| r.figures.caller_busy_ms), 50.0)),
        baseline_lag_ms_p50: tenth(percentile(&baseline_lags, 50.0)),
        baseline_gap_ms_total: tenth(sum(of_baseline(|r| r.figures.gap_ms))),
        baseline_clipped_start_ms_max: tenth(max(of_baseline(|r| r.figures.clipped_start_ms))),
    }
}

/// Round to a tenth of a millisecond: finer is noise.
fn tenth(value: Option<f64>) -> Option<f64> {
    value.map(|v| (v * 10.0).round() / 10.0)
}

fn optional_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"))
}

impl DeliverySummary {
    /// The summary as a readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ivm-testbed bench delivery on {:?}, media = {}: {} of {} runs measured ({} s message, target answers {} ms after it rings)\n",
            self.switch,
            self.media,
            self.runs_ok,
            self.runs,
            self.message_seconds,
            self.answer_after_ms
        );
        let rows: [(&str, Option<f64>, &str); 12] = [
            (
                "beep p50",
                self.beep_ms_p50,
                "call reached ivm -> caller hears the beep",
            ),
            ("beep p95", self.beep_ms_p95, ""),
            (
                "answer to first audio p95",
                self.answer_to_first_audio_ms_p95,
                "target answers -> hears the message",
            ),
            (
                "live lag p50",
                self.live_lag_ms_p50,
                "speaker -> listener, after catch-up",
            ),
            ("live lag p95", self.live_lag_ms_p95, ""),
            ("gaps (total)", self.gap_ms_total, "speech never heard"),
            (
                "repeats (total)",
                self.repeat_ms_total,
                "speech heard twice",
            ),
            (
                "clipped start (max)",
                self.clipped_start_ms_max,
                "first syllable lost",
            ),
            (
                "clipped end (max)",
                self.clipped_end_ms_max,
                "last syllable lost",
            ),
            (
                "phone path lag p50",
                self.baseline_lag_ms_p50,
                "plain call, for comparison",
            ),
            ("plain call gaps (total)", self.baseline_gap_ms_total, ""),
            (
                "plain call clipped start",
                self.baseline_clipped_start_ms_max,
                "the switch's own floor",
            ),
        ];
        for (name, value, note) in rows {
            let line = format!("  {name:<26} {:>10}   {note}", optional_ms(value));
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "  {:<26} {:>10}   of {} runs",
            "caught up to live", self.caught_up_runs, self.runs_ok
        );
        let _ = writeln!(
            out,
            "\n  {:<26} {:>10} {:>10}",
            "median, from dialling", "plain call", "ivm"
        );
        let _ = writeln!(
            out,
            "  {:<26} {:>10} {:>10}",
            "target hears first word",
            optional_ms(self.baseline_first_word_heard_ms),
            optional_ms(self.ivm_first_word_heard_ms)
        );
        let _ = writeln!(
            out,
            "  {:<26} {:>10} {:>10}",
            "caller tied up",
            optional_ms(self.baseline_caller_busy_ms),
            optional_ms(self.ivm_caller_busy_ms)
        );
        out
    }
}

/// What `ivm-testbed demo` prints: the timeline, the figures, the baseline, the
/// files.
pub fn demo_report(run: &IvmRun, baseline: Result<&BaselineRun, &str>, dir: &Path) -> String {
    let mut out = String::new();
    let f = &run.figures;
    let _ = writeln!(
        out,
        "1001 sends 1002 an instant message (*771002): {:.1} s of speech-like signal, \
         said at once; 1002 answers {:.1} s after it starts ringing.\n",
        f64::from(run.config_message_ms) / 1000.0,
        f64::from(run.config_answer_after_ms) / 1000.0
    );
    let _ = writeln!(out, "timeline (ms from dialling)");
    for event in &run.timeline {
        let _ = writeln!(out, "  {:>8.0}  {}", event.at_ms, event.what);
    }
    let _ = writeln!(
        out,
        "\nmeasured (what the phones played and heard, correlated with what 1001 said)"
    );
    let lines = [
        (
            "beep",
            format!(
                "{:.0} ms after the call reached ivm ({:.0} ms after dialling)",
                f.beep_ms,
                f.beep_ms + f.call_reached_ivm_ms
            ),
        ),
        (
            "first audio",
            format!("{:.0} ms after 1002 answered", f.answer_to_first_audio_ms),
        ),
        ("caught up", {
            let lags = || f.lag_series_ms.iter().map(|p| p[1]);
            let first = lags().next().unwrap_or(0.0);
            let closest = lags().fold(f64::INFINITY, f64::min);
            match f.caught_up_ms {
                Some(at) => format!(
                    "to within {LIVE_LAG_MS:.0} ms of 1001 at {at:.0} ms \
                         (it started {first:.0} ms behind)"
                ),
                None => format!(
                    "never: 1002 started {first:.0} ms behind 1001 and got no closer \
                         than {closest:.0} ms (live is {LIVE_LAG_MS:.0} ms)"
                ),
            }
        }),
        (
            "live lag",
            format!(
                "p50 {}, p95 {} (speaker -> listener{})",
                optional_ms(f.live_lag_ms_p50),
                optional_ms(f.live_lag_ms_p95),
                if f.caught_up_ms.is_some() {
                    ", after catch-up"
                } else {
                    ", once the lag levelled off"
                }
            ),
        ),
        (
            "heard",
            format!(
                "{:.0} of {:.0} ms of speech; gaps {:.0} ms, repeats {:.0} ms, \
                 clipped start {:.0} ms, clipped end {:.0} ms",
                f.heard_speech_ms,
                f.source_speech_ms,
                f.gap_ms,
                f.repeat_ms,
                f.clipped_start_ms,
                f.clipped_end_ms
            ),
        ),
    ];
    for (name, text) in lines {
        let _ = writeln!(out, "  {name:<12} {text}");
    }
    let _ = writeln!(
        out,
        "\n{:<44} {:>10} {:>10}",
        "compared with a plain call", "plain call", "ivm"
    );
    match baseline {
        Ok(b) => {
            let _ = writeln!(
                out,
                "  {:<42} {:>10} {:>10}",
                "dialling -> 1002 hears the first word",
                format!("{:.0} ms", b.figures.first_word_heard_ms),
                format!("{:.0} ms", f.first_word_heard_ms)
            );
            let _ = writeln!(
                out,
                "  {:<42} {:>10} {:>10}",
                "dialling -> 1001 is free again",
                format!("{:.0} ms", b.figures.caller_busy_ms),
                format!("{:.0} ms", f.caller_busy_ms)
            );
            let _ = writeln!(
                out,
                "  (plain call: 1001 starts talking once 1002 answered; the phone path \
                 itself delays speech by {})",
                optional_ms(b.figures.lag_ms_p50)
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  the plain call could not be measured: {e}");
        }
    }
    let _ = writeln!(out, "\nfiles in {}", dir.display());
    let mut files: Vec<&Path> = run.files.iter().map(|p| p.as_path()).collect();
    if let Ok(b) = baseline {
        files.extend(b.files.iter().map(|p| p.as_path()));
    }
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(out, "  {name:<28} {}", describe_file(&name));
    }
    let _ = writeln!(
        out,
        "  {:<28} the timeline and figures as JSON",
        "ivm-run.json"
    );
    out
}

fn describe_file(name: &str) -> &'static str {
    match name {
        "1001-said.wav" => "what 1001 said",
        "1001-heard.wav" => "what 1001 heard (the beep, the listening tone)",
        "1002-heard.wav" => "what 1002 heard (the message, then the menu)",
        "ivm-stored-message.wav" => "the message as ivm stored it",
        "baseline-1002-heard.wav" => "what 1002 heard on the plain call",
        _ => "",
    }
}
