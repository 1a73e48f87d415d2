//! The one path from a switch to the engine: each `SwitchEvent` becomes one
//! `engine::Input` for the flow its call or originate id belongs to. Starts
//! a flow per incoming call (by what was dialled), per answered
//! smart-caller-ID call, and per hand-off (a listener's reply).
//!
//! Owns: the tables of calls and originate ids to flows; the per-sender
//! limit. Must not know: any switch's syntax, what a flow decides.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::domain::Extension;
use crate::domain::{Activity, DeliveryRules, Presence, UserId, UserStatus};
use crate::engine::Input;
use crate::engine::announcement::Announcement;
use crate::engine::dial::{self, Start};
use crate::engine::presence::{PushDecision, decide_push, offers_push};
use crate::engine::retrieval::Request;
use crate::engine::sounds as prompt;
use crate::switch::{CallId, DeviceState, HangupCause, OriginateId, SwitchEvent};

use super::deliver::deliver;
use super::drive::{NoMedia, drive};
use super::{Ctx, Handoff, ServerError, retrieve};

/// After the grace, how long flows have to wind up once their calls were
/// hung up.
const WIND_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Route one switch's events to its flows until shutdown: the one path
/// from the switch to the engine. On shutdown new calls and hand-offs are
/// refused (hung up) while the flows in progress go on, for up to `[server]
/// shutdown_grace_seconds`; then their calls are hung up and the flows get
/// [`WIND_UP`] to store what they have.
pub(super) async fn serve_switch(
    ctx: Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<SwitchEvent>,
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    mut shutdown: watch::Receiver<bool>,
) {
    let grace = std::time::Duration::from_secs(ctx.config.server.shutdown_grace_seconds.into());
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<u64>();
    let (presence, changes) = mpsc::unbounded_channel();
    // What the switch says now, before any change it reports.
    let _ = presence.send(PresenceJob::Reconcile);
    tokio::spawn(keep_presence(ctx.clone(), changes));
    let mut router = Router {
        presence,
        ctx,
        ended: ended_tx,
        next: 0,
        flows: HashMap::new(),
        by_call: HashMap::new(),
        by_origin: HashMap::new(),
        draining: false,
        pushing: HashMap::new(),
        push_again: std::collections::HashSet::new(),
    };
    // Before shutdown: never; then the grace's end; then the wind-up's.
    let mut deadline: Option<Instant> = None;
    let mut hung_up_all = false;
    loop {
        if router.draining && router.flows.is_empty() {
            break;
        }
        let until = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The stop first: no call that comes after it gets a flow.
            biased;
            _ = shutdown.wait_for(|stop| *stop), if !router.draining => {
                info!(calls = router.flows.len(), ?grace, "stopping: no new calls; those in progress may finish");
                router.draining = true;
                deadline = Some(Instant::now() + grace);
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                router.route(event);
            }
            Some(handoff) = handoffs.recv() => router.hand_over(handoff),
            Some(id) = ended.recv() => router.forget(id),
            () = until => {
                if hung_up_all {
                    warn!(calls = router.flows.len(), "flows still running after the wind-up; leaving them");
                    break;
                }
                warn!(calls = router.flows.len(), "shutdown grace over: hanging up the calls in progress");
                router.hang_up_all();
                hung_up_all = true;
                deadline = Some(Instant::now() + WIND_UP);
            }
        }
    }
}

/// Which flow each call and each originate belongs to.
struct Router {
    ctx: Arc<Ctx>,
    /// Device states to keep as presence, in order.
    presence: mpsc::UnboundedSender<PresenceJob>,
    ended: mpsc::UnboundedSender<u64>,
    next: u64,
    /// Running flows: who started them (the per-sender limit) and their inputs.
    flows: HashMap<u64, (String, mpsc::UnboundedSender<Input>)>,
    by_call: HashMap<CallId, u64>,
    by_origin: HashMap<OriginateId, u64>,
    /// Shutting down: no new flows.
    draining: bool,
    /// Push flows running, and whom each calls: one at a time per user
    /// (the switch's word and a star code may both offer one).
    pushing: HashMap<u64, UserId>,
    /// Users offered a push while one was under way: looked at again when
    /// it ends, placed only if a push is still owed to them (the one under
    /// way may have decided "owed" just before the offer that would pay it).
    push_again: std::collections::HashSet<UserId>,
}

