//! `ivm serve` end to end in-process, on a fake switch driven by a script:
//! a live delivery, a stored one, a retrieval by code (from the target's
//! phone, and from another with extension and PIN, up to the lock-out), a
//! live retrieval of a message still being recorded, `*55` alone, a
//! missed-call dial-back and a reply from the listener's menu, each in
//! well under a second.
//! What the server asked of the switch is checked command by command;
//! what it stored is read back from the store and the message files.

#[path = "support/fake_switch.rs"]
mod fake_switch;
#[path = "support/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};

use fake_switch::{Command, Script};
use ivm::domain::{DeliveryState, MessageState};
use ivm::store::{MessageRow, Store};
use ivm::switch::{CallId, HangupCause, Media};
use serve::{Server, speech};

/// Alice 1001 and Bob 1002 (PIN 802468) exist; `setup` may add more. A
/// stop hangs up what is still going at once (no grace to wait out).
async fn start(setup: impl FnOnce(&mut Store)) -> (Script, Server) {
    let dir = serve::data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some("802468"))]);
    setup(&mut Store::open(dir.path()).unwrap());
    serve::start(dir, |c| c.server.shutdown_grace_seconds = 0).await
}

fn file_len_samples(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 2).unwrap_or(0)
}

/// Every play of `call` starts where the one before truly stopped — no
/// audio repeated, none skipped — and the last reaches the end of the file.
fn assert_played_whole(script: &Script, call: &CallId) -> PathBuf {
    let plays = script.file_plays(call);
    assert!(!plays.is_empty(), "{call} heard no message");
    assert_eq!(plays[0].0, 0, "from the start: {plays:?}");
    for pair in plays.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "each play goes on: {plays:?}");
    }
    let (_, last_stop, path) = plays.last().unwrap().clone();
    assert_eq!(last_stop, file_len_samples(&path), "to its end: {plays:?}");
    assert!(last_stop > 0);
    path
}

/// Alice leaves a message of `ms` (and a bit) for Bob, who does not answer.
/// Returns once it is stored unheard.
async fn stored_message(script: &mut Script, server: &Server, ms: u32) -> MessageRow {
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert_eq!(
        (ring.target.as_str(), ring.caller_id_number.as_str()),
        ("1002", "1001")
    );
    assert!(script.say(&alice, &speech(ms / 2, 1)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    assert!(script.say(&alice, &speech(ms / 2, 2)));
    script.hang_up(&alice);
    let rows = server
        .wait_messages("1002", "the message stored unheard", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Unheard)
        })
        .await;
    rows[0].clone()
}

#[tokio::test]
async fn a_live_delivery_plays_the_whole_message_then_the_menu_saves_it() {
    let (mut script, server) = start(|_| {}).await;
    let alice = script.dial("1001", "*771002");
    let capture = script.expect_recording(&alice).await;
    // The recording is attached before the answer: the first word is in.
    script
        .expect("the caller answered", |c| {
            *c == Command::Answer(alice.clone())
        })
        .await;
    script.expect_sound(&alice, "beep").await;
    let ring = script.expect_originate().await;
    assert_eq!(ring.target, "1002");
    assert_eq!(ring.caller_id_name, "IVM Alice");
    assert!(script.say(&alice, &speech(400, 1)));
    let bob = script.answer(&ring.id);
    script.expect_sound(&alice, "accepted").await;
    assert!(script.say(&alice, &speech(600, 2)));
    script.press(&alice, '#');
    script
        .expect("the caller stopped", |c| {
            *c == Command::StopRecording(alice.clone())
        })
        .await;
    script.expect_sound(&bob, "listener-menu").await;
    script.press(&bob, '4');
    script.expect_sound(&bob, "message-saved").await;
    script
        .expect(
            "the listener hung up",
            |c| matches!(c, Command::Hangup(call, _) if *call == bob),
        )
        .await;
    let listen = assert_played_whole(&script, &bob);
    let rows = server
        .wait_messages("1002", "heard and its WAV kept", |rows| {
            rows.len() == 1
                && rows[0].delivery_state == Some(DeliveryState::Heard)
                && rows[0].duration_ms.is_some()
                && !capture.exists()
        })
        .await;
    // One second said at 48 kHz is one second stored at 8 kHz, all of it
    // heard (the listen stream is at most that long: silences compress).
    assert_eq!(rows[0].duration_ms, Some(1000));
    assert_eq!(rows[0].fragments, 1);
    let heard = file_len_samples(&listen);
    assert!((4000..=8000).contains(&heard), "{heard} samples heard");
    assert!(
        server
            .data_dir()
            .join("messages")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().path().extension().is_some_and(|x| x == "wav") })
    );
    server.stop().await;
}

