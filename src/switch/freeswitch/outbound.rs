//! Outbound socket server: accepts the connections FreeSWITCH's dialplan
//! `socket` application opens (`127.0.0.1:8084 async full`), one per call
//! leg, and hands each on as an [`OutboundSession`] once it is ready.
//!
//! Owns: the listening socket, the caps on connections still in their
//! handshake (all peers, and per peer address), the handshake and its
//! timeout: `connect` (answered by the channel's data), `myevents`
//! (every event of this channel, in `plain` format) and `linger` (keep the
//! socket open after hang-up until `ivm` says `exit`, so that the final
//! events — `CHANNEL_HANGUP_COMPLETE` with the cause — always arrive), and
//! the peer checks (allow list, the `ivm_secret` channel variable).
//! Must not know: what the session is used for (that is the adapter's), nor
//! the wire syntax (`proto::esl`).
//!
//! Logs carry the peer address and the channel's unique id; caller numbers
//! only at debug.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use super::connection::{self, ConnectionError, EslConnection, Incoming, Reply};
use crate::proto::esl::{self, Event, Limits};
use crate::switch::peer::{PerPeer, log_safe};

/// How long FreeSWITCH may take to answer the handshake. It answers within
/// a millisecond; a slower peer is not FreeSWITCH.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections that have not yet passed the handshake and the
/// secret, from all peers together; past it new connections are closed at
/// once (the `socket` application then fails and the dialplan goes on to
/// the `hangup` after it in `ivm.xml`).
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Most such connections from one peer address.
pub const DEFAULT_MAX_PENDING_PER_PEER: usize = 512;
/// After accept() fails (e.g. out of file descriptors), wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    pub handshake_timeout: Duration,
    /// Connections in their handshake, all peers together.
    pub max_pending: usize,
    /// Connections in their handshake from one address.
    pub max_pending_per_peer: usize,
    pub limits: Limits,
    /// `[freeswitch] outbound_allow` and `outbound_secret` (the channel
    /// variable `ivm_secret` ivm.xml sets), see `switch::peer`.
    pub peers: Option<crate::switch::peer::PeerPolicy>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_peer: DEFAULT_MAX_PENDING_PER_PEER,
            limits: Limits::default(),
            peers: None,
        }
    }
}

/// Why an outbound connection was not turned into a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the connection failed during the handshake: {0}")]
    Connection(#[from] ConnectionError),
    #[error(
        "the peer answered `connect` without channel data ({0:?}); it is not FreeSWITCH's \
         socket application"
    )]
    NoChannelData(String),
    #[error("the channel data has no Unique-ID; cannot tell which call this is")]
    NoUniqueId,
    #[error("freeswitch refused `{command}`: {reply}")]
    Refused {
        command: &'static str,
        reply: String,
    },
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
}

/// One call leg's socket, connected and subscribed.
#[derive(Debug)]
pub struct OutboundSession {
    pub connection: EslConnection,
    /// Events of this channel and the disconnect notices, in order.
    pub incoming: mpsc::Receiver<Incoming>,
    /// The `CHANNEL_DATA` of the `connect` reply, percent-decoded.
    pub channel_data: Event,
    pub peer: SocketAddr,
}

impl OutboundSession {
    /// The channel's `Unique-ID` (checked present by the handshake).
    pub fn unique_id(&self) -> &str {
        self.channel_data.unique_id().unwrap_or_default()
    }
}

