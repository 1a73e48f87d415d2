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

/// How many times `ivm` calls a user about the same newest unheard
/// message when they become available.
pub const MAX_PUSHES: u32 = 3;

/// Free to take a call now: available by their own word, not known to be
/// offline, and idle.
pub fn reachable(presence: &Presence) -> bool {
    presence.status == UserStatus::Available
        && presence.registered != Some(false)
        && presence.activity == Activity::Idle
}

/// Whether to call a user with unheard messages now (push when available):
/// they just became reachable (registered, ended a call, cleared
/// do-not-disturb or away — not a ring that stopped) from a state known before (`before` is None when
/// nothing was known: a start, not a change), and fewer than
/// [`MAX_PUSHES`] calls were placed about their newest unheard message.
pub fn should_push(before: Option<&Presence>, after: &Presence, pushes_so_far: u32) -> bool {
    let Some(before) = before else {
        return false;
    };
    // Ringing that stops is a call missed (perhaps ours), not a return.
    let was_away = before.status != UserStatus::Available
        || before.registered == Some(false)
        || matches!(before.activity, Activity::Unavailable | Activity::OnCall);
    was_away && reachable(after) && pushes_so_far < MAX_PUSHES
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
    fn a_push_when_a_user_becomes_reachable_from_a_known_state_only() {
        let idle = presence(Some(true), Activity::Idle, UserStatus::Available);
        for before in [
            presence(Some(false), Activity::Unavailable, UserStatus::Available),
            presence(Some(true), Activity::OnCall, UserStatus::Available),
            presence(Some(true), Activity::Idle, UserStatus::Dnd),
            presence(Some(true), Activity::Idle, UserStatus::Away),
        ] {
            assert!(should_push(Some(&before), &idle, 0), "{before:?}");
            assert!(should_push(Some(&before), &idle, MAX_PUSHES - 1));
            assert!(!should_push(Some(&before), &idle, MAX_PUSHES), "limit");
        }
        assert!(!should_push(None, &idle, 0), "a start is no change");
        assert!(!should_push(Some(&idle), &idle, 0), "already reachable");
        let ringing = presence(Some(true), Activity::Ringing, UserStatus::Available);
        let offline = presence(Some(false), Activity::Unavailable, UserStatus::Available);
        assert!(!should_push(Some(&offline), &ringing, 0), "not idle yet");
        let dnd = presence(Some(true), Activity::Idle, UserStatus::Dnd);
        assert!(!should_push(Some(&offline), &dnd, 0), "on do-not-disturb");
        assert!(
            !should_push(Some(&ringing), &idle, 0),
            "a ring that stops (a push not answered) is no return"
        );
    }
}
