//! SMS straight to an SMSC over SMPP 3.4: bind as transceiver (or
//! transmitter), `submit_sm`, `enquire_link` to keep the session alive, and
//! delivery receipts (`deliver_sm`) turned into reports.
//!
//! One session at a time, opened on the first send and again after it drops.
//! A task owns the socket: it numbers requests, matches responses by
//! sequence number, answers the SMSC's own requests and pings it. Whether a
//! failed submit *certainly* did not reach the SMSC is tracked exactly: a
//! request that was never fully written is `Unavailable` (retried), one
//! written but unanswered is `Unknown` (not retried: a second SMS).
//!
//! Our own codec (`pdu`) rather than `rusmppc`: that client speaks SMPP 5.0
//! (its bind check wants 0x50), pulls a DNS resolver and TLS stack we do not
//! use, and the subset needed here is ten PDUs — small enough to own as a
//! pure, capped, property-tested codec like the project's other protocols.

pub mod pdu;
pub mod receipt;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use self::pdu::{Body, Pdu, ShortMessage, Tlv};
use self::receipt::ReceiptOutcome;
use super::config::{SmppBind, SmppConfig};
use super::redact::Redacted;
use super::{
    ChannelKind, DeliveryReport, Notification, NotificationPayload, NotifyChannel, NotifyError,
    ReportKey, ReportSender, ReportStatus, SendOutcome, gsm,
};

/// Gateway ids of recent submits, so a receipt finds its attempt even
/// before the attempt's result is in the store.
const RECENT_IDS: usize = 10_000;
const UNBIND_GRACE: Duration = Duration::from_secs(1);

/// Counters for operators and tests.
#[derive(Debug, Default)]
pub struct SmppStats {
    pub binds: AtomicU64,
    pub submits_accepted: AtomicU64,
    pub enquire_links_answered: AtomicU64,
    pub receipts: AtomicU64,
}

pub struct SmppChannel {
    config: SmppConfig,
    ctx: Arc<SessionContext>,
    session: tokio::sync::Mutex<Option<SessionHandle>>,
}

struct SessionContext {
    reports: ReportSender,
    recent: StdMutex<RecentIds>,
    stats: SmppStats,
    enquire_link_every: Duration,
    response_timeout: Duration,
}

struct SessionHandle {
    requests: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

struct Request {
    command_id: u32,
    body: Body,
    reply: oneshot::Sender<Result<Pdu, Lost>>,
    /// For a `submit_sm`: the attempt its receipt will settle.
    report_key: Option<ReportKey>,
}

/// Why a request got no response.
#[derive(Debug)]
enum Lost {
    /// The request never fully left us: certainly not acted on.
    NotWritten(String),
    /// It was written; the session ended before the response.
    NoResponse(String),
}

#[derive(Default)]
struct RecentIds {
    order: VecDeque<String>,
    keys: HashMap<String, ReportKey>,
}

impl RecentIds {
    fn insert(&mut self, gateway_id: String, key: ReportKey) {
        if self.order.len() >= RECENT_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.order.push_back(gateway_id.clone());
        self.keys.insert(gateway_id, key);
    }
}

impl SmppChannel {
    /// No connection is made until the first send.
    pub fn new(config: SmppConfig, reports: ReportSender) -> Self {
        let ctx = SessionContext {
            reports,
            recent: StdMutex::new(RecentIds::default()),
            stats: SmppStats::default(),
            enquire_link_every: Duration::from_secs(config.enquire_link_seconds.max(1).into()),
            response_timeout: Duration::from_secs(config.response_timeout_seconds.max(1).into()),
        };
        Self {
            config,
            ctx: Arc::new(ctx),
            session: tokio::sync::Mutex::new(None),
        }
    }

    pub fn stats(&self) -> &SmppStats {
        &self.ctx.stats
    }

    /// Unbind and close the session, if any (for a clean shutdown).
    pub async fn unbind(&self) {
        let handle = self.session.lock().await.take();
        if let Some(SessionHandle { requests, task }) = handle {
            // The task unbinds when the last request sender is gone.
            drop(requests);
            let _ = timeout(UNBIND_GRACE * 2, task).await;
        }
    }

    async fn requests(&self) -> Result<mpsc::Sender<Request>, NotifyError> {
        let mut session = self.session.lock().await;
        if let Some(handle) = session.as_ref()
            && !handle.requests.is_closed()
        {
            return Ok(handle.requests.clone());
        }
        let handle = self.connect_and_bind().await?;
        let requests = handle.requests.clone();
        *session = Some(handle);
        Ok(requests)
    }

