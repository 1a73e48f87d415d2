//! The one typed configuration of `ivm`, read from a single TOML file.
//!
//! Owns: the keys, their defaults (each works on one machine with zero
//! configuration), and validation that names the offending key. Must not know:
//! how any other module uses a value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a config file is looked for when `--config` is not given, in order.
pub const ENV_CONFIG: &str = "IVM_CONFIG";
pub const LOCAL_CONFIG: &str = "ivm.toml";
pub const SYSTEM_CONFIG: &str = "/etc/ivm/ivm.toml";

const MASK: &str = "********";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid TOML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: unknown key `{key}` (check its spelling and section)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("{path}: key `{key}`: {reason}")]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the database and the audio live. Empty means the default
    /// (`$XDG_DATA_HOME/ivm`, else `$HOME/.local/share/ivm`, else `./ivm-data`).
    pub data_dir: PathBuf,
    pub numbering: NumberingConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    /// `ivm serve` itself.
    pub server: ServerConfig,
    /// How long stored messages are kept.
    pub retention: RetentionConfig,
    /// Present when an Asterisk switch is configured.
    pub asterisk: Option<AsteriskConfig>,
    /// Present when a FreeSWITCH switch is configured.
    pub freeswitch: Option<FreeswitchConfig>,
    /// Notifications when a message is not heard live (S5).
    pub notify: crate::notify::NotifyConfig,
    /// The HTTP API, `/metrics` and the dashboard.
    pub api: crate::api::ApiConfig,
    /// Presence beyond what the switch says.
    pub presence: PresenceConfig,
}

/// `[presence]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceConfig {
    /// `[presence.external]`: present when numbers outside the PBX are
    /// looked up (HLR-style) before they are rung.
    pub external: Option<ExternalLookupConfig>,
}

/// `[presence.external]`: an HTTP service that says whether a number
/// outside the PBX is reachable. `GET <url>?number=<digits>` answers
/// `{"state": "reachable" | "unreachable" | "busy" | "unknown"}` (see the
/// README, "Presence and rules").
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalLookupConfig {
    /// `http://` or `https://`; may hold a query of its own (`number` is
    /// added to it).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when not empty.
    pub token: String,
    /// How long a caller's delivery waits for the answer before it counts
    /// as `unknown` (rung).
    pub timeout_ms: u32,
    /// How long an answer is reused for the same number; 0: never.
    pub cache_ttl_seconds: u32,
}

impl Default for ExternalLookupConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: String::new(),
            timeout_ms: 800,
            cache_ttl_seconds: 300,
        }
    }
}

impl fmt::Debug for ExternalLookupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalLookupConfig")
            .field("url", &self.url)
            .field("token", &MASK)
            .field("timeout_ms", &self.timeout_ms)
            .field("cache_ttl_seconds", &self.cache_ttl_seconds)
            .finish()
    }
}

/// The dial codes of the number plan (S1). See `numbering.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NumberingConfig {
    /// `*77` + target: a message to one target; `*77` alone: reply.
    pub message_code: String,
    /// `*78` + group number, or `*78` + multi-target id + `t1*t2*...`.
    pub group_code: String,
    /// `*55` + message code: retrieve that message; alone: the next unheard.
    pub retrieve_code: String,
    /// Marks an ad-hoc list after the group code: `*78` `*` `1002*1003`.
    pub multi_target_id: String,
    /// Numeric equivalents of the three codes, for trunks and mobiles.
    pub message_session_id: String,
    pub group_session_id: String,
    pub retrieve_session_id: String,
    /// Digit strings this long or shorter are extensions; longer are numbers.
    pub extension_min_digits: usize,
    pub extension_max_digits: usize,
    /// Length of a message code (a retrieval number may add one type digit).
    pub message_code_digits: usize,
    /// Most targets in one ad-hoc group message.
    pub max_targets: usize,
    /// Numbers outside the PBX (more digits than an extension) that may be
    /// dialled, as patterns: digits, `X` any digit, `Z` 1-9, `N` 2-9, a
    /// final `.` for one or more digits (e.g. `"0049X."`). Empty (the
    /// default): no external target at all. Allowed ones are dialled
    /// through the caller's own dialplan context, never `ivm`'s.
    pub external_targets: Vec<String>,
    /// Presence star codes (exact): do-not-disturb on, available (clears
    /// do-not-disturb and away), away until changed.
    pub dnd_code: String,
    pub available_code: String,
    pub away_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// How long a target rings before the message counts as not answered.
    pub ring_timeout_seconds: u32,
    /// Playback speed while catching up (pitch preserved); 1.0 is off.
    pub catch_up_speed: f64,
    /// How a live message's audio reaches the target: `stream` (ivm
    /// carries it itself, Asterisk's AudioSocket) or `files` (the switch
    /// records, ivm plays the growing file). `stream` falls back to `files`
    /// where the switch cannot stream (FreeSWITCH for now, an Asterisk
    /// without `app_audiosocket`).
    pub media: MediaMode,
    /// A message retrieved (`*55`, a code, a missed call, a push) starts
    /// with who left it and how long ago: "Message from 1001, five minutes
    /// ago." Replays do not.
    pub intro: bool,
}

