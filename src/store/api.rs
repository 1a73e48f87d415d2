//! The store's queries for the HTTP API, the metrics and the token commands:
//! API tokens (only their SHA-256 is kept), a page of messages with filters,
//! a message's deletion, and the counts the metrics report.
//!
//! Owns: the `api_tokens` table and these read paths. Must not know: HTTP.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Store, StoreError, now_ms};
use crate::domain::{DeliveryState, MessageId, MessageState};

/// What a token may do: `read` only GETs, `admin` everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(StoreError::Invalid {
                field: "scope",
                reason: format!("`{other}` is neither `read` nor `admin`"),
            }),
        }
    }
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

/// Tokens are `ivm_` and 64 hex digits (256 random bits).
const TOKEN_PREFIX: &str = "ivm_";

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// One delivery of a listed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryInfo {
    pub to: String,
    pub state: DeliveryState,
    pub updated_at_ms: i64,
}

/// A message with its deliveries, as the API shows it. Retrieval codes are
/// not shown: a code lets its target's phone play the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageInfo {
    pub id: MessageId,
    pub from: String,
    pub group: Option<String>,
    pub state: MessageState,
    pub started_at_ms: i64,
    pub duration_ms: Option<i64>,
    /// Whether the finished message can be downloaded as WAV.
    pub has_audio: bool,
    pub deliveries: Vec<DeliveryInfo>,
}

/// Filters and paging of a message list. `before` is the cursor: only
/// messages with a smaller id (the list is newest first, by id).
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub to: Option<String>,
    pub from: Option<String>,
    pub state: Option<MessageState>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// A presence row of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceRow {
    pub extension: String,
    pub registered: bool,
    pub device_state: String,
    pub user_status: String,
    pub updated_at_ms: i64,
    /// `unknown`, `registered` or `unregistered`.
    pub registration: String,
    pub contacts: u32,
    pub away_until_ms: Option<i64>,
}

/// Counts for the metrics and the outbox status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages being recorded.
    pub recording: i64,
    /// Deliveries by open state (pending, ringing, listening).
    pub deliveries_open: Vec<(String, i64)>,
    /// Outbox items by (channel, state).
    pub outbox: Vec<(String, String, i64)>,
}

