//! Channels through the switch: text to the desk phone (SIP MESSAGE), the
//! message-waiting lamp, and the smart caller ID missed call. Thin wrappers
//! over [`Switch`]; the adapter knows the PBX's syntax.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::OutboxId;
use crate::switch::{OriginateId, OriginateRequest, Switch, SwitchError};

use super::{
    ChannelKind, Notification, NotificationPayload, NotifyChannel, NotifyError, SendOutcome,
};

/// The originate id of a smart-caller-ID attempt:
/// `notify-<outbox id>-<attempt>-<128 random bits in base 62>`, unique per
/// attempt and unguessable, so that nobody can forge the answered leg of one.
/// It is an opaque token: what it stands for is looked up in [`MissedCalls`].
pub fn missed_call_origin(outbox_id: i64, attempt: u32) -> OriginateId {
    crate::switch::peer::originate_id_with_prefix(&format!("notify-{outbox_id}-{attempt}-"), None)
}

/// The smart-caller-ID calls placed and not yet answered or failed: which
/// outbox item each originate announces. Shared with whoever handles the
/// switch's events, so that an answered one plays its message.
#[derive(Debug, Default)]
pub struct MissedCalls {
    placed: Mutex<HashMap<OriginateId, OutboxId>>,
}

impl MissedCalls {
    /// Placed calls remembered at most; beyond, the table starts afresh
    /// (calls ring for seconds, so only a flood of unanswered ones gets here).
    const MAX: usize = 10_000;

    fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<OriginateId, OutboxId>> {
        self.placed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, origin: OriginateId, item: OutboxId) {
        let mut placed = self.placed();
        if placed.len() >= Self::MAX {
            placed.clear();
        }
        placed.insert(origin, item);
    }

    /// The item `origin` announces, forgotten now (it is answered or failed).
    pub fn take(&self, origin: &OriginateId) -> Option<OutboxId> {
        self.placed().remove(origin)
    }
}

/// Whether a failure left the switch untouched. A refusal (an endpoint not
/// registered, no such mailbox) is worth retrying until the deadline: the
/// phone may register later.
fn classify(error: SwitchError) -> NotifyError {
    match error {
        SwitchError::NotConnected(..) | SwitchError::Io(_) | SwitchError::Refused(_) => {
            NotifyError::Unavailable(error.to_string())
        }
        SwitchError::Timeout
        | SwitchError::Protocol(_)
        | SwitchError::HungUp
        | SwitchError::NoSuchCall(_) => NotifyError::Unknown(error.to_string()),
    }
}

fn wrong_payload(channel: ChannelKind, payload: &NotificationPayload) -> NotifyError {
    let kind = match payload {
        NotificationPayload::Text { .. } => "text",
        NotificationPayload::MessageWaiting { .. } => "message_waiting",
        NotificationPayload::MissedCall { .. } => "missed_call",
    };
    NotifyError::Invalid(format!("{channel} cannot carry a {kind} notification"))
}

/// Text to the desk phone: the recipient is the endpoint (extension).
pub struct SipMessageChannel {
    switch: Arc<dyn Switch>,
}

impl SipMessageChannel {
    pub fn new(switch: Arc<dyn Switch>) -> Self {
        Self { switch }
    }
}

#[async_trait]
impl NotifyChannel for SipMessageChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::SipMessage
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let NotificationPayload::Text { from, body, .. } = &n.payload else {
            return Err(wrong_payload(self.kind(), &n.payload));
        };
        self.switch
            .send_text(&n.recipient, from, body)
            .await
            .map_err(classify)?;
        Ok(SendOutcome {
            note: "accepted by the switch".into(),
            ..SendOutcome::default()
        })
    }
}

/// The message-waiting lamp: the recipient is the mailbox (extension).
pub struct MwiChannel {
    switch: Arc<dyn Switch>,
}

impl MwiChannel {
    pub fn new(switch: Arc<dyn Switch>) -> Self {
        Self { switch }
    }
}

#[async_trait]
impl NotifyChannel for MwiChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Mwi
    }

    /// It sets a state (absolute counts); setting it twice is setting it once.
    fn idempotent(&self) -> bool {
        true
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let NotificationPayload::MessageWaiting {
            new_messages,
            old_messages,
        } = n.payload
        else {
            return Err(wrong_payload(self.kind(), &n.payload));
        };
        self.switch
            .set_message_waiting(&n.recipient, new_messages, old_messages)
            .await
            .map_err(classify)?;
        Ok(SendOutcome {
            note: format!("lamp set: {new_messages} new, {old_messages} old"),
            ..SendOutcome::default()
        })
    }
}

/// The smart caller ID: a short call to the recipient whose caller number is
/// the retrieval number; it rings for `ring_seconds` and ends by itself,
/// leaving a missed-call entry that calls the message back.
pub struct SmartCallerIdChannel {
    switch: Arc<dyn Switch>,
    placed: Arc<MissedCalls>,
}

impl SmartCallerIdChannel {
    /// Each call placed is remembered in `placed` before it rings.
    pub fn new(switch: Arc<dyn Switch>, placed: Arc<MissedCalls>) -> Self {
        Self { switch, placed }
    }
}

