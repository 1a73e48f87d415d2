//! Whether a target is rung: the decision from its presence and its rules
//! (S6). Pure: the server looks both up in the store and hands them to
//! the delivery flow as [`super::Input::Reachability`]; for a number
//! outside the PBX, the external lookup's word comes as
//! [`super::Input::ExternalReachability`] ([`decide_external`]).

use std::time::Duration;

use super::sounds;
use crate::domain::{
    Activity, DeliveryRules, DeliveryState, ExternalReach, Presence, Reaction, UserStatus,
};

/// Why a message is stored without ringing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No phone registered (or the switch says unavailable).
    Offline,
    /// The user set do-not-disturb.
    Dnd,
    /// The user set away (until a time not yet reached).
    Away,
    /// On a call, rule `store`.
    Busy,
    /// On a call, rule `wait`: stored, delivered when the call ends.
    Wait,
}

impl Skip {
    /// What the caller hears.
    pub fn prompt(self) -> &'static str {
        match self {
            Skip::Offline | Skip::Away => sounds::NOT_AVAILABLE_STORED,
            Skip::Dnd => sounds::DND_STORED,
            Skip::Busy | Skip::Wait => sounds::BUSY_STORED,
        }
    }

    /// The delivery's state once stored.
    pub fn state(self) -> DeliveryState {
        match self {
            Skip::Offline => DeliveryState::Unreachable,
            Skip::Dnd | Skip::Away => DeliveryState::Unheard,
            Skip::Busy | Skip::Wait => DeliveryState::Busy,
        }
    }

    /// Notified by the lamp only (do-not-disturb is silent).
    pub fn quiet(self) -> bool {
        self == Skip::Dnd
    }
}

/// What happens to a message for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Ring for this long.
    Ring(Duration),
    /// Do not ring: store and notify.
    Store(Skip),
}

/// The decision. A user's own setting comes first (DND, away), then the
/// switch's word (offline, on a call); what is not known is rung.
pub fn decide(presence: &Presence, rules: &DeliveryRules, default_ring: Duration) -> Reach {
    let ring = Reach::Ring(
        rules
            .ring_timeout_seconds
            .map_or(default_ring, |s| Duration::from_secs(u64::from(s))),
    );
    let or_ring = |reaction: Reaction, skip: Skip| match reaction {
        Reaction::Ring => None,
        Reaction::Store | Reaction::Wait => Some(Reach::Store(skip)),
    };
    let skip = match presence.status {
        UserStatus::Dnd => or_ring(rules.dnd, Skip::Dnd),
        UserStatus::Away => or_ring(rules.offline, Skip::Away),
        UserStatus::Available => None,
    };
    if let Some(skip) = skip {
        return skip;
    }
    let offline = presence.registered == Some(false) || presence.activity == Activity::Unavailable;
    if offline {
        return or_ring(rules.offline, Skip::Offline).unwrap_or(ring);
    }
    if presence.activity == Activity::OnCall {
        let skip = match rules.busy {
            Reaction::Wait => Skip::Wait,
            _ => Skip::Busy,
        };
        return or_ring(rules.busy, skip).unwrap_or(ring);
    }
    ring
}

/// The decision for a number outside the PBX from what the external
/// lookup says. Such a number has no rules of its own, and a mobile that
/// is switched off or on a call usually diverts to its operator's
/// voicemail, which would answer — and swallow — the live message; so
/// `unreachable` and `busy` store it (and notify) at once. `reachable`
/// and `unknown` (no lookup configured, slow, dead, nonsense) ring as
/// before there was a lookup.
pub fn decide_external(state: ExternalReach, default_ring: Duration) -> Reach {
    match state {
        ExternalReach::Reachable | ExternalReach::Unknown => Reach::Ring(default_ring),
        ExternalReach::Unreachable => Reach::Store(Skip::Offline),
        ExternalReach::Busy => Reach::Store(Skip::Busy),
    }
}

/// Free to take a call now: available by their own word, not known to be
/// offline, and idle.
pub fn reachable(presence: &Presence) -> bool {
    presence.status == UserStatus::Available
        && presence.registered != Some(false)
        && presence.activity == Activity::Idle
}

