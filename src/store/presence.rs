//! Presence and delivery rules per user (S6): what the switch last said of
//! a user's phones, what the user set (do-not-disturb, away until a time),
//! and their rules. Only users have rows; an endpoint that is no user is
//! not kept.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::domain::{
    Activity, DeliveryRules, MessageId, Presence, QuietHours, Reaction, UserStatus,
};

text_column!(Activity);
text_column!(UserStatus);
text_column!(Reaction);

/// The shortest and longest ring a rule may set, in seconds.
pub const RING_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 5..=300;

/// The most calls push-when-available may place about one message.
pub const MAX_PUSH_LIMIT: u32 = 20;

impl Store {
    fn is_user(&self, extension: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM users WHERE extension = ?1")?
            .exists([extension])?)
    }

    fn ensure_presence_row(&self, extension: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO presence (extension, updated_at) VALUES (?1, ?2)
             ON CONFLICT(extension) DO NOTHING",
            params![extension, now_ms],
        )?;
        Ok(())
    }

    /// What the switch says of a user's phones. `registered`: None leaves
    /// what was known; `contacts`: None leaves the count (else sets it).
    /// Returns false (and stores nothing) when `extension` is no user.
    pub fn set_device_presence(
        &mut self,
        extension: &str,
        activity: Activity,
        registered: Option<bool>,
        contacts: Option<u32>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self.is_user(extension)? {
            return Ok(false);
        }
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO presence (extension, updated_at) VALUES (?1, ?2)
             ON CONFLICT(extension) DO NOTHING",
            params![extension, now_ms],
        )?;
        tx.execute(
            "UPDATE presence SET device_state = ?2, updated_at = ?3 WHERE extension = ?1",
            params![extension, activity, now_ms],
        )?;
        if let Some(registered) = registered {
            let registration = if registered {
                "registered"
            } else {
                "unregistered"
            };
            tx.execute(
                "UPDATE presence SET registered = ?2, registration = ?3,
                        contacts = CASE WHEN ?2 = 0 THEN 0 ELSE MAX(contacts, 1) END
                 WHERE extension = ?1",
                params![extension, registered, registration],
            )?;
        }
        if let Some(contacts) = contacts {
            tx.execute(
                "UPDATE presence SET contacts = ?2, registered = ?2 > 0,
                        registration = CASE WHEN ?2 > 0 THEN 'registered' ELSE 'unregistered' END
                 WHERE extension = ?1",
                params![extension, contacts],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// How many contacts a user's phones have registered (0: none, so
    /// unregistered). False (nothing stored) when `extension` is no user.
    pub fn set_contacts(
        &mut self,
        extension: &str,
        contacts: u32,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self.is_user(extension)? {
            return Ok(false);
        }
        self.ensure_presence_row(extension, now_ms)?;
        self.conn.execute(
            "UPDATE presence SET contacts = ?2, registered = ?2 > 0, updated_at = ?3,
                    registration = CASE WHEN ?2 > 0 THEN 'registered' ELSE 'unregistered' END
             WHERE extension = ?1",
            params![extension, contacts, now_ms],
        )?;
        Ok(true)
    }

    /// What the user says of themselves; `away_until_ms` only with `Away`
    /// (None: until changed).
    pub fn set_user_status(
        &mut self,
        extension: &str,
        status: UserStatus,
        away_until_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if !self.is_user(extension)? {
            return Err(StoreError::NoSuchUser(extension.to_owned()));
        }
        if away_until_ms.is_some() && status != UserStatus::Away {
            return Err(StoreError::Invalid {
                field: "until",
                reason: "only `away` has an end time".into(),
            });
        }
        if let Some(until) = away_until_ms
            && until <= now_ms
        {
            return Err(StoreError::Invalid {
                field: "until",
                reason: "the time is already past".into(),
            });
        }
        self.ensure_presence_row(extension, now_ms)?;
        self.conn.execute(
            "UPDATE presence SET user_status = ?2, away_until = ?3, updated_at = ?4
             WHERE extension = ?1",
            params![extension, status, away_until_ms, now_ms],
        )?;
        Ok(())
    }

    /// A user's presence as of `now_ms` (an away that has ended reads
    /// available); None when `extension` is no user.
    pub fn presence(&self, extension: &str, now_ms: i64) -> Result<Option<Presence>, StoreError> {
        if !self.is_user(extension)? {
            return Ok(None);
        }
        let row = self
            .conn
            .query_row(
                &format!("{PRESENCE} WHERE extension = ?1"),
                [extension],
                presence_row,
            )
            .optional()?;
        Ok(Some(
            row.map(|(_, p)| resolve(p, now_ms)).unwrap_or_default(),
        ))
    }

    /// Every user's presence as of `now_ms`, by extension.
    pub fn list_presence(&self, now_ms: i64) -> Result<Vec<(String, Presence)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT u.extension, p.extension IS NOT NULL FROM users u
             LEFT JOIN presence p ON p.extension = u.extension ORDER BY u.extension",
        )?;
        let users = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(users.len());
        for (extension, _) in users {
            let presence = self.presence(&extension, now_ms)?.unwrap_or_default();
            out.push((extension, presence));
        }
        Ok(out)
    }

    /// A user's rules (the defaults when none are set or `extension` is no user).
    pub fn rules(&self, extension: &str) -> Result<DeliveryRules, StoreError> {
        let rules = self
            .conn
            .query_row(
                "SELECT offline, dnd, busy, ring_timeout_seconds, push_limit, quiet_start,
                        quiet_end FROM user_rules WHERE extension = ?1",
                [extension],
                |r| {
                    let quiet: (Option<u16>, Option<u16>) = (r.get(5)?, r.get(6)?);
                    Ok(DeliveryRules {
                        offline: r.get(0)?,
                        dnd: r.get(1)?,
                        busy: r.get(2)?,
                        ring_timeout_seconds: r.get(3)?,
                        push_limit: r.get(4)?,
                        quiet_hours: match quiet {
                            (Some(start), Some(end)) => QuietHours::new(start, end),
                            _ => None,
                        },
                    })
                },
            )
            .optional()?;
        Ok(rules.unwrap_or_default())
    }

    /// Set a user's rules; refused (nothing changed) when one is not
    /// allowed: `wait` is only for `busy`, the ring timeout in
    /// [`RING_TIMEOUT_RANGE`], the push limit at most [`MAX_PUSH_LIMIT`].
    pub fn set_rules(
        &mut self,
        extension: &str,
        rules: &DeliveryRules,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if !self.is_user(extension)? {
            return Err(StoreError::NoSuchUser(extension.to_owned()));
        }
        for (field, reaction) in [("offline", rules.offline), ("dnd", rules.dnd)] {
            if reaction == Reaction::Wait {
                return Err(StoreError::Invalid {
                    field,
                    reason: "`wait` is a rule for `busy` only (store or ring)".into(),
                });
            }
        }
        if let Some(seconds) = rules.ring_timeout_seconds
            && !RING_TIMEOUT_RANGE.contains(&seconds)
        {
            return Err(StoreError::Invalid {
                field: "ring-timeout",
                reason: format!(
                    "{seconds} is not between {} and {} seconds",
                    RING_TIMEOUT_RANGE.start(),
                    RING_TIMEOUT_RANGE.end()
                ),
            });
        }
        if rules.push_limit > MAX_PUSH_LIMIT {
            return Err(StoreError::Invalid {
                field: "push-limit",
                reason: format!(
                    "{} is more than {MAX_PUSH_LIMIT} calls (0: never pushed)",
                    rules.push_limit
                ),
            });
        }
        let quiet_start = rules.quiet_hours.map(QuietHours::start);
        let quiet_end = rules.quiet_hours.map(QuietHours::end);
        self.conn.execute(
            "INSERT INTO user_rules (extension, offline, dnd, busy, ring_timeout_seconds,
                 push_limit, quiet_start, quiet_end, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(extension) DO UPDATE SET offline = ?2, dnd = ?3, busy = ?4,
                 ring_timeout_seconds = ?5, push_limit = ?6, quiet_start = ?7,
                 quiet_end = ?8, updated_at = ?9",
            params![
                extension,
                rules.offline,
                rules.dnd,
                rules.busy,
                rules.ring_timeout_seconds,
                rules.push_limit,
                quiet_start,
                quiet_end,
                now_ms
            ],
        )?;
        Ok(())
    }

    /// How many push calls were placed to `extension` about `message`.
    pub fn push_calls(&self, extension: &str, message: MessageId) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT calls FROM push_calls WHERE extension = ?1 AND message_id = ?2",
                params![extension, message],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// A push call to `extension` about `message` is placed: counted, and
    /// nothing is owed any more.
    pub fn count_push_call(
        &mut self,
        extension: &str,
        message: MessageId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO push_calls (extension, message_id, calls, updated_at)
             VALUES (?1, ?2, 1, ?3)
             ON CONFLICT(extension, message_id) DO UPDATE SET calls = calls + 1, updated_at = ?3",
            params![extension, message, now_ms],
        )?;
        tx.execute("DELETE FROM push_owed WHERE extension = ?1", [extension])?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a push is owed to `extension` (true) or not any more.
    pub fn set_push_owed(
        &mut self,
        extension: &str,
        owed: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if owed {
            if self.is_user(extension)? {
                self.conn.execute(
                    "INSERT INTO push_owed (extension, since) VALUES (?1, ?2)
                     ON CONFLICT(extension) DO NOTHING",
                    params![extension, now_ms],
                )?;
            }
        } else {
            self.conn
                .execute("DELETE FROM push_owed WHERE extension = ?1", [extension])?;
        }
        Ok(())
    }

    /// Whether a push is owed to `extension`.
    pub fn push_owed(&self, extension: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM push_owed WHERE extension = ?1")?
            .exists([extension])?)
    }

    /// The users owed a push, with their presence as of `now_ms` and their
    /// rules.
    pub fn owed_pushes(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, Presence, DeliveryRules)>, StoreError> {
        let users = self
            .conn
            .prepare("SELECT extension FROM push_owed ORDER BY since")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let presence = self.presence(&user, now_ms)?.unwrap_or_default();
            let rules = self.rules(&user)?;
            out.push((user, presence, rules));
        }
        Ok(out)
    }

    /// What a delivery to `target` needs to decide whether to ring: its
    /// presence and rules (defaults for a target that is no user).
    pub fn reachability(
        &self,
        target: &str,
        now_ms: i64,
    ) -> Result<(Presence, DeliveryRules), StoreError> {
        Ok((
            self.presence(target, now_ms)?.unwrap_or_default(),
            self.rules(target)?,
        ))
    }
}