impl Store {
    /// Make a token; returns its id and the token (shown once, stored hashed).
    pub fn create_token(&mut self, name: &str, scope: Scope) -> Result<(i64, String), StoreError> {
        super::validate::name("name", name)?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Invalid {
            field: "token",
            reason: format!("no randomness from the system: {e}"),
        })?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        self.conn.execute(
            "INSERT INTO api_tokens (name, scope, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                name,
                scope.as_str(),
                token_hash(&token).as_slice(),
                now_ms()
            ],
        )?;
        Ok((self.conn.last_insert_rowid(), token))
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, scope, created_at, last_used_at FROM api_tokens ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, scope, created_at_ms, last_used_at_ms) = row?;
            out.push(TokenInfo {
                id,
                name,
                scope: scope.parse()?,
                created_at_ms,
                last_used_at_ms,
            });
        }
        Ok(out)
    }

    /// Revoke a token by id; false when there was none.
    pub fn revoke_token(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM api_tokens WHERE id = ?1", [id])?
            > 0)
    }

    /// The scope of `token`, if it is a valid token.
    pub fn check_token(&mut self, token: &str) -> Result<Option<Scope>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_PREFIX.len() + 64 {
            return Ok(None);
        }
        let hash = token_hash(token);
        let found: Option<(i64, Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT id, hash, scope FROM api_tokens WHERE hash = ?1",
                [hash.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, stored, scope)) = found else {
            return Ok(None);
        };
        if !bool::from(stored.as_slice().ct_eq(hash.as_slice())) {
            return Ok(None);
        }
        // At most one write a minute per token: reads stay reads.
        let now = now_ms();
        self.conn.execute(
            "UPDATE api_tokens SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60000)",
            params![id, now],
        )?;
        Ok(Some(scope.parse()?))
    }

    /// A page of messages, newest first, with their deliveries.
    pub fn message_page(&self, filter: &MessageFilter) -> Result<Vec<MessageInfo>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.id, m.sender, m.group_number, m.state, m.started_at, m.duration_ms,
                    m.wav_path IS NOT NULL
             FROM messages m
             WHERE (?1 IS NULL OR m.id IN (SELECT d.message_id FROM deliveries d
                                           WHERE d.target = ?1))
               AND (?2 IS NULL OR m.sender = ?2)
               AND (?3 IS NULL OR m.state = ?3)
               AND (?4 IS NULL OR m.id < ?4)
             ORDER BY m.id DESC LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                filter.to,
                filter.from,
                filter.state,
                filter.before,
                filter.limit
            ],
            |r| {
                Ok(MessageInfo {
                    id: r.get(0)?,
                    from: r.get(1)?,
                    group: r.get(2)?,
                    state: r.get(3)?,
                    started_at_ms: r.get(4)?,
                    duration_ms: r.get(5)?,
                    has_audio: r.get(6)?,
                    deliveries: Vec::new(),
                })
            },
        )?;
        let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
        let mut deliveries = self.conn.prepare_cached(
            "SELECT target, state, updated_at FROM deliveries WHERE message_id = ?1 ORDER BY id",
        )?;
        for m in &mut messages {
            let rows = deliveries.query_map([m.id], |r| {
                Ok(DeliveryInfo {
                    to: r.get(0)?,
                    state: r.get(1)?,
                    updated_at_ms: r.get(2)?,
                })
            })?;
            m.deliveries = rows.collect::<Result<_, _>>()?;
        }
        Ok(messages)
    }

    /// One message with its deliveries.
    pub fn message_info(&self, id: MessageId) -> Result<Option<MessageInfo>, StoreError> {
        let page = self.message_page(&MessageFilter {
            before: id.0.checked_add(1),
            limit: 1,
            ..MessageFilter::default()
        })?;
        Ok(page.into_iter().find(|m| m.id == id))
    }

    /// The WAV of a finished message, relative to the data directory.
    pub fn message_wav(&self, id: MessageId) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT wav_path FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Delete a message that is no longer being recorded: its rows go (its
    /// deliveries and so its retrieval codes with them), then its files.
    /// Returns the files removed.
    pub fn delete_message(
        &mut self,
        id: MessageId,
        data_dir: &Path,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let found: Option<(MessageState, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT state, audio_path, wav_path FROM messages WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((state, audio_path, wav_path)) = found else {
            return Err(StoreError::NoSuchMessage(id.0));
        };
        if state == MessageState::Recording {
            return Err(StoreError::Invalid {
                field: "message",
                reason: format!("message {id} is still being recorded"),
            });
        }
        self.conn
            .execute("DELETE FROM messages WHERE id = ?1", [id])?;
        let audio = data_dir.join(&audio_path);
        let mut files = vec![audio.clone()];
        for extension in ["listen.sln", "wav", "r8", "sln48"] {
            files.push(audio.with_extension(extension));
        }
        if let Some(wav) = wav_path {
            files.push(data_dir.join(wav));
        }
        files.sort();
        files.dedup();
        let mut removed = Vec::new();
        for file in files {
            // Only files inside the data directory, whatever the row says.
            let inside = file
                .strip_prefix(data_dir)
                .map(|rest| {
                    rest.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                })
                .unwrap_or(false);
            if inside && std::fs::remove_file(&file).is_ok() {
                removed.push(file);
            }
        }
        Ok(removed)
    }

    /// Retention: delete (as [`delete_message`](Self::delete_message):
    /// rows, codes, files) every message whose time is up at `now_ms` —
    /// one every target heard (or deleted) `heard_days` after the last of
    /// them did, one some target has not heard (unheard, rejected, busy,
    /// unreachable, expired) `unheard_days` after it was left. 0 keeps
    /// that kind for ever. A message being recorded or delivered live
    /// right now is never touched. Returns the ids deleted, at most 500 a
    /// call (the next sweep takes the rest).
    pub fn sweep_retention(
        &mut self,
        now_ms: i64,
        heard_days: u32,
        unheard_days: u32,
        data_dir: &Path,
    ) -> Result<Vec<MessageId>, StoreError> {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let cutoff = |days: u32| (days > 0).then(|| now_ms - i64::from(days) * DAY_MS);
        let ids = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT m.id FROM messages m
                 WHERE m.state != 'recording'
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
                                   AND d.state IN ('pending', 'ringing', 'listening'))
                   AND CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
                                         AND d.state NOT IN ('heard', 'deleted'))
                       THEN ?2 IS NOT NULL AND m.started_at <= ?2
                       ELSE ?1 IS NOT NULL
                            AND COALESCE((SELECT max(d.updated_at) FROM deliveries d
                                          WHERE d.message_id = m.id), m.started_at) <= ?1
                       END
                 ORDER BY m.id LIMIT 500",
            )?;
            stmt.query_map(params![cutoff(heard_days), cutoff(unheard_days)], |r| {
                r.get::<_, MessageId>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        for id in &ids {
            self.delete_message(*id, data_dir)?;
        }
        Ok(ids)
    }

    /// Live sessions: messages being recorded or being delivered (pending,
    /// ringing, listening), newest first, at most 200.
    pub fn live_messages(&self) -> Result<Vec<MessageInfo>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.id FROM messages m WHERE m.state = 'recording'
                OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
                           AND d.state IN ('pending', 'ringing', 'listening'))
             ORDER BY m.id DESC LIMIT 200",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, MessageId>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.message_info(id)?);
        }
        Ok(out)
    }

    /// The presence table as stored (a user's `away` past its time still
    /// reads `away` here, with `away_until` beside it).
    pub fn presence_rows(&self) -> Result<Vec<PresenceRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT extension, registered, device_state, user_status, updated_at,
                    registration, contacts, away_until
             FROM presence ORDER BY extension",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PresenceRow {
                extension: r.get(0)?,
                registered: r.get(1)?,
                device_state: r.get(2)?,
                user_status: r.get(3)?,
                updated_at_ms: r.get(4)?,
                registration: r.get(5)?,
                contacts: r.get(6)?,
                away_until_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        let recording = self.conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE state = 'recording'",
            [],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, COUNT(*) FROM deliveries
             WHERE state IN ('pending', 'ringing', 'listening') GROUP BY state",
        )?;
        let deliveries_open = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT channel, state, COUNT(*) FROM outbox GROUP BY channel, state ORDER BY 1, 2",
        )?;
        let outbox = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Counts {
            recording,
            deliveries_open,
            outbox,
        })
    }
}
