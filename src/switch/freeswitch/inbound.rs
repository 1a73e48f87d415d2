//! Inbound Event Socket client: one long-lived connection from `ivm` to
//! FreeSWITCH's event socket (port 8021), shared by cloneable
//! [`InboundClient`] handles.
//!
//! Owns: the TCP connection, the `auth` exchange, the event subscription,
//! `api`/`bgapi` requests and their timeouts, fan-out of every subscribed
//! event, a liveness check (FreeSWITCH sends `HEARTBEAT` every 20 s when
//! subscribed; with a keepalive, a silent connection is asked `api status`
//! and dropped when that goes unanswered), and reconnection with
//! exponential backoff. Must not know:
//! what the commands mean to `ivm` (originate, bridge and the rest are built
//! on [`InboundClient::api`] by the adapter) or the byte syntax
//! (`proto::esl`).
//!
//! Behaviour a caller can rely on (the same as the AMI client's):
//!
//! * While not connected, requests fail at once with
//!   [`InboundError::NotConnected`]; nothing is queued for later, because an
//!   originate that runs a minute late is worse than one that fails.
//! * A request written but unanswered when the connection drops fails with
//!   [`InboundError::ConnectionLost`]: it may or may not have run.
//! * A refused password shows as [`InboundState::AuthFailed`] and stays so,
//!   through retries that back off like any other failure, until a login
//!   succeeds.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::connection::{self, ConnectionError, EslConnection, Incoming, Reply};
use crate::proto::esl::{self, ApiResponse, CommandReply, Event, EventFormat, Limits};

/// Events buffered per [`InboundClient::events`] subscriber before it lags.
pub const EVENT_BUFFER: usize = 1024;
/// Keepalive period `ivm`'s FreeSWITCH adapter uses: after this long
/// without a byte from FreeSWITCH an `api status` goes out; after three
/// times this long without one (or its answer) the connection counts as
/// dead and is replaced (checked every half period: dead within 1.4 s,
/// reconnecting one backoff step later), like the AMI keepalive.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_millis(400);
/// The keepalive's command: FreeSWITCH answers it at once from memory
/// (uptime and session counts), touching no channel.
pub const KEEPALIVE_COMMAND: &str = "status";

/// Where the connection stands, as seen through [`InboundClient::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundState {
    /// Connecting, waiting for `auth/request`, authenticating, subscribing.
    Connecting,
    /// Authenticated and subscribed.
    Connected,
    /// FreeSWITCH refused the password; retried with backoff. Holds its reply.
    AuthFailed(String),
    /// Not connected; holds why. A retry follows after the backoff delay.
    Disconnected(String),
}

impl fmt::Display for InboundState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundState::Connecting => f.write_str("connecting"),
            InboundState::Connected => f.write_str("connected"),
            InboundState::AuthFailed(reply) => write!(f, "password refused ({reply})"),
            InboundState::Disconnected(reason) => write!(f, "disconnected: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error(
        "not connected to the freeswitch event socket at {address} ({state}); \
         wait with wait_connected or retry"
    )]
    NotConnected { address: SocketAddr, state: String },
    #[error(
        "freeswitch refused the event socket password: {0}; make [freeswitch] esl_password \
         match the password in event_socket.conf.xml"
    )]
    AuthFailed(String),
    #[error(
        "the event socket connection dropped before freeswitch answered {command} ({reason}); \
         it may or may not have run"
    )]
    ConnectionLost {
        command: String,
        reason: ConnectionError,
    },
    #[error("freeswitch did not answer {command} within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("freeswitch refused {command}: {message}")]
    Refused { command: String, message: String },
    #[error(transparent)]
    Command(#[from] esl::CommandError),
    #[error("the event socket client has shut down")]
    Closed,
}

/// How to reach and log in to FreeSWITCH, and the client's timings.
#[derive(Clone)]
pub struct InboundOptions {
    pub address: SocketAddr,
    pub password: String,
    /// `event plain` arguments (`CUSTOM` and its subclasses last).
    pub events: Vec<String>,
    /// Longest wait for one reply.
    pub request_timeout: Duration,
    /// Longest time for TCP connect, greeting, auth and subscription together.
    pub connect_timeout: Duration,
    /// No byte at all for this long means the connection is dead (subscribe
    /// to `HEARTBEAT` so that an idle FreeSWITCH still talks every 20 s).
    pub idle_timeout: Option<Duration>,
    /// When set, a connection silent this long is sent
    /// [`KEEPALIVE_COMMAND`], and one silent three times this long (no
    /// event, no answer) is dropped and reconnected. `None` (the default of
    /// [`InboundOptions::new`]): no keepalive.
    pub keepalive: Option<Duration>,
    /// First retry delay, doubled after each failed attempt up to
    /// `backoff_max`; back to the minimum after a connection was lost.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub limits: Limits,
}

