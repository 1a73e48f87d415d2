//! One instant message end to end on the testbed, measured from what the
//! phones played and heard: the scenario behind `ivm-testbed demo` and
//! `ivm-testbed bench delivery`.
//!
//! Owns: running the scenario (a throwaway Asterisk, `ivm`'s real service
//! in-process, phones 1001 and 1002), its timeline, and the figures derived
//! by correlating the phones' recordings with what the caller said. Also the
//! baseline: the same message as a plain call. Must not know: the engine,
//! the store, or anything `ivm` says about its own timing — every figure
//! comes from the phones' side.
//!
//! How time is read. Every instant is in milliseconds from the moment 1001
//! dials. Phone events (ringing, established, closed) are stamped as they
//! arrive on baresip's control socket. Audio time comes from the files:
//! baresip's file player writes one 20 ms frame per 20 ms from the moment
//! the phone's audio starts (silence when no RTP arrives), through a 4 KiB
//! stdio buffer, so each time the heard file grows by a block we learn when
//! a known frame was played; the earliest of those observations dates the
//! player's start to about a millisecond, and heard sample `n` was played
//! `n / 8` ms after it. The caller's file source starts with its player (one
//! `audio_start`), so source sample `n` was said `n / 8` ms after that.
//! "The call reached ivm" is when Asterisk's FastAGI connection for the call
//! arrived, seen by a pass-through proxy in front of `ivm`'s listener. The
//! target "answers" when the driver presses its answer key.
//!
//! Two traps of the phones. baresip answers the `dial` command only some
//! 40 ms after the call is up, and its events queue behind that answer: the
//! caller's audio start, not its event, says when its call came up. Its
//! fixed jitter buffer (5–10 frames) starts playing once it holds six
//! frames and then keeps five back, so the last 100 ms of a burst of RTP
//! are played only when more RTP comes; Asterisk sends none while a channel
//! waits in AGI (`transmit_silence` does not change that), so a tone played
//! to an otherwise idle caller is heard as its first 20 ms, the rest later.
//! Sounds are therefore found by their onset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::{
    Asterisk, AsteriskOptions, Freeswitch, FreeswitchOptions, Phone, PhoneEvent, SipServer,
    TestbedError, free_tcp_port, write_wav,
};
use ivm::config::{AsteriskConfig, Config, DeliveryConfig, FreeswitchConfig, MediaMode};
use ivm::media::analysis::{Alignment, align, percentile};
use ivm::media::signal::{SignalConfig, TestSignal, speech_like};

/// The listener counts as live when at most this far behind the speaker.
pub const LIVE_LAG_MS: f64 = 300.0;
/// A target that never got live has finished catching up once it is this
/// close to the least lag it ever had.
const PLATEAU_MS: f64 = 20.0;
/// Telephone audio: 8 kHz, so 8 samples per millisecond.
const RATE: u32 = 8_000;
const SAMPLES_PER_MS: f64 = 8.0;
/// baresip's packet time: its file player writes one frame per 20 ms.
const FRAME_SAMPLES: u64 = 160;
const FRAME_MS: f64 = 20.0;
/// stdio's buffer in baresip's file player: the heard file grows in blocks.
const PLAYER_BLOCK_BYTES: u64 = 4_096;
/// Between the caller's last word and the caller hanging up.
const HANG_UP_AFTER_LAST_WORD_MS: f64 = 300.0;
/// Long enough for any call set-up step on loopback.
const EVENT_WAIT: Duration = Duration::from_secs(15);
const EXTENSION_CALLER: &str = "1001";
const EXTENSION_TARGET: &str = "1002";

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("ivm server: {0}")]
    Server(String),
    /// Something the scenario waits for did not happen, or could not be
    /// measured.
    #[error("{0}")]
    Failed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn failed(reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Failed(reason.into())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Length of what the caller says.
    pub message_ms: u32,
    /// How long the target rings before answering.
    pub answer_after_ms: u32,
    /// Seed of the speech-like signal.
    pub seed: u64,
    /// Keep the WAV files (what was said, what each phone heard, what ivm
    /// stored) and the run's JSON here.
    pub keep_dir: Option<PathBuf>,
    /// Which switch carries the calls.
    pub switch: SwitchKind,
    /// `[delivery] media` of the ivm under test.
    pub media: MediaMode,
}

/// The switch a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    #[default]
    Asterisk,
    Freeswitch,
}

impl SwitchKind {
    /// How a call reaches ivm on this switch.
    fn hand_over(self) -> &'static str {
        match self {
            SwitchKind::Asterisk => "FastAGI connection",
            SwitchKind::Freeswitch => "outbound event socket connection",
        }
    }
}

/// A running throwaway switch.
pub(crate) enum Pbx {
    Asterisk(Asterisk),
    Freeswitch(Freeswitch),
}

impl Pbx {
    /// Start `kind`; calls are handed to ivm at `hand_over_port`.
    pub(crate) fn start(kind: SwitchKind, hand_over_port: u16) -> Result<Self, TestbedError> {
        Ok(match kind {
            SwitchKind::Asterisk => Pbx::Asterisk(Asterisk::start(AsteriskOptions {
                agi_port: hand_over_port,
            })?),
            SwitchKind::Freeswitch => Pbx::Freeswitch(Freeswitch::start(FreeswitchOptions {
                outbound_port: hand_over_port,
                stock_password: false,
            })?),
        })
    }

