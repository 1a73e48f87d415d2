//! Carries out retrieval's actions (the decisions are
//! `engine::retrieval`'s): store lookups, PIN checks, the miss count, the
//! delivery's state and lamp, the sender's status, and watching a message
//! that is still being recorded grow on disk.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::domain::{DeliveryState, Extension, MessageId, MessageState, OutboxId, UserId};
use crate::engine::pin::{self, MAX_MAILBOX_MISSES, MAX_MISSES, MISS_WINDOW};
use crate::engine::retrieval::{Request, Retrieval, RetrievalConfig};
use crate::engine::{Action, Input, Miss, Pin, Query, StoredMessage};
use crate::notify::{NotificationPayload, Redacted};
use crate::store::validate::pin_matches;
use crate::store::{StoreError, now_ms};
use crate::switch::{CallId, HangupCause};

use super::drive::{FlowMedia, drive};
use super::router::Caller;
use super::{Ctx, MENU_TIMEOUT, ServerError, notifications};

/// While a message is still being recorded, play once this much more is
/// on disk (100 ms at 8 kHz).
const MIN_PLAY_SAMPLES: u64 = 800;

fn config(
    ctx: &Ctx,
    call: CallId,
    caller: &str,
    source: String,
    request: Request,
) -> RetrievalConfig {
    let intro = ctx.config.delivery.intro;
    RetrievalConfig {
        call,
        caller: Extension::new(caller),
        source: Extension::new(source),
        request,
        min_play_samples: MIN_PLAY_SAMPLES,
        menu_timeout: MENU_TIMEOUT,
        intro,
    }
}

/// Serve a `*55` call from answer to hang-up.
pub(super) async fn serve(
    ctx: &Ctx,
    caller: &Caller,
    request: Request,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    // Only whom the switch vouches for is "the caller"; otherwise nobody,
    // and the flow asks for extension * PIN.
    let (vouched, source) = match &caller.endpoint {
        Some(endpoint) => (endpoint.as_str(), endpoint.clone()),
        None => ("", format!("cid:{}", caller.number)),
    };
    let flow = Retrieval::start(config(ctx, caller.call.clone(), vouched, source, request));
    drive(ctx, flow, &mut inputs, &mut Watcher::default()).await
}

/// The target answered a smart-caller-ID call (outbox item `item`): it
/// rang their own phone, so play the message it announces.
pub(super) async fn missed_call(
    ctx: &Ctx,
    call: CallId,
    item: OutboxId,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let stored = ctx.store.call(move |s| s.outbox_item(item.0)).await??;
    let announced = stored.and_then(|stored| {
        let payload: NotificationPayload = serde_json::from_str(&stored.payload_json).ok()?;
        let NotificationPayload::MissedCall { caller_number, .. } = payload else {
            return None;
        };
        let code = ctx.plan.parse(&caller_number).ok()?.message_code?;
        Some((stored.recipient, crate::domain::MessageCode::parse(&code)?))
    });
    let Some((user, code)) = announced else {
        warn!(%item, "an answered missed call for no known message");
        let _ = ctx.switch.hangup(&call, HangupCause::Normal).await;
        return Ok(());
    };
    info!(%item, "missed call answered: playing its message");
    let request = Request::Announced {
        user: UserId::new(user.clone()),
        code,
    };
    // ivm rang the user's own phone: vouched by construction.
    let flow = Retrieval::start(config(ctx, call, &user, user.clone(), request));
    drive(ctx, flow, &mut inputs, &mut Watcher::default()).await
}

/// The lock-out window's start, in the store's wall-clock milliseconds.
fn window(now_ms: i64) -> i64 {
    now_ms - MISS_WINDOW.as_millis() as i64
}

/// Answer [`Action::Lookup`]. A lookup by code is an attempt: checked
/// against the lock-out and counted as a miss in one transaction, taken
/// back when the message is found.
pub(super) async fn lookup(
    ctx: &Ctx,
    user: UserId,
    query: Query,
    source: Extension,
) -> Result<Input, ServerError> {
    let data_dir = ctx.data_dir.clone();
    let (found, user_known, recent_misses) = ctx
        .store
        .call(move |s| {
            let now = now_ms();
            let own = pin::own(&user, source.as_str());
            let (counts, miss) = match &query {
                Query::Code(_) => {
                    s.pin_attempt(user.as_str(), source.as_str(), window(now), now, |counts| {
                        pin::locked_out(counts, own)
                    })?
                }
                Query::NewestUnheard { .. } => (
                    s.pin_misses(user.as_str(), source.as_str(), window(now))?,
                    None,
                ),
            };
            let found = match &query {
                Query::Code(_) if miss.is_none() => None,
                Query::Code(code) => s.retrievable_by_code(user.as_str(), code)?,
                Query::NewestUnheard { skip } => s.newest_unheard(user.as_str(), skip)?,
            };
            if let (Some(id), Some(_)) = (miss, &found) {
                s.forget_pin_miss(id)?;
            }
            let known = s.user(user.as_str())?.is_some();
            Ok::<_, StoreError>((found, known, counts))
        })
        .await??;
    let message = found.map(|r| {
        info!(
            message_id = %r.message_id,
            live = r.state == MessageState::Recording,
            "retrieving a message"
        );
        StoredMessage {
            id: r.message_id,
            sender: r.sender,
            path: data_dir.join(&r.audio_path),
            recording: r.state == MessageState::Recording,
            delivery_state: r.delivery_state,
            age: std::time::Duration::from_millis(
                u64::try_from(crate::store::now_ms().saturating_sub(r.started_at_ms)).unwrap_or(0),
            ),
        }
    });
    Ok(Input::Found {
        message,
        user_known,
        recent_misses,
    })
}

