//! Presence and the caller's prompts, end to end in-process on the fake
//! switch: what the caller hears when the target does not answer, is busy,
//! cannot be reached, is offline or on do-not-disturb, and that the
//! target's presence and rules decide whether it is rung at all.

#[path = "support/fake_switch.rs"]
mod fake_switch;
#[path = "support/serve.rs"]
mod serve;

use std::time::Duration;

use fake_switch::{Command, Script};
use ivm::domain::{Activity, DeliveryRules, DeliveryState, MessageState, Reaction, UserStatus};
use ivm::store::{NewUser, Store};
use ivm::switch::{DeviceState, HangupCause};
use serve::{Server, speech};

/// Alice 1001 and Bob 1002 exist; `setup` may change the store first. The
/// stop does not wait for calls a scenario leaves up (a target still
/// ringing): no grace.
async fn start(setup: impl FnOnce(&mut Store)) -> (Script, Server) {
    let dir = serve::data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]);
    setup(&mut Store::open(dir.path()).unwrap());
    serve::start(dir, |c| c.server.shutdown_grace_seconds = 0).await
}

/// Alice dials Bob; the ring fails with `cause`: Alice, still talking,
/// hears `prompt`, and the message is stored whole in `state`.
async fn ring_fails_and_the_caller_hears(cause: HangupCause, prompt: &str, state: DeliveryState) {
    let (mut script, server) = start(|_| {}).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert!(script.say(&alice, &speech(300, 1)));
    script.fail(&ring.id, cause);
    script.expect_sound(&alice, prompt).await;
    assert!(script.say(&alice, &speech(300, 2)));
    script.hang_up(&alice);
    server
        .wait_messages("1002", "the message stored whole", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(state)
                && rows[0].duration_ms == Some(600)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn no_answer_tells_the_caller_the_message_is_stored() {
    ring_fails_and_the_caller_hears(
        HangupCause::NoAnswer,
        "not-answered-stored",
        DeliveryState::Unheard,
    )
    .await;
}

#[tokio::test]
async fn busy_from_the_phone_is_a_rejection_and_plays_the_reject_tone() {
    // A phone that declines usually answers 486 Busy Here.
    ring_fails_and_the_caller_hears(HangupCause::Busy, "rejected", DeliveryState::Rejected).await;
}

#[tokio::test]
async fn unreachable_tells_the_caller_not_available_stored() {
    ring_fails_and_the_caller_hears(
        HangupCause::Unreachable,
        "not-available-stored",
        DeliveryState::Unreachable,
    )
    .await;
}

#[tokio::test]
async fn a_decline_plays_the_reject_tone() {
    ring_fails_and_the_caller_hears(HangupCause::Rejected, "rejected", DeliveryState::Rejected)
        .await;
}

/// Wait until the store holds `done` of Bob's presence.
async fn wait_presence(server: &Server, what: &str, done: impl Fn(&ivm::domain::Presence) -> bool) {
    wait_presence_of(server, "1002", what, done).await
}

/// Wait until the store holds `done` of `user`'s presence.
async fn wait_presence_of(
    server: &Server,
    user: &str,
    what: &str,
    done: impl Fn(&ivm::domain::Presence) -> bool,
) {
    let deadline = tokio::time::Instant::now() + fake_switch::WAIT;
    loop {
        let p = Store::open(server.data_dir())
            .unwrap()
            .presence(user, ivm::store::now_ms())
            .unwrap()
            .unwrap();
        if done(&p) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {p:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Alice dials Bob, who is not rung: Alice hears `prompt` while still on
/// the line; returns the commands up to that prompt.
async fn not_rung(script: &mut Script, prompt: &str) -> fake_switch::Command {
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    script.expect_sound(&alice, "beep").await;
    let heard = script.expect_sound(&alice, prompt).await;
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Originate(o) if o.target == "1002")),
        "Bob is not rung: {:#?}",
        script.transcript
    );
    assert!(script.say(&alice, &speech(400, 3)), "still recording");
    script.hang_up(&alice);
    heard
}

#[tokio::test]
async fn offline_from_the_switch_is_not_rung_stored_and_notified_while_the_caller_talks() {
    let (mut script, server) = start(|_| {}).await;
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "the switch's word kept", |p| {
        p.registered == Some(false) && p.activity == Activity::Unavailable
    })
    .await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    // Notified at once: the text goes out while Alice is still talking
    // (before or after her prompt: the outbox and the call run apart).
    let is_text = |c: &Command| matches!(c, Command::Text { endpoint, .. } if endpoint == "1002");
    let is_prompt = |c: &Command| c.sound() == Some("not-available-stored");
    for (what, wanted) in [
        (
            "the text to the target",
            &is_text as &dyn Fn(&Command) -> bool,
        ),
        ("the prompt", &is_prompt),
    ] {
        if !script.transcript.iter().any(wanted) {
            script.expect(what, wanted).await;
        }
    }
    assert!(script.say(&alice, &speech(400, 3)), "still recording");
    script.hang_up(&alice);
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Originate(_))),
        "Bob is not rung"
    );
    server
        .wait_messages("1002", "stored whole", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Unreachable)
        })
        .await;
    // Bob registers again: the next message rings.
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "registered again", |p| p.registered == Some(true)).await;
    // (Registering also pushes the stored message: a call from "IVM messages".)
    let again = script.dial("1001", "*771002");
    script.expect_recording(&again).await;
    script
        .expect("Alice's message rings Bob", |c| {
            matches!(c, Command::Originate(o) if o.target == "1002" && o.caller_id_number == "1001")
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn dnd_is_stored_and_notified_by_the_lamp_only() {
    let (mut script, server) = start(|s| {
        s.set_user_status("1002", UserStatus::Dnd, None, ivm::store::now_ms())
            .unwrap();
    })
    .await;
    script.device("1002", DeviceState::Idle);
    not_rung(&mut script, "dnd-stored").await;
    let lamp = |c: &Command| matches!(c, Command::Lamp { mailbox, new_messages: 1, .. } if mailbox == "1002");
    // The outbox runs apart from the call: the lamp may come before the prompt.
    if !script.transcript.iter().any(lamp) {
        script.expect("the lamp", lamp).await;
    }
    server
        .wait_messages("1002", "stored unheard", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Unheard)
        })
        .await;
    // Everything written to the outbox (it is written before any send).
    let channels: Vec<String> = Store::open(server.data_dir())
        .unwrap()
        .outbox_list(None, 100)
        .unwrap()
        .into_iter()
        .map(|item| item.channel)
        .collect();
    assert_eq!(channels, ["mwi"], "no text to a user on do-not-disturb");
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Text { .. })),
        "{:#?}",
        script.transcript
    );
    server.stop().await;
}