    pub(crate) fn sip(&self) -> &dyn SipServer {
        match self {
            Pbx::Asterisk(a) => a,
            Pbx::Freeswitch(f) => f,
        }
    }
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            message_ms: 10_000,
            answer_after_ms: 3_000,
            seed: 1,
            keep_dir: None,
            switch: SwitchKind::Asterisk,
            media: MediaMode::Stream,
        }
    }
}

/// One moment of a run, in milliseconds from dialling.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub at_ms: f64,
    pub what: String,
}

/// The figures of one instant message, all from the phones' side.
#[derive(Debug, Clone, Serialize)]
pub struct IvmFigures {
    /// Dialling → Asterisk's FastAGI connection for the call reached ivm.
    pub call_reached_ivm_ms: f64,
    /// Call reached ivm → the beep's first sample played by the caller's
    /// phone.
    pub beep_ms: f64,
    /// The target pressed answer → it played the first audio of the message.
    pub answer_to_first_audio_ms: f64,
    /// Dialling → the target played the first word.
    pub first_word_heard_ms: f64,
    /// Dialling → the first moment the target was at most
    /// [`LIVE_LAG_MS`] behind the caller; `None`: never.
    pub caught_up_ms: Option<f64>,
    /// Speaker → listener delay of every heard 10 ms of speech after
    /// catch-up (if the target never got live: from when its lag levelled
    /// off, within 20 ms of its least).
    pub live_lag_ms: Vec<f64>,
    pub live_lag_ms_p50: Option<f64>,
    pub live_lag_ms_p95: Option<f64>,
    /// (when the target played it, how far behind the caller), one point
    /// per 100 ms of heard speech: the whole catch-up.
    pub lag_series_ms: Vec<[f64; 2]>,
    /// Speech between the first and last heard word that was never heard.
    pub gap_ms: f64,
    /// Speech heard more than once (each extra time counts).
    pub repeat_ms: f64,
    /// Speech at the start of the message that the target never heard.
    pub clipped_start_ms: f64,
    /// Speech at the end of the message that the target never heard.
    pub clipped_end_ms: f64,
    /// Speech the caller said / the target heard (distinct).
    pub source_speech_ms: f64,
    pub heard_speech_ms: f64,
    /// Dialling → the caller's call closed.
    pub caller_busy_ms: f64,
}

/// The same message as a plain call: the caller talks once answered.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineFigures {
    /// Dialling → the target played the first word.
    pub first_word_heard_ms: f64,
    /// Dialling → the caller's call closed.
    pub caller_busy_ms: f64,
    /// Speaker → listener delay of the phone path itself (median).
    pub lag_ms_p50: Option<f64>,
    pub gap_ms: f64,
    pub clipped_start_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IvmRun {
    pub config_message_ms: u32,
    pub config_answer_after_ms: u32,
    pub timeline: Vec<TimelineEvent>,
    pub figures: IvmFigures,
    /// Files left in `keep_dir`.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    pub timeline: Vec<TimelineEvent>,
    pub figures: BaselineFigures,
    pub files: Vec<PathBuf>,
}

