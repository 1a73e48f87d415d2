//! The external (HLR-style) lookup of numbers outside the PBX
//! (`[presence.external]`), end to end in-process: `ivm serve` on the fake
//! switch, and per test a local HTTP service that answers as the test
//! scripts it — a state, silence, a 500, not JSON, a huge body. What the
//! service says decides whether the number is rung; a slow or broken
//! service never holds the caller past the timeout and counts as unknown
//! (rung), with one log line that holds no number.
//! Its own test binary: the log is captured by the process's global
//! subscriber, at INFO.

#[path = "support/fake_switch.rs"]
mod fake_switch;
#[path = "support/lookup.rs"]
mod lookup;
#[path = "support/serve.rs"]
mod serve;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fake_switch::{Command, Script};
use ivm::config::{Config, ExternalLookupConfig};
use ivm::domain::{DeliveryState, MessageState};
use ivm::switch::HangupCause;
use lookup::{Reply, Service, state};
use serve::{data_dir, speech, start};
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

/// The log of every test in this binary at INFO and above.
fn log() -> &'static Buffer {
    static LOG: OnceLock<Buffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Buffer::default();
        let subscriber = Registry::default().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(buffer.clone())
                .with_filter(LevelFilter::INFO),
        );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

/// Lines of the log holding `text`.
fn log_lines(text: &str) -> Vec<String> {
    log()
        .text()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// Every number the tests look up: none may reach the log at INFO.
const NUMBERS: &[&str] = &[
    "004915550101",
    "004915550102",
    "004915550103",
    "004915550104",
    "004915550105",
    "004915550106",
    "004915550107",
    "004915550108",
    "004915550109",
];

fn assert_no_number_logged() {
    let text = log().text();
    for number in NUMBERS {
        // The digits after the country code would be the giveaway.
        assert!(!text.contains(&number[4..]), "{number} logged:\n{text}");
    }
}

/// `ivm serve` with Alice (1001) and Bob (1002), numbers `0049…` allowed,
/// and the lookup at `service` (with `token` and `ttl`).
async fn serve_with(service: Option<&Service>, ttl: u32) -> (Script, serve::Server) {
    log();
    let url = service.map(|s| s.url.clone());
    start(
        data_dir(&[("1001", "Alice", None), ("1002", "Bob", None)]),
        move |c: &mut Config| {
            c.numbering.external_targets = vec!["0049X.".into()];
            c.presence.external = url.map(|url| ExternalLookupConfig {
                url,
                token: "t0ken".into(),
                timeout_ms: 300,
                cache_ttl_seconds: ttl,
            });
        },
    )
    .await
}

/// Alice sends `number` a message; it is rung: returns the ring, after
/// which the ring goes unanswered and Alice hangs up.
async fn rung(script: &mut Script, server: &serve::Server, number: &str) {
    let before = server.messages(number).len();
    let alice = script.dial("1001", &format!("*77{number}"));
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert_eq!(ring.target, number);
    assert!(script.say(&alice, &speech(200, 1)));
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.expect_sound(&alice, "not-answered-stored").await;
    script.hang_up(&alice);
    server
        .wait_messages(number, "stored after the ring", |rows| {
            rows.len() == before + 1
                && rows
                    .iter()
                    .all(|r| r.delivery_state == Some(DeliveryState::Unheard))
        })
        .await;
}

/// Alice sends `number` a message; it is not rung: she hears `prompt`
/// while still recording, and it is stored whole as `state`.
async fn not_rung(
    script: &mut Script,
    server: &serve::Server,
    number: &str,
    prompt: &str,
    state: DeliveryState,
) {
    let before = server.messages(number).len();
    let alice = script.dial("1001", &format!("*77{number}"));
    script.expect_recording(&alice).await;
    script.expect_sound(&alice, prompt).await;
    assert!(script.say(&alice, &speech(300, 2)), "still recording");
    script.hang_up(&alice);
    assert!(
        !script
            .transcript
            .iter()
            .any(|c| matches!(c, Command::Originate(o) if o.target == number)),
        "{number} is not rung: {:#?}",
        script.transcript
    );
    server
        .wait_messages(number, "stored whole at once", |rows| {
            rows.len() == before + 1
                && rows
                    .iter()
                    .all(|r| r.state == MessageState::Complete && r.delivery_state == Some(state))
        })
        .await;
}

#[tokio::test]
async fn reachable_is_rung_after_the_service_was_asked_for_the_number() {
    let mut service = Service::start(state("reachable")).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    rung(&mut script, &server, "004915550101").await;
    let head = service.asked.recv().await.unwrap();
    let request_line = head.lines().next().unwrap();
    assert_eq!(
        request_line, "GET /hlr?key=k1&number=004915550101 HTTP/1.1",
        "{head}"
    );
    let head = head.to_ascii_lowercase();
    assert!(head.contains("authorization: bearer t0ken"), "{head}");
    assert!(head.contains("accept: application/json"), "{head}");
    // A user is the switch's business: never looked up.
    let alice = script.dial("1001", "*771002");
    script.expect_recording(&alice).await;
    let ring = script.expect_originate().await;
    assert_eq!(ring.target, "1002");
    assert_eq!(service.count(), 1, "only the outside number was asked");
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    server.stop().await;
    assert_no_number_logged();
}

#[tokio::test]
async fn unreachable_is_not_rung_stored_and_the_caller_hears_not_available() {
    let service = Service::start(state("unreachable")).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    not_rung(
        &mut script,
        &server,
        "004915550102",
        "not-available-stored",
        DeliveryState::Unreachable,
    )
    .await;
    assert_eq!(service.count(), 1);
    server.stop().await;
    assert_no_number_logged();
}

#[tokio::test]
async fn busy_is_not_rung_stored_busy_and_the_caller_hears_busy() {
    let service = Service::start(state("busy")).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    not_rung(
        &mut script,
        &server,
        "004915550103",
        "busy-stored",
        DeliveryState::Busy,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_or_no_lookup_configured_rings_as_before() {
    let service = Service::start(state("unknown")).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    rung(&mut script, &server, "004915550104").await;
    assert_eq!(service.count(), 1);
    server.stop().await;
    let (mut script, server) = serve_with(None, 300).await;
    rung(&mut script, &server, "004915550104").await;
    server.stop().await;
}

#[tokio::test]
async fn a_service_that_never_answers_does_not_hold_the_caller_past_the_timeout() {
    let mut service = Service::start(Reply::Silent).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    let number = "004915550105";
    let alice = script.dial("1001", &format!("*77{number}"));
    script.expect_recording(&alice).await;
    // The question reached the service, which keeps it unanswered…
    service.asked.recv().await.unwrap();
    let asked_at = tokio::time::Instant::now();
    // …and the number is rung anyway, once the 300 ms are up (the bound
    // is generous: a loaded machine), not when the service would answer.
    let ring = script.expect_originate().await;
    assert_eq!(ring.target, number);
    let waited = asked_at.elapsed();
    assert!(waited < Duration::from_secs(5), "held {waited:?}");
    let lines = log_lines("no answer within [presence.external] timeout_ms");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN"), "{lines:?}");
    script.fail(&ring.id, HangupCause::NoAnswer);
    script.hang_up(&alice);
    server.stop().await;
    assert_no_number_logged();
}

#[tokio::test]
async fn garbage_answers_count_as_unknown_with_one_clear_log_line_each() {
    let cases = [
        (
            Reply::Answer(500, "{}".into()),
            "the service answered HTTP 500",
        ),
        (
            Reply::Answer(200, "<html>reachable</html>".into()),
            "the answer is not JSON",
        ),
        (
            Reply::Answer(200, r#"{"state":"maybe"}"#.into()),
            "`state` is none of reachable, unreachable, busy, unknown",
        ),
        (
            Reply::Answer(200, r#"["reachable"]"#.into()),
            "not a JSON object with a string `state`",
        ),
        (Reply::Huge, "the answer is longer than 4096 bytes"),
    ];
    for (reply, reason) in cases {
        let service = Service::start(reply).await;
        let (mut script, server) = serve_with(Some(&service), 300).await;
        // Each case its own number: nothing comes from the cache.
        rung(&mut script, &server, "004915550109").await;
        assert_eq!(service.count(), 1, "{reason}");
        let lines = log_lines(reason);
        assert_eq!(lines.len(), 1, "{reason}: {lines:?}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("counts as unknown"),
            "{lines:?}"
        );
        server.stop().await;
    }
    assert_no_number_logged();
}

#[tokio::test]
async fn answers_are_reused_for_the_ttl_and_failures_are_asked_again() {
    // Cached: the second message to the number is decided without asking.
    let service = Service::start(state("unreachable")).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    for _ in 0..2 {
        not_rung(
            &mut script,
            &server,
            "004915550106",
            "not-available-stored",
            DeliveryState::Unreachable,
        )
        .await;
    }
    assert_eq!(service.count(), 1, "the answer was reused");
    server.stop().await;
    // TTL 0: asked every time.
    let service = Service::start(state("unreachable")).await;
    let (mut script, server) = serve_with(Some(&service), 0).await;
    for _ in 0..2 {
        not_rung(
            &mut script,
            &server,
            "004915550107",
            "not-available-stored",
            DeliveryState::Unreachable,
        )
        .await;
    }
    assert_eq!(service.count(), 2, "no cache");
    server.stop().await;
    // A failure is not an answer: asked again next time.
    let service = Service::start(Reply::Answer(503, String::new())).await;
    let (mut script, server) = serve_with(Some(&service), 300).await;
    for _ in 0..2 {
        rung(&mut script, &server, "004915550108").await;
    }
    assert_eq!(service.count(), 2, "failures are not cached");
    server.stop().await;
}