/// Whether a change of a user's presence is a return that calls for a push
/// (push when available): they became reachable after being away by
/// their own word (do-not-disturb, away), offline, or — only when their
/// rule for "on a call" is `wait` — on a call. A ring that stops is a
/// call missed (perhaps ours), not a return; and a user whose rule for a
/// call is `ring` or `store` chose how messages reach them during a
/// call, so its end pushes nothing.
pub fn is_return(before: &Presence, after: &Presence, rules: &DeliveryRules) -> bool {
    let was_away = before.status != UserStatus::Available
        || before.registered == Some(false)
        || before.activity == Activity::Unavailable;
    let call_ended = before.activity == Activity::OnCall && rules.busy == Reaction::Wait;
    reachable(after) && (was_away || call_ended)
}

/// Whether a change of a user's presence hands a push to the router: a
/// return, or becoming reachable while a push is owed to them (held back
/// by quiet hours, or decided while they were still on the call that
/// cleared do-not-disturb). The limit and quiet hours are decided when it
/// runs ([`decide_push`]).
pub fn offers_push(before: &Presence, after: &Presence, rules: &DeliveryRules, owed: bool) -> bool {
    (owed && reachable(after)) || is_return(before, after, rules)
}

/// What push when available does about a user who returned, or whose
/// held-back push is due, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDecision {
    /// Call them now with their unheard messages.
    Call,
    /// Their limit of calls about the newest unheard message is reached
    /// (or is 0): nothing more, nothing owed.
    LimitReached,
    /// Not free to take a call now (still on the star code's call, gone
    /// again): owed, placed when they next become reachable.
    NotReachable,
    /// In their quiet hours: owed, placed when the window ends if they
    /// are reachable then (else when they next become reachable).
    QuietHours,
}

impl PushDecision {
    /// Whether the push is still owed after this decision.
    pub fn owed(self) -> bool {
        matches!(self, PushDecision::NotReachable | PushDecision::QuietHours)
    }
}