/// Run one instant message: 1001 dials `*771002` and talks at once, 1002
/// answers `answer_after_ms` after it starts ringing and listens to the end.
/// Needs a multi-threaded tokio runtime (the testbed blocks while starting).
pub async fn run_ivm(config: &ScenarioConfig) -> Result<IvmRun, ScenarioError> {
    let signal = caller_signal(config);
    let work = tempfile::Builder::new().prefix("ivm-scenario-").tempdir()?;
    let said = work.path().join("said.wav");
    write_said(&said, &signal)?;

    // The switch hands each call to ivm (Asterisk's FastAGI, FreeSWITCH's
    // outbound socket) through the proxy, which notes when each call
    // reaches ivm; ivm listens behind it.
    let ivm_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
    let proxy = AgiProxy::start(ivm_listen).await?;
    let pbx = blocking(|| Pbx::start(config.switch, proxy.port))?;
    let data_dir = work.path().join("data");
    let server = IvmServer::start(&pbx, ivm_listen, &data_dir, config.media).await?;

    let caller = Phone::start(pbx.sip(), EXTENSION_CALLER, Some(&said)).await?;
    let target = Phone::start_with(pbx.sip(), EXTENSION_TARGET, None, false).await?;
    let mut calls = Calls::new(caller, target);

    let result = drive_ivm(&mut calls, pbx.sip(), config, &signal).await;
    calls.sampler.stop();
    let growth = [calls.sampler.growth(0), calls.sampler.growth(1)];
    let Calls {
        caller,
        target,
        log,
        t0,
        ..
    } = calls;
    let caller_heard = read_heard(&caller.heard_wav());
    let target_heard = read_heard(&target.heard_wav());
    let accept_times = proxy.accepted();
    // The listener hung up; give ivm a moment to finish the message's WAV.
    let stored = wait_for_stored_wav(&data_dir, Duration::from_secs(3)).await;
    blocking(move || drop((caller, target)));
    server.stop().await;
    blocking(move || drop(pbx));
    let marks = result?;

    let sounds = data_dir.join("sounds");
    let beep = read_raw(&sounds.join("beep.sln"))
        .map_err(|e| failed(format!("cannot read ivm's beep to look for it: {e}")))?;
    let accepted = read_raw(&sounds.join("accepted.sln")).unwrap_or_default();
    if accepted.is_empty() {
        tracing::debug!("no accepted tone to look for");
    }
    let (caller_offset, caller_samples) = caller_heard?;
    let (target_offset, target_samples) = target_heard?;
    let caller_start = player_start_ms(&growth[0], caller_offset)
        .ok_or_else(|| failed("1001's phone never played audio"))?;
    let target_start = player_start_ms(&growth[1], target_offset)
        .ok_or_else(|| failed("1002's phone never played audio"))?;
    let agi_ms = accept_times
        .first()
        .map(|at| ms_between(t0, *at))
        .ok_or_else(|| {
            failed(format!(
                "the call never reached ivm (no {})",
                config.switch.hand_over()
            ))
        })?;

    let mut timeline = marks.timeline(&log, caller_start);
    timeline.push(event(
        agi_ms,
        format!("the call reaches ivm ({})", config.switch.hand_over()),
    ));

    // The beep, where the caller's phone played it. Its onset is what
    // counts: the phone's fixed jitter buffer may hold the beep's tail back
    // until more RTP comes (see the module docs).
    let accepted_at = sound_onset(&caller_samples, &accepted, 0, caller_samples.len());
    let beep_at = sound_onset(
        &caller_samples,
        &beep,
        0,
        accepted_at.unwrap_or(caller_samples.len()),
    )
    .ok_or_else(|| failed("1001 never heard the beep"))?;
    let beep_heard_ms = caller_start + beep_at as f64 / SAMPLES_PER_MS;
    timeline.push(event(beep_heard_ms, "1001 hears the beep"));
    if let Some(at) = accepted_at {
        timeline.push(event(
            caller_start + at as f64 / SAMPLES_PER_MS,
            "1001 hears that 1002 is listening",
        ));
    }

    // What the target heard, located in what the caller said.
    let said_ms = |sample: usize| caller_start + sample as f64 / SAMPLES_PER_MS;
    let alignment = align(&signal.samples, &target_samples, RATE);
    let heard = HeardSpeech::measure(&alignment, &signal, caller_start, target_start)
        .ok_or_else(|| failed("1002 heard none of the message"))?;
    let last_word_said = said_ms(signal.bursts.last().map_or(0, |b| b.end));
    timeline.push(event(
        said_ms(first_speech(&signal)),
        "1001 says the first word",
    ));
    timeline.push(event(
        last_word_said,
        "message end: 1001 says the last word",
    ));
    timeline.push(event(heard.first_word_ms, "1002 hears the first word"));
    timeline.push(event(heard.last_word_ms, "1002 hears the last word"));
    let caught_up_ms = heard.caught_up_ms();
    if let Some(at) = caught_up_ms {
        timeline.push(event(
            at,
            format!("1002 caught up to live (≤ {LIVE_LAG_MS:.0} ms behind 1001)"),
        ));
    }
    for gap in &alignment.gaps {
        timeline.push(event(
            caller_start + gap.start_ms,
            format!(
                "1002 never hears the next {:.0} ms 1001 said (a gap)",
                gap.len_ms
            ),
        ));
    }
    timeline.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));

    let live_lag_ms = heard.live_lags();
    let answered_ms = marks.answer_pressed_ms;
    let figures = IvmFigures {
        call_reached_ivm_ms: agi_ms,
        beep_ms: beep_heard_ms - agi_ms,
        answer_to_first_audio_ms: heard.first_audio_ms - answered_ms,
        first_word_heard_ms: heard.first_word_ms,
        caught_up_ms,
        live_lag_ms_p50: percentile(&live_lag_ms, 50.0),
        live_lag_ms_p95: percentile(&live_lag_ms, 95.0),
        live_lag_ms,
        lag_series_ms: heard
            .points
            .iter()
            .step_by(10)
            .map(|&(at, lag)| [at.round(), lag.round()])
            .collect(),
        gap_ms: alignment.gap_ms_total,
        repeat_ms: alignment.repeat_ms_total,
        clipped_start_ms: alignment.first_source_ms.unwrap_or(0.0),
        clipped_end_ms: clipped_end_ms(&alignment, &signal),
        source_speech_ms: alignment.source_speech_ms,
        heard_speech_ms: alignment.heard_speech_ms,
        caller_busy_ms: first_event(&log, EXTENSION_CALLER, "CALL_CLOSED")
            .ok_or_else(|| failed("1001's call never closed"))?,
    };

    let mut files = Vec::new();
    if let Some(dir) = &config.keep_dir {
        std::fs::create_dir_all(dir)?;
        let keep = |name: &str, samples: &[i16], files: &mut Vec<PathBuf>| {
            let path = dir.join(name);
            write_wav(&path, samples).map(|()| files.push(path))
        };
        keep("1001-said.wav", &signal.samples, &mut files)?;
        keep("1001-heard.wav", &caller_samples, &mut files)?;
        keep("1002-heard.wav", &target_samples, &mut files)?;
        if let Some(stored) = stored {
            let path = dir.join("ivm-stored-message.wav");
            std::fs::copy(stored, &path)?;
            files.push(path);
        }
    }
    let run = IvmRun {
        config_message_ms: config.message_ms,
        config_answer_after_ms: config.answer_after_ms,
        timeline,
        figures,
        files,
    };
    if let Some(dir) = &config.keep_dir {
        let json = serde_json::to_string_pretty(&run).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("ivm-run.json"), json)?;
    }
    Ok(run)
}