impl InboundOptions {
    pub fn new(address: SocketAddr, password: impl Into<String>) -> Self {
        InboundOptions {
            address,
            password: password.into(),
            events: vec!["HEARTBEAT".to_owned()],
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(65)),
            keepalive: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

impl fmt::Debug for InboundOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundOptions")
            .field("address", &self.address)
            .field("password", &"***")
            .field("events", &self.events)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive", &self.keepalive)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .finish()
    }
}

/// A cloneable handle to the inbound connection.
#[derive(Clone)]
pub struct InboundClient {
    shared: Arc<Shared>,
}

struct Shared {
    address: SocketAddr,
    request_timeout: Duration,
    /// The live connection, while authenticated and subscribed.
    current: Mutex<Option<EslConnection>>,
    /// Requests handed to a connection so far (login, subscription and
    /// keepalives not counted).
    sent: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Event>,
    state: watch::Receiver<InboundState>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for InboundClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundClient")
            .field("address", &self.shared.address)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

/// A poisoned lock only means another task panicked mid-update of a plain
/// value; the value itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl InboundClient {
    /// Start the connection task. Must be called within a Tokio runtime.
    pub fn start(options: InboundOptions) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (state_tx, state_rx) = watch::channel(InboundState::Connecting);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            address: options.address,
            request_timeout: options.request_timeout,
            current: Mutex::new(None),
            sent: std::sync::atomic::AtomicU64::new(0),
            events,
            state: state_rx,
            shutdown: shutdown_tx,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(options, Arc::downgrade(&shared), state_tx, shutdown_rx));
        *lock(&shared.task) = Some(task);
        InboundClient { shared }
    }

    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// `api COMMAND`: the response, also when its body is `-ERR ...`.
    pub async fn api(&self, command_line: &str) -> Result<ApiResponse, InboundError> {
        let text = esl::api(command_line)?;
        match self.request(text, command_name(command_line)).await? {
            Reply::Api(response) => Ok(response),
            Reply::Command(reply) => Err(InboundError::Refused {
                command: command_name(command_line).to_owned(),
                message: reply.reply_text,
            }),
        }
    }

    /// `api COMMAND` that must answer `+OK`; `-ERR` becomes
    /// [`InboundError::Refused`].
    pub async fn api_ok(&self, command_line: &str) -> Result<ApiResponse, InboundError> {
        let response = self.api(command_line).await?;
        if response.is_err() {
            return Err(InboundError::Refused {
                command: command_name(command_line).to_owned(),
                message: response.body.trim_end().to_owned(),
            });
        }
        Ok(response)
    }

    /// `bgapi COMMAND` with our own `Job-UUID`; the later `BACKGROUND_JOB`
    /// event carries it.
    pub async fn bgapi(
        &self,
        command_line: &str,
        job_uuid: &str,
    ) -> Result<CommandReply, InboundError> {
        let text = esl::bgapi(command_line, Some(job_uuid))?;
        let command = format!("bgapi {}", command_name(command_line));
        match self.request(text, &command).await? {
            Reply::Command(reply) if reply.is_ok() => Ok(reply),
            Reply::Command(reply) => Err(InboundError::Refused {
                command,
                message: reply.reply_text,
            }),
            Reply::Api(response) => Err(InboundError::Refused {
                command,
                message: response.body,
            }),
        }
    }

    /// Any complete command text (e.g. `sendevent` with a body); `what`
    /// names it in errors and logs.
    pub async fn request(&self, text: String, what: &str) -> Result<Reply, InboundError> {
        let connection = lock(&self.shared.current).clone();
        let Some(connection) = connection else {
            return Err(InboundError::NotConnected {
                address: self.shared.address,
                state: self.shared.state.borrow().to_string(),
            });
        };
        let limit = self.shared.request_timeout;
        self.shared
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match connection.command(text, limit).await {
            Ok(reply) => Ok(reply),
            Err(ConnectionError::Timeout(timeout)) => Err(InboundError::Timeout {
                command: what.to_owned(),
                timeout,
            }),
            Err(reason) => Err(InboundError::ConnectionLost {
                command: what.to_owned(),
                reason,
            }),
        }
    }

    /// How many requests went to FreeSWITCH (login, subscription and
    /// keepalives not counted): lets a test show that nothing was sent.
    pub fn requests_sent(&self) -> u64 {
        self.shared.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new subscription to every event from now on. A subscriber more
    /// than [`EVENT_BUFFER`] events behind loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    pub fn state(&self) -> watch::Receiver<InboundState> {
        self.shared.state.clone()
    }

    /// Wait until connected. Fails at once when the password is refused,
    /// and with `NotConnected` when `limit` passes.
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), InboundError> {
        let mut state = self.state();
        let wait = async {
            loop {
                let verdict = match &*state.borrow_and_update() {
                    InboundState::Connected => Some(Ok(())),
                    InboundState::AuthFailed(reply) => {
                        Some(Err(InboundError::AuthFailed(reply.clone())))
                    }
                    InboundState::Connecting | InboundState::Disconnected(_) => None,
                };
                if let Some(verdict) = verdict {
                    return verdict;
                }
                if state.changed().await.is_err() {
                    return Err(InboundError::Closed);
                }
            }
        };
        match timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => Err(InboundError::NotConnected {
                address: self.shared.address,
                state: self.shared.state.borrow().to_string(),
            }),
        }
    }

    /// Say `exit` and stop the task; requests then fail with `NotConnected`.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let task = lock(&self.shared.task).take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            warn!(%error, "event socket client task ended abnormally");
        }
    }
}

