//! One Event Socket connection, in either direction: the bytes of a TCP
//! stream become [`Incoming`] items, and commands written through an
//! [`EslConnection`] handle get their replies back in order.
//!
//! Owns: the socket, the read buffer and its caps (the codec's
//! [`Limits`]), the FIFO of commands waiting for a reply, the cap on how many
//! may wait. Must not know: what the commands mean, who connected to whom
//! (inbound client or outbound socket), calls.
//!
//! FreeSWITCH answers every command with exactly one `command/reply` or
//! `api/response`, in the order the commands were written, with events
//! interleaved anywhere (even between a command and its reply). So replies
//! are matched to commands by order alone, and events flow on to the owner.
//!
//! The task ends when the peer closes, when a frame cannot be framed (a
//! fatal decode error: the stream cannot be resynchronised), or when every
//! handle is dropped. Its last item is always [`Incoming::Closed`] with the
//! reason; every command still waiting gets that reason as its error.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::proto::esl::{
    ApiResponse, CommandReply, DecodeError, Decoder, DisconnectNotice, Event, Limits, Message,
};

/// Items buffered between the connection task and its owner. When the
/// owner falls behind, the task stops reading and TCP pushes back on
/// FreeSWITCH instead of memory growing.
pub const INCOMING_QUEUE: usize = 1024;
/// Commands written and not yet answered. FreeSWITCH answers within
/// milliseconds; this many outstanding means it has stopped answering.
pub const MAX_IN_FLIGHT: usize = 256;
/// Commands queued from handles to the task.
const REQUEST_QUEUE: usize = 256;
/// Bytes reserved for each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `command/reply` (every command but `api`).
    Command(CommandReply),
    /// `api/response`; a failed API command is an `-ERR` body, not an error.
    Api(ApiResponse),
}

impl Reply {
    /// `+OK` in the reply text or the API body.
    pub fn is_ok(&self) -> bool {
        match self {
            Reply::Command(reply) => reply.is_ok(),
            Reply::Api(response) => response.is_ok(),
        }
    }

    /// The reply text or API body, without trailing line breaks.
    pub fn text(&self) -> &str {
        match self {
            Reply::Command(reply) => &reply.reply_text,
            Reply::Api(response) => response.body.trim_end_matches(['\n', '\r']),
        }
    }
}

/// What the peer sent that is not a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `auth/request`: the inbound greeting.
    AuthRequest,
    Event(Event),
    DisconnectNotice(DisconnectNotice),
    /// `text/rude-rejection`: the event socket's ACL refused this host.
    Rejected(String),
    /// The connection is gone; always the last item.
    Closed(ConnectionError),
}

/// Why a connection ended or a command got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("freeswitch closed the event socket")]
    PeerClosed,
    #[error(
        "freeswitch closed the event socket in the middle of a message \
         ({0} bytes of an unfinished frame)"
    )]
    Truncated(usize),
    #[error("reading the event socket failed: {0}")]
    Read(String),
    #[error("writing to the event socket failed: {0}")]
    Write(String),
    #[error("freeswitch sent bytes that are not the event socket protocol: {0}")]
    Protocol(DecodeError),
    #[error(
        "more than {0} commands await an answer from freeswitch; \
         it has stopped answering, so the command was not sent"
    )]
    TooManyInFlight(usize),
    #[error("no reply from freeswitch within {0:?}")]
    Timeout(Duration),
    #[error("the event socket connection was closed by ivm")]
    Gone,
}

struct Request {
    text: String,
    reply: oneshot::Sender<Result<Reply, ConnectionError>>,
}

/// A cloneable handle for writing commands. Dropping every handle closes
/// the connection.
#[derive(Clone, Debug)]
pub struct EslConnection {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may hold a password (`auth`): never print it.
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

/// Start the task that owns `stream`. Must be called within a Tokio runtime.
pub fn spawn(stream: TcpStream, limits: Limits) -> (EslConnection, mpsc::Receiver<Incoming>) {
    let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
    // Commands are small and a late one delays a call: no Nagle.
    let _ = stream.set_nodelay(true);
    tokio::spawn(run(stream, limits, requests_rx, incoming_tx));
    (
        EslConnection {
            requests: requests_tx,
        },
        incoming_rx,
    )
}

impl EslConnection {
    /// Queue `text` (a complete command, ending in a blank line) for
    /// writing; the receiver gets its reply. Never waits: commands queued
    /// one after the other are written in that order.
    pub fn submit(
        &self,
        text: String,
    ) -> Result<oneshot::Receiver<Result<Reply, ConnectionError>>, ConnectionError> {
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send(Request { text, reply }) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(ConnectionError::TooManyInFlight(REQUEST_QUEUE))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ConnectionError::Gone),
        }
    }

    /// [`submit`](Self::submit) and wait up to `limit` for the reply.
    pub async fn command(&self, text: String, limit: Duration) -> Result<Reply, ConnectionError> {
        let answer = self.submit(text)?;
        wait_reply(answer, limit).await
    }

    /// True once the connection task has ended.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