/// The baseline: 1001 calls 1002 directly (`Dial`), 1002 answers after the
/// same delay, and 1001 says the same message once the call is up (its
/// phone starts its audio on the answer). Needs a multi-threaded runtime.
pub async fn run_baseline(config: &ScenarioConfig) -> Result<BaselineRun, ScenarioError> {
    let signal = caller_signal(config);
    let work = tempfile::Builder::new().prefix("ivm-baseline-").tempdir()?;
    let said = work.path().join("said.wav");
    write_said(&said, &signal)?;
    // Nothing listens there: a plain call never goes to ivm.
    let hand_over_port = free_tcp_port()?;
    let pbx = blocking(|| Pbx::start(config.switch, hand_over_port))?;
    let caller = Phone::start(pbx.sip(), EXTENSION_CALLER, Some(&said)).await?;
    let target = Phone::start_with(pbx.sip(), EXTENSION_TARGET, None, false).await?;
    let mut calls = Calls::new(caller, target);

    let result = drive_baseline(&mut calls, pbx.sip(), config, &signal).await;
    calls.sampler.stop();
    let growth = [calls.sampler.growth(0), calls.sampler.growth(1)];
    let Calls {
        caller,
        target,
        log,
        ..
    } = calls;
    let target_heard = read_heard(&target.heard_wav());
    blocking(move || drop((caller, target)));
    blocking(move || drop(pbx));
    let marks = result?;

    let caller_start = player_start_ms(&growth[0], 0)
        .or_else(|| first_event(&log, EXTENSION_CALLER, "CALL_ESTABLISHED"))
        .ok_or_else(|| failed("1001's call never came up"))?;
    let (target_offset, target_samples) = target_heard?;
    let target_start = player_start_ms(&growth[1], target_offset)
        .ok_or_else(|| failed("1002's phone never played audio"))?;
    let alignment = align(&signal.samples, &target_samples, RATE);
    let heard = HeardSpeech::measure(&alignment, &signal, caller_start, target_start)
        .ok_or_else(|| failed("1002 heard none of the message"))?;
    let all_lags: Vec<f64> = heard.points.iter().map(|p| p.1).collect();
    let mut timeline = marks.timeline(&log, caller_start);
    let said_ms = |sample: usize| caller_start + sample as f64 / SAMPLES_PER_MS;
    timeline.push(event(
        said_ms(first_speech(&signal)),
        "1001 says the first word",
    ));
    timeline.push(event(
        said_ms(signal.bursts.last().map_or(0, |b| b.end)),
        "message end: 1001 says the last word",
    ));
    timeline.push(event(heard.first_word_ms, "1002 hears the first word"));
    timeline.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let figures = BaselineFigures {
        first_word_heard_ms: heard.first_word_ms,
        caller_busy_ms: first_event(&log, EXTENSION_CALLER, "CALL_CLOSED")
            .ok_or_else(|| failed("1001's call never closed"))?,
        lag_ms_p50: percentile(&all_lags, 50.0),
        gap_ms: alignment.gap_ms_total,
        clipped_start_ms: alignment.first_source_ms.unwrap_or(0.0),
    };
    let mut files = Vec::new();
    if let Some(dir) = &config.keep_dir {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("baseline-1002-heard.wav");
        write_wav(&path, &target_samples)?;
        files.push(path);
    }
    Ok(BaselineRun {
        timeline,
        figures,
        files,
    })
}

/// What the caller says: the speech-like signal, from the first sample on
/// (the caller talks at once).
fn caller_signal(config: &ScenarioConfig) -> TestSignal {
    speech_like(&SignalConfig {
        duration_ms: config.message_ms,
        lead_in_ms: 0,
        seed: config.seed,
        ..SignalConfig::default()
    })
}

/// The phone hangs up by itself when its file ends: pad it well past the
/// moment the scenario hangs up.
fn write_said(path: &Path, signal: &TestSignal) -> std::io::Result<()> {
    let mut samples = signal.samples.clone();
    samples.resize(samples.len() + 8_000 * 120, 0);
    write_wav(path, &samples)
}

fn first_speech(signal: &TestSignal) -> usize {
    signal.bursts.first().map_or(0, |b| b.start)
}

fn clipped_end_ms(alignment: &Alignment, signal: &TestSignal) -> f64 {
    let source_end = signal.bursts.last().map_or(0, |b| b.end) as f64 / SAMPLES_PER_MS;
    match alignment.last_source_ms {
        Some(last) => (source_end - last).max(0.0),
        None => source_end,
    }
}

/// Instants the driver itself chose (dialling is 0).
struct Marks {
    dialled: &'static str,
    answer_pressed_ms: f64,
    caller_hang_up_ms: f64,
    target_hang_up_ms: Option<f64>,
}

impl Marks {
    /// The driver's own moments and the phones' events. `caller_audio_ms`:
    /// when the caller's audio started, which is when its call came up
    /// (its event can arrive late: see [`Calls::dial`]).
    fn timeline(&self, log: &[Stamp], caller_audio_ms: f64) -> Vec<TimelineEvent> {
        let mut timeline = vec![
            event(0.0, format!("1001 dials {}", self.dialled)),
            event(self.answer_pressed_ms, "1002 presses answer"),
            event(self.caller_hang_up_ms, "1001 presses hang-up"),
        ];
        if let Some(at) = self.target_hang_up_ms {
            timeline.push(event(at, "1002 presses hang-up"));
        }
        for stamp in log {
            let mut at_ms = stamp.at_ms;
            let what = match (stamp.phone.as_str(), stamp.kind.as_str()) {
                (EXTENSION_CALLER, "CALL_ESTABLISHED") => {
                    at_ms = at_ms.min(caller_audio_ms);
                    "1001's call is up"
                }
                (EXTENSION_CALLER, "CALL_CLOSED") => "1001's call closed",
                (EXTENSION_TARGET, "CALL_INCOMING") => "1002 rings",
                (EXTENSION_TARGET, "CALL_ESTABLISHED") => "1002's call is up",
                (EXTENSION_TARGET, "CALL_CLOSED") => "1002's call closed",
                _ => continue,
            };
            timeline.push(event(at_ms, what));
        }
        timeline
    }
}

