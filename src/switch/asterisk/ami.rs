//! AMI client: one long-lived manager connection to Asterisk, shared by
//! cloneable [`AmiClient`] handles.
//!
//! Owns: the TCP connection, the login, waiting for `FullyBooted`, ActionID
//! generation and correlation (including `EventList` collection), request
//! timeouts, fan-out of every event, and reconnection with exponential
//! backoff. Must not know: what the actions mean to `ivm` (originate, device
//! state and messaging are built on top of [`AmiClient::send`]) or the byte
//! syntax (that is `proto::ami`).
//!
//! Behaviour a caller can rely on:
//!
//! * While not connected, [`AmiClient::send`] fails at once with
//!   [`AmiClientError::NotConnected`]; it never queues an action for later,
//!   because an originate that runs a minute late is worse than one that
//!   fails. Use [`AmiClient::wait_connected`] to wait.
//! * An action that was written but not answered when the connection drops
//!   fails with [`AmiClientError::ConnectionLost`]: it may or may not have
//!   run.
//! * A refused login shows as [`AmiConnection::LoginFailed`] and stays so,
//!   through retries that back off like any other failure, until a login
//!   succeeds.
//! * The task ends on [`AmiClient::shutdown`] or when the last handle is
//!   dropped, after a best-effort `Logoff`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::proto::ami::{self, AmiAction, AmiDecoder, AmiError, AmiFrame, AmiMessage};

/// Most items one `EventList` may collect before the request fails.
pub const MAX_LIST_EVENTS: usize = 10_000;
/// Events buffered per [`AmiClient::events`] subscriber before it lags.
pub const EVENT_BUFFER: usize = 1024;
/// Actions queued from handles to the connection task.
const REQUEST_QUEUE: usize = 256;
/// How long a `Logoff` on shutdown may take to write.
const LOGOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes reserved for each socket read.
const READ_CHUNK: usize = 8 * 1024;
/// Keepalive period `ivm`'s Asterisk adapter uses: after this long without
/// a byte from Asterisk a `Ping` goes out; after three times this long
/// without one the connection counts as dead and is replaced (checked every
/// half period: dead within 1.4 s, reconnecting 0.1 s later).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_millis(400);
/// ActionID prefix of keepalive pings (their answers go nowhere).
const KEEPALIVE_ID: &str = "ivm-keepalive-";

/// Where the manager connection stands, as seen through
/// [`AmiClient::connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiConnection {
    /// Connecting, reading the banner, logging in, waiting for `FullyBooted`.
    Connecting,
    /// Logged in and ready; `version` is the AMI version from the banner.
    Connected { version: String },
    /// Asterisk refused the login; retried with backoff. Holds its message.
    LoginFailed(String),
    /// Not connected; holds why. A retry follows after the backoff delay.
    Disconnected(String),
}

impl fmt::Display for AmiConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmiConnection::Connecting => f.write_str("connecting"),
            AmiConnection::Connected { version } => write!(f, "connected (AMI {version})"),
            AmiConnection::LoginFailed(message) => write!(f, "login failed: {message}"),
            AmiConnection::Disconnected(reason) => write!(f, "disconnected: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmiClientError {
    #[error(
        "not connected to asterisk ami at {address} ({state}); wait with wait_connected or retry"
    )]
    NotConnected { address: SocketAddr, state: String },
    #[error(
        "the ami connection dropped before asterisk answered {action} ({reason}); \
         the action may or may not have run"
    )]
    ConnectionLost { action: String, reason: String },
    #[error("asterisk did not answer {action} within {timeout:?}")]
    Timeout { action: String, timeout: Duration },
    #[error(
        "asterisk refused the ami login: {0}; check the username and secret in \
         manager.conf and that the user is permitted from this address"
    )]
    LoginFailed(String),
    #[error("asterisk refused {action}: {message}")]
    Refused { action: String, message: String },
    #[error("asterisk sent more than {limit} items in answer to {action}")]
    ListTooLong { action: String, limit: usize },
    #[error("the ami client has shut down")]
    Closed,
    #[error(transparent)]
    Codec(#[from] AmiError),
}