#[tokio::test]
async fn on_a_call_with_rule_store_is_stored_at_once() {
    let (mut script, server) = start(|s| {
        let rules = DeliveryRules {
            busy: Reaction::Store,
            ..DeliveryRules::default()
        };
        s.set_rules("1002", &rules, ivm::store::now_ms()).unwrap();
    })
    .await;
    script.device("1002", DeviceState::InUse);
    wait_presence(&server, "on a call", |p| p.activity == Activity::OnCall).await;
    not_rung(&mut script, "busy-stored").await;
    server
        .wait_messages("1002", "stored busy", |rows| {
            rows.len() == 1 && rows[0].delivery_state == Some(DeliveryState::Busy)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn on_a_call_by_default_is_rung_for_the_users_own_ring_timeout() {
    let (mut script, server) = start(|s| {
        let rules = DeliveryRules {
            ring_timeout_seconds: Some(12),
            ..DeliveryRules::default()
        };
        s.set_rules("1002", &rules, ivm::store::now_ms()).unwrap();
    })
    .await;
    script.device("1002", DeviceState::InUse);
    wait_presence(&server, "on a call", |p| p.activity == Activity::OnCall).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert_eq!(ring.ring_timeout, Duration::from_secs(12));
    server.stop().await;
}

/// Bob dials a star code: answered, confirmed aloud, hung up.
async fn star_code(script: &mut Script, code: &str, prompt: &str) {
    let bob = script.dial("1002", code);
    script
        .expect("answered", |c| *c == Command::Answer(bob.clone()))
        .await;
    script.expect_sound(&bob, prompt).await;
    script
        .expect(
            "hung up after the confirmation",
            |c| matches!(c, Command::Hangup(call, _) if *call == bob),
        )
        .await;
}

#[tokio::test]
async fn dnd_by_star_code_is_confirmed_kept_and_cleared() {
    let (mut script, server) = start(|_| {}).await;
    star_code(&mut script, "*61", "dnd-on").await;
    wait_presence(&server, "dnd set", |p| p.status == UserStatus::Dnd).await;
    not_rung(&mut script, "dnd-stored").await;
    star_code(&mut script, "*63", "away-on").await;
    wait_presence(&server, "away set", |p| p.status == UserStatus::Away).await;
    star_code(&mut script, "*62", "available").await;
    wait_presence(&server, "available again", |p| {
        p.status == UserStatus::Available
    })
    .await;
    // Clearing do-not-disturb pushes the stored message; a new one rings.
    let push = script.expect_originate().await;
    assert_eq!(push.caller_id_name, "IVM messages");
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    script
        .expect(
            "Alice's message rings Bob",
            |c| matches!(c, Command::Originate(o) if o.caller_id_number == "1001"),
        )
        .await;
    // A caller who is no user cannot set a status.
    let stranger = script.dial("5555", "*61");
    script.expect_sound(&stranger, "invalid-number").await;
    server.stop().await;
}

#[tokio::test]
async fn presence_is_asked_at_start_and_again_after_a_reconnect() {
    let (script, server) = start(|_| {}).await;
    // At start the fake switch says every phone is idle.
    wait_presence(&server, "reconciled at start", |p| {
        p.registered == Some(true) && p.activity == Activity::Idle
    })
    .await;
    // Bob's phone goes away while ivm is not listening; then it reconnects.
    script.set_device_state("1002", DeviceState::Unavailable);
    script.reconnect();
    wait_presence(&server, "reconciled after the reconnect", |p| {
        p.registered == Some(false) && p.activity == Activity::Unavailable
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_user_added_while_serving_is_asked_for_at_the_first_message() {
    let (mut script, server) = start(|_| {}).await;
    script.set_device_state("1003", DeviceState::Unavailable);
    Store::open(server.data_dir())
        .unwrap()
        .add_user(&NewUser {
            extension: "1003",
            name: "Carol",
            mobile: None,
            pin: None,
        })
        .unwrap();
    let alice = script.dial("1001", "*771003");
    script.expect_recording(&alice).await;
    script.expect_sound(&alice, "not-available-stored").await;
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Originate(_))),
        "Carol is not rung"
    );
    let kept = Store::open(server.data_dir())
        .unwrap()
        .presence("1003", ivm::store::now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(kept.registered, Some(false), "the answer is kept");
    script.hang_up(&alice);
    server.stop().await;
}

/// The message file a call played, checked played whole: each play goes
/// on where the last stopped, the last reaches the end of the file.
fn played_whole(script: &Script, call: &ivm::switch::CallId) {
    let plays = script.file_plays(call);
    assert!(!plays.is_empty(), "{call} heard no message");
    assert_eq!(plays[0].0, 0, "from the start: {plays:?}");
    for pair in plays.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "each play goes on: {plays:?}");
    }
    let (_, last_stop, path) = plays.last().unwrap().clone();
    let len = std::fs::metadata(&path).map(|m| m.len() / 2).unwrap_or(0);
    assert_eq!(last_stop, len, "to its end: {plays:?}");
    assert!(last_stop > 0);
}

#[tokio::test]
async fn a_user_who_registers_is_called_and_hears_the_unheard_message_whole() {
    let (mut script, server) = start(|_| {}).await;
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    // Alice leaves a message for Bob, who is offline: not rung.
    not_rung(&mut script, "not-available-stored").await;
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;

    // Bob registers: ivm calls him at once.
    script.device("1002", DeviceState::Idle);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    assert_eq!(push.caller_id_name, "IVM messages");
    let bob = script.answer(&push.id);
    script.expect_sound(&bob, "new-messages").await;
    script.expect_sound(&bob, "listener-menu").await;
    played_whole(&script, &bob);
    script.press(&bob, '4');
    script.expect_sound(&bob, "message-saved").await;
    server
        .wait_messages("1002", "heard", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn pushes_stop_after_the_limit_and_a_ring_that_stops_is_no_return() {
    let (mut script, server) = start(|_| {}).await;
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    assert!(script.say(&alice, &speech(300, 5)));
    script.hang_up(&alice);
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    // Bob comes back three times and never answers: called three times.
    for _ in 0..3 {
        script.device("1002", DeviceState::Idle);
        let push = script.expect_originate().await;
        script.device("1002", DeviceState::Ringing);
        script.fail(&push.id, HangupCause::NoAnswer);
        // The ring stopping does not call again.
        script.device("1002", DeviceState::Idle);
        script.device("1002", DeviceState::Unavailable);
        wait_presence(&server, "offline again", |p| p.registered == Some(false)).await;
    }
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "back", |p| p.activity == Activity::Idle).await;
    // A fresh message is pushed again; the old limit does not hold it back.
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    let originates = script
        .transcript
        .iter()
        .filter(|c| matches!(c, Command::Originate(_)))
        .count();
    assert_eq!(originates, 4, "three pushes, then the new message's ring");
    assert_eq!(ring.caller_id_number, "1001");
    server.stop().await;
}

#[tokio::test]
async fn the_contact_count_is_kept_and_none_means_offline() {
    let (mut script, server) = start(|_| {}).await;
    script.contacts("1002", 2);
    wait_presence(&server, "two contacts", |p| {
        p.contacts == 2 && p.registered == Some(true)
    })
    .await;
    script.contacts("1002", 0);
    wait_presence(&server, "none left", |p| {
        p.contacts == 0 && p.registered == Some(false)
    })
    .await;
    not_rung(&mut script, "not-available-stored").await;
    server.stop().await;
}

#[tokio::test]
async fn on_a_call_with_rule_wait_the_message_is_delivered_when_the_call_ends() {
    let (mut script, server) = start(|s| {
        let rules = DeliveryRules {
            busy: Reaction::Wait,
            ..DeliveryRules::default()
        };
        s.set_rules("1002", &rules, ivm::store::now_ms()).unwrap();
    })
    .await;
    script.device("1002", DeviceState::InUse);
    wait_presence(&server, "on a call", |p| p.activity == Activity::OnCall).await;
    not_rung(&mut script, "busy-stored").await;
    server
        .wait_messages("1002", "stored busy", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Busy)
        })
        .await;
    // Bob hangs up his other call: ivm calls him with the message.
    script.device("1002", DeviceState::Idle);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    let bob = script.answer(&push.id);
    script.expect_sound(&bob, "new-messages").await;
    script.expect_sound(&bob, "listener-menu").await;
    played_whole(&script, &bob);
    server
        .wait_messages("1002", "heard", |rows| {
            rows[0].delivery_state == Some(DeliveryState::Heard)
        })
        .await;
    server.stop().await;
}

/// Carol (1003, added by the caller's `setup`) is offline and has a
/// stored message from Alice.
async fn carol_offline_with_a_message(script: &mut Script, server: &Server) {
    script.device("1003", DeviceState::Unavailable);
    wait_presence_of(server, "1003", "carol offline", |p| {
        p.registered == Some(false)
    })
    .await;
    let alice = script.dial("1001", "*771003");
    script.expect_recording(&alice).await;
    script.expect_sound(&alice, "not-available-stored").await;
    assert!(script.say(&alice, &speech(300, 9)));
    script.hang_up(&alice);
    server
        .wait_messages("1003", "carol's message stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
}

fn add_carol(s: &mut Store) {
    s.add_user(&NewUser {
        extension: "1003",
        name: "Carol",
        mobile: None,
        pin: None,
    })
    .unwrap();
}

/// A barrier for "no push to Bob": Carol registers and is pushed her
/// message. Presence changes are handled in order by one task, pushes are
/// handed to the router in that order, and each push flow's first step is
/// its decision in the store (this runtime runs tasks in the order they
/// were spawned, the store its jobs in the order sent): once Carol's push
/// is placed, any push of Bob's offered before it has been decided and
/// counted. Returns the calls the store counted for Bob's newest message.
async fn after_carols_push(script: &mut Script, server: &Server) -> u32 {
    script.device("1003", DeviceState::Unavailable);
    script.device("1003", DeviceState::Idle);
    let push = script
        .expect(
            "carol's push",
            |c| matches!(c, Command::Originate(o) if o.target == "1003"),
        )
        .await;
    let Command::Originate(push) = push else {
        unreachable!()
    };
    script.fail(&push.id, HangupCause::NoAnswer);
    let store = Store::open(server.data_dir()).unwrap();
    let newest = server.messages("1002")[0].id;
    store.push_calls("1002", newest).unwrap()
}

fn originates_to(script: &Script, target: &str) -> usize {
    script
        .transcript
        .iter()
        .filter(|c| matches!(c, Command::Originate(o) if o.target == target))
        .count()
}

#[tokio::test]
async fn a_call_that_ends_pushes_nothing_with_rule_store() {
    let (mut script, server) = start(|s| {
        add_carol(s);
        let rules = DeliveryRules {
            busy: Reaction::Store,
            ..DeliveryRules::default()
        };
        s.set_rules("1002", &rules, ivm::store::now_ms()).unwrap();
    })
    .await;
    carol_offline_with_a_message(&mut script, &server).await;
    script.device("1002", DeviceState::InUse);
    wait_presence(&server, "on a call", |p| p.activity == Activity::OnCall).await;
    not_rung(&mut script, "busy-stored").await;
    server
        .wait_messages("1002", "stored busy", |rows| {
            rows.len() == 1
                && rows[0].state == MessageState::Complete
                && rows[0].delivery_state == Some(DeliveryState::Busy)
        })
        .await;
    // Bob's call ends: with `store` he chose to find the message himself.
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "idle", |p| p.activity == Activity::Idle).await;
    assert_eq!(after_carols_push(&mut script, &server).await, 0);
    assert_eq!(
        originates_to(&script, "1002"),
        0,
        "{:#?}",
        script.transcript
    );
    // Registering again is a return: pushed as before.
    script.device("1002", DeviceState::Unavailable);
    script.device("1002", DeviceState::Idle);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    server.stop().await;
}

#[tokio::test]
async fn the_users_own_push_limit_holds_across_a_restart_and_0_never_pushes() {
    let (mut script, server) = start(|s| {
        add_carol(s);
        let rules = DeliveryRules {
            push_limit: 1,
            ..DeliveryRules::default()
        };
        s.set_rules("1002", &rules, ivm::store::now_ms()).unwrap();
    })
    .await;
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    not_rung(&mut script, "not-available-stored").await;
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    carol_offline_with_a_message(&mut script, &server).await;
    // One call, not answered.
    script.device("1002", DeviceState::Idle);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    script.fail(&push.id, HangupCause::NoAnswer);
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline again", |p| p.registered == Some(false)).await;

    // ivm restarts: the count is in the store.
    let dir = server.stop().await;
    let (mut script, server) = serve::start(dir, |c| c.server.shutdown_grace_seconds = 0).await;
    script.device("1002", DeviceState::Unavailable);
    script.device("1003", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "back", |p| p.activity == Activity::Idle).await;
    assert_eq!(after_carols_push(&mut script, &server).await, 1);
    assert_eq!(
        originates_to(&script, "1002"),
        0,
        "limit 1 reached before the restart: {:#?}",
        script.transcript
    );

    // A limit of 0: never pushed, even about a new message.
    let mut store = Store::open(server.data_dir()).unwrap();
    let never = DeliveryRules {
        push_limit: 0,
        ..DeliveryRules::default()
    };
    store
        .set_rules("1002", &never, ivm::store::now_ms())
        .unwrap();
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    not_rung(&mut script, "not-available-stored").await;
    server
        .wait_messages("1002", "the new one stored", |rows| {
            rows.len() == 2 && rows.iter().all(|r| r.state == MessageState::Complete)
        })
        .await;
    script.device("1003", DeviceState::Unavailable);
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "back", |p| p.activity == Activity::Idle).await;
    assert_eq!(after_carols_push(&mut script, &server).await, 0);
    assert_eq!(
        originates_to(&script, "1002"),
        0,
        "{:#?}",
        script.transcript
    );
    server.stop().await;
}

