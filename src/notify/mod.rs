//! Notifications: the durable outbox worker and the channels it sends
//! through — SMS via Kannel's `sendsms` or SMPP 3.4, a JSON webhook, and the
//! switch's text message, message-waiting lamp and smart-caller-ID call.
//!
//! Owns: what a notification is ([`Notification`]), the one channel trait
//! ([`NotifyChannel`]), the retry policy ([`OutboxPolicy`], pure, virtual
//! time), the worker that drives claims, sends and settlements
//! ([`OutboxWorker`]), the SMS text template, and the wire of each gateway.
//! Must not know: the session engine's states or any PBX's syntax (switch
//! channels go through [`crate::switch::Switch`]); SQL lives in
//! `store::outbox`.
//!
//! Exactly once: an item is written before any send; an attempt is claimed
//! (`sending`, attempt id) in the store before the network call; a channel
//! says whether a failure is *certainly not sent* (safe to retry), *refused
//! for good*, or *unknown*. Only idempotent channels retry an unknown; the
//! others settle it as failed rather than risk a second SMS. See
//! [`OutboxPolicy`].

pub mod config;
mod error;
pub mod gsm;
pub mod kannel;
pub mod policy;
pub mod redact;
pub mod smpp;
pub mod switch;
pub mod template;
pub mod webhook;
mod worker;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::store::outbox::ReportKey;
pub use config::{NotifyConfig, SenderStatus};
pub use error::NotifyError;
pub use policy::{OutboxPolicy, Transition};
pub use redact::Redacted;
pub use template::{SmsFields, SmsTemplate};
pub use worker::{
    Channels, NewNotification, Outbox, OutboxWorker, ReportReceiver, ReportSender, report_channel,
};

/// The channels, named as in the store and the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    SmsKannel,
    SmsSmpp,
    Webhook,
    SipMessage,
    Mwi,
    SmartCallerId,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 6] = [
        ChannelKind::SmsKannel,
        ChannelKind::SmsSmpp,
        ChannelKind::Webhook,
        ChannelKind::SipMessage,
        ChannelKind::Mwi,
        ChannelKind::SmartCallerId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::SmsKannel => "sms_kannel",
            ChannelKind::SmsSmpp => "sms_smpp",
            ChannelKind::Webhook => "webhook",
            ChannelKind::SipMessage => "sip_message",
            ChannelKind::Mwi => "mwi",
            ChannelKind::SmartCallerId => "smart_caller_id",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = NotifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| NotifyError::Invalid(format!("unknown channel `{s}`")))
    }
}

/// The message-type digit that ends a smart-caller-ID retrieval number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    InstantMessage,
    Voicemail,
    Multimedia,
    Unified,
}

impl MessageType {
    pub fn digit(self) -> char {
        match self {
            MessageType::InstantMessage => '1',
            MessageType::Voicemail => '2',
            MessageType::Multimedia => '3',
            MessageType::Unified => '4',
        }
    }
}

/// The message a notification is about; the webhook sends it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub message_id: i64,
    /// The sender's number (extension or caller number).
    pub sender: String,
    pub sender_name: String,
    /// What to dial to hear it: retrieval code + message code.
    pub retrieval_number: String,
    pub duration_seconds: u32,
    pub message_type: MessageType,
}

/// What is sent, stored as JSON in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationPayload {
    /// A text: SMS, SIP MESSAGE, or a webhook call.
    Text {
        /// The sender shown: a number or short name (SMS originator).
        from: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<MessageInfo>,
    },
    /// The message-waiting lamp: absolute counts, so a repeat is harmless.
    MessageWaiting {
        new_messages: u32,
        old_messages: u32,
    },
    /// A short call that leaves a missed-call entry whose caller number is
    /// the retrieval number.
    MissedCall {
        caller_number: String,
        caller_name: String,
        ring_seconds: u32,
    },
}

/// One attempt at one outbox item, as handed to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub outbox_id: i64,
    /// Counts from 1; with `outbox_id`, names this attempt in reports.
    pub attempt: u32,
    pub channel: ChannelKind,
    /// E.164 mobile, extension, or endpoint — the channel knows which.
    pub recipient: String,
    pub payload: NotificationPayload,
}

impl Notification {
    pub fn report_key(&self) -> ReportKey {
        ReportKey::Attempt {
            id: self.outbox_id,
            attempt: self.attempt,
        }
    }
}

/// The gateway took the notification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendOutcome {
    /// The gateway's id for it, which later delivery reports quote.
    pub gateway_id: Option<String>,
    /// Whether a delivery report will settle it (else `sent` is final).
    pub report_expected: bool,
    /// What the gateway said, for people.
    pub note: String,
}

/// What a gateway reported later about a sent notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub key: ReportKey,
    pub status: ReportStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportStatus {
    Delivered(String),
    Failed(String),
    /// Not final (buffered, accepted by the SMSC, en route): only logged.
    Intermediate(String),
}

/// One way of reaching someone. Implementations classify every failure:
/// see [`NotifyError`] for what each variant promises.
#[async_trait]
pub trait NotifyChannel: Send + Sync {
    fn kind(&self) -> ChannelKind;

    /// True when sending the same attempt twice has the effect of sending it
    /// once (the receiver deduplicates, or the effect is a state, not an
    /// event). Decides whether an unknown outcome is retried.
    fn idempotent(&self) -> bool {
        false
    }

    async fn send(&self, notification: &Notification) -> Result<SendOutcome, NotifyError>;
}
