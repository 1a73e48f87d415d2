//! The media server for Asterisk: AudioSocket connections in, each bound to
//! a session the server was told to expect.
//!
//! Owns: the TCP listener, the registry of expected UUIDs, and per
//! connection one task. A **talker** connection (the caller's leg) appends
//! every audio payload to the message's [`SharedLog`] and to the message
//! file (a writer thread, `fdatasync` every `sync_interval` and at the end,
//! so the disk never blocks the live path), and sends the caller a paced
//! stream of prompts or silence (which also keeps the app's 2 s inactivity
//! timeout away). A **listener** connection (a target's leg) gets one 20 ms
//! frame per tick from a [`relay::Listener`] cursor: catch-up, then live,
//! prompts in the same stream; at the end `00 00 00` hands the channel back
//! to the dialplan/AGI.
//!
//! Bad peers: a connection whose first message is not an expected UUID
//! (within 2 s), that sends a wrong kind, a short or oversized message, a
//! message left unfinished for a second, or more than twice real-time audio
//! is dropped, and so is one that stops reading what we send for 2 s;
//! other connections are untouched. Must not know: the engine's
//! decisions (it is told what to expect and reports what happened).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, warn};

use crate::media::relay::{FrameLog, Listener, PlayoutConfig, Tick};
use crate::proto::audiosocket::{self, MAX_PAYLOAD, Message, Uuid};

/// The app speaks 8 kHz slin only.
pub const SAMPLE_RATE: u32 = 8_000;
const FRAME_SAMPLES: usize = 160;
const TICK: Duration = Duration::from_millis(20);

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct MediaServerConfig {
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// The UUID must come this soon after connecting.
    pub handshake_timeout: Duration,
    /// An expected connection that has not come this long after
    /// `expect_*` is forgotten and reported as [`MediaEvent::NeverConnected`].
    pub connect_timeout: Duration,
    /// A message started must be finished this soon.
    pub partial_message_timeout: Duration,
    /// How often the message file is `fdatasync`ed while recording.
    pub sync_interval: Duration,
    /// Late by more than this, the sender skips ticks instead of bursting.
    pub max_burst: Duration,
    pub playout: PlayoutConfig,
}

impl Default for MediaServerConfig {
    fn default() -> Self {
        MediaServerConfig {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(60),
            partial_message_timeout: Duration::from_secs(1),
            sync_interval: Duration::from_millis(250),
            max_burst: Duration::from_millis(100),
            playout: PlayoutConfig::default(),
        }
    }
}

/// A message's audio as it grows, shared by its talker and its listeners.
#[derive(Debug, Clone)]
pub struct SharedLog(Arc<Mutex<FrameLog>>);

impl SharedLog {
    pub fn new(sample_rate: u32) -> Self {
        SharedLog(Arc::new(Mutex::new(FrameLog::new(sample_rate))))
    }

    /// Run `f` on the log; never held across an await.
    pub fn with<R>(&self, f: impl FnOnce(&mut FrameLog) -> R) -> R {
        // A poisoned lock means a panic elsewhere already; the log itself
        // is still consistent (appends are single calls).
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Why a media connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEnd {
    /// We ended it (`00 00 00` sent): the message or the prompts were done.
    Finished,
    /// Asterisk closed the socket: the channel hung up (or left the app).
    PeerClosed,
    /// The peer broke the protocol or the limits; the connection was dropped.
    Protocol(String),
    /// A socket or file error.
    Io(String),
}

/// What a connection reports to its session.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    Connected,
    /// Asterisk never connected within `connect_timeout`; the UUID is void.
    NeverConnected,
    /// A key the party pressed (Asterisk sends it on the key's release).
    Dtmf(char),
    /// The talker's message file could not be written (disk full, a write
    /// error): `stored_samples` are on disk, synced; nothing more will be
    /// stored. The stream itself goes on (its frames still reach the log)
    /// until the session finishes it.
    StoreFailed {
        stored_samples: u64,
        error: String,
    },
    /// The talker's stream ended; `stored_samples` are on disk, synced.
    TalkerEnded {
        end: MediaEnd,
        stored_samples: u64,
    },
    /// The listener's stream ended; `heard_position` is how far into the
    /// recording it got (in samples; dropped pauses count as heard).
    ListenerEnded {
        end: MediaEnd,
        heard_position: u64,
        stats: SenderStats,
    },
}

/// What a session tells its connection.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// Play these samples (8 kHz) in the stream, before anything else.
    Play(Vec<i16>),
    /// Drop prompts not played yet.
    CancelPrompts,
    /// Talker: send `00 00 00` once the queued prompts are played.
    /// Listener: the same, now, even mid-message.
    Finish,
}

