//! FastAGI server: accepts the connections Asterisk's `AGI(agi://...)` opens,
//! reads each one's environment and hands it on as an [`AgiSession`] that
//! sends one command at a time.
//!
//! Owns: the listening socket, the per-connection reader task, the peer
//! checks (allow list, secret), the caps on connections still in their
//! handshake, the handshake timeout, per-command deadlines. Must not know: what the
//! commands mean for a call (that is the engine's), nor the wire syntax (that
//! is `proto::agi`'s).
//!
//! A session ends when it is dropped: the socket closes and Asterisk ends the
//! AGI and continues the dialplan. Asterisk never closes an AGI socket by
//! itself after a hang-up, so a session must not be kept once
//! [`AgiSession::hung_up`] is true and the call's bookkeeping is done.
//!
//! Logs carry the peer address, the channel's unique id and the script path;
//! the channel name, caller id and query (which hold numbers) only at debug.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::proto::agi::{self, AgiCommand, AgiEnvironment, AgiError, AgiReply};
use crate::switch::peer::{PeerPolicy, PeerSlot, PerPeer, log_safe};

/// How long a new connection may take to send its environment. Asterisk
/// sends it at once; a slower peer is not Asterisk.
pub const DEFAULT_ENV_TIMEOUT: Duration = Duration::from_secs(3);
/// Most connections that have not yet proved the secret, from all peers
/// together; past it new connections are closed at once.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Most such connections from one peer address.
pub const DEFAULT_MAX_PENDING_PER_PEER: usize = 512;
/// Replies buffered between the reader task and the session: one command
/// runs at a time, so more only builds up if Asterisk talks out of turn.
const REPLY_QUEUE: usize = 8;
/// After accept() fails (e.g. out of file descriptors), wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct AgiServerConfig {
    pub env_timeout: Duration,
    /// Connections still in their handshake, all peers together.
    pub max_pending: usize,
    /// Connections still in their handshake from one address.
    pub max_pending_per_peer: usize,
    /// Who may connect and the secret the dialplan passes as `agi_arg_1`.
    /// `None` accepts any peer without a secret (unit tests only).
    pub peers: Option<PeerPolicy>,
}

impl Default for AgiServerConfig {
    fn default() -> Self {
        AgiServerConfig {
            env_timeout: DEFAULT_ENV_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_peer: DEFAULT_MAX_PENDING_PER_PEER,
            peers: None,
        }
    }
}

/// Serves FastAGI on `listener` with the default limits until `shutdown`
/// turns true (or its sender is dropped, or nobody receives `sessions`).
pub async fn serve(
    listener: TcpListener,
    sessions: mpsc::Sender<AgiSession>,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, sessions, shutdown, AgiServerConfig::default()).await
}

/// [`serve`] with explicit limits and peer policy. Sessions already handed
/// out live on after it returns; handshakes still in progress are abandoned.
///
/// A connection from an address outside the allow list is closed before a
/// byte is read; one that does not send an environment with the secret as
/// its first AGI argument within `env_timeout` is closed too. Both are
/// logged at warn at most once a minute per address. An authenticated
/// session counts against no cap here: capacity is counted in messages by
/// the server, so a target answering is never refused.
pub async fn serve_with(
    listener: TcpListener,
    sessions: mpsc::Sender<AgiSession>,
    mut shutdown: watch::Receiver<bool>,
    config: AgiServerConfig,
) {
    let pending = Arc::new(Semaphore::new(config.max_pending));
    let per_peer = Arc::new(PerPeer::default());
    let local = listener.local_addr().ok();
    info!(addr = ?local, max_pending = config.max_pending, "fastagi server listening");
    loop {
        if *shutdown.borrow_and_update() || sessions.is_closed() {
            break;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "fastagi accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Some(policy) = &config.peers
            && !policy.allows(peer.ip())
        {
            policy.refused("fastagi", peer.ip(), "address not in [asterisk] agi_allow");
            drop(stream);
            continue;
        }
        let slot = per_peer.try_acquire(peer.ip(), config.max_pending_per_peer);
        let permit = pending.clone().try_acquire_owned().ok();
        let (Some(slot), Some(permit)) = (slot, permit) else {
            match &config.peers {
                Some(policy) => {
                    policy.refused(
                        "fastagi",
                        peer.ip(),
                        "too many connections still in their handshake",
                    );
                }
                None => debug!(%peer, "too many fastagi handshakes; closed"),
            }
            drop(stream);
            continue;
        };
        tokio::spawn(handshake_and_hand_over(
            stream,
            peer,
            (permit, slot),
            sessions.clone(),
            shutdown.clone(),
            config.env_timeout,
            config.peers.clone(),
        ));
    }
    info!(addr = ?local, "fastagi server stopped");
}

async fn handshake_and_hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    pending: (OwnedSemaphorePermit, PeerSlot),
    sessions: mpsc::Sender<AgiSession>,
    mut shutdown: watch::Receiver<bool>,
    env_timeout: Duration,
    policy: Option<PeerPolicy>,
) {
    let handshake = tokio::time::timeout(env_timeout, AgiSession::start(stream, None));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let refuse = |reason: &str| match &policy {
        Some(policy) => {
            policy.refused("fastagi", peer.ip(), reason);
        }
        None => debug!(%peer, reason, "fastagi connection dropped"),
    };
    let session = match outcome {
        Ok(Ok(session)) => session,
        Ok(Err(_)) => return refuse("no valid fastagi environment"),
        Err(_) => return refuse("no fastagi environment in time"),
    };
    if let Some(policy) = &policy {
        let offered = session.env().args().first().copied().unwrap_or_default();
        if !policy.secret_matches(offered) {
            // Dropping the session closes the socket; nothing was sent.
            return refuse("wrong or missing secret (the AGI's first argument)");
        }
    }
    // Authenticated: the handshake's share of the pending caps is free again.
    drop(pending);
    let env = session.env();
    info!(%peer, uniqueid = %log_safe(env.uniqueid().unwrap_or("")),
        script = %log_safe(env.script_path()), "fastagi session started");
    debug!(%peer, channel = %log_safe(env.channel().unwrap_or("")),
        callerid = %log_safe(env.callerid().unwrap_or("")),
        network_script = %log_safe(env.network_script().unwrap_or("")), "fastagi environment");
    if sessions.send(session).await.is_err() {
        debug!(%peer, "nobody takes fastagi sessions any more; closed it");
    }
}