async fn drive_ivm(
    calls: &mut Calls,
    pbx: &dyn SipServer,
    config: &ScenarioConfig,
    signal: &TestSignal,
) -> Result<Marks, ScenarioError> {
    let dialled = "*771002";
    calls.dial(dialled, pbx).await?;
    let ringing = calls.wait_event(EXTENSION_TARGET, "CALL_INCOMING").await?;
    calls
        .wait_event(EXTENSION_CALLER, "CALL_ESTABLISHED")
        .await?;
    calls
        .idle_until(ringing + f64::from(config.answer_after_ms))
        .await?;
    let answer_pressed_ms = calls.now_ms();
    calls.target.answer().await?;
    calls
        .wait_event(EXTENSION_TARGET, "CALL_ESTABLISHED")
        .await?;
    let caller_hang_up_ms = calls.hang_up_caller_after_message(signal).await?;
    // The listener may be behind: let it hear the last word (found in what
    // its phone played), then hang up.
    let latest = answer_pressed_ms.max(caller_hang_up_ms) + f64::from(config.message_ms) + 5_000.0;
    let tail = message_tail(signal);
    let target_wav = calls.target.heard_wav();
    calls
        .until(latest, Duration::from_millis(250), |_| {
            heard_recently(&target_wav, &tail, 4_000)
        })
        .await?;
    calls.idle_until(calls.now_ms() + 500.0).await?;
    let target_hang_up_ms = calls.now_ms();
    calls.target.hangup().await?;
    calls.wait_event(EXTENSION_TARGET, "CALL_CLOSED").await?;
    Ok(Marks {
        dialled,
        answer_pressed_ms,
        caller_hang_up_ms,
        target_hang_up_ms: Some(target_hang_up_ms),
    })
}

async fn drive_baseline(
    calls: &mut Calls,
    pbx: &dyn SipServer,
    config: &ScenarioConfig,
    signal: &TestSignal,
) -> Result<Marks, ScenarioError> {
    let dialled = EXTENSION_TARGET;
    calls.dial(dialled, pbx).await?;
    let ringing = calls.wait_event(EXTENSION_TARGET, "CALL_INCOMING").await?;
    calls
        .idle_until(ringing + f64::from(config.answer_after_ms))
        .await?;
    let answer_pressed_ms = calls.now_ms();
    calls.target.answer().await?;
    calls
        .wait_event(EXTENSION_CALLER, "CALL_ESTABLISHED")
        .await?;
    let caller_hang_up_ms = calls.hang_up_caller_after_message(signal).await?;
    calls.wait_event(EXTENSION_TARGET, "CALL_CLOSED").await?;
    Ok(Marks {
        dialled,
        answer_pressed_ms,
        caller_hang_up_ms,
        target_hang_up_ms: None,
    })
}

/// The last 100 ms of the last word: once the target's phone has played
/// it, the whole message has been heard.
fn message_tail(signal: &TestSignal) -> Vec<i16> {
    let end = signal.bursts.last().map_or(0, |b| b.end);
    signal.samples[end.saturating_sub(800)..end].to_vec()
}

fn heard_recently(wav: &Path, tail: &[i16], window_ms: usize) -> bool {
    let Ok((_, samples)) = read_heard(wav) else {
        return false;
    };
    let from = samples.len().saturating_sub(window_ms * 8);
    find_template(&samples, tail, from, 0.8).is_some()
}

/// One phone event and when it arrived.
#[derive(Debug, Clone)]
struct Stamp {
    at_ms: f64,
    phone: String,
    kind: String,
}

fn first_event(log: &[Stamp], phone: &str, kind: &str) -> Option<f64> {
    log.iter()
        .find(|s| s.phone == phone && s.kind == kind)
        .map(|s| s.at_ms)
}

/// The two phones of a run, with every call event stamped on arrival.
struct Calls {
    caller: Phone,
    target: Phone,
    t0: Instant,
    log: Vec<Stamp>,
    /// The growth of the caller's (0) and the target's (1) heard files.
    sampler: GrowthSampler,
}

impl Calls {
    /// Start watching both phones; time 0 is now (just before dialling).
    fn new(caller: Phone, target: Phone) -> Self {
        let sampler = GrowthSampler::start(vec![caller.heard_wav(), target.heard_wav()]);
        Calls {
            caller,
            target,
            t0: sampler.t0,
            log: Vec::new(),
            sampler,
        }
    }

    /// When the caller's phone started its audio (and so its speech).
    fn caller_audio_start_ms(&self) -> Option<f64> {
        player_start_ms(&self.sampler.growth(0), 0)
    }

    fn now_ms(&self) -> f64 {
        ms_between(self.t0, Instant::now())
    }