/// Figures of one paced sender.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderStats {
    pub frames_sent: u64,
    /// Lateness of each send against its deadline, in microseconds, for
    /// percentiles (one entry a frame).
    pub lateness_us: Vec<u32>,
    pub skipped_ticks: u64,
    pub underruns: u64,
    pub live_at_frame: Option<u64>,
}

enum Expected {
    Talker {
        log: SharedLog,
        file: PathBuf,
        durable: Arc<AtomicU64>,
        events: mpsc::UnboundedSender<MediaEvent>,
        commands: mpsc::UnboundedReceiver<MediaCommand>,
    },
    Listener {
        log: SharedLog,
        start: u64,
        events: mpsc::UnboundedSender<MediaEvent>,
        commands: mpsc::UnboundedReceiver<MediaCommand>,
    },
}

/// A session's end of one expected connection.
#[derive(Debug)]
pub struct MediaHandle {
    pub uuid: Uuid,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    pub commands: mpsc::UnboundedSender<MediaCommand>,
}

/// The listener's address and registry; cheap to clone.
#[derive(Clone)]
pub struct MediaServer {
    local_addr: SocketAddr,
    registry: Arc<Mutex<HashMap<Uuid, Expected>>>,
    runtime: tokio::runtime::Handle,
    connect_timeout: Duration,
}

impl MediaServer {
    /// Serve AudioSocket on `listener` until `shutdown` turns true. Call
    /// within a tokio runtime: the server's tasks run there.
    pub fn start(
        listener: TcpListener,
        config: MediaServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<MediaServer> {
        let local_addr = listener.local_addr()?;
        let server = MediaServer {
            local_addr,
            registry: Arc::new(Mutex::new(HashMap::new())),
            runtime: tokio::runtime::Handle::current(),
            connect_timeout: config.connect_timeout,
        };
        tokio::spawn(accept_loop(
            listener,
            server.clone(),
            Arc::new(config),
            shutdown,
        ));
        Ok(server)
    }

    /// Where Asterisk connects: `AudioSocket(<uuid>,<this address>)`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn expect(
        &self,
        make: impl FnOnce(
            mpsc::UnboundedSender<MediaEvent>,
            mpsc::UnboundedReceiver<MediaCommand>,
        ) -> Expected,
    ) -> MediaHandle {
        let (event_tx, events) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let uuid = new_uuid();
        let expected = make(event_tx.clone(), command_rx);
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid, expected);
        let registry = Arc::downgrade(&self.registry);
        let timeout = self.connect_timeout;
        self.runtime.spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let expired = registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uuid)
                .is_some();
            if expired {
                let _ = event_tx.send(MediaEvent::NeverConnected);
            }
        });
        MediaHandle {
            uuid,
            events,
            commands,
        }
    }

    /// Expect a caller's leg: its audio goes to `log` and to `file` (raw
    /// signed 16-bit little-endian 8 kHz, exactly the bytes received).
    pub fn expect_talker(&self, log: SharedLog, file: PathBuf) -> MediaHandle {
        self.expect_talker_durable(log, file, Arc::default())
    }

    /// [`expect_talker`](Self::expect_talker), and keep `durable` at the
    /// number of samples of `file` an `fdatasync` has covered (what may be
    /// acknowledged as stored).
    pub fn expect_talker_durable(
        &self,
        log: SharedLog,
        file: PathBuf,
        durable: Arc<AtomicU64>,
    ) -> MediaHandle {
        self.expect(|events, commands| Expected::Talker {
            log,
            file,
            durable,
            events,
            commands,
        })
    }

    /// Expect a listener's leg, to be fed `log` from its start.
    pub fn expect_listener(&self, log: SharedLog) -> MediaHandle {
        self.expect_listener_from(log, 0)
    }

    /// Expect a listener's leg, to be fed `log` from recording sample
    /// `start` (rounded down to a 20 ms frame), catching up from there.
    pub fn expect_listener_from(&self, log: SharedLog, start: u64) -> MediaHandle {
        self.expect(|events, commands| Expected::Listener {
            log,
            start,
            events,
            commands,
        })
    }

    /// Forget an expected connection that will not come (call failed).
    pub fn forget(&self, uuid: Uuid) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uuid);
    }

    fn take(&self, uuid: &Uuid) -> Option<Expected> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid)
    }
}

