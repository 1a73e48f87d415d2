//! Bench of the AudioSocket live path, outside `ivm serve`: prints figures,
//! asserts nothing.
//!
//! ```text
//! cargo run --release --example audiosocket_live -- [runs] [load sessions...]
//! cargo run --release --example audiosocket_live -- 3 50 100
//! ```
//!
//! * **phones** (each run): on the test Asterisk, phone 1001 is put into
//!   `AudioSocket()` and says a 12 s speech-like message with pauses; 2 s
//!   later phone 1002 is put into `AudioSocket()` as the listener. Both legs
//!   go through ivm's media server; the lag of every heard 10 ms of speech
//!   comes from the phones' own recordings, beside a plain call's (1001
//!   dials 1002 directly) of the same run.
//! * **load**: N talker + N listener connections from a simulated Asterisk
//!   (paced 20 ms frames both ways) for 20 s; CPU of the media server's
//!   threads only, send lateness, memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ivm::media::analysis::{Alignment, align, percentile};
use ivm::media::signal::{SignalConfig, TestSignal, speech_like};
use ivm::proto::audiosocket::{self, MAX_PAYLOAD, Message, Uuid};
use ivm::switch::asterisk::audiosocket::{
    MediaCommand, MediaEvent, MediaServer, MediaServerConfig, SenderStats, SharedLog,
};
use ivm_testbed::scenario::{ScenarioConfig, player_start_ms, read_heard, run_baseline};
use ivm_testbed::{Asterisk, AsteriskOptions, Phone, free_tcp_port, write_wav};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MESSAGE_MS: u32 = 12_000;
const ANSWER_AFTER_MS: u64 = 2_000;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(1);
    let loads: Vec<usize> = args.iter().skip(1).copied().collect();
    let media = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ivm-media")
        .enable_all()
        .build()
        .expect("a runtime");
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()
        .expect("a runtime");
    let (server, _stop) = {
        let _inside = media.enter();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let (stop, shutdown) = watch::channel(false);
        // IVM_BENCH_DEPTH_MS: the playout buffer's starting (minimum) depth.
        let mut config = MediaServerConfig::default();
        if let Some(depth) = std::env::var("IVM_BENCH_DEPTH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.playout.min_depth_ms = depth;
        }
        println!("playout depth from {} ms", config.playout.min_depth_ms);
        let server = MediaServer::start(listener, config, shutdown).expect("media server");
        (server, stop)
    };
    for run in 0..runs {
        match driver.block_on(phones_run(&server, run as u64 + 1)) {
            Ok(report) => println!("{report}"),
            Err(e) => println!("run {}: failed: {e}", run + 1),
        }
    }
    for sessions in loads {
        println!("{}", driver.block_on(load_run(&server, sessions)));
    }
}

struct PhonesReport {
    stream: StreamFigures,
    plain_lag_p50: Option<f64>,
}

struct StreamFigures {
    live_lag_p50: Option<f64>,
    live_lag_p95: Option<f64>,
    live_lag_max: Option<f64>,
    live_before_end_ms: Option<f64>,
    answer_to_first_audio_ms: Option<f64>,
    gap_ms: f64,
    repeat_ms: f64,
    clipped_start_ms: f64,
    seams: usize,
    beep_ms: Option<f64>,
    stats: SenderStats,
    media_cpu_ms: f64,
}

impl std::fmt::Display for PhonesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stream;
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
        let mut lateness = s.stats.lateness_us.clone();
        lateness.sort_unstable();
        let p99 = lateness
            .get(lateness.len() * 99 / 100)
            .copied()
            .unwrap_or(0);
        write!(
            f,
            "phones: live lag p50 {} p95 {} max {} (plain call p50 {}); live {} before the message ended; \
             answer->first audio {}; call reached ivm->caller hears the beep {}; gaps {:.0} ms, repeats {:.0} ms, clipped start {:.0} ms, seams {}; \
             frames {} underruns {} skipped ticks {}; send lateness p99 {:.2} ms; media CPU {:.0} ms for the call",
            ms(s.live_lag_p50),
            ms(s.live_lag_p95),
            ms(s.live_lag_max),
            ms(self.plain_lag_p50),
            ms(s.live_before_end_ms),
            ms(s.answer_to_first_audio_ms),
            ms(s.beep_ms),
            s.gap_ms,
            s.repeat_ms,
            s.clipped_start_ms,
            s.seams,
            s.stats.frames_sent,
            s.stats.underruns,
            s.stats.skipped_ticks,
            f64::from(p99) / 1000.0,
            s.media_cpu_ms,
        )
    }
}