/// See [`DeliveryConfig::media`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaMode {
    Stream,
    Files,
}

impl fmt::Display for MediaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaMode::Stream => "stream",
            MediaMode::Files => "files",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    pub max_message_seconds: u32,
    pub max_concurrent_messages_per_user: u32,
    /// Messages being recorded at once on this server, for the server's
    /// `switch::peer::MessagePermits` the router takes (a caller past it
    /// hears "busy, try later"; targets answering are never refused).
    pub max_concurrent_messages: u32,
    /// Connections from one address that have not yet proved the secret.
    pub max_pending_connections_per_peer: u32,
    /// Members a stored group may have (`ivm group add|edit`).
    pub max_group_members: u32,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AsteriskConfig {
    pub agi_listen: SocketAddr,
    pub ami_address: SocketAddr,
    pub ami_user: String,
    pub ami_secret: String,
    /// Dialplan context that originated calls enter.
    pub context: String,
    /// Addresses (CIDR) allowed to connect to `agi_listen`; others are
    /// closed at once. Default: this host only.
    pub agi_allow: Vec<String>,
    /// The per-install secret the dialplan passes as the AGI's first
    /// argument (`${IVM_AGI_SECRET}`); at least 16 characters.
    pub agi_secret: String,
    /// Where Asterisk's AudioSocket connects for `[delivery] media =
    /// "stream"`. AudioSocket has no authentication: keep it on loopback
    /// (the default; port 0 picks a free port, which ivm names in every
    /// `AudioSocket()` it starts). Only UUIDs ivm registered for a call are
    /// accepted.
    pub media_listen: SocketAddr,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FreeswitchConfig {
    pub esl_address: SocketAddr,
    pub esl_password: String,
    pub outbound_listen: SocketAddr,
    /// Addresses (CIDR) allowed to connect to `outbound_listen`.
    pub outbound_allow: Vec<String>,
    /// The per-install secret `ivm.xml` sets as the channel variable
    /// `ivm_secret`.
    pub outbound_secret: String,
    /// How a target is rung (originate, and bridge for a call back):
    /// `${target}` is the dialed extension or number, `${domain}`
    /// FreeSWITCH's global `domain`; ivm replaces both before FreeSWITCH
    /// sees the string.
    pub target_dial_string: String,
    /// Check every outbound socket session's Unique-ID against FreeSWITCH's
    /// own view (`CHANNEL_CREATE` events, else `uuid_exists`) and refuse
    /// one that is not live or already in use. Default on; off only to
    /// measure what the check costs.
    pub verify_uuids: bool,
}

fn loopback() -> Vec<String> {
    crate::switch::peer::LOOPBACK
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::new(),
            numbering: NumberingConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            server: ServerConfig::default(),
            retention: RetentionConfig::default(),
            asterisk: None,
            freeswitch: None,
            notify: crate::notify::NotifyConfig::default(),
            api: crate::api::ApiConfig::default(),
            presence: PresenceConfig::default(),
        }
    }
}

/// `[server]`: the service's lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT, how long calls in progress may go on before they
    /// are hung up (new calls are refused at once).
    pub shutdown_grace_seconds: u32,
    /// Where `ivm serve` installs the prompts it plays (read-only for the
    /// switch, about 0.7 MiB). Empty (the default): `<data_dir>/sounds`.
    /// Set it to keep them off the messages' filesystem (e.g. a small
    /// dedicated disk for messages). Must be absolute.
    pub sounds_dir: PathBuf,
}

