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
