//! The Asterisk adapter against a real Asterisk 22 and real SIP phones
//! (baresip), both from the testbed: FastAGI call control, AMI originate,
//! DTMF and hang-up events, and AMI reconnection after a restart.

#[path = "support/events.rs"]
mod events;

use std::net::SocketAddr;
use std::time::Duration;

use events::next;
use ivm::config::{AsteriskConfig, NumberingConfig};
use ivm::numbering::{DialKind, NumberPlan, Target};
use ivm::switch::asterisk::{AsteriskSwitch, AsteriskSwitchOptions};
use ivm::switch::{HangupCause, OriginateId, OriginateRequest, Switch, SwitchEvent};
use ivm_testbed::{Asterisk, AsteriskOptions, Phone, free_tcp_port};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(10);

struct Bed {
    asterisk: Asterisk,
    switch: AsteriskSwitch,
    events: mpsc::UnboundedReceiver<SwitchEvent>,
    _shutdown: watch::Sender<bool>,
}

async fn bed() -> Bed {
    let agi_port = free_tcp_port().expect("free port");
    let asterisk = tokio::task::block_in_place(|| Asterisk::start(AsteriskOptions { agi_port }))
        .expect("start asterisk");
    let config = AsteriskConfig {
        agi_listen: SocketAddr::from(([127, 0, 0, 1], agi_port)),
        ami_address: asterisk.ami_address(),
        ami_secret: ivm_testbed::AMI_SECRET.into(),
        agi_secret: ivm_testbed::AGI_SECRET.into(),
        ..AsteriskConfig::default()
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let switch = AsteriskSwitch::start(config, AsteriskSwitchOptions::default(), shutdown_rx)
        .await
        .expect("start the adapter");
    let events = switch.events();
    switch.wait_connected(WAIT).await.expect("ami connects");
    Bed {
        asterisk,
        switch,
        events,
        _shutdown: shutdown,
    }
}

fn originate(id: &str, target: &str) -> OriginateRequest {
    OriginateRequest {
        id: OriginateId(id.into()),
        target: target.into(),
        caller_id_name: "IVM Alice".into(),
        caller_id_number: "1001".into(),
        ring_timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialled_code_reaches_fastagi_with_its_target_and_is_answered() {
    let mut bed = bed().await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    alice.dial("*771002", &bed.asterisk).await.unwrap();

    let (call, caller, dialed) = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall {
            call,
            caller_number,
            dialed,
            origin: None,
            ..
        } => Some((call.clone(), caller_number.clone(), dialed.clone())),
        _ => None,
    })
    .await;
    assert_eq!((caller.as_str(), dialed.as_str()), ("1001", "*771002"));
    let meaning = NumberPlan::new(NumberingConfig::default())
        .parse(&dialed)
        .unwrap();
    assert_eq!(meaning.kind, DialKind::Message);
    assert_eq!(meaning.targets, vec![Target::Extension("1002".into())]);

    bed.switch.answer(&call).await.expect("answer");
    alice
        .wait_call("CALL_ESTABLISHED", WAIT)
        .await
        .expect("the phone sees the answer");

    alice.hangup().await.unwrap();
    let (gone, cause) = next(&mut bed.events, "hang-up", |e| match e {
        SwitchEvent::HungUp { call, cause } => Some((call.clone(), *cause)),
        _ => None,
    })
    .await;
    assert_eq!((gone, cause), (call, HangupCause::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_rings_the_phone_and_reports_keys_and_hangup_with_cause() {
    let mut bed = bed().await;
    let mut bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();

    bed.switch
        .originate(originate("msg-1", "1002"))
        .await
        .expect("originate");
    let call = next(
        &mut bed.events,
        "answer of the originated call",
        |e| match e {
            SwitchEvent::Answered { origin, call } if origin.0 == "msg-1" => Some(call.clone()),
            _ => None,
        },
    )
    .await;
    bob.wait_call("CALL_ESTABLISHED", WAIT)
        .await
        .expect("the phone answered");

    bob.press('5').await.unwrap();
    let digit = next(&mut bed.events, "dtmf", |e| match e {
        SwitchEvent::Dtmf { call: c, digit } if *c == call => Some(*digit),
        _ => None,
    })
    .await;
    assert_eq!(digit, '5');

    bob.hangup().await.unwrap();
    let cause = next(&mut bed.events, "hang-up", |e| match e {
        SwitchEvent::HungUp { call: c, cause } if *c == call => Some(*cause),
        _ => None,
    })
    .await;
    assert_eq!(cause, HangupCause::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_to_a_phone_that_is_not_registered_fails_with_a_cause() {
    let mut bed = bed().await;
    bed.switch
        .originate(originate("msg-2", "1003"))
        .await
        .expect("originate queued");
    let cause = next(&mut bed.events, "originate failure", |e| match e {
        SwitchEvent::OriginateFailed { origin, cause } if origin.0 == "msg-2" => Some(*cause),
        SwitchEvent::Answered { .. } => panic!("nobody could have answered"),
        _ => None,
    })
    .await;
    assert_ne!(cause, HangupCause::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_reconnects_by_itself_after_asterisk_restarts() {
    let mut bed = bed().await;
    let old_pid = bed.asterisk.pid();
    tokio::task::block_in_place(|| bed.asterisk.restart()).expect("restart asterisk");
    assert_ne!(bed.asterisk.pid(), old_pid, "a new asterisk process");

    next(&mut bed.events, "disconnect", |e| {
        matches!(e, SwitchEvent::Disconnected).then_some(())
    })
    .await;
    next(&mut bed.events, "reconnect", |e| {
        matches!(e, SwitchEvent::Reconnected).then_some(())
    })
    .await;

    // Works again: a phone registered to the new Asterisk is rung.
    let mut bob = Phone::start(&bed.asterisk, "1002", None).await.unwrap();
    bed.switch
        .originate(originate("after-restart", "1002"))
        .await
        .expect("originate after restart");
    next(&mut bed.events, "answer after restart", |e| match e {
        SwitchEvent::Answered { origin, .. } if origin.0 == "after-restart" => Some(()),
        _ => None,
    })
    .await;
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_from_ivm_carries_its_cause_to_the_phone_and_the_event() {
    let mut bed = bed().await;
    let mut alice = Phone::start(&bed.asterisk, "1001", None).await.unwrap();
    alice.dial("*771002", &bed.asterisk).await.unwrap();
    let call = next(&mut bed.events, "incoming call", |e| match e {
        SwitchEvent::IncomingCall { call, .. } => Some(call.clone()),
        _ => None,
    })
    .await;
    bed.switch.answer(&call).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();

    bed.switch
        .hangup(&call, HangupCause::Busy)
        .await
        .expect("hang up");
    let cause = next(&mut bed.events, "hang-up", |e| match e {
        SwitchEvent::HungUp { call: c, cause } if *c == call => Some(*cause),
        _ => None,
    })
    .await;
    assert_eq!(cause, HangupCause::Busy);
    // The phone hears a BYE (baresip gives no cause for it).
    alice.wait_call("CALL_CLOSED", WAIT).await.unwrap();
}