/// Asterisk's answer to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiResponse {
    /// The ActionID the client generated; events that answer the action
    /// later (e.g. `OriginateResponse`) carry it.
    pub action_id: String,
    pub response: AmiMessage,
    /// For a list (`EventList: start`): the items, in order.
    pub events: Vec<AmiMessage>,
    /// For a list: the closing event (`EventList: Complete`, `ListItems`).
    pub complete: Option<AmiMessage>,
}

impl AmiResponse {
    /// `Response: Success` (or `Follows`, the legacy command answer).
    pub fn is_success(&self) -> bool {
        self.response.is("Response", "Success") || self.response.is("Response", "Follows")
    }

    pub fn message(&self) -> Option<&str> {
        self.response.message()
    }

    /// `Ok(self)` when successful, else [`AmiClientError::Refused`] with
    /// Asterisk's message.
    pub fn into_result(self, action: &str) -> Result<Self, AmiClientError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(AmiClientError::Refused {
                action: action.to_owned(),
                message: self
                    .message()
                    .or(self.response.response())
                    .unwrap_or("no message")
                    .to_owned(),
            })
        }
    }
}

/// How to reach and log in to Asterisk, and the client's timings.
#[derive(Clone)]
pub struct AmiClientOptions {
    pub address: SocketAddr,
    pub username: String,
    pub secret: String,
    /// `Events:` sent with `Login`; `None` uses the user's `read` classes.
    /// The mask must include `system` for `FullyBooted` to arrive.
    pub events: Option<String>,
    /// Longest wait for an answer to one action.
    pub request_timeout: Duration,
    /// Longest time for TCP connect, banner and login response together.
    pub connect_timeout: Duration,
    /// Longest wait for `FullyBooted` after login; when it passes the client
    /// goes on as connected and logs a warning.
    pub fully_booted_timeout: Duration,
    /// First retry delay; doubled after each failed attempt up to
    /// `backoff_max`, and back to the minimum after a successful login.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// When set, a silent connection is pinged after this long and dropped
    /// (then reconnected) after three times this long without a byte.
    /// `None` (the default of [`AmiClientOptions::new`]): no keepalive.
    pub keepalive: Option<Duration>,
}

impl AmiClientOptions {
    pub fn new(
        address: SocketAddr,
        username: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        AmiClientOptions {
            address,
            username: username.into(),
            secret: secret.into(),
            events: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            fully_booted_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            keepalive: None,
        }
    }
}

impl fmt::Debug for AmiClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmiClientOptions")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("secret", &"***")
            .field("events", &self.events)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("fully_booted_timeout", &self.fully_booted_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

/// A cloneable handle to the manager connection.
#[derive(Clone)]
pub struct AmiClient {
    shared: Arc<Shared>,
}

struct Shared {
    address: SocketAddr,
    request_timeout: Duration,
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<AmiMessage>,
    connection: watch::Receiver<AmiConnection>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Actions written to Asterisk so far (login and keepalives excluded).
    sent: Arc<AtomicU64>,
}

struct Request {
    action: AmiAction,
    reply: oneshot::Sender<Result<AmiResponse, AmiClientError>>,
}

impl fmt::Debug for AmiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmiClient")
            .field("address", &self.shared.address)
            .field("connection", &*self.shared.connection.borrow())
            .finish()
    }
}

impl AmiClient {
    /// Starts the connection task with default timings.
    ///
    /// Must be called from within a Tokio runtime (it spawns a task).
    pub fn start(
        address: SocketAddr,
        username: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        AmiClient::start_with(AmiClientOptions::new(address, username, secret))
    }

