//! Instant delivery end to end: real SIP phones (baresip) on the real
//! Asterisk 22, `ivm serve` as a separate process, checked on what the
//! phones actually heard and what was stored.

mod common;

use std::time::Duration;

use common::*;
use ivm::media::analysis::align;
use ivm::media::signal::{SignalConfig, speech_like};
use ivm_testbed::{Phone, write_wav};

const WAIT: Duration = Duration::from_secs(15);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_answered_the_whole_message_is_stored_unheard() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| {
        Ivm::start(&asterisk, agi_port, "[delivery]\nring_timeout_seconds = 3")
    });
    let dir = tempfile::tempdir().unwrap();
    let speech = said(&dir, "alice.wav", &[silence(500), tone(700.0, 6_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_INCOMING", WAIT)
        .await
        .expect("the target rings while alice talks");
    // Bob never answers; alice talks past the ring timeout, then hangs up.
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    alice.hangup().await.unwrap();

    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l[0]["state"] == "complete" && l[0]["delivery_state"] == "unheard"
        })
    });
    let message = only_message(&list);
    assert_eq!(
        (message["from"].as_str(), message["to"].as_str()),
        (Some("1001"), Some("1002"))
    );
    let duration = message["duration_ms"].as_i64().unwrap();
    assert!(
        (6_500..=8_000).contains(&duration),
        "the whole message: {duration} ms"
    );
    assert_eq!(
        message["fragments"].as_i64(),
        Some((duration + 999) / 1000),
        "every second indexed"
    );
    // The stored audio is what alice said, all of it.
    let stored = stored_wav(&ivm.data_dir());
    let heard_tone = tone_ms(&stored, 700.0);
    assert!(
        heard_tone >= 5_800,
        "stored {heard_tone} ms of alice's 6000 ms tone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_the_caller_hears_the_reject_tone_and_the_state_says_rejected() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    let speech = said(&dir, "alice.wav", &[silence(500), tone(700.0, 4_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_INCOMING", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.hangup().await.expect("bob rejects");
    tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "rejected")
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();

    let heard = read_wav(&alice.heard_wav());
    // The reject tone (sounds/rejected): 480 Hz for 200 ms, then 320 Hz for 300 ms.
    assert!(
        tone_ms(&heard, 480.0) >= 140,
        "alice heard {} ms of 480 Hz",
        tone_ms(&heard, 480.0)
    );
    assert!(
        tone_ms(&heard, 320.0) >= 160,
        "alice heard {} ms of 320 Hz",
        tone_ms(&heard, 320.0)
    );
    let list =
        tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["state"] == "complete"));
    assert_eq!(only_message(&list)["delivery_state"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_key_bridges_both_phones_and_each_hears_the_other() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    // Alice: 1000 Hz, then from 4 s on 1300 Hz (said only after the bridge).
    let alice_says = said(
        &dir,
        "alice.wav",
        &[tone(1000.0, 4_000), tone(1300.0, 6_000)],
    );
    // Bob: 2000 Hz all along; alice can only hear it through a bridge.
    let bob_says = said(&dir, "bob.wav", &[silence(100), tone(2000.0, 12_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&alice_says))
        .await
        .unwrap();
    let mut bob = Phone::start(&asterisk, "1002", Some(&bob_says))
        .await
        .unwrap();

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    bob.press('5').await.unwrap();
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    alice.hangup().await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT)
        .await
        .expect("bob's side ends with alice's");
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();

    let alice_heard = read_wav(&alice.heard_wav());
    let bob_heard = read_wav(&bob.heard_wav());
    eprintln!(
        "alice heard {} ms: 2000 Hz {} ms; bob heard {} ms: 1000 Hz {} ms, 1300 Hz {} ms",
        alice_heard.len() / 8,
        tone_ms(&alice_heard, 2000.0),
        bob_heard.len() / 8,
        tone_ms(&bob_heard, 1000.0),
        tone_ms(&bob_heard, 1300.0)
    );
    assert!(
        tone_ms(&alice_heard, 2000.0) >= 2_000,
        "alice heard bob for {} ms",
        tone_ms(&alice_heard, 2000.0)
    );
    assert!(
        tone_ms(&bob_heard, 1300.0) >= 1_500,
        "bob heard alice live for {} ms",
        tone_ms(&bob_heard, 1300.0)
    );
    // The recording stopped when the bridge started.
    let list =
        tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["state"] == "complete"));
    assert_eq!(only_message(&list)["delivery_state"], "heard");
    let stored = stored_wav(&ivm.data_dir());
    assert_eq!(
        tone_ms(&stored, 1300.0),
        0,
        "nothing after the bridge is in the message"
    );
    assert!(tone_ms(&stored, 1000.0) >= 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_message_leaves_a_partial_message_whose_audio_plays() {
    let (asterisk, agi_port) = asterisk();
    let mut ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    let speech = said(&dir, "alice.wav", &[silence(300), tone(700.0, 10_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    // No phone 1002: nothing answers, alice just talks.
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    ivm.kill9();
    // With ivm gone Asterisk ends the call.
    alice
        .wait_call("CALL_CLOSED", WAIT)
        .await
        .expect("the call ends when ivm dies");

    tokio::task::block_in_place(|| ivm.spawn());
    let list = ivm.messages();
    let message = only_message(&list);
    assert_eq!(message["state"], "partial", "{list:#}");
    let duration = message["duration_ms"].as_i64().unwrap();
    assert!(
        (3_500..=5_500).contains(&duration),
        "{duration} ms reached disk"
    );
    assert_eq!(message["fragments"].as_i64(), Some((duration + 999) / 1000));
    let stored = stored_wav(&ivm.data_dir());
    let kept = tone_ms(&stored, 700.0);
    assert!(
        kept >= 3_000,
        "the stored audio plays: {kept} ms of alice's tone"
    );
    let log = ivm.log();
    assert!(log.contains("recovered as partial"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_3_s_into_a_10_s_message_hears_all_of_it_by_correlation() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    // A speech-like signal whose every 10 ms is recognisable: 10 s, the
    // first burst right at the start (the caller talks at once).
    let signal = speech_like(&SignalConfig {
        duration_ms: 10_000,
        seed: 7,
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
    // Alice finishes her 10 s, then hangs up; bob hears the rest and the
    // menu, and saves.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    alice.hangup().await.unwrap();
    tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "heard"));
    bob.press('4').await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT)
        .await
        .expect("save ends the call");

    let heard = read_wav(&bob.heard_wav());
    let a = align(&signal.samples, &heard, 8000);
    eprintln!(
        "first source {:?} ms, gap {:.1} ms {:?}, repeat {:.1} ms {:?}, heard {:.0} of {:.0} ms speech",
        a.first_source_ms,
        a.gap_ms_total,
        a.gaps,
        a.repeat_ms_total,
        a.repeats,
        a.heard_speech_ms,
        a.source_speech_ms
    );
    let first = a.first_source_ms.expect("bob heard the message");
    assert!(
        first <= 20.0,
        "the first syllable is intact: first heard source position {first} ms"
    );
    let widest_gap = a.gaps.iter().map(|g| g.len_ms).fold(0.0, f64::max);
    assert!(widest_gap <= 20.0, "no gap over 20 ms: {:?}", a.gaps);
    assert!(
        a.repeat_ms_total <= 10.0,
        "no repeated audio: {:?}",
        a.repeats
    );
    assert!(
        a.heard_speech_ms >= a.source_speech_ms - 40.0,
        "all of it: {:.0} of {:.0} ms",
        a.heard_speech_ms,
        a.source_speech_ms
    );
    let list = ivm.messages();
    assert_eq!(only_message(&list)["state"], "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_from_the_menu_sends_a_message_back_on_the_same_call() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    let alice_says = said(&dir, "alice.wav", &[tone(700.0, 2_000)]);
    // Bob only speaks once he is replying (his phone talks from his answer).
    let bob_says = said(&dir, "bob.wav", &[silence(5_000), tone(1500.0, 4_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&alice_says))
        .await
        .unwrap();
    let mut bob = Phone::start(&asterisk, "1002", Some(&bob_says))
        .await
        .unwrap();

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    // Bob heard it all and is in the menu: 2 replies.
    tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "heard"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    bob.press('2').await.unwrap();
    // Alice's phone rings with bob's reply and answers by itself.
    alice
        .wait_call("CALL_ESTABLISHED", WAIT)
        .await
        .expect("the reply rings alice");
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    bob.hangup().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();

    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| l.as_array().is_some_and(|a| a.len() == 2))
    });
    let reply = &list[0];
    assert_eq!(
        (reply["from"].as_str(), reply["to"].as_str()),
        (Some("1002"), Some("1001")),
        "{list:#}"
    );
    let heard = read_wav(&alice.heard_wav());
    assert!(
        tone_ms(&heard, 1500.0) >= 1_000,
        "alice heard bob's reply for {} ms",
        tone_ms(&heard, 1500.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_back_from_the_menu_rings_the_sender_for_a_normal_call() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    let alice_says = said(&dir, "alice.wav", &[tone(700.0, 2_000)]);
    let bob_says = said(&dir, "bob.wav", &[silence(5_000), tone(1500.0, 6_000)]);
    let mut alice = Phone::start(&asterisk, "1001", Some(&alice_says))
        .await
        .unwrap();
    let mut bob = Phone::start(&asterisk, "1002", Some(&bob_says))
        .await
        .unwrap();

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    tokio::task::block_in_place(|| ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "heard"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    bob.press('3').await.unwrap();
    alice
        .wait_call("CALL_ESTABLISHED", WAIT)
        .await
        .expect("the call back rings alice");
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    bob.hangup().await.unwrap();
    alice
        .wait_call("CALL_CLOSED", WAIT)
        .await
        .expect("alice's side ends with bob's");

    let heard = read_wav(&alice.heard_wav());
    assert!(
        tone_ms(&heard, 1500.0) >= 1_000,
        "alice talked with bob: heard {} ms",
        tone_ms(&heard, 1500.0)
    );
    // A plain call: no second message.
    assert_eq!(ivm.messages().as_array().map(Vec::len), Some(1));
}