/// `[retention]`: stored messages are deleted (audio files and retrieval
/// code, as by `ivm message delete`) this many days after they were heard,
/// or after they were left if never heard. 0 (or absent): kept for ever.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Days after the last listener heard (or deleted) it.
    pub heard_days: u32,
    /// Days after it was left, for a message some target has not heard
    /// (unheard, rejected, unreachable, expired).
    pub unheard_days: u32,
}

/// The longest retention that may be asked for (about 100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_seconds: 30,
            sounds_dir: PathBuf::new(),
        }
    }
}

impl Default for NumberingConfig {
    fn default() -> Self {
        Self {
            message_code: "*77".into(),
            group_code: "*78".into(),
            retrieve_code: "*55".into(),
            multi_target_id: "*".into(),
            message_session_id: "770".into(),
            group_session_id: "780".into(),
            retrieve_session_id: "550".into(),
            extension_min_digits: 2,
            extension_max_digits: 6,
            message_code_digits: 6,
            max_targets: 20,
            external_targets: Vec::new(),
            dnd_code: "*61".into(),
            available_code: "*62".into(),
            away_code: "*63".into(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ring_timeout_seconds: 30,
            catch_up_speed: 1.0,
            media: MediaMode::Stream,
            intro: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_seconds: 120,
            max_concurrent_messages_per_user: 3,
            max_concurrent_messages: 100,
            max_pending_connections_per_peer: 512,
            max_group_members: 50,
        }
    }
}

impl Default for AsteriskConfig {
    fn default() -> Self {
        Self {
            agi_listen: SocketAddr::from(([127, 0, 0, 1], 4573)),
            ami_address: SocketAddr::from(([127, 0, 0, 1], 5038)),
            ami_user: "ivm".into(),
            ami_secret: "ivm".into(),
            context: "ivm-originate".into(),
            agi_allow: loopback(),
            agi_secret: String::new(),
            media_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Default for FreeswitchConfig {
    fn default() -> Self {
        Self {
            esl_address: SocketAddr::from(([127, 0, 0, 1], 8021)),
            esl_password: "ClueCon".into(),
            outbound_listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
            outbound_allow: loopback(),
            outbound_secret: String::new(),
            target_dial_string: "user/${target}@${domain}".into(),
            verify_uuids: true,
        }
    }
}

// Secrets never reach a log line or a terminal through Debug.
impl fmt::Debug for AsteriskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsteriskConfig")
            .field("agi_listen", &self.agi_listen)
            .field("ami_address", &self.ami_address)
            .field("ami_user", &self.ami_user)
            .field("ami_secret", &MASK)
            .field("context", &self.context)
            .field("agi_allow", &self.agi_allow)
            .field("agi_secret", &MASK)
            .field("media_listen", &self.media_listen)
            .finish()
    }
}

impl fmt::Debug for FreeswitchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeswitchConfig")
            .field("esl_address", &self.esl_address)
            .field("esl_password", &MASK)
            .field("outbound_listen", &self.outbound_listen)
            .field("outbound_allow", &self.outbound_allow)
            .field("outbound_secret", &MASK)
            .field("target_dial_string", &self.target_dial_string)
            .field("verify_uuids", &self.verify_uuids)
            .finish()
    }
}

