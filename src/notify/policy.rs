//! The outbox's retry policy: given an attempt's result and the time, the
//! next state of the item. Pure: no clock, no I/O; times are Unix ms.
//!
//! The rule that keeps sends exactly-once: an attempt is retried only when
//! the gateway certainly did not act on it, or when the channel is
//! idempotent. An *unknown* outcome on a non-idempotent channel (an SMS
//! whose submit timed out, an attempt cut off by a crash) is settled as
//! failed with the reason, because a second SMS cannot be taken back and a
//! lost one is visible in the outbox.

use std::time::Duration;

use crate::store::outbox::AttemptRecord;

use super::{NotifyError, SendOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// Delay before the second attempt; doubles with each further one.
    pub first_retry: Duration,
    /// The doubling stops here.
    pub max_retry: Duration,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(600),
        }
    }
}

/// The item's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Sent(SendOutcome),
    Retry { at_ms: i64, reason: String },
    Failed { reason: String },
}

impl Transition {
    /// As the store records it.
    pub fn into_record(self) -> AttemptRecord {
        match self {
            Transition::Sent(outcome) => AttemptRecord::Sent {
                gateway_id: outcome.gateway_id,
                note: outcome.note,
            },
            Transition::Retry { at_ms, reason } => AttemptRecord::Retry { at_ms, reason },
            Transition::Failed { reason } => AttemptRecord::Failed { reason },
        }
    }
}

impl OutboxPolicy {
    /// How long to wait after attempt number `attempt` (from 1) failed.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first_retry
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry)
    }

    /// The next state after attempt `attempt` ended with `result` at `now_ms`.
    pub fn after_attempt(
        &self,
        attempt: u32,
        deadline_ms: i64,
        now_ms: i64,
        result: &Result<SendOutcome, NotifyError>,
        idempotent: bool,
    ) -> Transition {
        match result {
            Ok(outcome) => Transition::Sent(outcome.clone()),
            Err(e @ (NotifyError::Rejected(_) | NotifyError::Invalid(_))) => Transition::Failed {
                reason: e.to_string(),
            },
            Err(e @ NotifyError::Unavailable(_)) => {
                self.retry_or_give_up(attempt, deadline_ms, now_ms, e.to_string())
            }
            Err(e @ NotifyError::Unknown(_)) => {
                if idempotent {
                    self.retry_or_give_up(attempt, deadline_ms, now_ms, e.to_string())
                } else {
                    Transition::Failed {
                        reason: format!("{e}; not retried, to avoid sending it twice"),
                    }
                }
            }
        }
    }

    /// The next state of an item found `sending` at start-up: attempt
    /// `attempt` was cut off and its outcome is unknown.
    pub fn after_restart(
        &self,
        attempt: u32,
        deadline_ms: i64,
        now_ms: i64,
        idempotent: bool,
    ) -> Transition {
        let interrupted = Err(NotifyError::Unknown(
            "interrupted by a restart of ivm".into(),
        ));
        // Retry at once rather than after a backoff: the gateway did nothing
        // wrong, we did.
        match self.after_attempt(attempt, deadline_ms, now_ms, &interrupted, idempotent) {
            Transition::Retry { reason, .. } => Transition::Retry {
                at_ms: now_ms,
                reason,
            },
            other => other,
        }
    }

    fn retry_or_give_up(
        &self,
        attempt: u32,
        deadline_ms: i64,
        now_ms: i64,
        reason: String,
    ) -> Transition {
        if now_ms >= deadline_ms {
            return Transition::Failed {
                reason: format!("deadline passed after {attempt} attempt(s); last: {reason}"),
            };
        }
        let delay = i64::try_from(self.retry_delay(attempt).as_millis()).unwrap_or(i64::MAX);
        // One last try at the deadline beats giving up early.
        let at_ms = now_ms.saturating_add(delay).min(deadline_ms);
        Transition::Retry { at_ms, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000;

    fn policy() -> OutboxPolicy {
        OutboxPolicy {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(60),
        }
    }

    fn down() -> Result<SendOutcome, NotifyError> {
        Err(NotifyError::Unavailable("connection refused".into()))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (1..=7).map(|n| policy().retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(
            policy().retry_delay(u32::MAX),
            Duration::from_secs(60),
            "no overflow"
        );
    }

    #[test]
    fn an_outage_is_retried_on_virtual_time_until_the_deadline() {
        let p = policy();
        let deadline = 100 * S;
        let mut now = 0;
        let mut attempt = 1;
        let mut tries = vec![now];
        loop {
            match p.after_attempt(attempt, deadline, now, &down(), false) {
                Transition::Retry { at_ms, reason } => {
                    assert!(reason.contains("connection refused"), "{reason}");
                    now = at_ms;
                    attempt += 1;
                    tries.push(now);
                }
                Transition::Failed { reason } => {
                    assert!(reason.starts_with("deadline passed after 6 attempt(s)"));
                    assert!(reason.contains("connection refused"), "{reason}");
                    break;
                }
                Transition::Sent(_) => unreachable!(),
            }
        }
        // 5, 10, 20, 40 s apart, then one last try at the deadline.
        assert_eq!(tries, [0, 5 * S, 15 * S, 35 * S, 75 * S, 100 * S]);
    }

    #[test]
    fn the_gateway_coming_back_ends_the_retries() {
        let p = policy();
        let ok = Ok(SendOutcome {
            gateway_id: Some("1001".into()),
            report_expected: true,
            note: "0: Accepted for delivery".into(),
        });
        assert!(matches!(
            p.after_attempt(3, 100 * S, 35 * S, &ok, false),
            Transition::Sent(SendOutcome {
                report_expected: true,
                ..
            })
        ));
    }

    #[test]
    fn a_refusal_is_final_at_once() {
        let p = policy();
        for e in [
            NotifyError::Rejected("invalid destination".into()),
            NotifyError::Invalid("no mobile number".into()),
        ] {
            let t = p.after_attempt(1, 100 * S, 0, &Err(e.clone()), true);
            assert_eq!(
                t,
                Transition::Failed {
                    reason: e.to_string()
                }
            );
        }
    }

    #[test]
    fn an_unknown_outcome_is_retried_only_when_idempotent() {
        let p = policy();
        let unknown = Err(NotifyError::Unknown("no response within 10 s".into()));
        assert!(matches!(
            p.after_attempt(1, 100 * S, 0, &unknown, true),
            Transition::Retry { at_ms, .. } if at_ms == 5 * S
        ));
        match p.after_attempt(1, 100 * S, 0, &unknown, false) {
            Transition::Failed { reason } => assert!(reason.contains("not retried"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_interrupted_attempt_after_restart() {
        let p = policy();
        assert_eq!(
            p.after_restart(2, 100 * S, 50 * S, true),
            Transition::Retry {
                at_ms: 50 * S,
                reason: "outcome unknown: interrupted by a restart of ivm".into()
            }
        );
        assert!(matches!(
            p.after_restart(2, 100 * S, 50 * S, false),
            Transition::Failed { .. }
        ));
        assert!(matches!(
            p.after_restart(2, 100 * S, 101 * S, true),
            Transition::Failed { reason } if reason.starts_with("deadline passed")
        ));
    }
}