/// One AGI conversation with Asterisk about one channel.
///
/// A reader task owns the socket's read half: it forwards replies to
/// [`AgiSession::command`] and turns `HANGUP` into [`AgiSession::hangup_watch`],
/// so a hang-up is seen even while no command runs. Dropping the session
/// closes the connection.
pub struct AgiSession {
    env: AgiEnvironment,
    peer: SocketAddr,
    writer: OwnedWriteHalf,
    replies: mpsc::Receiver<Result<AgiReply, AgiError>>,
    hangup: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    /// Replies still owed for commands whose `command` future was dropped
    /// after sending; they are read and discarded before the next command.
    owed_replies: usize,
    /// A write was cut short: the stream no longer ends on a line boundary.
    broken: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for AgiSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgiSession")
            .field("peer", &self.peer)
            .field("uniqueid", &self.env.uniqueid())
            .field("hung_up", &self.hung_up())
            .finish_non_exhaustive()
    }
}

impl AgiSession {
    /// Reads the environment from a connection Asterisk opened (no timeout:
    /// wrap it, as [`serve`] does) and starts the reader task. Must be
    /// called inside a tokio runtime.
    pub async fn accept(stream: TcpStream) -> Result<AgiSession, AgiError> {
        AgiSession::start(stream, None).await
    }

