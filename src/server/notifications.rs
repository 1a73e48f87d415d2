//! Notifications in `ivm serve`: the outbox worker with the configured
//! channels, and the hand-off of a message that was not heard live (the
//! engine's `Action::NotHeard`) to the durable outbox.
//!
//! Owns: which channels a user gets (their own list, else `[notify]
//! default_channels`), what each channel is sent (recipient and payload),
//! the dedup keys that make a repeat enqueue a no-op. Must not know: any
//! gateway's wire (that is `crate::notify`).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::domain::{DeliveryState, MessageId};
use crate::notify::Redacted;
use crate::notify::kannel::{KannelChannel, serve_dlr};
use crate::notify::smpp::SmppChannel;
use crate::notify::switch::{MissedCalls, MwiChannel, SipMessageChannel, SmartCallerIdChannel};
use crate::notify::webhook::WebhookChannel;
use crate::notify::{
    ChannelKind, Channels, MessageInfo, MessageType, NewNotification, NotificationPayload,
    NotifyConfig, Outbox, OutboxWorker, SenderStatus, SmsFields, report_channel,
};
use crate::numbering::NumberPlan;
use crate::store::StoreHandle;
use crate::switch::Switch;

use super::ServerError;

/// The running outbox: its handle for enqueueing and its tasks.
pub(super) struct Running {
    pub outbox: Outbox,
    pub tasks: Vec<JoinHandle<()>>,
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Build the configured channels (gateways only when configured; the
/// switch's text, lamp and missed call over `switch`) and run the worker
/// until shutdown. Items left pending by an earlier run are sent now.
pub(super) async fn start(
    config: &NotifyConfig,
    store: StoreHandle,
    switch: Arc<dyn Switch>,
    missed_calls: Arc<MissedCalls>,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, ServerError> {
    let (reports, report_rx) = report_channel();
    let mut tasks = Vec::new();
    let mut channels = Channels::new()
        .with(Arc::new(SipMessageChannel::new(switch.clone())))
        .with(Arc::new(MwiChannel::new(switch.clone())))
        .with(Arc::new(SmartCallerIdChannel::new(switch, missed_calls)));
    if let Some(kannel) = config.kannel.clone() {
        if kannel.dlr_mask != 0 {
            let listener = tokio::net::TcpListener::bind(kannel.dlr_listen).await?;
            let reports = reports.clone();
            let shutdown = stopped(shutdown.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = serve_dlr(listener, reports, shutdown).await {
                    warn!("kannel delivery reports: {e}");
                }
            }));
        }
        let channel = KannelChannel::new(kannel)
            .map_err(|e| ServerError::Notify(format!("notify.kannel: {e}")))?;
        channels = channels.with(Arc::new(channel));
    }
    if let Some(smpp) = config.smpp.clone() {
        channels = channels.with(Arc::new(SmppChannel::new(smpp, reports.clone())));
    }
    if let Some(webhook) = config.webhook.clone() {
        let channel = WebhookChannel::new(webhook)
            .map_err(|e| ServerError::Notify(format!("notify.webhook: {e}")))?;
        channels = channels.with(Arc::new(channel));
    }
    info!(channels = ?channels.kinds(), "notification outbox running");
    let worker = OutboxWorker::new(
        store,
        channels,
        config.policy(),
        config.max_in_flight as usize,
        report_rx,
    );
    let outbox = worker.outbox(config.deadline());
    let shutdown = stopped(shutdown);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = worker.run(shutdown).await {
            warn!("notification outbox stopped: {e}");
        }
    }));
    Ok(Running { outbox, tasks })
}

/// A message its target did not hear live.
pub(super) struct NotHeard<'a> {
    pub message_id: MessageId,
    pub target: &'a str,
    pub sender: &'a str,
    pub sender_name: &'a str,
    /// As far as it is recorded when the notification is written.
    pub duration_seconds: u32,
    /// Do-not-disturb: the message-waiting lamp only.
    pub quiet: bool,
}

