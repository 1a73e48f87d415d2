//! No phone number, message code or PIN in the log at info level or above
//! (they are for debug only): a whole scenario — a live delivery heard and
//! saved, a message not answered, stored and notified, a wrong and a right
//! PIN from another phone, a retrieval by code that deletes it — runs on
//! the fake switch with the log captured at INFO, and again at DEBUG to
//! show the scenario did carry the numbers.
//! Its own test binary: the capture is the process's global subscriber.

#[path = "support/fake_switch.rs"]
mod fake_switch;
#[path = "support/serve.rs"]
mod serve;

use std::io::Write;
use std::sync::{Arc, Mutex};

use fake_switch::Command;
use ivm::domain::{DeliveryState, MessageState};
use ivm::switch::HangupCause;
use serve::{data_dir, keys, speech, start};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const ALICE: &str = "314159";
const BOB: &str = "271828";
const CAROL: &str = "161803";
const BOB_PIN: &str = "852963";
const WRONG_PIN: &str = "741852";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_scenario_logs_no_number_code_or_pin_at_info() {
    let info = Buffer::default();
    let debug = Buffer::default();
    let subscriber = Registry::default()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(info.clone())
                .with_filter(LevelFilter::INFO),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(debug.clone())
                .with_filter(LevelFilter::DEBUG),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = data_dir(&[
        (ALICE, "Alice", None),
        (BOB, "Bob", Some(BOB_PIN)),
        (CAROL, "Carol", None),
    ]);
    // Ten-digit codes: no chance of meeting one by accident in the log.
    let (mut script, server) = start(dir, |c| c.numbering.message_code_digits = 10).await;

    // Live: Bob answers, hears it and saves it.
    let alice = script.dial(ALICE, &format!("*77{BOB}"));
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(300, 1)));
    let bob = script.answer(&ring.id);
    script.hang_up(&alice);
    script.expect_sound(&bob, "listener-menu").await;
    script.press(&bob, '4');
    script.expect_sound(&bob, "message-saved").await;
    server
        .wait_messages(BOB, "heard live", |rows| {
            rows.len() == 1 && rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;

    // Not answered: stored with a code and notified by text.
    let alice = script.dial(ALICE, &format!("*77{BOB}"));
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(400, 2)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    let rows = server
        .wait_messages(BOB, "stored unheard", |rows| {
            rows.len() == 2
                && rows
                    .iter()
                    .any(|r| r.state == MessageState::Complete && r.code.is_some())
        })
        .await;
    let code = rows.iter().find_map(|r| r.code.clone()).unwrap();
    script
        .expect("the text to the target", |c| {
            matches!(c, Command::Text { .. })
        })
        .await;

    // Carol's phone: a wrong PIN, then Bob's.
    let carol = script.dial(CAROL, &format!("*55{code}"));
    script.expect_sound(&carol, "beep").await;
    keys(&script, &carol, &format!("{BOB}*{WRONG_PIN}#"));
    script.expect_sound(&carol, "invalid-number").await;
    let carol = script.dial(CAROL, &format!("*55{code}"));
    script.expect_sound(&carol, "beep").await;
    keys(&script, &carol, &format!("{BOB}*{BOB_PIN}#"));
    script.expect_sound(&carol, "listener-menu").await;
    script.hang_up(&carol);

    // Bob's own phone, by code: the menu deletes it.
    let bob = script.dial(BOB, &format!("*55{code}"));
    script.expect_sound(&bob, "listener-menu").await;
    script.press(&bob, '7');
    script.expect_sound(&bob, "message-deleted").await;
    server
        .wait_messages(BOB, "deleted", |rows| {
            rows.iter()
                .any(|r| r.delivery_state == Some(DeliveryState::Deleted))
        })
        .await;
    server.stop().await;

    let info = info.text();
    let debug = debug.text();
    let secrets = [ALICE, BOB, CAROL, BOB_PIN, WRONG_PIN, code.as_str()];
    // The INFO capture saw the scenario...
    for line in [
        "instant message started",
        "notifications of a message not heard live written",
        "wrong retrieval attempt",
        "message deleted",
    ] {
        assert!(info.contains(line), "{line:?} missing from:\n{info}");
    }
    // ...and none of its numbers, codes or PINs.
    for secret in secrets {
        let leaks: Vec<&str> = info.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged at info: {leaks:#?}");
    }
    // The numbers and the code were there to leak: debug shows them.
    for shown in [ALICE, BOB, code.as_str()] {
        assert!(debug.contains(shown), "{shown} not even at debug");
    }
}
