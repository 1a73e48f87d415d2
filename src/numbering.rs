//! The dial-string grammar of the number plan (SPEC S1), as pure code.
//!
//! Owns: what a dialed string means (kind, form, targets, message code).
//! Must not know: the store (whether a group number exists is the caller's
//! question), the switch, or the clock. No input makes it panic.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::config::NumberingConfig;

/// Longest dial string considered at all; anything longer is refused unread.
pub const MAX_DIAL_LEN: usize = 256;
/// E.164 allows at most 15 digits.
const MAX_NUMBER_DIGITS: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DialKind {
    Message,
    GroupMessage,
    Reply,
    Retrieve,
    RetrieveNext,
}

/// Whether the code came before the target (`*771002`) or after (`1002*77`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Prefix,
    Suffix,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    Extension(String),
    Number(String),
    Ip(Ipv4Addr),
    Group(String),
}

impl Target {
    pub fn value(&self) -> String {
        match self {
            Target::Extension(v) | Target::Number(v) | Target::Group(v) => v.clone(),
            Target::Ip(ip) => ip.to_string(),
        }
    }
}

/// The type digit a retrieval number may carry after the message code (S5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    InstantMessage = 1,
    Voicemail = 2,
    Multimedia = 3,
    Unified = 4,
}

impl MessageType {
    pub fn digit(self) -> char {
        match self {
            MessageType::InstantMessage => '1',
            MessageType::Voicemail => '2',
            MessageType::Multimedia => '3',
            MessageType::Unified => '4',
        }
    }

    fn from_digit(d: u8) -> Option<Self> {
        match d {
            b'1' => Some(MessageType::InstantMessage),
            b'2' => Some(MessageType::Voicemail),
            b'3' => Some(MessageType::Multimedia),
            b'4' => Some(MessageType::Unified),
            _ => None,
        }
    }
}