    /// Starts the connection task. Must be called from within a Tokio runtime.
    pub fn start_with(options: AmiClientOptions) -> Self {
        let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
        let (state_tx, state_rx) = watch::channel(AmiConnection::Connecting);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let address = options.address;
        let request_timeout = options.request_timeout;
        let sent = Arc::new(AtomicU64::new(0));
        let task = ConnectionTask {
            sent: sent.clone(),
            options,
            requests: requests_rx,
            events: events_tx.clone(),
            state: state_tx,
            shutdown: shutdown_rx,
            next_action_id: 1,
        };
        let handle = tokio::spawn(task.run());
        AmiClient {
            shared: Arc::new(Shared {
                address,
                request_timeout,
                requests: requests_tx,
                events: events_tx,
                connection: state_rx,
                shutdown: shutdown_tx,
                task: Mutex::new(Some(handle)),
                sent,
            }),
        }
    }

    /// Sends `action` and waits for its answer (and, for a list action, for
    /// all its items). A `Response: Error` is returned as a response, not an
    /// error: see [`AmiResponse::into_result`].
    pub async fn send(&self, action: AmiAction) -> Result<AmiResponse, AmiClientError> {
        // Refuse what cannot be encoded before it touches the connection.
        ami::encode(&action, "0")?;
        // A value starting with `/` is a regular expression to Asterisk
        // (`Hangup` with `Channel: /./` ends every call): never send one.
        if let Some((name, _)) = action.fields.iter().find(|(_, v)| v.starts_with('/')) {
            return Err(AmiClientError::Refused {
                action: action.name.clone(),
                message: format!("the value of {name} starts with `/`"),
            });
        }
        let state = self.shared.connection.borrow().clone();
        if !matches!(state, AmiConnection::Connected { .. }) {
            return Err(AmiClientError::NotConnected {
                address: self.shared.address,
                state: state.to_string(),
            });
        }
        let name = action.name.clone();
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.shared
                .requests
                .send(Request { action, reply })
                .await
                .map_err(|_| AmiClientError::Closed)?;
            answer.await.map_err(|_| AmiClientError::Closed)?
        };
        match timeout(self.shared.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AmiClientError::Timeout {
                action: name,
                timeout: self.shared.request_timeout,
            }),
        }
    }

    /// A new subscription to every event Asterisk sends, list items
    /// included, from now on. A subscriber more than [`EVENT_BUFFER`] events
    /// behind gets `RecvError::Lagged` and loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<AmiMessage> {
        self.shared.events.subscribe()
    }

    /// How many actions were written to Asterisk (login and keepalive
    /// pings not counted).
    pub fn actions_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    pub fn connection(&self) -> watch::Receiver<AmiConnection> {
        self.shared.connection.clone()
    }

    /// Waits until connected and returns the AMI version. Fails at once when
    /// the login is refused, and with `NotConnected` when `limit` passes.
    pub async fn wait_connected(&self, limit: Duration) -> Result<String, AmiClientError> {
        let mut connection = self.connection();
        let wait = async {
            loop {
                let verdict = match &*connection.borrow_and_update() {
                    AmiConnection::Connected { version } => Some(Ok(version.clone())),
                    AmiConnection::LoginFailed(message) => {
                        Some(Err(AmiClientError::LoginFailed(message.clone())))
                    }
                    AmiConnection::Connecting | AmiConnection::Disconnected(_) => None,
                };
                if let Some(verdict) = verdict {
                    return verdict;
                }
                if connection.changed().await.is_err() {
                    return Err(AmiClientError::Closed);
                }
            }
        };
        match timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => Err(AmiClientError::NotConnected {
                address: self.shared.address,
                state: self.shared.connection.borrow().to_string(),
            }),
        }
    }

    /// Logs off and stops the connection task; every handle then fails with
    /// [`AmiClientError::Closed`] or `NotConnected`. Waits for the task.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let task = match self.shared.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "ami connection task ended abnormally");
        }
    }
}

/// How one connection attempt ended.
enum Outcome {
    /// Shutdown was asked for, or every handle is gone.
    Shutdown,
    LoginFailed(String),
    /// Never got as far as logged in.
    Failed(String),
    /// Was connected, then lost the connection.
    Lost(String),
}

/// Why a handshake failed.
enum HandshakeError {
    Login(String),
    Failed(String),
}