    async fn connect_and_bind(&self) -> Result<SessionHandle, NotifyError> {
        let c = &self.config;
        let unavailable = |what: String| NotifyError::Unavailable(what);
        let connect_timeout = Duration::from_secs(c.connect_timeout_seconds.max(1).into());
        let mut stream = match timeout(connect_timeout, TcpStream::connect(&c.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                    "cannot connect to the SMSC at {}: {e}",
                    c.address
                )));
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "connecting to the SMSC at {} timed out",
                    c.address
                )));
            }
        };
        // Without it a request and its response each wait for a delayed ACK.
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(format!("socket: {e}")))?;
        let command_id = match c.bind {
            SmppBind::Transceiver => pdu::BIND_TRANSCEIVER,
            SmppBind::Transmitter => pdu::BIND_TRANSMITTER,
        };
        let bind = Pdu {
            command_id,
            status: 0,
            sequence: 1,
            body: Body::Bind(pdu::Bind {
                system_id: c.system_id.clone(),
                password: c.password.clone(),
                system_type: c.system_type.clone(),
                interface_version: 0x34,
                addr_ton: 0,
                addr_npi: 0,
                address_range: String::new(),
            }),
        };
        let bytes = pdu::encode(&bind).map_err(|e| NotifyError::Rejected(format!("bind: {e}")))?;
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| unavailable(format!("sending bind: {e}")))?;
        let mut buf = BytesMut::with_capacity(4096);
        let deadline = Instant::now() + self.ctx.response_timeout;
        let response = loop {
            match pdu::decode(&mut buf) {
                Ok(Some(p)) if p.sequence == 1 && p.is_response() => break p,
                Ok(Some(p)) => {
                    debug!(
                        command_id = p.command_id,
                        "ignoring a PDU before the bind response"
                    );
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(unavailable(format!("bad bind response: {e}"))),
            }
            match timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Some(Ok(0)) => {
                    return Err(unavailable(
                        "the SMSC closed the connection during bind".into(),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(unavailable(format!("reading bind response: {e}"))),
                None => return Err(unavailable("no bind response from the SMSC".into())),
            }
        };
        if response.status != pdu::ESME_ROK || response.command_id != command_id | pdu::RESPONSE {
            return Err(unavailable(format!(
                "bind refused: {}",
                status_text(response.status)
            )));
        }
        let peer = match &response.body {
            Body::BindResp { system_id } => system_id.clone(),
            _ => String::new(),
        };
        info!(smsc = %c.address, system_id = %peer, bind = ?c.bind, "bound to the SMSC");
        self.ctx.stats.binds.fetch_add(1, Ordering::Relaxed);
        let (requests, queue) = mpsc::channel(64);
        let ctx = self.ctx.clone();
        let task = tokio::spawn(async move {
            let reason = run_session(stream, buf, queue, ctx).await;
            warn!(%reason, "SMPP session ended");
        });
        Ok(SessionHandle { requests, task })
    }

    fn short_message(&self, n: &Notification, body: &str) -> Result<ShortMessage, NotifyError> {
        let (dest_addr_ton, dest_addr_npi, destination_addr) = destination(&n.recipient)?;
        let (source_addr_ton, source_addr_npi, source_addr) = source(&self.config.source_addr);
        let coding = gsm::encode(body);
        let mut sm = ShortMessage {
            source_addr_ton,
            source_addr_npi,
            source_addr,
            dest_addr_ton,
            dest_addr_npi,
            destination_addr,
            registered_delivery: u8::from(self.config.registered_delivery),
            data_coding: coding.data_coding(),
            ..ShortMessage::default()
        };
        if coding.fits_one_sms() {
            sm.short_message = coding.bytes().to_vec();
        } else {
            sm.tlvs.push(Tlv {
                tag: pdu::TLV_MESSAGE_PAYLOAD,
                value: coding.bytes().to_vec(),
            });
        }
        Ok(sm)
    }
}

#[async_trait]
impl NotifyChannel for SmppChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::SmsSmpp
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let NotificationPayload::Text { body, .. } = &n.payload else {
            return Err(NotifyError::Invalid("an SMS carries text only".into()));
        };
        let sm = self.short_message(n, body)?;
        let requests = self.requests().await?;
        let (reply, response) = oneshot::channel();
        let request = Request {
            command_id: pdu::SUBMIT_SM,
            body: Body::SubmitSm(sm),
            reply,
            report_key: Some(n.report_key()),
        };
        if requests.send(request).await.is_err() {
            return Err(NotifyError::Unavailable("the SMPP session closed".into()));
        }
        let response = match timeout(self.ctx.response_timeout, response).await {
            Err(_) => {
                return Err(NotifyError::Unknown(format!(
                    "no submit_sm_resp within {} s",
                    self.ctx.response_timeout.as_secs()
                )));
            }
            Ok(Err(_)) => return Err(NotifyError::Unknown("the SMPP session task ended".into())),
            Ok(Ok(Err(Lost::NotWritten(reason)))) => return Err(NotifyError::Unavailable(reason)),
            Ok(Ok(Err(Lost::NoResponse(reason)))) => return Err(NotifyError::Unknown(reason)),
            Ok(Ok(Ok(response))) => response,
        };
        if response.command_id == pdu::GENERIC_NACK {
            return Err(NotifyError::Rejected(format!(
                "generic_nack: {}",
                status_text(response.status)
            )));
        }
        if response.status != pdu::ESME_ROK {
            let reason = format!("submit_sm refused: {}", status_text(response.status));
            if response.status == 0x04 {
                // "Incorrect bind status": our session is not what we think.
                self.session.lock().await.take();
            }
            return Err(if is_transient(response.status) {
                NotifyError::Unavailable(reason)
            } else {
                NotifyError::Rejected(reason)
            });
        }
        let message_id = match response.body {
            Body::SubmitSmResp { message_id } => message_id,
            _ => String::new(),
        };
        debug!(id = n.outbox_id, to = %n.recipient, %message_id, "submit_sm accepted");
        info!(id = n.outbox_id, to = %Redacted(&n.recipient), %message_id, "SMS accepted by the SMSC");
        Ok(SendOutcome {
            report_expected: self.config.registered_delivery
                && self.config.bind == SmppBind::Transceiver,
            note: format!("accepted by the SMSC as {message_id}"),
            gateway_id: Some(message_id).filter(|id| !id.is_empty()),
        })
    }
}

