//! Issue 11's abuse limits on a real Asterisk 22 with real SIP phones and
//! `ivm serve` as a separate process: the PIN lock-out (stored, so it
//! survives a restart; per source, so the owner's own phone still gets
//! their messages) and the cap on messages in progress (`[limits]
//! max_concurrent_messages`: the callers past it hear "try later", nothing
//! of theirs is stored, nothing is left half-stored).
//!
//! Judged by what the phones hear (the prompts and the message, located by
//! correlation or by their tones), what the store says and what ivm logs.

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use ivm::media::analysis::align;
use ivm::media::signal::{SignalConfig, speech_like};
use ivm::proto::ami::AmiAction;
use ivm::switch::asterisk::ami::AmiClient;
use ivm_testbed::{AMI_SECRET, Asterisk, Phone, write_wav};

const WAIT: Duration = Duration::from_secs(20);
const BOB_PIN: &str = "802468";
const WRONG_PIN: &str = "135790";
/// The special information tone's top frequency: the `error` prompt.
const SIT_HZ: f64 = 1776.7;
const BEEP_HZ: f64 = 1000.0;

/// One of ivm's own prompts, as the switch plays it (`sounds/NAME.sln`).
fn prompt(name: &str) -> Vec<i16> {
    let path = format!("{}/sounds/{name}.sln", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Share of `source`'s speech found in `heard`, by correlation.
fn heard_share(source: &[i16], heard: &[i16]) -> f64 {
    let a = align(source, heard, 8000);
    if a.source_speech_ms <= 0.0 {
        return 0.0;
    }
    a.heard_speech_ms / a.source_speech_ms
}

/// `ivm user add` on the server's config, the PIN on stdin.
fn add_user(ivm: &Ivm, extension: &str, name: &str, pin: Option<&str>) {
    let mut command = common::launch::ivm_command();
    command
        .arg("--config")
        .arg(&ivm.config)
        .args(["user", "add", extension, "--name", name]);
    if pin.is_some() {
        command.arg("--pin-stdin");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(pin) = pin {
        stdin.write_all(format!("{pin}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user add {extension}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `phone` has heard so far on its call, once `done` says enough.
async fn heard_until(phone: &Phone, what: &str, done: impl Fn(&[i16]) -> bool) -> Vec<i16> {
    let deadline = Instant::now() + WAIT;
    loop {
        let heard = read_wav(&phone.heard_wav());
        if done(&heard) {
            return heard;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not heard within {WAIT:?} ({} ms heard)",
            phone.extension(),
            heard.len() / 8
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a WAV's data chunk says its true length: baresip writes 0 when
/// it opens the file and the length when it closes it.
fn wav_closed(bytes: &[u8]) -> bool {
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]) as usize;
        if &bytes[i..i + 4] == b"data" {
            return len != 0 && i + 8 + len == bytes.len();
        }
        i += 8 + len;
    }
    false
}

/// All a phone heard on its call that just closed: once baresip has
/// closed the file (the end of the call is written then), or what is
/// there after a few seconds.
async fn heard_on_closed_call(phone: &Phone) -> Vec<i16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wav_closed(&std::fs::read(phone.heard_wav()).unwrap_or_default())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_wav(&phone.heard_wav())
}

/// Whether ivm's log, past its first `from` bytes, says the prompt on the
/// call `caller` made to `*55` finished playing. (A phone's recording of
/// what it hears lags while no audio comes: the beep shows there only
/// with what follows it.)
fn first_prompt_played(ivm: &Ivm, from: usize, caller: &str) -> bool {
    let log = ivm.log();
    let new = log.get(from..).unwrap_or_default();
    let caller = format!("caller_number: \"{caller}\"");
    let call = new
        .lines()
        .filter(|l| l.contains("IncomingCall {"))
        .find(|l| l.contains(&caller) && l.contains("dialed: \"*55\""))
        .and_then(|l| l.split("CallId(\"").nth(1))
        .and_then(|rest| rest.split('"').next());
    call.is_some_and(|id| new.contains(&format!("PlaybackFinished {{ call: CallId(\"{id}\")")))
}

/// From a fresh phone `from`: dial `*55`, once ivm has played the beep
/// key `1002 * pin #`, and return all the call heard once ivm ended it
/// (the beep checked in it).
async fn pin_for_bob(asterisk: &Asterisk, ivm: &Ivm, from: &str, pin: &str) -> Vec<i16> {
    let mut phone = Phone::start(asterisk, from, None).await.unwrap();
    let log_from = ivm.log().len();
    phone.dial("*55", asterisk).await.unwrap();
    phone.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    // The beep asks for extension * PIN (the caller is not Bob).
    let deadline = Instant::now() + WAIT;
    while !first_prompt_played(ivm, log_from, from) {
        assert!(
            Instant::now() < deadline,
            "no beep for {from}\n{}",
            ivm.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for digit in format!("1002*{pin}#").chars() {
        phone.press(digit).await.unwrap();
    }
    phone
        .wait_call("CALL_CLOSED", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{from}: ivm ends the call after the PIN: {e}"));
    let heard = heard_on_closed_call(&phone).await;
    assert!(tone_ms(&heard, BEEP_HZ) >= 60, "{from} heard the beep");
    heard
}

/// Bob's own phone dials `*55<code>`: returns what it heard once ivm
/// says the message was heard (the intro, the beep, all of it) and a
/// second and a half more (the menu), and it hung up.
async fn bob_retrieves(asterisk: &Asterisk, ivm: &Ivm, bob: &mut Phone, code: &str) -> Vec<i16> {
    bob.dial(&format!("*55{code}"), asterisk).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let list = ivm.messages();
        let heard = list.as_array().is_some_and(|all| {
            all.iter()
                .any(|m| m["code"] == code && m["delivery_state"] == "heard")
        });
        if heard {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Bob's message not heard within {WAIT:?}: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let so_far = read_wav(&bob.heard_wav()).len();
    heard_until(bob, "the menu after the message", |h| {
        h.len() >= so_far + 1_500 * 8
    })
    .await;
    bob.hangup().await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    heard_on_closed_call(bob).await
}

fn pin_misses(ivm: &Ivm, source: &str) -> ivm::domain::MissCounts {
    ivm::store::Store::open(&ivm.data_dir())
        .unwrap()
        .pin_misses("1002", source, 0)
        .unwrap()
}

/// Issue 11's must-show: five wrong PINs from another phone lock Bob's
/// mailbox to that phone; after `kill -9` and a new `ivm serve` on the same
/// data dir it is still locked, also for the right PIN; Bob's own phone
/// gets his message while that phone is locked out and tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_pins_lock_the_mailbox_across_a_restart_but_not_the_owners_phone() {
    let (asterisk, agi_port) = common::asterisk();
    let mut ivm = tokio::task::block_in_place(|| {
        let ivm = Ivm::unstarted(
            &asterisk,
            agi_port,
            "[delivery]\nring_timeout_seconds = 3\n",
        );
        add_user(&ivm, "1001", "Alice", None);
        add_user(&ivm, "1002", "Bob", Some(BOB_PIN));
        ivm
    });
    tokio::task::block_in_place(|| ivm.spawn());

    // Alice leaves Bob a message; Bob's phone rings and is not answered
    // (it stays registered throughout: no push when it comes back).
    let dir = tempfile::tempdir().unwrap();
    let message = speech_like(&SignalConfig {
        duration_ms: 3_000,
        seed: 11,
        ..SignalConfig::default()
    })
    .samples;
    let speech = dir.path().join("alice.wav");
    write_wav(&speech, &[message.clone(), silence(60_000)].concat()).unwrap();
    let mut alice = Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = Phone::start_with(&asterisk, "1002", None, false)
        .await
        .unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_INCOMING", WAIT).await.unwrap();
    // Alice talks: real time; Bob's ringing ends meanwhile (3 s).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    alice.hangup().await.unwrap();
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l[0]["state"] == "complete" && !l[0]["code"].is_null()
        })
    });
    let code = list[0]["code"].as_str().unwrap().to_owned();

    let invalid = prompt("invalid-number");
    // Five wrong PINs from 1003's phone (no user: `*55` alone gets the beep
    // for extension * PIN): each heard "invalid number",
    // none heard the message or the error tone.
    for attempt in 1..=5 {
        let heard = pin_for_bob(&asterisk, &ivm, "1003", WRONG_PIN).await;
        let share = heard_share(&invalid, &heard);
        eprintln!("attempt {attempt}: 'invalid number' heard {share:.2}");
        assert!(
            share >= 0.8,
            "attempt {attempt}: 'invalid number' heard {share:.2}\n{}",
            ivm.log()
        );
        assert!(
            tone_ms(&heard, SIT_HZ) < 100,
            "attempt {attempt}: not locked yet"
        );
        assert!(
            heard_share(&message, &heard) < 0.05,
            "attempt {attempt}: no message"
        );
        // A PIN checked and found wrong (not an entry that timed out).
        assert_eq!(
            ivm.log()
                .matches("wrong retrieval attempt: wrong PIN")
                .count(),
            attempt,
            "{}",
            ivm.log()
        );
    }
    // The sixth, with Bob's right PIN: the error tone, no message.
    let heard = pin_for_bob(&asterisk, &ivm, "1003", BOB_PIN).await;
    eprintln!(
        "locked: heard {} ms; SIT tones {} / {} / {} ms",
        heard.len() / 8,
        tone_ms(&heard, 913.8),
        tone_ms(&heard, 1370.6),
        tone_ms(&heard, SIT_HZ)
    );
    assert!(
        tone_ms(&heard, SIT_HZ) >= 200,
        "locked out: the error tone ({} ms)\n{}",
        tone_ms(&heard, SIT_HZ),
        ivm.log()
    );
    assert!(
        heard_share(&message, &heard) < 0.05,
        "nothing of the message"
    );
    assert!(heard_share(&invalid, &heard) < 0.2, "not 'invalid number'");

    // kill -9: nothing kept in memory survives. The store holds the five.
    ivm.kill9();
    let misses = pin_misses(&ivm, "1003");
    assert_eq!(
        (misses.from_source, misses.mailbox),
        (5, 5),
        "five misses from 1003 stored; the refused sixth is not one"
    );
    tokio::task::block_in_place(|| ivm.spawn());

    // 1003's phone tries the right PIN again while Bob's own phone gets
    // his message, at the same time.
    let (other_heard, bob_heard) = tokio::join!(
        pin_for_bob(&asterisk, &ivm, "1003", BOB_PIN),
        bob_retrieves(&asterisk, &ivm, &mut bob, &code),
    );
    assert!(
        tone_ms(&other_heard, SIT_HZ) >= 200,
        "still locked after the restart ({} ms of the error tone)\n{}",
        tone_ms(&other_heard, SIT_HZ),
        ivm.log()
    );
    assert!(
        heard_share(&message, &other_heard) < 0.05,
        "nothing of the message"
    );
    let share = heard_share(&message, &bob_heard);
    eprintln!("Bob's own phone heard {share:.2} of his message");
    assert!(
        share >= 0.9,
        "Bob's own phone heard {share:.2} of his message\n{}",
        ivm.log()
    );
    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| l[0]["delivery_state"] == "heard")
    });
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    // Bob's retrieval is no miss; 1003's refused try is not counted.
    assert_eq!(pin_misses(&ivm, "1003").mailbox, 5);
    assert_eq!(pin_misses(&ivm, "1002").from_source, 0);
}

/// How many times ivm's log says a caller was turned away by the cap.
fn refused_by_the_cap(ivm: &Ivm) -> usize {
    ivm.log()
        .matches("message refused: max_concurrent_messages in progress")
        .count()
}

/// Issue 11's must-show at its size: `[limits] max_concurrent_messages =
/// 100` and 150 callers at once (Local channels originated by AMI into the
/// `*77` dialplan, each with its own caller ID, beeping until hung up):
/// exactly 100 messages are recorded, 50 callers are turned away; a real
/// phone calling while the 100 are in progress hears "try later" and
/// nothing of it is stored; hung up all at once, the 100 end `complete`
/// with their audio, none half-stored. About 6 s on two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_message_cap_callers_hear_try_later_and_nothing_is_half_stored() {
    const CAP: usize = 100;
    const CALLERS: usize = 150;
    let (asterisk, agi_port) = common::asterisk();
    let ivm = tokio::task::block_in_place(|| {
        Ivm::start(
            &asterisk,
            agi_port,
            &format!(
                "[limits]\nmax_concurrent_messages = {CAP}\n\
                 [delivery]\nring_timeout_seconds = 3\n"
            ),
        )
    });
    let ami = AmiClient::start(asterisk.ami_address(), "ivm", AMI_SECRET);
    ami.wait_connected(WAIT).await.unwrap();
    // All six at once: an Async originate is answered once queued, before
    // its call runs.
    for i in 0..CALLERS {
        ami.send(
            AmiAction::new("Originate")
                .field("Channel", "Local/*771002@phones")
                .field("Context", "test")
                .field("Exten", "talk")
                .field("Priority", "1")
                .field("CallerID", format!("\"Caller {i}\" <{}>", 3000 + i))
                .field("Async", "true"),
        )
        .await
        .unwrap()
        .into_result("Originate")
        .unwrap();
    }

    // Every caller is either recording or turned away.
    let deadline = Instant::now() + WAIT;
    let recording = loop {
        let list = tokio::task::block_in_place(|| ivm.messages());
        let recording = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "recording")
            .count();
        if recording + refused_by_the_cap(&ivm) >= CALLERS {
            break recording;
        }
        assert!(
            Instant::now() < deadline,
            "not every caller got an answer: {list:#}\n{}",
            ivm.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recording, CAP, "{}", ivm.log());
    assert_eq!(refused_by_the_cap(&ivm), CALLERS - CAP);

    // A real phone while the four are in progress: "try later", hung up.
    let mut carol = Phone::start(&asterisk, "1003", None).await.unwrap();
    carol.dial("*771002", &asterisk).await.unwrap();
    carol.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    carol
        .wait_call("CALL_CLOSED", WAIT)
        .await
        .unwrap_or_else(|e| panic!("ivm ends the refused call: {e}\n{}", ivm.log()));
    let heard = heard_on_closed_call(&carol).await;
    let share = heard_share(&prompt("try-later"), &heard);
    eprintln!("the phone past the cap heard {share:.2} of 'try later'");
    assert!(
        share >= 0.8,
        "'try later' heard {share:.2} ({} ms heard)",
        heard.len() / 8
    );
    assert_eq!(refused_by_the_cap(&ivm), CALLERS - CAP + 1);

    // The callers hang up: the four messages end whole.
    asterisk.cli("channel request hangup all").unwrap();
    let list = tokio::task::block_in_place(|| {
        ivm.wait_messages(WAIT, |l| {
            l.as_array()
                .unwrap()
                .iter()
                .all(|m| m["state"] != "recording")
        })
    });
    let all = list.as_array().unwrap();
    assert_eq!(all.len(), CAP, "only the admitted are stored: {list:#}");
    for m in all {
        assert_eq!(m["state"], "complete", "{m:#}\n{}", ivm.log());
        assert!(m["duration_ms"].as_i64().unwrap_or(0) > 0, "{m:#}");
    }
}
