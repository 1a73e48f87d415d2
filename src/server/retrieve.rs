//! Instant retrieval (S4): `*55` + code plays that message, live if it is
//! still being recorded; `*55` alone plays the newest unheard message, then
//! the next.
//!
//! Who may retrieve: the addressed target only. A caller is the user whose
//! number the caller ID shows, and codes are looked up per target, so a code
//! of someone else's message finds nothing. From another phone the caller
//! keys `extension * PIN #` after the beep. Every miss (a code that is not
//! the caller's, a wrong PIN) counts against that user; after
//! [`MAX_WRONG`] misses within [`WRONG_WINDOW`] the user is locked out until
//! the oldest miss leaves the window. Misses and lock-outs are logged.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::domain::{DeliveryState, MessageCode, MessageId, MessageState};
use crate::engine::Input;
use crate::media::AudioFormat;
use crate::notify::NotificationPayload;
use crate::numbering::DialKind;
use crate::store::Retrievable;
use crate::switch::{CallId, HangupCause, Media, PlayRequest};

use super::{Caller, Ctx, ServerError, notifications, sounds};

/// Wrong attempts a user may make within [`WRONG_WINDOW`].
pub const MAX_WRONG: usize = 5;
pub const WRONG_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long the caller has to key `extension * PIN #`.
const PIN_TIMEOUT: Duration = Duration::from_secs(8);
/// While a message is still being recorded, play once this much more is
/// on disk (100 ms at 8 kHz).
const MIN_PLAY_SAMPLES: u64 = 800;
const POLL: Duration = Duration::from_millis(40);
/// How long the listener menu waits for a key after its prompt.
const MENU_TIMEOUT: Duration = Duration::from_secs(8);