impl Router {
    fn route(&mut self, event: SwitchEvent) {
        let (flow, input) = match event {
            SwitchEvent::IncomingCall {
                call,
                caller_number,
                caller_name,
                dialed,
                endpoint,
                ..
            } => {
                let caller = Caller {
                    call,
                    number: caller_number,
                    name: caller_name,
                    dialed,
                    endpoint,
                };
                return self.incoming(caller);
            }
            SwitchEvent::Answered { origin, call } => {
                let Some(&flow) = self.by_origin.get(&origin) else {
                    return self.answered_elsewhere(origin, call);
                };
                self.by_call.insert(call.clone(), flow);
                (flow, Input::Answered { origin, call })
            }
            SwitchEvent::OriginateFailed { origin, cause } => match self.by_origin.get(&origin) {
                Some(&flow) => (flow, Input::OriginateFailed { origin, cause }),
                None => {
                    // A missed call that rang out: forget it.
                    self.ctx.missed_calls.take(&origin);
                    return;
                }
            },
            SwitchEvent::HungUp { call, cause } => match self.by_call.remove(&call) {
                Some(flow) => (flow, Input::HungUp { call, cause }),
                None => return,
            },
            SwitchEvent::Dtmf { call, digit } => match self.by_call.get(&call) {
                Some(&flow) => (flow, Input::Dtmf { call, digit }),
                None => return,
            },
            SwitchEvent::PlaybackFinished {
                call,
                stopped_at_sample,
                interrupted_by,
            } => match self.by_call.get(&call) {
                Some(&flow) => (
                    flow,
                    Input::PlaybackFinished {
                        call,
                        stopped_at_sample,
                        interrupted_by,
                    },
                ),
                None => return,
            },
            SwitchEvent::DeviceStateChanged { endpoint, state } => {
                return self.presence(endpoint, state);
            }
            SwitchEvent::ContactsChanged { endpoint, contacts } => {
                let _ = self
                    .presence
                    .send(PresenceJob::Contacts(endpoint, contacts));
                return;
            }
            SwitchEvent::Reconnected => {
                // Changes while disconnected were missed: ask again.
                let _ = self.presence.send(PresenceJob::Reconcile);
                return;
            }
            other => {
                debug!(?other, "switch event with no flow");
                return;
            }
        };
        if let Some((_, tx)) = self.flows.get(&flow) {
            let _ = tx.send(input);
        }
    }

    /// A phone's state changed: kept as its user's presence, in the order
    /// the switch said it (one writer task).
    fn presence(&mut self, endpoint: String, state: DeviceState) {
        let _ = self.presence.send(PresenceJob::Change(endpoint, state));
    }

    fn forget(&mut self, id: u64) {
        let pushed = self.pushing.remove(&id);
        self.flows.remove(&id);
        self.by_call.retain(|_, flow| *flow != id);
        self.by_origin.retain(|_, flow| *flow != id);
        if let Some(user) = pushed
            && self.push_again.remove(&user)
        {
            self.start_push(user, true);
        }
    }

    /// A new flow for `call`, started by `sender`; returns its id, the id
    /// its originate will carry, and its inputs.
    fn open(
        &mut self,
        call: &CallId,
        sender: &str,
    ) -> (u64, OriginateId, mpsc::UnboundedReceiver<Input>) {
        let id = self.next;
        self.next += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.flows.insert(id, (sender.to_owned(), tx));
        self.by_call.insert(call.clone(), id);
        let origin = crate::switch::peer::originate_id(Some(call));
        self.by_origin.insert(origin.clone(), id);
        (id, origin, rx)
    }

    fn too_many(&self, sender: &str) -> bool {
        self.flows.values().filter(|(s, _)| s == sender).count()
            >= self.ctx.config.limits.max_concurrent_messages_per_user as usize
    }

