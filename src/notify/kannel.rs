//! SMS through Kannel: a `GET` on smsbox's `sendsms`, and a small HTTP
//! receiver for the delivery reports Kannel calls back (`dlr-url`).
//!
//! Kannel returns no message id, so each attempt puts its own outbox id and
//! attempt number into the `dlr-url`; the report names the attempt exactly.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use tracing::{debug, info};

use super::config::KannelConfig;
use super::redact::Redacted;
use super::{
    ChannelKind, DeliveryReport, Notification, NotificationPayload, NotifyChannel, NotifyError,
    ReportKey, ReportSender, ReportStatus, SendOutcome, gsm,
};

/// The path of the delivery-report callback.
pub const DLR_PATH: &str = "/kannel/dlr";

pub struct KannelChannel {
    config: KannelConfig,
    dlr_url: String,
    client: reqwest::Client,
}

impl KannelChannel {
    pub fn new(config: KannelConfig) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1).into()))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Invalid(format!("http client: {e}")))?;
        let dlr_url = config.effective_dlr_url();
        Ok(Self {
            config,
            dlr_url,
            client,
        })
    }

    /// The `dlr-url` for one attempt; `%d` and `%A` are Kannel's escapes for
    /// the report type and the SMSC's reply.
    fn dlr_url_for(&self, n: &Notification) -> String {
        let joiner = if self.dlr_url.contains('?') { '&' } else { '?' };
        format!(
            "{}{joiner}id={}&attempt={}&type=%d&reply=%A",
            self.dlr_url, n.outbox_id, n.attempt
        )
    }
}

/// How a `reqwest` failure bears on whether Kannel got the request. Errors
/// are stripped of the URL: it holds the password, the number and the text.
pub(crate) fn classify_http_error(e: reqwest::Error) -> NotifyError {
    let connect = e.is_connect();
    let builder = e.is_builder();
    let e = e.without_url();
    // reqwest's own message is only "error sending request"; the cause
    // ("Connection refused") is in the chain, which carries no URL.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if connect {
        NotifyError::Unavailable(format!("cannot connect: {text}"))
    } else if builder {
        NotifyError::Invalid(text)
    } else {
        NotifyError::Unknown(text)
    }
}

/// At most `limit` bytes of a response body, as text: a gateway's answer
/// is a short status line, and nothing a peer sends is read unbounded.
pub(crate) async fn read_capped(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).trim().to_owned()
}

#[async_trait]
impl NotifyChannel for KannelChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::SmsKannel
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let NotificationPayload::Text { body, .. } = &n.payload else {
            return Err(NotifyError::Invalid("an SMS carries text only".into()));
        };
        let c = &self.config;
        let coding = if gsm::encode(body).data_coding() == 0 {
            "0"
        } else {
            "2"
        };
        let mut query: Vec<(&str, String)> = vec![
            ("username", c.username.clone()),
            ("password", c.password.clone()),
            ("from", c.from.clone()),
            ("to", n.recipient.clone()),
            ("text", body.clone()),
            ("charset", "UTF-8".into()),
            ("coding", coding.into()),
        ];
        if !c.smsc_id.is_empty() {
            query.push(("smsc", c.smsc_id.clone()));
        }
        let report_expected = c.dlr_mask & (1 | 2 | 16) != 0;
        if c.dlr_mask != 0 {
            query.push(("dlr-mask", c.dlr_mask.to_string()));
            query.push(("dlr-url", self.dlr_url_for(n)));
        }
        // GET: smsbox refuses a POST with the fields in the query string.
        let response = self
            .client
            .get(&c.sendsms_url)
            .query(&query)
            .send()
            .await
            .map_err(classify_http_error)?;
        let status = response.status();
        let text = read_capped(response, 200).await;
        debug!(id = n.outbox_id, to = %n.recipient, %status, reply = %text, "sendsms");
        if status.is_success() {
            info!(id = n.outbox_id, to = %Redacted(&n.recipient), reply = %text, "SMS accepted by Kannel");
            return Ok(SendOutcome {
                gateway_id: None,
                report_expected,
                note: text,
            });
        }
        let reason = format!("sendsms answered {}: {text}", status.as_u16());
        Err(match status.as_u16() {
            // Kannel's queue is full, or a proxy in front of it is: not taken.
            503 | 429 | 502 | 504 => NotifyError::Unavailable(reason),
            400..=499 => NotifyError::Rejected(reason),
            _ => NotifyError::Unknown(reason),
        })
    }
}