/// The API command's name, for errors and logs (arguments may hold numbers).
fn command_name(command_line: &str) -> &str {
    command_line.split(' ').next().unwrap_or(command_line)
}

enum Outcome {
    Shutdown,
    AuthFailed(String),
    /// Never got as far as connected.
    Failed(String),
    /// Was connected, then lost the connection.
    Lost(String),
}

async fn run(
    options: InboundOptions,
    shared: std::sync::Weak<Shared>,
    state: watch::Sender<InboundState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = options.address;
    let mut delay = options.backoff_min;
    // The last reason a connection could not be made, until one is.
    let mut last_failure: Option<String> = None;
    loop {
        if !matches!(*state.borrow(), InboundState::AuthFailed(_)) {
            state.send_replace(InboundState::Connecting);
        }
        let outcome = attempt(&options, &shared, &state, &mut shutdown).await;
        if let Some(shared) = shared.upgrade() {
            *lock(&shared.current) = None;
        }
        match outcome {
            Outcome::Shutdown => break,
            Outcome::AuthFailed(reply) => {
                warn!(%address, %reply, retry_in = ?delay,
                    "freeswitch refused the event socket password; check [freeswitch] esl_password");
                state.send_replace(InboundState::AuthFailed(reply));
            }
            Outcome::Failed(reason) => {
                // The same failure again (a switch still down) only at
                // debug: retries come every second at most.
                if last_failure.as_ref() == Some(&reason) {
                    debug!(%address, %reason, retry_in = ?delay,
                        "could not connect to the freeswitch event socket");
                } else {
                    warn!(%address, %reason, retry_in = ?delay,
                        "could not connect to the freeswitch event socket");
                }
                last_failure = Some(reason.clone());
                state.send_replace(InboundState::Disconnected(reason));
            }
            Outcome::Lost(reason) => {
                delay = options.backoff_min;
                last_failure = None;
                warn!(%address, %reason, retry_in = ?delay,
                    "lost the freeswitch event socket connection");
                state.send_replace(InboundState::Disconnected(reason));
            }
        }
        let pause = tokio::time::sleep(delay);
        tokio::select! {
            () = pause => {}
            _ = shutdown.changed() => break,
        }
        if shared.strong_count() == 0 {
            break;
        }
        delay = (delay * 2).min(options.backoff_max);
    }
    state.send_replace(InboundState::Disconnected(
        "the event socket client was shut down".to_owned(),
    ));
}