/// What a dialed string means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dialed {
    pub kind: DialKind,
    pub form: Form,
    pub targets: Vec<Target>,
    pub message_code: Option<String>,
    #[serde(skip)]
    pub message_type: Option<MessageType>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("nothing was dialed")]
    Empty,
    #[error("dial string is longer than {MAX_DIAL_LEN} characters")]
    TooLong,
    #[error("`{0}` may only hold digits, `*`, and one trailing `#`")]
    BadCharacter(char),
    #[error("`{0}` starts with no code of the number plan and ends with none")]
    NotInPlan(String),
    #[error("target `{0}`: {1}")]
    BadTarget(String, &'static str),
    #[error("ip address `{0}`: {1}")]
    BadIp(String, &'static str),
    #[error("a group message needs a group number or `{0}` and a list of targets")]
    NoGroup(String),
    #[error("target `{0}` is listed twice")]
    DuplicateTarget(String),
    #[error("at most {0} targets in one message")]
    TooManyTargets(usize),
    #[error("`{0}` is outside the PBX and matches no pattern of [numbering] external_targets")]
    ExternalNotAllowed(String),
    #[error("message code `{0}` must be {1} digits, optionally followed by a type digit 1-4")]
    BadMessageCode(String, usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Message,
    Group,
    Retrieve,
}

/// The number plan, made from the `[numbering]` configuration.
#[derive(Debug, Clone)]
pub struct NumberPlan {
    config: NumberingConfig,
}

impl NumberPlan {
    pub fn new(config: NumberingConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &NumberingConfig {
        &self.config
    }

    /// What `digits` means. One trailing `#` (a phone's send key) is ignored.
    pub fn parse(&self, digits: &str) -> Result<Dialed, DialError> {
        if digits.len() > MAX_DIAL_LEN {
            return Err(DialError::TooLong);
        }
        let digits = digits.trim();
        let digits = digits.strip_suffix('#').unwrap_or(digits);
        if digits.is_empty() {
            return Err(DialError::Empty);
        }
        if let Some(c) = digits.chars().find(|c| !(c.is_ascii_digit() || *c == '*')) {
            return Err(DialError::BadCharacter(c));
        }
        // Longest code first, so a plan where one code extends another's
        // digits (rejected by config validation, but be safe) stays sound.
        let mut prefixes = self.prefix_codes();
        prefixes.sort_by_key(|(code, _)| std::cmp::Reverse(code.len()));
        let prefix = prefixes.iter().find_map(|(code, service)| {
            let rest = digits.strip_prefix(code.as_str())?;
            Some((
                code.starts_with('*'),
                self.service(*service, rest, Form::Prefix),
            ))
        });
        if let Some((true, Ok(dialed))) = prefix {
            return Ok(dialed);
        }
        // A suffix-form string never starts with `*`: that is what the form
        // is for, and PBX prefixes such as FusionPBX's `*0` claim the rest.
        let suffix = self.star_codes().into_iter().find_map(|(code, service)| {
            let rest = digits.strip_suffix(code.as_str())?;
            (!rest.is_empty() && !rest.starts_with('*'))
                .then(|| self.service(service, rest, Form::Suffix))
        });
        // A string that starts like a numeric session id and ends like a
        // star code (`7709*77`, `780*77`) is an extension in the suffix form:
        // whoever can dial `*` has no use for the numeric ids.
        match (prefix, suffix) {
            (_, Some(Ok(dialed))) => Ok(dialed),
            (Some((_, Ok(dialed))), _) => Ok(dialed),
            (prefix, suffix) => match self.numeric_suffix(digits) {
                Some(dialed) => Ok(dialed),
                None => match (prefix, suffix) {
                    (Some((_, result)), _) => result,
                    (None, Some(result)) => result,
                    (None, None) => Err(DialError::NotInPlan(digits.to_owned())),
                },
            },
        }
    }

    /// The numeric suffix form (S1), for phones and trunks that dial digits
    /// only: an extension then the message session id (`1002770`), or a
    /// group number then the group session id (`600780`). Read only when no
    /// other reading fits, and only with an extension-length number before
    /// the id, so that an ordinary outside number is never taken for one.
    fn numeric_suffix(&self, digits: &str) -> Option<Dialed> {
        let c = &self.config;
        [
            (&c.message_session_id, Service::Message),
            (&c.group_session_id, Service::Group),
        ]
        .into_iter()
        .find_map(|(id, service)| {
            let rest = digits.strip_suffix(id.as_str())?;
            let extension_like = (c.extension_min_digits..=c.extension_max_digits)
                .contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_digit());
            extension_like
                .then(|| self.service(service, rest, Form::Suffix).ok())
                .flatten()
        })
    }

    /// The retrieval number for a message code: what a notification tells the
    /// target to dial. Numeric, so it also works as a caller ID (S5).
    pub fn retrieval_number(&self, message_code: &str, message_type: MessageType) -> String {
        format!(
            "{}{}{}",
            self.config.retrieve_session_id,
            message_code,
            message_type.digit()
        )
    }

    fn star_codes(&self) -> [(String, Service); 3] {
        let c = &self.config;
        [
            (c.message_code.clone(), Service::Message),
            (c.group_code.clone(), Service::Group),
            (c.retrieve_code.clone(), Service::Retrieve),
        ]
    }

    fn prefix_codes(&self) -> Vec<(String, Service)> {
        let c = &self.config;
        let mut codes = self.star_codes().to_vec();
        codes.push((c.message_session_id.clone(), Service::Message));
        codes.push((c.group_session_id.clone(), Service::Group));
        codes.push((c.retrieve_session_id.clone(), Service::Retrieve));
        codes
    }

    fn service(&self, service: Service, rest: &str, form: Form) -> Result<Dialed, DialError> {
        let dialed = |kind, targets, message_code, message_type| Dialed {
            kind,
            form,
            targets,
            message_code,
            message_type,
        };
        match service {
            Service::Message if rest.is_empty() => Ok(dialed(DialKind::Reply, vec![], None, None)),
            Service::Message => {
                let target = self.single_target(rest, form)?;
                Ok(dialed(DialKind::Message, vec![target], None, None))
            }
            Service::Group => {
                let targets = self.group_targets(rest)?;
                Ok(dialed(DialKind::GroupMessage, targets, None, None))
            }
            Service::Retrieve if rest.is_empty() => {
                Ok(dialed(DialKind::RetrieveNext, vec![], None, None))
            }
            Service::Retrieve => {
                let (code, message_type) = self.message_code(rest)?;
                Ok(dialed(DialKind::Retrieve, vec![], Some(code), message_type))
            }
        }
    }

    /// One target after `*77`: `*a*b*c*d` is an IPv4 address (in the suffix
    /// form it is written `a*b*c*d*77`), digits are an extension or number.
    fn single_target(&self, rest: &str, form: Form) -> Result<Target, DialError> {
        if let Some(ip) = rest.strip_prefix('*') {
            return parse_ip(ip);
        }
        if form == Form::Suffix && rest.contains('*') {
            return parse_ip(rest);
        }
        self.digits_target(rest)
    }

    fn digits_target(&self, s: &str) -> Result<Target, DialError> {
        let c = &self.config;
        if s.is_empty() {
            return Err(DialError::BadTarget(s.into(), "is empty"));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DialError::BadTarget(s.into(), "must be digits"));
        }
        if s.len() < c.extension_min_digits {
            return Err(DialError::BadTarget(
                s.into(),
                "is shorter than any extension",
            ));
        }
        if s.len() <= c.extension_max_digits {
            return Ok(Target::Extension(s.into()));
        }
        if s.len() <= MAX_NUMBER_DIGITS {
            // Toll fraud (S11): a number outside the PBX only when allowed.
            if !c
                .external_targets
                .iter()
                .any(|p| crate::switch::peer::pattern_matches(p, s))
            {
                return Err(DialError::ExternalNotAllowed(s.into()));
            }
            return Ok(Target::Number(s.into()));
        }
        Err(DialError::BadTarget(s.into(), "is longer than 15 digits"))
    }

    fn group_targets(&self, rest: &str) -> Result<Vec<Target>, DialError> {
        let c = &self.config;
        if rest.is_empty() {
            return Err(DialError::NoGroup(c.multi_target_id.clone()));
        }
        let Some(list) = rest.strip_prefix(c.multi_target_id.as_str()) else {
            if !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DialError::BadTarget(
                    rest.into(),
                    "a group number must be digits",
                ));
            }
            if rest.len() > MAX_NUMBER_DIGITS {
                return Err(DialError::BadTarget(
                    rest.into(),
                    "is longer than 15 digits",
                ));
            }
            return Ok(vec![Target::Group(rest.into())]);
        };
        let mut targets: Vec<Target> = Vec::new();
        for part in list.split('*') {
            let target = self.digits_target(part)?;
            if targets.contains(&target) {
                return Err(DialError::DuplicateTarget(part.into()));
            }
            if targets.len() == c.max_targets {
                return Err(DialError::TooManyTargets(c.max_targets));
            }
            targets.push(target);
        }
        Ok(targets)
    }

    fn message_code(&self, rest: &str) -> Result<(String, Option<MessageType>), DialError> {
        let n = self.config.message_code_digits;
        let bad = || DialError::BadMessageCode(rest.into(), n);
        if !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match rest.len() {
            len if len == n => Ok((rest.into(), None)),
            len if len == n + 1 => {
                let message_type = MessageType::from_digit(rest.as_bytes()[n]).ok_or_else(bad)?;
                Ok((rest[..n].into(), Some(message_type)))
            }
            _ => Err(bad()),
        }
    }
}