    async fn start(
        stream: TcpStream,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<AgiSession, AgiError> {
        let peer = stream.peer_addr()?;
        // Commands are small and each waits for its reply: never let Nagle
        // hold one back.
        stream.set_nodelay(true)?;
        let (mut read_half, writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(4096);
        let env = loop {
            if let Some(env) = agi::decode_env(&mut buf)? {
                break env;
            }
            if read_half.read_buf(&mut buf).await? == 0 {
                return Err(AgiError::Closed);
            }
        };
        let (reply_tx, replies) = mpsc::channel(REPLY_QUEUE);
        let (hangup_tx, hangup) = watch::channel(false);
        let reader = tokio::spawn(read_replies(read_half, buf, reply_tx, hangup_tx, peer));
        Ok(AgiSession {
            env,
            peer,
            writer,
            replies,
            hangup,
            reader,
            owed_replies: 0,
            broken: false,
            _permit: permit,
        })
    }

    pub fn env(&self) -> &AgiEnvironment {
        &self.env
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// True once Asterisk sent `HANGUP` or the connection ended.
    pub fn hung_up(&self) -> bool {
        *self.hangup.borrow()
    }

    /// Turns true once Asterisk sends `HANGUP` or the connection ends, also
    /// while no command runs. `wait_for(|h| *h)` on it is cancel-safe.
    pub fn hangup_watch(&self) -> watch::Receiver<bool> {
        self.hangup.clone()
    }

    /// Sends one command and waits for its reply, however long the command
    /// runs (wrap it in a timeout if needed). A `HANGUP` that arrives first
    /// is recorded ([`Self::hung_up`]) and the reply still awaited: Asterisk
    /// answers every command, with `511` once the channel is dead.
    ///
    /// Cancel-safe between commands: if this future is dropped after the
    /// command was sent, its reply is discarded before the next command. If
    /// it is dropped while writing, the session returns
    /// [`AgiError::Broken`] from then on.
    pub async fn command(&mut self, command: &AgiCommand) -> Result<AgiReply, AgiError> {
        let line = agi::encode(command)?;
        self.exchange(&line).await
    }

    /// [`Self::command`] with a deadline: a peer that does not answer within
    /// `limit` gets [`AgiError::Io`] (`TimedOut`); the session stays usable
    /// (the late reply is discarded before the next command).
    pub async fn command_within(
        &mut self,
        command: &AgiCommand,
        limit: Duration,
    ) -> Result<AgiReply, AgiError> {
        match tokio::time::timeout(limit, self.command(command)).await {
            Ok(reply) => reply,
            Err(_) => Err(AgiError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no agi reply within {limit:?}"),
            ))),
        }
    }

    /// Sends a hand-written command line (without `\n`) for commands
    /// [`AgiCommand`] does not model; see [`agi::encode_raw`].
    pub async fn command_line(&mut self, line: &str) -> Result<AgiReply, AgiError> {
        let line = agi::encode_raw(line)?;
        self.exchange(&line).await
    }

    async fn exchange(&mut self, line: &str) -> Result<AgiReply, AgiError> {
        if self.broken {
            return Err(AgiError::Broken);
        }
        while self.owed_replies > 0 {
            self.next_reply().await?;
            self.owed_replies -= 1;
        }
        self.broken = true;
        self.writer.write_all(line.as_bytes()).await?;
        self.broken = false;
        self.owed_replies += 1;
        let reply = self.next_reply().await?;
        self.owed_replies -= 1;
        Ok(reply)
    }

    async fn next_reply(&mut self) -> Result<AgiReply, AgiError> {
        match self.replies.recv().await {
            Some(reply) => reply,
            None => Err(AgiError::Closed),
        }
    }
}

impl Drop for AgiSession {
    fn drop(&mut self) {
        // The write half shuts down as it drops; stopping the reader drops
        // the read half, and the socket closes.
        self.reader.abort();
    }
}

/// Owns the read half: replies go to the session, `HANGUP` to the watch.
/// Ends on EOF, on a read or decode error (forwarded to the session), or
/// when the session is gone.
async fn read_replies(
    mut read_half: OwnedReadHalf,
    mut buf: BytesMut,
    replies: mpsc::Sender<Result<AgiReply, AgiError>>,
    hangup: watch::Sender<bool>,
    peer: SocketAddr,
) {
    loop {
        loop {
            match agi::decode_reply(&mut buf) {
                Ok(Some(AgiReply::Hangup)) => {
                    if !hangup.send_replace(true) {
                        debug!(%peer, "fastagi peer sent HANGUP");
                    }
                }
                Ok(Some(reply)) => {
                    if replies.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(%peer, %error, "undecodable fastagi reply; closing the session");
                    hangup.send_replace(true);
                    let _ = replies.send(Err(error)).await;
                    return;
                }
            }
        }
        match read_half.read_buf(&mut buf).await {
            Ok(0) => {
                debug!(%peer, "fastagi peer closed the connection");
                hangup.send_replace(true);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                debug!(%peer, %error, "fastagi read failed");
                hangup.send_replace(true);
                let _ = replies.send(Err(AgiError::Io(error))).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const ENV: &[u8] = b"agi_network: yes\nagi_network_script: ivm?target=1002\n\
        agi_channel: Local/x;2\nagi_uniqueid: 1.1\n\n";

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test]
    async fn cancelled_command_reply_is_discarded() {
        let (mut asterisk, ours) = pair().await;
        asterisk.write_all(ENV).await.unwrap();
        let mut session = AgiSession::accept(ours).await.unwrap();
        let (read, mut write) = asterisk.into_split();
        let mut lines = BufReader::new(read).lines();

        // The first command is abandoned before its reply arrives.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            session.command(&AgiCommand::WaitForDigit { timeout_ms: 5000 }),
        )
        .await;
        assert!(abandoned.is_err());
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            "WAIT FOR DIGIT 5000"
        );
        write.write_all(b"200 result=0\n").await.unwrap();

        let next = tokio::spawn(async move {
            let reply = session.command(&AgiCommand::Answer).await;
            (session, reply)
        });
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "ANSWER");
        write.write_all(b"200 result=6\n").await.unwrap();
        let (session, reply) = next.await.unwrap();
        assert!(matches!(reply, Ok(AgiReply::Success { result: 6, .. })));
        assert!(!session.hung_up());
    }

    #[tokio::test]
    async fn garbage_reply_ends_the_session() {
        let (mut asterisk, ours) = pair().await;
        asterisk.write_all(ENV).await.unwrap();
        let mut session = AgiSession::accept(ours).await.unwrap();
        asterisk.write_all(b"\x00\x01garbage\n").await.unwrap();
        let reply = session.command(&AgiCommand::Answer).await;
        assert!(matches!(reply, Err(AgiError::MalformedReply { .. })));
        assert!(session.hung_up());
        assert!(matches!(
            session.command(&AgiCommand::Answer).await,
            Err(AgiError::Closed | AgiError::Io(_))
        ));
    }

    #[tokio::test]
    async fn eof_before_environment_is_closed() {
        let (asterisk, ours) = pair().await;
        drop(asterisk);
        assert!(matches!(
            AgiSession::accept(ours).await,
            Err(AgiError::Closed)
        ));
    }
}