    fn deadline(&self, at_ms: f64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.t0 + Duration::from_secs_f64(at_ms.max(0.0) / 1000.0))
    }

    /// Collect events until `done` holds (true) or `at_ms` passes (false);
    /// `done` is asked on every event and every `tick`.
    async fn until(
        &mut self,
        at_ms: f64,
        tick: Duration,
        mut done: impl FnMut(&[Stamp]) -> bool,
    ) -> Result<bool, ScenarioError> {
        let deadline = self.deadline(at_ms);
        loop {
            if done(&self.log) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            let wake = (tokio::time::Instant::now() + tick).min(deadline);
            let forever = Duration::from_secs(24 * 3600);
            let (caller, target) = (&mut self.caller, &mut self.target);
            let got = tokio::select! {
                event = caller.wait_for(forever, |_| true) => Some((EXTENSION_CALLER, event?)),
                event = target.wait_for(forever, |_| true) => Some((EXTENSION_TARGET, event?)),
                () = tokio::time::sleep_until(wake) => None,
            };
            if let Some((phone, PhoneEvent::Call { kind, .. })) = got {
                let at_ms = self.now_ms();
                tracing::debug!(phone, kind, at_ms, "phone event");
                self.log.push(Stamp {
                    at_ms,
                    phone: phone.to_owned(),
                    kind,
                });
            }
        }
    }

    /// Dial from the caller. baresip answers the `dial` command only after
    /// some 40 ms, while the call is set up meanwhile: the target's events
    /// are stamped as they come, the caller's (queued behind the command's
    /// answer) only after it.
    async fn dial(&mut self, number: &str, pbx: &dyn SipServer) -> Result<(), ScenarioError> {
        let (caller, target) = (&mut self.caller, &mut self.target);
        let dial = caller.dial(number, pbx);
        tokio::pin!(dial);
        let forever = Duration::from_secs(24 * 3600);
        loop {
            tokio::select! {
                done = &mut dial => return done.map_err(Into::into),
                event = target.wait_for(forever, |_| true) => {
                    if let PhoneEvent::Call { kind, .. } = event? {
                        let at_ms = ms_between(self.t0, Instant::now());
                        self.log.push(Stamp {
                            at_ms,
                            phone: EXTENSION_TARGET.to_owned(),
                            kind,
                        });
                    }
                }
            }
        }
    }

    /// Keep stamping events until `at_ms`.
    async fn idle_until(&mut self, at_ms: f64) -> Result<(), ScenarioError> {
        self.until(at_ms, Duration::from_millis(50), |_| false)
            .await
            .map(drop)
    }

    /// The time of `phone`'s first `kind` event, waiting for it if need be.
    async fn wait_event(&mut self, phone: &str, kind: &str) -> Result<f64, ScenarioError> {
        let limit = self.now_ms() + EVENT_WAIT.as_secs_f64() * 1000.0;
        let seen = |log: &[Stamp]| first_event(log, phone, kind).is_some();
        if !self.until(limit, Duration::from_millis(50), seen).await? {
            return Err(failed(format!("{phone}: no {kind} within {EVENT_WAIT:?}")));
        }
        first_event(&self.log, phone, kind).ok_or_else(|| failed("lost an event"))
    }

    /// The caller talks to the end of the message, then hangs up; returns
    /// when it pressed hang-up.
    async fn hang_up_caller_after_message(
        &mut self,
        signal: &TestSignal,
    ) -> Result<f64, ScenarioError> {
        // The caller's audio starts with its call; the file's growth says
        // exactly when, a quarter second in. Until then, the call's event.
        let started = self
            .caller_audio_start_ms()
            .or_else(|| first_event(&self.log, EXTENSION_CALLER, "CALL_ESTABLISHED"))
            .unwrap_or(0.0);
        let last_word = signal.bursts.last().map_or(0, |b| b.end) as f64 / SAMPLES_PER_MS;
        self.idle_until(started + last_word + HANG_UP_AFTER_LAST_WORD_MS)
            .await?;
        let pressed = self.now_ms();
        self.caller.hangup().await?;
        self.wait_event(EXTENSION_CALLER, "CALL_CLOSED").await?;
        Ok(pressed)
    }
}

/// Speech the target heard, on the wall clock.
struct HeardSpeech {
    /// (when the target played it, how far behind the caller it was), one
    /// point per heard 10 ms of speech, in heard order.
    points: Vec<(f64, f64)>,
    /// When the target played the first located audio of the message.
    first_audio_ms: f64,
    first_word_ms: f64,
    last_word_ms: f64,
}

impl HeardSpeech {
    fn measure(
        alignment: &Alignment,
        signal: &TestSignal,
        caller_start_ms: f64,
        target_start_ms: f64,
    ) -> Option<Self> {
        let first_heard = alignment.first_heard_ms?;
        let points: Vec<(f64, f64)> = alignment
            .lag_series(target_start_ms - caller_start_ms)
            .iter()
            .map(|p| (target_start_ms + p.heard_ms, p.lag_ms))
            .collect();
        let last = points.iter().map(|p| p.0).fold(f64::NAN, f64::max);
        // The first word: the heard point of the source's first speech
        // sample, else (clipped start) the first speech heard at all.
        let first_word_sample = first_speech(signal);
        let first_word_ms = alignment
            .segments
            .iter()
            .find(|s| (s.source_start..s.source_end()).contains(&first_word_sample))
            .map(|s| {
                target_start_ms + (s.heard_start + first_word_sample - s.source_start) as f64 / 8.0
            })
            .unwrap_or(target_start_ms + first_heard);
        Some(HeardSpeech {
            first_audio_ms: target_start_ms + first_heard,
            first_word_ms,
            last_word_ms: if last.is_finite() {
                last + 10.0
            } else {
                first_word_ms
            },
            points,
        })
    }

    fn caught_up_ms(&self) -> Option<f64> {
        self.points
            .iter()
            .find(|(_, lag)| *lag <= LIVE_LAG_MS)
            .map(|(at, _)| *at)
    }