/// A fresh random UUID (version 4) from the kernel's generator.
pub fn new_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom: time and a counter still make it unique here.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    Uuid::v4_from_bytes(bytes)
}

async fn accept_loop(
    listener: TcpListener,
    server: MediaServer,
    config: Arc<MediaServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!("audiosocket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve(stream, &server, &config).await {
                warn!(%peer, "audiosocket connection dropped: {reason}");
            }
            drop(permit);
        });
    }
}

/// Reads messages with the limits; shared by both roles.
struct Reader {
    read: OwnedReadHalf,
    buf: BytesMut,
    partial_since: Option<Instant>,
    partial_timeout: Duration,
    audio_samples: u64,
    first_audio: Option<Instant>,
}

impl Reader {
    fn new(read: OwnedReadHalf, partial_timeout: Duration) -> Self {
        Reader {
            read,
            buf: BytesMut::with_capacity(4096),
            partial_since: None,
            partial_timeout,
            audio_samples: 0,
            first_audio: None,
        }
    }

    /// The next message; `Ok(None)` on EOF.
    async fn next(&mut self) -> Result<Option<Message>, MediaEnd> {
        loop {
            match audiosocket::decode(&mut self.buf, MAX_PAYLOAD) {
                Ok(Some(message)) => {
                    self.partial_since = (!self.buf.is_empty()).then(Instant::now);
                    if let Message::Audio { samples, .. } = &message {
                        self.check_flood(samples.len())?;
                    }
                    return Ok(Some(message));
                }
                Ok(None) => {}
                Err(e) => return Err(MediaEnd::Protocol(e.to_string())),
            }
            if !self.buf.is_empty() && self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
            let read = self.read.read_buf(&mut self.buf);
            let n = match self.partial_since {
                Some(since) => {
                    let deadline = tokio::time::Instant::from_std(since + self.partial_timeout);
                    match tokio::time::timeout_at(deadline, read).await {
                        Ok(n) => n,
                        Err(_) => {
                            return Err(MediaEnd::Protocol("a message was left unfinished".into()));
                        }
                    }
                }
                None => read.await,
            }
            .map_err(io_end)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(MediaEnd::Protocol("closed inside a message".into()))
                };
            }
        }
    }

    /// More than twice real time (after a second of grace) is a flood.
    fn check_flood(&mut self, samples: usize) -> Result<(), MediaEnd> {
        let first = *self.first_audio.get_or_insert_with(Instant::now);
        self.audio_samples += samples as u64;
        let allowed = (first.elapsed().as_secs_f64() + 1.0) * f64::from(SAMPLE_RATE) * 2.0;
        if self.audio_samples as f64 > allowed {
            return Err(MediaEnd::Protocol(format!(
                "flood: {} samples in {:?}",
                self.audio_samples,
                first.elapsed()
            )));
        }
        Ok(())
    }
}

