//! The outbox worker: claims due items, sends them through their channels,
//! settles each attempt with [`OutboxPolicy`], and applies delivery reports.
//! All SQLite work goes through [`StoreHandle`]; this is the only part of
//! `notify` that reads the clock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::store::outbox::{
    AttemptRecord, Enqueued, NewOutboxItem, OutboxItem, ReportApplied, ReportRecord,
};
use crate::store::{StoreError, StoreHandle, now_ms};

use super::redact::Redacted;
use super::{
    ChannelKind, DeliveryReport, Notification, NotificationPayload, NotifyChannel, NotifyError,
    OutboxPolicy, ReportStatus, SendOutcome, Transition,
};

/// Where channels deliver the reports gateways send later.
pub type ReportSender = mpsc::UnboundedSender<DeliveryReport>;
pub type ReportReceiver = mpsc::UnboundedReceiver<DeliveryReport>;

/// A report that arrived before the attempt it settles was recorded is kept
/// this long and tried again after each recorded attempt.
const UNMATCHED_REPORT_TTL: Duration = Duration::from_secs(60);
const MAX_UNMATCHED_REPORTS: usize = 10_000;
/// Even with nothing due the worker looks again this often (items enqueued
/// by another process, a clock step).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// The configured channels, by kind.
#[derive(Clone, Default)]
pub struct Channels {
    by_kind: HashMap<ChannelKind, Arc<dyn NotifyChannel>>,
}

impl Channels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) the channel for its kind.
    pub fn with(mut self, channel: Arc<dyn NotifyChannel>) -> Self {
        self.by_kind.insert(channel.kind(), channel);
        self
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<dyn NotifyChannel>> {
        self.by_kind.get(&kind)
    }

    pub fn kinds(&self) -> Vec<ChannelKind> {
        let mut kinds: Vec<_> = self.by_kind.keys().copied().collect();
        kinds.sort();
        kinds
    }
}

/// A notification to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub channel: ChannelKind,
    pub recipient: String,
    pub payload: NotificationPayload,
    pub delivery_id: Option<i64>,
    /// The same key twice enqueues once (e.g. `msg:42:1002:sms_kannel`).
    pub dedup_key: Option<String>,
}

/// The handle the rest of `ivm` enqueues through. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: StoreHandle,
    wake: Arc<Notify>,
    deadline: Duration,
}

impl Outbox {
    /// Write the notification (durably) and wake the worker. Returns once
    /// it is in the database; sending happens later.
    pub async fn enqueue(&self, notification: NewNotification) -> Result<Enqueued, StoreError> {
        let payload =
            serde_json::to_string(&notification.payload).map_err(|e| StoreError::Invalid {
                field: "payload",
                reason: e.to_string(),
            })?;
        let deadline = self.deadline;
        let enqueued = self
            .store
            .call(move |s| {
                let now = now_ms();
                let deadline_ms =
                    now.saturating_add(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX));
                s.outbox_enqueue(
                    &NewOutboxItem {
                        delivery_id: notification.delivery_id,
                        channel: notification.channel.as_str(),
                        recipient: &notification.recipient,
                        payload_json: &payload,
                        dedup_key: notification.dedup_key.as_deref(),
                        not_before_ms: now,
                        deadline_ms,
                        // Only the newest lamp state matters.
                        supersede_pending: matches!(
                            notification.payload,
                            NotificationPayload::MessageWaiting { .. }
                        ),
                    },
                    now,
                )
            })
            .await??;
        self.wake.notify_one();
        Ok(enqueued)
    }
}

struct InFlight {
    id: i64,
    attempt: u32,
    deadline_ms: i64,
    idempotent: bool,
}

/// Drives the outbox. Build it with the channels, take an [`Outbox`] handle
/// for enqueueing, then `run` it until shutdown.
pub struct OutboxWorker {
    store: StoreHandle,
    channels: Channels,
    policy: OutboxPolicy,
    max_in_flight: usize,
    wake: Arc<Notify>,
    reports: ReportReceiver,
    unmatched: Vec<(DeliveryReport, Instant)>,
}

