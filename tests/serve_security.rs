//! The server's defences on the fake switch: the PIN lock-out (in SQLite,
//! per mailbox and source, surviving a restart, sparing the owner's phone).

#[path = "support/fake_switch.rs"]
mod fake_switch;
#[path = "support/serve.rs"]
mod serve;

use fake_switch::{Command, Script};
use ivm::domain::{DeliveryState, MessageState};
use ivm::switch::{CallId, HangupCause};
use serve::{data_dir, keys, speech, start};

const BOB_PIN: &str = "802468";

async fn hung_up(script: &mut Script, call: &CallId) {
    script
        .expect(
            "hung up",
            |c| matches!(c, Command::Hangup(h, _) if h == call),
        )
        .await;
}

/// `from` dials `*55` alone (not a user: a beep asks for extension * PIN)
/// and keys Bob's extension and `pin`; returns the call and the sound that
/// came after the entry.
async fn pin_for_bob(script: &mut Script, from: &str, pin: &str) -> (CallId, String) {
    let call = script.dial(from, "*55");
    script.expect_sound(&call, "beep").await;
    keys(script, &call, &format!("1002*{pin}#"));
    let next = script
        .expect("what follows the PIN", |c| {
            c.call() == Some(&call) && c.sound().is_some()
        })
        .await;
    (call, next.sound().unwrap().to_owned())
}

#[tokio::test]
async fn five_wrong_pins_lock_the_mailbox_to_that_phone_across_a_restart_but_not_the_owner() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some(BOB_PIN))]);
    let (mut script, server) = start(dir, |_| {}).await;
    // A message for Bob, stored unheard.
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(400, 1)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    let rows = server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    let code = rows[0].code.clone().unwrap();

    // Five wrong PINs from 1003's phone.
    for i in 0..5 {
        let (call, next) = pin_for_bob(&mut script, "1003", "135790").await;
        assert_eq!(next, "invalid-number", "attempt {i}");
        hung_up(&mut script, &call).await;
    }
    // The sixth, with the right PIN, is refused.
    let (call, next) = pin_for_bob(&mut script, "1003", BOB_PIN).await;
    assert_eq!(next, "error", "locked out");
    hung_up(&mut script, &call).await;

    // A restart: a new server on the same data dir.
    let dir = server.stop().await;
    let (mut script, server) = start(dir, |_| {}).await;
    let (call, next) = pin_for_bob(&mut script, "1003", BOB_PIN).await;
    assert_eq!(next, "error", "still locked after the restart");
    hung_up(&mut script, &call).await;

    // Another phone with the right PIN: the lock is 1003's alone.
    let (dave, next) = pin_for_bob(&mut script, "1004", BOB_PIN).await;
    assert_eq!(next, "message-from", "the message's intro");
    script.expect_sound(&dave, "listener-menu").await;
    script.hang_up(&dave);
    server
        .wait_messages("1002", "heard", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    // Bob's own phone, by code, during that flood.
    let bob = script.dial("1002", &format!("*55{code}"));
    script.expect_sound(&bob, "beep").await;
    script.expect_sound(&bob, "listener-menu").await;
    script.hang_up(&bob);
    server.stop().await;
}

