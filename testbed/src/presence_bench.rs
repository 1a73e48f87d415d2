//! `ivm-testbed bench presence`: how fast presence moves, on a throwaway
//! Asterisk with real phones and `ivm serve` in this process.
//!
//! Each run: 1002's phone unregisters (baresip `uadel`) and ivm's store
//! says so; 1001 sends 1002 a one-second message, stored because 1002 is
//! offline; 1002's phone registers again (`uanew`); ivm pushes the
//! message, the phone answers by itself and hears it out. Measured on this
//! process's clock, from the phones' events (baresip's ctrl socket) and
//! ivm's store (polled every millisecond):
//!
//! * REGISTER → push ring: 1002's `REGISTER_OK` to the push's INVITE
//!   reaching it (its incoming-call event);
//! * presence event → state in ivm: 1002's `REGISTER_OK` to the store
//!   saying registered, and 1002's `CALL_ESTABLISHED` (the push answered)
//!   to the store saying on a call.
//!
//! Owns: that scenario and its figures. Must not know: the engine.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use ivm::config::MediaMode;
use ivm::domain::{Activity, DeliveryState, MessageState, Presence};
use ivm::media::analysis::percentile;
use ivm::store::{NewUser, Store};

use super::scenario::{IvmServer, Pbx, ScenarioError, SwitchKind};
use super::{Phone, PhoneEvent, free_tcp_port, write_wav};

const WAIT: Duration = Duration::from_secs(20);
const CALLER: &str = "1001";
const TARGET: &str = "1002";

