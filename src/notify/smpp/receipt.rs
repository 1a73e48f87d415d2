//! Delivery receipts: a `deliver_sm` with the receipt bit in `esm_class`,
//! parsed into an outcome. Pure.
//!
//! The message id comes from the `receipted_message_id` TLV, else from the
//! text's `id:` field (SMPP 3.4 Appendix B); the state from the
//! `message_state` TLV, else from `stat:`.

use super::pdu::{ShortMessage, TLV_MESSAGE_PAYLOAD, TLV_MESSAGE_STATE, TLV_RECEIPTED_MESSAGE_ID};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    pub outcome: ReceiptOutcome,
    /// `stat:` and `err:` as the SMSC wrote them (never the text excerpt,
    /// which can hold a phone number).
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Delivered,
    Failed,
    /// En route, accepted, unknown: not final.
    Intermediate,
}

/// `None` when the `deliver_sm` is not a receipt (a mobile-originated SMS).
pub fn parse(sm: &ShortMessage) -> Option<Receipt> {
    // esm_class bits 2-5: 0b0001 SMSC delivery receipt, 0b1000 intermediate.
    let kind = sm.esm_class & 0x3C;
    if kind != 0x04 && kind != 0x20 {
        return None;
    }
    let text = if sm.short_message.is_empty() {
        sm.tlv(TLV_MESSAGE_PAYLOAD).unwrap_or_default()
    } else {
        &sm.short_message
    };
    let text = String::from_utf8_lossy(text);
    let field = |name: &str| -> Option<String> {
        let prefix = format!("{name}:");
        text.split(' ')
            .find(|w| {
                w.get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
            })
            .map(|w| w[prefix.len()..].to_owned())
    };
    let message_id = sm
        .tlv(TLV_RECEIPTED_MESSAGE_ID)
        .map(|v| {
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            String::from_utf8_lossy(v).into_owned()
        })
        .filter(|id| !id.is_empty())
        .or_else(|| field("id"))?;
    let stat = field("stat").unwrap_or_default();
    let err = field("err").unwrap_or_default();
    let outcome = match sm.tlv(TLV_MESSAGE_STATE) {
        Some([2]) => ReceiptOutcome::Delivered,
        Some([3 | 4 | 5 | 8]) => ReceiptOutcome::Failed,
        Some([_]) => ReceiptOutcome::Intermediate,
        _ => match stat.to_ascii_uppercase().as_str() {
            "DELIVRD" => ReceiptOutcome::Delivered,
            "EXPIRED" | "DELETED" | "UNDELIV" | "REJECTD" => ReceiptOutcome::Failed,
            _ => ReceiptOutcome::Intermediate,
        },
    };
    let mut note = format!("stat:{}", if stat.is_empty() { "?" } else { &stat });
    if !err.is_empty() {
        note.push_str(&format!(" err:{err}"));
    }
    Some(Receipt {
        message_id,
        outcome,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::super::pdu::Tlv;
    use super::*;

    fn receipt(text: &str, tlvs: Vec<Tlv>) -> ShortMessage {
        ShortMessage {
            esm_class: 4,
            short_message: text.as_bytes().to_vec(),
            tlvs,
            ..ShortMessage::default()
        }
    }

    // A receipt as Net::SMPP sends it, with its TLVs, is decoded from real
    // bytes in tests/data/smpp/ (tests/codec_transcripts.rs).

    #[test]
    fn receipt_from_text_alone() {
        let sm = receipt(
            "id:7f3a sub:001 dlvrd:000 submit date:2611240025 done date:2611240026 stat:UNDELIV err:001 text:x",
            vec![],
        );
        let r = parse(&sm).unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.outcome),
            ("7f3a", ReceiptOutcome::Failed)
        );
        assert_eq!(r.note, "stat:UNDELIV err:001");
        let sm = receipt("id:1 stat:ENROUTE", vec![]);
        assert_eq!(parse(&sm).unwrap().outcome, ReceiptOutcome::Intermediate);
    }

    #[test]
    fn not_a_receipt() {
        let mo = ShortMessage {
            esm_class: 0,
            short_message: b"id:1 stat:DELIVRD".to_vec(),
            ..ShortMessage::default()
        };
        assert_eq!(parse(&mo), None);
        assert_eq!(parse(&receipt("stat:DELIVRD", vec![])), None, "no id");
        assert!(parse(&receipt("", vec![])).is_none());
    }
}
