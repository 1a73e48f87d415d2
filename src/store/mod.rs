//! The SQLite store: schema migrations, queries, and a handle that runs them
//! on a dedicated thread so database work never blocks the async executor.
//!
//! Owns: every table and every SQL statement, and the conversion of the
//! domain's typed ids and states to and from their columns (a stored state
//! that names no state is an error, not a guess). Must not know: the switch,
//! the session engine, or the CLI.

pub mod api;
mod error;
pub mod outbox;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use serde::Serialize;

pub use error::StoreError;

use crate::domain::{DeliveryState, Extension, MessageCode, MessageId, MessageState, MissCounts};

macro_rules! text_column {
    ($name:ty) => {
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

text_column!(MessageState);
text_column!(DeliveryState);

pub mod presence;

impl rusqlite::types::ToSql for MessageId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for MessageId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(MessageId)
    }
}

impl rusqlite::types::ToSql for Extension {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for Extension {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        String::column_result(value).map(Extension)
    }
}

pub const DB_FILE: &str = "ivm.db";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/001_initial.sql")),
        M::up(include_str!("migrations/002_notify.sql")),
        M::up(include_str!("migrations/003_api_tokens.sql")),
        M::up(include_str!("migrations/004_presence.sql")),
        M::up(include_str!("migrations/005_pin_misses.sql")),
        M::up(include_str!("migrations/006_push_rules.sql")),
    ])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub extension: String,
    pub name: String,
    pub mobile: Option<String>,
    /// Whether a PIN is set; the PIN and its hash never leave the store.
    pub has_pin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser<'a> {
    pub extension: &'a str,
    pub name: &'a str,
    pub mobile: Option<&'a str>,
    pub pin: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub number: String,
    pub name: Option<String>,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage<'a> {
    pub sender: &'a str,
    pub group_number: Option<&'a str>,
    pub audio_format: &'a str,
    pub sample_rate: u32,
    pub audio_path: &'a str,
    /// (target kind, target, retrieval code) per target.
    pub targets: Vec<(&'a str, &'a str, &'a str)>,
}

/// One row of `ivm message list`: a message as seen by one of its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRow {
    pub id: MessageId,
    pub from: String,
    pub to: Option<String>,
    pub state: MessageState,
    pub delivery_state: Option<DeliveryState>,
    pub code: Option<String>,
    pub started_at_ms: i64,
    pub duration_ms: Option<i64>,
    /// Fragments of its audio indexed (each on disk).
    pub fragments: i64,
}

/// The synchronous store. Use it directly from the CLI; from async code go
/// through [`StoreHandle`].
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the database in `data_dir` and migrate it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        // Nobody else's (S11): owner and group only. The group is the
        // switch's way in (it records into `messages/` and plays `sounds/`);
        // a set-group-ID bit the administrator set is kept, so that what the
        // switch writes stays in ivm's group.
        shared_with_group(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        // Owner only: PIN hashes and phone numbers are not the switch's.
        // Before WAL mode: SQLite gives -wal and -shm the database's mode.
        private(&path, 0o600)?;
        // FULL: an acknowledged fragment survives a power cut, not only a crash.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )?;
        migrations().to_latest(&mut conn)?;
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `path` (a directory) becomes `rwxrwx---`, keeping a set-group-ID bit.
fn shared_with_group(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let setgid = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o2000)
        .unwrap_or(0);
    private(path, 0o770 | setgid)
}

fn private(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::DataDir {
            path: path.to_owned(),
            source,
        }
    })
}

