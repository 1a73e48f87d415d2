//! `[delivery] media = "stream"` end to end: real SIP phones (baresip) on
//! the real Asterisk 22 with `app_audiosocket`, `ivm serve` as a separate
//! process carrying both legs' audio over AudioSocket. Checked on what the
//! phones heard and what was stored; the speed figures are in
//! `ivm bench delivery --media stream`, not here.

mod common;

use std::time::Duration;

use common::*;
use ivm::media::analysis::{Alignment, align};
use ivm::media::signal::{SignalConfig, speech_like};
use ivm_testbed::{Phone, write_wav};

const WAIT: Duration = Duration::from_secs(15);
const STREAM: &str = "[delivery]\nmedia = \"stream\"";

fn said(dir: &tempfile::TempDir, name: &str, parts: &[Vec<i16>]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let mut all: Vec<i16> = parts.concat();
    // The phone hangs up when its file ends: pad it.
    all.extend(silence(60_000));
    write_wav(&path, &all).unwrap();
    path
}

fn only_message(list: &serde_json::Value) -> &serde_json::Value {
    let all = list.as_array().expect("a list");
    assert_eq!(all.len(), 1, "{list:#}");
    &all[0]
}

/// The server really streams (it falls back to files when it cannot).
fn assert_streaming(ivm: &Ivm) {
    let log = ivm.log();
    assert!(
        log.contains("live delivery through ivm's AudioSocket stream"),
        "not in stream mode:\n{log}"
    );
}

/// The whole source, in order: intact start, no gap, no repeat.
fn assert_whole(what: &str, a: &Alignment) {
    eprintln!(
        "{what}: first source {:?} ms, gap {:.1} ms {:?}, repeat {:.1} ms {:?}, heard {:.0} of {:.0} ms speech",
        a.first_source_ms,
        a.gap_ms_total,
        a.gaps,
        a.repeat_ms_total,
        a.repeats,
        a.heard_speech_ms,
        a.source_speech_ms
    );
    let first = a.first_source_ms.expect("the message is there");
    assert!(first <= 20.0, "{what}: start clipped by {first} ms");
    let widest_gap = a.gaps.iter().map(|g| g.len_ms).fold(0.0, f64::max);
    assert!(widest_gap <= 20.0, "{what}: a gap over 20 ms: {:?}", a.gaps);
    assert!(
        a.repeat_ms_total <= 10.0,
        "{what}: repeated audio: {:?}",
        a.repeats
    );
    assert!(
        a.heard_speech_ms >= a.source_speech_ms - 40.0,
        "{what}: not all of it: {:.0} of {:.0} ms",
        a.heard_speech_ms,
        a.source_speech_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_3_s_late_the_listener_hears_all_of_it_in_one_stream_and_it_is_stored_whole() {
    answered_late_hears_all_and_stores_all(STREAM, 11).await;
}

/// The fallback (and FreeSWITCH's path) under the same checks. Ignored:
/// the files path still repeats or drops a few tens of ms at a play seam
/// now and then (a 36 ms repeat in one run here; issue 13), which is why
/// stream is the default. Run it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the files path is not exact at play seams (issue 13)"]
async fn files_mode_answered_3_s_late_hears_all_of_it_and_stores_it_whole() {
    answered_late_hears_all_and_stores_all("[delivery]\nmedia = \"files\"", 12).await;
}

async fn answered_late_hears_all_and_stores_all(config: &str, seed: u64) {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, config));
    if config == STREAM {
        assert_streaming(&ivm);
    } else {
        assert!(
            ivm.log().contains("live delivery through recorded files"),
            "{}",
            ivm.log()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // Speech-like, every 10 ms recognisable, the first burst at once.
    let signal = speech_like(&SignalConfig {
        duration_ms: 10_000,
        seed,
        ..SignalConfig::default()
    });
    let speech = said(&dir, "alice.wav", std::slice::from_ref(&signal.samples));
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_INCOMING", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    bob.answer().await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    alice.hangup().await.unwrap();
    // The stream ends with the message; the menu follows on the AGI.
    tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "heard"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.press('4').await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT)
        .await
        .expect("save ends the call");

    let heard = read_wav(&bob.heard_wav());
    assert_whole("bob heard", &align(&signal.samples, &heard, 8000));

    let list = ivm.messages();
    let message = only_message(&list);
    assert_eq!(message["state"], "complete", "{list:#}");
    let duration = message["duration_ms"].as_i64().unwrap();
    assert_eq!(
        message["fragments"].as_i64(),
        Some((duration + 999) / 1000),
        "every second indexed: {list:#}"
    );
    let stored = stored_wav(&ivm.data_dir());
    let a = align(&signal.samples, &stored, 8000);
    assert_whole("stored", &a);
    if config == STREAM {
        assert!(
            a.unmatched_signal_ms <= 200.0,
            "the stored message is alice's audio only (no beep, no prompt): {:.0} ms unmatched",
            a.unmatched_signal_ms
        );
    }
}