/// A request that was written and awaits its answer.
struct Pending {
    action: String,
    reply: oneshot::Sender<Result<AmiResponse, AmiClientError>>,
    /// Set once a response with `EventList: start` arrived.
    list: Option<AmiMessage>,
    items: Vec<AmiMessage>,
}

struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    decoder: AmiDecoder,
}

impl Connection {
    async fn read_frame(&mut self) -> Result<AmiFrame, String> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) if !error.is_fatal() => {
                    tracing::warn!(%error, "skipped a malformed ami message");
                    continue;
                }
                Err(error) => return Err(error.to_string()),
            }
            self.buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(self.eof_reason()),
                Ok(_) => {}
                Err(error) => return Err(format!("read failed: {error}")),
            }
        }
    }

    fn eof_reason(&self) -> String {
        if self.decoder.is_mid_message(&self.buf) {
            "asterisk closed the connection in the middle of a message".to_owned()
        } else {
            "asterisk closed the connection".to_owned()
        }
    }
}

struct ConnectionTask {
    options: AmiClientOptions,
    requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<AmiMessage>,
    state: watch::Sender<AmiConnection>,
    shutdown: watch::Receiver<bool>,
    next_action_id: u64,
    sent: Arc<AtomicU64>,
}

impl ConnectionTask {
    async fn run(mut self) {
        let address = self.options.address;
        let mut delay = self.options.backoff_min;
        loop {
            if !matches!(*self.state.borrow(), AmiConnection::LoginFailed(_)) {
                self.state.send_replace(AmiConnection::Connecting);
            }
            match self.attempt().await {
                Outcome::Shutdown => break,
                Outcome::LoginFailed(message) => {
                    tracing::warn!(%address, %message, retry_in = ?delay, "asterisk refused the ami login");
                    self.state.send_replace(AmiConnection::LoginFailed(message));
                }
                Outcome::Failed(reason) => {
                    tracing::warn!(%address, %reason, retry_in = ?delay, "could not connect to asterisk ami");
                    self.state.send_replace(AmiConnection::Disconnected(reason));
                }
                Outcome::Lost(reason) => {
                    delay = self.options.backoff_min;
                    tracing::warn!(%address, %reason, retry_in = ?delay, "lost the asterisk ami connection");
                    self.state.send_replace(AmiConnection::Disconnected(reason));
                }
            }
            if !self.pause(delay).await {
                break;
            }
            delay = (delay * 2).min(self.options.backoff_max);
        }
        self.state.send_replace(AmiConnection::Disconnected(
            "the ami client was shut down".to_owned(),
        ));
    }

    fn next_action_id(&mut self) -> String {
        let id = format!("ivm-{}", self.next_action_id);
        self.next_action_id += 1;
        id
    }