#[async_trait]
impl NotifyChannel for SmartCallerIdChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::SmartCallerId
    }

    async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
        let NotificationPayload::MissedCall {
            caller_number,
            caller_name,
            ring_seconds,
        } = &n.payload
        else {
            return Err(wrong_payload(self.kind(), &n.payload));
        };
        let id = missed_call_origin(n.outbox_id, n.attempt);
        self.placed.insert(id.clone(), OutboxId(n.outbox_id));
        self.switch
            .originate(OriginateRequest {
                id: id.clone(),
                target: n.recipient.clone(),
                caller_id_name: caller_name.clone(),
                caller_id_number: caller_number.clone(),
                ring_timeout: Duration::from_secs((*ring_seconds).into()),
            })
            .await
            .map_err(classify)?;
        Ok(SendOutcome {
            gateway_id: Some(id.0),
            report_expected: false,
            note: "call placed".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::switch::{
        CallId, DeviceState, HangupCause, PlayRequest, RecordRequest, SwitchEvent,
    };

    /// Records what the channels ask of the switch; fails on demand.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        fail_with: Mutex<Option<SwitchError>>,
    }

    impl Recorder {
        fn log(&self, line: String) -> Result<(), SwitchError> {
            if let Some(e) = self.fail_with.lock().unwrap().take() {
                return Err(e);
            }
            self.calls.lock().unwrap().push(line);
            Ok(())
        }
    }

    #[async_trait]
    impl Switch for Recorder {
        async fn answer(&self, _: &CallId) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn play(&self, _: &CallId, _: PlayRequest) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn start_recording(&self, _: &CallId, _: RecordRequest) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn stop_recording(&self, _: &CallId) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn originate(&self, r: OriginateRequest) -> Result<(), SwitchError> {
            self.log(format!(
                "originate {} to {} from {} <{}> ring {:?}",
                r.id.0, r.target, r.caller_id_name, r.caller_id_number, r.ring_timeout
            ))
        }
        async fn bridge(&self, _: &CallId, _: &CallId) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn hangup(&self, _: &CallId, _: HangupCause) -> Result<(), SwitchError> {
            unimplemented!()
        }
        async fn send_text(
            &self,
            endpoint: &str,
            from: &str,
            body: &str,
        ) -> Result<(), SwitchError> {
            self.log(format!("text to {endpoint} from {from}: {body}"))
        }
        async fn set_message_waiting(
            &self,
            mailbox: &str,
            new: u32,
            old: u32,
        ) -> Result<(), SwitchError> {
            self.log(format!("mwi {mailbox} {new}/{old}"))
        }
        async fn device_state(&self, _: &str) -> Result<DeviceState, SwitchError> {
            unimplemented!()
        }
        async fn connect(&self, _: &CallId, _: &str) -> Result<(), SwitchError> {
            Ok(())
        }

        fn capture_format(&self) -> (crate::media::AudioFormat, &'static str) {
            (crate::media::AudioFormat::Slin { sample_rate: 8000 }, "sln")
        }

        fn events(&self) -> mpsc::UnboundedReceiver<SwitchEvent> {
            mpsc::unbounded_channel().1
        }
    }

    fn note(channel: ChannelKind, payload: NotificationPayload) -> Notification {
        Notification {
            outbox_id: 7,
            attempt: 2,
            channel,
            recipient: "1002".into(),
            payload,
        }
    }

    #[tokio::test]
    async fn each_channel_asks_the_switch_once() {
        let switch = Arc::new(Recorder::default());
        let text = note(
            ChannelKind::SipMessage,
            NotificationPayload::Text {
                from: "1001".into(),
                body: "Dial *55123456".into(),
                message: None,
            },
        );
        SipMessageChannel::new(switch.clone())
            .send(&text)
            .await
            .unwrap();
        let mwi = note(
            ChannelKind::Mwi,
            NotificationPayload::MessageWaiting {
                new_messages: 1,
                old_messages: 3,
            },
        );
        MwiChannel::new(switch.clone()).send(&mwi).await.unwrap();
        let call = note(
            ChannelKind::SmartCallerId,
            NotificationPayload::MissedCall {
                caller_number: "*551234561".into(),
                caller_name: "Alice".into(),
                ring_seconds: 8,
            },
        );
        let placed = Arc::new(MissedCalls::default());
        let out = SmartCallerIdChannel::new(switch.clone(), placed.clone())
            .send(&call)
            .await
            .unwrap();
        // The id names the outbox item and attempt, then 128 random bits.
        let id = out.gateway_id.unwrap();
        assert!(id.starts_with("notify-7-2-") && id.len() == 11 + 22, "{id}");
        let origin = OriginateId(id.clone());
        assert_eq!(placed.take(&origin), Some(OutboxId(7)));
        assert_eq!(placed.take(&origin), None, "answered once");
        assert_eq!(
            *switch.calls.lock().unwrap(),
            [
                "text to 1002 from 1001: Dial *55123456".to_owned(),
                "mwi 1002 1/3".to_owned(),
                format!("originate {id} to 1002 from Alice <*551234561> ring 8s"),
            ]
        );
    }

    #[tokio::test]
    async fn failures_are_classified_and_payloads_checked() {
        let switch = Arc::new(Recorder::default());
        let mwi = MwiChannel::new(switch.clone());
        assert!(mwi.idempotent());
        *switch.fail_with.lock().unwrap() =
            Some(SwitchError::NotConnected("ami".into(), "refused".into()));
        let n = note(
            ChannelKind::Mwi,
            NotificationPayload::MessageWaiting {
                new_messages: 1,
                old_messages: 0,
            },
        );
        assert!(matches!(
            mwi.send(&n).await,
            Err(NotifyError::Unavailable(_))
        ));
        *switch.fail_with.lock().unwrap() = Some(SwitchError::Timeout);
        assert!(matches!(mwi.send(&n).await, Err(NotifyError::Unknown(_))));
        let wrong = note(
            ChannelKind::SipMessage,
            NotificationPayload::MessageWaiting {
                new_messages: 1,
                old_messages: 0,
            },
        );
        assert!(matches!(
            SipMessageChannel::new(switch.clone()).send(&wrong).await,
            Err(NotifyError::Invalid(_))
        ));
        assert!(switch.calls.lock().unwrap().is_empty());
    }
}