const PRESENCE: &str = "SELECT extension, registration, contacts, device_state, user_status,
        away_until, updated_at FROM presence";

fn presence_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Presence)> {
    let registration: String = r.get(1)?;
    let registered = match registration.as_str() {
        "registered" => Some(true),
        "unregistered" => Some(false),
        _ => None,
    };
    Ok((
        r.get(0)?,
        Presence {
            registered,
            contacts: r.get(2)?,
            activity: r.get(3)?,
            status: r.get(4)?,
            away_until_ms: r.get(5)?,
            updated_at_ms: r.get(6)?,
        },
    ))
}

/// An away whose end has passed is available again.
fn resolve(mut presence: Presence, now_ms: i64) -> Presence {
    if presence.status == UserStatus::Away
        && presence.away_until_ms.is_some_and(|until| until <= now_ms)
    {
        presence.status = UserStatus::Available;
        presence.away_until_ms = None;
    }
    presence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewUser;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .add_user(&NewUser {
                extension: "1002",
                name: "Bob",
                mobile: None,
                pin: None,
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn a_user_without_a_row_is_unknown_and_available_and_a_stranger_is_none() {
        let (_dir, store) = store();
        assert_eq!(
            store.presence("1002", 1).unwrap(),
            Some(Presence::default())
        );
        assert_eq!(store.presence("9999", 1).unwrap(), None);
        assert_eq!(
            store.reachability("+15551234567", 1).unwrap(),
            (Presence::default(), DeliveryRules::default())
        );
    }

    #[test]
    fn the_switch_side_is_kept_and_survives_a_reopen() {
        let (dir, mut store) = store();
        assert!(
            store
                .set_device_presence("1002", Activity::Idle, Some(true), Some(2), 10)
                .unwrap()
        );
        assert!(
            store
                .set_device_presence("1002", Activity::OnCall, None, None, 20)
                .unwrap()
        );
        assert!(
            !store
                .set_device_presence("7777", Activity::Idle, Some(true), None, 20)
                .unwrap(),
            "an endpoint that is no user is not kept"
        );
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let p = store.presence("1002", 30).unwrap().unwrap();
        assert_eq!(
            (p.registered, p.contacts, p.activity, p.updated_at_ms),
            (Some(true), 2, Activity::OnCall, 20)
        );
    }

    #[test]
    fn the_contact_count_says_registered_or_not() {
        let (_dir, mut store) = store();
        assert!(store.set_contacts("1002", 2, 5).unwrap());
        let p = store.presence("1002", 6).unwrap().unwrap();
        assert_eq!((p.registered, p.contacts), (Some(true), 2));
        store.set_contacts("1002", 0, 7).unwrap();
        let p = store.presence("1002", 8).unwrap().unwrap();
        assert_eq!((p.registered, p.contacts), (Some(false), 0));
        assert!(!store.set_contacts("9999", 1, 9).unwrap());
    }

    #[test]
    fn unregistering_drops_the_contacts() {
        let (_dir, mut store) = store();
        store
            .set_device_presence("1002", Activity::Idle, None, Some(3), 10)
            .unwrap();
        store
            .set_device_presence("1002", Activity::Unavailable, Some(false), None, 11)
            .unwrap();
        let p = store.presence("1002", 12).unwrap().unwrap();
        assert_eq!((p.registered, p.contacts), (Some(false), 0));
    }

    #[test]
    fn away_ends_at_its_time_and_dnd_stays_until_cleared() {
        let (_dir, mut store) = store();
        store
            .set_user_status("1002", UserStatus::Away, Some(1_000), 10)
            .unwrap();
        let at = |t| store.presence("1002", t).unwrap().unwrap().status;
        assert_eq!(at(999), UserStatus::Away);
        assert_eq!(at(1_000), UserStatus::Available);
        store
            .set_user_status("1002", UserStatus::Dnd, None, 10)
            .unwrap();
        let at = |t| store.presence("1002", t).unwrap().unwrap().status;
        assert_eq!(at(i64::MAX), UserStatus::Dnd);
    }

    #[test]
    fn bad_user_settings_are_refused_and_change_nothing() {
        let (_dir, mut store) = store();
        assert!(matches!(
            store.set_user_status("9999", UserStatus::Dnd, None, 1),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(
            store
                .set_user_status("1002", UserStatus::Dnd, Some(100), 1)
                .is_err()
        );
        assert!(
            store
                .set_user_status("1002", UserStatus::Away, Some(5), 10)
                .is_err(),
            "a past end"
        );
        assert_eq!(
            store.presence("1002", 1).unwrap().unwrap().status,
            UserStatus::Available
        );
        let bad = [
            DeliveryRules {
                offline: Reaction::Wait,
                ..DeliveryRules::default()
            },
            DeliveryRules {
                ring_timeout_seconds: Some(4),
                ..DeliveryRules::default()
            },
            DeliveryRules {
                ring_timeout_seconds: Some(301),
                ..DeliveryRules::default()
            },
            DeliveryRules {
                push_limit: MAX_PUSH_LIMIT + 1,
                ..DeliveryRules::default()
            },
        ];
        for rules in bad {
            assert!(store.set_rules("1002", &rules, 1).is_err(), "{rules:?}");
        }
        assert_eq!(store.rules("1002").unwrap(), DeliveryRules::default());
    }

    #[test]
    fn rules_are_kept() {
        let (_dir, mut store) = store();
        let rules = DeliveryRules {
            offline: Reaction::Ring,
            dnd: Reaction::Store,
            busy: Reaction::Wait,
            ring_timeout_seconds: Some(20),
            push_limit: 0,
            quiet_hours: Some("22:30-06:45".parse().unwrap()),
        };
        store.set_rules("1002", &rules, 1).unwrap();
        assert_eq!(store.rules("1002").unwrap(), rules);
        assert_eq!(store.reachability("1002", 2).unwrap().1, rules);
    }

    #[test]
    fn push_calls_and_what_is_owed_survive_a_reopen() {
        let (dir, mut store) = store();
        let id = store
            .create_message(&crate::store::NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln",
                sample_rate: 8000,
                audio_path: "messages/x.sln",
                targets: vec![("extension", "1002", "123456")],
            })
            .unwrap();
        assert_eq!(store.push_calls("1002", id).unwrap(), 0);
        store.set_push_owed("1002", true, 5).unwrap();
        store.set_push_owed("9999", true, 5).unwrap();
        assert!(store.push_owed("1002").unwrap());
        assert!(!store.push_owed("9999").unwrap(), "no user, nothing owed");
        assert_eq!(
            store
                .owed_pushes(6)
                .unwrap()
                .into_iter()
                .map(|(u, ..)| u)
                .collect::<Vec<_>>(),
            ["1002"]
        );
        store.count_push_call("1002", id, 7).unwrap();
        store.count_push_call("1002", id, 8).unwrap();
        assert!(
            !store.push_owed("1002").unwrap(),
            "a call placed pays what was owed"
        );
        store.set_push_owed("1002", true, 9).unwrap();
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.push_calls("1002", id).unwrap(), 2);
        assert!(store.push_owed("1002").unwrap());
        store.set_push_owed("1002", false, 10).unwrap();
        assert!(store.owed_pushes(11).unwrap().is_empty());
    }
}