    /// Run a flow's task in its own span (the flow's id and the call's id
    /// as the switch names it — never a number); the router hears when it
    /// ends.
    fn spawn<F>(&self, id: u64, call: &CallId, what: &'static str, job: F)
    where
        F: std::future::Future<Output = Result<(), ServerError>> + Send + 'static,
    {
        let ended = self.ended.clone();
        let span = tracing::info_span!("flow", id, %call, kind = what);
        tokio::spawn(
            async move {
                if let Err(e) = job.await {
                    warn!("{what} ended with an error: {e}");
                }
                let _ = ended.send(id);
            }
            .instrument(span),
        );
    }

    /// Hang up every call a flow holds, and tell each flow its targets
    /// still ringing did not answer: each flow winds up and stores what it
    /// has.
    fn hang_up_all(&self) {
        for call in self.by_call.keys() {
            let (switch, call) = (self.ctx.switch.clone(), call.clone());
            tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
        }
        for (origin, flow) in &self.by_origin {
            if let Some((_, tx)) = self.flows.get(flow) {
                let _ = tx.send(Input::OriginateFailed {
                    origin: origin.clone(),
                    cause: HangupCause::NoAnswer,
                });
            }
        }
    }

    /// Shutting down: `call` gets no flow.
    fn refuse(&self, call: CallId) {
        info!(%call, "call refused: shutting down");
        let switch = self.ctx.switch.clone();
        tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
    }

    fn incoming(&mut self, caller: Caller) {
        if self.draining {
            return self.refuse(caller.call);
        }
        let too_many = self.too_many(&caller.number);
        let (id, origin, inputs) = self.open(&caller.call, &caller.number);
        let ctx = self.ctx.clone();
        let call = caller.call.clone();
        self.spawn(id, &call, "call", async move {
            run_call(&ctx, caller, origin, inputs, too_many).await
        });
    }

    fn hand_over(&mut self, handoff: Handoff) {
        let (call, from, to) = match handoff {
            Handoff::Reply { call, from, to } => (call, from, to),
            Handoff::Push { user } => return self.push(user),
        };
        if self.draining {
            return self.refuse(call);
        }
        let too_many = self.too_many(from.as_str());
        let (id, origin, mut inputs) = self.open(&call, from.as_str());
        let ctx = self.ctx.clone();
        self.spawn(id, &call.clone(), "reply", async move {
            let to = match dial::reply(&to, too_many) {
                Ok(to) => to,
                Err(prompt) => {
                    info!("the reply cannot be sent: {prompt}");
                    return announce(&ctx, &call, prompt, &mut inputs).await;
                }
            };
            let Some(_permit) = ctx.permits.try_acquire() else {
                return busy(&ctx, &call, &mut inputs).await;
            };
            let caller = Caller {
                call,
                number: from.0,
                name: String::new(),
                dialed: String::new(),
                endpoint: None,
            };
            deliver(&ctx, caller, to, origin, inputs).await
        });
    }

    /// Perhaps call `user` with their unheard messages: the flow owns an
    /// originate id but no call until it is answered.
    fn push(&mut self, user: UserId) {
        if self.pushing.values().any(|u| *u == user) {
            debug!("a push to this user is already under way; looked at again when it ends");
            self.push_again.insert(user);
            return;
        }
        self.start_push(user, false);
    }

    /// Start a push flow for `user` (`only_if_owed`: nothing unless a push
    /// is owed to them).
    fn start_push(&mut self, user: UserId, only_if_owed: bool) {
        if self.draining {
            // Stopping: no new calls, placed or taken.
            return;
        }
        let id = self.next;
        self.next += 1;
        self.pushing.insert(id, user.clone());
        let (tx, inputs) = mpsc::unbounded_channel();
        self.flows.insert(id, (String::new(), tx));
        let origin = crate::switch::peer::originate_id_with_prefix("push-", None);
        self.by_origin.insert(origin.clone(), id);
        let ctx = self.ctx.clone();
        let call = CallId(origin.0.clone());
        self.spawn(id, &call, "push", async move {
            run_push(&ctx, user, only_if_owed, origin, inputs).await
        });
    }

    /// An answered originate no flow placed: a smart-caller-ID call plays
    /// the message it announced; anything else is hung up.
    fn answered_elsewhere(&mut self, origin: OriginateId, call: CallId) {
        let Some(item) = self.ctx.missed_calls.take(&origin) else {
            warn!(%call, "an answered call for no known message; hanging up");
            let switch = self.ctx.switch.clone();
            tokio::spawn(async move { switch.hangup(&call, HangupCause::Normal).await });
            return;
        };
        let (id, _, inputs) = self.open(&call, "");
        let ctx = self.ctx.clone();
        self.spawn(id, &call.clone(), "missed-call retrieval", async move {
            retrieve::missed_call(&ctx, call, item, inputs).await
        });
    }
}

pub(super) struct Caller {
    pub call: CallId,
    /// The caller-ID number: the sender of a message.
    pub number: String,
    pub name: String,
    pub dialed: String,
    /// Who the switch vouches the caller is: whose messages retrieval
    /// plays without a PIN (none: a PIN is asked).
    pub endpoint: Option<String>,
}

/// Answer, say `prompt`, hang up: for calls `ivm` cannot serve.
pub(super) async fn announce(
    ctx: &Ctx,
    call: &CallId,
    prompt: &str,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let flow = Announcement::start(Instant::now().into_std(), call.clone(), prompt);
    drive(ctx, flow, inputs, &mut NoMedia).await
}

async fn run_call(
    ctx: &Ctx,
    caller: Caller,
    origin: OriginateId,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    too_many: bool,
) -> Result<(), ServerError> {
    if let Some(status) = dial::presence_code(&caller.dialed, ctx.plan.config()) {
        return set_status(ctx, &caller, status, &mut inputs).await;
    }
    let dialed = ctx
        .plan
        .parse(&caller.dialed)
        .inspect_err(|e| {
            // The reason quotes the dialled digits: debug only.
            info!(call = %caller.call, "dialled string not in the number plan");
            debug!(reason = %e, "not in the number plan");
        })
        .ok();
    let target = match dial::start(dialed, too_many) {
        Start::Refuse(prompt) => return announce(ctx, &caller.call, prompt, &mut inputs).await,
        Start::Retrieve(request) => return retrieve::serve(ctx, &caller, request, inputs).await,
        Start::Deliver(target) => target,
        Start::ReplyToLast => {
            let to = caller.number.clone();
            match ctx.store.call(move |s| s.last_sender_to(&to)).await?? {
                Some(last) => Extension(last),
                None => return announce(ctx, &caller.call, prompt::INVALID, &mut inputs).await,
            }
        }
    };
    // One permit per caller's message, held until its flow ends.
    let Some(_permit) = ctx.permits.try_acquire() else {
        return busy(ctx, &caller.call, &mut inputs).await;
    };
    deliver(ctx, caller, target, origin, inputs).await
}

/// Work for the one task that writes the switch's side of presence.
enum PresenceJob {
    /// A phone's state changed.
    Change(String, DeviceState),
    /// Ask the switch for every user's state (at start and reconnect).
    Reconcile,
    /// How many contacts a phone has registered.
    Contacts(String, u32),
}

/// How long a reconcile waits for the switch's answer about one user.
const RECONCILE_ASK: std::time::Duration = std::time::Duration::from_secs(2);

/// Keep the switch's word as the users' presence, one change at a time.
async fn keep_presence(ctx: Arc<Ctx>, mut jobs: mpsc::UnboundedReceiver<PresenceJob>) {
    while let Some(job) = jobs.recv().await {
        match job {
            PresenceJob::Change(endpoint, state) => {
                if let Some(change) = write_presence(&ctx, endpoint.clone(), state).await {
                    offer_push(&ctx, endpoint, &change);
                }
            }
            PresenceJob::Reconcile => reconcile(&ctx).await,
            PresenceJob::Contacts(endpoint, contacts) => {
                let now = crate::store::now_ms();
                let kept = ctx
                    .store
                    .call(move |s| s.set_contacts(&endpoint, contacts, now))
                    .await;
                match kept {
                    Ok(Ok(_)) => debug!(contacts, "contacts"),
                    Ok(Err(e)) => warn!("cannot keep a contact count: {e}"),
                    Err(e) => warn!("cannot keep a contact count: {e}"),
                }
            }
        }
    }
}

async fn reconcile(ctx: &Ctx) {
    let users = match ctx.store.call(|s| s.list_users()).await {
        Ok(Ok(users)) => users,
        Ok(Err(e)) => return warn!("presence not reconciled: {e}"),
        Err(e) => return warn!("presence not reconciled: {e}"),
    };
    let mut asked = 0usize;
    for user in users {
        let answer =
            tokio::time::timeout(RECONCILE_ASK, ctx.switch.device_state(&user.extension)).await;
        match answer {
            Ok(Ok(state)) => {
                asked += 1;
                write_presence(ctx, user.extension, state).await;
            }
            Ok(Err(e)) => debug!("presence of a user not reconciled: {e}"),
            Err(_) => debug!("presence of a user not reconciled: the switch did not answer"),
        }
    }
    info!(users = asked, "presence reconciled with the switch");
}

/// A user's presence as a device state changed it, with what decides a
/// push: their rules, and whether a push is owed to them.
struct Change {
    /// None: nothing was known (a start, not a change).
    before: Option<Presence>,
    after: Presence,
    rules: DeliveryRules,
    owed: bool,
}

/// Keep a device state as the user's presence; returns the change, for a
/// user.
async fn write_presence(ctx: &Ctx, endpoint: String, state: DeviceState) -> Option<Change> {
    let (activity, registered) = presence_of(state);
    let now = crate::store::now_ms();
    let user = endpoint.clone();
    let written = ctx
        .store
        .call(move |s| {
            let before = s.presence(&user, now)?;
            if !s.set_device_presence(&user, activity, registered, None, now)? {
                return Ok(None);
            }
            let after = s.presence(&user, now)?.unwrap_or_default();
            // A user without a row had nothing known about them.
            let before = before.filter(|b| b.updated_at_ms != 0);
            // Read in the same job as the write: a push decided meanwhile
            // either saw this state or left its debt for this one to see.
            let (rules, owed) = (s.rules(&user)?, s.push_owed(&user)?);
            Ok::<_, crate::store::StoreError>(Some(Change {
                before,
                after,
                rules,
                owed,
            }))
        })
        .await;
    match written {
        Ok(Ok(Some(change))) => {
            debug!(endpoint, %activity, "presence");
            Some(change)
        }
        Ok(Ok(None)) => {
            debug!(endpoint, "device state of no user; not kept");
            None
        }
        Ok(Err(e)) => {
            warn!("cannot keep a presence change: {e}");
            None
        }
        Err(e) => {
            warn!("cannot keep a presence change: {e}");
            None
        }
    }
}

/// A status set through the HTTP API: cleared do-not-disturb or away is
/// a return, as by star code; the push flow decides.
pub(super) fn status_changed(ctx: &Ctx, change: crate::api::StatusChange) {
    if change.before.status != UserStatus::Available && change.after.status == UserStatus::Available
    {
        let _ = ctx.handoff.send(Handoff::Push { user: change.user });
    }
}

/// A user's presence changed: hand a push to the router if the engine
/// says so ([`offers_push`]: a return, or reachable while a push is owed).
fn offer_push(ctx: &Ctx, user: String, change: &Change) {
    let Some(before) = &change.before else { return };
    if offers_push(before, &change.after, &change.rules, change.owed) {
        let _ = ctx.handoff.send(Handoff::Push {
            user: UserId::new(user),
        });
    }
}

/// Until shutdown, every `check_every` of the clock: hand the router a
/// push for each user owed one who may be called now — their quiet hours
/// ended while they were reachable (or ivm was down when they did).
pub(super) async fn push_when_due(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let every = ctx.clock.check_every;
    // Not at once: presence is reconciled with the switch first.
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let owed = match ctx
            .store
            .call(|s| s.owed_pushes(crate::store::now_ms()))
            .await
        {
            Ok(Ok(owed)) => owed,
            Ok(Err(e)) => {
                warn!("cannot look at owed pushes: {e}");
                continue;
            }
            Err(e) => {
                warn!("cannot look at owed pushes: {e}");
                continue;
            }
        };
        let minute = ctx.clock.minute();
        for (user, presence, rules) in owed {
            // Still owed (not reachable, or quiet): wait. Otherwise the
            // push flow decides again, with the count, and pays the debt.
            if !decide_push(&presence, &rules, 0, minute).owed() {
                let _ = ctx.handoff.send(Handoff::Push {
                    user: UserId::new(user),
                });
            }
        }
    }
}