#[tokio::test]
async fn a_message_not_answered_is_stored_whole_and_notified() {
    let (mut script, server) = start(|_| {}).await;
    let row = stored_message(&mut script, &server, 1000).await;
    assert_eq!(row.duration_ms, Some(1000));
    assert_eq!(row.from, "1001");
    let code = row.code.clone().unwrap();
    // The default channels: a text to the desk phone and the lamp.
    let text = script
        .expect("the text to the target", |c| {
            matches!(c, Command::Text { .. })
        })
        .await;
    let Command::Text { endpoint, body, .. } = text else {
        unreachable!()
    };
    assert_eq!(endpoint, "1002");
    assert!(body.contains(&format!("550{code}1")), "{body}");
    script
        .expect(
            "the lamp",
            |c| matches!(c, Command::Lamp { mailbox, new_messages: 1, .. } if mailbox == "1002"),
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn retrieval_by_code_plays_the_message_and_the_menu_deletes_it() {
    let (mut script, server) = start(|_| {}).await;
    let row = stored_message(&mut script, &server, 800).await;
    let code = row.code.unwrap();
    let bob = script.dial("1002", &format!("*55{code}"));
    script
        .expect("the retrieval answered", |c| {
            *c == Command::Answer(bob.clone())
        })
        .await;
    script.expect_sound(&bob, "beep").await;
    script.expect_sound(&bob, "listener-menu").await;
    let message = assert_played_whole(&script, &bob);
    assert_eq!(
        message.extension().and_then(|x| x.to_str()),
        Some("sln"),
        "the stored message, not a listen stream: {message:?}"
    );
    script.press(&bob, '7');
    script.expect_sound(&bob, "message-deleted").await;
    script.expect_sound(&bob, "goodbye").await;
    script
        .expect(
            "hung up",
            |c| matches!(c, Command::Hangup(call, _) if *call == bob),
        )
        .await;
    server
        .wait_messages("1002", "deleted", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Deleted)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn answering_the_missed_call_plays_the_message_it_announces() {
    let (mut script, server) = start(|store| {
        store
            .set_notify_channels("1002", Some(&["smart_caller_id"]), 0)
            .unwrap();
    })
    .await;
    let row = stored_message(&mut script, &server, 600).await;
    let code = row.code.unwrap();
    let missed = script.expect_originate().await;
    assert_eq!(missed.target, "1002");
    assert_eq!(missed.caller_id_number, format!("550{code}1"));
    assert_eq!(missed.caller_id_name, "Alice");
    let bob = script.answer(&missed.id);
    script.expect_sound(&bob, "beep").await;
    script.expect_sound(&bob, "listener-menu").await;
    assert_played_whole(&script, &bob);
    script.press(&bob, '4');
    script.expect_sound(&bob, "message-saved").await;
    script.expect_sound(&bob, "goodbye").await;
    server
        .wait_messages("1002", "heard on the dial-back", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn reply_from_the_menu_records_a_message_back_on_the_same_call() {
    let (mut script, server) = start(|_| {}).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(500, 3)));
    let bob = script.answer(&ring.id);
    script.hang_up(&alice);
    script.expect_sound(&bob, "listener-menu").await;
    script.press(&bob, '2');
    // Bob's call now carries his message back to Alice.
    let reply_capture = script.expect_recording(&bob).await;
    let back = script.expect_originate().await;
    assert_eq!(
        (back.target.as_str(), back.caller_id_number.as_str()),
        ("1001", "1002")
    );
    assert_eq!(back.caller_id_name, "IVM Bob");
    assert!(script.say(&bob, &speech(700, 4)));
    script.fail(&back.id, HangupCause::Busy);
    script.hang_up(&bob);
    let rows = server
        .wait_messages("1001", "the reply stored for alice", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete && !reply_capture.exists()
        })
        .await;
    assert_eq!(rows[0].from, "1002");
    assert_eq!(rows[0].delivery_state, Some(DeliveryState::Rejected));
    assert_eq!(rows[0].duration_ms, Some(700));
    assert!(
        !reply_capture.exists(),
        "the capture is dropped once stored"
    );
    let first = server.messages("1002");
    assert_eq!(first[0].delivery_state, Some(DeliveryState::Heard));
    // Alice was busy: Bob hears of it by text; Alice is not notified.
    let text = script
        .expect(
            "the status to the reply's sender",
            |c| matches!(c, Command::Text { endpoint, .. } if endpoint == "1002"),
        )
        .await;
    let Command::Text { body, .. } = text else {
        unreachable!()
    };
    assert_eq!(body, "Your message to 1001 was rejected.");
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Text { endpoint, .. } if endpoint == "1001")),
        "nothing to a target who rejected"
    );
    // No media of the first message played on the reply's caller leg.
    assert!(
        script
            .transcript
            .iter()
            .all(|c| !matches!(c, Command::Play { call, request, .. }
                if *call == alice && matches!(request.media, Media::File { .. })))
    );
    server.stop().await;
}

/// Key `digits` on `call`, one by one.
fn keys(script: &Script, call: &CallId, digits: &str) {
    for digit in digits.chars() {
        script.press(call, digit);
    }
}

