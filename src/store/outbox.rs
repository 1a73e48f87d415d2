//! The notification outbox: durable rows that `notify`'s worker claims, sends
//! and settles, and per-user channel preferences.
//!
//! Owns: the outbox's SQL and the rules that keep one attempt from being
//! settled twice. Must not know: what a channel is or how it sends; retry
//! timing is decided by `notify::OutboxPolicy` and handed in as data.
//!
//! Every method takes `now_ms` so that callers (and tests) own the clock.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Store, StoreError};

/// Channel names the schema accepts (mirrors the CHECK in `002_notify.sql`).
pub const OUTBOX_CHANNELS: [&str; 6] = [
    "sms_kannel",
    "sms_smpp",
    "webhook",
    "sip_message",
    "mwi",
    "smart_caller_id",
];

const MAX_RECIPIENT: usize = 256;
const MAX_PAYLOAD: usize = 16 * 1024;
const MAX_NOTE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for `next_attempt_at`.
    Pending,
    /// Claimed: an attempt is (or was, before a crash) on the wire.
    Sending,
    /// The gateway accepted it; a delivery report may still follow.
    Sent,
    Delivered,
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "sending" => OutboxState::Sending,
            "sent" => OutboxState::Sent,
            "delivered" => OutboxState::Delivered,
            "failed" => OutboxState::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxItem<'a> {
    pub delivery_id: Option<i64>,
    /// One of [`OUTBOX_CHANNELS`].
    pub channel: &'a str,
    pub recipient: &'a str,
    /// The notification as JSON; the store only checks that it parses.
    pub payload_json: &'a str,
    /// Enqueueing a second item with the same key returns the first one.
    pub dedup_key: Option<&'a str>,
    /// First attempt no earlier than this.
    pub not_before_ms: i64,
    /// Give up after this.
    pub deadline_ms: i64,
    /// Fail still-pending items of the same channel and recipient: for
    /// state-carrying notifications (the message-waiting lamp) where only
    /// the newest matters.
    pub supersede_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub delivery_id: Option<i64>,
    pub channel: String,
    pub recipient: String,
    pub payload_json: String,
    pub state: OutboxState,
    /// Attempts started so far; while `sending`, the current attempt's id.
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub deadline_at_ms: i64,
    pub dedup_key: Option<String>,
    pub gateway_id: Option<String>,
    pub outcome: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when `dedup_key` matched an existing item (nothing was added).
    pub created: bool,
}

/// What one attempt's result does to its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptRecord {
    /// Accepted by the gateway; `sent` (a report may still settle it).
    Sent {
        gateway_id: Option<String>,
        note: String,
    },
    /// Known delivered already.
    Delivered {
        gateway_id: Option<String>,
        note: String,
    },
    /// Back to `pending`, due again at `at_ms`.
    Retry {
        at_ms: i64,
        reason: String,
    },
    Failed {
        reason: String,
    },
}

/// Which row a delivery report is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportKey {
    /// Our own id and attempt, carried through the gateway (Kannel's dlr-url,
    /// or remembered by a live SMPP session).
    Attempt { id: i64, attempt: u32 },
    /// The gateway's message id, as returned when it accepted the attempt.
    Gateway { channel: String, gateway_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRecord {
    Delivered { note: String },
    Failed { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportApplied {
    Applied {
        id: i64,
    },
    /// The row was already delivered or failed; nothing changed.
    AlreadySettled {
        id: i64,
    },
    /// No row (yet): e.g. a receipt that overtook the submit's result.
    NoMatch,
}

const COLUMNS: &str =
    "id, delivery_id, channel, recipient, payload, state, attempts, next_attempt_at,
     deadline_at, dedup_key, gateway_id, outcome, created_at, updated_at";

fn item_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxItem> {
    let state: String = r.get(5)?;
    let state = OutboxState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("unknown outbox state `{state}`").into(),
        )
    })?;
    Ok(OutboxItem {
        id: r.get(0)?,
        delivery_id: r.get(1)?,
        channel: r.get(2)?,
        recipient: r.get(3)?,
        payload_json: r.get(4)?,
        state,
        attempts: r.get(6)?,
        next_attempt_at_ms: r.get(7)?,
        deadline_at_ms: r.get(8)?,
        dedup_key: r.get(9)?,
        gateway_id: r.get(10)?,
        outcome: r.get(11)?,
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
    })
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_channel(channel: &str) -> Result<(), StoreError> {
    if OUTBOX_CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(invalid(
            "channel",
            format!("`{channel}` is not one of {}", OUTBOX_CHANNELS.join(", ")),
        ))
    }
}

