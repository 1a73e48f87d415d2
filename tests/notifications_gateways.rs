//! The notification outbox against real gateways on loopback: Kannel with
//! its fake SMSC, an SMPP 3.4 SMSC on Perl's Net::SMPP, and an HTTP
//! webhook receiver. Debian packages: kannel, kannel-extras,
//! libnet-smpp-perl (installed by the harness when missing and root).

#[path = "sms/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use harness::{Kannel, PerlSmsc, wait_for};
use ivm::notify::config::{KannelConfig, SmppConfig, WebhookConfig};
use ivm::notify::kannel::{KannelChannel, serve_dlr};
use ivm::notify::smpp::SmppChannel;
use ivm::notify::webhook::WebhookChannel;
use ivm::notify::{
    ChannelKind, Channels, MessageInfo, MessageType, NewNotification, Notification,
    NotificationPayload, NotifyChannel, NotifyError, Outbox, OutboxPolicy, OutboxWorker,
    ReportSender, SmsFields, SmsTemplate, report_channel,
};
use ivm::store::outbox::{OutboxItem, OutboxState};
use ivm::store::{Store, StoreError, StoreHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

/// Retries fast enough for a test, slow enough to count them.
fn policy() -> OutboxPolicy {
    OutboxPolicy {
        first_retry: Duration::from_millis(200),
        max_retry: Duration::from_millis(400),
    }
}

/// One running `ivm` as far as notifications go: its store, the outbox
/// worker and (for Kannel) the delivery-report receiver. Dropping the store
/// handle and starting another on the same data dir is a restart.
struct Ivm {
    store: StoreHandle,
    outbox: Outbox,
    stop: Vec<oneshot::Sender<()>>,
    worker: JoinHandle<Result<(), StoreError>>,
    dlr: Option<JoinHandle<std::io::Result<()>>>,
}

impl Ivm {
    async fn start(
        data_dir: &Path,
        dlr_listen: Option<SocketAddr>,
        channels: impl FnOnce(ReportSender) -> Channels,
    ) -> Self {
        let store = StoreHandle::spawn(Store::open(data_dir).unwrap()).unwrap();
        let (reports, report_rx) = report_channel();
        let mut stop = Vec::new();
        let dlr = match dlr_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                let (tx, rx) = oneshot::channel::<()>();
                stop.push(tx);
                let reports = reports.clone();
                Some(tokio::spawn(serve_dlr(listener, reports, async move {
                    let _ = rx.await;
                })))
            }
            None => None,
        };
        let worker = OutboxWorker::new(store.clone(), channels(reports), policy(), 8, report_rx);
        let outbox = worker.outbox(Duration::from_secs(120));
        let (tx, rx) = oneshot::channel::<()>();
        stop.push(tx);
        let worker = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Self {
            store,
            outbox,
            stop,
            worker,
            dlr,
        }
    }

    async fn stop(self) {
        for tx in self.stop {
            let _ = tx.send(());
        }
        self.worker.await.unwrap().unwrap();
        if let Some(dlr) = self.dlr {
            dlr.await.unwrap().unwrap();
        }
    }

    async fn item(&self, id: i64) -> OutboxItem {
        self.store
            .call(move |s| s.outbox_item(id))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    async fn wait_item(
        &self,
        id: i64,
        what: &str,
        done: impl Fn(&OutboxItem) -> bool,
    ) -> OutboxItem {
        wait_for(what, WAIT, || async {
            let item = self.item(id).await;
            done(&item).then_some(item)
        })
        .await
    }
}

fn message_sms(to: &str, message_id: i64, code: &str) -> NewNotification {
    let retrieval_number = format!("*55{code}");
    let body = SmsTemplate::default().render(&SmsFields {
        retrieval_number: &retrieval_number,
        from: "1001",
        from_name: "Alice",
        duration_seconds: 42,
        message_type: MessageType::InstantMessage,
    });
    NewNotification {
        channel: ChannelKind::SmsKannel,
        recipient: to.into(),
        payload: NotificationPayload::Text {
            from: "12345".into(),
            body,
            message: Some(MessageInfo {
                message_id,
                sender: "1001".into(),
                sender_name: "Alice".into(),
                retrieval_number,
                duration_seconds: 42,
                message_type: MessageType::InstantMessage,
            }),
        },
        delivery_id: None,
        dedup_key: Some(format!("msg:{message_id}:{to}:sms")),
    }
}

fn kannel_config(kannel: &Kannel, dlr: SocketAddr) -> KannelConfig {
    KannelConfig {
        sendsms_url: kannel.sendsms_url(),
        username: harness::SENDSMS_USER.into(),
        password: harness::SENDSMS_PASSWORD.into(),
        from: "12345".into(),
        dlr_mask: 19,
        dlr_listen: dlr,
        timeout_seconds: 5,
        ..KannelConfig::default()
    }
}

