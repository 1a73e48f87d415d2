//! Phone numbers in logs. Above debug level a number is shown as its last
//! two characters (`***02`), enough to tell two recipients apart in one
//! incident and too little to identify anyone. Debug-level events may carry
//! the full number; everything else formats recipients with [`Redacted`].
//! SMS bodies carry numbers too, so they are only logged at debug level.

use std::fmt;

/// Displays a phone number, extension or address with all but its last two
/// characters hidden.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.chars().count();
        let tail: String = self.0.chars().skip(count.saturating_sub(2)).collect();
        if count <= 2 {
            f.write_str("***")
        } else {
            write!(f, "***{tail}")
        }
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_two() {
        assert_eq!(Redacted("+4915550001").to_string(), "***01");
        assert_eq!(Redacted("1002").to_string(), "***02");
        assert_eq!(Redacted("12").to_string(), "***");
        assert_eq!(Redacted("").to_string(), "***");
        assert_eq!(format!("{:?}", Redacted("+4915550001")), "***01");
    }
}