/// One set of samples, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Figure {
    fn of(samples: &[f64]) -> Self {
        let tenth = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
        Self {
            samples: samples.len(),
            p50_ms: tenth(percentile(samples, 50.0)),
            p95_ms: tenth(percentile(samples, 95.0)),
            max_ms: tenth(samples.iter().copied().reduce(f64::max)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PresenceSummary {
    pub runs: u32,
    pub runs_ok: u32,
    /// The phone's REGISTER_OK to the push ringing it.
    pub register_to_push_ring: Figure,
    /// The phone's REGISTER_OK to ivm's store saying registered.
    pub register_to_presence: Figure,
    /// The phone answering (CALL_ESTABLISHED) to ivm's store saying on a call.
    pub answer_to_presence: Figure,
    /// Why runs failed, one line each.
    pub failures: Vec<String>,
}

impl PresenceSummary {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ivm-testbed bench presence on Asterisk: {} of {} runs measured\n",
            self.runs_ok, self.runs
        );
        let _ = writeln!(
            out,
            "{:<48} {:>8} {:>8} {:>8} {:>8}",
            "", "samples", "p50", "p95", "max"
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        for (name, f) in [
            (
                "REGISTER_OK -> push rings the phone (ms)",
                &self.register_to_push_ring,
            ),
            (
                "REGISTER_OK -> ivm's store: registered (ms)",
                &self.register_to_presence,
            ),
            (
                "call answered -> ivm's store: on a call (ms)",
                &self.answer_to_presence,
            ),
        ] {
            let _ = writeln!(
                out,
                "{name:<48} {:>8} {:>8} {:>8} {:>8}",
                f.samples,
                ms(f.p50_ms),
                ms(f.p95_ms),
                ms(f.max_ms)
            );
        }
        for failure in &self.failures {
            let _ = writeln!(out, "failed: {failure}");
        }
        out
    }
}

/// What one run measured, in milliseconds.
struct Run {
    register_to_ring: f64,
    register_to_presence: f64,
    answer_to_presence: f64,
}

fn failed(reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Failed(reason.into())
}

/// Run the benchmark `runs` times on one Asterisk, one ivm and two phones;
/// `progress` hears a line per run.
pub async fn presence(
    runs: u32,
    progress: impl Fn(String),
) -> Result<PresenceSummary, ScenarioError> {
    let work = tempfile::Builder::new()
        .prefix("ivm-bench-presence-")
        .tempdir()?;
    let said = work.path().join("said.wav");
    // One second of a tone; the phone hangs up when its file ends.
    let tone: Vec<i16> = (0..8000)
        .map(|i| ((i as f64 * 700.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .collect();
    write_wav(&said, &tone)?;
    let data_dir = work.path().join("data");
    {
        let mut store = Store::open(&data_dir).map_err(|e| failed(e.to_string()))?;
        for (extension, name) in [(CALLER, "Alice"), (TARGET, "Bob")] {
            store
                .add_user(&NewUser {
                    extension,
                    name,
                    mobile: None,
                    pin: None,
                })
                .map_err(|e| failed(e.to_string()))?;
        }
    }
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
    let pbx = tokio::task::block_in_place(|| Pbx::start(SwitchKind::Asterisk, listen.port()))?;
    let server = IvmServer::start(&pbx, listen, &data_dir, MediaMode::Stream).await?;
    let mut target = Phone::start(pbx.sip(), TARGET, None).await?;
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    for number in 1..=runs {
        let result = one_run(&pbx, &said, &mut target, &data_dir, number).await;
        match result {
            Ok(run) => {
                progress(format!(
                    "run {number}/{runs}: REGISTER_OK -> push ring {:.1} ms, -> store registered {:.1} ms; answered -> store on a call {:.1} ms",
                    run.register_to_ring, run.register_to_presence, run.answer_to_presence
                ));
                measured.push(run);
            }
            Err(e) => {
                progress(format!("run {number}/{runs}: failed: {e}"));
                failures.push(format!("run {number}: {e}"));
                // A phone left in a strange state: a fresh one.
                drop(target);
                target = Phone::start(pbx.sip(), TARGET, None).await?;
            }
        }
    }
    drop(target);
    server.stop().await;
    let pick = |f: fn(&Run) -> f64| measured.iter().map(f).collect::<Vec<f64>>();
    Ok(PresenceSummary {
        runs,
        runs_ok: measured.len() as u32,
        register_to_push_ring: Figure::of(&pick(|r| r.register_to_ring)),
        register_to_presence: Figure::of(&pick(|r| r.register_to_presence)),
        answer_to_presence: Figure::of(&pick(|r| r.answer_to_presence)),
        failures,
    })
}

async fn one_run(
    pbx: &Pbx,
    said: &Path,
    target: &mut Phone,
    data_dir: &Path,
    number: u32,
) -> Result<Run, ScenarioError> {
    // 1002 goes offline (its user agent deleted: baresip 1.1 unregisters
    // it); ivm hears it.
    let aor = format!("sip:{TARGET}@127.0.0.1:{}", pbx.sip().sip_port());
    target.command("uadel", &aor).await?;
    wait_store(data_dir, "1002 unregistered in ivm's store", |p| {
        p.registered == Some(false)
    })
    .await?;
    // 1001 sends a message: stored, 1002 not rung.
    let stored_before = count_stored(data_dir)?;
    let mut caller = Phone::start(pbx.sip(), CALLER, Some(said)).await?;
    caller.dial(&format!("*77{TARGET}"), pbx.sip()).await?;
    caller.wait_call("CALL_CLOSED", WAIT).await?;
    drop(caller);
    let deadline = Instant::now() + WAIT;
    while count_stored(data_dir)? <= stored_before {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "run {number}: the message to the offline phone was not stored"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events left from before (the last push, the unregistration) go.
    let _ = target.wait_for(Duration::from_millis(50), |_| false).await;
    // 1002 registers: ivm keeps it and pushes the message.
    let registered_in_store = poll_store(data_dir, |p| p.registered == Some(true));
    let account = format!(
        "<sip:{TARGET}@127.0.0.1:{};transport=udp>;auth_pass={};answermode=auto;\
         audio_codecs=PCMU;dtmfmode=rtpevent;regint=600;mwi=no",
        pbx.sip().sip_port(),
        pbx.sip().sip_password(TARGET)
    );
    target.command("uanew", &account).await?;
    let register_ok = wait_event(target, |e| {
        matches!(e, PhoneEvent::Other(v) if v.get("type").and_then(Value::as_str) == Some("REGISTER_OK"))
    })
    .await?;
    // The push's INVITE reaching the phone: an auto-answering baresip
    // reports it as the incoming offer (no CALL_INCOMING).
    let rung = wait_event(target, |e| match e {
        PhoneEvent::Call { kind, .. } => kind == "CALL_INCOMING",
        PhoneEvent::Other(v) => v.get("direction").and_then(Value::as_str) == Some("incoming"),
        PhoneEvent::Message { .. } => false,
    })
    .await?;
    let on_call_in_store = poll_store(data_dir, |p| p.activity == Activity::OnCall);
    let answered = wait_event(
        target,
        |e| matches!(e, PhoneEvent::Call { kind, .. } if kind == "CALL_ESTABLISHED"),
    )
    .await?;
    let registered_at = registered_in_store
        .await
        .map_err(|e| failed(e.to_string()))??;
    let on_call_at = on_call_in_store
        .await
        .map_err(|e| failed(e.to_string()))??;
    // The push plays the message, waits at the menu and says goodbye.
    target
        .wait_call("CALL_CLOSED", Duration::from_secs(40))
        .await?;
    Ok(Run {
        register_to_ring: ms_between(register_ok, rung),
        register_to_presence: ms_between(register_ok, registered_at),
        answer_to_presence: ms_between(answered, on_call_at),
    })
}

/// Messages to the target stored as not reached.
fn count_stored(data_dir: &Path) -> Result<usize, ScenarioError> {
    let store = Store::open(data_dir).map_err(|e| failed(e.to_string()))?;
    let rows = store
        .list_messages(Some(TARGET))
        .map_err(|e| failed(e.to_string()))?;
    Ok(rows
        .iter()
        .filter(|r| {
            r.state == MessageState::Complete
                && r.delivery_state == Some(DeliveryState::Unreachable)
        })
        .count())
}

/// The target's presence as ivm's store holds it.
fn target_presence(store: &Store) -> Option<Presence> {
    store.presence(TARGET, ivm::store::now_ms()).ok().flatten()
}

/// A task polling the store every millisecond until `done`; returns when.
fn poll_store(
    data_dir: &Path,
    done: impl Fn(&Presence) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Result<Instant, ScenarioError>> {
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&data_dir).map_err(|e| failed(e.to_string()))?;
        let deadline = Instant::now() + WAIT;
        loop {
            if target_presence(&store).is_some_and(|p| done(&p)) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "ivm's store never said so: {:?}",
                    target_presence(&store)
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

async fn wait_store(
    data_dir: &Path,
    what: &str,
    done: impl Fn(&Presence) -> bool + Send + 'static,
) -> Result<(), ScenarioError> {
    poll_store(data_dir, done)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("{what}: {e}")))
        .map(drop)
}

/// When the phone reported an event `want` (this process's clock).
async fn wait_event(
    phone: &mut Phone,
    want: impl FnMut(&PhoneEvent) -> bool,
) -> Result<Instant, ScenarioError> {
    phone.wait_for(WAIT, want).await?;
    Ok(Instant::now())
}

fn ms_between(earlier: Instant, later: Instant) -> f64 {
    if later >= earlier {
        later.duration_since(earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier.duration_since(later).as_secs_f64() * 1000.0)
    }
}