/// `[limits] max_concurrent_messages = 2`: two messages in progress, a
/// third caller hears "try later" and nothing of theirs is stored; the
/// answering target takes no permit; once one ends a new caller gets one.
#[tokio::test]
async fn past_the_message_cap_a_caller_hears_try_later_and_nothing_is_stored() {
    let dir = data_dir(&[
        ("1001", "Alice", None),
        ("1002", "Bob", None),
        ("1003", "Carol", None),
        ("1004", "Dave", None),
    ]);
    let (mut script, server) = start(dir, |c| {
        c.limits.max_concurrent_messages = 2;
        c.server.shutdown_grace_seconds = 0;
    })
    .await;
    let alice = script.dial("1001", "*771004");
    script.expect_recording(&alice).await;
    let to_dave = script.expect_originate().await;
    let bob = script.dial("1002", "*771004");
    script.expect_recording(&bob).await;
    script.expect_originate().await;
    // Dave answers Alice's: an answering leg is never refused by the cap.
    let dave = script.answer(&to_dave.id);
    assert!(script.say(&alice, &speech(300, 1)));
    script.expect_sound(&alice, "accepted").await;

    let carol = script.dial("1003", "*771004");
    script.expect_sound(&carol, "try-later").await;
    hung_up(&mut script, &carol).await;
    assert!(
        !script.transcript.iter().any(|c| matches!(
            c,
            Command::StartRecording { call, .. } if *call == carol
        )),
        "nothing recorded for the refused caller"
    );

    // Alice's message ends: its permit comes back.
    script.hang_up(&alice);
    script.expect_sound(&dave, "listener-menu").await;
    script.hang_up(&dave);
    server
        .wait_messages("1004", "alice's heard", |rows| {
            rows.iter()
                .any(|r| r.from == "1001" && r.state == MessageState::Complete)
        })
        .await;
    // The permit comes back when Alice's flow has wound up, just after:
    // Carol tries again until she gets one (each refusal stores nothing).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let carol = loop {
        let carol = script.dial("1003", "*771004");
        let next = script
            .expect("a recording or try-later", |c| {
                matches!(c, Command::StartRecording { call, .. } if *call == carol)
                    || (c.call() == Some(&carol) && c.sound() == Some("try-later"))
            })
            .await;
        if matches!(next, Command::StartRecording { .. }) {
            break carol;
        }
        hung_up(&mut script, &carol).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no permit came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    script.hang_up(&carol);
    script.hang_up(&bob);
    let rows = server
        .wait_messages("1004", "all three ended", |rows| {
            rows.len() == 3 && rows.iter().all(|r| r.state != MessageState::Recording)
        })
        .await;
    assert_eq!(
        rows.iter().filter(|r| r.from == "1003").count(),
        1,
        "only carol's second try is stored: {rows:#?}"
    );
    server.stop().await;
}

/// Shutdown during a message: new calls are refused at once, the message
/// in progress goes on to its end and is stored whole, its notification is
/// sent before the server returns.
#[tokio::test]
async fn shutdown_lets_the_message_in_progress_finish_and_sends_its_notification() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]);
    let (mut script, server) = start(dir, |c| c.server.shutdown_grace_seconds = 30).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(300, 1)));
    let stopping = server.begin_stop();
    // A new call while stopping: hung up, no flow.
    let carol = script.dial("1003", "*771002");
    hung_up(&mut script, &carol).await;
    assert!(!stopping.is_finished(), "waits for the call in progress");
    // The message goes on; Bob does not answer; Alice ends it.
    script.fail(&ring.id, HangupCause::NoAnswer);
    assert!(script.say(&alice, &speech(300, 2)));
    script.hang_up(&alice);
    let text = script
        .expect(
            "the notification, sent while stopping",
            |c| matches!(c, Command::Text { endpoint, .. } if endpoint == "1002"),
        )
        .await;
    assert!(matches!(text, Command::Text { .. }));
    let dir = stopping.finish().await;
    let rows = ivm::store::Store::open(dir.path())
        .unwrap()
        .list_messages(Some("1002"))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, MessageState::Complete);
    assert_eq!(rows[0].duration_ms, Some(600));
    assert_eq!(rows[0].delivery_state, Some(DeliveryState::Unheard));
}

/// Past the grace the calls still going are hung up: the message is stored
/// with what was said, nothing is left `recording`.
#[tokio::test]
async fn past_the_grace_the_calls_are_hung_up_and_their_messages_stored() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]);
    let (mut script, server) = start(dir, |c| c.server.shutdown_grace_seconds = 0).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    script.expect_originate().await;
    assert!(script.say(&alice, &speech(400, 1)));
    let dir = server.stop().await;
    hung_up(&mut script, &alice).await;
    let rows = ivm::store::Store::open(dir.path())
        .unwrap()
        .list_messages(Some("1002"))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].state, MessageState::Recording, "{rows:#?}");
    assert_eq!(rows[0].duration_ms, Some(400));
}