/// `timeout_at` that yields `None` on expiry.
async fn timeout_at<F: std::future::Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, f).await.ok()
}

/// E.164 with `+` goes out as an international number; other digits as
/// the SMSC's default (unknown type of number).
fn destination(recipient: &str) -> Result<(u8, u8, String), NotifyError> {
    let (ton, digits) = match recipient.strip_prefix('+') {
        Some(rest) => (1, rest),
        None => (0, recipient),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotifyError::Invalid(
            "the recipient is not a phone number (digits, optionally after +)".into(),
        ));
    }
    Ok((ton, 1, digits.to_owned()))
}

fn source(addr: &str) -> (u8, u8, String) {
    match addr.strip_prefix('+') {
        Some(rest) if rest.bytes().all(|b| b.is_ascii_digit()) => (1, 1, rest.to_owned()),
        _ if !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit()) => {
            (1, 1, addr.to_owned())
        }
        _ => (5, 0, addr.to_owned()),
    }
}

fn is_transient(status: u32) -> bool {
    matches!(status, 0x04 | 0x08 | 0x14 | 0x45 | 0x58 | 0x64)
}

fn status_text(status: u32) -> String {
    let name = match status {
        0x00 => "ok",
        0x01 => "invalid message length",
        0x02 => "invalid command length",
        0x03 => "invalid command id",
        0x04 => "incorrect bind status",
        0x05 => "already bound",
        0x08 => "system error",
        0x0A => "invalid source address",
        0x0B => "invalid destination address",
        0x0D => "bind failed",
        0x0E => "invalid password",
        0x0F => "invalid system id",
        0x14 => "message queue full",
        0x45 => "submit failed",
        0x58 => "throttled",
        0x62 => "invalid validity period",
        0x64 => "temporary application error",
        0x65 => "permanent application error",
        _ => "",
    };
    if name.is_empty() {
        format!("status 0x{status:08X}")
    } else {
        format!("status 0x{status:08X} ({name})")
    }
}

enum PendingKind {
    Request {
        reply: oneshot::Sender<Result<Pdu, Lost>>,
        report_key: Option<ReportKey>,
    },
    EnquireLink,
    Unbind,
}

