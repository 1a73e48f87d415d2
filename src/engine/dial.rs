//! What a dialled call becomes: which flow serves it, or which prompt
//! refuses it. The dial string itself is `numbering`'s grammar; this is the
//! decision on top of it.

use super::retrieval::Request;
use super::sounds;
use crate::config::NumberingConfig;
use crate::domain::{Extension, MessageCode, UserStatus};
use crate::numbering::{DialKind, Dialed, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Say this prompt and hang up.
    Refuse(&'static str),
    /// A retrieval flow.
    Retrieve(Request),
    /// A delivery to this target.
    Deliver(Extension),
    /// A delivery to whoever last sent the caller a message (`*77` alone):
    /// the server looks them up and refuses with [`sounds::INVALID`] when
    /// there is none.
    ReplyToLast,
}

/// The flow for a dial string as the number plan read it (`None`: not in
/// the plan); `too_many`: the caller already has as many messages under
/// way as they may.
pub fn start(dialed: Option<Dialed>, too_many: bool) -> Start {
    let Some(dialed) = dialed else {
        return Start::Refuse(sounds::INVALID);
    };
    match dialed.kind {
        DialKind::Retrieve => match dialed.message_code.as_deref().map(MessageCode::parse) {
            Some(Some(code)) => Start::Retrieve(Request::Code(code)),
            Some(None) => Start::Refuse(sounds::INVALID),
            None => Start::Retrieve(Request::NewestUnheard),
        },
        DialKind::RetrieveNext => Start::Retrieve(Request::NewestUnheard),
        _ if too_many => Start::Refuse(sounds::TOO_MANY),
        DialKind::Message => match dialed.targets.first() {
            Some(Target::Extension(t) | Target::Number(t)) => Start::Deliver(Extension::new(t)),
            Some(Target::Ip(ip)) => Start::Deliver(Extension::new(ip.to_string())),
            Some(Target::Group(_)) | None => Start::Refuse(sounds::INVALID),
        },
        DialKind::Reply => Start::ReplyToLast,
        // Groups are served by a later part of ivm; until then the caller
        // is told so rather than "invalid number".
        DialKind::GroupMessage => Start::Refuse(sounds::GROUPS_OFF),
    }
}

/// A presence star code (exact, as configured): the status the caller sets
/// for themselves. Checked before the number plan; the configuration keeps
/// these codes from overlapping the plan's.
pub fn presence_code(dialed: &str, codes: &NumberingConfig) -> Option<UserStatus> {
    let dialed = dialed.strip_suffix('#').unwrap_or(dialed);
    [
        (&codes.dnd_code, UserStatus::Dnd),
        (&codes.available_code, UserStatus::Available),
        (&codes.away_code, UserStatus::Away),
    ]
    .into_iter()
    .find(|(code, _)| !code.is_empty() && dialed == code.as_str())
    .map(|(_, status)| status)
}

/// The spoken confirmation of a status set by star code.
pub fn status_prompt(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Dnd => sounds::DND_ON,
        UserStatus::Away => sounds::AWAY_ON,
        UserStatus::Available => sounds::AVAILABLE,
    }
}

/// Whether a listener's reply from the menu to `to` (the sender of what
/// they heard) is delivered, or refused with the prompt in `Err`. A sender
/// is whatever caller ID their switch showed: only digits can be rung back.
pub fn reply(to: &Extension, too_many: bool) -> Result<Extension, &'static str> {
    if too_many {
        Err(sounds::TOO_MANY)
    } else if to.is_empty() || !to.as_str().bytes().all(|b| b.is_ascii_digit()) {
        Err(sounds::INVALID)
    } else {
        Ok(to.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NumberingConfig;
    use crate::numbering::NumberPlan;

    fn start_for(digits: &str, too_many: bool) -> Start {
        let plan = NumberPlan::new(NumberingConfig::default());
        start(plan.parse(digits).ok(), too_many)
    }

    #[test]
    fn each_dial_string_starts_its_flow() {
        assert_eq!(
            start_for("*771002", false),
            Start::Deliver(Extension::new("1002"))
        );
        assert_eq!(start_for("*77", false), Start::ReplyToLast);
        assert_eq!(
            start_for("*55123456", false),
            Start::Retrieve(Request::Code(MessageCode::parse("123456").unwrap()))
        );
        assert_eq!(
            start_for("*55", false),
            Start::Retrieve(Request::NewestUnheard)
        );
        assert_eq!(start_for("*99", false), Start::Refuse(sounds::INVALID));
        for group in ["*78600", "*78*1002*1003", "600780"] {
            assert_eq!(
                start_for(group, false),
                Start::Refuse(sounds::GROUPS_OFF),
                "{group}"
            );
        }
        assert_eq!(start_for("", false), Start::Refuse(sounds::INVALID));
    }

    #[test]
    fn a_reply_goes_to_a_sender_with_digits_only() {
        let alice = Extension::new("1001");
        assert_eq!(reply(&alice, false), Ok(alice.clone()));
        assert_eq!(reply(&alice, true), Err(sounds::TOO_MANY));
        for odd in ["", "anonymous", "+15551230001", "1001;x"] {
            assert_eq!(
                reply(&Extension::new(odd), false),
                Err(sounds::INVALID),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn presence_codes_set_a_status_and_are_not_in_the_number_plan() {
        let config = NumberingConfig::default();
        let plan = NumberPlan::new(config.clone());
        for (code, status, prompt) in [
            ("*61", UserStatus::Dnd, sounds::DND_ON),
            ("*62", UserStatus::Available, sounds::AVAILABLE),
            ("*63#", UserStatus::Away, sounds::AWAY_ON),
        ] {
            assert_eq!(presence_code(code, &config), Some(status), "{code}");
            assert_eq!(status_prompt(status), prompt);
            assert!(plan.parse(code).is_err(), "{code} is no message string");
        }
        for not in ["*6", "*611", "*771002", "61", "", "*61*"] {
            assert_eq!(presence_code(not, &config), None, "{not:?}");
        }
        let moved = NumberingConfig {
            dnd_code: "*401".into(),
            ..NumberingConfig::default()
        };
        assert_eq!(presence_code("*401", &moved), Some(UserStatus::Dnd));
        assert_eq!(presence_code("*61", &moved), None);
    }

    #[test]
    fn too_many_refuses_new_messages_but_not_retrieval() {
        assert_eq!(start_for("*771002", true), Start::Refuse(sounds::TOO_MANY));
        assert_eq!(start_for("*77", true), Start::Refuse(sounds::TOO_MANY));
        assert_eq!(
            start_for("*55", true),
            Start::Retrieve(Request::NewestUnheard)
        );
    }
}