impl Config {
    /// Parse and validate a whole config file's text. `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or_default(),
            message: e.message().trim().to_owned(),
        };
        let deserializer = toml::Deserializer::parse(text).map_err(syntax)?;
        let mut unknown = Vec::new();
        // serde_ignored names an optional section's inside `section.?.key`.
        let mut note_unknown =
            |key: serde_ignored::Path| unknown.push(key.to_string().replace(".?", ""));
        let ignoring = serde_ignored::Deserializer::new(deserializer, &mut note_unknown);
        let parsed: Result<Config, _> = serde_path_to_error::deserialize(ignoring);
        let config = match parsed {
            Ok(config) => config,
            Err(e) => {
                let key = e.path().to_string();
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key,
                    reason: e.inner().message().trim().to_owned(),
                });
            }
        };
        if let Some(key) = unknown.into_iter().next() {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::BadValue {
                path: path.to_owned(),
                key,
                reason,
            })?;
        Ok(config)
    }

    /// Read one file; see [`Config::from_toml`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Find the config file: the explicit one, `$IVM_CONFIG`, `./ivm.toml`,
    /// `/etc/ivm/ivm.toml`; none found means every default.
    pub fn locate(explicit: Option<&Path>, env: Option<&str>) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_owned());
        }
        if let Some(path) = env.filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        [LOCAL_CONFIG, SYSTEM_CONFIG]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    /// Load from the located file (or defaults), then apply `--data-dir`.
    pub fn load(
        explicit: Option<&Path>,
        data_dir_override: Option<&Path>,
    ) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let env = std::env::var(ENV_CONFIG).ok();
        let path = Self::locate(explicit, env.as_deref());
        let mut config = match &path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(dir) = data_dir_override {
            config.data_dir = dir.to_owned();
        }
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = default_data_dir();
        }
        Ok((config, path))
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_toml_masked(&self) -> String {
        let mut shown = self.clone();
        if let Some(a) = shown.asterisk.as_mut() {
            a.ami_secret = MASK.into();
            a.agi_secret = MASK.into();
        }
        if let Some(f) = shown.freeswitch.as_mut() {
            f.esl_password = MASK.into();
            f.outbound_secret = MASK.into();
        }
        shown.notify = shown.notify.masked();
        if let Some(e) = shown.presence.external.as_mut()
            && !e.token.is_empty()
        {
            e.token = MASK.into();
        }
        // Serialising plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Secrets `ivm serve` refuses to run with: empty, well-known defaults
    /// (`ivm`, `ClueCon`), or a call-control secret under 16 characters.
    /// Each entry says what to change.
    pub fn weak_secrets(&self) -> Vec<String> {
        use crate::switch::peer::{DEFAULT_SECRETS, MIN_SECRET_LEN};
        let mut problems = Vec::new();
        let weak = |value: &str| DEFAULT_SECRETS.contains(&value);
        if let Some(a) = &self.asterisk {
            if weak(&a.ami_secret) {
                problems.push(
                    "[asterisk] ami_secret is empty or a well-known default: set your own secret in manager.conf (dialplan/asterisk/manager_ivm.conf) and the same in ivm.toml"
                        .to_owned(),
                );
            }
            if weak(&a.agi_secret) || a.agi_secret.chars().count() < MIN_SECRET_LEN {
                problems.push(format!(
                    "[asterisk] agi_secret must be at least {MIN_SECRET_LEN} characters: generate one (e.g. `openssl rand -hex 16`), put it in ivm.toml and as IVM_AGI_SECRET in [globals] of extensions.conf"
                ));
            }
        }
        if let Some(f) = &self.freeswitch {
            if weak(&f.esl_password) {
                problems.push(
                    "[freeswitch] esl_password is a well-known default: set your own password in event_socket.conf.xml and the same in ivm.toml"
                        .to_owned(),
                );
            }
            if weak(&f.outbound_secret) || f.outbound_secret.chars().count() < MIN_SECRET_LEN {
                problems.push(format!(
                    "[freeswitch] outbound_secret must be at least {MIN_SECRET_LEN} characters: generate one, put it in ivm.toml and as the ivm_secret variable in ivm.xml"
                ));
            }
        }
        problems
    }

    /// Where the prompts live: `[server] sounds_dir`, else
    /// `<data_dir>/sounds`.
    pub fn sounds_dir(&self) -> PathBuf {
        if self.server.sounds_dir.as_os_str().is_empty() {
            self.data_dir.join("sounds")
        } else {
            self.server.sounds_dir.clone()
        }
    }

    /// Whether this config holds any secret worth protecting.
    pub fn holds_secrets(&self) -> bool {
        self.asterisk.is_some()
            || self.freeswitch.is_some()
            || self.notify != Default::default()
            || self
                .presence
                .external
                .as_ref()
                .is_some_and(|e| !e.token.is_empty())
    }

    /// Semantic checks serde cannot express. Error: (key, reason).
    fn validate(&self) -> Result<(), (String, String)> {
        let sounds = &self.server.sounds_dir;
        if !sounds.as_os_str().is_empty() && !sounds.is_absolute() {
            return Err((
                "server.sounds_dir".into(),
                format!(
                    "{} is relative: give an absolute directory (or leave it out for <data_dir>/sounds)",
                    sounds.display()
                ),
            ));
        }
        let n = &self.numbering;
        let star_codes = [
            ("numbering.message_code", &n.message_code),
            ("numbering.group_code", &n.group_code),
            ("numbering.retrieve_code", &n.retrieve_code),
            ("numbering.dnd_code", &n.dnd_code),
            ("numbering.available_code", &n.available_code),
            ("numbering.away_code", &n.away_code),
        ];
        for (key, code) in star_codes {
            let ok = code.len() >= 2
                && code.len() <= 8
                && code.starts_with('*')
                && code[1..].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(bad(
                    key,
                    format!("`{code}` must be `*` followed by 1 to 7 digits"),
                ));
            }
        }
        let session_ids = [
            ("numbering.message_session_id", &n.message_session_id),
            ("numbering.group_session_id", &n.group_session_id),
            ("numbering.retrieve_session_id", &n.retrieve_session_id),
        ];
        for (key, id) in session_ids {
            let ok = (2..=8).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(bad(key, format!("`{id}` must be 2 to 8 digits")));
            }
        }
        let all: Vec<(&str, &String)> = star_codes.into_iter().chain(session_ids).collect();
        for (i, (key_a, a)) in all.iter().enumerate() {
            for (key_b, b) in &all[i + 1..] {
                if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                    return Err(bad(
                        key_b,
                        format!(
                            "`{b}` overlaps `{a}` of {key_a}; codes must not be prefixes of each other"
                        ),
                    ));
                }
            }
        }
        let id = &n.multi_target_id;
        if id.is_empty() || id.len() > 4 || !id.bytes().all(|b| b.is_ascii_digit() || b == b'*') {
            return Err(bad(
                "numbering.multi_target_id",
                format!("`{id}` must be 1 to 4 of the characters 0-9 and *"),
            ));
        }
        if !(1..=15).contains(&n.extension_min_digits) {
            return Err(bad(
                "numbering.extension_min_digits",
                "must be from 1 to 15",
            ));
        }
        if !(n.extension_min_digits..=14).contains(&n.extension_max_digits) {
            return Err(bad(
                "numbering.extension_max_digits",
                "must be at least extension_min_digits and at most 14",
            ));
        }
        if !(4..=12).contains(&n.message_code_digits) {
            return Err(bad("numbering.message_code_digits", "must be from 4 to 12"));
        }
        if !(1..=100).contains(&n.max_targets) {
            return Err(bad("numbering.max_targets", "must be from 1 to 100"));
        }
        for pattern in &n.external_targets {
            crate::switch::peer::pattern_ok(pattern)
                .map_err(|reason| bad("numbering.external_targets", reason))?;
        }
        let d = &self.delivery;
        if !(1..=600).contains(&d.ring_timeout_seconds) {
            return Err(bad(
                "delivery.ring_timeout_seconds",
                "must be from 1 to 600",
            ));
        }
        if !(1.0..=2.0).contains(&d.catch_up_speed) {
            return Err(bad(
                "delivery.catch_up_speed",
                "must be from 1.0 (off) to 2.0",
            ));
        }
        if let Some(a) = &self.asterisk {
            if a.media_listen.ip().is_unspecified() {
                return Err(bad(
                    "asterisk.media_listen",
                    "AudioSocket has no authentication: listen on 127.0.0.1 (or one private address Asterisk reaches), not on every interface",
                ));
            }
            if a.media_listen.port() != 0 && a.media_listen == a.agi_listen {
                return Err(bad(
                    "asterisk.media_listen",
                    "must differ from asterisk.agi_listen",
                ));
            }
        }
        let l = &self.limits;
        if !(1..=3600).contains(&l.max_message_seconds) {
            return Err(bad("limits.max_message_seconds", "must be from 1 to 3600"));
        }
        if !(1..=100).contains(&l.max_concurrent_messages_per_user) {
            return Err(bad(
                "limits.max_concurrent_messages_per_user",
                "must be from 1 to 100",
            ));
        }
        if !(1..=1_000).contains(&l.max_group_members) {
            return Err(bad("limits.max_group_members", "must be from 1 to 1000"));
        }
        if !(1..=10_000).contains(&l.max_concurrent_messages) {
            return Err(bad(
                "limits.max_concurrent_messages",
                "must be from 1 to 10000",
            ));
        }
        for (key, days) in [
            ("retention.heard_days", self.retention.heard_days),
            ("retention.unheard_days", self.retention.unheard_days),
        ] {
            if days > MAX_RETENTION_DAYS {
                return Err(bad(
                    key,
                    format!("must be from 0 (keep for ever) to {MAX_RETENTION_DAYS} days"),
                ));
            }
        }
        if self.server.shutdown_grace_seconds > 3600 {
            return Err(bad(
                "server.shutdown_grace_seconds",
                "must be from 0 to 3600",
            ));
        }
        if !(1..=65_536).contains(&l.max_pending_connections_per_peer) {
            return Err(bad(
                "limits.max_pending_connections_per_peer",
                "must be from 1 to 65536",
            ));
        }
        if let Some(a) = &self.asterisk {
            crate::switch::peer::parse_allow_list(&a.agi_allow)
                .map_err(|reason| bad("asterisk.agi_allow", reason))?;
            if a.agi_secret
                .contains(|c: char| c.is_control() || c == ',' || c == ' ')
            {
                return Err(bad(
                    "asterisk.agi_secret",
                    "must be one word: no spaces, commas or control characters",
                ));
            }
            if a.ami_user.is_empty() || a.ami_user.contains(['\r', '\n']) {
                return Err(bad("asterisk.ami_user", "must be a non-empty single line"));
            }
            if a.ami_secret.contains(['\r', '\n']) {
                return Err(bad("asterisk.ami_secret", "must be a single line"));
            }
            // It goes into `Local/<target>@<context>` of Originate and Dial.
            if !crate::switch::peer::context_ok(&a.context) {
                return Err(bad(
                    "asterisk.context",
                    "must be 1 to 79 letters, digits, `-`, `_` or `.`",
                ));
            }
        }
        self.notify.validate()?;
        if let Some(e) = &self.presence.external {
            let rest = e
                .url
                .strip_prefix("http://")
                .or_else(|| e.url.strip_prefix("https://"));
            if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
                || e.url.chars().any(|c| c.is_whitespace() || c.is_control())
                || e.url.contains('#')
            {
                return Err(bad(
                    "presence.external.url",
                    format!(
                        "`{}` must be an http:// or https:// URL with a host and no fragment",
                        e.url
                    ),
                ));
            }
            if e.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(
                    "presence.external.token",
                    "must be one word: no spaces or line breaks",
                ));
            }
            if !(50..=5000).contains(&e.timeout_ms) {
                return Err(bad(
                    "presence.external.timeout_ms",
                    "must be from 50 to 5000: a caller waits this long at most",
                ));
            }
            if e.cache_ttl_seconds > 86_400 {
                return Err(bad(
                    "presence.external.cache_ttl_seconds",
                    "must be from 0 (no cache) to 86400",
                ));
            }
        }
        if let Some(f) = &self.freeswitch {
            crate::switch::peer::parse_allow_list(&f.outbound_allow)
                .map_err(|reason| bad("freeswitch.outbound_allow", reason))?;
            // It rides in an originate's `{var=value,...}`.
            if !f.outbound_secret.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '*')
            }) {
                return Err(bad(
                    "freeswitch.outbound_secret",
                    "may hold only letters, digits and - _ . + / *",
                ));
            }
            if f.esl_password.is_empty() || f.esl_password.contains(['\r', '\n', ' ']) {
                return Err(bad(
                    "freeswitch.esl_password",
                    "must be non-empty, without spaces or line breaks",
                ));
            }
            let dial = &f.target_dial_string;
            if dial.matches("${target}").count() != 1
                || dial.len() > 512
                || dial
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"')
            {
                return Err(bad(
                    "freeswitch.target_dial_string",
                    "must hold `${target}` once, without spaces, quotes or line breaks \
                     (e.g. \"user/${target}@${domain}\")",
                ));
            }
        }
        Ok(())
    }
}