struct Session {
    writer: OwnedWriteHalf,
    pending: HashMap<u32, PendingKind>,
    next_sequence: u32,
    /// Set while an `enquire_link` waits for its response.
    link_deadline: Option<Instant>,
    ctx: Arc<SessionContext>,
}

/// Owns the socket until the session ends; returns why it ended.
async fn run_session(
    stream: TcpStream,
    mut buf: BytesMut,
    mut requests: mpsc::Receiver<Request>,
    ctx: Arc<SessionContext>,
) -> String {
    let (mut reader, writer) = stream.into_split();
    let mut session = Session {
        writer,
        pending: HashMap::new(),
        next_sequence: 2,
        link_deadline: None,
        ctx: ctx.clone(),
    };
    let mut ping = tokio::time::interval_at(
        Instant::now() + ctx.enquire_link_every,
        ctx.enquire_link_every,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = 'session: loop {
        loop {
            match pdu::decode(&mut buf) {
                Ok(Some(p)) => {
                    if let Err(reason) = session.handle_incoming(p).await {
                        break 'session reason;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'session format!("undecodable PDU from the SMSC: {e}"),
            }
        }
        let link_deadline = session.link_deadline;
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break 'session "the SMSC closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => break 'session format!("reading from the SMSC: {e}"),
            },
            request = requests.recv() => match request {
                Some(request) => {
                    if let Err(reason) = session.write_request(request).await {
                        break 'session reason;
                    }
                }
                None => {
                    session.unbind(&mut reader, &mut buf).await;
                    break 'session "unbound".to_string();
                }
            },
            _ = ping.tick() => {
                if session.link_deadline.is_none()
                    && let Err(reason) = session.write_enquire_link().await
                {
                    break 'session reason;
                }
            }
            () = sleep_until(link_deadline.unwrap_or_else(Instant::now)), if link_deadline.is_some() => {
                break 'session "the SMSC did not answer enquire_link".to_string();
            }
        }
    };
    // Nothing queued was written; everything pending was.
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let _ = request.reply.send(Err(Lost::NotWritten(reason.clone())));
    }
    for (_, pending) in session.pending.drain() {
        if let PendingKind::Request { reply, .. } = pending {
            let _ = reply.send(Err(Lost::NoResponse(reason.clone())));
        }
    }
    reason
}

impl Session {
    fn sequence(&mut self) -> u32 {
        let s = self.next_sequence;
        // Sequence numbers run 1..=0x7FFFFFFF.
        self.next_sequence = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    async fn write(&mut self, pdu: &Pdu) -> Result<(), String> {
        let bytes = pdu::encode(pdu).map_err(|e| format!("cannot encode: {e}"))?;
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| format!("writing to the SMSC: {e}"))
    }