fn kannel_channels(config: KannelConfig) -> impl FnOnce(ReportSender) -> Channels {
    move |_reports| Channels::new().with(Arc::new(KannelChannel::new(config).unwrap()))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// (a) An SMS through sendsms reaches the fake SMSC with the template's
/// text, and Kannel's delivery report settles the item as delivered.
#[tokio::test]
async fn kannel_sms_reaches_the_fake_smsc_and_is_reported_delivered() {
    let mut kannel = Kannel::new();
    kannel.start().await;
    let data = tempfile::tempdir().unwrap();
    let dlr = loopback(harness::free_port());
    let ivm = Ivm::start(
        data.path(),
        Some(dlr),
        kannel_channels(kannel_config(&kannel, dlr)),
    )
    .await;

    let id = ivm
        .outbox
        .enqueue(message_sms("+4915550001", 1, "123456"))
        .await
        .unwrap()
        .id;
    let received = wait_for("the fake SMSC to receive the SMS", WAIT, || async {
        let m = kannel.fake_smsc_messages();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].starts_with("12345 ") && received[0].contains("4915550001 text "),
        "{received:?}"
    );
    assert!(
        received[0]
            .ends_with("text Voice message from Alice (1001), 0:42. Dial *55123456 to listen."),
        "{received:?}"
    );
    let item = ivm
        .wait_item(id, "the delivery report", |i| {
            i.state == OutboxState::Delivered
        })
        .await;
    assert_eq!(item.attempts, 1);
    assert_eq!(item.outcome.as_deref(), Some("delivered"));

    // The same event enqueued again is the same item: no second SMS.
    let again = ivm
        .outbox
        .enqueue(message_sms("+4915550001", 1, "123456"))
        .await
        .unwrap();
    assert_eq!((again.id, again.created), (id, false));
    ivm.stop().await;
    kannel.stop().await;
    assert_eq!(kannel.fake_smsc_messages().len(), 1);
}

/// (b) Kannel is stopped while an SMS is due; `ivm` retries, is itself
/// restarted, and once Kannel is back the SMS arrives exactly once.
#[tokio::test]
async fn kannel_outage_and_ivm_restart_deliver_exactly_once() {
    let mut kannel = Kannel::new();
    kannel.start().await;
    let data = tempfile::tempdir().unwrap();
    let dlr = loopback(harness::free_port());
    let config = kannel_config(&kannel, dlr);
    let ivm = Ivm::start(data.path(), Some(dlr), kannel_channels(config.clone())).await;

    // Working gateway first: the baseline.
    let first = ivm
        .outbox
        .enqueue(message_sms("+4915550001", 1, "111111"))
        .await
        .unwrap()
        .id;
    ivm.wait_item(first, "the first SMS delivered", |i| {
        i.state == OutboxState::Delivered
    })
    .await;

    kannel.stop().await;
    let second = ivm
        .outbox
        .enqueue(message_sms("+4915550002", 2, "222222"))
        .await
        .unwrap()
        .id;
    let failing = ivm
        .wait_item(second, "two refused attempts while Kannel is down", |i| {
            i.attempts >= 2 && i.state == OutboxState::Pending
        })
        .await;
    assert!(
        failing
            .outcome
            .as_deref()
            .unwrap_or_default()
            .contains("cannot connect: error sending request")
            && failing
                .outcome
                .as_deref()
                .unwrap_or_default()
                .contains("Connection refused"),
        "{failing:?}"
    );
    ivm.stop().await;
    let attempts_before_restart = {
        let store = StoreHandle::spawn(Store::open(data.path()).unwrap()).unwrap();
        store
            .call(move |s| s.outbox_item(second))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .attempts
    };

    kannel.start().await;
    let ivm = Ivm::start(data.path(), Some(dlr), kannel_channels(config)).await;
    let item = ivm
        .wait_item(second, "the second SMS delivered after the restarts", |i| {
            i.state == OutboxState::Delivered
        })
        .await;
    assert_eq!(
        item.attempts,
        attempts_before_restart + 1,
        "exactly one attempt after Kannel came back"
    );
    ivm.stop().await;
    kannel.stop().await;

    let received = kannel.fake_smsc_messages();
    let texts = |code: &str| received.iter().filter(|m| m.contains(code)).count();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        (texts("*55111111"), texts("*55222222")),
        (1, 1),
        "{received:?}"
    );
}

fn smpp_config(smsc: &PerlSmsc, password: &str) -> SmppConfig {
    SmppConfig {
        address: smsc.address(),
        system_id: "ivm".into(),
        password: password.into(),
        source_addr: "12345".into(),
        enquire_link_seconds: 1,
        response_timeout_seconds: 5,
        ..SmppConfig::default()
    }
}

