//! The `[notify]` section of the configuration: which channels notify a user
//! by default, the SMS template, retry timing, and each gateway.
//!
//! Shaped like `crate::config`: every struct is `#[serde(default)]` with a
//! default that works on one machine (no SMS gateway: the desk phone's text
//! and lamp), unknown keys are caught by the caller's `serde_ignored` pass,
//! and [`NotifyConfig::validate`] names the offending key.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ChannelKind;
use super::policy::OutboxPolicy;
use super::template::{DEFAULT_SMS_TEMPLATE, SmsTemplate};

const MASK: &str = "********";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// Channels for users without their own list (`ivm` stores per-user lists).
    pub default_channels: Vec<ChannelKind>,
    /// See `notify::template` for the fields.
    pub sms_template: String,
    /// Delay before the second attempt; doubles each time up to the maximum.
    pub first_retry_seconds: u32,
    pub max_retry_seconds: u32,
    /// After this long an unsent notification is given up (and recorded so).
    pub deadline_minutes: u32,
    /// Sends in flight at once.
    pub max_in_flight: u32,
    /// How long the smart caller ID call rings before it ends by itself.
    pub missed_call_ring_seconds: u32,
    /// Which outcomes the sender is told about afterwards (S5): by SMS to
    /// their mobile when an SMS gateway is configured, else a text to their
    /// desk phone.
    pub sender_status: Vec<SenderStatus>,
    /// A message still unheard after this many hours expires (its delivery
    /// becomes `expired`); checked periodically by `ivm serve`.
    pub expire_hours: u32,
    pub kannel: Option<KannelConfig>,
    pub smpp: Option<SmppConfig>,
    pub webhook: Option<WebhookConfig>,
}

/// An outcome of a message its sender hears about afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderStatus {
    /// Not heard live; retrieved and played to its end later.
    HeardLater,
    /// The target turned the call down.
    Rejected,
    /// Still unheard after `expire_hours`.
    Expired,
}

impl SenderStatus {
    pub const ALL: [SenderStatus; 3] = [Self::HeardLater, Self::Rejected, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeardLater => "heard_later",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for SenderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KannelConfig {
    /// smsbox's `sendsms` URL.
    pub sendsms_url: String,
    /// A `group = sendsms-user` of smsbox.
    pub username: String,
    pub password: String,
    /// The originator shown on the phone.
    pub from: String,
    /// Route through this `smsc-id` (empty: Kannel chooses).
    pub smsc_id: String,
    /// Kannel's `dlr-mask`; 0 asks for no delivery reports. 19 = delivered
    /// (1) + failed (2) + rejected by the SMSC (16).
    pub dlr_mask: u8,
    /// Where `ivm` listens for Kannel's delivery-report callbacks.
    pub dlr_listen: SocketAddr,
    /// The URL Kannel calls; empty means `http://<dlr_listen>/kannel/dlr`.
    pub dlr_url: String,
    pub timeout_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmppBind {
    /// Submit and receive delivery receipts on one session.
    Transceiver,
    /// Submit only; no receipts arrive on this session.
    Transmitter,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmppConfig {
    /// The SMSC, `host:port`.
    pub address: String,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub bind: SmppBind,
    /// The originator: digits are sent as an international number, anything
    /// else as an alphanumeric sender.
    pub source_addr: String,
    pub registered_delivery: bool,
    pub enquire_link_seconds: u32,
    pub response_timeout_seconds: u32,
    pub connect_timeout_seconds: u32,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Receives a JSON POST per notification.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer_token: String,
    pub timeout_seconds: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            default_channels: vec![ChannelKind::SipMessage, ChannelKind::Mwi],
            sms_template: DEFAULT_SMS_TEMPLATE.into(),
            first_retry_seconds: 5,
            max_retry_seconds: 600,
            deadline_minutes: 24 * 60,
            max_in_flight: 8,
            missed_call_ring_seconds: 8,
            sender_status: SenderStatus::ALL.to_vec(),
            expire_hours: 72,
            kannel: None,
            smpp: None,
            webhook: None,
        }
    }
}

impl Default for KannelConfig {
    fn default() -> Self {
        Self {
            sendsms_url: "http://127.0.0.1:13013/cgi-bin/sendsms".into(),
            username: "ivm".into(),
            password: String::new(),
            from: "ivm".into(),
            smsc_id: String::new(),
            dlr_mask: 19,
            dlr_listen: SocketAddr::from(([127, 0, 0, 1], 13080)),
            dlr_url: String::new(),
            timeout_seconds: 10,
        }
    }
}

impl Default for SmppConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:2775".into(),
            system_id: "ivm".into(),
            password: String::new(),
            system_type: String::new(),
            bind: SmppBind::Transceiver,
            source_addr: "ivm".into(),
            registered_delivery: true,
            enquire_link_seconds: 30,
            response_timeout_seconds: 10,
            connect_timeout_seconds: 5,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/ivm/notify".into(),
            bearer_token: String::new(),
            timeout_seconds: 10,
        }
    }
}

