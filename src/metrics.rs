//! Prometheus metrics (prometheus-client) and what the running server knows
//! live: each switch's connection and the device states it reported.
//!
//! Histograms are observed where the server acts ([`CallTimes`] in the
//! flow driver); counts (sessions, outbox, presence) are read from the store
//! and the live state when `/metrics` is scraped, so they cannot drift.
//! Owns: metric names and buckets. Must not know: HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::{Media, PlayRequest};
use crate::engine::{Action, Input};
use crate::store::api::Counts;
use crate::switch::{DeviceState, Switch, SwitchEvent};

type Labels = Vec<(String, String)>;

/// Seconds buckets from 5 ms to about 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    /// Call reaching ivm → the beep's play command done.
    pub beep_seconds: Histogram,
    /// The target answering → the first play of the message to it.
    pub first_audio_seconds: Histogram,
    sessions: Family<Labels, Gauge>,
    notifications: Family<Labels, Gauge>,
    outbox_depth: Gauge,
    switch_connected: Family<Labels, Gauge>,
    presence: Family<Labels, Gauge>,
    live: Live,
}

/// What the server knows that the store does not: connections and device
/// states as the switches report them.
#[derive(Clone, Default)]
pub struct Live {
    inner: Arc<Mutex<LiveInner>>,
}

#[derive(Default)]
struct LiveInner {
    /// Switch name → connected.
    switches: BTreeMap<String, bool>,
    /// Endpoint → device state.
    devices: BTreeMap<String, DeviceState>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each switch and whether its control connection is up.
    pub fn switches(&self) -> Vec<(String, bool)> {
        self.lock()
            .switches
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Device states the switches reported, by endpoint.
    pub fn devices(&self) -> Vec<(String, DeviceState)> {
        self.lock()
            .devices
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// True when at least one switch is known and all are connected.
    pub fn all_connected(&self) -> bool {
        let inner = self.lock();
        !inner.switches.is_empty() && inner.switches.values().all(|c| *c)
    }

    pub fn set_connected(&self, switch: &str, connected: bool) {
        self.lock().switches.insert(switch.to_owned(), connected);
    }

    pub fn set_device(&self, endpoint: &str, state: DeviceState) {
        self.lock().devices.insert(endpoint.to_owned(), state);
    }
}

pub fn device_state_name(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Unknown => "unknown",
        DeviceState::Idle => "idle",
        DeviceState::InUse => "in_use",
        DeviceState::Busy => "busy",
        DeviceState::Ringing => "ringing",
        DeviceState::OnHold => "on_hold",
        DeviceState::Unavailable => "unavailable",
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ivm");
        let beep_seconds = Histogram::new(latency_buckets());
        let first_audio_seconds = Histogram::new(latency_buckets());
        let sessions = Family::<Labels, Gauge>::default();
        let notifications = Family::<Labels, Gauge>::default();
        let outbox_depth = Gauge::default();
        let switch_connected = Family::<Labels, Gauge>::default();
        let presence = Family::<Labels, Gauge>::default();
        registry.register(
            "beep_seconds",
            "Call reaching ivm to the beep's play command done",
            beep_seconds.clone(),
        );
        registry.register(
            "first_audio_seconds",
            "Target answering to the first play of the message to it",
            first_audio_seconds.clone(),
        );
        registry.register(
            "sessions",
            "Live sessions by state: messages recording, deliveries pending, ringing, listening",
            sessions.clone(),
        );
        registry.register(
            "notifications",
            "Outbox items by channel and state (pending, sending, sent, delivered, failed)",
            notifications.clone(),
        );
        registry.register(
            "outbox_depth",
            "Outbox items not finished (pending or sending)",
            outbox_depth.clone(),
        );
        registry.register(
            "switch_connected",
            "1 when the control connection to the switch is up",
            switch_connected.clone(),
        );
        registry.register(
            "presence",
            "Endpoints by the device state the switch last reported",
            presence.clone(),
        );
        Self {
            registry,
            beep_seconds,
            first_audio_seconds,
            sessions,
            notifications,
            outbox_depth,
            switch_connected,
            presence,
            live: Live::default(),
        }
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The text exposition, with the counts read from the store just now.
    pub fn render(&self, counts: &Counts) -> String {
        let label = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        self.sessions.clear();
        self.sessions
            .get_or_create(&label(&[("state", "recording")]))
            .set(counts.recording);
        for state in ["pending", "ringing", "listening"] {
            let n = counts
                .deliveries_open
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.sessions
                .get_or_create(&label(&[("state", state)]))
                .set(n);
        }
        self.notifications.clear();
        let mut depth = 0;
        for (channel, state, n) in &counts.outbox {
            self.notifications
                .get_or_create(&label(&[("channel", channel), ("state", state)]))
                .set(*n);
            if state == "pending" || state == "sending" {
                depth += n;
            }
        }
        self.outbox_depth.set(depth);
        self.switch_connected.clear();
        for (switch, up) in self.live.switches() {
            self.switch_connected
                .get_or_create(&label(&[("switch", &switch)]))
                .set(i64::from(up));
        }
        self.presence.clear();
        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, state) in self.live.devices() {
            *by_state.entry(device_state_name(state)).or_default() += 1;
        }
        for (state, n) in by_state {
            self.presence
                .get_or_create(&label(&[("state", state)]))
                .set(n);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Follow a switch's connection and device states until its events end:
/// not connected until `first_connection` says so, then as its
/// `Disconnected`/`Reconnected` events say (subscribed before anything else,
/// so none is missed).
pub fn watch_switch(
    name: &str,
    switch: &Arc<dyn Switch>,
    first_connection: impl std::future::Future<Output = bool> + Send + 'static,
) {
    let live = global().live().clone();
    let name = name.to_owned();
    live.set_connected(&name, false);
    let mut events = switch.events();
    let (first_live, first_name) = (live.clone(), name.clone());
    tokio::spawn(async move {
        if first_connection.await {
            first_live.set_connected(&first_name, true);
        }
    });
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                SwitchEvent::Disconnected => live.set_connected(&name, false),
                SwitchEvent::Reconnected => live.set_connected(&name, true),
                SwitchEvent::DeviceStateChanged { endpoint, state } => {
                    live.set_device(&endpoint, state)
                }
                _ => {}
            }
        }
    });
}