/// (c) SMPP 3.4 against Net::SMPP: bind as transceiver, submit, and the
/// delivery receipt recorded as the outcome — delivered, undeliverable, or
/// refused at submit; `enquire_link` keeps the session.
#[tokio::test]
async fn smpp_submit_and_delivery_receipts_become_outcomes() {
    let smsc = PerlSmsc::start(Some("secret")).await;
    let data = tempfile::tempdir().unwrap();
    let config = smpp_config(&smsc, "secret");
    let channel_slot: Arc<Mutex<Option<Arc<SmppChannel>>>> = Arc::default();
    let slot = channel_slot.clone();
    let ivm = Ivm::start(data.path(), None, move |reports| {
        let channel = Arc::new(SmppChannel::new(config, reports));
        *slot.lock().unwrap() = Some(channel.clone());
        Channels::new().with(channel)
    })
    .await;
    let channel = channel_slot.lock().unwrap().clone().unwrap();

    let sms = |to: &str, id: i64, code: &str| NewNotification {
        channel: ChannelKind::SmsSmpp,
        ..message_sms(to, id, code)
    };
    let delivered = ivm
        .outbox
        .enqueue(sms("+4915550001", 1, "123456"))
        .await
        .unwrap()
        .id;
    let item = ivm
        .wait_item(delivered, "a DELIVRD receipt", |i| {
            i.state == OutboxState::Delivered
        })
        .await;
    assert_eq!(item.gateway_id.as_deref(), Some("1001"));
    assert_eq!(item.outcome.as_deref(), Some("stat:DELIVRD err:000"));
    assert_eq!(item.attempts, 1);
    let bind = smsc.wait_line("BIND ").await;
    assert_eq!(
        bind,
        "BIND bind_transceiver system_id=ivm password=secret status=0"
    );
    let submit = smsc.wait_line("SUBMIT id=1001 ").await;
    assert_eq!(
        submit,
        "SUBMIT id=1001 from=12345 to=4915550001 dc=0 esm=0 rd=1 \
         text=Voice message from Alice (1001), 0:42. Dial *55123456 to listen."
    );

    let undelivered = ivm
        .outbox
        .enqueue(sms("+9995550002", 2, "222222"))
        .await
        .unwrap()
        .id;
    let refused = ivm
        .outbox
        .enqueue(sms("+0005550003", 3, "333333"))
        .await
        .unwrap()
        .id;
    let item = ivm
        .wait_item(undelivered, "an UNDELIV receipt", |i| {
            i.state == OutboxState::Failed
        })
        .await;
    assert_eq!(item.outcome.as_deref(), Some("stat:UNDELIV err:001"));
    assert_eq!(item.gateway_id.as_deref(), Some("1002"));
    let item = ivm
        .wait_item(refused, "a refused submit", |i| {
            i.state == OutboxState::Failed
        })
        .await;
    assert_eq!(item.attempts, 1, "a permanent refusal is not retried");
    assert!(
        item.outcome
            .as_deref()
            .unwrap_or_default()
            .contains("0x0000000B (invalid destination address)"),
        "{item:?}"
    );

    smsc.wait_line("ENQUIRE_LINK").await;
    wait_for("an enquire_link_resp", WAIT, || async {
        (channel
            .stats()
            .enquire_links_answered
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        .then_some(())
    })
    .await;
    let binds = smsc
        .lines()
        .iter()
        .filter(|l| l.starts_with("BIND "))
        .count();
    assert_eq!(binds, 1, "one session for all submits");

    ivm.stop().await;
    channel.unbind().await;
    smsc.wait_line("UNBIND").await;
}

/// The SMSC is down while an SMS is due: refused connections are retried,
/// and once the SMSC listens the SMS is submitted exactly once.
#[tokio::test]
async fn smpp_outage_is_retried_and_submits_once() {
    let port = harness::free_port();
    let config = SmppConfig {
        address: format!("127.0.0.1:{port}"),
        system_id: "ivm".into(),
        password: "secret".into(),
        source_addr: "12345".into(),
        ..SmppConfig::default()
    };
    let data = tempfile::tempdir().unwrap();
    let ivm = Ivm::start(data.path(), None, move |reports| {
        Channels::new().with(Arc::new(SmppChannel::new(config, reports)))
    })
    .await;
    let notification = NewNotification {
        channel: ChannelKind::SmsSmpp,
        ..message_sms("+4915550001", 1, "123456")
    };
    let id = ivm.outbox.enqueue(notification).await.unwrap().id;
    let failing = ivm
        .wait_item(id, "two refused connections", |i| {
            i.attempts >= 2 && i.state == OutboxState::Pending
        })
        .await;
    assert!(
        failing
            .outcome
            .as_deref()
            .unwrap_or_default()
            .contains("cannot connect to the SMSC"),
        "{failing:?}"
    );
    let smsc = PerlSmsc::start_on(port, Some("secret")).await;
    ivm.wait_item(id, "delivery once the SMSC is up", |i| {
        i.state == OutboxState::Delivered
    })
    .await;
    ivm.stop().await;
    let submits = smsc
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("SUBMIT "))
        .count();
    assert_eq!(submits, 1, "{:?}", smsc.lines());
}