/// The caller ID is not an identity: a call the switch cannot vouch for,
/// whatever number it shows, gets the PIN beep, not the owner's messages;
/// with the PIN it plays.
#[tokio::test]
async fn a_caller_the_switch_cannot_vouch_for_is_asked_for_the_pin() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some(BOB_PIN))]);
    let (mut script, server) = start(dir, |c| c.server.shutdown_grace_seconds = 0).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(300, 1)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    let rows = server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    let code = rows[0].code.clone().unwrap();
    for dialed in ["*55".to_owned(), format!("*55{code}")] {
        // Showing Bob's number, not vouched: a beep for extension * PIN.
        let forged = script.dial_as("1002", None, &dialed);
        let beep = script.expect_sound(&forged, "beep").await;
        let Command::Play { request, .. } = beep else {
            unreachable!()
        };
        assert_eq!(request.interrupt_digits, "0123456789*#", "{dialed}");
        script.hang_up(&forged);
    }
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Play { request, .. }
                if matches!(request.media, ivm::switch::Media::File { .. }))),
        "no message played without a PIN"
    );
    // With Bob's PIN it plays.
    let call = script.dial_as("1002", None, "*55");
    script.expect_sound(&call, "beep").await;
    keys(&script, &call, &format!("1002*{BOB_PIN}#"));
    script.expect_sound(&call, "beep").await;
    script.expect_sound(&call, "listener-menu").await;
    server.stop().await;
}

/// `[retention] unheard_days = 7`: a message left unheard ten days ago is
/// deleted when `serve` starts — rows, code and audio — and `*55` + its
/// code finds nothing; a newer one stays.
#[tokio::test]
async fn retention_sweeps_an_old_unheard_message_so_its_code_retrieves_nothing() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some(BOB_PIN))]);
    let (mut script, server) = start(dir, |_| {}).await;
    for seed in [1, 2] {
        let alice = script.dial("1001", "*771002");
        script.expect_recording(&alice).await;
        let ring = script.expect_originate().await;
        assert!(script.say(&alice, &speech(400, seed)));
        script.fail(&ring.id, HangupCause::NoAnswer);
        script.hang_up(&alice);
        server
            .wait_messages("1002", "stored", |rows| {
                rows.len() == seed as usize
                    && rows.iter().all(|r| r.state == MessageState::Complete)
            })
            .await;
    }
    let rows = server.messages("1002");
    // Newest first: the older message is the last row.
    let (old, new) = (rows[1].clone(), rows[0].clone());
    let dir = server.stop().await;
    let audio: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The first message was left ten days ago.
    let db = rusqlite::Connection::open(dir.path().join("ivm.db")).unwrap();
    let ten_days_ms = 10 * 24 * 3600 * 1000i64;
    db.execute(
        "UPDATE messages SET started_at = started_at - ?2 WHERE id = ?1",
        rusqlite::params![old.id.0, ten_days_ms],
    )
    .unwrap();
    drop(db);

    let (mut script, server) = start(dir, |c| c.retention.unheard_days = 7).await;
    let rows = server
        .wait_messages("1002", "the old message swept", |rows| rows.len() == 1)
        .await;
    assert_eq!(rows[0].id, new.id);
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(server.data_dir().join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.len() < audio.len(), "the old audio is gone: {left:?}");
    assert!(
        left.iter().all(|p| !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&old.started_at_ms.to_string())),
        "{left:?}"
    );
    // Bob's own phone: the old code finds nothing, the new one plays.
    // An unknown code asks for extension * PIN (another phone, perhaps);
    // with Bob's PIN it is still unknown.
    let bob = script.dial("1002", &format!("*55{}", old.code.clone().unwrap()));
    script.expect_sound(&bob, "beep").await;
    keys(&script, &bob, &format!("1002*{BOB_PIN}#"));
    let next = script
        .expect("what the old code gets", |c| {
            c.call() == Some(&bob) && c.sound().is_some()
        })
        .await;
    assert_eq!(next.sound(), Some("invalid-number"));
    hung_up(&mut script, &bob).await;
    assert!(
        script.file_plays(&bob).is_empty(),
        "no audio of it is played"
    );
    let bob = script.dial("1002", &format!("*55{}", new.code.clone().unwrap()));
    script.expect_sound(&bob, "beep").await;
    script.expect_sound(&bob, "listener-menu").await;
    script.hang_up(&bob);
    server.stop().await;
}