/// The channels that notify `target`: their own list, else the default;
/// only those whose gateway is configured.
async fn channels_for(
    store: &StoreHandle,
    config: &NotifyConfig,
    target: &str,
) -> Result<Vec<ChannelKind>, ServerError> {
    let user = target.to_owned();
    let own = store.call(move |s| s.notify_channels(&user)).await??;
    let kinds: Vec<ChannelKind> = match own {
        Some(names) => names
            .iter()
            .filter_map(|n| match n.parse::<ChannelKind>() {
                Ok(kind) => Some(kind),
                Err(e) => {
                    warn!(user = %Redacted(target), "stored notify channel ignored: {e}");
                    None
                }
            })
            .collect(),
        None => config.default_channels.clone(),
    };
    Ok(kinds
        .into_iter()
        .filter(|kind| {
            let ok = config.is_configured(*kind);
            if !ok {
                warn!(user = %Redacted(target), channel = %kind, "channel has no gateway configured; skipped");
            }
            ok
        })
        .collect())
}

/// Write every notification about a message not heard live to the outbox.
/// The same message and target twice enqueues nothing new.
pub(super) async fn not_heard(
    store: &StoreHandle,
    outbox: &Outbox,
    config: &NotifyConfig,
    plan: &NumberPlan,
    n: NotHeard<'_>,
) -> Result<(), ServerError> {
    let (message_id, target) = (n.message_id, n.target.to_owned());
    let Some((delivery_id, code)) = store
        .call(move |s| s.delivery_code(message_id, &target))
        .await??
    else {
        warn!(%message_id, "no delivery to notify about");
        return Ok(());
    };
    let channels = if n.quiet {
        vec![ChannelKind::Mwi]
    } else {
        channels_for(store, config, n.target).await?
    };
    if channels.is_empty() {
        return Ok(());
    }
    let target = n.target.to_owned();
    let user = store.call(move |s| s.user(&target)).await??;
    let mobile = user.and_then(|u| u.mobile);
    let retrieval_number =
        plan.retrieval_number(&code, crate::numbering::MessageType::InstantMessage);
    let body = config.template().render(&SmsFields {
        retrieval_number: &retrieval_number,
        from: n.sender,
        from_name: n.sender_name,
        duration_seconds: n.duration_seconds,
        message_type: MessageType::InstantMessage,
    });
    let info = MessageInfo {
        message_id: n.message_id.0,
        sender: n.sender.to_owned(),
        sender_name: n.sender_name.to_owned(),
        retrieval_number: retrieval_number.clone(),
        duration_seconds: n.duration_seconds,
        message_type: MessageType::InstantMessage,
    };
    let text = NotificationPayload::Text {
        from: n.sender.to_owned(),
        body,
        message: Some(info),
    };
    for channel in channels {
        let (recipient, payload) = match channel {
            ChannelKind::SmsKannel | ChannelKind::SmsSmpp => match &mobile {
                Some(mobile) => (mobile.clone(), text.clone()),
                None => {
                    debug!(target = n.target, %channel, "no mobile number; no SMS");
                    continue;
                }
            },
            ChannelKind::Webhook => (
                mobile.clone().unwrap_or_else(|| n.target.to_owned()),
                text.clone(),
            ),
            ChannelKind::SipMessage => (n.target.to_owned(), text.clone()),
            ChannelKind::Mwi => (n.target.to_owned(), lamp(store, n.target).await?),
            ChannelKind::SmartCallerId => (
                n.target.to_owned(),
                NotificationPayload::MissedCall {
                    caller_number: retrieval_number.clone(),
                    caller_name: n.sender_name.to_owned(),
                    ring_seconds: config.missed_call_ring_seconds,
                },
            ),
        };
        let enqueued = outbox
            .enqueue(NewNotification {
                channel,
                recipient,
                payload,
                delivery_id: Some(delivery_id),
                dedup_key: Some(format!("msg:{}:{}:{channel}", n.message_id, n.target)),
            })
            .await?;
        debug!(message_id = %n.message_id, %channel, ?enqueued, "notification enqueued");
    }
    info!(
        message_id = %n.message_id,
        "notifications of a message not heard live written"
    );
    debug!(message_id = %n.message_id, retrieval_number, "its retrieval number");
    Ok(())
}