/// Wait up to `limit` for a submitted command's reply.
pub async fn wait_reply(
    answer: oneshot::Receiver<Result<Reply, ConnectionError>>,
    limit: Duration,
) -> Result<Reply, ConnectionError> {
    match tokio::time::timeout(limit, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ConnectionError::Gone),
        Err(_) => Err(ConnectionError::Timeout(limit)),
    }
}

type Waiter = oneshot::Sender<Result<Reply, ConnectionError>>;

async fn run(
    stream: TcpStream,
    limits: Limits,
    mut requests: mpsc::Receiver<Request>,
    incoming: mpsc::Sender<Incoming>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = Decoder::with_limits(limits);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut waiting: VecDeque<Waiter> = VecDeque::new();
    let reason = loop {
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break eof_reason(&buf),
                Ok(_) => {
                    if let Err(reason) = drain(&mut decoder, &mut buf, &mut waiting, &incoming).await {
                        break reason;
                    }
                }
                Err(error) => break ConnectionError::Read(error.to_string()),
            },
            request = requests.recv() => match request {
                Some(request) => {
                    // Callers that gave up have dropped their receiver.
                    if waiting.len() >= MAX_IN_FLIGHT {
                        let _ = request
                            .reply
                            .send(Err(ConnectionError::TooManyInFlight(MAX_IN_FLIGHT)));
                        continue;
                    }
                    if let Err(error) = writer.write_all(request.text.as_bytes()).await {
                        let reason = ConnectionError::Write(error.to_string());
                        let _ = request.reply.send(Err(reason.clone()));
                        break reason;
                    }
                    waiting.push_back(request.reply);
                }
                None => {
                    let _ = writer.shutdown().await;
                    break ConnectionError::Gone;
                }
            },
        }
    };
    debug!(%reason, "event socket connection ended");
    for waiter in waiting.drain(..) {
        let _ = waiter.send(Err(reason.clone()));
    }
    let _ = incoming.send(Incoming::Closed(reason)).await;
}

fn eof_reason(buf: &[u8]) -> ConnectionError {
    // FreeSWITCH's reader skips stray line breaks between frames; so do we.
    let unfinished = buf.iter().filter(|b| !matches!(b, b'\n' | b'\r')).count();
    if unfinished == 0 {
        ConnectionError::PeerClosed
    } else {
        ConnectionError::Truncated(buf.len())
    }
}

/// Decode and dispatch everything buffered. Err: the stream is unusable.
async fn drain(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    waiting: &mut VecDeque<Waiter>,
    incoming: &mpsc::Sender<Incoming>,
) -> Result<(), ConnectionError> {
    loop {
        let message = match decoder.decode(buf) {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(error) if !error.is_fatal() => {
                warn!(%error, "skipped a malformed event socket frame");
                continue;
            }
            Err(error) => return Err(ConnectionError::Protocol(error)),
        };
        let item = match message {
            Message::CommandReply(reply) => {
                answer(waiting, Reply::Command(reply));
                continue;
            }
            Message::ApiResponse(response) => {
                answer(waiting, Reply::Api(response));
                continue;
            }
            Message::AuthRequest => Incoming::AuthRequest,
            Message::Event(event) => Incoming::Event(event),
            Message::DisconnectNotice(notice) => Incoming::DisconnectNotice(notice),
            Message::RudeRejection { body } => Incoming::Rejected(body),
            Message::LogData(_) => continue,
            Message::Unknown { content_type, .. } => {
                debug!(
                    ?content_type,
                    "ignored an event socket frame of unknown type"
                );
                continue;
            }
        };
        // The owner may have gone; the connection still has to be read.
        let _ = incoming.send(item).await;
    }
}

fn answer(waiting: &mut VecDeque<Waiter>, reply: Reply) {
    match waiting.pop_front() {
        Some(waiter) => {
            let _ = waiter.send(Ok(reply));
        }
        None => warn!(
            reply = reply.text(),
            "freeswitch sent a reply to no command; ignored"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eof_inside_a_frame_is_truncation() {
        assert_eq!(eof_reason(b""), ConnectionError::PeerClosed);
        assert_eq!(eof_reason(b"\n\r\n"), ConnectionError::PeerClosed);
        assert_eq!(
            eof_reason(b"Content-Type: api/re"),
            ConnectionError::Truncated(20)
        );
    }

    #[test]
    fn reply_text_trims_api_line_breaks() {
        let reply = Reply::Api(ApiResponse {
            body: "+OK Success\n".into(),
        });
        assert!(reply.is_ok());
        assert_eq!(reply.text(), "+OK Success");
    }

    #[test]
    fn errors_are_lowercase_and_say_what_happened() {
        for e in [
            ConnectionError::PeerClosed,
            ConnectionError::Truncated(3),
            ConnectionError::TooManyInFlight(2),
            ConnectionError::Gone,
        ] {
            let text = e.to_string();
            assert!(text.starts_with(char::is_lowercase), "{text}");
        }
    }
}