/// CPU time (user + system) of this process's threads whose name starts
/// with `prefix`, in milliseconds.
fn thread_cpu_ms(prefix: &str) -> f64 {
    let ticks = 100.0; // sysconf(_SC_CLK_TCK) on Linux
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of the name: state is field 3; utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let value = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (value(11) + value(12)) / ticks * 1000.0;
    }
    total
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn originate(
    asterisk: &Asterisk,
    phone: &str,
    uuid: Uuid,
    port: u16,
) -> Result<TcpStream, String> {
    let mut ami = TcpStream::connect(asterisk.ami_address())
        .await
        .map_err(|e| e.to_string())?;
    let action = format!(
        "Action: Login\r\nUsername: ivm\r\nSecret: ivm\r\n\r\n\
         Action: Originate\r\nActionID: o1\r\nChannel: PJSIP/{phone}\r\n\
         Application: AudioSocket\r\nData: {uuid},127.0.0.1:{port}\r\nAsync: true\r\n\r\n"
    );
    ami.write_all(action.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains("ActionID: o1") {
        let n = tokio::time::timeout(Duration::from_secs(5), ami.read(&mut chunk))
            .await
            .map_err(|_| "ami silent".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("ami closed: {seen}"));
        }
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    if seen.contains("Response: Error") {
        return Err(seen);
    }
    Ok(ami)
}

/// (ms since start, file size) at every change, per file.
type Sizes = Vec<Vec<(f64, u64)>>;

/// Watches files grow, polled every millisecond on its own thread.
struct Growth {
    t0: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Sizes>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Growth {
    fn start(paths: Vec<PathBuf>) -> Growth {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(vec![Vec::new(); paths.len()]));
        let (stopping, noting) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut last = vec![None; paths.len()];
            while !stopping.load(Ordering::Relaxed) {
                for (index, path) in paths.iter().enumerate() {
                    let size = std::fs::metadata(path).map_or(0, |m| m.len());
                    if last[index] != Some(size) {
                        last[index] = Some(size);
                        let at = t0.elapsed().as_secs_f64() * 1000.0;
                        if let Ok(mut seen) = noting.lock() {
                            seen[index].push((at, size));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Growth {
            t0,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    fn finish(mut self) -> Sizes {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Boundaries between aligned segments inside the source's speech where
/// heard time and source time jump by different amounts: a splice.
fn seams(alignment: &Alignment, signal: &TestSignal) -> usize {
    let in_speech = |sample: usize| {
        signal
            .bursts
            .iter()
            .any(|b| b.start < sample && sample < b.end)
    };
    alignment
        .segments
        .windows(2)
        .filter(|pair| {
            let heard_jump = pair[1].heard_start as i64 - pair[0].heard_end as i64;
            let source_jump = pair[1].source_start as i64 - pair[0].source_end() as i64;
            (heard_jump - source_jump).abs() > 16 && in_speech(pair[0].source_end())
        })
        .count()
}

async fn phones_run(server: &MediaServer, seed: u64) -> Result<PhonesReport, String> {
    let plain = run_baseline(&ScenarioConfig {
        message_ms: MESSAGE_MS,
        answer_after_ms: ANSWER_AFTER_MS as u32,
        seed,
        ..ScenarioConfig::default()
    })
    .await
    .map_err(|e| format!("plain call: {e}"))?;
    let stream = stream_run(server, seed).await?;
    Ok(PhonesReport {
        stream,
        plain_lag_p50: plain.figures.lag_ms_p50,
    })
}

async fn stream_run(server: &MediaServer, seed: u64) -> Result<StreamFigures, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let asterisk = tokio::task::block_in_place(|| {
        Asterisk::start(AsteriskOptions {
            agi_port: free_tcp_port().map_err(|e| err(&e))?,
        })
        .map_err(|e| err(&e))
    })?;
    let dir = tempfile::tempdir().map_err(|e| err(&e))?;
    let signal = speech_like(&SignalConfig {
        duration_ms: MESSAGE_MS,
        seed,
        ..SignalConfig::default()
    });
    let mut said = signal.samples.clone();
    said.extend(std::iter::repeat_n(0, 8_000));
    let said_wav = dir.path().join("said.wav");
    write_wav(&said_wav, &said).map_err(|e| err(&e))?;
    let caller = Phone::start(&asterisk, "1001", Some(&said_wav))
        .await
        .map_err(|e| err(&e))?;
    let target = Phone::start(&asterisk, "1002", None)
        .await
        .map_err(|e| err(&e))?;
    let growth = Growth::start(vec![caller.heard_wav(), target.heard_wav()]);
    let port = server.local_addr().port();
    let cpu_before = thread_cpu_ms("ivm-media");

    let log = SharedLog::new(8_000);
    let mut talker = server.expect_talker(log.clone(), dir.path().join("message.sln"));
    let _ami1 = originate(&asterisk, "1001", talker.uuid, port).await?;
    // The beep, as soon as the caller's leg reaches us, in its stream.
    let connected = match tokio::time::timeout(Duration::from_secs(10), talker.events.recv()).await
    {
        Ok(Some(MediaEvent::Connected)) => Instant::now(),
        other => return Err(format!("the caller's leg did not connect: {other:?}")),
    };
    let beep: Vec<i16> = (0..1_600)
        .map(|n| ((n as f64 * 2.0 * std::f64::consts::PI / 8.0).sin() * 8_000.0) as i16)
        .collect();
    let _ = talker.commands.send(MediaCommand::Play(beep));
    tokio::time::sleep(Duration::from_millis(ANSWER_AFTER_MS)).await;
    let mut listener = server.expect_listener(log.clone());
    let originated = Instant::now();
    let _ami2 = originate(&asterisk, "1002", listener.uuid, port).await?;
    let limit = Duration::from_secs(u64::from(MESSAGE_MS) / 1000 + 30);
    loop {
        match tokio::time::timeout(limit, talker.events.recv()).await {
            Ok(Some(MediaEvent::TalkerEnded { .. })) => break,
            Ok(Some(_)) => {}
            _ => return Err("the caller's leg did not end".into()),
        }
    }
    let stats = loop {
        match tokio::time::timeout(limit, listener.events.recv()).await {
            Ok(Some(MediaEvent::ListenerEnded { stats, .. })) => break stats,
            Ok(Some(_)) => {}
            _ => return Err("the listener's leg did not end".into()),
        }
    };
    let media_cpu_ms = thread_cpu_ms("ivm-media") - cpu_before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let originated_ms = growth.ms(originated);
    let connected_ms = growth.ms(connected);
    let seen = growth.finish();
    let caller_start = player_start_ms(&seen[0], 0).ok_or("1001 never played audio")?;
    let caller_heard = read_heard(&caller.heard_wav()).map_err(|e| err(&e))?.1;
    let beep_ms = caller_heard
        .iter()
        .position(|s| s.unsigned_abs() > 3_000)
        .map(|at| caller_start + at as f64 / 8.0 - connected_ms);
    let (offset, heard) = read_heard(&target.heard_wav()).map_err(|e| err(&e))?;
    let target_start = player_start_ms(&seen[1], offset).ok_or("1002 never played audio")?;
    tokio::task::block_in_place(move || drop((caller, target, asterisk)));

    let alignment = align(&signal.samples, &heard, 8_000);
    let lags = alignment.lag_series(target_start - caller_start);
    let live_from_ms = stats.live_at_frame.map(|frame| frame as f64 * 20.0);
    let live: Vec<f64> = lags
        .iter()
        .filter(|p| live_from_ms.is_some_and(|from| p.heard_ms >= from))
        .map(|p| p.lag_ms)
        .collect();
    let message_end_ms = caller_start + signal.bursts.last().map_or(0, |b| b.end) as f64 / 8.0;
    Ok(StreamFigures {
        live_lag_p50: percentile(&live, 50.0),
        live_lag_p95: percentile(&live, 95.0),
        live_lag_max: live.iter().copied().reduce(f64::max),
        live_before_end_ms: live_from_ms.map(|from| message_end_ms - (target_start + from)),
        answer_to_first_audio_ms: alignment
            .first_heard_ms
            .map(|first| target_start + first - originated_ms),
        gap_ms: alignment.gap_ms_total,
        repeat_ms: alignment.repeat_ms_total,
        clipped_start_ms: alignment.first_source_ms.unwrap_or(f64::NAN),
        seams: seams(&alignment, &signal),
        beep_ms,
        stats,
        media_cpu_ms,
    })
}

/// One simulated Asterisk leg: sends a 20 ms frame every 20 ms (one write
/// each), reads and decodes everything, until `stop`.
async fn fake_leg(addr: std::net::SocketAddr, uuid: Uuid, stop: watch::Receiver<bool>) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let first = audiosocket::encode_as_peer(&Message::Uuid(uuid)).unwrap_or_default();
    if write.write_all(&first).await.is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => while let Ok(Some(_)) = audiosocket::decode(&mut buf, MAX_PAYLOAD) {},
            }
        }
    });
    let frame: Vec<i16> = (0..160)
        .map(|n| ((n * 37) % 2_000) as i16 - 1_000)
        .collect();
    let bytes = audiosocket::encode_audio(8_000, &frame).unwrap_or_default();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        ticker.tick().await;
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn load_run(server: &MediaServer, sessions: usize) -> String {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return format!("load {sessions}: {e}"),
    };
    let (stop, stopping) = watch::channel(false);
    let rss_before = rss_kib();
    let cpu_before = thread_cpu_ms("ivm-media");
    let started = Instant::now();
    let mut listeners = Vec::new();
    let mut legs = Vec::new();
    for n in 0..sessions {
        let log = SharedLog::new(8_000);
        let talker = server.expect_talker(log.clone(), dir.path().join(format!("{n}.sln")));
        let listener = server.expect_listener(log);
        legs.push(tokio::spawn(fake_leg(
            server.local_addr(),
            talker.uuid,
            stopping.clone(),
        )));
        legs.push(tokio::spawn(fake_leg(
            server.local_addr(),
            listener.uuid,
            stopping.clone(),
        )));
        listeners.push((talker, listener));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let cpu = thread_cpu_ms("ivm-media") - cpu_before;
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    let rss = rss_kib() - rss_before;
    let _ = stop.send(true);
    for leg in legs {
        let _ = leg.await;
    }
    let mut lateness = Vec::new();
    let mut underruns = 0;
    let mut skipped = 0;
    for (_talker, mut listener) in listeners {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(5), listener.events.recv()).await
        {
            if let MediaEvent::ListenerEnded { stats, .. } = event {
                lateness.extend(stats.lateness_us.iter().map(|&us| f64::from(us) / 1000.0));
                underruns += stats.underruns;
                skipped += stats.skipped_ticks;
                break;
            }
        }
    }
    format!(
        "load {sessions} sessions (talker + listener each, 20 s): media server CPU {:.1} % of one core \
         ({:.2} % per session); send lateness p50 {:.2} ms p99 {:.2} ms max {:.2} ms; underruns {underruns}, \
         skipped ticks {skipped}; RSS +{:.0} KiB ({:.0} KiB per session)",
        cpu / wall * 100.0,
        cpu / wall * 100.0 / sessions as f64,
        percentile(&lateness, 50.0).unwrap_or(f64::NAN),
        percentile(&lateness, 99.0).unwrap_or(f64::NAN),
        lateness.iter().copied().fold(f64::NAN, f64::max),
        rss,
        rss / sessions as f64,
    )
}
