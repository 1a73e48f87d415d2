//! The intro of a retrieved or pushed message: who left it and how long
//! ago, as prompts — "Message from" + the sender's number digit by digit +
//! "five minutes ago". Pure: the age is computed by whoever knows the
//! clock.

use std::time::Duration;

use super::sounds;

/// "zero" … "twenty", then the tens: 21 to 99 are a ten and a unit.
const SMALL: [&str; 21] = [
    "n-0", "n-1", "n-2", "n-3", "n-4", "n-5", "n-6", "n-7", "n-8", "n-9", "n-10", "n-11", "n-12",
    "n-13", "n-14", "n-15", "n-16", "n-17", "n-18", "n-19", "n-20",
];
const TENS: [&str; 7] = ["n-30", "n-40", "n-50", "n-60", "n-70", "n-80", "n-90"];
const JUST_NOW: &str = "just-now";
const MINUTE_AGO: &str = "minute-ago";
const MINUTES_AGO: &str = "minutes-ago";
const HOUR_AGO: &str = "hour-ago";
const HOURS_AGO: &str = "hours-ago";
const DAY_AGO: &str = "day-ago";
const DAYS_AGO: &str = "days-ago";

/// Every sound an intro may use (besides [`sounds::MESSAGE_FROM`]).
pub const ALL_SOUNDS: &[&str] = &[
    "n-0",
    "n-1",
    "n-2",
    "n-3",
    "n-4",
    "n-5",
    "n-6",
    "n-7",
    "n-8",
    "n-9",
    "n-10",
    "n-11",
    "n-12",
    "n-13",
    "n-14",
    "n-15",
    "n-16",
    "n-17",
    "n-18",
    "n-19",
    "n-20",
    "n-30",
    "n-40",
    "n-50",
    "n-60",
    "n-70",
    "n-80",
    "n-90",
    JUST_NOW,
    MINUTE_AGO,
    MINUTES_AGO,
    HOUR_AGO,
    HOURS_AGO,
    DAY_AGO,
    DAYS_AGO,
];

/// The prompts of the intro, in order. A sender that is not a number
/// (nothing, or letters from a caller ID) is not said; how long ago is.
pub fn prompts(sender: &str, age: Duration) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !sender.is_empty() && sender.len() <= 20 && sender.bytes().all(|b| b.is_ascii_digit()) {
        out.push(sounds::MESSAGE_FROM);
        out.extend(sender.bytes().map(|b| SMALL[usize::from(b - b'0')]));
    }
    let (count, one, many) = match age.as_secs() {
        s if s < 60 => {
            out.push(JUST_NOW);
            return out;
        }
        s if s < 3_600 => (s / 60, MINUTE_AGO, MINUTES_AGO),
        s if s < 86_400 => (s / 3_600, HOUR_AGO, HOURS_AGO),
        s => (s / 86_400, DAY_AGO, DAYS_AGO),
    };
    number(count, &mut out);
    out.push(if count == 1 { one } else { many });
    out
}

/// `n` as words: 0 to 20 each, 21 to 99 as a ten and a unit, larger ones
/// digit by digit.
fn number(n: u64, out: &mut Vec<&'static str>) {
    match n {
        0..=20 => out.push(SMALL[n as usize]),
        21..=99 => {
            let (tens, unit) = (n / 10, n % 10);
            out.push(if tens == 2 {
                "n-20"
            } else {
                TENS[(tens - 3) as usize]
            });
            if unit != 0 {
                out.push(SMALL[unit as usize]);
            }
        }
        _ => {
            for digit in n.to_string().bytes() {
                out.push(SMALL[usize::from(digit - b'0')]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn said(sender: &str, seconds: u64) -> String {
        prompts(sender, Duration::from_secs(seconds)).join(" ")
    }

    #[test]
    fn who_digit_by_digit_then_how_long_ago() {
        assert_eq!(
            said("1001", 5 * MIN + 59),
            "message-from n-1 n-0 n-0 n-1 n-5 minutes-ago"
        );
        assert_eq!(said("1002", 30), "message-from n-1 n-0 n-0 n-2 just-now");
        assert_eq!(said("7", MIN), "message-from n-7 n-1 minute-ago");
        assert_eq!(said("7", 3_600), "message-from n-7 n-1 hour-ago");
        assert_eq!(
            said("7", 23 * 3_600 + 3_599),
            "message-from n-7 n-20 n-3 hours-ago"
        );
        assert_eq!(said("7", 86_400), "message-from n-7 n-1 day-ago");
        assert_eq!(said("7", 45 * 86_400), "message-from n-7 n-40 n-5 days-ago");
        assert_eq!(
            said("7", 100 * 86_400),
            "message-from n-7 n-1 n-0 n-0 days-ago"
        );
    }

    #[test]
    fn a_sender_that_is_no_number_is_not_said() {
        assert_eq!(said("", 0), "just-now");
        assert_eq!(said("alice", 2 * MIN), "n-2 minutes-ago");
        assert_eq!(said(&"1".repeat(21), 2 * MIN), "n-2 minutes-ago");
    }

    #[test]
    fn every_number_to_99_has_its_words_and_uses_only_known_sounds() {
        for n in 0..=150 {
            let mut out = Vec::new();
            number(n, &mut out);
            assert!(!out.is_empty(), "{n}");
            assert!(out.iter().all(|s| ALL_SOUNDS.contains(s)), "{n}: {out:?}");
            if (21..=99).contains(&n) && n % 10 != 0 {
                assert_eq!(out.len(), 2, "{n}: {out:?}");
            }
        }
        for seconds in [0, 59, 60, 3_599, 3_600, 86_399, 86_400, 10_000_000] {
            let out = prompts("123", Duration::from_secs(seconds));
            assert!(
                out.iter()
                    .all(|s| ALL_SOUNDS.contains(s) || *s == sounds::MESSAGE_FROM),
                "{out:?}"
            );
        }
    }
}