    /// Waits `delay`, refusing requests meanwhile. False: shut down.
    async fn pause(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                request = self.requests.recv() => match request {
                    Some(request) => refuse(&self.state, self.options.address, request),
                    None => return false,
                },
                _ = self.shutdown.changed() => return false,
            }
        }
    }

    async fn attempt(&mut self) -> Outcome {
        let login_id = self.next_action_id();
        let handshake = handshake(self.options.clone(), self.events.clone(), login_id);
        tokio::pin!(handshake);
        let (mut connection, version) = loop {
            tokio::select! {
                result = &mut handshake => match result {
                    Ok(done) => break done,
                    Err(HandshakeError::Login(message)) => return Outcome::LoginFailed(message),
                    Err(HandshakeError::Failed(reason)) => return Outcome::Failed(reason),
                },
                request = self.requests.recv() => match request {
                    Some(request) => refuse(&self.state, self.options.address, request),
                    None => return Outcome::Shutdown,
                },
                _ = self.shutdown.changed() => return Outcome::Shutdown,
            }
        };
        tracing::info!(address = %self.options.address, %version, "connected to asterisk ami");
        self.state
            .send_replace(AmiConnection::Connected { version });

        let mut pending: HashMap<String, Pending> = HashMap::new();
        let keepalive = self.options.keepalive;
        let mut tick = tokio::time::interval(keepalive.unwrap_or(Duration::from_secs(3600)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = tokio::time::Instant::now();
        let mut pinged = false;
        let reason = loop {
            connection.buf.reserve(READ_CHUNK);
            tokio::select! {
                read = connection.stream.read_buf(&mut connection.buf) => match read {
                    Ok(0) => break connection.eof_reason(),
                    Ok(_) => {
                        last_read = tokio::time::Instant::now();
                        pinged = false;
                        if let Err(reason) = self.drain(&mut connection, &mut pending) {
                            break reason;
                        }
                    }
                    Err(error) => break format!("read failed: {error}"),
                },
                _ = tick.tick(), if keepalive.is_some() => {
                    let period = keepalive.unwrap_or_default();
                    let silent = last_read.elapsed();
                    if silent >= period * 3 {
                        break format!("no answer to a keepalive ping for {silent:?}");
                    }
                    if silent >= period && !pinged {
                        pinged = true;
                        let id = format!("{KEEPALIVE_ID}{}", self.next_action_id);
                        self.next_action_id += 1;
                        if let Ok(bytes) = ami::encode(&AmiAction::new("Ping"), &id)
                            && let Err(error) = connection.stream.write_all(&bytes).await
                        {
                            break format!("write failed: {error}");
                        }
                    }
                }
                request = self.requests.recv() => match request {
                    Some(request) => {
                        if let Err(reason) = self.write_request(&mut connection, &mut pending, request).await {
                            break reason;
                        }
                    }
                    None => {
                        self.log_off(&mut connection).await;
                        return Outcome::Shutdown;
                    }
                },
                _ = self.shutdown.changed() => {
                    self.log_off(&mut connection).await;
                    return Outcome::Shutdown;
                }
            }
        };
        for (_, waiting) in pending.drain() {
            let _ = waiting.reply.send(Err(AmiClientError::ConnectionLost {
                action: waiting.action,
                reason: reason.clone(),
            }));
        }
        Outcome::Lost(reason)
    }

    async fn write_request(
        &mut self,
        connection: &mut Connection,
        pending: &mut HashMap<String, Pending>,
        request: Request,
    ) -> Result<(), String> {
        let action_id = self.next_action_id();
        let bytes = match ami::encode(&request.action, &action_id) {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = request.reply.send(Err(error.into()));
                return Ok(());
            }
        };
        tracing::debug!(action = %request.action.name, %action_id, "ami action");
        self.sent.fetch_add(1, Ordering::Relaxed);
        // Callers that timed out have dropped their receiver: forget them.
        pending.retain(|_, waiting| !waiting.reply.is_closed());
        if let Err(error) = connection.stream.write_all(&bytes).await {
            let reason = format!("write failed: {error}");
            let _ = request.reply.send(Err(AmiClientError::ConnectionLost {
                action: request.action.name,
                reason: reason.clone(),
            }));
            return Err(reason);
        }
        pending.insert(
            action_id,
            Pending {
                action: request.action.name,
                reply: request.reply,
                list: None,
                items: Vec::new(),
            },
        );
        Ok(())
    }

    /// Decodes and dispatches everything buffered. Err: drop the connection.
    fn drain(
        &mut self,
        connection: &mut Connection,
        pending: &mut HashMap<String, Pending>,
    ) -> Result<(), String> {
        loop {
            match connection.decoder.decode(&mut connection.buf) {
                Ok(Some(frame)) => self.dispatch(frame, pending),
                Ok(None) => return Ok(()),
                Err(error) if !error.is_fatal() => {
                    tracing::warn!(%error, "skipped a malformed ami message");
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    fn dispatch(&mut self, frame: AmiFrame, pending: &mut HashMap<String, Pending>) {
        match frame {
            // The decoder yields the banner only as the first frame.
            AmiFrame::Banner(_) => {}
            AmiFrame::Response(response) => {
                let Some(action_id) = response.action_id() else {
                    tracing::debug!("ami response without ActionID ignored");
                    return;
                };
                let Some(waiting) = pending.get_mut(action_id) else {
                    if action_id.starts_with(KEEPALIVE_ID) {
                        return;
                    }
                    tracing::debug!(%action_id, "ami response for no waiting action (timed out?)");
                    return;
                };
                if response.is("EventList", "start") {
                    waiting.list = Some(response);
                } else if let Some(waiting) = pending.remove(action_id) {
                    let action_id = action_id.to_owned();
                    let _ = waiting.reply.send(Ok(AmiResponse {
                        action_id,
                        response,
                        events: Vec::new(),
                        complete: None,
                    }));
                }
            }
            AmiFrame::Event(event) => {
                if let Some(action_id) = event.action_id()
                    && let Some(waiting) = pending.get_mut(action_id)
                    && waiting.list.is_some()
                {
                    let ends =
                        event.is("EventList", "Complete") || event.is("EventList", "Cancelled");
                    if ends {
                        if let Some(waiting) = pending.remove(action_id)
                            && let Some(response) = waiting.list
                        {
                            let _ = waiting.reply.send(Ok(AmiResponse {
                                action_id: action_id.to_owned(),
                                response,
                                events: waiting.items,
                                complete: Some(event.clone()),
                            }));
                        }
                    } else if waiting.items.len() < MAX_LIST_EVENTS {
                        waiting.items.push(event.clone());
                    } else if let Some(waiting) = pending.remove(action_id) {
                        let _ = waiting.reply.send(Err(AmiClientError::ListTooLong {
                            action: waiting.action,
                            limit: MAX_LIST_EVENTS,
                        }));
                    }
                }
                // No subscribers is fine: events are then simply not wanted.
                let _ = self.events.send(event);
            }
        }
    }

    async fn log_off(&mut self, connection: &mut Connection) {
        let action_id = self.next_action_id();
        if let Ok(bytes) = ami::encode(&AmiAction::new("Logoff"), &action_id) {
            let write = async {
                connection.stream.write_all(&bytes).await?;
                connection.stream.shutdown().await
            };
            let _ = timeout(LOGOFF_TIMEOUT, write).await;
        }
    }
}

fn refuse(state: &watch::Sender<AmiConnection>, address: SocketAddr, request: Request) {
    let _ = request.reply.send(Err(AmiClientError::NotConnected {
        address,
        state: state.borrow().to_string(),
    }));
}

/// Connect, banner, login, then `FullyBooted`. Events seen meanwhile are
/// broadcast like any others.
async fn handshake(
    options: AmiClientOptions,
    events: broadcast::Sender<AmiMessage>,
    login_id: String,
) -> Result<(Connection, String), HandshakeError> {
    let address = options.address;
    let login = async {
        let stream = TcpStream::connect(address).await.map_err(|error| {
            HandshakeError::Failed(format!("connect to {address} failed: {error}"))
        })?;
        // Actions are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let mut connection = Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: AmiDecoder::new(),
        };
        let version = match connection
            .read_frame()
            .await
            .map_err(HandshakeError::Failed)?
        {
            AmiFrame::Banner(version) => version,
            // The decoder yields a banner first or fails.
            AmiFrame::Response(_) | AmiFrame::Event(_) => {
                return Err(HandshakeError::Failed("no ami banner".to_owned()));
            }
        };
        let mut action = AmiAction::new("Login")
            .field("Username", options.username.as_str())
            .field("Secret", options.secret.as_str());
        if let Some(mask) = &options.events {
            action.push("Events", mask.as_str());
        }
        let bytes = ami::encode(&action, &login_id)
            .map_err(|error| HandshakeError::Failed(format!("cannot send the login: {error}")))?;
        connection
            .stream
            .write_all(&bytes)
            .await
            .map_err(|error| HandshakeError::Failed(format!("write failed: {error}")))?;
        let mut booted = false;
        loop {
            match connection.read_frame().await {
                Ok(AmiFrame::Response(response))
                    if response.action_id() == Some(login_id.as_str()) =>
                {
                    if response.is("Response", "Success") {
                        break;
                    }
                    let message = response.message().unwrap_or("no message").to_owned();
                    return Err(HandshakeError::Login(message));
                }
                Ok(AmiFrame::Response(_)) | Ok(AmiFrame::Banner(_)) => {}
                Ok(AmiFrame::Event(event)) => {
                    booted |= event.is("Event", "FullyBooted");
                    let _ = events.send(event);
                }
                // Asterisk closes the socket after refusing a login; without
                // the response the cause is unknown, so report the drop.
                Err(reason) => return Err(HandshakeError::Failed(reason)),
            }
        }
        Ok((connection, version, booted))
    };
    let (mut connection, version, booted) = match timeout(options.connect_timeout, login).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(HandshakeError::Failed(format!(
                "no banner and login answer from {address} within {:?}",
                options.connect_timeout
            )));
        }
    };
    if !booted {
        let wait = async {
            loop {
                let event = match connection.read_frame().await? {
                    AmiFrame::Event(event) => event,
                    AmiFrame::Response(_) | AmiFrame::Banner(_) => continue,
                };
                let done = event.is("Event", "FullyBooted");
                let _ = events.send(event);
                if done {
                    return Ok(());
                }
            }
        };
        match timeout(options.fully_booted_timeout, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(HandshakeError::Failed(reason)),
            Err(_) => tracing::warn!(
                %address,
                waited = ?options.fully_booted_timeout,
                "no FullyBooted event after the ami login; going on. Does the manager user \
                 read the `system` class?"
            ),
        }
    }
    Ok((connection, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager that logs the client in, then never says another word.
    async fn silent_after_login(listener: &tokio::net::TcpListener) -> TcpStream {
        use tokio::io::AsyncBufReadExt;
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"Asterisk Call Manager/11.0.0\r\n")
            .await
            .unwrap();
        let mut lines = tokio::io::BufReader::new(read).lines();
        let mut action_id = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(id) = line.strip_prefix("ActionID: ") {
                action_id = id.to_owned();
            }
            if line.is_empty() {
                break;
            }
        }
        write
            .write_all(
                format!(
                    "Response: Success\r\nActionID: {action_id}\r\nMessage: ok\r\n\r\n\
                     Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        lines.into_inner().into_inner().reunite(write).unwrap()
    }

    #[tokio::test]
    async fn a_silent_connection_is_replaced_within_two_seconds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut options =
            AmiClientOptions::new(listener.local_addr().unwrap(), "ivm", "a-long-secret");
        options.keepalive = Some(DEFAULT_KEEPALIVE);
        let client = AmiClient::start_with(options);
        let _first = silent_after_login(&listener).await;
        client.wait_connected(Duration::from_secs(2)).await.unwrap();
        let silent_since = tokio::time::Instant::now();
        // The peer keeps the socket open but answers nothing, not even Ping.
        let second = timeout(Duration::from_secs(5), silent_after_login(&listener)).await;
        assert!(
            second.is_ok(),
            "no reconnect after the keepalive went unanswered"
        );
        let took = silent_since.elapsed();
        assert!(took < Duration::from_secs(2), "reconnected after {took:?}");
        client.shutdown().await;
    }

    #[test]
    fn options_debug_hides_the_secret() {
        let options = AmiClientOptions::new(([127, 0, 0, 1], 5038).into(), "ivm", "hunter2");
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn error_responses_become_refused() {
        let response = AmiResponse {
            action_id: "ivm-1".into(),
            response: AmiMessage::from_fields([
                ("Response", "Error"),
                ("Message", "No such channel"),
            ]),
            events: Vec::new(),
            complete: None,
        };
        assert!(!response.is_success());
        assert_eq!(
            response.into_result("Hangup"),
            Err(AmiClientError::Refused {
                action: "Hangup".into(),
                message: "No such channel".into()
            })
        );
    }
}