/// What `kill -9` mid-message leaves (stream mode): a message `recording`
/// with 1.5 s on disk, its target still ringing. The next `serve` makes
/// it `partial` with all of it, its delivery `unheard`, and tells the
/// target as for any message not heard live (text and lamp); the code
/// plays it.
#[tokio::test]
async fn a_message_cut_short_by_a_crash_is_partial_and_its_target_notified() {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some(BOB_PIN))]);
    {
        let mut store = ivm::store::Store::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("messages")).unwrap();
        let samples: Vec<u8> = speech(1_500, 4)
            .iter()
            .step_by(6)
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(samples.len(), 24_000);
        std::fs::write(dir.path().join("messages/1-crash.sln"), &samples).unwrap();
        let id = store
            .create_message(&ivm::store::NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln",
                sample_rate: 8000,
                audio_path: "messages/1-crash.sln",
                targets: vec![("extension", "1002", "424242")],
            })
            .unwrap();
        store
            .set_delivery_state(id, "1002", DeliveryState::Ringing)
            .unwrap();
    }
    let (mut script, server) = start(dir, |_| {}).await;
    let text = script
        .expect(
            "a text to the target",
            |c| matches!(c, Command::Text { endpoint, .. } if endpoint == "1002"),
        )
        .await;
    let Command::Text { body, .. } = text else {
        unreachable!()
    };
    assert!(body.contains("424242"), "the retrieval number: {body}");
    script
        .expect(
            "the lamp",
            |c| matches!(c, Command::Lamp { mailbox, new_messages: 1, .. } if mailbox == "1002"),
        )
        .await;
    let rows = server.messages("1002");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, MessageState::Partial);
    assert_eq!(rows[0].delivery_state, Some(DeliveryState::Unheard));
    assert_eq!((rows[0].duration_ms, rows[0].fragments), (Some(1_500), 2));
    let bob = script.dial("1002", "*55424242");
    script.expect_sound(&bob, "beep").await;
    script.expect_sound(&bob, "listener-menu").await;
    let plays = script.file_plays(&bob);
    assert_eq!(plays.last().map(|p| p.1), Some(12_000), "{plays:?}");
    script.hang_up(&bob);
    server.stop().await;
}

/// A message that failed on a disk so full that its delivery's last state
/// could not be written (still `ringing`): the next start ends the delivery
/// `unheard` and tells the target, as for a message a crash cut short.
#[tokio::test]
async fn a_failed_message_left_ringing_is_ended_and_notified_at_the_next_start() {
    open_delivery_is_ended_and_notified_at_the_next_start(
        MessageState::Failed,
        DeliveryState::Ringing,
    )
    .await;
}

/// `kill -9` while the target listened to a message already complete:
/// its delivery stays `listening`. The next start ends it `unheard` and
/// tells the target, so the message is not lost from their view.
#[tokio::test]
async fn a_listener_cut_off_by_a_crash_is_unheard_and_notified_at_the_next_start() {
    open_delivery_is_ended_and_notified_at_the_next_start(
        MessageState::Complete,
        DeliveryState::Listening,
    )
    .await;
}

async fn open_delivery_is_ended_and_notified_at_the_next_start(
    message: MessageState,
    delivery: DeliveryState,
) {
    let dir = data_dir(&[("1001", "Alice", None), ("1002", "Bob", Some(BOB_PIN))]);
    {
        let mut store = ivm::store::Store::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("messages")).unwrap();
        std::fs::write(dir.path().join("messages/1-cut.sln"), [0u8; 16_000]).unwrap();
        let id = store
            .create_message(&ivm::store::NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln",
                sample_rate: 8000,
                audio_path: "messages/1-cut.sln",
                targets: vec![("extension", "1002", "515151")],
            })
            .unwrap();
        store.set_message_state(id, message, Some(1_000)).unwrap();
        store.set_delivery_state(id, "1002", delivery).unwrap();
    }
    let (mut script, server) = start(dir, |_| {}).await;
    let text = script
        .expect(
            "a text to the target",
            |c| matches!(c, Command::Text { endpoint, .. } if endpoint == "1002"),
        )
        .await;
    let Command::Text { body, .. } = text else {
        unreachable!()
    };
    assert!(body.contains("515151"), "{body}");
    let rows = server.messages("1002");
    assert_eq!(rows[0].state, message);
    assert_eq!(rows[0].delivery_state, Some(DeliveryState::Unheard));
    server.stop().await;
}