    /// The lag once catch-up is over: from the moment the target came
    /// within [`LIVE_LAG_MS`] of the caller, or, if it never did, from the
    /// moment it first came within [`PLATEAU_MS`] of the closest it ever
    /// got (how far behind it stayed).
    fn live_lags(&self) -> Vec<f64> {
        let closest = self
            .points
            .iter()
            .map(|(_, lag)| *lag)
            .fold(f64::INFINITY, f64::min);
        let from = self.caught_up_ms().or_else(|| {
            self.points
                .iter()
                .find(|(_, lag)| *lag <= closest + PLATEAU_MS)
                .map(|(at, _)| *at)
        });
        let Some(from) = from else {
            return Vec::new();
        };
        self.points
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, lag)| *lag)
            .collect()
    }
}

fn event(at_ms: f64, what: impl Into<String>) -> TimelineEvent {
    TimelineEvent {
        at_ms,
        what: what.into(),
    }
}

fn ms_between(earlier: Instant, later: Instant) -> f64 {
    if later >= earlier {
        later.duration_since(earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier.duration_since(later).as_secs_f64() * 1000.0)
    }
}

/// Run blocking testbed work (process start and stop) off the executor.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(work)
}

/// `ivm`'s real service, in this process, on a fresh data directory.
pub(crate) struct IvmServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ivm::server::ServerError>>,
}