async fn lamp(store: &StoreHandle, target: &str) -> Result<NotificationPayload, ServerError> {
    let target = target.to_owned();
    let (new_messages, old_messages) = store.call(move |s| s.message_counts(&target)).await??;
    Ok(NotificationPayload::MessageWaiting {
        new_messages,
        old_messages,
    })
}

/// After a message was heard: set the lamp again, if the user has one.
pub(super) async fn heard(
    store: &StoreHandle,
    outbox: &Outbox,
    config: &NotifyConfig,
    message_id: MessageId,
    target: &str,
) -> Result<(), ServerError> {
    lamp_update(
        store,
        outbox,
        config,
        message_id,
        target,
        DeliveryState::Heard,
    )
    .await
}

/// After a delivery became `state`: set the lamp again, if the user has one.
pub(super) async fn lamp_update(
    store: &StoreHandle,
    outbox: &Outbox,
    config: &NotifyConfig,
    message_id: MessageId,
    target: &str,
    state: DeliveryState,
) -> Result<(), ServerError> {
    if !channels_for(store, config, target)
        .await?
        .contains(&ChannelKind::Mwi)
    {
        return Ok(());
    }
    let payload = lamp(store, target).await?;
    outbox
        .enqueue(NewNotification {
            channel: ChannelKind::Mwi,
            recipient: target.to_owned(),
            payload,
            delivery_id: None,
            dedup_key: Some(format!("{state}:{message_id}:{target}:mwi")),
        })
        .await?;
    Ok(())
}

/// The text telling a sender what became of their message to `target`.
pub(super) fn status_text(status: SenderStatus, target: &str, expire_hours: u32) -> String {
    match status {
        SenderStatus::HeardLater => format!("Your message to {target} has now been heard."),
        SenderStatus::Rejected => format!("Your message to {target} was rejected."),
        SenderStatus::Expired => {
            format!("Your message to {target} expired unheard after {expire_hours} hours.")
        }
    }
}

/// How a sender is told: SMS to their mobile when they have one and an SMS
/// gateway is configured (Kannel first), else a text to their desk phone.
pub(super) fn status_channel(config: &NotifyConfig, has_mobile: bool) -> ChannelKind {
    [ChannelKind::SmsKannel, ChannelKind::SmsSmpp]
        .into_iter()
        .find(|kind| has_mobile && config.is_configured(*kind))
        .unwrap_or(ChannelKind::SipMessage)
}

/// Tell the sender of `message_id` what became of it at `target`, when
/// `[notify] sender_status` lists `status`. Once per message, target and
/// status.
pub(super) async fn sender_status(
    store: &StoreHandle,
    outbox: &Outbox,
    config: &NotifyConfig,
    status: SenderStatus,
    message_id: MessageId,
    sender: &str,
    target: &str,
) -> Result<(), ServerError> {
    if !config.sender_status.contains(&status) || sender.is_empty() {
        return Ok(());
    }
    let number = sender.to_owned();
    let mobile = store
        .call(move |s| s.user(&number))
        .await??
        .and_then(|u| u.mobile);
    let channel = status_channel(config, mobile.is_some());
    let recipient = match channel {
        ChannelKind::SmsKannel | ChannelKind::SmsSmpp => mobile.unwrap_or_default(),
        _ => sender.to_owned(),
    };
    let to = target.to_owned();
    let delivery_id = store
        .call(move |s| s.delivery_code(message_id, &to))
        .await??
        .map(|(id, _)| id);
    let enqueued = outbox
        .enqueue(NewNotification {
            channel,
            recipient,
            payload: NotificationPayload::Text {
                from: target.to_owned(),
                body: status_text(status, target, config.expire_hours),
                message: None,
            },
            delivery_id,
            dedup_key: Some(format!("status:{message_id}:{target}:{status}")),
        })
        .await?;
    info!(%message_id, sender = %Redacted(sender), target = %Redacted(target), %status, %channel, ?enqueued, "status to the sender written");
    Ok(())
}