// Secrets never reach a log line or a terminal through Debug.
impl fmt::Debug for KannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KannelConfig")
            .field("sendsms_url", &self.sendsms_url)
            .field("username", &self.username)
            .field("password", &MASK)
            .field("from", &self.from)
            .field("smsc_id", &self.smsc_id)
            .field("dlr_mask", &self.dlr_mask)
            .field("dlr_listen", &self.dlr_listen)
            .field("dlr_url", &self.dlr_url)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

impl fmt::Debug for SmppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmppConfig")
            .field("address", &self.address)
            .field("system_id", &self.system_id)
            .field("password", &MASK)
            .field("system_type", &self.system_type)
            .field("bind", &self.bind)
            .field("source_addr", &self.source_addr)
            .field("registered_delivery", &self.registered_delivery)
            .field("enquire_link_seconds", &self.enquire_link_seconds)
            .field("response_timeout_seconds", &self.response_timeout_seconds)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .finish()
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("bearer_token", &MASK)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

impl KannelConfig {
    pub fn effective_dlr_url(&self) -> String {
        if self.dlr_url.is_empty() {
            format!("http://{}/kannel/dlr", self.dlr_listen)
        } else {
            self.dlr_url.clone()
        }
    }
}

impl NotifyConfig {
    pub fn policy(&self) -> OutboxPolicy {
        OutboxPolicy {
            first_retry: Duration::from_secs(self.first_retry_seconds.into()),
            max_retry: Duration::from_secs(self.max_retry_seconds.into()),
        }
    }

