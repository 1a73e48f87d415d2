//! Instant delivery end to end: real phones on the real Asterisk, `ivm serve`
//! as a separate process.

mod common;

use std::time::Duration;

use common::*;
use ivm::testbed::{Phone, write_wav};

const WAIT: Duration = Duration::from_secs(15);

/// 8 kHz: `seconds` of a tone pattern, after 1 s of silence.
fn speech(seconds: f64) -> Vec<i16> {
    let mut out = vec![0i16; 8000];
    let n = (seconds * 8000.0) as usize;
    for i in 0..n {
        let t = i as f64 / 8000.0;
        let f = 400.0 + 400.0 * (t % 2.0) / 2.0;
        out.push(((2.0 * std::f64::consts::PI * f * t).sin() * 8000.0) as i16);
    }
    out.extend(vec![0i16; 8000 * 30]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_target_answers_and_hears_audio() {
    let (asterisk, agi_port) = asterisk();
    let ivm = tokio::task::block_in_place(|| Ivm::start(&asterisk, agi_port, ""));
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    write_wav(&said, &speech(4.0)).unwrap();
    let mut alice = Phone::start(&asterisk, "1001", Some(&said)).await.unwrap();
    let mut bob = Phone::start(&asterisk, "1002", None).await.unwrap();
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    alice.hangup().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    bob.hangup().await.unwrap();
    bob.wait_call("CALL_CLOSED", WAIT).await.unwrap();
    let heard = read_wav(&bob.heard_wav());
    let loud = heard.iter().filter(|s| s.abs() > 2000).count();
    eprintln!(
        "heard {} samples, {} loud; log:\n{}",
        heard.len(),
        loud,
        ivm.log()
    );
    eprintln!("{:#}", ivm.messages());
    assert!(loud > 8000, "bob heard the message");
}
