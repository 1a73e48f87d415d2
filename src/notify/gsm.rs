//! Choosing an SMS data coding. Pure.
//!
//! Text made only of characters that have the same code in ASCII and in the
//! GSM 03.38 default alphabet goes out as data coding 0, one byte per
//! character; anything else as UCS-2 (data coding 8, UTF-16BE). That avoids
//! a GSM translation table (and its escape sequences) at the cost of a
//! shorter limit for texts with accents.

/// Characters of one single-part SMS in the default alphabet.
pub const MAX_GSM_CHARS: usize = 160;
/// UTF-16 code units of one single-part UCS-2 SMS.
pub const MAX_UCS2_UNITS: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsCoding {
    /// Data coding 0: these bytes are both ASCII and GSM 03.38.
    Gsm(Vec<u8>),
    /// Data coding 8: UTF-16BE.
    Ucs2(Vec<u8>),
}

impl SmsCoding {
    pub fn data_coding(&self) -> u8 {
        match self {
            SmsCoding::Gsm(_) => 0,
            SmsCoding::Ucs2(_) => 8,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            SmsCoding::Gsm(b) | SmsCoding::Ucs2(b) => b,
        }
    }

    /// Whether it fits one SMS (longer texts need concatenation or the
    /// `message_payload` TLV).
    pub fn fits_one_sms(&self) -> bool {
        match self {
            SmsCoding::Gsm(b) => b.len() <= MAX_GSM_CHARS,
            SmsCoding::Ucs2(b) => b.len() <= 2 * MAX_UCS2_UNITS,
        }
    }
}

/// ASCII characters whose GSM 03.38 code is the same byte. Not in the set:
/// `@ $ _ ` [ \ ] ^ { | } ~` (moved or escaped in GSM) and other controls.
pub fn is_gsm_identity(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c == ' '
        || c == '\n'
        || c == '\r'
        || "!\"#%&'()*+,-./:;<=>?".contains(c)
}

pub fn encode(text: &str) -> SmsCoding {
    if text.chars().all(is_gsm_identity) {
        SmsCoding::Gsm(text.as_bytes().to_vec())
    } else {
        SmsCoding::Ucs2(text.encode_utf16().flat_map(u16::to_be_bytes).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_stays_one_byte_per_char() {
        let c = encode("Dial *55123456 to listen (0:42).");
        assert_eq!(c.data_coding(), 0);
        assert_eq!(c.bytes(), b"Dial *55123456 to listen (0:42).");
        assert!(c.fits_one_sms());
    }

    #[test]
    fn other_text_goes_ucs2() {
        for text in ["Grüße", "a@b", "under_score", "€"] {
            let c = encode(text);
            assert_eq!(c.data_coding(), 8, "{text}");
        }
        assert_eq!(encode("ü").bytes(), [0x00, 0xFC]);
        assert_eq!(encode("😀").bytes(), [0xD8, 0x3D, 0xDE, 0x00]);
        assert!(!encode(&"é".repeat(71)).fits_one_sms());
        assert!(!encode(&"e".repeat(161)).fits_one_sms());
    }
}