async fn serve(
    stream: TcpStream,
    server: &MediaServer,
    config: &MediaServerConfig,
) -> Result<(), String> {
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (read, write) = stream.into_split();
    let mut reader = Reader::new(read, config.partial_message_timeout);
    let first = tokio::time::timeout(config.handshake_timeout, reader.next())
        .await
        .map_err(|_| "no uuid in time".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let uuid = match first {
        Some(Message::Uuid(uuid)) => uuid,
        Some(other) => return Err(format!("first message is not a uuid: {other:?}")),
        None => return Err("closed before its uuid".into()),
    };
    let Some(expected) = server.take(&uuid) else {
        return Err(format!("unexpected uuid {uuid}"));
    };
    debug!(%uuid, "audiosocket connected");
    match expected {
        Expected::Talker {
            log,
            file,
            durable,
            events,
            commands,
        } => {
            let _ = events.send(MediaEvent::Connected);
            let (end, stored_samples) = talker(
                reader,
                write,
                log,
                (file, durable),
                &events,
                commands,
                config,
            )
            .await;
            let _ = events.send(MediaEvent::TalkerEnded {
                end,
                stored_samples,
            });
        }
        Expected::Listener {
            log,
            start,
            events,
            commands,
        } => {
            let _ = events.send(MediaEvent::Connected);
            let cursor = Listener::starting_at(config.playout, SAMPLE_RATE, start);
            let (end, heard_position, stats) =
                listener(reader, write, log, cursor, &events, commands, config).await;
            let _ = events.send(MediaEvent::ListenerEnded {
                end,
                heard_position,
                stats,
            });
        }
    }
    Ok(())
}

/// The durable side of a talker: a thread that appends and syncs.
struct DiskWriter {
    frames: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    done: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl DiskWriter {
    fn start(
        path: PathBuf,
        durable: Arc<AtomicU64>,
        sync_interval: Duration,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<DiskWriter, String> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let done = std::thread::Builder::new()
            .name("ivm-media-writer".into())
            .spawn(move || {
                // Written and synced together every interval: one write and
                // one fdatasync instead of 50 writes a second; what is lost
                // in a crash is the same interval either way.
                let mut written = 0u64;
                let mut last_sync = Instant::now();
                let mut pending: Vec<u8> = Vec::new();
                let mut flush = |pending: &mut Vec<u8>| -> Result<(), String> {
                    if !pending.is_empty() {
                        let wrote = file.write_all(pending).and_then(|()| file.sync_data());
                        if let Err(e) = wrote {
                            // Told at once, not at the end of the call: the
                            // caller is still talking into a full disk.
                            let _ = events.send(MediaEvent::StoreFailed {
                                stored_samples: written / 2,
                                error: e.to_string(),
                            });
                            return Err(e.to_string());
                        }
                        written += pending.len() as u64;
                        durable.store(written / 2, Ordering::Release);
                        pending.clear();
                    }
                    Ok(())
                };
                // Parked between syncs, not blocked in recv: a blocked
                // receiver is woken by every frame sent (50 wake-ups a
                // second per talker); `finish` unparks it to end at once.
                loop {
                    std::thread::park_timeout(sync_interval.saturating_sub(last_sync.elapsed()));
                    let mut closed = false;
                    loop {
                        match rx.try_recv() {
                            Ok(bytes) => pending.extend_from_slice(&bytes),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if closed {
                        break;
                    }
                    if last_sync.elapsed() >= sync_interval {
                        flush(&mut pending)?;
                        last_sync = Instant::now();
                    }
                }
                flush(&mut pending)?;
                file.sync_all().map_err(|e| e.to_string())?;
                Ok(written / 2)
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(DiskWriter {
            frames: Some(tx),
            done: Some(done),
        })
    }

    fn append(&self, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        if let Some(frames) = &self.frames {
            let _ = frames.send(bytes);
        }
    }

    /// Close, sync, and report the samples stored.
    async fn finish(mut self) -> Result<u64, String> {
        self.frames = None;
        let Some(done) = self.done.take() else {
            return Ok(0);
        };
        done.thread().unpark();
        tokio::task::spawn_blocking(move || done.join())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "the writer thread panicked".to_string())?
    }
}

/// A peer that has not taken a frame for this long is gone (or hostile:
/// one that never reads would otherwise hold its task forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

async fn send(write: &mut OwnedWriteHalf, bytes: Bytes) -> Result<(), MediaEnd> {
    // One buffer per message: Asterisk waits only 5 ms for the rest.
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io_end(e)),
        Err(_) => Err(MediaEnd::Io("the peer stopped reading".into())),
    }
}

/// A socket error as the end of a connection. A reset or a broken pipe
/// says Asterisk closed its end: the channel hung up, as an orderly close
/// would say. (A frame written in the instant between the hang-up and our
/// reading the close would otherwise cut a whole message to `partial`:
/// seen on 100 callers hung up at once.)
fn io_end(e: std::io::Error) -> MediaEnd {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            MediaEnd::PeerClosed
        }
        _ => MediaEnd::Io(e.to_string()),
    }
}

fn frame_bytes(samples: &[i16]) -> Bytes {
    // Callers pass 160 samples, which always encode; were that ever not so,
    // a whole frame of silence keeps the stream's framing intact.
    audiosocket::encode_audio(SAMPLE_RATE, samples).unwrap_or_else(|_| {
        let mut silence = vec![0u8; audiosocket::HEADER_LEN + FRAME_SAMPLES * 2];
        silence[..3].copy_from_slice(&[0x10, 0x01, 0x40]);
        Bytes::from(silence)
    })
}

/// A deadline clock for one 20 ms sender: absolute deadlines, lateness
/// measured, small misses caught up, big ones skipped.
struct Pacer {
    next: tokio::time::Instant,
    max_burst: Duration,
    stats: SenderStats,
}

impl Pacer {
    fn new(max_burst: Duration) -> Self {
        Pacer {
            next: tokio::time::Instant::now(),
            max_burst,
            stats: SenderStats::default(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(self.next);
        if late > self.max_burst {
            // Resync instead of bursting: Asterisk would forward a burst as
            // RTP with jumping timestamps.
            let missed = late.as_micros() / TICK.as_micros();
            self.stats.skipped_ticks += missed as u64;
            self.next = now;
        } else {
            self.stats
                .lateness_us
                .push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
        }
        self.next += TICK;
    }
}

async fn talker(
    mut reader: Reader,
    mut write: OwnedWriteHalf,
    log: SharedLog,
    (file, durable): (PathBuf, Arc<AtomicU64>),
    events: &mpsc::UnboundedSender<MediaEvent>,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    config: &MediaServerConfig,
) -> (MediaEnd, u64) {
    let writer = match DiskWriter::start(file, durable, config.sync_interval, events.clone()) {
        Ok(writer) => writer,
        Err(e) => {
            log.with(FrameLog::close);
            return (MediaEnd::Io(e), 0);
        }
    };
    let mut prompts: std::collections::VecDeque<i16> = Default::default();
    let mut finishing = false;
    let mut commands_open = true;
    let mut pacer = Pacer::new(config.max_burst);
    let silence = frame_bytes(&[0; FRAME_SAMPLES]);
    let end = loop {
        tokio::select! {
            message = reader.next() => match message {
                Ok(Some(Message::Audio { samples, .. })) => {
                    log.with(|l| l.append(&samples));
                    writer.append(&samples);
                }
                Ok(Some(Message::Dtmf(key))) => {
                    let _ = events.send(MediaEvent::Dtmf(key));
                }
                Ok(Some(other)) => {
                    break MediaEnd::Protocol(format!("unexpected from asterisk: {other:?}"));
                }
                Ok(None) => break MediaEnd::PeerClosed,
                Err(end) => break end,
            },
            command = commands.recv(), if commands_open => match command {
                Some(MediaCommand::Play(samples)) => prompts.extend(samples),
                Some(MediaCommand::CancelPrompts) => prompts.clear(),
                Some(MediaCommand::Finish) => finishing = true,
                // The session is gone: keep recording until the caller
                // hangs up, the message is still theirs.
                None => commands_open = false,
            },
            () = pacer.wait() => {
                if prompts.is_empty() && finishing {
                    let _ = send(&mut write, audiosocket::encode_hangup()).await;
                    break MediaEnd::Finished;
                }
                let bytes = if prompts.is_empty() {
                    silence.clone()
                } else {
                    let take = prompts.len().min(FRAME_SAMPLES);
                    let mut frame: Vec<i16> = prompts.drain(..take).collect();
                    frame.resize(FRAME_SAMPLES, 0);
                    frame_bytes(&frame)
                };
                if let Err(end) = send(&mut write, bytes).await {
                    break end;
                }
                pacer.stats.frames_sent += 1;
            }
        }
    };
    log.with(FrameLog::close);
    match writer.finish().await {
        Ok(stored) => (end, stored),
        Err(e) => (MediaEnd::Io(e), 0),
    }
}

async fn listener(
    mut reader: Reader,
    mut write: OwnedWriteHalf,
    log: SharedLog,
    mut cursor: Listener,
    events: &mpsc::UnboundedSender<MediaEvent>,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    config: &MediaServerConfig,
) -> (MediaEnd, u64, SenderStats) {
    let mut pacer = Pacer::new(config.max_burst);
    let mut commands_open = true;
    let end = loop {
        tokio::select! {
            // The listener's own audio is not used; keys are.
            message = reader.next() => match message {
                Ok(Some(Message::Audio { .. })) => {}
                Ok(Some(Message::Dtmf(key))) => {
                    let _ = events.send(MediaEvent::Dtmf(key));
                }
                Ok(Some(other)) => {
                    break MediaEnd::Protocol(format!("unexpected from asterisk: {other:?}"));
                }
                Ok(None) => break MediaEnd::PeerClosed,
                Err(end) => break end,
            },
            command = commands.recv(), if commands_open => match command {
                Some(MediaCommand::Play(samples)) => cursor.play_prompt(&samples),
                Some(MediaCommand::CancelPrompts) => cursor.cancel_prompts(),
                Some(MediaCommand::Finish) => {
                    let _ = send(&mut write, audiosocket::encode_hangup()).await;
                    break MediaEnd::Finished;
                }
                None => commands_open = false,
            },
            () = pacer.wait() => {
                let tick = log.with(|l| cursor.poll_frame(l));
                match tick {
                    Tick::Frame { samples, .. } => {
                        if let Err(end) = send(&mut write, frame_bytes(&samples)).await {
                            break end;
                        }
                        pacer.stats.frames_sent += 1;
                    }
                    Tick::End => {
                        let _ = send(&mut write, audiosocket::encode_hangup()).await;
                        break MediaEnd::Finished;
                    }
                }
            }
        }
    };
    let playout = cursor.stats();
    pacer.stats.underruns = playout.underruns;
    pacer.stats.live_at_frame = playout.live_at_tick;
    (end, cursor.recording_position(), pacer.stats)
}

#[cfg(test)]
mod io_end_tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_reset_or_broken_pipe_is_the_peers_close_other_errors_are_not() {
        for kind in [ErrorKind::BrokenPipe, ErrorKind::ConnectionReset] {
            assert_eq!(io_end(Error::from(kind)), MediaEnd::PeerClosed, "{kind:?}");
        }
        assert!(matches!(
            io_end(Error::from(ErrorKind::PermissionDenied)),
            MediaEnd::Io(_)
        ));
    }
}