/// How long a push rings.
const PUSH_RING: std::time::Duration = std::time::Duration::from_secs(20);

/// Push when available: if `user` has an unheard message, the engine
/// decides with their presence now, their rules, the calls placed about
/// their newest unheard message (kept in the store, so across restarts)
/// and the local time; if it says call, call them; answered, their unheard
/// messages play as with `*55` (newest first, the listener menu after
/// each). A push the engine holds back (quiet hours, not reachable yet)
/// is owed: kept in the store in the same job as the decision.
async fn run_push(
    ctx: &Ctx,
    user: UserId,
    only_if_owed: bool,
    origin: OriginateId,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    let target = user.0.clone();
    let minute = ctx.clock.minute();
    let decided = ctx
        .store
        .call(move |s| {
            let now = crate::store::now_ms();
            if only_if_owed && !s.push_owed(&target)? {
                return Ok(None);
            }
            let Some(newest) = s.newest_unheard(&target, &[])? else {
                s.set_push_owed(&target, false, now)?;
                return Ok(None);
            };
            let presence = s.presence(&target, now)?.unwrap_or_default();
            let rules = s.rules(&target)?;
            let so_far = s.push_calls(&target, newest.message_id)?;
            let decision = decide_push(&presence, &rules, so_far, minute);
            if decision == PushDecision::Call {
                s.count_push_call(&target, newest.message_id, now)?;
            } else {
                s.set_push_owed(&target, decision.owed(), now)?;
            }
            Ok::<_, crate::store::StoreError>(Some((newest.message_id, decision)))
        })
        .await??;
    let Some((message_id, decision)) = decided else {
        return Ok(());
    };
    if decision != PushDecision::Call {
        info!(?decision, "unheard messages not pushed now");
        return Ok(());
    }
    info!(%message_id, "pushing unheard messages to a user now available");
    let request = crate::domain::OriginateRequest {
        id: origin.clone(),
        target: user.0.clone(),
        caller_id_name: "IVM messages".into(),
        // Calling this number back retrieves them too.
        caller_id_number: ctx.plan.config().retrieve_session_id.clone(),
        ring_timeout: PUSH_RING,
    };
    if let Err(e) = ctx.switch.originate(request).await {
        warn!("push not placed: {e}");
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + PUSH_RING + std::time::Duration::from_secs(5);
    let call = loop {
        match tokio::time::timeout_at(deadline, inputs.recv()).await {
            Ok(Some(Input::Answered { origin: o, call })) if o == origin => break call,
            Ok(Some(Input::OriginateFailed { cause, .. })) => {
                info!(?cause, "push not answered");
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Ok(()),
        }
    };
    let caller = Caller {
        call,
        number: user.0.clone(),
        name: String::new(),
        dialed: String::new(),
        // ivm rang the user's own phone: vouched by construction.
        endpoint: Some(user.0.clone()),
    };
    retrieve::serve(ctx, &caller, Request::Pushed { user }, inputs).await
}

/// A switch's device state as presence: the activity, and whether it says
/// a phone is registered (None: it does not say).
fn presence_of(state: DeviceState) -> (Activity, Option<bool>) {
    match state {
        DeviceState::Idle => (Activity::Idle, Some(true)),
        DeviceState::Ringing => (Activity::Ringing, Some(true)),
        DeviceState::InUse | DeviceState::Busy | DeviceState::OnHold => {
            (Activity::OnCall, Some(true))
        }
        DeviceState::Unavailable => (Activity::Unavailable, Some(false)),
        DeviceState::Unknown => (Activity::Unknown, None),
    }
}

/// A presence star code: the caller's own status is set, then confirmed
/// aloud (a caller who is no user hears "invalid number").
async fn set_status(
    ctx: &Ctx,
    caller: &Caller,
    status: UserStatus,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    // Only whom the switch vouches for: a forged caller ID sets nobody's.
    let Some(user) = caller.endpoint.clone() else {
        info!("presence star code refused: the switch cannot vouch for the caller");
        return announce(ctx, &caller.call, prompt::INVALID, inputs).await;
    };
    let caller_user = user.clone();
    let set = ctx
        .store
        .call(move |s| {
            let now = crate::store::now_ms();
            let before = s.presence(&user, now)?;
            s.set_user_status(&user, status, None, now)?;
            Ok::<_, crate::store::StoreError>((before, s.presence(&user, now)?))
        })
        .await?;
    let (prompt, before) = match set {
        Ok((before, _)) => {
            info!(%status, "presence set by star code");
            (dial::status_prompt(status), before)
        }
        Err(e) => {
            info!("presence star code refused: {e}");
            (prompt::INVALID, None)
        }
    };
    let announced = announce(ctx, &caller.call, prompt, inputs).await;
    // Cleared do-not-disturb or away: a return. The push flow decides; the
    // phone is usually still on this very call, so it is then owed, and
    // the switch's word that this call ended places it (not onto it).
    let cleared = before.is_some_and(|b| b.status != UserStatus::Available);
    if cleared && status == UserStatus::Available {
        let _ = ctx.handoff.send(Handoff::Push {
            user: UserId::new(caller_user),
        });
    }
    announced
}

/// How long a delivery waits for the switch's word on a user it has never
/// heard about before deciding without it.
const ASK_UNKNOWN: std::time::Duration = std::time::Duration::from_millis(500);

/// A target's presence and rules for a delivery. A user the switch has
/// never said anything about (added since the last reconcile) is asked for
/// now, briefly; no answer leaves them unknown (and rung).
pub(super) async fn reachability(
    ctx: &Ctx,
    target: crate::domain::UserId,
) -> Result<(crate::domain::Presence, crate::domain::DeliveryRules), ServerError> {
    let user = target.0.clone();
    let (presence, rules) = ctx
        .store
        .call(move |s| {
            let now = crate::store::now_ms();
            Ok::<_, crate::store::StoreError>((s.presence(&user, now)?, s.rules(&user)?))
        })
        .await??;
    let Some(mut presence) = presence else {
        // No user: nothing known, nothing kept.
        return Ok((crate::domain::Presence::default(), rules));
    };
    if presence.registered.is_none() && presence.activity == Activity::Unknown {
        match tokio::time::timeout(ASK_UNKNOWN, ctx.switch.device_state(target.as_str())).await {
            Ok(Ok(state)) => {
                let (activity, registered) = presence_of(state);
                presence.activity = activity;
                presence.registered = registered;
                write_presence(ctx, target.0, state).await;
            }
            Ok(Err(e)) => debug!("presence of the target unknown: {e}"),
            Err(_) => debug!("presence of the target unknown: the switch did not answer"),
        }
    }
    Ok((presence, rules))
}

/// `[limits] max_concurrent_messages` are in progress: the caller hears
/// "busy, try again later" and nothing is stored.
async fn busy(
    ctx: &Ctx,
    call: &CallId,
    inputs: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<(), ServerError> {
    info!(
        %call,
        limit = ctx.permits.capacity(),
        "message refused: max_concurrent_messages in progress"
    );
    announce(ctx, call, prompt::TRY_LATER, inputs).await
}