/// A pair: channels get the sender, the worker the receiver.
pub fn report_channel() -> (ReportSender, ReportReceiver) {
    mpsc::unbounded_channel()
}

impl OutboxWorker {
    pub fn new(
        store: StoreHandle,
        channels: Channels,
        policy: OutboxPolicy,
        max_in_flight: usize,
        reports: ReportReceiver,
    ) -> Self {
        Self {
            store,
            channels,
            policy,
            max_in_flight: max_in_flight.max(1),
            wake: Arc::new(Notify::new()),
            reports,
            unmatched: Vec::new(),
        }
    }

    /// A handle that enqueues into this worker's outbox; items expire after
    /// `deadline`.
    pub fn outbox(&self, deadline: Duration) -> Outbox {
        Outbox {
            store: self.store.clone(),
            wake: self.wake.clone(),
            deadline,
        }
    }

    /// Run until `shutdown` resolves; then finish the sends in flight and
    /// record their outcomes before returning. Errors only when the store
    /// has gone away.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StoreError> {
        self.recover_interrupted().await?;
        let mut sends: JoinSet<Result<SendOutcome, NotifyError>> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, InFlight> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            let free = self.max_in_flight.saturating_sub(in_flight.len());
            if free > 0 {
                for item in self.claim(free).await? {
                    self.start(item, &mut sends, &mut in_flight).await?;
                }
            }
            let idle = if in_flight.len() >= self.max_in_flight {
                MAX_IDLE
            } else {
                self.time_to_next_due().await?
            };
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = sends.join_next_with_id(), if !sends.is_empty() => {
                    self.finish(done, &mut in_flight).await?;
                }
                Some(report) = self.reports.recv() => self.apply_report(report).await?,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(idle) => {}
            }
        }
        // What was queued before the stop (the last calls' notifications)
        // is due now: start it too, then wait for every send.
        let free = self.max_in_flight.saturating_sub(in_flight.len());
        if free > 0 {
            for item in self.claim(free).await? {
                self.start(item, &mut sends, &mut in_flight).await?;
            }
        }
        while let Some(done) = sends.join_next_with_id().await {
            self.finish(done, &mut in_flight).await?;
        }
        while let Ok(report) = self.reports.try_recv() {
            self.apply_report(report).await?;
        }
        Ok(())
    }

    /// Attempts that were on the wire when `ivm` last stopped.
    async fn recover_interrupted(&mut self) -> Result<(), StoreError> {
        let items = self.store.call(|s| s.outbox_in_flight()).await??;
        for item in items {
            let now = now_ms();
            let idempotent = ChannelKind::ALL
                .into_iter()
                .find(|k| k.as_str() == item.channel)
                .and_then(|k| self.channels.get(k))
                .is_some_and(|c| c.idempotent());
            let transition =
                self.policy
                    .after_restart(item.attempts, item.deadline_at_ms, now, idempotent);
            warn!(
                id = item.id,
                channel = %item.channel,
                recipient = %Redacted(&item.recipient),
                attempt = item.attempts,
                next = ?transition_name(&transition),
                "notification attempt was interrupted by a restart"
            );
            self.record(item.id, item.attempts, transition.into_record(), now)
                .await?;
        }
        Ok(())
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.store
            .call(move |s| {
                let now = now_ms();
                let expired = s.outbox_expire(now)?;
                if expired > 0 {
                    warn!(count = expired, "notifications expired unsent");
                }
                s.outbox_claim_due(now, limit)
            })
            .await?
    }

    async fn time_to_next_due(&self) -> Result<Duration, StoreError> {
        let next = self.store.call(|s| s.outbox_next_due()).await??;
        Ok(match next {
            None => MAX_IDLE,
            Some(at) => {
                let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(wait).min(MAX_IDLE)
            }
        })
    }

    /// Start one claimed attempt, or settle it at once if it cannot be sent.
    async fn start(
        &mut self,
        item: OutboxItem,
        sends: &mut JoinSet<Result<SendOutcome, NotifyError>>,
        in_flight: &mut HashMap<tokio::task::Id, InFlight>,
    ) -> Result<(), StoreError> {
        let channel = ChannelKind::ALL
            .into_iter()
            .find(|k| k.as_str() == item.channel)
            .and_then(|k| self.channels.get(k))
            .cloned();
        let Some(channel) = channel else {
            let reason = format!("channel {} is not configured", item.channel);
            return self.settle_unsendable(&item, reason).await;
        };
        let payload = match serde_json::from_str::<NotificationPayload>(&item.payload_json) {
            Ok(payload) => payload,
            Err(e) => {
                let reason = format!("unreadable payload: {e}");
                return self.settle_unsendable(&item, reason).await;
            }
        };
        let kind = channel.kind();
        let notification = Notification {
            outbox_id: item.id,
            attempt: item.attempts,
            channel: kind,
            recipient: item.recipient,
            payload,
        };
        debug!(id = item.id, channel = %kind, recipient = %notification.recipient, attempt = item.attempts, "sending notification");
        let idempotent = channel.idempotent();
        let handle = sends.spawn(async move { channel.send(&notification).await });
        in_flight.insert(
            handle.id(),
            InFlight {
                id: item.id,
                attempt: item.attempts,
                deadline_ms: item.deadline_at_ms,
                idempotent,
            },
        );
        Ok(())
    }

    async fn settle_unsendable(&self, item: &OutboxItem, reason: String) -> Result<(), StoreError> {
        warn!(id = item.id, channel = %item.channel, recipient = %Redacted(&item.recipient), %reason, "notification cannot be sent");
        self.record(
            item.id,
            item.attempts,
            AttemptRecord::Failed { reason },
            now_ms(),
        )
        .await
    }

    async fn finish(
        &mut self,
        done: Result<(tokio::task::Id, Result<SendOutcome, NotifyError>), tokio::task::JoinError>,
        in_flight: &mut HashMap<tokio::task::Id, InFlight>,
    ) -> Result<(), StoreError> {
        let (task, result) = match done {
            Ok((task, result)) => (task, result),
            // A channel that panics is a bug; its attempt's outcome is unknown.
            Err(e) => (
                e.id(),
                Err(NotifyError::Unknown(format!("channel task failed: {e}"))),
            ),
        };
        let Some(sent) = in_flight.remove(&task) else {
            return Ok(());
        };
        let now = now_ms();
        let transition = self.policy.after_attempt(
            sent.attempt,
            sent.deadline_ms,
            now,
            &result,
            sent.idempotent,
        );
        match &transition {
            Transition::Sent(outcome) => {
                info!(id = sent.id, attempt = sent.attempt, gateway_id = ?outcome.gateway_id, "notification sent")
            }
            Transition::Retry { at_ms, reason } => {
                warn!(id = sent.id, attempt = sent.attempt, retry_in_ms = at_ms - now, %reason, "notification not sent; will retry")
            }
            Transition::Failed { reason } => {
                warn!(id = sent.id, attempt = sent.attempt, %reason, "notification failed")
            }
        }
        self.record(sent.id, sent.attempt, transition.into_record(), now)
            .await?;
        self.retry_unmatched().await
    }

    async fn record(
        &self,
        id: i64,
        attempt: u32,
        record: AttemptRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let applied = self
            .store
            .call(move |s| s.outbox_record_attempt(id, attempt, &record, now))
            .await??;
        if !applied {
            debug!(
                id,
                attempt, "attempt already settled (by a delivery report)"
            );
        }
        Ok(())
    }

    async fn apply_report(&mut self, report: DeliveryReport) -> Result<(), StoreError> {
        if !self.try_report(&report).await? {
            if self.unmatched.len() >= MAX_UNMATCHED_REPORTS {
                self.unmatched.remove(0);
            }
            self.unmatched.push((report, Instant::now()));
        }
        Ok(())
    }

    /// Whether the report found its item (or needs none).
    async fn try_report(&self, report: &DeliveryReport) -> Result<bool, StoreError> {
        let record = match &report.status {
            ReportStatus::Intermediate(note) => {
                debug!(key = ?report.key, %note, "intermediate delivery report");
                return Ok(true);
            }
            ReportStatus::Delivered(note) => ReportRecord::Delivered { note: note.clone() },
            ReportStatus::Failed(reason) => ReportRecord::Failed {
                reason: reason.clone(),
            },
        };
        let key = report.key.clone();
        let applied = self
            .store
            .call(move |s| s.outbox_record_report(&key, &record, now_ms()))
            .await??;
        match applied {
            ReportApplied::Applied { id } => {
                info!(id, status = ?report.status, "delivery report recorded");
                Ok(true)
            }
            ReportApplied::AlreadySettled { id } => {
                debug!(id, status = ?report.status, "delivery report for a settled item");
                Ok(true)
            }
            ReportApplied::NoMatch => Ok(false),
        }
    }

    async fn retry_unmatched(&mut self) -> Result<(), StoreError> {
        let waiting = std::mem::take(&mut self.unmatched);
        for (report, since) in waiting {
            if self.try_report(&report).await? {
                continue;
            }
            if since.elapsed() < UNMATCHED_REPORT_TTL {
                self.unmatched.push((report, since));
            } else {
                warn!(key = ?report.key, "delivery report matched no notification; dropped");
            }
        }
        Ok(())
    }
}