fn bad(key: &str, reason: impl Into<String>) -> (String, String) {
    (key.to_owned(), reason.into())
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(byte)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A warning when the config file at `path` holds secrets and other users
/// may read it (any of the group/other read bits).
pub fn readable_by_others(config: &Config, path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (config.holds_secrets() && mode & 0o044 != 0).then(|| {
        format!(
            "{} holds secrets and is readable by other users (mode {:03o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// The data directory used when neither `--data-dir` nor `data_dir` says.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("ivm");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/ivm");
    }
    PathBuf::from("ivm-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn empty_file_gives_every_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn empty_switch_section_enables_it_with_defaults() {
        let c = parse("[asterisk]\n").unwrap();
        assert_eq!(c.asterisk, Some(AsteriskConfig::default()));
        assert!(c.freeswitch.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let e = parse("[delivery]\nring_timeout_secs = 3\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "delivery.ring_timeout_secs"),
            "{e}"
        );
        let e = parse("colour = 1\n").unwrap_err();
        assert!(e.to_string().contains("`colour`"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = parse("[limits]\nmax_message_seconds = \"long\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "limits.max_message_seconds"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_value_is_named() {
        let e = parse("[delivery]\ncatch_up_speed = 7.5\n").unwrap_err();
        assert!(e.to_string().contains("delivery.catch_up_speed"), "{e}");
        let e = parse("[numbering]\nmessage_code = \"77\"\n").unwrap_err();
        assert!(e.to_string().contains("numbering.message_code"), "{e}");
    }

    #[test]
    fn retention_is_optional_and_bounded() {
        assert_eq!(parse("").unwrap().retention, RetentionConfig::default());
        let c = parse("[retention]\nheard_days = 30\nunheard_days = 0\n").unwrap();
        assert_eq!((c.retention.heard_days, c.retention.unheard_days), (30, 0));
        let e = parse("[retention]\nunheard_days = 99999\n").unwrap_err();
        assert!(e.to_string().contains("retention.unheard_days"), "{e}");
        let e = parse("[retention]\nheard_days = -1\n").unwrap_err();
        assert!(e.to_string().contains("heard_days"), "{e}");
        let e = parse("[retention]\nheard_after = 3\n").unwrap_err();
        assert!(e.to_string().contains("retention.heard_after"), "{e}");
    }

    #[test]
    fn overlapping_codes_are_rejected() {
        let e = parse("[numbering]\ngroup_code = \"*7\"\n").unwrap_err();
        assert!(e.to_string().contains("prefixes"), "{e}");
        let e = parse("[numbering]\ndnd_code = \"*77\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "numbering.dnd_code"),
            "{e}"
        );
        let e = parse("[numbering]\naway_code = \"63\"\n").unwrap_err();
        assert!(e.to_string().contains("numbering.away_code"), "{e}");
    }

    #[test]
    fn bad_socket_address_is_named() {
        let e = parse("[asterisk]\nami_address = \"localhost\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "asterisk.ami_address"),
            "{e}"
        );
    }

    #[test]
    fn media_mode_and_media_listen() {
        let c = parse("[delivery]\nmedia = \"files\"\n").unwrap();
        assert_eq!(c.delivery.media, MediaMode::Files);
        assert_eq!(Config::default().delivery.media, MediaMode::Stream);
        let e = parse("[delivery]\nmedia = \"rtp\"\n").unwrap_err();
        assert!(e.to_string().contains("media"), "{e}");
        let e = parse("[asterisk]\nmedia_listen = \"0.0.0.0:4574\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "asterisk.media_listen"),
            "{e}"
        );
        let e = parse(
            "[asterisk]\nmedia_listen = \"127.0.0.1:4573\"\nagi_listen = \"127.0.0.1:4573\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("media_listen"), "{e}");
        let c = parse("[asterisk]\nmedia_listen = \"127.0.0.1:4574\"\n").unwrap();
        assert_eq!(c.asterisk.unwrap().media_listen.port(), 4574);
    }

    #[test]
    fn verify_uuids_and_sounds_dir() {
        let c = parse("[freeswitch]\n").unwrap();
        assert!(c.freeswitch.unwrap().verify_uuids, "on by default");
        let c = parse("[freeswitch]\nverify_uuids = false\n").unwrap();
        assert!(!c.freeswitch.unwrap().verify_uuids);
        let e = parse("[freeswitch]\nverify_uuids = \"yes\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "freeswitch.verify_uuids"),
            "{e}"
        );

        let c = parse("data_dir = \"/srv/ivm\"\n").unwrap();
        assert_eq!(c.sounds_dir(), PathBuf::from("/srv/ivm/sounds"));
        let c =
            parse("data_dir = \"/srv/ivm\"\n[server]\nsounds_dir = \"/usr/share/ivm/sounds\"\n")
                .unwrap();
        assert_eq!(c.sounds_dir(), PathBuf::from("/usr/share/ivm/sounds"));
        let e = parse("[server]\nsounds_dir = \"sounds\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "server.sounds_dir"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_gives_the_line() {
        let e = parse("data_dir = \"/x\"\n[limits\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
    }

    #[test]
    fn masked_output_hides_secrets_and_reparses() {
        let c = parse(
            "[asterisk]\nami_secret = \"hunter2\"\n[freeswitch]\nesl_password = \"s3cret\"\n",
        )
        .unwrap();
        let shown = c.to_toml_masked();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(parse(&shown).is_ok(), "{shown}");
    }

    #[test]
    fn call_control_values_that_could_inject_are_refused() {
        for (text, key) in [
            (
                "[asterisk]\ncontext = \"x,F(default^666^1)\"\n",
                "asterisk.context",
            ),
            (
                "[asterisk]\nagi_allow = [\"10.0.0.0/40\"]\n",
                "asterisk.agi_allow",
            ),
            ("[asterisk]\nagi_secret = \"a,b\"\n", "asterisk.agi_secret"),
            (
                "[freeswitch]\noutbound_secret = \"a}b\"\n",
                "freeswitch.outbound_secret",
            ),
            (
                "[numbering]\nexternal_targets = [\"0049[1-9]\"]\n",
                "numbering.external_targets",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::BadValue { key: k, .. } if k == key),
                "{text}: {e}"
            );
        }
        let weak = parse("[asterisk]\n").unwrap().weak_secrets();
        assert_eq!(weak.len(), 2, "{weak:?}");
        let strong =
            parse("[asterisk]\nami_secret = \"a-real-one\"\nagi_secret = \"0123456789abcdef\"\n")
                .unwrap();
        assert!(strong.weak_secrets().is_empty());
    }

    #[test]
    fn external_lookup_keys_are_checked_and_named() {
        let c = parse("[presence.external]\nurl = \"http://127.0.0.1:9/hlr?key=k\"\n").unwrap();
        let e = c.presence.external.unwrap();
        assert_eq!((e.timeout_ms, e.cache_ttl_seconds), (800, 300));
        assert!(parse("").unwrap().presence.external.is_none());
        for (text, key) in [
            ("[presence.external]\n", "presence.external.url"),
            (
                "[presence.external]\nurl = \"ftp://x\"\n",
                "presence.external.url",
            ),
            (
                "[presence.external]\nurl = \"http://\"\n",
                "presence.external.url",
            ),
            (
                "[presence.external]\nurl = \"http://x/a b\"\n",
                "presence.external.url",
            ),
            (
                "[presence.external]\nurl = \"http://x\"\ntimeout_ms = 20\n",
                "presence.external.timeout_ms",
            ),
            (
                "[presence.external]\nurl = \"http://x\"\ntimeout_ms = 60000\n",
                "presence.external.timeout_ms",
            ),
            (
                "[presence.external]\nurl = \"http://x\"\ntimeout_ms = -1\n",
                "presence.external.timeout_ms",
            ),
            (
                "[presence.external]\nurl = \"http://x\"\ncache_ttl_seconds = 999999\n",
                "presence.external.cache_ttl_seconds",
            ),
            (
                "[presence.external]\nurl = \"http://x\"\ntoken = \"a b\"\n",
                "presence.external.token",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::BadValue { key: k, .. } if k == key),
                "{text}: {e}"
            );
        }
        let e = parse("[presence.external]\nurl = \"http://x\"\ntimeout = 5\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "presence.external.timeout"),
            "{e}"
        );
        let e = parse("[presence]\nhlr = 1\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "presence.hlr"),
            "{e}"
        );
        let c = parse("[presence.external]\nurl = \"https://hlr.example\"\ntoken = \"s3cret\"\n")
            .unwrap();
        assert!(c.holds_secrets());
        let shown = c.to_toml_masked();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(parse(&shown).is_ok(), "{shown}");
    }

    #[test]
    fn explicit_path_wins_over_env() {
        let p = Config::locate(Some(Path::new("/a.toml")), Some("/b.toml"));
        assert_eq!(p, Some(PathBuf::from("/a.toml")));
        let p = Config::locate(None, Some("/b.toml"));
        assert_eq!(p, Some(PathBuf::from("/b.toml")));
    }
}