#[derive(Debug, Deserialize)]
struct DlrParams {
    id: i64,
    attempt: u32,
    #[serde(rename = "type")]
    kind: u32,
    #[serde(default)]
    reply: String,
}

/// A Kannel DLR type (`%d`) as a report status. Kannel's types: 1 delivered
/// to the phone, 2 not delivered, 4 queued on the SMSC, 8 accepted by the
/// SMSC, 16 refused by the SMSC.
pub fn dlr_status(kind: u32, reply: &str) -> ReportStatus {
    // An SMPP receipt quotes the start of the text (`text:...`), which may
    // hold a phone number: keep what comes before it.
    let reply = reply.split(" text:").next().unwrap_or_default().trim();
    let reply: String = reply.chars().take(160).collect();
    match kind {
        1 => ReportStatus::Delivered(format!("delivered {reply}").trim().to_owned()),
        2 => ReportStatus::Failed(format!("not delivered: {reply}")),
        16 => ReportStatus::Failed(format!("refused by the SMSC: {reply}")),
        4 => ReportStatus::Intermediate("queued on the SMSC".into()),
        8 => ReportStatus::Intermediate("accepted by the SMSC".into()),
        other => ReportStatus::Intermediate(format!("report type {other}")),
    }
}

async fn handle_dlr(State(reports): State<ReportSender>, Query(p): Query<DlrParams>) -> StatusCode {
    let status = dlr_status(p.kind, &p.reply);
    debug!(
        id = p.id,
        attempt = p.attempt,
        kind = p.kind,
        ?status,
        "Kannel delivery report"
    );
    let report = DeliveryReport {
        key: ReportKey::Attempt {
            id: p.id,
            attempt: p.attempt,
        },
        status,
    };
    match reports.send(report) {
        Ok(()) => StatusCode::OK,
        // The worker is gone: let Kannel see a failure in its log.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The routes of the delivery-report receiver, to mount on any axum server.
pub fn dlr_router(reports: ReportSender) -> Router {
    Router::new()
        .route(DLR_PATH, get(handle_dlr))
        .with_state(reports)
}

/// Serve the receiver on `listener` until `shutdown` resolves.
pub async fn serve_dlr(
    listener: tokio::net::TcpListener,
    reports: ReportSender,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, dlr_router(reports))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlr_types() {
        assert_eq!(
            dlr_status(1, ""),
            ReportStatus::Delivered("delivered".into())
        );
        assert_eq!(
            dlr_status(
                2,
                "id:1001 sub:001 dlvrd:000 submit date:2611240025 done date:2611240025 stat:UNDELIV err:001 text:Dial *55123456"
            ),
            ReportStatus::Failed(
                "not delivered: id:1001 sub:001 dlvrd:000 submit date:2611240025 done date:2611240025 stat:UNDELIV err:001".into()
            )
        );
        assert_eq!(
            dlr_status(16, "NACK/0x0000000b/Invalid Destination Address"),
            ReportStatus::Failed(
                "refused by the SMSC: NACK/0x0000000b/Invalid Destination Address".into()
            )
        );
        assert!(matches!(
            dlr_status(8, "ACK/"),
            ReportStatus::Intermediate(_)
        ));
    }

    #[test]
    fn dlr_url_names_the_attempt() {
        let channel = KannelChannel::new(KannelConfig::default()).unwrap();
        let n = Notification {
            outbox_id: 12,
            attempt: 3,
            channel: ChannelKind::SmsKannel,
            recipient: "+4915550001".into(),
            payload: NotificationPayload::MessageWaiting {
                new_messages: 0,
                old_messages: 0,
            },
        };
        assert_eq!(
            channel.dlr_url_for(&n),
            "http://127.0.0.1:13080/kannel/dlr?id=12&attempt=3&type=%d&reply=%A"
        );
    }
}
