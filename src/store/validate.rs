//! Checks on what an administrator or a phone hands the store, and PIN hashing.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};

use super::StoreError;

fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A display name: 1 to 64 characters, no control characters.
pub fn name(field: &'static str, value: &str) -> Result<(), StoreError> {
    let len = value.chars().count();
    if len == 0 || len > 64 || value.trim().is_empty() {
        return Err(invalid(field, "must be 1 to 64 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// An E.164 number: `+`, a country code that does not start with 0, at most
/// 15 digits in all, at least 8.
pub fn e164(field: &'static str, value: &str) -> Result<(), StoreError> {
    let Some(digits) = value.strip_prefix('+') else {
        return Err(invalid(
            field,
            format!("`{value}` must be in E.164 form, e.g. +15551230001"),
        ));
    };
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err(invalid(
            field,
            format!("`{value}` must be + and 8 to 15 digits, not starting with 0"),
        ));
    }
    Ok(())
}

/// A digit string of `min..=max` digits (extensions, group numbers).
pub fn digits(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), StoreError> {
    if !(min..=max).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            field,
            format!("`{value}` must be {min} to {max} digits"),
        ));
    }
    Ok(())
}

/// The shortest PIN accepted.
pub const MIN_PIN_DIGITS: usize = 6;

/// Whether `pin` may be `extension`'s PIN: 6 to 12 digits (what a phone
/// keypad can enter), and not one a guesser tries first — one digit
/// repeated, a run up or down (`123456`, `987654`, wrapping round `0`),
/// or the extension itself.
pub fn pin_policy(extension: &str, pin: &str) -> Result<(), StoreError> {
    if !(MIN_PIN_DIGITS..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("pin", "must be 6 to 12 digits"));
    }
    let b = pin.as_bytes();
    let steps = |step: u8| {
        b.windows(2)
            .all(|w| w[1] == (w[0] - b'0' + step) % 10 + b'0')
    };
    if steps(0) || steps(1) || steps(9) {
        return Err(invalid(
            "pin",
            "is too easy to guess (one digit repeated or a run up or down)",
        ));
    }
    if pin.contains(extension) && !extension.is_empty() {
        return Err(invalid("pin", "must not contain the extension"));
    }
    Ok(())
}

/// Hash `extension`'s PIN (see [`pin_policy`]) with argon2 and a random
/// salt.
pub fn hash_pin(extension: &str, pin: &str) -> Result<String, StoreError> {
    pin_policy(extension, pin)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid("pin", format!("cannot hash: {e}")))
}

pub fn pin_matches(pin: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(pin.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_examples() {
        for ok in ["+15551230001", "+4930123456", "+123456789012345"] {
            assert!(e164("mobile", ok).is_ok(), "{ok}");
        }
        for bad in [
            "15551230001",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1555 123",
            "+",
            "",
        ] {
            assert!(e164("mobile", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(name("name", "Alice Müller").is_ok());
        for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pins_hash_with_fresh_salt() {
        let a = hash_pin("1001", "802468").unwrap();
        let b = hash_pin("1001", "802468").unwrap();
        assert_ne!(a, b);
        assert!(pin_matches("802468", &a) && pin_matches("802468", &b));
        assert!(!pin_matches("802469", &a));
        assert!(!pin_matches("802468", "not a hash"));
    }

    #[test]
    fn short_long_and_trivial_pins_are_refused() {
        for pin in [
            "13579",
            "1234567890123",
            "80246a",
            "",
            "000000",
            "777777777",
            "123456",
            "567890",
            "890123",
            "654321",
            "210987",
            "981002",
            "100299",
        ] {
            assert!(pin_policy("1002", pin).is_err(), "{pin} accepted");
        }
        for pin in ["802468", "135790", "1357924680", "112233"] {
            assert!(pin_policy("1002", pin).is_ok(), "{pin} refused");
        }
    }
}
