//! A generic HTTP webhook: one JSON `POST` per notification, for gateways
//! `ivm` does not speak natively.
//!
//! Every attempt of one notification carries the same `Idempotency-Key`
//! (`ivm-<outbox id>`) and `id`, so a receiver that deduplicates makes the
//! channel idempotent: an unanswered request is retried, not given up.
//!
//! Body: `{"id", "attempt", "channel": "webhook", "to", "kind", ...}` where
//! the rest is the notification (`kind: "text"` has `from`, `body` and, for
//! a message, `message: {message_id, sender, sender_name, retrieval_number,
//! duration_seconds, message_type}`). A 2xx answer means taken; 408, 429
//! and 5xx mean try again; other 4xx mean refused for good.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::config::WebhookConfig;
use super::kannel::{classify_http_error, read_capped};
use super::{
    ChannelKind, Notification, NotificationPayload, NotifyChannel, NotifyError, SendOutcome,
};

pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

pub struct WebhookChannel {
    config: WebhookConfig,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct Body<'a> {
    id: i64,
    attempt: u32,
    channel: ChannelKind,
    to: &'a str,
    #[serde(flatten)]
    notification: &'a NotificationPayload,
}

impl WebhookChannel {
    pub fn new(config: WebhookConfig) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1).into()))
            // A redirected POST turns into a GET: better refuse it visibly.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Invalid(format!("http client: {e}")))?;
        Ok(Self { config, client })
    }
}

/// The JSON a notification is posted as.
pub fn body_json(n: &Notification) -> serde_json::Value {
    let body = Body {
        id: n.outbox_id,
        attempt: n.attempt,
        channel: ChannelKind::Webhook,
        to: &n.recipient,
        notification: &n.payload,
    };
    serde_json::to_value(body).unwrap_or_default()
}

#[async_trait]
impl NotifyChannel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let mut request = self
            .client
            .post(&self.config.url)
            .header(IDEMPOTENCY_HEADER, format!("ivm-{}", n.outbox_id))
            .json(&body_json(n));
        if !self.config.bearer_token.is_empty() {
            request = request.bearer_auth(&self.config.bearer_token);
        }
        let response = request.send().await.map_err(classify_http_error)?;
        let status = response.status();
        let text = read_capped(response, 200).await;
        if status.is_success() {
            return Ok(SendOutcome {
                gateway_id: None,
                report_expected: false,
                note: format!("webhook answered {}", status.as_u16()),
            });
        }
        let reason = format!("webhook answered {}: {text}", status.as_u16());
        Err(match status.as_u16() {
            408 | 425 | 429 | 500..=599 => NotifyError::Unavailable(reason),
            _ => NotifyError::Rejected(reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MessageInfo, MessageType};
    use super::*;

    #[test]
    fn body_is_flat_json() {
        let n = Notification {
            outbox_id: 5,
            attempt: 2,
            channel: ChannelKind::Webhook,
            recipient: "+4915550001".into(),
            payload: NotificationPayload::Text {
                from: "1001".into(),
                body: "Dial *55123456".into(),
                message: Some(MessageInfo {
                    message_id: 42,
                    sender: "1001".into(),
                    sender_name: "Alice".into(),
                    retrieval_number: "*55123456".into(),
                    duration_seconds: 42,
                    message_type: MessageType::InstantMessage,
                }),
            },
        };
        assert_eq!(
            body_json(&n),
            serde_json::json!({
                "id": 5, "attempt": 2, "channel": "webhook", "to": "+4915550001",
                "kind": "text", "from": "1001", "body": "Dial *55123456",
                "message": {
                    "message_id": 42, "sender": "1001", "sender_name": "Alice",
                    "retrieval_number": "*55123456", "duration_seconds": 42,
                    "message_type": "instant_message"
                }
            })
        );
    }
}