impl IvmServer {
    /// ivm for `pbx`, taking its calls at `listen` (FastAGI or outbound socket).
    pub(crate) async fn start(
        pbx: &Pbx,
        listen: SocketAddr,
        data_dir: &Path,
        media: MediaMode,
    ) -> Result<Self, ScenarioError> {
        let mut config = Config {
            data_dir: data_dir.to_owned(),
            delivery: DeliveryConfig {
                media,
                ..DeliveryConfig::default()
            },
            ..Config::default()
        };
        match pbx {
            Pbx::Asterisk(asterisk) => {
                config.asterisk = Some(AsteriskConfig {
                    agi_listen: listen,
                    ami_address: asterisk.ami_address(),
                    ami_user: super::asterisk::AMI_USER.into(),
                    ami_secret: super::asterisk::AMI_SECRET.into(),
                    agi_secret: super::asterisk::AGI_SECRET.into(),
                    ..AsteriskConfig::default()
                });
            }
            Pbx::Freeswitch(freeswitch) => {
                config.freeswitch = Some(FreeswitchConfig {
                    esl_address: freeswitch.esl_address(),
                    esl_password: super::freeswitch::ESL_PASSWORD.into(),
                    outbound_listen: listen,
                    outbound_secret: super::freeswitch::OUTBOUND_SECRET.into(),
                    ..FreeswitchConfig::default()
                });
            }
        }
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready) = oneshot::channel();
        let mut task = tokio::spawn(ivm::server::run(config, stopped, Some(ready_tx)));
        tokio::select! {
            ready = ready => match ready {
                Ok(_) => Ok(IvmServer { stop, task }),
                Err(_) => Err(ScenarioError::Server("stopped before it was ready".into())),
            },
            ended = &mut task => Err(ScenarioError::Server(match ended {
                Ok(Ok(())) => "stopped before it was ready".into(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            })),
            () = tokio::time::sleep(Duration::from_secs(15)) => {
                task.abort();
                Err(ScenarioError::Server("not ready within 15 s".into()))
            }
        }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// A pass-through TCP proxy in front of ivm's FastAGI listener that notes
/// when each connection (each call Asterisk hands over) arrives.
struct AgiProxy {
    port: u16,
    accepted: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AgiProxy {
    async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let noted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let at = Instant::now();
                if let Ok(mut list) = noted.lock() {
                    list.push(at);
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Line-by-line request and reply: Nagle would add delay.
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(AgiProxy {
            port,
            accepted,
            task,
        })
    }

    fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for AgiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches files grow: (ms from `t0`, size) at every change, polled every
/// millisecond on its own thread.
struct GrowthSampler {
    t0: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Growth>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// (ms from `t0`, file size) at every change.
type Growth = Vec<(f64, u64)>;

impl GrowthSampler {
    fn start(paths: Vec<PathBuf>) -> Self {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(vec![Growth::new(); paths.len()]));
        let (stopping, noting) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut last = vec![None; paths.len()];
            while !stopping.load(Ordering::Relaxed) {
                for (index, path) in paths.iter().enumerate() {
                    let size = std::fs::metadata(path).map_or(0, |m| m.len());
                    if last[index] != Some(size) {
                        last[index] = Some(size);
                        let at = ms_between(t0, Instant::now());
                        if let Ok(mut seen) = noting.lock() {
                            seen[index].push((at, size));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        GrowthSampler {
            t0,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// What was seen so far of file `index`.
    fn growth(&self, index: usize) -> Growth {
        self.seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(index).cloned())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GrowthSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When the phone's file player started, from its file's growth: each
/// growth to a whole number of blocks was seen at most a poll after the
/// frame that crossed the block boundary was written, which was
/// `frame * 20 ms` after the player started. `data_offset`: where samples
/// start in the file (0: assume the usual 44-byte header).
pub fn player_start_ms(growth: &[(f64, u64)], data_offset: u64) -> Option<f64> {
    let offset = if data_offset == 0 { 44 } else { data_offset };
    growth
        .iter()
        .filter(|(_, size)| *size > offset && size % PLAYER_BLOCK_BYTES == 0)
        .map(|(at, size)| {
            let sample = (size - offset) / 2;
            let frame = sample / FRAME_SAMPLES;
            at - frame as f64 * FRAME_MS
        })
        .reduce(f64::min)
}

/// The samples of a WAV a phone is still writing or has closed: (where
/// the samples start, the samples). A header still being written says
/// length 0: read to the end.
pub fn read_heard(path: &Path) -> Result<(u64, Vec<i16>), ScenarioError> {
    let bytes = std::fs::read(path)?;
    let mut at = 12usize;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        if id == b"data" {
            let start = at + 8;
            let end = if len == 0 {
                bytes.len()
            } else {
                start.saturating_add(len).min(bytes.len())
            };
            let samples = bytes[start..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return Ok((start as u64, samples));
        }
        at = at.saturating_add(8).saturating_add(len);
    }
    Err(failed(format!("{} has no audio", path.display())))
}

/// Raw 16-bit little-endian samples (ivm's `.sln` sounds).
fn read_raw(path: &Path) -> std::io::Result<Vec<i16>> {
    Ok(std::fs::read(path)?
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Where `template` first occurs in `heard` at or after `from`: the first
/// place whose normalised correlation reaches `threshold`, moved to the
/// best match within one template length (a tone correlates almost as well
/// a few periods early).
pub fn find_template(
    heard: &[i16],
    template: &[i16],
    from: usize,
    threshold: f64,
) -> Option<usize> {
    let m = template.len();
    if m == 0 || heard.len() < m {
        return None;
    }
    let template: Vec<f32> = template.iter().map(|&s| f32::from(s)).collect();
    let template_energy: f64 = template.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    if template_energy <= 0.0 {
        return None;
    }
    let signal: Vec<f32> = heard.iter().map(|&s| f32::from(s)).collect();
    let mut prefix = Vec::with_capacity(signal.len() + 1);
    prefix.push(0.0f64);
    for &s in &signal {
        let last = prefix.last().copied().unwrap_or(0.0);
        prefix.push(last + f64::from(s) * f64::from(s));
    }
    let score = |p: usize| {
        let energy = prefix[p + m] - prefix[p];
        // Far quieter than the template: not it (and saves the work).
        if energy < template_energy * 1e-3 {
            return 0.0;
        }
        let dot: f32 = signal[p..p + m]
            .iter()
            .zip(&template)
            .map(|(a, b)| a * b)
            .sum();
        f64::from(dot) / (energy * template_energy).sqrt()
    };
    let last = heard.len() - m;
    let first = (from..=last).find(|&p| score(p) >= threshold)?;
    (first..=(first + m).min(last))
        .map(|p| (p, score(p)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p)
}

/// Where the phone started to play `sound` (one of ivm's sounds) in
/// `heard[from..before]`: its first 20 ms located by correlation, then
/// followed back to where the heard audio rises out of digital silence.
pub fn sound_onset(heard: &[i16], sound: &[i16], from: usize, before: usize) -> Option<usize> {
    let start = sound.iter().position(|&s| s != 0)?;
    let head = &sound[start..sound.len().min(start + FRAME_SAMPLES as usize)];
    let before = before.min(heard.len());
    let found = find_template(&heard[..before], head, from, 0.8)?;
    let quiet = |at: usize| {
        heard[at.saturating_sub(12)..at]
            .iter()
            .all(|s| s.abs() <= 2)
    };
    let mut onset = found;
    while onset > from && found - onset < 480 && !quiet(onset) {
        onset -= 1;
    }
    Some(onset)
}

/// The WAV ivm kept of the message, once it has written it.
async fn wait_for_stored_wav(data_dir: &Path, limit: Duration) -> Option<PathBuf> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = std::fs::read_dir(data_dir.join("messages"))
            .ok()
            .and_then(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|e| e == "wav"))
            });
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_start_from_block_growth() {
        // Started at 5 ms: the block ending at byte 4096 was crossed by
        // frame 12 (samples 1920..2080), written at 5 + 240 ms, seen 0.4 ms
        // later; the next block by frame 25 at 5 + 500 ms, seen 1 ms later.
        let growth = [
            (0.0, 0),
            (245.4, 4_096),
            (506.0, 8_192),
            (600.0, 8_300), // closed: not a whole block
        ];
        let start = player_start_ms(&growth, 44).unwrap();
        assert!((start - 5.4).abs() < 1e-9, "{start}");
        assert_eq!(player_start_ms(&[(1.0, 0)], 44), None);
    }

    #[test]
    fn templates_are_found_at_their_true_start() {
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI / 8.0).sin() * 8_000.0) as i16)
            .collect();
        let mut heard = vec![0i16; 3_000];
        heard.extend(tone.iter().map(|s| s / 2));
        heard.extend(vec![0i16; 2_000]);
        assert_eq!(find_template(&heard, &tone, 0, 0.6), Some(3_000));
        assert_eq!(find_template(&heard, &tone, 4_000, 0.6), None);
        assert_eq!(find_template(&[0; 100], &tone, 0, 0.6), None);
    }

    #[test]
    fn a_sound_is_found_by_its_onset_even_when_its_tail_came_later() {
        let beep: Vec<i16> = (0..960)
            .map(|i| {
                let ramp = (f64::from(i) / 40.0).min(1.0);
                ((f64::from(i) * 2.0 * std::f64::consts::PI / 8.0).sin() * 8_000.0 * ramp) as i16
            })
            .collect();
        let mut heard = vec![0i16; 1_000];
        heard.extend_from_slice(&beep[..160]);
        heard.extend(vec![0i16; 4_000]);
        heard.extend_from_slice(&beep[160..]);
        assert_eq!(sound_onset(&heard, &beep, 0, heard.len()), Some(1_001));
        assert_eq!(sound_onset(&heard, &beep, 0, 900), None);
    }

    #[test]
    fn heard_wavs_are_read_while_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heard.wav");
        write_wav(&path, &[1, 2, 3]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&4i16.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_heard(&path).unwrap(), (44, vec![1, 2, 3, 4]));
    }
}