/// What the flow driver is about to do, for [`CallTimes::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Beep,
}

/// The times of one call the flow driver carries out: when it reached ivm,
/// when the target answered, whether the beep and first audio were timed.
pub struct CallTimes {
    arrived: Instant,
    answered: Option<Instant>,
    beeped: bool,
    first_audio: bool,
}

impl CallTimes {
    pub fn start() -> Self {
        Self {
            arrived: Instant::now(),
            answered: None,
            beeped: false,
            first_audio: false,
        }
    }

    /// Before an action is carried out. The first play of the message after
    /// the target answered (or, in stream mode, the start of its stream) is
    /// timed when it is sent.
    pub fn before(&mut self, action: &Action) -> Option<Timing> {
        if matches!(action, Action::StreamListener { .. }) {
            self.first_audio_sent();
            return None;
        }
        let Action::Play { request, .. } = action else {
            return None;
        };
        match request {
            PlayRequest {
                media: Media::Sound(name),
                ..
            } if name == crate::engine::sounds::BEEP && !self.beeped => {
                self.beeped = true;
                Some(Timing::Beep)
            }
            PlayRequest {
                media: Media::File { .. },
                ..
            } => {
                self.first_audio_sent();
                None
            }
            _ => None,
        }
    }

    /// The message's first audio to the target who answered is on its way.
    fn first_audio_sent(&mut self) {
        if let Some(answered) = self.answered
            && !self.first_audio
        {
            self.first_audio = true;
            global()
                .first_audio_seconds
                .observe(answered.elapsed().as_secs_f64());
        }
    }

    /// After the action `before` looked at was carried out.
    pub fn done(&mut self, timing: Option<Timing>) {
        if timing == Some(Timing::Beep) {
            global()
                .beep_seconds
                .observe(self.arrived.elapsed().as_secs_f64());
        }
    }

    /// An input the flow is given.
    pub fn observe(&mut self, input: &Input) {
        if matches!(input, Input::Answered { .. }) && self.answered.is_none() {
            self.answered = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CallId, OriginateId};
    use crate::media::AudioFormat;

    fn count(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn play(media: Media) -> Action {
        Action::Play {
            call: CallId("c".into()),
            request: PlayRequest {
                media,
                from_sample: 0,
                interrupt_digits: String::new(),
            },
        }
    }

    #[test]
    fn the_beep_once_and_first_audio_only_after_an_answer() {
        let before = global().render(&Counts::default());
        let mut times = CallTimes::start();
        let file = || Media::File {
            path: "m.sln".into(),
            format: AudioFormat::Slin { sample_rate: 8000 },
        };
        // A file played before any answer is not first audio.
        assert_eq!(times.before(&play(file())), None);
        let beep = times.before(&play(Media::Sound("beep".into())));
        assert_eq!(beep, Some(Timing::Beep));
        times.done(beep);
        let again = times.before(&play(Media::Sound("beep".into())));
        assert_eq!(again, None, "one beep per call is timed");
        times.observe(&Input::Answered {
            origin: OriginateId("o".into()),
            call: CallId("t".into()),
        });
        times.before(&play(file()));
        times.before(&play(file()));
        let after = global().render(&Counts::default());
        // Other tests may time calls too: at least ours moved each by one.
        assert!(count(&after, "ivm_beep_seconds") > count(&before, "ivm_beep_seconds"));
        assert!(
            count(&after, "ivm_first_audio_seconds") > count(&before, "ivm_first_audio_seconds")
        );
    }

    #[test]
    fn in_stream_mode_the_listeners_stream_is_first_audio() {
        let before = global().render(&Counts::default());
        let mut times = CallTimes::start();
        let listen = Action::StreamListener {
            call: CallId("t".into()),
            from: 0,
        };
        // Not before an answer.
        assert_eq!(times.before(&listen), None);
        assert!(!times.first_audio);
        times.observe(&Input::Answered {
            origin: OriginateId("o".into()),
            call: CallId("t".into()),
        });
        times.before(&listen);
        assert!(times.first_audio);
        let after = global().render(&Counts::default());
        assert!(
            count(&after, "ivm_first_audio_seconds") > count(&before, "ivm_first_audio_seconds")
        );
    }

    #[test]
    fn counts_and_live_state_are_rendered_with_labels() {
        let live = global().live();
        live.set_connected("unit", false);
        live.set_device("7001", DeviceState::Ringing);
        let text = global().render(&Counts {
            recording: 2,
            deliveries_open: vec![("ringing".into(), 1)],
            outbox: vec![
                ("sms_kannel".into(), "pending".into(), 3),
                ("webhook".into(), "failed".into(), 1),
            ],
        });
        for line in [
            "ivm_sessions{state=\"recording\"} 2",
            "ivm_sessions{state=\"ringing\"} 1",
            "ivm_sessions{state=\"listening\"} 0",
            "ivm_notifications{channel=\"webhook\",state=\"failed\"} 1",
            "ivm_outbox_depth 3",
            "ivm_switch_connected{switch=\"unit\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("ivm_presence{state=\"ringing\"}"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