fn transition_name(t: &Transition) -> &'static str {
    match t {
        Transition::Sent(_) => "sent",
        Transition::Retry { .. } => "retry",
        Transition::Failed { .. } => "failed",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::store::Store;
    use crate::store::outbox::{OutboxState, ReportKey};

    /// A channel that answers from a script and records what it was given.
    struct Scripted {
        kind: ChannelKind,
        idempotent: bool,
        results: Mutex<VecDeque<Result<SendOutcome, NotifyError>>>,
        seen: Mutex<Vec<Notification>>,
        /// Sends a "delivered" report before answering, like a fast gateway,
        /// and holds its answer until the worker has applied that report (in
        /// this store), so the report really overtakes the send result.
        report_first: Option<(ReportSender, StoreHandle)>,
        /// Holds each send until notified.
        gate: Option<Arc<Notify>>,
    }

    impl Scripted {
        fn new(kind: ChannelKind, results: Vec<Result<SendOutcome, NotifyError>>) -> Self {
            Self {
                kind,
                idempotent: false,
                results: Mutex::new(results.into()),
                seen: Mutex::new(Vec::new()),
                report_first: None,
                gate: None,
            }
        }

        fn sends(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    #[async_trait]
    impl NotifyChannel for Scripted {
        fn kind(&self) -> ChannelKind {
            self.kind
        }
        fn idempotent(&self) -> bool {
            self.idempotent
        }
        async fn send(&self, n: &Notification) -> Result<SendOutcome, NotifyError> {
            self.seen.lock().unwrap().push(n.clone());
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            if let Some((reports, store)) = &self.report_first {
                reports
                    .send(DeliveryReport {
                        key: n.report_key(),
                        status: ReportStatus::Delivered("DELIVRD".into()),
                    })
                    .unwrap();
                wait_for_state(store, n.outbox_id, OutboxState::Delivered).await;
            }
            self.results
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(SendOutcome::default()))
        }
    }

    fn accepted() -> Result<SendOutcome, NotifyError> {
        Ok(SendOutcome {
            gateway_id: Some("g1".into()),
            report_expected: true,
            note: "0: Accepted for delivery".into(),
        })
    }

    fn sms() -> NewNotification {
        NewNotification {
            channel: ChannelKind::SmsKannel,
            recipient: "+4915550001".into(),
            payload: NotificationPayload::Text {
                from: "1001".into(),
                body: "Dial *55123456".into(),
                message: None,
            },
            delivery_id: None,
            dedup_key: None,
        }
    }

    fn fast() -> OutboxPolicy {
        OutboxPolicy {
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_millis(40),
        }
    }

    struct Running {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), StoreError>>,
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            self.task.await.unwrap().unwrap();
        }
    }

    fn start(
        store: &StoreHandle,
        channel: Arc<dyn NotifyChannel>,
        reports: ReportReceiver,
    ) -> (Outbox, Running) {
        let worker = OutboxWorker::new(
            store.clone(),
            Channels::new().with(channel),
            fast(),
            4,
            reports,
        );
        let outbox = worker.outbox(Duration::from_secs(60));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        (outbox, Running { stop, task })
    }

    async fn wait_for_state(store: &StoreHandle, id: i64, state: OutboxState) -> OutboxItem {
        wait_for(store, id, |item| item.state == state).await
    }

    /// Polls the item until `done` holds (observable effects, no fixed sleep).
    async fn wait_for(
        store: &StoreHandle,
        id: i64,
        done: impl Fn(&OutboxItem) -> bool,
    ) -> OutboxItem {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let item = store
                .call(move |s| s.outbox_item(id))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if done(&item) {
                return item;
            }
            assert!(
                Instant::now() < deadline,
                "item stuck in {:?}: {item:?}",
                item.state
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn store() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreHandle::spawn(Store::open(dir.path()).unwrap()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_outage_is_retried_until_the_gateway_takes_it() {
        let (_dir, store) = store();
        let channel = Arc::new(Scripted::new(
            ChannelKind::SmsKannel,
            vec![
                Err(NotifyError::Unavailable("connection refused".into())),
                Err(NotifyError::Unavailable("connection refused".into())),
                accepted(),
            ],
        ));
        let (_reports, rx) = report_channel();
        let (outbox, running) = start(&store, channel.clone(), rx);
        let id = outbox.enqueue(sms()).await.unwrap().id;
        let item = wait_for_state(&store, id, OutboxState::Sent).await;
        assert_eq!(item.attempts, 3);
        assert_eq!(channel.sends(), 3);
        assert_eq!(item.gateway_id.as_deref(), Some("g1"));
        running.stop().await;
        assert_eq!(channel.sends(), 3, "nothing more after the gateway took it");
    }

    #[tokio::test]
    async fn a_report_that_overtakes_the_send_result_still_counts() {
        let (_dir, store) = store();
        let (reports, rx) = report_channel();
        let mut channel = Scripted::new(ChannelKind::SmsKannel, vec![accepted()]);
        channel.report_first = Some((reports, store.clone()));
        let (outbox, running) = start(&store, Arc::new(channel), rx);
        let id = outbox.enqueue(sms()).await.unwrap().id;
        // The report settles the state first (the channel holds its answer
        // until it has); the send result that follows still records the
        // gateway id, and must not undo "delivered".
        let item = wait_for(&store, id, |item| item.gateway_id.is_some()).await;
        assert_eq!(item.gateway_id.as_deref(), Some("g1"));
        assert_eq!(item.state, OutboxState::Delivered);
        running.stop().await;
    }

    #[tokio::test]
    async fn a_late_report_for_an_unknown_attempt_waits_for_it() {
        let (_dir, store) = store();
        let (reports, rx) = report_channel();
        let channel = Arc::new(Scripted::new(ChannelKind::SmsSmpp, vec![accepted()]));
        // The receipt names the gateway id before any attempt has it.
        reports
            .send(DeliveryReport {
                key: ReportKey::Gateway {
                    channel: "sms_smpp".into(),
                    gateway_id: "g1".into(),
                },
                status: ReportStatus::Failed("stat:UNDELIV err:001".into()),
            })
            .unwrap();
        let (outbox, running) = start(&store, channel, rx);
        let mut n = sms();
        n.channel = ChannelKind::SmsSmpp;
        let id = outbox.enqueue(n).await.unwrap().id;
        let item = wait_for_state(&store, id, OutboxState::Failed).await;
        assert_eq!(item.outcome.as_deref(), Some("stat:UNDELIV err:001"));
        running.stop().await;
    }

    #[tokio::test]
    async fn an_attempt_cut_off_by_a_restart() {
        let (_dir, store) = store();
        // Two items claimed (on the wire) when the previous ivm stopped.
        let ids: Vec<i64> = store
            .call(|s| {
                let mut ids = Vec::new();
                for channel in ["webhook", "sms_kannel"] {
                    let item = NewOutboxItem {
                        delivery_id: None,
                        channel,
                        recipient: "+4915550001",
                        payload_json: r#"{"kind":"text","from":"1001","body":"hi"}"#,
                        dedup_key: None,
                        not_before_ms: 0,
                        deadline_ms: now_ms() + 60_000,
                        supersede_pending: false,
                    };
                    ids.push(s.outbox_enqueue(&item, 0).unwrap().id);
                }
                s.outbox_claim_due(now_ms(), 10).unwrap();
                ids
            })
            .await
            .unwrap();
        let mut webhook = Scripted::new(ChannelKind::Webhook, vec![accepted()]);
        webhook.idempotent = true;
        let webhook = Arc::new(webhook);
        let sms = Arc::new(Scripted::new(ChannelKind::SmsKannel, vec![]));
        let (_reports, rx) = report_channel();
        let worker = OutboxWorker::new(
            store.clone(),
            Channels::new().with(webhook.clone()).with(sms.clone()),
            fast(),
            4,
            rx,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        let resent = wait_for_state(&store, ids[0], OutboxState::Sent).await;
        assert_eq!(resent.attempts, 2, "the idempotent webhook is sent again");
        let given_up = wait_for_state(&store, ids[1], OutboxState::Failed).await;
        assert!(
            given_up
                .outcome
                .unwrap()
                .contains("interrupted by a restart"),
            "the SMS is not sent a second time"
        );
        assert_eq!(sms.sends(), 0);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_sends_in_flight() {
        let (_dir, store) = store();
        let gate = Arc::new(Notify::new());
        let mut channel = Scripted::new(ChannelKind::SmsKannel, vec![accepted()]);
        channel.gate = Some(gate.clone());
        let channel = Arc::new(channel);
        let (_reports, rx) = report_channel();
        let (outbox, running) = start(&store, channel.clone(), rx);
        let id = outbox.enqueue(sms()).await.unwrap().id;
        wait_for_state(&store, id, OutboxState::Sending).await;
        while channel.sends() == 0 {
            tokio::task::yield_now().await;
        }
        let Running { stop, task } = running;
        stop.send(()).unwrap();
        gate.notify_one();
        task.await.unwrap().unwrap();
        let item = store
            .call(move |s| s.outbox_item(id))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            item.state,
            OutboxState::Sent,
            "recorded before run returned"
        );
    }

    /// Phone numbers stay out of logs above debug level.
    #[test]
    fn logs_above_debug_carry_no_phone_number() {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_dir, store) = store();
            let channel = Arc::new(Scripted::new(
                ChannelKind::SmsKannel,
                vec![
                    Err(NotifyError::Unavailable("connection refused".into())),
                    accepted(),
                ],
            ));
            let (_reports, rx) = report_channel();
            let (outbox, running) = start(&store, channel, rx);
            let id = outbox.enqueue(sms()).await.unwrap().id;
            wait_for_state(&store, id, OutboxState::Sent).await;
            running.stop().await;
            // An attempt interrupted by a restart is logged with its recipient.
            let id = outbox.enqueue(sms()).await.unwrap().id;
            store
                .call(|s| s.outbox_claim_due(now_ms(), 10))
                .await
                .unwrap()
                .unwrap();
            let channel = Arc::new(Scripted::new(ChannelKind::SmsKannel, vec![]));
            let (_reports, rx) = report_channel();
            let (_outbox, running) = start(&store, channel, rx);
            wait_for_state(&store, id, OutboxState::Failed).await;
            running.stop().await;
        });
        let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("notification sent"), "{logs}");
        assert!(logs.contains("***01"), "{logs}");
        assert!(!logs.contains("5550001"), "{logs}");
        assert!(!logs.contains("55123456"), "the body holds numbers: {logs}");
    }
}