fn parse_ip(s: &str) -> Result<Target, DialError> {
    let parts: Vec<&str> = s.split('*').collect();
    if parts.len() != 4 {
        return Err(DialError::BadIp(
            s.into(),
            "needs four numbers separated by `*`",
        ));
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DialError::BadIp(
                s.into(),
                "each part must be 1 to 3 digits",
            ));
        }
        *octet = part
            .parse()
            .map_err(|_| DialError::BadIp(s.into(), "each part must be at most 255"))?;
    }
    Ok(Target::Ip(Ipv4Addr::from(octets)))
}

impl fmt::Display for DialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DialKind::Message => "message",
            DialKind::GroupMessage => "group_message",
            DialKind::Reply => "reply",
            DialKind::Retrieve => "retrieve",
            DialKind::RetrieveNext => "retrieve_next",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The default plan with every external number allowed.
    fn plan() -> NumberPlan {
        NumberPlan::new(NumberingConfig {
            external_targets: vec!["X.".into()],
            ..NumberingConfig::default()
        })
    }

    #[test]
    fn external_numbers_need_a_pattern() {
        let default = NumberPlan::new(NumberingConfig::default());
        assert_eq!(
            default.parse("*77004915551234"),
            Err(DialError::ExternalNotAllowed("004915551234".into()))
        );
        assert!(default.parse("*771002").is_ok());
        let german = NumberPlan::new(NumberingConfig {
            external_targets: vec!["0049X.".into()],
            ..NumberingConfig::default()
        });
        assert!(german.parse("*77004915551234").is_ok());
        assert_eq!(
            german.parse("*7700331555123"),
            Err(DialError::ExternalNotAllowed("00331555123".into()))
        );
    }

    fn ext(v: &str) -> Target {
        Target::Extension(v.into())
    }

    fn parse(s: &str) -> Dialed {
        plan().parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn message_prefix_and_suffix() {
        let d = parse("*771002");
        assert_eq!(
            (d.kind, d.form, d.targets),
            (DialKind::Message, Form::Prefix, vec![ext("1002")])
        );
        let d = parse("1002*77");
        assert_eq!(
            (d.kind, d.form, d.targets),
            (DialKind::Message, Form::Suffix, vec![ext("1002")])
        );
    }

    #[test]
    fn numeric_session_ids_are_prefix_forms() {
        assert_eq!(parse("7701002").targets, vec![ext("1002")]);
        assert_eq!(parse("770").kind, DialKind::Reply);
        assert_eq!(parse("550").kind, DialKind::RetrieveNext);
        assert_eq!(
            parse("780*1002*1003").targets,
            vec![ext("1002"), ext("1003")]
        );
        let d = parse("5501234561");
        assert_eq!(d.message_code.as_deref(), Some("123456"));
        assert_eq!(d.message_type, Some(MessageType::InstantMessage));
    }

    #[test]
    fn suffix_form_survives_extensions_that_look_like_session_ids() {
        assert_eq!(parse("7709*77").targets, vec![ext("7709")]);
        assert_eq!(parse("770*77").targets, vec![ext("770")]);
        assert_eq!(parse("550123*77").targets, vec![ext("550123")]);
        assert_eq!(parse("780*77").targets, vec![ext("780")]);
        assert_eq!(parse("780*78").targets, vec![Target::Group("780".into())]);
        // The prefix reading's error is kept when no suffix reading exists.
        assert!(matches!(
            plan().parse("780*1002*"),
            Err(DialError::BadTarget(..))
        ));
    }

    #[test]
    fn numeric_suffix_form() {
        let d = parse("1002770");
        assert_eq!(
            (d.kind, d.form, d.targets),
            (DialKind::Message, Form::Suffix, vec![ext("1002")])
        );
        assert_eq!(parse("10770").targets, vec![ext("10")]);
        assert_eq!(parse("600780").targets, vec![Target::Group("600".into())]);
        // The numeric prefix form keeps its reading where both would fit.
        assert_eq!(parse("7701770").targets, vec![ext("1770")]);
        assert_eq!(parse("770770").targets, vec![ext("770")]);
        // An outside number that ends like an id is not an extension + id,
        // and too short a number before the id is none.
        for not in ["5551234770", "1770", "770", "12345678770"] {
            let read = plan().parse(not);
            assert!(
                !matches!(&read, Ok(d) if d.form == Form::Suffix),
                "{not}: {read:?}"
            );
        }
        assert!(plan().parse("1770").is_err());
    }

    #[test]
    fn every_short_extension_round_trips_in_both_forms() {
        let plan = plan();
        for len in 2..=4u32 {
            for n in 0..10u32.pow(len) {
                let e = format!("{n:0len$}", len = len as usize);
                for dialed in [format!("*77{e}"), format!("{e}*77")] {
                    let d = plan
                        .parse(&dialed)
                        .unwrap_or_else(|err| panic!("{dialed}: {err}"));
                    assert_eq!(
                        (d.kind, d.targets),
                        (DialKind::Message, vec![ext(&e)]),
                        "{dialed}"
                    );
                }
            }
        }
    }

    #[test]
    fn ip_targets() {
        let ip = Target::Ip(Ipv4Addr::new(192, 168, 1, 20));
        assert_eq!(parse("*77*192*168*1*20").targets, vec![ip.clone()]);
        assert_eq!(parse("192*168*1*20*77").targets, vec![ip]);
        assert!(matches!(
            plan().parse("*192*168*1*20*77"),
            Err(DialError::NotInPlan(_))
        ));
        for bad in [
            "*77*192*168*1",
            "*77*256*1*1*1",
            "*77*1**1*1",
            "*77*1*1*1*1*1",
            "*77*1234*1*1*1",
        ] {
            assert!(
                matches!(plan().parse(bad), Err(DialError::BadIp(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn extensions_and_numbers() {
        assert_eq!(parse("*7712").targets, vec![ext("12")]);
        assert_eq!(parse("*77123456").targets, vec![ext("123456")]);
        assert_eq!(
            parse("*771234567").targets,
            vec![Target::Number("1234567".into())]
        );
        assert_eq!(
            parse("*77004915551234567").targets,
            vec![Target::Number("004915551234567".into())]
        );
        assert!(matches!(
            plan().parse("*771"),
            Err(DialError::BadTarget(..))
        ));
        assert!(matches!(
            plan().parse("*770049155512345678"),
            Err(DialError::BadTarget(..))
        ));
    }

    #[test]
    fn group_messages() {
        let d = parse("*78*1002*1003");
        assert_eq!(
            (d.kind, d.targets),
            (DialKind::GroupMessage, vec![ext("1002"), ext("1003")])
        );
        let d = parse("*78600");
        assert_eq!(d.targets, vec![Target::Group("600".into())]);
        assert_eq!(parse("600*78").targets, vec![Target::Group("600".into())]);
        assert!(matches!(
            plan().parse("*1002*1003*78"),
            Err(DialError::NotInPlan(_))
        ));
        assert!(matches!(plan().parse("*78"), Err(DialError::NoGroup(_))));
        assert!(matches!(
            plan().parse("*78*1002*1002"),
            Err(DialError::DuplicateTarget(_))
        ));
        assert!(matches!(
            plan().parse("*78*1002**1003"),
            Err(DialError::BadTarget(..))
        ));
        let many = format!(
            "*78*{}",
            (1000..1021)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("*")
        );
        assert!(matches!(
            plan().parse(&many),
            Err(DialError::TooManyTargets(20))
        ));
    }

    #[test]
    fn reply_and_retrieval() {
        assert_eq!(parse("*77").kind, DialKind::Reply);
        assert_eq!(parse("*55").kind, DialKind::RetrieveNext);
        let d = parse("*55123456");
        assert_eq!(
            (d.kind, d.message_code.as_deref(), d.message_type),
            (DialKind::Retrieve, Some("123456"), None)
        );
        assert_eq!(parse("123456*55").message_code.as_deref(), Some("123456"));
        for bad in ["*551234", "*551234567", "*551234565", "*55123*56"] {
            assert!(
                matches!(plan().parse(bad), Err(DialError::BadMessageCode(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn send_key_and_spaces_are_tolerated() {
        assert_eq!(parse("*771002#").targets, vec![ext("1002")]);
        assert_eq!(parse(" *771002 ").targets, vec![ext("1002")]);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(plan().parse(""), Err(DialError::Empty));
        assert_eq!(plan().parse("#"), Err(DialError::Empty));
        assert_eq!(plan().parse("*77a"), Err(DialError::BadCharacter('a')));
        assert_eq!(plan().parse("*77#1"), Err(DialError::BadCharacter('#')));
        assert!(matches!(plan().parse("1002"), Err(DialError::NotInPlan(_))));
        assert!(matches!(plan().parse("*99"), Err(DialError::NotInPlan(_))));
        assert!(matches!(
            plan().parse("*77ü"),
            Err(DialError::BadCharacter('ü'))
        ));
        assert_eq!(plan().parse(&"1".repeat(300)), Err(DialError::TooLong));
    }

    #[test]
    fn retrieval_number_round_trips() {
        let n = plan().retrieval_number("123456", MessageType::Voicemail);
        assert_eq!(n, "5501234562");
        let d = parse(&n);
        assert_eq!(
            (d.message_code.as_deref(), d.message_type),
            (Some("123456"), Some(MessageType::Voicemail))
        );
    }

    #[test]
    fn configured_codes_are_used() {
        let config = NumberingConfig {
            message_code: "*44".into(),
            multi_target_id: "0".into(),
            ..NumberingConfig::default()
        };
        let plan = NumberPlan::new(config);
        assert_eq!(plan.parse("*441002").unwrap().targets, vec![ext("1002")]);
        assert!(plan.parse("*771002").is_err());
        assert_eq!(plan.parse("*7801002*1003").unwrap().targets.len(), 2);
    }

    proptest! {
        #[test]
        fn no_string_panics(s in "[0-9*#+a ]{0,40}") {
            let _ = plan().parse(&s);
        }

        #[test]
        fn no_unicode_panics(s in "\\PC{0,40}") {
            let _ = plan().parse(&s);
        }

        #[test]
        fn any_extension_round_trips(e in "[0-9]{2,6}") {
            prop_assert_eq!(plan().parse(&format!("*77{e}")).unwrap().targets, vec![ext(&e)]);
            prop_assert_eq!(plan().parse(&format!("{e}*77")).unwrap().targets, vec![ext(&e)]);
        }

        #[test]
        fn any_ip_round_trips(a: u8, b: u8, c: u8, d: u8) {
            let ip = Ipv4Addr::new(a, b, c, d);
            let dialed = format!("*77*{a}*{b}*{c}*{d}");
            prop_assert_eq!(plan().parse(&dialed).unwrap().targets, vec![Target::Ip(ip)]);
        }
    }
}
