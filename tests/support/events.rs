//! Waiting for a switch's events in adapter tests.

use std::time::Duration;

use ivm::switch::SwitchEvent;
use tokio::sync::mpsc;

/// How long one awaited event may take.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The next event that `pick` accepts; other events are skipped. Fails the
/// test if the stream ends or nothing fits within [`EVENT_WAIT`].
pub async fn next<T>(
    events: &mut mpsc::UnboundedReceiver<SwitchEvent>,
    what: &str,
    mut pick: impl FnMut(&SwitchEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {EVENT_WAIT:?}"),
        }
    }
}

/// The first call event (`IncomingCall` or `Answered`) among those already
/// delivered, if any: a refused peer must have made none.
#[allow(dead_code)]
pub fn call_event_so_far(events: &mut mpsc::UnboundedReceiver<SwitchEvent>) -> Option<SwitchEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).find(|e| {
        matches!(
            e,
            SwitchEvent::IncomingCall { .. } | SwitchEvent::Answered { .. }
        )
    })
}
