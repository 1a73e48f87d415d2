//! The SMS text: a configurable template with named fields, rendered by a
//! pure function. Parsed once (at config load), so a typo in a field name is
//! a config error, never a surprise at send time.
//!
//! Fields: `{number}` what to dial to hear the message, `{from}` the sender's
//! number, `{from_name}` the sender's name (else their number), `{duration}`
//! as m:ss, `{seconds}`, `{type}` ("voice message", ...). `{{` and `}}` are
//! literal braces.

use super::MessageType;
use super::gsm;

pub const DEFAULT_SMS_TEMPLATE: &str =
    "Voice message from {from_name} ({from}), {duration}. Dial {number} to listen.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown field `{{{0}}}` (known: {{number}}, {{from}}, {{from_name}}, {{duration}}, {{seconds}}, {{type}})"
    )]
    UnknownField(String),
    #[error("unclosed `{{` (write `{{{{` for a literal brace)")]
    Unclosed,
    #[error("stray `}}` (write `}}}}` for a literal brace)")]
    StrayClose,
    #[error(
        "the template must contain {{number}}: the SMS is how the recipient learns what to dial"
    )]
    NoNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Number,
    From,
    FromName,
    Duration,
    Seconds,
    Type,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsTemplate {
    parts: Vec<Part>,
}

/// What an SMS about one message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsFields<'a> {
    pub retrieval_number: &'a str,
    pub from: &'a str,
    /// Empty: the number stands in.
    pub from_name: &'a str,
    pub duration_seconds: u32,
    pub message_type: MessageType,
}

impl Default for SmsTemplate {
    fn default() -> Self {
        // The default template is a constant that the tests parse.
        Self::parse(DEFAULT_SMS_TEMPLATE).unwrap_or(Self { parts: Vec::new() })
    }
}

impl SmsTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::StrayClose),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if name.len() < 32 => name.push(c),
                            _ => return Err(TemplateError::Unclosed),
                        }
                    }
                    let field = match name.as_str() {
                        "number" => Field::Number,
                        "from" => Field::From,
                        "from_name" => Field::FromName,
                        "duration" => Field::Duration,
                        "seconds" => Field::Seconds,
                        "type" => Field::Type,
                        _ => return Err(TemplateError::UnknownField(name)),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.contains(&Part::Field(Field::Number)) {
            return Err(TemplateError::NoNumber);
        }
        Ok(Self { parts })
    }

    /// The SMS text. If it would not fit one SMS, the sender's name is
    /// shortened first: the number to dial must survive.
    pub fn render(&self, fields: &SmsFields<'_>) -> String {
        let name = one_line(if fields.from_name.trim().is_empty() {
            fields.from
        } else {
            fields.from_name
        });
        let text = self.render_with_name(fields, &name);
        let limit = if gsm::encode(&text).data_coding() == 0 {
            gsm::MAX_GSM_CHARS
        } else {
            gsm::MAX_UCS2_UNITS
        };
        let over = text.chars().count().saturating_sub(limit);
        if over == 0 || !self.parts.contains(&Part::Field(Field::FromName)) {
            return text;
        }
        let keep = name.chars().count().saturating_sub(over).max(1);
        let short: String = name.chars().take(keep).collect();
        self.render_with_name(fields, short.trim_end())
    }

    fn render_with_name(&self, fields: &SmsFields<'_>, name: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(Field::Number) => out.push_str(&one_line(fields.retrieval_number)),
                Part::Field(Field::From) => out.push_str(&one_line(fields.from)),
                Part::Field(Field::FromName) => out.push_str(name),
                Part::Field(Field::Duration) => {
                    let s = fields.duration_seconds;
                    out.push_str(&format!("{}:{:02}", s / 60, s % 60));
                }
                Part::Field(Field::Seconds) => out.push_str(&fields.duration_seconds.to_string()),
                Part::Field(Field::Type) => out.push_str(match fields.message_type {
                    MessageType::InstantMessage => "voice message",
                    MessageType::Voicemail => "voicemail",
                    MessageType::Multimedia => "multimedia message",
                    MessageType::Unified => "message",
                }),
            }
        }
        out
    }
}

/// A field never breaks the line (gateways and logs split on it).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SmsFields<'static> {
        SmsFields {
            retrieval_number: "*55123456",
            from: "1001",
            from_name: "Alice",
            duration_seconds: 42,
            message_type: MessageType::InstantMessage,
        }
    }

    #[test]
    fn default_template_says_number_sender_and_length() {
        let text = SmsTemplate::default().render(&fields());
        assert_eq!(
            text,
            "Voice message from Alice (1001), 0:42. Dial *55123456 to listen."
        );
        assert_eq!(
            SmsTemplate::parse(DEFAULT_SMS_TEMPLATE).unwrap(),
            SmsTemplate::default()
        );
    }

    #[test]
    fn every_field_and_escapes() {
        let t =
            SmsTemplate::parse("{{{type}}} {seconds}s={duration} {from_name}/{from} -> {number}")
                .unwrap();
        let f = SmsFields {
            duration_seconds: 125,
            message_type: MessageType::Voicemail,
            from_name: "",
            ..fields()
        };
        assert_eq!(t.render(&f), "{voicemail} 125s=2:05 1001/1001 -> *55123456");
    }

    #[test]
    fn template_errors_are_named() {
        assert_eq!(
            SmsTemplate::parse("Dial {numbr}"),
            Err(TemplateError::UnknownField("numbr".into()))
        );
        assert_eq!(
            SmsTemplate::parse("Dial {number"),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(
            SmsTemplate::parse("Dial } {number}"),
            Err(TemplateError::StrayClose)
        );
        assert_eq!(SmsTemplate::parse("Hello"), Err(TemplateError::NoNumber));
        let long = format!("{{{}}}", "x".repeat(100));
        assert_eq!(SmsTemplate::parse(&long), Err(TemplateError::Unclosed));
    }

    #[test]
    fn a_long_name_is_cut_so_the_number_survives() {
        let name = "Bartholomew ".repeat(20);
        let f = SmsFields {
            from_name: &name,
            ..fields()
        };
        let text = SmsTemplate::default().render(&f);
        assert!((150..=160).contains(&text.chars().count()), "{text}");
        assert!(text.ends_with("Dial *55123456 to listen."), "{text}");
        let umlaut = "Jürgen ".repeat(20);
        let f = SmsFields {
            from_name: &umlaut,
            ..fields()
        };
        let text = SmsTemplate::default().render(&f);
        assert!(text.chars().count() <= 70, "{text}");
        assert!(text.contains("*55123456"), "{text}");
    }

    #[test]
    fn fields_cannot_break_the_line() {
        let f = SmsFields {
            from_name: "Eve\nDial 0900",
            ..fields()
        };
        assert!(!SmsTemplate::default().render(&f).contains('\n'));
    }
}