impl Store {
    pub fn add_user(&mut self, user: &NewUser<'_>) -> Result<(), StoreError> {
        validate::name("name", user.name)?;
        if let Some(mobile) = user.mobile {
            validate::e164("mobile", mobile)?;
        }
        let pin_hash = match user.pin {
            Some(pin) => Some(validate::hash_pin(user.extension, pin)?),
            None => None,
        };
        let inserted = self.conn.execute(
            "INSERT INTO users (extension, name, mobile, pin_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(extension) DO NOTHING",
            params![user.extension, user.name, user.mobile, pin_hash, now_ms()],
        )?;
        if inserted == 0 {
            return Err(StoreError::UserExists(user.extension.to_owned()));
        }
        Ok(())
    }

    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT extension, name, mobile, pin_hash IS NOT NULL FROM users ORDER BY extension",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(User {
                extension: r.get(0)?,
                name: r.get(1)?,
                mobile: r.get(2)?,
                has_pin: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn user(&self, extension: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT extension, name, mobile, pin_hash IS NOT NULL FROM users WHERE extension = ?1",
                [extension],
                |r| {
                    Ok(User {
                        extension: r.get(0)?,
                        name: r.get(1)?,
                        mobile: r.get(2)?,
                        has_pin: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn remove_user(&mut self, extension: &str) -> Result<(), StoreError> {
        let removed = self
            .conn
            .execute("DELETE FROM users WHERE extension = ?1", [extension])?;
        if removed == 0 {
            return Err(StoreError::NoSuchUser(extension.to_owned()));
        }
        Ok(())
    }

    /// Whether `pin` is this user's PIN. A user without a PIN matches nothing.
    /// Hashes on the calling thread: the server uses [`Store::pin_hash`]
    /// and checks on a blocking pool instead.
    pub fn verify_pin(&self, extension: &str, pin: &str) -> Result<bool, StoreError> {
        Ok(match self.pin_hash(extension)? {
            Some(hash) => validate::pin_matches(pin, &hash),
            None => false,
        })
    }

    /// The user's PIN hash (argon2), if they exist and have a PIN.
    pub fn pin_hash(&self, extension: &str) -> Result<Option<String>, StoreError> {
        let hash: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT pin_hash FROM users WHERE extension = ?1",
                [extension],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hash.flatten())
    }

    /// Set (or, with `None`, clear) a user's PIN. False if no such user.
    pub fn set_pin(&mut self, extension: &str, pin: Option<&str>) -> Result<bool, StoreError> {
        let hash = pin.map(|p| validate::hash_pin(extension, p)).transpose()?;
        let n = self.conn.execute(
            "UPDATE users SET pin_hash = ?2 WHERE extension = ?1",
            params![extension, hash],
        )?;
        Ok(n == 1)
    }

    /// The retrieval misses on `mailbox` since `since_ms`: from `source`,
    /// and from everyone.
    pub fn pin_misses(
        &self,
        mailbox: &str,
        source: &str,
        since_ms: i64,
    ) -> Result<MissCounts, StoreError> {
        let (from_source, mailbox_total): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(source = ?2), 0), COUNT(*) FROM pin_misses
             WHERE mailbox = ?1 AND at_ms >= ?3",
            params![mailbox, source, since_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(MissCounts {
            from_source: from_source.max(0) as usize,
            mailbox: mailbox_total.max(0) as usize,
        })
    }

    /// One attempt on `mailbox` from `source`, checked and counted in one
    /// transaction: the misses since `since_ms` are read, `locked` decides
    /// on them, and unless it says locked the attempt is counted as a miss
    /// at `now_ms` (to be taken back with [`Store::forget_pin_miss`] if it
    /// succeeds). Returns the counts before this attempt and the miss's id
    /// (none when locked). Misses older than `since_ms` are swept.
    pub fn pin_attempt(
        &mut self,
        mailbox: &str,
        source: &str,
        since_ms: i64,
        now_ms: i64,
        locked: impl FnOnce(MissCounts) -> bool,
    ) -> Result<(MissCounts, Option<i64>), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM pin_misses WHERE at_ms < ?1", [since_ms])?;
        let (from_source, mailbox_total): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(source = ?2), 0), COUNT(*) FROM pin_misses
             WHERE mailbox = ?1 AND at_ms >= ?3",
            params![mailbox, source, since_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let counts = MissCounts {
            from_source: from_source.max(0) as usize,
            mailbox: mailbox_total.max(0) as usize,
        };
        let id = if locked(counts) {
            None
        } else {
            tx.execute(
                "INSERT INTO pin_misses (mailbox, source, at_ms) VALUES (?1, ?2, ?3)",
                params![mailbox, source, now_ms],
            )?;
            Some(tx.last_insert_rowid())
        };
        tx.commit()?;
        Ok((counts, id))
    }

    /// The attempt counted by [`Store::pin_attempt`] succeeded: not a miss.
    pub fn forget_pin_miss(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM pin_misses WHERE id = ?1", [id])?;
        Ok(())
    }

    /// A stored group: `number` (not a user's extension), an optional name,
    /// `members` (existing users, each listed once, at most `max_members`).
    /// Nothing is stored unless all of it is valid.
    pub fn add_group(
        &mut self,
        number: &str,
        name: Option<&str>,
        members: &[String],
        max_members: usize,
    ) -> Result<(), StoreError> {
        if let Some(name) = name {
            validate::name("name", name)?;
        }
        check_member_list(members, max_members)?;
        let tx = self.conn.transaction()?;
        if tx
            .prepare("SELECT 1 FROM users WHERE extension = ?1")?
            .exists([number])?
        {
            return Err(StoreError::Invalid {
                field: "number",
                reason: format!(
                    "{number} is a user's extension; a group needs a number of its own"
                ),
            });
        }
        missing_users(&tx, members)?;
        let inserted = tx.execute(
            "INSERT INTO groups (number, name, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(number) DO NOTHING",
            params![number, name, now_ms()],
        )?;
        if inserted == 0 {
            return Err(StoreError::GroupExists(number.to_owned()));
        }
        {
            let mut add =
                tx.prepare("INSERT INTO group_members (group_number, extension) VALUES (?1, ?2)")?;
            for m in members {
                add.execute([number, m])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Change a group: a new name, members added, members removed, in one
    /// transaction. Refused (nothing changed) if an added member is not a
    /// user or already in, a removed one is not in, or the group would end
    /// up empty or over `max_members`.
    pub fn edit_group(
        &mut self,
        number: &str,
        name: Option<&str>,
        add: &[String],
        remove: &[String],
        max_members: usize,
    ) -> Result<Group, StoreError> {
        if let Some(name) = name {
            validate::name("name", name)?;
        }
        let Some(group) = self.group(number)? else {
            return Err(StoreError::NoSuchGroup(number.to_owned()));
        };
        let in_both: Vec<&String> = add.iter().filter(|m| remove.contains(m)).collect();
        if let Some(m) = in_both.first() {
            return Err(StoreError::Invalid {
                field: "members",
                reason: format!("{m} is both added and removed"),
            });
        }
        let already: Vec<String> = add
            .iter()
            .filter(|m| group.members.contains(m))
            .cloned()
            .collect();
        if !already.is_empty() {
            return Err(StoreError::Invalid {
                field: "members",
                reason: format!("already in group {number}: {}", already.join(", ")),
            });
        }
        let not_in: Vec<String> = remove
            .iter()
            .filter(|m| !group.members.contains(m))
            .cloned()
            .collect();
        if !not_in.is_empty() {
            return Err(StoreError::Invalid {
                field: "members",
                reason: format!("not in group {number}: {}", not_in.join(", ")),
            });
        }
        let mut members: Vec<String> = group
            .members
            .iter()
            .filter(|m| !remove.contains(m))
            .cloned()
            .collect();
        members.extend(add.iter().cloned());
        check_member_list(&members, max_members)?;
        let tx = self.conn.transaction()?;
        missing_users(&tx, add)?;
        if let Some(name) = name {
            tx.execute(
                "UPDATE groups SET name = ?2 WHERE number = ?1",
                params![number, name],
            )?;
        }
        for m in remove {
            tx.execute(
                "DELETE FROM group_members WHERE group_number = ?1 AND extension = ?2",
                [number, m],
            )?;
        }
        for m in add {
            tx.execute(
                "INSERT INTO group_members (group_number, extension) VALUES (?1, ?2)",
                [number, m],
            )?;
        }
        tx.commit()?;
        self.group(number)?
            .ok_or_else(|| StoreError::NoSuchGroup(number.to_owned()))
    }

    /// Remove a group (its members stay users; messages sent to it keep
    /// their deliveries).
    pub fn remove_group(&mut self, number: &str) -> Result<(), StoreError> {
        let removed = self
            .conn
            .execute("DELETE FROM groups WHERE number = ?1", [number])?;
        if removed == 0 {
            return Err(StoreError::NoSuchGroup(number.to_owned()));
        }
        Ok(())
    }

    pub fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT number, name FROM groups ORDER BY number")?;
        let groups: Vec<(String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut members = self.conn.prepare(
            "SELECT extension FROM group_members WHERE group_number = ?1 ORDER BY extension",
        )?;
        let mut out = Vec::with_capacity(groups.len());
        for (number, name) in groups {
            let list = members
                .query_map([&number], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            out.push(Group {
                number,
                name,
                members: list,
            });
        }
        Ok(out)
    }

    pub fn group(&self, number: &str) -> Result<Option<Group>, StoreError> {
        Ok(self.list_groups()?.into_iter().find(|g| g.number == number))
    }

    /// Record a new message (state `recording`) and one delivery per target.
    pub fn create_message(&mut self, message: &NewMessage<'_>) -> Result<MessageId, StoreError> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO messages (sender, group_number, state, audio_format, sample_rate,
                                   audio_path, started_at)
             VALUES (?1, ?2, 'recording', ?3, ?4, ?5, ?6)",
            params![
                message.sender,
                message.group_number,
                message.audio_format,
                message.sample_rate,
                message.audio_path,
                now
            ],
        )?;
        let id = MessageId(tx.last_insert_rowid());
        for (kind, target, code) in &message.targets {
            tx.execute(
                "INSERT INTO deliveries (message_id, target_kind, target, code, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, kind, target, code, DeliveryState::Pending, now],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Index a fragment that has reached the disk.
    pub fn add_fragment(
        &mut self,
        message_id: MessageId,
        index: u32,
        byte_offset: u64,
        length: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO fragments (message_id, idx, byte_offset, length, written_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                message_id,
                index,
                byte_offset as i64,
                length as i64,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Fragments of a message in order: (index, byte offset, length).
    pub fn fragments(&self, message_id: MessageId) -> Result<Vec<(u32, u64, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT idx, byte_offset, length FROM fragments WHERE message_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([message_id], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_message_state(
        &mut self,
        message_id: MessageId,
        state: MessageState,
        duration_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let ended = (state != MessageState::Recording).then(now_ms);
        let changed = self.conn.execute(
            "UPDATE messages SET state = ?2, duration_ms = COALESCE(?3, duration_ms),
                    ended_at = ?4
             WHERE id = ?1",
            params![message_id, state, duration_ms, ended],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchMessage(message_id.0));
        }
        Ok(())
    }

    pub fn set_delivery_state(
        &mut self,
        message_id: MessageId,
        target: &str,
        state: DeliveryState,
    ) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE deliveries SET state = ?3, updated_at = ?4 WHERE message_id = ?1 AND target = ?2",
            params![message_id, target, state, now_ms()],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchMessage(message_id.0));
        }
        Ok(())
    }

    /// Set a delivery's state and how far its listener got.
    pub fn set_delivery_progress(
        &mut self,
        message_id: MessageId,
        target: &str,
        state: DeliveryState,
        position: u64,
    ) -> Result<(), StoreError> {
        let answered = if state == DeliveryState::Listening {
            Some(now_ms())
        } else {
            None
        };
        let changed = self.conn.execute(
            "UPDATE deliveries SET state = ?3, playback_position = ?4, updated_at = ?5,
                    answered_at = COALESCE(answered_at, ?6)
             WHERE message_id = ?1 AND target = ?2",
            params![
                message_id,
                target,
                state,
                position as i64,
                now_ms(),
                answered
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchMessage(message_id.0));
        }
        Ok(())
    }

    pub fn set_wav_path(
        &mut self,
        message_id: MessageId,
        wav_path: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE messages SET wav_path = ?2 WHERE id = ?1",
            params![message_id, wav_path],
        )?;
        Ok(())
    }

    /// (id, audio path) of the messages in `state`.
    pub fn messages_in_state(
        &self,
        state: MessageState,
    ) -> Result<Vec<(MessageId, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, audio_path FROM messages WHERE state = ?1 ORDER BY id")?;
        let rows = stmt.query_map([state], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages no longer being recorded that still have a delivery open
    /// (`pending`, `ringing`, `listening`): at start no flow is live, so
    /// such a delivery was cut off by a crash or a disk too full to write
    /// its last state.
    pub fn finished_messages_with_open_deliveries(&self) -> Result<Vec<MessageId>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT m.id FROM messages m JOIN deliveries d ON d.message_id = m.id
             WHERE m.state != 'recording' AND d.state IN ('pending', 'ringing', 'listening')
             ORDER BY m.id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace a message's fragment index in one transaction.
    pub fn replace_fragments(
        &mut self,
        message_id: MessageId,
        fragments: &[(u32, u64, u64)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM fragments WHERE message_id = ?1", [message_id])?;
        for (index, offset, length) in fragments {
            tx.execute(
                "INSERT INTO fragments (message_id, idx, byte_offset, length, written_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![message_id, index, *offset as i64, *length as i64, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deliveries of a message still pending, ringing or listening end as
    /// `state`, in one transaction. Returns (sender, the targets ended).
    pub fn end_open_deliveries(
        &mut self,
        message_id: MessageId,
        state: DeliveryState,
    ) -> Result<(String, Vec<String>), StoreError> {
        let tx = self.conn.transaction()?;
        let sender: String = tx.query_row(
            "SELECT sender FROM messages WHERE id = ?1",
            [message_id],
            |r| r.get(0),
        )?;
        let targets = {
            let mut stmt = tx.prepare(
                "SELECT target FROM deliveries
                 WHERE message_id = ?1 AND state IN ('pending', 'ringing', 'listening')
                 ORDER BY id",
            )?;
            stmt.query_map([message_id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?
        };
        tx.execute(
            "UPDATE deliveries SET state = ?2, updated_at = ?3
             WHERE message_id = ?1 AND state IN ('pending', 'ringing', 'listening')",
            params![message_id, state, now_ms()],
        )?;
        tx.commit()?;
        Ok((sender, targets))
    }

    /// Messages, newest first; with `to`, only those addressed to that target.
    pub fn list_messages(&self, to: Option<&str>) -> Result<Vec<MessageRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT m.id, m.sender, d.target, m.state, d.state, d.code, m.started_at, m.duration_ms,
                    (SELECT COUNT(*) FROM fragments f WHERE f.message_id = m.id)
             FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id
             WHERE ?1 IS NULL OR d.target = ?1
             ORDER BY m.started_at DESC, m.id DESC, d.target",
        )?;
        let rows = stmt.query_map([to], |r| {
            Ok(MessageRow {
                id: r.get(0)?,
                from: r.get(1)?,
                to: r.get(2)?,
                state: r.get(3)?,
                delivery_state: r.get(4)?,
                code: r.get(5)?,
                started_at_ms: r.get(6)?,
                duration_ms: r.get(7)?,
                fragments: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A message's state.
    pub fn message_state(&self, message_id: MessageId) -> Result<Option<MessageState>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT state FROM messages WHERE id = ?1",
                [message_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The delivery of message `message_id` to `target`: (delivery id, code).
    pub fn delivery_code(
        &self,
        message_id: MessageId,
        target: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, code FROM deliveries WHERE message_id = ?1 AND target = ?2",
                params![message_id, target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The message addressed to `target` under `code`. Codes are scoped per
    /// target: another target's code finds nothing.
    pub fn retrievable_by_code(
        &self,
        target: &str,
        code: &MessageCode,
    ) -> Result<Option<Retrievable>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("{RETRIEVABLE} WHERE d.target = ?1 AND d.code = ?2"),
                params![target, code.as_str()],
                retrievable_row,
            )
            .optional()?)
    }

    /// The newest message to `target` not heard yet (and not being
    /// delivered live right now), skipping the ids in `skip`.
    pub fn newest_unheard(
        &self,
        target: &str,
        skip: &[MessageId],
    ) -> Result<Option<Retrievable>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "{RETRIEVABLE} WHERE d.target = ?1 AND d.state IN ('unheard', 'busy', 'unreachable')
             ORDER BY m.started_at DESC, m.id DESC"
        ))?;
        let rows = stmt.query_map([target], retrievable_row)?;
        for row in rows {
            let row = row?;
            if !skip.contains(&row.message_id) {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// Deliveries still unheard (`unheard`, `busy`, `unreachable`) of
    /// messages no longer being recorded that started before `before_ms`
    /// become `expired`. Returns (message id, sender, target) of each.
    pub fn expire_unheard(
        &mut self,
        before_ms: i64,
    ) -> Result<Vec<(MessageId, String, String)>, StoreError> {
        let tx = self.conn.transaction()?;
        let expired = {
            let mut stmt = tx.prepare(
                "SELECT d.id, m.id, m.sender, d.target
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.state IN ('unheard', 'busy', 'unreachable')
                   AND m.state != 'recording' AND m.started_at < ?1
                 ORDER BY d.id",
            )?;
            let rows = stmt.query_map([before_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<Result<Vec<(i64, MessageId, String, String)>, _>>()?
        };
        let now = now_ms();
        for (delivery_id, ..) in &expired {
            tx.execute(
                "UPDATE deliveries SET state = 'expired', updated_at = ?2 WHERE id = ?1",
                params![delivery_id, now],
            )?;
        }
        tx.commit()?;
        Ok(expired
            .into_iter()
            .map(|(_, message, sender, target)| (message, sender, target))
            .collect())
    }

    /// The counts for `target`'s message-waiting lamp: (new, old). New:
    /// not heard yet; old: heard.
    pub fn message_counts(&self, target: &str) -> Result<(u32, u32), StoreError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(state IN ('unheard', 'busy', 'unreachable')), 0),
                    COALESCE(SUM(state = 'heard'), 0)
             FROM deliveries WHERE target = ?1",
            [target],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Who last sent a message to `extension` (the target of a reply).
    pub fn last_sender_to(&self, extension: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT m.sender FROM messages m JOIN deliveries d ON d.message_id = m.id
                 WHERE d.target = ?1 ORDER BY m.started_at DESC, m.id DESC LIMIT 1",
                [extension],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// A message its target may retrieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrievable {
    pub message_id: MessageId,
    pub delivery_id: i64,
    pub sender: Extension,
    /// `Recording` while it is still being recorded.
    pub state: MessageState,
    pub delivery_state: DeliveryState,
    /// 8 kHz signed linear, relative to the data directory.
    pub audio_path: String,
    pub duration_ms: Option<i64>,
    /// When its recording started (ms since the Unix epoch).
    pub started_at_ms: i64,
}

const RETRIEVABLE: &str =
    "SELECT m.id, d.id, m.sender, m.state, d.state, m.audio_path, m.duration_ms, m.started_at
     FROM deliveries d JOIN messages m ON m.id = d.message_id";

fn retrievable_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Retrievable> {
    Ok(Retrievable {
        message_id: r.get(0)?,
        delivery_id: r.get(1)?,
        sender: r.get(2)?,
        state: r.get(3)?,
        delivery_state: r.get(4)?,
        audio_path: r.get(5)?,
        duration_ms: r.get(6)?,
        started_at_ms: r.get(7)?,
    })
}

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// A cloneable handle to a [`Store`] owned by one dedicated thread. Async
/// code awaits results; the executor never waits on SQLite.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Move the store onto its own thread. The thread ends when the last
    /// handle is dropped, after finishing the jobs already sent.
    pub fn spawn(mut store: Store) -> Result<Self, StoreError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ivm-store".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&mut store);
                }
            })
            .map_err(|source| StoreError::DataDir {
                path: PathBuf::from("<store thread>"),
                source,
            })?;
        Ok(Self { jobs })
    }

    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> R + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |store| {
                let _ = reply.send(f(store));
            }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }
}

/// A member list as given: not empty, each member once, at most `max`.
fn check_member_list(members: &[String], max: usize) -> Result<(), StoreError> {
    if members.is_empty() {
        return Err(StoreError::Invalid {
            field: "members",
            reason: "a group needs at least one member".into(),
        });
    }
    let mut twice: Vec<&str> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if members[..i].contains(m) && !twice.contains(&m.as_str()) {
            twice.push(m);
        }
    }
    if !twice.is_empty() {
        return Err(StoreError::Invalid {
            field: "members",
            reason: format!("listed more than once: {}", twice.join(", ")),
        });
    }
    if members.len() > max {
        return Err(StoreError::Invalid {
            field: "members",
            reason: format!(
                "{} members, more than [limits] max_group_members = {max}",
                members.len()
            ),
        });
    }
    Ok(())
}

/// Refuse members who are not users.
fn missing_users(tx: &rusqlite::Transaction<'_>, members: &[String]) -> Result<(), StoreError> {
    let mut exists = tx.prepare("SELECT 1 FROM users WHERE extension = ?1")?;
    let mut missing = Vec::new();
    for m in members {
        if !exists.exists([m])? {
            missing.push(m.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::NoSuchMembers(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn alice() -> NewUser<'static> {
        NewUser {
            extension: "1001",
            name: "Alice",
            mobile: Some("+15551230001"),
            pin: Some("802468"),
        }
    }

    #[test]
    fn a_pin_attempt_is_checked_and_counted_at_once_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let locked = |c: MissCounts| c.from_source >= 2;
        {
            let mut s = Store::open(d.path()).unwrap();
            let (c, first) = s.pin_attempt("1002", "1003", 0, 10, locked).unwrap();
            assert_eq!((c.from_source, c.mailbox), (0, 0));
            s.pin_attempt("1002", "1004", 0, 11, locked).unwrap();
            let (c, _) = s.pin_attempt("1002", "1003", 0, 12, locked).unwrap();
            assert_eq!((c.from_source, c.mailbox), (1, 2));
            // A success takes its miss back.
            s.forget_pin_miss(first.unwrap()).unwrap();
        }
        let mut s = Store::open(d.path()).unwrap();
        let c = s.pin_misses("1002", "1003", 0).unwrap();
        assert_eq!((c.from_source, c.mailbox), (1, 2));
        s.pin_attempt("1002", "1003", 0, 13, locked).unwrap();
        let (c, id) = s.pin_attempt("1002", "1003", 0, 14, locked).unwrap();
        assert_eq!((c.from_source, id), (2, None), "locked: not counted");
        // Out of the window: swept.
        let (c, _) = s.pin_attempt("1002", "1003", 13, 20, locked).unwrap();
        assert_eq!((c.from_source, c.mailbox), (1, 1));
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn pragmas_hold() {
        let (_d, s) = store();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = s
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), fk), ("wal", 1));
    }

    #[test]
    fn users_round_trip_without_pin() {
        let (_d, mut s) = store();
        s.add_user(&alice()).unwrap();
        let users = s.list_users().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].mobile.as_deref(), Some("+15551230001"));
        assert!(users[0].has_pin);
        assert!(s.verify_pin("1001", "802468").unwrap());
        assert!(!s.verify_pin("1001", "802469").unwrap());
        assert!(!s.verify_pin("1009", "802468").unwrap());
        let hash: String = s
            .conn
            .query_row("SELECT pin_hash FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(
            hash.starts_with("$argon2") && !hash.contains("802468"),
            "{hash}"
        );
    }

    #[test]
    fn retention_deletes_heard_and_unheard_messages_when_their_days_are_up() {
        let (d, mut s) = store();
        let data = d.path();
        std::fs::create_dir_all(data.join("messages")).unwrap();
        let message = |s: &mut Store, name: &str, code: &str, state: Option<DeliveryState>| {
            let path = format!("messages/{name}.sln");
            std::fs::write(data.join(&path), [0u8; 320]).unwrap();
            std::fs::write(data.join(format!("messages/{name}.wav")), [0u8; 64]).unwrap();
            let id = s
                .create_message(&NewMessage {
                    sender: "1001",
                    group_number: None,
                    audio_format: "sln",
                    sample_rate: 8000,
                    audio_path: &path,
                    targets: vec![("extension", "1002", code)],
                })
                .unwrap();
            if let Some(state) = state {
                s.set_message_state(id, MessageState::Complete, Some(20))
                    .unwrap();
                s.set_delivery_state(id, "1002", state).unwrap();
            }
            id
        };
        let heard = message(&mut s, "heard", "111111", Some(DeliveryState::Heard));
        let unheard = message(&mut s, "unheard", "222222", Some(DeliveryState::Unheard));
        let live = message(&mut s, "live", "333333", Some(DeliveryState::Ringing));
        let recording = message(&mut s, "recording", "444444", None);
        let day = 24 * 3600 * 1000;
        let now = now_ms();
        let code = |c: &str| MessageCode::parse(c).unwrap();

        // Nothing is due yet; 0 keeps a kind for ever.
        assert_eq!(s.sweep_retention(now + day, 30, 90, data).unwrap(), vec![]);
        assert_eq!(
            s.sweep_retention(now + 1000 * day, 0, 0, data).unwrap(),
            vec![]
        );
        // 31 days on: the heard one goes, files and code with it.
        assert_eq!(
            s.sweep_retention(now + 31 * day, 30, 90, data).unwrap(),
            vec![heard]
        );
        assert!(!data.join("messages/heard.sln").exists());
        assert!(!data.join("messages/heard.wav").exists());
        assert_eq!(
            s.retrievable_by_code("1002", &code("111111")).unwrap(),
            None
        );
        assert!(data.join("messages/unheard.sln").exists());
        assert!(
            s.retrievable_by_code("1002", &code("222222"))
                .unwrap()
                .is_some()
        );
        // 91 days on: the unheard one; never one in progress.
        assert_eq!(
            s.sweep_retention(now + 91 * day, 30, 90, data).unwrap(),
            vec![unheard]
        );
        assert!(!data.join("messages/unheard.sln").exists());
        assert_eq!(
            s.retrievable_by_code("1002", &code("222222")).unwrap(),
            None
        );
        assert_eq!(
            s.sweep_retention(now + 9000 * day, 1, 1, data).unwrap(),
            vec![]
        );
        let left: Vec<MessageId> = s
            .list_messages(None)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&live) && left.contains(&recording));
        // A heard message waits from when it was heard, not when it was left.
        let late = message(&mut s, "late", "555555", Some(DeliveryState::Heard));
        s.conn
            .execute(
                "UPDATE deliveries SET updated_at = ?2 WHERE message_id = ?1",
                params![late, now + 40 * day],
            )
            .unwrap();
        assert_eq!(
            s.sweep_retention(now + 31 * day, 30, 0, data).unwrap(),
            vec![]
        );
        assert_eq!(
            s.sweep_retention(now + 71 * day, 30, 0, data).unwrap(),
            vec![late]
        );
    }

    #[test]
    fn retrieval_codes_are_scoped_per_target_and_unheard_comes_newest_first() {
        let (_d, mut s) = store();
        let message = |s: &mut Store, to: &str, code: &str| {
            s.create_message(&NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln",
                sample_rate: 8000,
                audio_path: "messages/x.sln",
                targets: vec![("extension", to, code)],
            })
            .unwrap()
        };
        let first = message(&mut s, "1002", "111111");
        let second = message(&mut s, "1002", "222222");
        let other = message(&mut s, "1003", "333333");
        assert_eq!(
            s.retrievable_by_code("1002", &MessageCode::parse("111111").unwrap())
                .unwrap()
                .map(|r| r.message_id),
            Some(first)
        );
        assert_eq!(
            s.retrievable_by_code("1002", &MessageCode::parse("333333").unwrap())
                .unwrap(),
            None
        );
        assert_eq!(
            s.delivery_code(other, "1003").unwrap().map(|(_, c)| c),
            Some("333333".to_owned())
        );
        assert_eq!(s.newest_unheard("1002", &[]).unwrap(), None, "pending");
        for id in [first, second] {
            s.set_delivery_state(id, "1002", DeliveryState::Unheard)
                .unwrap();
        }
        let newest = |s: &Store, skip: &[MessageId]| {
            s.newest_unheard("1002", skip)
                .unwrap()
                .map(|r| r.message_id)
        };
        assert_eq!(newest(&s, &[]), Some(second));
        assert_eq!(newest(&s, &[second]), Some(first));
        assert_eq!(s.message_counts("1002").unwrap(), (2, 0));
        s.set_delivery_state(second, "1002", DeliveryState::Heard)
            .unwrap();
        assert_eq!(newest(&s, &[]), Some(first));
        assert_eq!(s.message_counts("1002").unwrap(), (1, 1));
        assert_eq!(s.message_counts("1009").unwrap(), (0, 0));
    }

    #[test]
    fn duplicate_user_is_refused_and_keeps_the_first() {
        let (_d, mut s) = store();
        s.add_user(&alice()).unwrap();
        let again = NewUser {
            name: "Mallory",
            ..alice()
        };
        assert!(matches!(s.add_user(&again), Err(StoreError::UserExists(_))));
        assert_eq!(s.list_users().unwrap()[0].name, "Alice");
    }

    #[test]
    fn bad_fields_are_named() {
        let (_d, mut s) = store();
        let bad = NewUser {
            mobile: Some("5551230001"),
            ..alice()
        };
        assert!(matches!(
            s.add_user(&bad),
            Err(StoreError::Invalid {
                field: "mobile",
                ..
            })
        ));
        let bad = NewUser {
            pin: Some("12a4"),
            ..alice()
        };
        assert!(matches!(
            s.add_user(&bad),
            Err(StoreError::Invalid { field: "pin", .. })
        ));
        assert!(s.list_users().unwrap().is_empty());
    }

    #[test]
    fn groups_need_known_members_and_cascade() {
        let (_d, mut s) = store();
        s.add_user(&alice()).unwrap();
        let members = vec!["1001".to_string(), "1002".to_string()];
        match s.add_group("600", Some("Sales"), &members, 50) {
            Err(StoreError::NoSuchMembers(m)) => assert_eq!(m, vec!["1002".to_string()]),
            other => panic!("{other:?}"),
        }
        assert!(s.list_groups().unwrap().is_empty());
        s.add_group("600", Some("Sales"), &members[..1], 50)
            .unwrap();
        assert!(matches!(
            s.add_group("600", None, &members[..1], 50),
            Err(StoreError::GroupExists(_))
        ));
        s.remove_user("1001").unwrap();
        assert!(s.list_groups().unwrap()[0].members.is_empty());
    }

    #[test]
    fn a_bad_member_list_stores_nothing() {
        let (_d, mut s) = store();
        s.add_user(&alice()).unwrap();
        let list = |m: &[&str]| m.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let refused = |r: Result<(), StoreError>| match r {
            Err(StoreError::Invalid { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{other:?}"),
        };
        let e = refused(s.add_group("600", None, &list(&["1001", "1001"]), 50));
        assert!(e.contains("more than once: 1001"), "{e}");
        let e = refused(s.add_group("600", None, &[], 50));
        assert!(e.contains("at least one member"), "{e}");
        let e = refused(s.add_group("1001", None, &list(&["1001"]), 50));
        assert!(e.starts_with("number:"), "{e}");
        s.add_user(&NewUser {
            extension: "1002",
            name: "Bob",
            mobile: None,
            pin: None,
        })
        .unwrap();
        let e = refused(s.add_group("600", None, &list(&["1001", "1002"]), 1));
        assert!(e.contains("max_group_members = 1"), "{e}");
        assert!(s.list_groups().unwrap().is_empty());
    }

    #[test]
    fn a_group_is_edited_whole_or_not_at_all_and_removed() {
        let (_d, mut s) = store();
        for (extension, name) in [("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol")] {
            s.add_user(&NewUser {
                extension,
                name,
                mobile: None,
                pin: None,
            })
            .unwrap();
        }
        let list = |m: &[&str]| m.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        s.add_group("600", None, &list(&["1001", "1002"]), 50)
            .unwrap();
        let g = s
            .edit_group("600", Some("Desk"), &list(&["1003"]), &list(&["1001"]), 50)
            .unwrap();
        assert_eq!(
            (g.name.as_deref(), g.members),
            (Some("Desk"), list(&["1002", "1003"]))
        );
        // Each refusal leaves the group as it was.
        for (add, remove, max) in [
            (list(&["1002"]), vec![], 50),          // already in
            (vec![], list(&["1001"]), 50),          // not in
            (list(&["1009"]), vec![], 50),          // not a user
            (vec![], list(&["1002", "1003"]), 50),  // empty
            (list(&["1001"]), vec![], 2),           // over the limit
            (list(&["1001"]), list(&["1001"]), 50), // both
        ] {
            assert!(s.edit_group("600", Some("X"), &add, &remove, max).is_err());
            let g = s.group("600").unwrap().unwrap();
            assert_eq!(
                (g.name.as_deref(), g.members),
                (Some("Desk"), list(&["1002", "1003"]))
            );
        }
        assert!(matches!(
            s.edit_group("700", None, &[], &[], 50),
            Err(StoreError::NoSuchGroup(_))
        ));
        s.remove_group("600").unwrap();
        assert!(matches!(
            s.remove_group("600"),
            Err(StoreError::NoSuchGroup(_))
        ));
        assert_eq!(s.list_users().unwrap().len(), 3, "members stay users");
    }

    #[test]
    fn old_unheard_deliveries_expire_once() {
        let (_d, mut s) = store();
        let new = |s: &mut Store, code: &str| {
            s.create_message(&NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln",
                sample_rate: 8000,
                audio_path: "messages/x.sln",
                targets: vec![("extension", "1002", code)],
            })
            .unwrap()
        };
        let unheard = new(&mut s, "111111");
        let heard = new(&mut s, "222222");
        let recording = new(&mut s, "333333");
        for id in [unheard, heard] {
            s.set_message_state(id, MessageState::Complete, Some(1000))
                .unwrap();
        }
        s.set_delivery_state(unheard, "1002", DeliveryState::Unheard)
            .unwrap();
        s.set_delivery_state(heard, "1002", DeliveryState::Heard)
            .unwrap();
        s.set_delivery_state(recording, "1002", DeliveryState::Unheard)
            .unwrap();
        assert!(s.expire_unheard(0).unwrap().is_empty(), "none that old");
        let later = now_ms() + 1;
        assert_eq!(
            s.expire_unheard(later).unwrap(),
            vec![(unheard, "1001".to_string(), "1002".to_string())]
        );
        assert!(s.expire_unheard(later).unwrap().is_empty(), "once");
        assert!(s.newest_unheard("1002", &[recording]).unwrap().is_none());
    }

    #[test]
    fn messages_fragments_and_reply_target() {
        let (_d, mut s) = store();
        let id = s
            .create_message(&NewMessage {
                sender: "1001",
                group_number: None,
                audio_format: "sln48",
                sample_rate: 48000,
                audio_path: "messages/1.sln48",
                targets: vec![("extension", "1002", "123456")],
            })
            .unwrap();
        s.add_fragment(id, 0, 0, 32768).unwrap();
        s.add_fragment(id, 1, 32768, 32768).unwrap();
        assert!(
            s.add_fragment(id, 1, 32768, 32768).is_err(),
            "an index is written once"
        );
        assert_eq!(
            s.fragments(id).unwrap(),
            vec![(0, 0, 32768), (1, 32768, 32768)]
        );
        s.set_message_state(id, MessageState::Complete, Some(10_000))
            .unwrap();
        s.set_delivery_state(id, "1002", DeliveryState::Unheard)
            .unwrap();
        let rows = s.list_messages(Some("1002")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].state, rows[0].delivery_state),
            (MessageState::Complete, Some(DeliveryState::Unheard))
        );
        assert!(s.list_messages(Some("1003")).unwrap().is_empty());
        assert_eq!(s.last_sender_to("1002").unwrap().as_deref(), Some("1001"));
        assert!(
            s.conn
                .execute("UPDATE messages SET state = 'bogus' WHERE id = ?1", [id])
                .is_err(),
            "the schema checks states too"
        );
    }

    #[tokio::test]
    async fn handle_runs_jobs_off_the_executor() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(Store::open(dir.path()).unwrap()).unwrap();
        handle
            .call(|s| s.add_user(&alice()))
            .await
            .unwrap()
            .unwrap();
        let thread = handle
            .call(|_| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("ivm-store"));
        let users = handle.call(|s| s.list_users()).await.unwrap().unwrap();
        assert_eq!(users[0].name, "Alice");
    }

    #[test]
    fn reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap().add_user(&alice()).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list_users().unwrap().len(), 1);
    }
}
