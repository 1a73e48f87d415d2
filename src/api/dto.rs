//! The JSON shapes of the API (with their OpenAPI schemas), made from the
//! store's rows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::api::{DeliveryInfo, MessageInfo, PresenceRow};
use crate::store::{Group, User};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserDto {
    pub extension: String,
    pub name: String,
    pub mobile: Option<String>,
    pub has_pin: bool,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            extension: u.extension,
            name: u.name,
            mobile: u.mobile,
            has_pin: u.has_pin,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserDto {
    pub extension: String,
    pub name: String,
    pub mobile: Option<String>,
    /// Numeric PIN for retrieval from other phones; stored hashed.
    pub pin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupDto {
    pub number: String,
    pub name: Option<String>,
    pub members: Vec<String>,
}

impl From<Group> for GroupDto {
    fn from(g: Group) -> Self {
        Self {
            number: g.number,
            name: g.name,
            members: g.members,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDto {
    pub to: String,
    /// pending, ringing, listening, heard, unheard, rejected, busy,
    /// unreachable, expired, deleted
    pub state: String,
    pub updated_at_ms: i64,
}

impl From<DeliveryInfo> for DeliveryDto {
    fn from(d: DeliveryInfo) -> Self {
        Self {
            to: d.to,
            state: d.state.as_str().to_owned(),
            updated_at_ms: d.updated_at_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageDto {
    pub id: i64,
    pub from: String,
    pub group: Option<String>,
    /// recording, complete, partial, failed
    pub state: String,
    pub started_at_ms: i64,
    pub duration_ms: Option<i64>,
    /// Whether `/api/v1/messages/{id}/audio` has the WAV.
    pub has_audio: bool,
    pub deliveries: Vec<DeliveryDto>,
}

impl From<MessageInfo> for MessageDto {
    fn from(m: MessageInfo) -> Self {
        Self {
            id: m.id.0,
            from: m.from,
            group: m.group,
            state: m.state.as_str().to_owned(),
            started_at_ms: m.started_at_ms,
            duration_ms: m.duration_ms,
            has_audio: m.has_audio,
            deliveries: m.deliveries.into_iter().map(DeliveryDto::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageDto>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceDto {
    pub endpoint: String,
    /// unknown, idle, in_use, busy, ringing, on_hold, unavailable
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceRowDto {
    pub extension: String,
    pub registered: bool,
    pub device_state: String,
    pub user_status: String,
    pub updated_at_ms: i64,
    /// `unknown`, `registered` or `unregistered`.
    pub registration: String,
    /// How many contacts (registered devices) the switch reported.
    pub contacts: u32,
    /// When an `away` set for a time ends.
    pub away_until_ms: Option<i64>,
}

impl From<PresenceRow> for PresenceRowDto {
    fn from(p: PresenceRow) -> Self {
        Self {
            extension: p.extension,
            registered: p.registered,
            device_state: p.device_state,
            user_status: p.user_status,
            updated_at_ms: p.updated_at_ms,
            registration: p.registration,
            contacts: p.contacts,
            away_until_ms: p.away_until_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceDto {
    /// Device states the switches reported since ivm started.
    pub devices: Vec<DeviceDto>,
    /// The store's presence table.
    pub stored: Vec<PresenceRowDto>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxCount {
    pub channel: String,
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxDto {
    /// Items not finished (pending or sending).
    pub depth: i64,
    pub items: Vec<OutboxCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SwitchStatus {
    pub name: String,
    pub connected: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub switches: Vec<SwitchStatus>,
}

/// Body of `PUT /api/v1/users/{extension}/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusDto {
    /// `available`, `dnd` or `away`.
    pub status: String,
    /// With `away` only: it ends this many seconds from now (absent: until
    /// changed).
    pub away_seconds: Option<u32>,
}