/// The push decision from the user's presence now, their rules, the calls
/// already placed about their newest unheard message, and the server's
/// local time as a minute of the day (0 to 1439).
pub fn decide_push(
    now: &Presence,
    rules: &DeliveryRules,
    pushes_so_far: u32,
    local_minute: u16,
) -> PushDecision {
    if pushes_so_far >= rules.push_limit {
        PushDecision::LimitReached
    } else if !reachable(now) {
        PushDecision::NotReachable
    } else if rules.quiet_hours.is_some_and(|q| q.contains(local_minute)) {
        PushDecision::QuietHours
    } else {
        PushDecision::Call
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: Duration = Duration::from_secs(30);

    fn presence(registered: Option<bool>, activity: Activity, status: UserStatus) -> Presence {
        Presence {
            registered,
            contacts: u32::from(registered == Some(true)),
            activity,
            status,
            ..Presence::default()
        }
    }

    #[test]
    fn an_idle_registered_user_is_rung_for_their_own_timeout_or_the_default() {
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        assert_eq!(
            decide(&idle, &DeliveryRules::default(), RING),
            Reach::Ring(RING)
        );
        let rules = DeliveryRules {
            ring_timeout_seconds: Some(12),
            ..DeliveryRules::default()
        };
        assert_eq!(
            decide(&idle, &rules, RING),
            Reach::Ring(Duration::from_secs(12))
        );
    }

    #[test]
    fn what_is_not_known_is_rung() {
        let unknown = Presence::default();
        assert_eq!(
            decide(&unknown, &DeliveryRules::default(), RING),
            Reach::Ring(RING)
        );
    }

    #[test]
    fn offline_is_stored_at_once_unless_the_rule_says_ring() {
        let rules = DeliveryRules::default();
        for offline in [
            presence(Some(false), Activity::Unknown, UserStatus::Available),
            presence(None, Activity::Unavailable, UserStatus::Available),
        ] {
            assert_eq!(decide(&offline, &rules, RING), Reach::Store(Skip::Offline));
            let ring = DeliveryRules {
                offline: Reaction::Ring,
                ..rules
            };
            assert_eq!(decide(&offline, &ring, RING), Reach::Ring(RING));
        }
        assert_eq!(Skip::Offline.prompt(), sounds::NOT_AVAILABLE_STORED);
        assert_eq!(Skip::Offline.state(), DeliveryState::Unreachable);
        assert!(!Skip::Offline.quiet());
    }

    #[test]
    fn dnd_is_stored_quietly_even_when_registered_and_idle() {
        let dnd = presence(Some(true), Activity::Idle, UserStatus::Dnd);
        let skip = decide(&dnd, &DeliveryRules::default(), RING);
        assert_eq!(skip, Reach::Store(Skip::Dnd));
        assert_eq!(Skip::Dnd.prompt(), sounds::DND_STORED);
        assert!(Skip::Dnd.quiet());
        let ring = DeliveryRules {
            dnd: Reaction::Ring,
            ..DeliveryRules::default()
        };
        assert_eq!(decide(&dnd, &ring, RING), Reach::Ring(RING));
    }

    #[test]
    fn away_follows_the_offline_rule() {
        let away = presence(Some(true), Activity::Idle, UserStatus::Away);
        assert_eq!(
            decide(&away, &DeliveryRules::default(), RING),
            Reach::Store(Skip::Away)
        );
    }

    #[test]
    fn on_a_call_follows_the_busy_rule() {
        let busy = presence(Some(true), Activity::OnCall, UserStatus::Available);
        let with = |busy_rule| DeliveryRules {
            busy: busy_rule,
            ..DeliveryRules::default()
        };
        assert_eq!(
            decide(&busy, &with(Reaction::Ring), RING),
            Reach::Ring(RING)
        );
        assert_eq!(
            decide(&busy, &with(Reaction::Store), RING),
            Reach::Store(Skip::Busy)
        );
        assert_eq!(
            decide(&busy, &with(Reaction::Wait), RING),
            Reach::Store(Skip::Wait)
        );
        assert_eq!(Skip::Wait.prompt(), sounds::BUSY_STORED);
        assert_eq!(Skip::Busy.state(), DeliveryState::Busy);
    }

    #[test]
    fn dnd_wins_over_offline_and_busy() {
        for (registered, activity) in [
            (Some(false), Activity::Unknown),
            (Some(true), Activity::OnCall),
        ] {
            let p = presence(registered, activity, UserStatus::Dnd);
            assert_eq!(
                decide(&p, &DeliveryRules::default(), RING),
                Reach::Store(Skip::Dnd)
            );
        }
    }

    #[test]
    fn an_external_number_is_rung_unless_the_lookup_says_unreachable_or_busy() {
        assert_eq!(
            decide_external(ExternalReach::Reachable, RING),
            Reach::Ring(RING)
        );
        assert_eq!(
            decide_external(ExternalReach::Unknown, RING),
            Reach::Ring(RING),
            "what is not known is rung"
        );
        assert_eq!(
            decide_external(ExternalReach::Unreachable, RING),
            Reach::Store(Skip::Offline)
        );
        assert_eq!(
            decide_external(ExternalReach::Busy, RING),
            Reach::Store(Skip::Busy)
        );
    }

    #[test]
    fn a_return_is_becoming_reachable_after_away_dnd_or_offline() {
        let rules = DeliveryRules::default();
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        for before in [
            presence(Some(false), Activity::Unavailable, UserStatus::Available),
            presence(None, Activity::Unavailable, UserStatus::Available),
            presence(Some(true), Activity::Idle, UserStatus::Dnd),
            presence(Some(true), Activity::Idle, UserStatus::Away),
            presence(Some(true), Activity::OnCall, UserStatus::Dnd),
        ] {
            assert!(is_return(&before, &idle, &rules), "{before:?}");
        }
        assert!(!is_return(&idle, &idle, &rules), "already reachable");
        let ringing = presence(Some(true), Activity::Ringing, UserStatus::Available);
        let offline = presence(Some(false), Activity::Unavailable, UserStatus::Available);
        assert!(!is_return(&offline, &ringing, &rules), "not idle yet");
        let dnd = presence(Some(true), Activity::Idle, UserStatus::Dnd);
        assert!(!is_return(&offline, &dnd, &rules), "on do-not-disturb");
        assert!(
            !is_return(&ringing, &idle, &rules),
            "a ring that stops (a push not answered) is no return"
        );
    }

    #[test]
    fn a_call_that_ends_is_a_return_only_for_the_rule_wait() {
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        let on_call = presence(Some(true), Activity::OnCall, UserStatus::Available);
        for (busy, pushed) in [
            (Reaction::Wait, true),
            (Reaction::Store, false),
            (Reaction::Ring, false),
        ] {
            let rules = DeliveryRules {
                busy,
                ..DeliveryRules::default()
            };
            assert_eq!(is_return(&on_call, &idle, &rules), pushed, "{busy:?}");
        }
        // Do-not-disturb cleared during a call is a return whatever the rule.
        let dnd_on_call = presence(Some(true), Activity::OnCall, UserStatus::Dnd);
        let store = DeliveryRules {
            busy: Reaction::Store,
            ..DeliveryRules::default()
        };
        assert!(is_return(&dnd_on_call, &idle, &store));
    }

    #[test]
    fn an_owed_push_is_offered_on_any_change_that_makes_the_user_reachable() {
        let rules = DeliveryRules::default();
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        let on_call = presence(Some(true), Activity::OnCall, UserStatus::Available);
        let ringing = presence(Some(true), Activity::Ringing, UserStatus::Available);
        // The end of the *62 call itself: no return under rule `ring`.
        assert!(!offers_push(&on_call, &idle, &rules, false));
        assert!(offers_push(&on_call, &idle, &rules, true));
        assert!(offers_push(&ringing, &idle, &rules, true));
        assert!(!offers_push(&idle, &on_call, &rules, true), "not reachable");
        let offline = presence(Some(false), Activity::Unavailable, UserStatus::Available);
        assert!(offers_push(&offline, &idle, &rules, false), "a return");
    }

    const NOON: u16 = 12 * 60;

    #[test]
    fn pushes_stop_at_the_users_own_limit_and_a_limit_of_0_never_pushes() {
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        let default = DeliveryRules::default();
        assert_eq!(default.push_limit, 3);
        for so_far in 0..3 {
            assert_eq!(
                decide_push(&idle, &default, so_far, NOON),
                PushDecision::Call
            );
        }
        assert_eq!(
            decide_push(&idle, &default, 3, NOON),
            PushDecision::LimitReached
        );
        let one = DeliveryRules {
            push_limit: 1,
            ..default
        };
        assert_eq!(decide_push(&idle, &one, 0, NOON), PushDecision::Call);
        assert_eq!(
            decide_push(&idle, &one, 1, NOON),
            PushDecision::LimitReached
        );
        let never = DeliveryRules {
            push_limit: 0,
            ..default
        };
        assert_eq!(
            decide_push(&idle, &never, 0, NOON),
            PushDecision::LimitReached
        );
        assert!(!PushDecision::LimitReached.owed());
    }

    #[test]
    fn a_user_not_reachable_now_is_owed_the_push() {
        let on_call = presence(Some(true), Activity::OnCall, UserStatus::Available);
        let decision = decide_push(&on_call, &DeliveryRules::default(), 0, NOON);
        assert_eq!(decision, PushDecision::NotReachable);
        assert!(decision.owed());
    }

    #[test]
    fn quiet_hours_hold_a_push_back_including_across_midnight() {
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        let night = DeliveryRules {
            quiet_hours: Some("22:00-07:00".parse().unwrap()),
            ..DeliveryRules::default()
        };
        for (minute, decision) in [
            (21 * 60 + 59, PushDecision::Call),
            (22 * 60, PushDecision::QuietHours),
            (23 * 60 + 59, PushDecision::QuietHours),
            (0, PushDecision::QuietHours),
            (6 * 60 + 59, PushDecision::QuietHours),
            (7 * 60, PushDecision::Call),
        ] {
            assert_eq!(decide_push(&idle, &night, 0, minute), decision, "{minute}");
        }
        assert!(PushDecision::QuietHours.owed());
        let lunch = DeliveryRules {
            quiet_hours: Some("12:00-13:30".parse().unwrap()),
            ..DeliveryRules::default()
        };
        assert_eq!(
            decide_push(&idle, &lunch, 0, NOON),
            PushDecision::QuietHours
        );
        assert_eq!(
            decide_push(&idle, &lunch, 0, 13 * 60 + 30),
            PushDecision::Call
        );
        assert_eq!(
            decide_push(&idle, &lunch, 3, NOON),
            PushDecision::LimitReached,
            "a reached limit owes nothing, quiet or not"
        );
    }
}