/// A refused bind is "not sent, try again", never a submit.
#[tokio::test]
async fn smpp_wrong_password_is_a_refused_bind() {
    let smsc = PerlSmsc::start(Some("secret")).await;
    let (reports, _rx) = report_channel();
    let channel = SmppChannel::new(smpp_config(&smsc, "wrong"), reports);
    let n = Notification {
        outbox_id: 1,
        attempt: 1,
        channel: ChannelKind::SmsSmpp,
        recipient: "+4915550001".into(),
        payload: NotificationPayload::Text {
            from: "12345".into(),
            body: "hello".into(),
            message: None,
        },
    };
    match channel.send(&n).await {
        Err(NotifyError::Unavailable(reason)) => {
            assert!(
                reason.contains("bind refused: status 0x0000000E (invalid password)"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    smsc.wait_line("BIND bind_transceiver system_id=ivm password=wrong status=14")
        .await;
    assert!(!smsc.lines().iter().any(|l| l.starts_with("SUBMIT")));
}

#[derive(Default)]
struct Hook {
    /// Status codes to answer with, in order; then 200.
    script: Mutex<Vec<StatusCode>>,
    received: Mutex<Vec<(HeaderMap, serde_json::Value)>>,
}

async fn start_hook(hook: Arc<Hook>) -> (SocketAddr, oneshot::Sender<()>) {
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(hook): axum::extract::State<Arc<Hook>>,
                 headers: HeaderMap,
                 body: String| async move {
                    let json = serde_json::from_str(&body).unwrap_or_default();
                    hook.received.lock().unwrap().push((headers, json));
                    let mut script = hook.script.lock().unwrap();
                    if script.is_empty() {
                        StatusCode::OK
                    } else {
                        script.remove(0)
                    }
                },
            ),
        )
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    (addr, tx)
}

/// (d) The webhook: JSON with the message, a bearer token, one
/// Idempotency-Key for every attempt; a 503 is retried, a 400 is final.
#[tokio::test]
async fn webhook_posts_json_and_retries_with_one_idempotency_key() {
    let hook = Arc::new(Hook::default());
    *hook.script.lock().unwrap() = vec![StatusCode::SERVICE_UNAVAILABLE];
    let (addr, stop_hook) = start_hook(hook.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let config = WebhookConfig {
        url: format!("http://{addr}/hook"),
        bearer_token: "t0ken".into(),
        timeout_seconds: 5,
    };
    let ivm = Ivm::start(data.path(), None, move |_| {
        Channels::new().with(Arc::new(WebhookChannel::new(config).unwrap()))
    })
    .await;
    let notification = NewNotification {
        channel: ChannelKind::Webhook,
        ..message_sms("+4915550001", 7, "777777")
    };
    let id = ivm.outbox.enqueue(notification).await.unwrap().id;
    let item = ivm
        .wait_item(id, "the webhook to take it", |i| {
            i.state == OutboxState::Sent
        })
        .await;
    assert_eq!(item.attempts, 2);
    assert_eq!(item.outcome.as_deref(), Some("webhook answered 200"));
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "one refused, one taken");
    for (headers, _) in &received {
        assert_eq!(headers["idempotency-key"], format!("ivm-{id}").as_str());
        assert_eq!(headers["authorization"], "Bearer t0ken");
        assert_eq!(headers["content-type"], "application/json");
    }
    let json = &received[1].1;
    assert_eq!(json["id"], id);
    assert_eq!(json["attempt"], 2);
    assert_eq!(json["to"], "+4915550001");
    assert_eq!(json["kind"], "text");
    assert_eq!(json["message"]["retrieval_number"], "*55777777");
    assert_eq!(json["message"]["duration_seconds"], 42);
    assert!(json["body"].as_str().unwrap().contains("Dial *55777777"));

    *hook.script.lock().unwrap() = vec![StatusCode::BAD_REQUEST];
    let notification = NewNotification {
        channel: ChannelKind::Webhook,
        ..message_sms("+4915550001", 8, "888888")
    };
    let id = ivm.outbox.enqueue(notification).await.unwrap().id;
    let item = ivm
        .wait_item(id, "a refusal", |i| i.state == OutboxState::Failed)
        .await;
    assert_eq!(item.attempts, 1);
    assert!(item.outcome.unwrap().contains("webhook answered 400"));
    ivm.stop().await;
    let _ = stop_hook.send(());
}