/// Wrong retrieval attempts per user, in memory.
#[derive(Debug)]
pub struct Attempts {
    max: usize,
    window: Duration,
    wrong: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for Attempts {
    fn default() -> Self {
        Self::new(MAX_WRONG, WRONG_WINDOW)
    }
}

impl Attempts {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            wrong: Mutex::new(HashMap::new()),
        }
    }

    fn with_user<R>(
        &self,
        user: &str,
        now: Instant,
        f: impl FnOnce(&mut VecDeque<Instant>) -> R,
    ) -> R {
        let mut all = self.wrong.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(user.to_owned()).or_default();
        while list
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            list.pop_front();
        }
        let result = f(list);
        if list.is_empty() {
            all.remove(user);
        }
        result
    }

    /// Whether `user` has used up their wrong attempts.
    pub fn locked(&self, user: &str, now: Instant) -> bool {
        self.with_user(user, now, |list| list.len() >= self.max)
    }

    /// Count a wrong attempt; returns how many are in the window now.
    pub fn wrong(&self, user: &str, now: Instant) -> usize {
        self.with_user(user, now, |list| {
            list.push_back(now);
            list.len()
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Heard {
    ToTheEnd,
    Skipped,
    HungUp,
}

/// Serve a `*55` call from answer to hang-up.
pub(super) async fn serve(
    ctx: &Ctx,
    caller: &Caller,
    kind: DialKind,
    code: Option<String>,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let call = &caller.call;
    if ctx.switch.answer(call).await.is_err() {
        return Ok(());
    }
    let mut user = caller.number.clone();
    if ctx.attempts.locked(&user, Instant::now()) {
        return locked_out(ctx, caller, &user, inputs).await;
    }
    let mut found = lookup(ctx, &user, kind, code.as_deref(), &[]).await?;
    if found.is_none() {
        if kind == DialKind::RetrieveNext {
            let number = user.clone();
            if ctx.store.call(move |s| s.user(&number)).await??.is_some() {
                return end_with(ctx, call, sounds::NO_MESSAGES, inputs).await;
            }
        } else {
            let count = ctx.attempts.wrong(&user, Instant::now());
            warn!(
                user = %user,
                caller = %caller.number,
                wrong = count,
                "wrong retrieval attempt: no message with this code for the caller"
            );
        }
        // Perhaps the user calls from another phone: extension * PIN #.
        let Some(entry) = ask(ctx, call, inputs).await else {
            return end_with(ctx, call, sounds::INVALID, inputs).await;
        };
        let Some((extension, pin)) = entry.split_once('*') else {
            return end_with(ctx, call, sounds::INVALID, inputs).await;
        };
        let (extension, pin) = (extension.to_owned(), pin.to_owned());
        if ctx.attempts.locked(&extension, Instant::now()) {
            return locked_out(ctx, caller, &extension, inputs).await;
        }
        let ext = extension.clone();
        if !ctx.store.call(move |s| s.verify_pin(&ext, &pin)).await?? {
            let count = ctx.attempts.wrong(&extension, Instant::now());
            warn!(
                user = %extension,
                caller = %caller.number,
                wrong = count,
                "wrong retrieval attempt: wrong PIN"
            );
            return end_with(ctx, call, sounds::INVALID, inputs).await;
        }
        user = extension;
        found = lookup(ctx, &user, kind, code.as_deref(), &[]).await?;
        if found.is_none() {
            if kind == DialKind::Retrieve {
                let count = ctx.attempts.wrong(&user, Instant::now());
                warn!(user = %user, caller = %caller.number, wrong = count,
                    "wrong retrieval attempt: no message with this code for the user");
                return end_with(ctx, call, sounds::INVALID, inputs).await;
            }
            return end_with(ctx, call, sounds::NO_MESSAGES, inputs).await;
        }
    }
    play_all(ctx, call, &user, kind, found, inputs).await
}

/// Play `found`, then (for `*55` alone) the next unheard, and so on; mark
/// each heard once played to its end; say goodbye and hang up.
async fn play_all(
    ctx: &Ctx,
    call: &CallId,
    user: &str,
    kind: DialKind,
    mut found: Option<Retrievable>,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let mut played = Vec::new();
    while let Some(message) = found {
        info!(
            message_id = %message.message_id,
            user = %user,
            live = message.state == MessageState::Recording,
            "retrieving a message"
        );
        // A beep before each message marks where it starts.
        if say(ctx, call, sounds::BEEP, "", inputs).await.is_none() {
            return Ok(());
        }
        match play_message(ctx, call, &message, inputs).await? {
            Heard::HungUp => return Ok(()),
            Heard::Skipped => {}
            Heard::ToTheEnd => {
                mark_heard(ctx, &message, user).await;
                if listener_menu(ctx, call, &message, user, inputs).await? == After::Ended {
                    return Ok(());
                }
            }
        }
        played.push(message.message_id);
        if kind == DialKind::Retrieve {
            break;
        }
        found = lookup(ctx, user, kind, None, &played).await?;
    }
    end_with(ctx, call, sounds::GOODBYE, inputs).await
}

#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Go on: the next message, or goodbye.
    Next,
    /// The call is over (hung up, or ended for a reply or call back).
    Ended,
}

/// After a message played to its end: the listener menu of live delivery
/// (1 replay, 2 reply, 3 call back, 4 save, 7 delete). Save keeps the
/// delivery `heard`; delete marks it `deleted`. No key within
/// [`MENU_TIMEOUT`] goes on as save does, without the prompt.
async fn listener_menu(
    ctx: &Ctx,
    call: &CallId,
    message: &Retrievable,
    user: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<After, ServerError> {
    loop {
        let Some(key) = menu_key(ctx, call, inputs).await else {
            return Ok(After::Ended);
        };
        match key.and_then(MenuKey::of) {
            None if key.is_none() => return Ok(After::Next),
            None => {} // an unknown key: the menu again
            Some(MenuKey::Replay) => {
                if say(ctx, call, sounds::BEEP, "", inputs).await.is_none() {
                    return Ok(After::Ended);
                }
                if play_message(ctx, call, message, inputs).await? == Heard::HungUp {
                    return Ok(After::Ended);
                }
            }
            Some(MenuKey::Reply) => {
                // As in live delivery: the router starts a new message from
                // this call to the sender.
                ctx.reply(call.clone(), user, message.sender.as_str());
                return Ok(After::Ended);
            }
            Some(MenuKey::CallBack) => {
                if let Err(e) = ctx.switch.connect(call, message.sender.as_str()).await {
                    info!(message_id = %message.message_id, "call back failed: {e}");
                    let _ = ctx.switch.hangup(call, HangupCause::Normal).await;
                }
                return Ok(After::Ended);
            }
            Some(MenuKey::Save) => {
                info!(message_id = %message.message_id, user = %user, "message saved");
                return Ok(match say(ctx, call, sounds::SAVED, "", inputs).await {
                    Some(_) => After::Next,
                    None => After::Ended,
                });
            }
            Some(MenuKey::Delete) => {
                set_state(ctx, message, user, DeliveryState::Deleted).await;
                info!(message_id = %message.message_id, user = %user, "message deleted");
                return Ok(match say(ctx, call, sounds::DELETED, "", inputs).await {
                    Some(_) => After::Next,
                    None => After::Ended,
                });
            }
        }
    }
}

/// The keys of the listener menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MenuKey {
    Replay,
    Reply,
    CallBack,
    Save,
    Delete,
}

impl MenuKey {
    const DIGITS: &str = "12347";

    fn of(digit: char) -> Option<Self> {
        Some(match digit {
            '1' => Self::Replay,
            '2' => Self::Reply,
            '3' => Self::CallBack,
            '4' => Self::Save,
            '7' => Self::Delete,
            _ => return None,
        })
    }
}

/// Say the menu and wait for a key: Some(Some(key)); Some(None): no key
/// within [`MENU_TIMEOUT`] after the prompt; None: hung up. A key pressed
/// just before the prompt started counts too.
async fn menu_key(
    ctx: &Ctx,
    call: &CallId,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Option<Option<char>> {
    let request = PlayRequest {
        media: Media::Sound(sounds::MENU.to_owned()),
        from_sample: 0,
        interrupt_digits: MenuKey::DIGITS.to_owned(),
    };
    ctx.switch.play(call, request).await.ok()?;
    let mut early = None;
    loop {
        match inputs.recv().await? {
            Input::PlaybackFinished { interrupted_by, .. } => {
                if let Some(key) = interrupted_by.or(early) {
                    return Some(Some(key));
                }
                break;
            }
            Input::Dtmf { digit, .. } => {
                early.get_or_insert(digit);
            }
            Input::HungUp { .. } => return None,
            _ => {}
        }
    }
    let deadline = Instant::now() + MENU_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, inputs.recv()).await {
            Ok(Some(Input::Dtmf { digit, .. })) => return Some(Some(digit)),
            Ok(Some(Input::HungUp { .. }) | None) => return None,
            Ok(Some(_)) => {}
            Err(_) => return Some(None),
        }
    }
}

/// The target answered a smart-caller-ID call (outbox item `outbox_id`):
/// it rang their own phone, so play the message it announces.
pub(super) async fn serve_missed_call(
    ctx: &Ctx,
    call: &CallId,
    outbox_id: i64,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let item = ctx.store.call(move |s| s.outbox_item(outbox_id)).await??;
    let announced = item.and_then(|item| {
        let payload: NotificationPayload = serde_json::from_str(&item.payload_json).ok()?;
        let NotificationPayload::MissedCall { caller_number, .. } = payload else {
            return None;
        };
        let code = ctx.plan.parse(&caller_number).ok()?.message_code?;
        Some((item.recipient, code))
    });
    let Some((user, code)) = announced else {
        warn!(outbox_id, "an answered missed call for no known message");
        let _ = ctx.switch.hangup(call, HangupCause::Normal).await;
        return Ok(());
    };
    let found = lookup(ctx, &user, DialKind::Retrieve, Some(&code), &[]).await?;
    if found.is_none() {
        return end_with(ctx, call, sounds::INVALID, inputs).await;
    }
    info!(outbox_id, user = %user, "missed call answered: playing its message");
    play_all(ctx, call, &user, DialKind::Retrieve, found, inputs).await
}

async fn lookup(
    ctx: &Ctx,
    user: &str,
    kind: DialKind,
    code: Option<&str>,
    skip: &[MessageId],
) -> Result<Option<Retrievable>, ServerError> {
    let (user, code, skip) = (user.to_owned(), code.map(str::to_owned), skip.to_vec());
    Ok(ctx
        .store
        .call(move |s| match (kind, code) {
            (DialKind::Retrieve, Some(code)) => match MessageCode::parse(&code) {
                Some(code) => s.retrievable_by_code(&user, &code),
                None => Ok(None),
            },
            _ => s.newest_unheard(&user, &skip),
        })
        .await??)
}

/// Set the delivery's state; update the lamp. False if it could not be set.
async fn set_state(ctx: &Ctx, message: &Retrievable, user: &str, state: DeliveryState) -> bool {
    let (id, target) = (message.message_id, user.to_owned());
    if let Err(e) = ctx
        .store
        .call(move |s| s.set_delivery_state(id, &target, state))
        .await
        .map_err(ServerError::from)
        .and_then(|r| r.map_err(ServerError::from))
    {
        warn!(message_id = %id, %state, "cannot set the delivery state: {e}");
        return false;
    }
    if let Err(e) =
        notifications::lamp_update(&ctx.store, &ctx.outbox, &ctx.config.notify, id, user, state)
            .await
    {
        warn!(message_id = %id, "cannot update the lamp: {e}");
    }
    true
}

/// Played to its end: heard; the sender is told it was heard later.
async fn mark_heard(ctx: &Ctx, message: &Retrievable, user: &str) {
    let first_time = message.delivery_state != DeliveryState::Heard;
    if !set_state(ctx, message, user, DeliveryState::Heard).await || !first_time {
        return;
    }
    if let Err(e) = notifications::sender_status(
        &ctx.store,
        &ctx.outbox,
        &ctx.config.notify,
        crate::notify::SenderStatus::HeardLater,
        message.message_id,
        message.sender.as_str(),
        user,
    )
    .await
    {
        warn!(
            message_id = %message.message_id,
            "cannot write the status to the sender: {e}"
        );
    }
}

async fn locked_out(
    ctx: &Ctx,
    caller: &Caller,
    user: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    warn!(
        user = %user,
        caller = %caller.number,
        "retrieval refused: locked out after {MAX_WRONG} wrong attempts within {} minutes",
        WRONG_WINDOW.as_secs() / 60
    );
    end_with(ctx, &caller.call, sounds::ERROR, inputs).await
}

/// Say `sound`, wait for it to end (or the caller to go), hang up.
async fn end_with(
    ctx: &Ctx,
    call: &CallId,
    sound: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    if say(ctx, call, sound, "", inputs).await.is_some() {
        let _ = ctx.switch.hangup(call, HangupCause::Normal).await;
    }
    Ok(())
}

/// Play a sound and wait for its end: the digit that stopped it, or None
/// when the caller hung up.
async fn say(
    ctx: &Ctx,
    call: &CallId,
    sound: &str,
    interrupt: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Option<Option<char>> {
    let request = PlayRequest {
        media: Media::Sound(sound.to_owned()),
        from_sample: 0,
        interrupt_digits: interrupt.to_owned(),
    };
    ctx.switch.play(call, request).await.ok()?;
    wait_playback(inputs).await.map(|(_, digit)| digit)
}

/// The end of the current playback: (stopped at, digit); None: hung up.
async fn wait_playback(inputs: &mut mpsc::UnboundedReceiver<Input>) -> Option<(u64, Option<char>)> {
    while let Some(input) = inputs.recv().await {
        match input {
            Input::PlaybackFinished {
                stopped_at_sample,
                interrupted_by,
                ..
            } => return Some((stopped_at_sample, interrupted_by)),
            Input::HungUp { .. } => return None,
            _ => {}
        }
    }
    None
}

/// Beep, then collect digits up to `#`: None on hang-up or silence.
async fn ask(
    ctx: &Ctx,
    call: &CallId,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Option<String> {
    let mut entry = String::new();
    let digits = "0123456789*#";
    match say(ctx, call, sounds::BEEP, digits, inputs).await? {
        Some('#') => return Some(entry),
        Some(d) => entry.push(d),
        None => {}
    }
    let deadline = Instant::now() + PIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, inputs.recv()).await {
            Ok(Some(Input::Dtmf { digit: '#', .. })) => return Some(entry),
            Ok(Some(Input::Dtmf { digit, .. })) if entry.len() < 32 => entry.push(digit),
            Ok(Some(Input::HungUp { .. }) | None) => return None,
            Ok(Some(_)) => {}
            Err(_) => return None,
        }
    }
}

async fn message_recording(ctx: &Ctx, message_id: MessageId) -> bool {
    ctx.store
        .call(move |s| s.message_state(message_id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .is_some_and(|state| state == MessageState::Recording)
}

/// Play one message from its start to its end; while it is still being
/// recorded, play what is on disk and chain the next play as it grows.
async fn play_message(
    ctx: &Ctx,
    call: &CallId,
    message: &Retrievable,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<Heard, ServerError> {
    let path = ctx.data_dir.join(&message.audio_path);
    let mut position = 0u64;
    let mut stalled = 0;
    loop {
        let recording = message_recording(ctx, message.message_id).await;
        let samples = std::fs::metadata(&path).map(|m| m.len() / 2).unwrap_or(0);
        let ahead = if recording { MIN_PLAY_SAMPLES } else { 1 };
        if samples >= position + ahead {
            let request = PlayRequest {
                media: Media::File {
                    path: path.clone(),
                    format: AudioFormat::Slin { sample_rate: 8_000 },
                },
                from_sample: position,
                interrupt_digits: "#".into(),
            };
            if ctx.switch.play(call, request).await.is_err() {
                return Ok(Heard::HungUp);
            }
            match wait_playback(inputs).await {
                None => return Ok(Heard::HungUp),
                Some((_, Some('#'))) => return Ok(Heard::Skipped),
                Some((stopped_at, _)) => {
                    if stopped_at <= position {
                        stalled += 1;
                        if stalled >= 3 && !recording {
                            break;
                        }
                        tokio::time::sleep(POLL).await;
                    } else {
                        stalled = 0;
                    }
                    position = position.max(stopped_at);
                }
            }
        } else if !recording {
            break;
        } else {
            // Wait for more audio, noticing a hang-up meanwhile.
            if let Ok(Some(Input::HungUp { .. }) | None) =
                tokio::time::timeout(POLL, inputs.recv()).await
            {
                return Ok(Heard::HungUp);
            }
        }
    }
    Ok(Heard::ToTheEnd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_keys_are_those_of_live_delivery() {
        assert_eq!(MenuKey::of('1'), Some(MenuKey::Replay));
        assert_eq!(MenuKey::of('2'), Some(MenuKey::Reply));
        assert_eq!(MenuKey::of('3'), Some(MenuKey::CallBack));
        assert_eq!(MenuKey::of('4'), Some(MenuKey::Save));
        assert_eq!(MenuKey::of('7'), Some(MenuKey::Delete));
        assert_eq!(MenuKey::of('5'), None);
        assert!(MenuKey::DIGITS.chars().all(|d| MenuKey::of(d).is_some()));
    }

    #[test]
    fn the_sixth_wrong_attempt_within_the_window_is_locked_out() {
        let attempts = Attempts::new(5, Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 1..=5 {
            assert!(!attempts.locked("1002", t0), "attempt {i}");
            assert_eq!(attempts.wrong("1002", t0), i);
        }
        assert!(attempts.locked("1002", t0));
        assert!(!attempts.locked("1003", t0), "per user");
        assert!(attempts.locked("1002", t0 + Duration::from_secs(599)));
        assert!(
            !attempts.locked("1002", t0 + Duration::from_secs(600)),
            "the misses leave the window"
        );
    }
}