#[tokio::test]
async fn another_phone_retrieves_with_extension_and_pin_and_is_locked_out_on_the_sixth_miss() {
    let (mut script, server) = start(|_| {}).await;
    let code = stored_message(&mut script, &server, 600)
        .await
        .code
        .unwrap();
    // Carol's phone (1003) has no message under that code: a beep asks
    // for extension * PIN #.
    let carol = script.dial("1003", &format!("*55{code}"));
    let beep = script.expect_sound(&carol, "beep").await;
    let Command::Play { request, .. } = beep else {
        unreachable!()
    };
    assert_eq!(request.interrupt_digits, "0123456789*#");
    keys(&script, &carol, "1002*802468#");
    // Bob's PIN: his message plays after the beep that marks its start.
    script.expect_sound(&carol, "beep").await;
    script.expect_sound(&carol, "listener-menu").await;
    assert_played_whole(&script, &carol);
    script.hang_up(&carol);
    server
        .wait_messages("1002", "heard from another phone", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    // Four wrong PINs: each ends with "invalid"; carol's phone has now
    // missed five times (each try's code counts against it).
    for _ in 0..4 {
        let call = script.dial("1003", &format!("*55{code}"));
        script.expect_sound(&call, "beep").await;
        keys(&script, &call, "1002*111111#");
        script.expect_sound(&call, "invalid-number").await;
        script
            .expect(
                "hung up",
                |c| matches!(c, Command::Hangup(h, _) if *h == call),
            )
            .await;
    }
    // The sixth try is refused before any PIN is asked.
    let call = script.dial("1003", &format!("*55{code}"));
    script.expect_sound(&call, "error").await;
    script
        .expect(
            "hung up",
            |c| matches!(c, Command::Hangup(h, _) if *h == call),
        )
        .await;
    assert!(
        script
            .transcript
            .iter()
            .rev()
            .take(3)
            .all(|c| c.sound() != Some("beep")),
        "no PIN asked: {:#?}",
        &script.transcript[script.transcript.len() - 3..]
    );
    server.stop().await;
}

#[tokio::test]
async fn star55_alone_plays_the_newest_unheard_then_the_next_then_says_goodbye() {
    let (mut script, server) = start(|_| {}).await;
    stored_message(&mut script, &server, 400).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(800, 9)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    let rows = server
        .wait_messages("1002", "two stored unheard", |rows| {
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r.delivery_state == Some(DeliveryState::Unheard))
        })
        .await;
    // Newest first (the list is newest first too).
    let (newer, older) = (rows[0].id, rows[1].id);
    let bob = script.dial("1002", "*55");
    script.expect_sound(&bob, "listener-menu").await;
    let first = assert_played_whole(&script, &bob);
    script.press(&bob, '4');
    script.expect_sound(&bob, "message-saved").await;
    script.expect_sound(&bob, "listener-menu").await;
    let plays = script.file_plays(&bob);
    let second = plays.last().unwrap().2.clone();
    assert_ne!(first, second, "the next message, not the same again");
    script.press(&bob, '7');
    script.expect_sound(&bob, "message-deleted").await;
    script.expect_sound(&bob, "goodbye").await;
    let rows = server
        .wait_messages("1002", "saved and deleted", |rows| {
            rows.iter()
                .all(|r| r.delivery_state != Some(DeliveryState::Unheard))
        })
        .await;
    let state = |id| rows.iter().find(|r| r.id == id).unwrap().delivery_state;
    assert_eq!(state(newer), Some(DeliveryState::Heard));
    assert_eq!(state(older), Some(DeliveryState::Deleted));
    server.stop().await;
}

#[tokio::test]
async fn a_message_still_being_recorded_is_retrieved_live_to_its_last_sample() {
    let (mut script, server) = start(|_| {}).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    script.fail(&ring.id, HangupCause::NoAnswer);
    assert!(script.say(&alice, &speech(500, 11)));
    let rows = server
        .wait_messages("1002", "the message being recorded", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Recording
        })
        .await;
    let code = rows[0].code.clone().unwrap();
    let bob = script.dial("1002", &format!("*55{code}"));
    script.expect_sound(&bob, "beep").await;
    // Bob plays what is on disk; Alice goes on talking meanwhile.
    script
        .expect("a play of the message", |c| {
            matches!(c, Command::Play { call, request, .. }
                if *call == bob && matches!(request.media, Media::File { .. }))
        })
        .await;
    assert!(script.say(&alice, &speech(700, 12)));
    script.hang_up(&alice);
    script.expect_sound(&bob, "listener-menu").await;
    let message = assert_played_whole(&script, &bob);
    assert!(
        script.file_plays(&bob).len() >= 2,
        "played in several goes as it grew: {:?}",
        script.file_plays(&bob)
    );
    // The whole 1.2 s, as stored.
    assert_eq!(file_len_samples(&message), 9_600);
    server
        .wait_messages("1002", "heard live from storage", |rows| {
            rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_number_not_in_the_plan_is_answered_with_a_prompt_and_hung_up() {
    let (mut script, server) = start(|_| {}).await;
    let call = script.dial("1001", "*99");
    script
        .expect("answered", |c| *c == Command::Answer(call.clone()))
        .await;
    script.expect_sound(&call, "invalid-number").await;
    script
        .expect("hung up", |c| {
            *c == Command::Hangup(call.clone(), HangupCause::Normal)
        })
        .await;
    assert!(server.messages("1002").is_empty());
    server.stop().await;
}