/// Expire the messages unheard for longer than `[notify] expire_hours` and
/// tell their senders. `now_ms`: the time now. Returns how many expired.
pub(super) async fn expire(
    store: &StoreHandle,
    outbox: &Outbox,
    config: &NotifyConfig,
    now_ms: i64,
) -> Result<usize, ServerError> {
    let before = now_ms - config.expire_after().as_millis() as i64;
    let expired = store.call(move |s| s.expire_unheard(before)).await??;
    for (message_id, sender, target) in &expired {
        info!(%message_id, target = %Redacted(target), "message expired unheard");
        sender_status(
            store,
            outbox,
            config,
            SenderStatus::Expired,
            *message_id,
            sender,
            target,
        )
        .await?;
        heard(store, outbox, config, *message_id, target).await?;
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageState;

    #[tokio::test]
    async fn an_expired_message_is_marked_and_its_sender_texted_once() {
        use crate::store::{NewMessage, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = StoreHandle::spawn(Store::open(dir.path()).unwrap()).unwrap();
        let id = store
            .call(|s| {
                let id = s.create_message(&NewMessage {
                    sender: "1001",
                    group_number: None,
                    audio_format: "sln",
                    sample_rate: 8000,
                    audio_path: "messages/x.sln",
                    targets: vec![("extension", "1002", "123456")],
                })?;
                s.set_message_state(id, MessageState::Complete, Some(1000))?;
                s.set_delivery_state(id, "1002", DeliveryState::Unheard)?;
                Ok::<_, crate::store::StoreError>(id)
            })
            .await
            .unwrap()
            .unwrap();
        let (_reports, report_rx) = report_channel();
        let config = NotifyConfig {
            default_channels: vec![],
            ..NotifyConfig::default()
        };
        let worker = OutboxWorker::new(
            store.clone(),
            Channels::new(),
            config.policy(),
            1,
            report_rx,
        );
        let outbox = worker.outbox(config.deadline());
        let now = crate::store::now_ms();
        let old = NotifyConfig {
            expire_hours: 1,
            ..config.clone()
        };
        assert_eq!(
            expire(&store, &outbox, &old, now).await.unwrap(),
            0,
            "too young"
        );
        let later = now + 3_700_000;
        assert_eq!(expire(&store, &outbox, &old, later).await.unwrap(), 1);
        assert_eq!(
            expire(&store, &outbox, &old, later).await.unwrap(),
            0,
            "once"
        );
        let rows = store
            .call(|s| s.list_messages(None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows[0].delivery_state, Some(DeliveryState::Expired));
        let items = store
            .call(|s| s.outbox_list(None, 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(
            (items[0].channel.as_str(), items[0].recipient.as_str()),
            ("sip_message", "1001")
        );
        assert!(
            items[0]
                .payload_json
                .contains("expired unheard after 1 hours")
        );

        let silent = NotifyConfig {
            sender_status: vec![SenderStatus::HeardLater],
            ..old
        };
        sender_status(
            &store,
            &outbox,
            &silent,
            SenderStatus::Rejected,
            id,
            "1001",
            "1002",
        )
        .await
        .unwrap();
        let items = store
            .call(|s| s.outbox_list(None, 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items.len(), 1, "not configured: not sent");
    }

    #[test]
    fn status_texts_name_the_target_and_the_outcome() {
        assert_eq!(
            status_text(SenderStatus::HeardLater, "1002", 72),
            "Your message to 1002 has now been heard."
        );
        assert!(status_text(SenderStatus::Rejected, "1002", 72).contains("rejected"));
        assert!(status_text(SenderStatus::Expired, "1002", 48).contains("48 hours"));
    }

    #[test]
    fn status_goes_by_sms_only_with_a_mobile_and_a_gateway() {
        let mut config = NotifyConfig::default();
        assert_eq!(status_channel(&config, true), ChannelKind::SipMessage);
        config.smpp = Some(Default::default());
        assert_eq!(status_channel(&config, true), ChannelKind::SmsSmpp);
        assert_eq!(status_channel(&config, false), ChannelKind::SipMessage);
        config.kannel = Some(Default::default());
        assert_eq!(status_channel(&config, true), ChannelKind::SmsKannel);
    }
}