async fn attempt(
    options: &InboundOptions,
    shared: &std::sync::Weak<Shared>,
    state: &watch::Sender<InboundState>,
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome {
    let login = login(options);
    let (connection, mut incoming) = tokio::select! {
        result = timeout(options.connect_timeout, login) => match result {
            Ok(Ok(done)) => done,
            Ok(Err(outcome)) => return outcome,
            Err(_) => return Outcome::Failed(format!(
                "no greeting, auth and subscription from {} within {:?}",
                options.address, options.connect_timeout
            )),
        },
        _ = shutdown.changed() => return Outcome::Shutdown,
    };
    let Some(strong) = shared.upgrade() else {
        return Outcome::Shutdown;
    };
    *lock(&strong.current) = Some(connection.clone());
    let events = strong.events.clone();
    drop(strong);
    info!(address = %options.address, "connected to the freeswitch event socket");
    state.send_replace(InboundState::Connected);

    let mut last_byte = Instant::now();
    let keepalive = options.keepalive;
    let mut tick = tokio::time::interval(keepalive.unwrap_or(Duration::from_secs(3600)) / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The keepalive's answer, while one is outstanding.
    let mut ping: Option<oneshot::Receiver<Result<Reply, ConnectionError>>> = None;
    loop {
        let idle = async {
            match options.idle_timeout {
                Some(idle) => tokio::time::sleep_until(last_byte + idle).await,
                None => std::future::pending().await,
            }
        };
        let answer = async {
            match ping.as_mut() {
                Some(answer) => answer.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = incoming.recv() => {
                last_byte = Instant::now();
                match item {
                    Some(Incoming::Event(event)) => {
                        // No subscriber is fine: then nobody wants events.
                        let _ = events.send(event);
                    }
                    Some(Incoming::Closed(reason)) => return Outcome::Lost(reason.to_string()),
                    None => return Outcome::Lost("the connection task ended".to_owned()),
                    Some(Incoming::DisconnectNotice(_) | Incoming::AuthRequest | Incoming::Rejected(_)) => {}
                }
            }
            answer = answer => {
                ping = None;
                match answer {
                    Ok(Ok(_)) => last_byte = Instant::now(),
                    Ok(Err(reason)) => return Outcome::Lost(format!("keepalive: {reason}")),
                    Err(_) => return Outcome::Lost("the connection task ended".to_owned()),
                }
            }
            _ = tick.tick(), if keepalive.is_some() => {
                let period = keepalive.unwrap_or_default();
                let silent = last_byte.elapsed();
                if silent >= period * 3 {
                    return Outcome::Lost(format!(
                        "no answer to a keepalive `api {KEEPALIVE_COMMAND}` for {silent:?}"
                    ));
                }
                if silent >= period && ping.is_none() {
                    let text = esl::api(KEEPALIVE_COMMAND).unwrap_or_default();
                    match connection.submit(text) {
                        Ok(answer) => ping = Some(answer),
                        // A full queue is FreeSWITCH not answering: the
                        // silence check above ends it.
                        Err(ConnectionError::TooManyInFlight(_)) => {}
                        Err(reason) => return Outcome::Lost(format!("keepalive: {reason}")),
                    }
                }
            }
            () = idle => {
                return Outcome::Lost(format!(
                    "nothing from freeswitch for {:?}; the connection is presumed dead",
                    options.idle_timeout.unwrap_or_default()
                ));
            }
            _ = shutdown.changed() => {
                // Best effort: FreeSWITCH answers `exit` and closes.
                let _ = connection.command(esl::exit(), Duration::from_secs(1)).await;
                return Outcome::Shutdown;
            }
        }
    }
}

/// Connect, wait for `auth/request`, authenticate, subscribe.
async fn login(
    options: &InboundOptions,
) -> Result<(EslConnection, mpsc::Receiver<Incoming>), Outcome> {
    let address = options.address;
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| Outcome::Failed(format!("connect to {address} failed: {e}")))?;
    let (connection, mut incoming) = connection::spawn(stream, options.limits);
    loop {
        match incoming.recv().await {
            Some(Incoming::AuthRequest) => break,
            Some(Incoming::Rejected(body)) => {
                return Err(Outcome::Failed(format!(
                    "refused by the event socket ACL ({}): allow this host in \
                     event_socket.conf.xml apply-inbound-acl",
                    body.trim()
                )));
            }
            Some(Incoming::Closed(reason)) => {
                return Err(Outcome::Failed(format!("before the greeting: {reason}")));
            }
            None => return Err(Outcome::Failed("the connection task ended".to_owned())),
            Some(Incoming::Event(_) | Incoming::DisconnectNotice(_)) => {}
        }
    }
    let auth = esl::auth(&options.password).map_err(|e| Outcome::Failed(e.to_string()))?;
    match connection.command(auth, options.connect_timeout).await {
        Ok(reply) if reply.is_ok() => {}
        Ok(reply) => return Err(Outcome::AuthFailed(reply.text().to_owned())),
        Err(reason) => {
            // FreeSWITCH closes the socket right after `-ERR invalid`; if
            // the reply was lost with it, say what is known.
            return Err(Outcome::Failed(format!("during auth: {reason}")));
        }
    }
    let names: Vec<&str> = options.events.iter().map(String::as_str).collect();
    if !names.is_empty() {
        let subscribe =
            esl::event(EventFormat::Plain, &names).map_err(|e| Outcome::Failed(e.to_string()))?;
        match connection.command(subscribe, options.connect_timeout).await {
            Ok(reply) if reply.is_ok() => {}
            Ok(reply) => {
                return Err(Outcome::Failed(format!(
                    "event subscription refused: {}",
                    reply.text()
                )));
            }
            Err(reason) => return Err(Outcome::Failed(format!("during subscription: {reason}"))),
        }
    }
    Ok((connection, incoming))
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Play FreeSWITCH up to the subscription, then answer `api status`
    /// only if `answer_keepalives`; everything read is sent on `seen`.
    async fn login_then(
        listener: &TcpListener,
        answer_keepalives: bool,
        seen: mpsc::UnboundedSender<String>,
    ) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write
            .write_all(b"Content-Type: auth/request\n\n")
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut command = String::new();
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line != "\n" {
                    command.push_str(&line);
                    continue;
                }
                let text = std::mem::take(&mut command);
                let reply: &[u8] = if text.starts_with("api status") {
                    if !answer_keepalives {
                        let _ = seen.send(text);
                        continue;
                    }
                    b"Content-Type: api/response\nContent-Length: 9\n\nUP 0 days"
                } else {
                    b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
                };
                let _ = seen.send(text);
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }

    fn keepalive_options(listener: &TcpListener) -> InboundOptions {
        let mut options = InboundOptions::new(listener.local_addr().unwrap(), "ClueCon");
        options.keepalive = Some(DEFAULT_KEEPALIVE);
        options
    }

    #[tokio::test]
    async fn a_silent_connection_is_replaced_within_two_seconds() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = InboundClient::start(keepalive_options(&listener));
        let (seen, mut commands) = mpsc::unbounded_channel();
        login_then(&listener, false, seen).await;
        client.wait_connected(Duration::from_secs(2)).await.unwrap();
        let silent_since = Instant::now();
        // The peer keeps the socket open but answers nothing after the
        // subscription, not even the keepalive.
        let (seen_again, _) = mpsc::unbounded_channel();
        let second = timeout(
            Duration::from_secs(5),
            login_then(&listener, false, seen_again),
        )
        .await;
        assert!(
            second.is_ok(),
            "no reconnect after the keepalive went unanswered"
        );
        let took = silent_since.elapsed();
        assert!(took < Duration::from_secs(2), "reconnected after {took:?}");
        let mut sent = Vec::new();
        while let Ok(command) = commands.try_recv() {
            sent.push(command);
        }
        assert!(
            sent.iter().any(|c| c == "api status\n"),
            "the keepalive was asked first: {sent:?}"
        );
        client.shutdown().await;
    }

    #[tokio::test]
    async fn an_answered_keepalive_keeps_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = InboundClient::start(keepalive_options(&listener));
        let (seen, mut commands) = mpsc::unbounded_channel();
        login_then(&listener, true, seen).await;
        client.wait_connected(Duration::from_secs(2)).await.unwrap();
        // Three keepalives answered: more than the 1.2 s a silent
        // connection lasts, and no second connection meanwhile.
        let mut keepalives = 0;
        while keepalives < 3 {
            let command = timeout(Duration::from_secs(2), commands.recv())
                .await
                .expect("a keepalive within two periods")
                .unwrap();
            if command == "api status\n" {
                keepalives += 1;
            }
        }
        let reconnect = timeout(Duration::from_millis(10), listener.accept()).await;
        assert!(
            reconnect.is_err(),
            "reconnected although FreeSWITCH answered"
        );
        assert_eq!(*client.state().borrow(), InboundState::Connected);
        client.shutdown().await;
    }

    #[test]
    fn options_debug_hides_the_password() {
        let options = InboundOptions::new(([127, 0, 0, 1], 8021).into(), "s3cret");
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn command_names_hide_arguments() {
        assert_eq!(command_name("uuid_kill abc NORMAL_CLEARING"), "uuid_kill");
        assert_eq!(command_name("status"), "status");
    }
}
