//! `ivm bench delivery` through the real binary: one instant message and one
//! plain call on the throwaway Asterisk with real phones, summed up as one
//! JSON object whose every figure is there and plausible.

#[path = "common/launch.rs"]
mod launch;

/// Every key the benchmark promises (issue 4), and the ones it adds.
const KEYS: &[&str] = &[
    "runs",
    "runs_ok",
    "beep_ms_p50",
    "beep_ms_p95",
    "answer_to_first_audio_ms_p95",
    "live_lag_ms_p50",
    "live_lag_ms_p95",
    "gap_ms_total",
    "repeat_ms_total",
    "clipped_start_ms_max",
    "baseline_first_word_heard_ms",
    "ivm_first_word_heard_ms",
    "baseline_caller_busy_ms",
    "ivm_caller_busy_ms",
    "answer_to_first_audio_ms_p50",
    "caught_up_runs",
    "clipped_end_ms_max",
    "baseline_runs_ok",
    "baseline_lag_ms_p50",
];

#[test]
fn bench_delivery_prints_one_object_with_every_figure() {
    // A short message keeps the test well under 40 s.
    let answer_after_ms = 2_000.0;
    let out = launch::ivm_command()
        .args([
            "bench",
            "delivery",
            "--runs",
            "1",
            "--seconds",
            "5",
            "--answer-after-ms",
            "2000",
            "--json",
        ])
        .output()
        .expect("run ivm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ivm bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let figure = |key: &str| {
        summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number in {summary:#}\n{stderr}"))
    };
    for key in KEYS {
        let value = figure(key);
        assert!(value >= 0.0, "{key} = {value}");
    }
    assert_eq!(figure("runs"), 1.0);
    assert_eq!(figure("runs_ok"), 1.0, "{stderr}");
    assert_eq!(figure("baseline_runs_ok"), 1.0, "{stderr}");

    // Plausible, not the goals: those are for the benchmark's reader.
    let beep = figure("beep_ms_p95");
    assert!(beep > 0.0 && beep < 2_000.0, "beep {beep} ms");
    let first_audio = figure("answer_to_first_audio_ms_p95");
    assert!(first_audio > 0.0 && first_audio < 3_000.0, "{first_audio}");
    let lag = figure("live_lag_ms_p50");
    assert!(lag > 0.0 && lag < 5_000.0, "live lag {lag} ms");
    assert!(figure("live_lag_ms_p95") >= lag);
    assert!(figure("gap_ms_total") <= 100.0, "{summary:#}");
    assert!(figure("repeat_ms_total") <= 100.0, "{summary:#}");
    assert!(figure("clipped_start_ms_max") <= 500.0, "{summary:#}");
    assert!(figure("clipped_end_ms_max") <= 500.0, "{summary:#}");
    // Both targets hear the first word after they answer.
    assert!(figure("baseline_first_word_heard_ms") > answer_after_ms);
    assert!(figure("ivm_first_word_heard_ms") > answer_after_ms);
    // The point of ivm: the caller is free without waiting for the answer.
    let (plain, ivm) = (
        figure("baseline_caller_busy_ms"),
        figure("ivm_caller_busy_ms"),
    );
    assert!(
        ivm + answer_after_ms / 2.0 < plain,
        "caller busy: plain {plain} ms, ivm {ivm} ms"
    );
    assert!(ivm > 5_000.0, "the caller talked for 5 s: {ivm} ms");
}