/// Serve until `shutdown` turns true (or its sender is dropped, or nobody
/// receives `sessions`). Sessions handed out live on after it returns.
///
/// A connection from outside the allow list is closed before a byte is
/// written; one that does not complete the handshake with the secret within
/// `handshake_timeout` is closed too; both are logged at warn at most once
/// a minute per address. A session that passed counts against no cap here:
/// capacity is counted in messages by the server, so a target answering is
/// never refused.
pub async fn serve(
    listener: TcpListener,
    sessions: mpsc::Sender<OutboundSession>,
    mut shutdown: watch::Receiver<bool>,
    config: OutboundConfig,
) {
    let pending = Arc::new(Semaphore::new(config.max_pending));
    let per_peer = Arc::new(PerPeer::default());
    let local = listener.local_addr().ok();
    info!(addr = ?local, max_pending = config.max_pending, "outbound event socket server listening");
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
                warn!(%error, "outbound event socket accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let refuse = |reason: &str| match &config.peers {
            Some(policy) => {
                policy.refused("esl-outbound", peer.ip(), reason);
            }
            None => debug!(%peer, reason, "outbound event socket connection dropped"),
        };
        if let Some(policy) = &config.peers
            && !policy.allows(peer.ip())
        {
            refuse("not in [freeswitch] outbound_allow");
            continue;
        }
        let slot = per_peer.try_acquire(peer.ip(), config.max_pending_per_peer);
        let permit = pending.clone().try_acquire_owned().ok();
        let (Some(slot), Some(permit)) = (slot, permit) else {
            refuse("too many connections still in their handshake");
            drop(stream);
            continue;
        };
        let sessions = sessions.clone();
        let mut shutdown = shutdown.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = handshake(stream, peer, &config) => outcome,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let refuse = |reason: &str| match &config.peers {
                Some(policy) => {
                    policy.refused("esl-outbound", peer.ip(), reason);
                }
                None => debug!(%peer, reason, "outbound event socket connection dropped"),
            };
            let session = match outcome {
                Ok(session) => session,
                Err(error) => return refuse(&format!("handshake failed: {error}")),
            };
            if let Some(policy) = &config.peers
                && policy.has_secret()
                && !policy.secret_matches(
                    session
                        .channel_data
                        .header("variable_ivm_secret")
                        .unwrap_or(""),
                )
            {
                // Dropping the session closes the socket.
                return refuse("wrong or missing ivm_secret");
            }
            // Authenticated: the handshake's share of the caps is free again.
            drop((permit, slot));
            debug!(%peer, uuid = %log_safe(session.unique_id()), "outbound event socket session ready");
            if sessions.send(session).await.is_err() {
                debug!(%peer, "nobody takes outbound sessions any more; dropped one");
            }
        });
    }
    info!(addr = ?local, "outbound event socket server stopped");
}

/// `connect`, `myevents`, `linger` on a fresh connection from FreeSWITCH.
/// Public so that tests can drive it on one socket.
pub async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    config: &OutboundConfig,
) -> Result<OutboundSession, HandshakeError> {
    let (connection, incoming) = connection::spawn(stream, config.limits);
    let limit = config.handshake_timeout;
    let exchange = async {
        // `connect` alone first: if the peer is not FreeSWITCH, its answer
        // (or its closing) is the error, not a write into a closed socket.
        let connect = connection.submit(esl::connect())?;
        let channel_data = match connection::wait_reply(connect, limit).await? {
            Reply::Command(reply) if reply.is_ok() => match reply.channel_data {
                Some(data) => data,
                None => return Err(HandshakeError::NoChannelData(reply.reply_text)),
            },
            other => return Err(HandshakeError::NoChannelData(other.text().to_owned())),
        };
        if channel_data.unique_id().is_none_or(str::is_empty) {
            return Err(HandshakeError::NoUniqueId);
        }
        // These two are pipelined; FreeSWITCH answers in order.
        let myevents = connection.submit(esl::myevents())?;
        let linger = connection.submit(esl::linger(None))?;
        for (command, answer) in [("myevents", myevents), ("linger", linger)] {
            let reply = connection::wait_reply(answer, limit).await?;
            if !reply.is_ok() {
                return Err(HandshakeError::Refused {
                    command,
                    reply: reply.text().to_owned(),
                });
            }
        }
        Ok(channel_data)
    };
    let channel_data = match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result?,
        Err(_) => return Err(HandshakeError::Timeout(limit)),
    };
    Ok(OutboundSession {
        connection,
        incoming,
        channel_data,
        peer,
    })
}