    /// How old an unheard message gets before it expires.
    pub fn expire_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.expire_hours) * 3600)
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_secs(u64::from(self.deadline_minutes) * 60)
    }

    /// The parsed template (validated by [`NotifyConfig::validate`]).
    pub fn template(&self) -> SmsTemplate {
        SmsTemplate::parse(&self.sms_template).unwrap_or_default()
    }

    /// A copy with every secret replaced, for `ivm config show`.
    pub fn masked(&self) -> Self {
        let mut shown = self.clone();
        let mask = |s: &mut String| {
            if !s.is_empty() {
                *s = MASK.into();
            }
        };
        if let Some(k) = shown.kannel.as_mut() {
            mask(&mut k.password);
        }
        if let Some(s) = shown.smpp.as_mut() {
            mask(&mut s.password);
        }
        if let Some(w) = shown.webhook.as_mut() {
            mask(&mut w.bearer_token);
        }
        shown
    }

    /// Whether the gateway a channel needs is configured.
    pub fn is_configured(&self, channel: ChannelKind) -> bool {
        match channel {
            ChannelKind::SmsKannel => self.kannel.is_some(),
            ChannelKind::SmsSmpp => self.smpp.is_some(),
            ChannelKind::Webhook => self.webhook.is_some(),
            ChannelKind::SipMessage | ChannelKind::Mwi | ChannelKind::SmartCallerId => true,
        }
    }

    /// Semantic checks serde cannot express. Error: (key, reason), the key
    /// in full (`notify.kannel.sendsms_url`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for channel in &self.default_channels {
            if !self.is_configured(*channel) {
                return Err(bad(
                    "notify.default_channels",
                    format!(
                        "`{channel}` needs its gateway: add a [notify.{}] section",
                        section(*channel)
                    ),
                ));
            }
        }
        if let Err(e) = SmsTemplate::parse(&self.sms_template) {
            return Err(bad("notify.sms_template", e.to_string()));
        }
        if !(1..=3600).contains(&self.first_retry_seconds) {
            return Err(bad("notify.first_retry_seconds", "must be from 1 to 3600"));
        }
        if !(self.first_retry_seconds..=86_400).contains(&self.max_retry_seconds) {
            return Err(bad(
                "notify.max_retry_seconds",
                "must be at least first_retry_seconds and at most 86400",
            ));
        }
        if !(1..=30 * 24 * 60).contains(&self.deadline_minutes) {
            return Err(bad(
                "notify.deadline_minutes",
                "must be from 1 to 43200 (30 days)",
            ));
        }
        if !(1..=256).contains(&self.max_in_flight) {
            return Err(bad("notify.max_in_flight", "must be from 1 to 256"));
        }
        if !(1..=60).contains(&self.missed_call_ring_seconds) {
            return Err(bad(
                "notify.missed_call_ring_seconds",
                "must be from 1 to 60",
            ));
        }
        for (i, status) in self.sender_status.iter().enumerate() {
            if self.sender_status[..i].contains(status) {
                return Err(bad(
                    "notify.sender_status",
                    format!("`{status}` is listed twice"),
                ));
            }
        }
        if !(1..=365 * 24).contains(&self.expire_hours) {
            return Err(bad(
                "notify.expire_hours",
                "must be from 1 to 8760 (a year)",
            ));
        }
        if let Some(k) = &self.kannel {
            http_url("notify.kannel.sendsms_url", &k.sendsms_url)?;
            if !k.dlr_url.is_empty() {
                http_url("notify.kannel.dlr_url", &k.dlr_url)?;
            }
            if k.username.is_empty() {
                return Err(bad("notify.kannel.username", "must not be empty"));
            }
            if k.from.is_empty() {
                return Err(bad(
                    "notify.kannel.from",
                    "must not be empty (or set Kannel's global-sender and any value here)",
                ));
            }
            if k.dlr_mask > 31 {
                return Err(bad("notify.kannel.dlr_mask", "must be from 0 to 31"));
            }
            timeout("notify.kannel.timeout_seconds", k.timeout_seconds)?;
        }
        if let Some(s) = &self.smpp {
            let ok = s
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(bad("notify.smpp.address", "must be host:port"));
            }
            c_string("notify.smpp.system_id", &s.system_id, 15, false)?;
            c_string("notify.smpp.password", &s.password, 8, true)?;
            c_string("notify.smpp.system_type", &s.system_type, 12, true)?;
            c_string("notify.smpp.source_addr", &s.source_addr, 20, false)?;
            if !(1..=3600).contains(&s.enquire_link_seconds) {
                return Err(bad(
                    "notify.smpp.enquire_link_seconds",
                    "must be from 1 to 3600",
                ));
            }
            timeout(
                "notify.smpp.response_timeout_seconds",
                s.response_timeout_seconds,
            )?;
            timeout(
                "notify.smpp.connect_timeout_seconds",
                s.connect_timeout_seconds,
            )?;
        }
        if let Some(w) = &self.webhook {
            http_url("notify.webhook.url", &w.url)?;
            if w.bearer_token.contains(['\r', '\n']) {
                return Err(bad("notify.webhook.bearer_token", "must be a single line"));
            }
            timeout("notify.webhook.timeout_seconds", w.timeout_seconds)?;
        }
        Ok(())
    }
}

fn section(channel: ChannelKind) -> &'static str {
    match channel {
        ChannelKind::SmsKannel => "kannel",
        ChannelKind::SmsSmpp => "smpp",
        ChannelKind::Webhook => "webhook",
        _ => "",
    }
}

fn bad(key: &str, reason: impl Into<String>) -> (String, String) {
    (key.to_owned(), reason.into())
}

fn http_url(key: &str, url: &str) -> Result<(), (String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err(bad(
            key,
            format!("`{url}` must be an http:// or https:// URL"),
        )),
    }
}

