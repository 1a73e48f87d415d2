use ivm_testbed::{Asterisk, AsteriskOptions, Phone};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_call_each_other() {
    let asterisk = Asterisk::start(AsteriskOptions { agi_port: 4573 }).unwrap();
    eprintln!("boot {:?}", asterisk.boot_time);
    let mut a = Phone::start(&asterisk, "1001", None).await.unwrap();
    let mut b = Phone::start(&asterisk, "1002", None).await.unwrap();
    a.dial("1002", &asterisk).await.unwrap();
    b.wait_call("CALL_ESTABLISHED", Duration::from_secs(5))
        .await
        .unwrap();
    a.wait_call("CALL_ESTABLISHED", Duration::from_secs(5))
        .await
        .unwrap();
    a.hangup().await.unwrap();
    let p = b
        .wait_call("CALL_CLOSED", Duration::from_secs(5))
        .await
        .unwrap();
    eprintln!("closed: {p}");
}