    async fn write_request(&mut self, request: Request) -> Result<(), String> {
        let sequence = self.sequence();
        let pdu = Pdu {
            command_id: request.command_id,
            status: 0,
            sequence,
            body: request.body,
        };
        let bytes = match pdu::encode(&pdu) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = request
                    .reply
                    .send(Err(Lost::NotWritten(format!("cannot encode: {e}"))));
                return Ok(());
            }
        };
        // write_all fails only before the last byte is handed to the
        // kernel: the SMSC cannot have a whole PDU.
        if let Err(e) = self.writer.write_all(&bytes).await {
            let reason = format!("writing to the SMSC: {e}");
            let _ = request.reply.send(Err(Lost::NotWritten(reason.clone())));
            return Err(reason);
        }
        self.pending.insert(
            sequence,
            PendingKind::Request {
                reply: request.reply,
                report_key: request.report_key,
            },
        );
        Ok(())
    }

    async fn write_enquire_link(&mut self) -> Result<(), String> {
        let sequence = self.sequence();
        self.write(&Pdu::empty(pdu::ENQUIRE_LINK, sequence)).await?;
        self.pending.insert(sequence, PendingKind::EnquireLink);
        self.link_deadline = Some(Instant::now() + self.ctx.response_timeout);
        Ok(())
    }

    async fn unbind(&mut self, reader: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut BytesMut) {
        let sequence = self.sequence();
        if self
            .write(&Pdu::empty(pdu::UNBIND, sequence))
            .await
            .is_err()
        {
            return;
        }
        self.pending.insert(sequence, PendingKind::Unbind);
        let deadline = Instant::now() + UNBIND_GRACE;
        loop {
            while let Ok(Some(p)) = pdu::decode(buf) {
                if p.sequence == sequence && p.is_response() {
                    return;
                }
                if self.handle_incoming(p).await.is_err() {
                    return;
                }
            }
            match timeout_at(deadline, reader.read_buf(buf)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Err: the session must end, with this reason.
    async fn handle_incoming(&mut self, p: Pdu) -> Result<(), String> {
        if p.is_response() {
            match self.pending.remove(&p.sequence) {
                Some(PendingKind::Request { reply, report_key }) => {
                    if let (Body::SubmitSmResp { message_id }, Some(key)) = (&p.body, report_key)
                        && p.status == pdu::ESME_ROK
                        && !message_id.is_empty()
                    {
                        self.ctx
                            .stats
                            .submits_accepted
                            .fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut recent) = self.ctx.recent.lock() {
                            recent.insert(message_id.clone(), key);
                        }
                    }
                    let _ = reply.send(Ok(p));
                }
                Some(PendingKind::EnquireLink) => {
                    self.link_deadline = None;
                    self.ctx
                        .stats
                        .enquire_links_answered
                        .fetch_add(1, Ordering::Relaxed);
                }
                Some(PendingKind::Unbind) => return Err("unbound".into()),
                None => debug!(sequence = p.sequence, "response to no pending request"),
            }
            return Ok(());
        }
        match p.command_id {
            pdu::DELIVER_SM => {
                let resp = Pdu {
                    body: Body::DeliverSmResp {
                        message_id: String::new(),
                    },
                    ..p.empty_response(pdu::ESME_ROK)
                };
                self.write(&resp).await?;
                if let Body::DeliverSm(sm) = &p.body {
                    self.handle_deliver_sm(sm);
                }
            }
            pdu::ENQUIRE_LINK => self.write(&p.empty_response(pdu::ESME_ROK)).await?,
            pdu::UNBIND => {
                self.write(&p.empty_response(pdu::ESME_ROK)).await?;
                return Err("the SMSC unbound".into());
            }
            other => {
                debug!(command_id = other, "nacking an unsupported command");
                let nack = Pdu {
                    command_id: pdu::GENERIC_NACK,
                    status: pdu::ESME_RINVCMDID,
                    sequence: p.sequence,
                    body: Body::Empty,
                };
                self.write(&nack).await?;
            }
        }
        Ok(())
    }

    fn handle_deliver_sm(&self, sm: &ShortMessage) {
        let Some(receipt) = receipt::parse(sm) else {
            debug!(from = %sm.source_addr, "ignoring a mobile-originated SMS");
            return;
        };
        self.ctx.stats.receipts.fetch_add(1, Ordering::Relaxed);
        let known = self
            .ctx
            .recent
            .lock()
            .ok()
            .and_then(|recent| recent.keys.get(&receipt.message_id).cloned());
        let key = known.unwrap_or_else(|| ReportKey::Gateway {
            channel: ChannelKind::SmsSmpp.as_str().into(),
            gateway_id: receipt.message_id.clone(),
        });
        let status = match receipt.outcome {
            ReceiptOutcome::Delivered => ReportStatus::Delivered(receipt.note),
            ReceiptOutcome::Failed => ReportStatus::Failed(receipt.note),
            ReceiptOutcome::Intermediate => ReportStatus::Intermediate(receipt.note),
        };
        debug!(message_id = %receipt.message_id, ?status, "delivery receipt");
        let _ = self.ctx.reports.send(DeliveryReport { key, status });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            destination("+4915550001").unwrap(),
            (1, 1, "4915550001".into())
        );
        assert_eq!(
            destination("015550001").unwrap(),
            (0, 1, "015550001".into())
        );
        assert!(destination("1002@pbx").is_err());
        assert!(destination("+").is_err());
        assert_eq!(source("ivm"), (5, 0, "ivm".into()));
        assert_eq!(source("+4930123"), (1, 1, "4930123".into()));
        assert_eq!(source("4930123"), (1, 1, "4930123".into()));
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status_text(0x0B),
            "status 0x0000000B (invalid destination address)"
        );
        assert_eq!(status_text(0x99), "status 0x00000099");
        assert!(is_transient(0x58) && !is_transient(0x0B));
    }
}