fn timeout(key: &str, seconds: u32) -> Result<(), (String, String)> {
    if (1..=300).contains(&seconds) {
        Ok(())
    } else {
        Err(bad(key, "must be from 1 to 300"))
    }
}

/// SMPP C-octet strings: printable ASCII, bounded by the protocol.
fn c_string(
    key: &str,
    value: &str,
    max: usize,
    may_be_empty: bool,
) -> Result<(), (String, String)> {
    if (value.is_empty() && !may_be_empty)
        || value.len() > max
        || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        let at_least = if may_be_empty { 0 } else { 1 };
        return Err(bad(
            key,
            format!("must be {at_least} to {max} printable ASCII characters (an SMPP 3.4 limit)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Wrapper {
        notify: NotifyConfig,
    }

    fn parse(text: &str) -> Result<NotifyConfig, String> {
        let w: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        w.notify.validate().map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(w.notify)
    }

    #[test]
    fn empty_section_is_the_default_and_valid() {
        assert_eq!(parse("").unwrap(), NotifyConfig::default());
        assert_eq!(parse("[notify]\n").unwrap(), NotifyConfig::default());
    }

    #[test]
    fn a_gateway_section_enables_it_with_defaults() {
        let c = parse("[notify]\ndefault_channels = [\"sms_kannel\", \"mwi\"]\n[notify.kannel]\npassword = \"foobar\"\n").unwrap();
        let k = c.kannel.as_ref().unwrap();
        assert_eq!(k.effective_dlr_url(), "http://127.0.0.1:13080/kannel/dlr");
        assert_eq!(
            c.default_channels,
            [ChannelKind::SmsKannel, ChannelKind::Mwi]
        );
        assert!(!format!("{c:?}").contains("foobar"));
        assert!(!toml::to_string(&c.masked()).unwrap().contains("foobar"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[notify]\ndefault_channels = [\"sms_smpp\"]\n").unwrap_err();
        assert!(
            e.starts_with(
                "notify.default_channels: `sms_smpp` needs its gateway: add a [notify.smpp]"
            ),
            "{e}"
        );
        let e = parse("[notify]\nsms_template = \"Call me\"\n").unwrap_err();
        assert!(e.starts_with("notify.sms_template:"), "{e}");
        let e = parse("[notify.smpp]\nsystem_id = \"much-too-long-system-id\"\n").unwrap_err();
        assert!(e.starts_with("notify.smpp.system_id:"), "{e}");
        let e = parse("[notify.webhook]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.starts_with("notify.webhook.url:"), "{e}");
        let e = parse("[notify]\nmax_retry_seconds = 1\n").unwrap_err();
        assert!(e.starts_with("notify.max_retry_seconds:"), "{e}");
        let e = parse("[notify]\ndefault_channels = [\"fax\"]\n").unwrap_err();
        assert!(e.contains("fax"), "{e}");
        let e = parse("[notify]\nexpire_hours = 0\n").unwrap_err();
        assert!(e.starts_with("notify.expire_hours:"), "{e}");
        let e = parse("[notify]\nsender_status = [\"rejected\", \"rejected\"]\n").unwrap_err();
        assert!(e.starts_with("notify.sender_status:"), "{e}");
        let e = parse("[notify]\nsender_status = [\"read\"]\n").unwrap_err();
        assert!(e.contains("read"), "{e}");
    }

    #[test]
    fn sender_status_defaults_to_all_three_and_can_be_narrowed() {
        let c = parse("").unwrap();
        assert_eq!(c.sender_status, SenderStatus::ALL);
        assert_eq!(c.expire_after(), Duration::from_secs(72 * 3600));
        let c = parse("[notify]\nsender_status = [\"expired\"]\nexpire_hours = 2\n").unwrap();
        assert_eq!(c.sender_status, [SenderStatus::Expired]);
        assert_eq!(c.expire_after(), Duration::from_secs(7200));
        assert!(
            parse("[notify]\nsender_status = []\n")
                .unwrap()
                .sender_status
                .is_empty()
        );
    }
}