#[tokio::test]
async fn quiet_hours_hold_the_push_back_until_they_end_across_midnight() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    let minute = Arc::new(AtomicU16::new(23 * 60));
    let clock = ivm::server::LocalClock::manual(minute.clone(), Duration::from_millis(20));
    let dir = serve::data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]);
    let rules = DeliveryRules {
        quiet_hours: Some("22:00-07:00".parse().unwrap()),
        ..DeliveryRules::default()
    };
    Store::open(dir.path())
        .unwrap()
        .set_rules("1002", &rules, ivm::store::now_ms())
        .unwrap();
    let (mut script, server) =
        serve::start_with_clock(dir, |c| c.server.shutdown_grace_seconds = 0, clock).await;
    script.device("1002", DeviceState::Unavailable);
    wait_presence(&server, "offline", |p| p.registered == Some(false)).await;
    not_rung(&mut script, "not-available-stored").await;
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    // 23:00, in the quiet hours: Bob registers and is not called; the
    // push is owed.
    script.device("1002", DeviceState::Idle);
    let owed = || {
        Store::open(server.data_dir())
            .unwrap()
            .push_owed("1002")
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + fake_switch::WAIT;
    while !owed() {
        assert!(tokio::time::Instant::now() < deadline, "no push owed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        originates_to(&script, "1002"),
        0,
        "{:#?}",
        script.transcript
    );
    // Past midnight, still quiet: the push stays owed for a few checks
    // (each every 20 ms).
    minute.store(3 * 60, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(owed());
    assert_eq!(
        originates_to(&script, "1002"),
        0,
        "{:#?}",
        script.transcript
    );
    // 07:00: the quiet hours end; Bob, still unheard, is called.
    minute.store(7 * 60, Ordering::Relaxed);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    assert!(!owed(), "paid");
    let bob = script.answer(&push.id);
    script.expect_sound(&bob, "new-messages").await;
    script.expect_sound(&bob, "listener-menu").await;
    played_whole(&script, &bob);
    server.stop().await;
}

#[tokio::test]
async fn clearing_dnd_while_on_a_call_owes_the_push_and_the_calls_end_places_it() {
    let (mut script, server) = start(|s| {
        s.set_user_status("1002", UserStatus::Dnd, None, ivm::store::now_ms())
            .unwrap();
    })
    .await;
    script.device("1002", DeviceState::Idle);
    not_rung(&mut script, "dnd-stored").await;
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;
    // Bob's phone is on the *62 call as the switch sees it (the rule for a
    // call is the default `ring`, so that call's end alone is no return).
    script.device("1002", DeviceState::InUse);
    wait_presence(&server, "on a call", |p| p.activity == Activity::OnCall).await;
    star_code(&mut script, "*62", "available").await;
    let deadline = tokio::time::Instant::now() + fake_switch::WAIT;
    while !Store::open(server.data_dir())
        .unwrap()
        .push_owed("1002")
        .unwrap()
    {
        assert!(tokio::time::Instant::now() < deadline, "no push owed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(originates_to(&script, "1002"), 0, "not onto the *62 call");
    // The call ends: the owed push is placed.
    script.device("1002", DeviceState::Idle);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    assert_eq!(push.caller_id_name, "IVM messages");
    server.stop().await;
}

/// A status set through the HTTP API (an admin token): do-not-disturb
/// stores the message without a ring; `available` again calls Bob with it,
/// as the star code does.
#[tokio::test]
async fn available_set_through_the_api_pushes_what_waits() {
    // A free port for the API (bound, read, released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = serve::data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]);
    let (_, token) = Store::open(dir.path())
        .unwrap()
        .create_token("admin", ivm::store::api::Scope::Admin)
        .unwrap();
    let (mut script, server) = serve::start(dir, |c| {
        c.server.shutdown_grace_seconds = 0;
        c.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    })
    .await;
    script.device("1002", DeviceState::Idle);
    wait_presence(&server, "idle", |p| p.activity == Activity::Idle).await;
    let client = reqwest::Client::new();
    let put = |status: &'static str| {
        client
            .put(format!("http://127.0.0.1:{port}/api/v1/users/1002/status"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "status": status }))
            .send()
    };
    let set = put("dnd").await.unwrap();
    assert_eq!(set.status(), 200);
    let row: serde_json::Value = set.json().await.unwrap();
    assert_eq!(row["user_status"], "dnd", "{row}");

    not_rung(&mut script, "dnd-stored").await;
    server
        .wait_messages("1002", "stored", |rows| {
            rows.len() == 1 && rows[0].state == MessageState::Complete
        })
        .await;

    assert_eq!(put("available").await.unwrap().status(), 200);
    let push = script.expect_originate().await;
    assert_eq!(push.target, "1002");
    let bob = script.answer(&push.id);
    script.expect_sound(&bob, "new-messages").await;
    script.expect_sound(&bob, "listener-menu").await;
    played_whole(&script, &bob);
    server.stop().await;
}