/// Answer [`Action::VerifyPin`]: check the lock-out and count the attempt
/// as a miss in one transaction, hash on the blocking pool (never on the
/// store's thread), take the miss back if the PIN matched.
pub(super) async fn verify_pin(
    ctx: &Ctx,
    user: UserId,
    entered: Pin,
    source: Extension,
) -> Result<Input, ServerError> {
    let mailbox = user.clone();
    let (recent_misses, miss, hash) = ctx
        .store
        .call(move |s| {
            let now = now_ms();
            let own = pin::own(&mailbox, source.as_str());
            let (counts, miss) = s.pin_attempt(
                mailbox.as_str(),
                source.as_str(),
                window(now),
                now,
                |counts| pin::locked_out(counts, own),
            )?;
            let hash = match miss {
                Some(_) => s.pin_hash(mailbox.as_str())?,
                None => None,
            };
            Ok::<_, StoreError>((counts, miss, hash))
        })
        .await??;
    let ok = match hash {
        Some(hash) => tokio::task::spawn_blocking(move || pin_matches(&entered.0, &hash))
            .await
            .unwrap_or(false),
        None => false,
    };
    if let (true, Some(id)) = (ok, miss) {
        ctx.store.call(move |s| s.forget_pin_miss(id)).await??;
    }
    Ok(Input::PinChecked { ok, recent_misses })
}

/// A miss the engine saw: the attempt was counted when it was made.
pub(super) fn count_miss(user: &UserId, miss: Miss) {
    let why = match miss {
        Miss::NoSuchCode => "no message with this code for the caller",
        Miss::WrongPin => "wrong PIN",
        Miss::NoSuchCodeForUser => "no message with this code for the user",
    };
    warn!(user = %Redacted(user.as_str()), "wrong retrieval attempt: {why}");
}

pub(super) fn locked_out(user: &UserId) {
    warn!(
        user = %Redacted(user.as_str()),
        "retrieval refused: locked out after {MAX_MISSES} wrong attempts from the caller \
         (or {MAX_MAILBOX_MISSES} from all) within {} minutes",
        MISS_WINDOW.as_secs() / 60
    );
}

/// Set the delivery's state; update the lamp.
pub(super) async fn set_delivery_state(
    ctx: &Ctx,
    message: MessageId,
    target: &UserId,
    state: DeliveryState,
) {
    let to = target.clone();
    if let Err(e) = ctx
        .store
        .call(move |s| s.set_delivery_state(message, to.as_str(), state))
        .await
        .map_err(ServerError::from)
        .and_then(|r| r.map_err(ServerError::from))
    {
        warn!(message_id = %message, %state, "cannot set the delivery state: {e}");
        return;
    }
    if state == DeliveryState::Deleted {
        info!(message_id = %message, user = %Redacted(target.as_str()), "message deleted");
    } else {
        info!(message_id = %message, user = %Redacted(target.as_str()), %state, "delivery state set");
    }
    if let Err(e) = notifications::lamp_update(
        &ctx.store,
        &ctx.outbox,
        &ctx.config.notify,
        message,
        target.as_str(),
        state,
    )
    .await
    {
        warn!(message_id = %message, "cannot update the lamp: {e}");
    }
}

/// Played to its end the first time: the sender is told it was heard.
pub(super) async fn tell_sender_heard(
    ctx: &Ctx,
    message: MessageId,
    sender: &Extension,
    target: &UserId,
) {
    if let Err(e) = notifications::sender_status(
        &ctx.store,
        &ctx.outbox,
        &ctx.config.notify,
        crate::notify::SenderStatus::HeardLater,
        message,
        sender.as_str(),
        target.as_str(),
    )
    .await
    {
        warn!(message_id = %message, "cannot write the status to the sender: {e}");
    }
}

/// Watches the message being played: its length on disk, and whether it
/// is still being recorded.
#[derive(Default)]
struct Watcher {
    watched: Option<(MessageId, PathBuf)>,
    last_samples: u64,
}

impl Watcher {
    async fn report(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError> {
        let Some((message, path)) = &self.watched else {
            return Ok(Vec::new());
        };
        let message = *message;
        // The state first: once it is not `recording`, the file is whole.
        let state = ctx.store.call(move |s| s.message_state(message)).await??;
        let samples = std::fs::metadata(path).map(|m| m.len() / 2).unwrap_or(0);
        if state != Some(MessageState::Recording) {
            self.watched = None;
            return Ok(vec![Input::RecordingDone { samples }]);
        }
        if samples > self.last_samples {
            self.last_samples = samples;
            return Ok(vec![Input::ListenGrew { samples }]);
        }
        Ok(Vec::new())
    }
}

impl FlowMedia for Watcher {
    async fn perform(&mut self, _: &Ctx, action: &Action) -> Result<bool, ServerError> {
        match action {
            // Reported from the next tick on (every `PUMP_INTERVAL`).
            Action::Watch { message, path } => {
                self.watched = Some((*message, path.clone()));
                self.last_samples = 0;
            }
            Action::Unwatch => self.watched = None,
            _ => return Ok(false),
        }
        Ok(true)
    }

    async fn tick(&mut self, ctx: &Ctx) -> Result<Vec<Input>, ServerError> {
        self.report(ctx).await
    }

    fn wants_ticks(&self) -> bool {
        self.watched.is_some()
    }
}