/// Notes and reasons are for people; keep them bounded and on one line.
fn note(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NOTE)
        .collect();
    out.truncate(out.trim_end().len());
    out
}

impl Store {
    /// Write a notification before anything tries to send it.
    pub fn outbox_enqueue(
        &mut self,
        item: &NewOutboxItem<'_>,
        now_ms: i64,
    ) -> Result<Enqueued, StoreError> {
        check_channel(item.channel)?;
        if item.recipient.is_empty()
            || item.recipient.len() > MAX_RECIPIENT
            || item.recipient.chars().any(char::is_control)
        {
            return Err(invalid(
                "recipient",
                format!("must be 1 to {MAX_RECIPIENT} characters on one line"),
            ));
        }
        if item.payload_json.len() > MAX_PAYLOAD
            || serde_json::from_str::<serde_json::Value>(item.payload_json).is_err()
        {
            return Err(invalid(
                "payload",
                format!("must be JSON of at most {MAX_PAYLOAD} bytes"),
            ));
        }
        if item.deadline_ms < item.not_before_ms {
            return Err(invalid("deadline", "must not be before the first attempt"));
        }
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO outbox (delivery_id, channel, recipient, payload, state, attempts,
                                 next_attempt_at, deadline_at, dedup_key, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?8, ?8)
             ON CONFLICT(dedup_key) DO NOTHING",
            params![
                item.delivery_id,
                item.channel,
                item.recipient,
                item.payload_json,
                item.not_before_ms,
                item.deadline_ms,
                item.dedup_key,
                now_ms
            ],
        )?;
        if inserted == 0 {
            let id: i64 = tx.query_row(
                "SELECT id FROM outbox WHERE dedup_key = ?1",
                [item.dedup_key],
                |r| r.get(0),
            )?;
            return Ok(Enqueued { id, created: false });
        }
        let id = tx.last_insert_rowid();
        if item.supersede_pending {
            tx.execute(
                "UPDATE outbox SET state = 'failed', outcome = ?4, updated_at = ?5
                 WHERE channel = ?1 AND recipient = ?2 AND state = 'pending' AND id <> ?3",
                params![
                    item.channel,
                    item.recipient,
                    id,
                    format!("superseded by #{id}"),
                    now_ms
                ],
            )?;
        }
        tx.commit()?;
        Ok(Enqueued { id, created: true })
    }

    /// Fail pending items whose deadline has passed; returns how many.
    pub fn outbox_expire(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE outbox
             SET state = 'failed', updated_at = ?1,
                 outcome = 'deadline passed after ' || attempts || ' attempt(s)'
                           || COALESCE('; last: ' || outcome, '')
             WHERE state = 'pending' AND deadline_at < ?1",
            [now_ms],
        )?)
    }

    /// Claim up to `limit` due items: each moves to `sending` with its
    /// attempt counter raised, in one transaction, before any send starts.
    pub fn outbox_claim_due(
        &mut self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let tx = self.conn.transaction()?;
        let ids: Vec<i64> = {
            let mut due = tx.prepare(
                "SELECT id FROM outbox
                 WHERE state = 'pending' AND next_attempt_at <= ?1 AND deadline_at >= ?1
                 ORDER BY next_attempt_at, id LIMIT ?2",
            )?;
            due.query_map(params![now_ms, limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut items = Vec::with_capacity(ids.len());
        {
            let mut claim = tx.prepare(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1",
            )?;
            let mut read = tx.prepare(&format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"))?;
            for id in ids {
                claim.execute(params![id, now_ms])?;
                items.push(read.query_row([id], item_from_row)?);
            }
        }
        tx.commit()?;
        Ok(items)
    }

    /// Settle attempt `attempt` of item `id`. Returns false (and changes
    /// nothing but a missing gateway id) when that attempt is no longer the
    /// one in flight, e.g. because a delivery report settled it first.
    pub fn outbox_record_attempt(
        &mut self,
        id: i64,
        attempt: u32,
        record: &AttemptRecord,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = match record {
            AttemptRecord::Sent {
                gateway_id,
                note: n,
            }
            | AttemptRecord::Delivered {
                gateway_id,
                note: n,
            } => {
                let state = if matches!(record, AttemptRecord::Sent { .. }) {
                    "sent"
                } else {
                    "delivered"
                };
                let changed = self.conn.execute(
                    "UPDATE outbox SET state = ?3, gateway_id = ?4, outcome = ?5, updated_at = ?6
                     WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                    params![id, attempt, state, gateway_id, note(n), now_ms],
                )?;
                if changed == 0 {
                    // A report may have settled this attempt already; keep
                    // the gateway id for reports that are still to come.
                    self.conn.execute(
                        "UPDATE outbox SET gateway_id = COALESCE(gateway_id, ?3)
                         WHERE id = ?1 AND attempts = ?2",
                        params![id, attempt, gateway_id],
                    )?;
                }
                changed
            }
            AttemptRecord::Retry { at_ms, reason } => self.conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?3, outcome = ?4,
                        updated_at = ?5
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, at_ms, note(reason), now_ms],
            )?,
            AttemptRecord::Failed { reason } => self.conn.execute(
                "UPDATE outbox SET state = 'failed', outcome = ?3, updated_at = ?4
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, note(reason), now_ms],
            )?,
        };
        Ok(changed == 1)
    }

    /// Apply a delivery report to the attempt it names.
    pub fn outbox_record_report(
        &mut self,
        key: &ReportKey,
        record: &ReportRecord,
        now_ms: i64,
    ) -> Result<ReportApplied, StoreError> {
        let (state, text) = match record {
            ReportRecord::Delivered { note: n } => ("delivered", note(n)),
            ReportRecord::Failed { reason } => ("failed", note(reason)),
        };
        let tx = self.conn.transaction()?;
        let found: Option<(i64, String)> = match key {
            ReportKey::Attempt { id, attempt } => tx
                .query_row(
                    "SELECT id, state FROM outbox WHERE id = ?1 AND attempts = ?2",
                    params![id, attempt],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            ReportKey::Gateway {
                channel,
                gateway_id,
            } => tx
                .query_row(
                    "SELECT id, state FROM outbox WHERE channel = ?1 AND gateway_id = ?2
                     ORDER BY (state = 'sent') DESC, id DESC LIMIT 1",
                    params![channel, gateway_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        let applied = match found {
            None => ReportApplied::NoMatch,
            Some((id, current)) if current == "sending" || current == "sent" => {
                tx.execute(
                    "UPDATE outbox SET state = ?2, outcome = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, state, text, now_ms],
                )?;
                ReportApplied::Applied { id }
            }
            Some((id, _)) => ReportApplied::AlreadySettled { id },
        };
        tx.commit()?;
        Ok(applied)
    }

    /// Items left in `sending`: attempts whose result was never recorded
    /// (the process stopped mid-send). Read once at start-up.
    pub fn outbox_in_flight(&self) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_list(Some(OutboxState::Sending), usize::MAX)
    }

    /// When the earliest pending item is due, if any.
    pub fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    pub fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                [id],
                item_from_row,
            )
            .optional()?)
    }

    /// Items, oldest first, optionally in one state.
    pub fn outbox_list(
        &self,
        state: Option<OutboxState>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE ?1 IS NULL OR state = ?1 ORDER BY id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![state.map(OutboxState::as_str), limit],
            item_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A user's own channel list (`None`: use the configured defaults).
    pub fn notify_channels(&self, extension: &str) -> Result<Option<Vec<String>>, StoreError> {
        let list: Option<String> = self
            .conn
            .query_row(
                "SELECT channels FROM notify_preferences WHERE extension = ?1",
                [extension],
                |r| r.get(0),
            )
            .optional()?;
        Ok(list.map(|l| {
            l.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    /// Set (`Some`, possibly empty) or clear (`None`) a user's channel list.
    pub fn set_notify_channels(
        &mut self,
        extension: &str,
        channels: Option<&[&str]>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let exists = self
            .conn
            .prepare("SELECT 1 FROM users WHERE extension = ?1")?
            .exists([extension])?;
        if !exists {
            return Err(StoreError::NoSuchUser(extension.to_owned()));
        }
        match channels {
            None => {
                self.conn.execute(
                    "DELETE FROM notify_preferences WHERE extension = ?1",
                    [extension],
                )?;
            }
            Some(channels) => {
                for c in channels {
                    check_channel(c)?;
                }
                self.conn.execute(
                    "INSERT INTO notify_preferences (extension, channels, updated_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT(extension) DO UPDATE SET channels = ?2, updated_at = ?3",
                    params![extension, channels.join(","), now_ms],
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewUser;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn sms<'a>(key: Option<&'a str>) -> NewOutboxItem<'a> {
        NewOutboxItem {
            delivery_id: None,
            channel: "sms_kannel",
            recipient: "+15551230002",
            payload_json: r#"{"kind":"text","from":"1001","body":"hi"}"#,
            dedup_key: key,
            not_before_ms: 1_000,
            deadline_ms: 100_000,
            supersede_pending: false,
        }
    }

    #[test]
    fn enqueue_validates_and_dedups() {
        let (_d, mut s) = store();
        let first = s.outbox_enqueue(&sms(Some("m1:1002:sms")), 500).unwrap();
        assert!(first.created);
        let again = s.outbox_enqueue(&sms(Some("m1:1002:sms")), 600).unwrap();
        assert_eq!(
            again,
            Enqueued {
                id: first.id,
                created: false
            }
        );
        let bad = NewOutboxItem {
            channel: "pigeon",
            ..sms(None)
        };
        assert!(matches!(
            s.outbox_enqueue(&bad, 0),
            Err(StoreError::Invalid {
                field: "channel",
                ..
            })
        ));
        let bad = NewOutboxItem {
            payload_json: "{",
            ..sms(None)
        };
        assert!(s.outbox_enqueue(&bad, 0).is_err());
        let bad = NewOutboxItem {
            recipient: "a\nb",
            ..sms(None)
        };
        assert!(s.outbox_enqueue(&bad, 0).is_err());
        assert_eq!(s.outbox_list(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn claim_marks_sending_and_counts_attempts() {
        let (_d, mut s) = store();
        let id = s.outbox_enqueue(&sms(None), 0).unwrap().id;
        assert!(s.outbox_claim_due(999, 10).unwrap().is_empty(), "not due");
        let claimed = s.outbox_claim_due(1_000, 10).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].id, claimed[0].state, claimed[0].attempts),
            (id, OutboxState::Sending, 1)
        );
        assert!(
            s.outbox_claim_due(1_000, 10).unwrap().is_empty(),
            "a claimed item is not claimed twice"
        );
        assert_eq!(s.outbox_in_flight().unwrap().len(), 1);
        let retry = AttemptRecord::Retry {
            at_ms: 2_000,
            reason: "connection refused".into(),
        };
        assert!(s.outbox_record_attempt(id, 1, &retry, 1_010).unwrap());
        assert!(
            !s.outbox_record_attempt(id, 1, &retry, 1_010).unwrap(),
            "an attempt is settled once"
        );
        assert_eq!(s.outbox_next_due().unwrap(), Some(2_000));
        let claimed = s.outbox_claim_due(2_000, 10).unwrap();
        assert_eq!(claimed[0].attempts, 2);
        let sent = AttemptRecord::Sent {
            gateway_id: Some("1001".into()),
            note: "accepted".into(),
        };
        assert!(
            !s.outbox_record_attempt(id, 1, &sent, 2_010).unwrap(),
            "a stale attempt cannot settle the current one"
        );
        assert!(s.outbox_record_attempt(id, 2, &sent, 2_010).unwrap());
        let item = s.outbox_item(id).unwrap().unwrap();
        assert_eq!(item.state, OutboxState::Sent);
        assert_eq!(item.gateway_id.as_deref(), Some("1001"));
        assert_eq!(s.outbox_next_due().unwrap(), None);
    }

    #[test]
    fn reports_settle_by_attempt_or_gateway_id() {
        let (_d, mut s) = store();
        let id = s.outbox_enqueue(&sms(None), 0).unwrap().id;
        s.outbox_claim_due(1_000, 10).unwrap();
        // The report overtakes the attempt's own result.
        let key = ReportKey::Attempt { id, attempt: 1 };
        let delivered = ReportRecord::Delivered {
            note: "DELIVRD".into(),
        };
        assert_eq!(
            s.outbox_record_report(&key, &delivered, 1_005).unwrap(),
            ReportApplied::Applied { id }
        );
        let sent = AttemptRecord::Sent {
            gateway_id: Some("g-7".into()),
            note: "accepted".into(),
        };
        assert!(!s.outbox_record_attempt(id, 1, &sent, 1_010).unwrap());
        let item = s.outbox_item(id).unwrap().unwrap();
        assert_eq!(item.state, OutboxState::Delivered);
        assert_eq!(item.gateway_id.as_deref(), Some("g-7"));
        let wrong_attempt = ReportKey::Attempt { id, attempt: 9 };
        assert_eq!(
            s.outbox_record_report(&wrong_attempt, &delivered, 1_020)
                .unwrap(),
            ReportApplied::NoMatch
        );
        let by_gateway = ReportKey::Gateway {
            channel: "sms_kannel".into(),
            gateway_id: "g-7".into(),
        };
        let failed = ReportRecord::Failed {
            reason: "UNDELIV".into(),
        };
        assert_eq!(
            s.outbox_record_report(&by_gateway, &failed, 1_030).unwrap(),
            ReportApplied::AlreadySettled { id },
            "a settled item stays settled"
        );
    }

    #[test]
    fn expiry_and_superseding() {
        let (_d, mut s) = store();
        let old = s.outbox_enqueue(&sms(None), 0).unwrap().id;
        assert_eq!(
            s.outbox_expire(100_000).unwrap(),
            0,
            "deadline is inclusive"
        );
        assert_eq!(s.outbox_expire(100_001).unwrap(), 1);
        let item = s.outbox_item(old).unwrap().unwrap();
        assert_eq!(item.state, OutboxState::Failed);
        assert!(item.outcome.unwrap().starts_with("deadline passed after 0"));

        let mwi = |json| NewOutboxItem {
            channel: "mwi",
            recipient: "1002",
            payload_json: json,
            supersede_pending: true,
            ..sms(None)
        };
        let a = s.outbox_enqueue(&mwi(r#"{"new":1}"#), 0).unwrap().id;
        let b = s.outbox_enqueue(&mwi(r#"{"new":2}"#), 0).unwrap().id;
        assert_eq!(
            s.outbox_item(a).unwrap().unwrap().state,
            OutboxState::Failed
        );
        assert_eq!(
            s.outbox_item(b).unwrap().unwrap().state,
            OutboxState::Pending
        );
    }

    #[test]
    fn items_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let mut s = Store::open(dir.path()).unwrap();
            let id = s.outbox_enqueue(&sms(None), 0).unwrap().id;
            s.outbox_claim_due(1_000, 1).unwrap();
            id
        };
        let s = Store::open(dir.path()).unwrap();
        let left = s.outbox_in_flight().unwrap();
        assert_eq!((left[0].id, left[0].attempts), (id, 1));
    }

    #[test]
    fn preferences_round_trip() {
        let (_d, mut s) = store();
        assert!(matches!(
            s.set_notify_channels("1002", Some(&["mwi"]), 0),
            Err(StoreError::NoSuchUser(_))
        ));
        s.add_user(&NewUser {
            extension: "1002",
            name: "Bob",
            mobile: None,
            pin: None,
        })
        .unwrap();
        assert_eq!(s.notify_channels("1002").unwrap(), None);
        s.set_notify_channels("1002", Some(&["mwi", "sms_smpp"]), 0)
            .unwrap();
        assert_eq!(
            s.notify_channels("1002").unwrap(),
            Some(vec!["mwi".to_string(), "sms_smpp".to_string()])
        );
        s.set_notify_channels("1002", Some(&[]), 0).unwrap();
        assert_eq!(s.notify_channels("1002").unwrap(), Some(vec![]));
        assert!(s.set_notify_channels("1002", Some(&["fax"]), 0).is_err());
        s.set_notify_channels("1002", None, 0).unwrap();
        assert_eq!(s.notify_channels("1002").unwrap(), None);
    }
}
