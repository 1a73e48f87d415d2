//! Presence end to end on the real Asterisk 22 with real SIP phones
//! (baresip), `ivm serve` as a separate process: what only Asterisk shows
//! (the webhook's timing, ContactStatus, the push's latency in ivm's own
//! log). Do-not-disturb by star code and presence across restarts run on
//! both switches in `switch_scenarios.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ivm_testbed::{Phone, write_wav};

const WAIT: Duration = Duration::from_secs(15);

fn cli_ok(ivm: &Ivm, args: &[&str]) -> String {
    let out = ivm.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Milliseconds of `samples` (8 kHz) louder than quiet.
fn sound_ms(samples: &[i16]) -> u32 {
    samples
        .chunks_exact(160)
        .filter(|b| {
            let energy: f64 = b.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            (energy / 160.0).sqrt() > 300.0
        })
        .count() as u32
        * 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_target_is_not_rung_the_caller_hears_stored_and_the_webhook_goes_out_at_once()
{
    let (asterisk, agi_port) = asterisk();
    let (hook_port, hooks) = webhook();
    let extra = format!(
        "[notify]\ndefault_channels = [\"webhook\"]\n[notify.webhook]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n"
    );
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, &extra));
    cli_ok(&ivm, &["user", "add", "1001", "--name", "Alice"]);
    cli_ok(&ivm, &["user", "add", "1002", "--name", "Bob"]);
    // Alice is silent: whatever she hears after the beep is ivm speaking.
    let mut alice = Phone::start(&asterisk, "1001", None).await.unwrap();
    // Bob has no phone registered at all.

    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    let established = Instant::now();
    let (at, body) = tokio::task::block_in_place(|| hooks.recv_timeout(WAIT))
        .unwrap_or_else(|_| panic!("no webhook; ivm log:\n{}", ivm.log()));
    assert!(
        body.contains("1001"),
        "the webhook names the sender: {body}"
    );
    let after = at.duration_since(established);
    // Let the prompt ("Not available. Message stored.", 2.3 s) play out.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    println!(
        "webhook {} ms after the caller was answered",
        after.as_millis()
    );
    assert!(
        after < Duration::from_secs(3),
        "notified at once, while the caller still talks: {after:?}"
    );

    let presence = cli_ok(&ivm, &["presence", "show", "--json"]);
    let presence: serde_json::Value = serde_json::from_str(presence.trim()).unwrap();
    let bob = presence
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["extension"] == "1002")
        .unwrap();
    assert_eq!(bob["registered"], false, "{presence:#}");

    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l[0]["state"] == "complete" && l[0]["delivery_state"] == "unreachable"
        })
    });
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // The beep is 120 ms; the prompt is about 2.3 s of speech.
    let heard = read_wav(&alice.heard_wav());
    let spoken = sound_ms(&heard);
    assert!(
        spoken >= 1_500,
        "alice heard {spoken} ms of sound: the beep and the prompt"
    );
    // The server runs at debug level: an originate would be logged.
    let log = ivm.log();
    assert!(log.contains("presence"), "the server logs presence: {log}");
    assert!(
        !log.contains("originate queued"),
        "bob was not rung:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_registers_is_called_within_2_s_and_hears_the_message_whole() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    cli_ok(&ivm, &["user", "add", "1001", "--name", "Alice"]);
    cli_ok(&ivm, &["user", "add", "1002", "--name", "Bob"]);
    let dir = tempfile::tempdir().unwrap();
    // Alice says a 3 s tone; the phone hangs up when its file ends.
    let speech = dir.path().join("alice.wav");
    let mut said = silence(300);
    said.extend(tone(700.0, 3_000));
    write_wav(&speech, &said).unwrap();
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l[0]["state"] == "complete" && l[0]["delivery_state"] == "unreachable"
        })
    });

    // Bob's phone registers (start returns once Asterisk has it) and
    // answers by itself: ivm may call it before the test can listen to the
    // phone's events, so what counts is when the delivery starts playing.
    let registering = Instant::now();
    let mut bob = Phone::start(&asterisk, "1002", None).await.unwrap();
    let registered = registering.elapsed();
    let playing = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l[0]["delivery_state"] == "listening" || l[0]["delivery_state"] == "heard"
        });
        registering.elapsed()
    });
    // ivm's own clock (its debug log): Asterisk's word that 1002 is idle
    // (registered) to the push's originate.
    let log = ivm.log();
    let registered_at = log_time(
        &log,
        r#"DeviceStateChanged { endpoint: "1002", state: Idle }"#,
    )
    .unwrap_or_else(|| panic!("the registration reached ivm:\n{log}"));
    let pushed_at = log_time(&log, "channel_id=ivm-push-")
        .unwrap_or_else(|| panic!("a push was originated:\n{log}"));
    let push = pushed_at - registered_at;
    println!(
        "registration event to push originate: {:.1} ms; phone start to playing: {} ms \
         (registration {} ms, then the phone's auto-answer)",
        push * 1000.0,
        playing.as_millis(),
        registered.as_millis()
    );
    assert!(
        (0.0..2.0).contains(&push),
        "called within 2 s of registering: {push} s\n{log}"
    );
    // Asterisk's ContactStatus for the registration was counted.
    assert!(
        ivm.log()
            .contains(r#"ContactsChanged { endpoint: "1002", contacts: 1 }"#),
        "a contact counted:\n{}",
        ivm.log()
    );
    tokio::task::block_in_place(|| {
        ivm.wait_messages(Duration::from_secs(30), |l| {
            l[0]["delivery_state"] == "heard"
        })
    });
    // No key at the menu: ivm goes on, says goodbye and hangs up.
    bob.wait_call("CALL_CLOSED", Duration::from_secs(30))
        .await
        .unwrap();
    let heard = read_wav(&bob.heard_wav());
    let tone_heard = tone_ms(&heard, 700.0);
    assert!(
        tone_heard >= 2_800,
        "bob heard {tone_heard} ms of alice's 3000 ms tone"
    );
}

/// Seconds into the day of the first line of `log` holding `needle`
/// (tracing's `2026-12-05T00:36:34.515992Z` at the line's start).
fn log_time(log: &str, needle: &str) -> Option<f64> {
    let clean = log.lines().map(strip_ansi).find(|l| l.contains(needle))?;
    let time = clean.split_whitespace().next()?.split_once('T')?.1;
    let time = time.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
