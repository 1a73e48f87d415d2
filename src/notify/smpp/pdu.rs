//! SMPP 3.4 PDUs: the subset an ESME that submits and takes receipts needs
//! (binds, `submit_sm`, `deliver_sm`, `enquire_link`, `unbind`,
//! `generic_nack`, their responses). Sans-IO: bytes in, typed PDUs out, and
//! back; every length a peer chooses is capped.

use bytes::{Buf, BytesMut};

pub const HEADER_LEN: usize = 16;
/// Larger PDUs are refused unread: a `submit_sm` with a 64 KiB
/// `message_payload` is already far beyond a notification.
pub const MAX_PDU_LEN: usize = 16 * 1024;

pub const GENERIC_NACK: u32 = 0x8000_0000;
pub const BIND_RECEIVER: u32 = 0x0000_0001;
pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
pub const SUBMIT_SM: u32 = 0x0000_0004;
pub const DELIVER_SM: u32 = 0x0000_0005;
pub const UNBIND: u32 = 0x0000_0006;
pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
pub const ENQUIRE_LINK: u32 = 0x0000_0015;
pub const RESPONSE: u32 = 0x8000_0000;

pub const TLV_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
pub const TLV_MESSAGE_PAYLOAD: u16 = 0x0424;
pub const TLV_MESSAGE_STATE: u16 = 0x0427;

pub const ESME_ROK: u32 = 0x0000_0000;
pub const ESME_RINVCMDID: u32 = 0x0000_0003;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("command_length {0} is outside 16..={MAX_PDU_LEN}")]
    CommandLength(u32),
    #[error("PDU ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} has no terminating NUL within {1} octets")]
    Unterminated(&'static str, usize),
    #[error("{0} is longer than SMPP 3.4 allows ({1} octets)")]
    TooLong(&'static str, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub command_id: u32,
    pub status: u32,
    pub sequence: u32,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `bind_receiver`, `bind_transmitter`, `bind_transceiver`.
    Bind(Bind),
    BindResp {
        system_id: String,
    },
    SubmitSm(ShortMessage),
    SubmitSmResp {
        message_id: String,
    },
    DeliverSm(ShortMessage),
    DeliverSmResp {
        message_id: String,
    },
    /// `enquire_link`, `unbind`, their responses, `generic_nack`.
    Empty,
    /// A command this codec does not parse; kept raw so it can be nacked.
    Other(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub interface_version: u8,
    pub addr_ton: u8,
    pub addr_npi: u8,
    pub address_range: String,
}

/// The body shared by `submit_sm` and `deliver_sm`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShortMessage {
    pub service_type: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub source_addr: String,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub destination_addr: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: String,
    pub validity_period: String,
    pub registered_delivery: u8,
    pub replace_if_present_flag: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    pub short_message: Vec<u8>,
    pub tlvs: Vec<Tlv>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub tag: u16,
    pub value: Vec<u8>,
}

impl ShortMessage {
    pub fn tlv(&self, tag: u16) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.value.as_slice())
    }
}

impl Pdu {
    pub fn is_response(&self) -> bool {
        self.command_id & RESPONSE != 0
    }

    /// A request with no body (`enquire_link`, `unbind`).
    pub fn empty(command_id: u32, sequence: u32) -> Self {
        Self {
            command_id,
            status: ESME_ROK,
            sequence,
            body: Body::Empty,
        }
    }

    /// The response to `self` with no body, or `generic_nack` for
    /// commands without one.
    pub fn empty_response(&self, status: u32) -> Self {
        Self {
            command_id: self.command_id | RESPONSE,
            status,
            sequence: self.sequence,
            body: Body::Empty,
        }
    }
}

/// Take one PDU off the front of `buf`. Partial input is `Ok(None)`; an
/// error leaves the stream unframeable, so the connection must be closed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Pdu>, PduError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = length as usize;
    if !(HEADER_LEN..=MAX_PDU_LEN).contains(&len) {
        return Err(PduError::CommandLength(length));
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(len);
    let mut header = &frame[4..HEADER_LEN];
    let command_id = header.get_u32();
    let status = header.get_u32();
    let sequence = header.get_u32();
    let mut r = Reader {
        data: &frame[HEADER_LEN..],
    };
    let body = match command_id {
        BIND_RECEIVER | BIND_TRANSMITTER | BIND_TRANSCEIVER => Body::Bind(Bind {
            system_id: r.c_string("system_id", 16)?,
            password: r.c_string("password", 9)?,
            system_type: r.c_string("system_type", 13)?,
            interface_version: r.u8("interface_version")?,
            addr_ton: r.u8("addr_ton")?,
            addr_npi: r.u8("addr_npi")?,
            address_range: r.c_string("address_range", 41)?,
        }),
        // Error responses may come without a body.
        c if c == BIND_RECEIVER | RESPONSE
            || c == BIND_TRANSMITTER | RESPONSE
            || c == BIND_TRANSCEIVER | RESPONSE =>
        {
            Body::BindResp {
                system_id: r.c_string_or_empty("system_id", 16)?,
            }
        }
        SUBMIT_SM => Body::SubmitSm(r.short_message()?),
        DELIVER_SM => Body::DeliverSm(r.short_message()?),
        c if c == SUBMIT_SM | RESPONSE => Body::SubmitSmResp {
            message_id: r.c_string_or_empty("message_id", 65)?,
        },
        c if c == DELIVER_SM | RESPONSE => Body::DeliverSmResp {
            message_id: r.c_string_or_empty("message_id", 65)?,
        },
        GENERIC_NACK | UNBIND | ENQUIRE_LINK => Body::Empty,
        c if c == UNBIND | RESPONSE || c == ENQUIRE_LINK | RESPONSE => Body::Empty,
        _ => Body::Other(r.data.to_vec()),
    };
    Ok(Some(Pdu {
        command_id,
        status,
        sequence,
        body,
    }))
}

/// The PDU's bytes. Refuses fields longer than SMPP 3.4 allows, so a
/// config or a recipient cannot produce a PDU the SMSC would misparse.
pub fn encode(pdu: &Pdu) -> Result<Vec<u8>, PduError> {
    let mut out = vec![0u8; HEADER_LEN];
    match &pdu.body {
        Body::Bind(b) => {
            put_c_string(&mut out, "system_id", &b.system_id, 16)?;
            put_c_string(&mut out, "password", &b.password, 9)?;
            put_c_string(&mut out, "system_type", &b.system_type, 13)?;
            out.extend([b.interface_version, b.addr_ton, b.addr_npi]);
            put_c_string(&mut out, "address_range", &b.address_range, 41)?;
        }
        Body::BindResp { system_id } => put_c_string(&mut out, "system_id", system_id, 16)?,
        Body::SubmitSm(sm) | Body::DeliverSm(sm) => put_short_message(&mut out, sm)?,
        Body::SubmitSmResp { message_id } | Body::DeliverSmResp { message_id } => {
            put_c_string(&mut out, "message_id", message_id, 65)?
        }
        Body::Empty => {}
        Body::Other(raw) => out.extend_from_slice(raw),
    }
    if out.len() > MAX_PDU_LEN {
        return Err(PduError::CommandLength(
            u32::try_from(out.len()).unwrap_or(u32::MAX),
        ));
    }
    // Fits: checked against MAX_PDU_LEN just above.
    let length = out.len() as u32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    out[4..8].copy_from_slice(&pdu.command_id.to_be_bytes());
    out[8..12].copy_from_slice(&pdu.status.to_be_bytes());
    out[12..16].copy_from_slice(&pdu.sequence.to_be_bytes());
    Ok(out)
}

fn put_c_string(
    out: &mut Vec<u8>,
    field: &'static str,
    value: &str,
    max_with_nul: usize,
) -> Result<(), PduError> {
    if value.len() >= max_with_nul || value.as_bytes().contains(&0) {
        return Err(PduError::TooLong(field, max_with_nul - 1));
    }
    out.extend_from_slice(value.as_bytes());
    out.push(0);
    Ok(())
}

fn put_short_message(out: &mut Vec<u8>, sm: &ShortMessage) -> Result<(), PduError> {
    put_c_string(out, "service_type", &sm.service_type, 6)?;
    out.extend([sm.source_addr_ton, sm.source_addr_npi]);
    put_c_string(out, "source_addr", &sm.source_addr, 21)?;
    out.extend([sm.dest_addr_ton, sm.dest_addr_npi]);
    put_c_string(out, "destination_addr", &sm.destination_addr, 21)?;
    out.extend([sm.esm_class, sm.protocol_id, sm.priority_flag]);
    put_c_string(
        out,
        "schedule_delivery_time",
        &sm.schedule_delivery_time,
        17,
    )?;
    put_c_string(out, "validity_period", &sm.validity_period, 17)?;
    out.extend([
        sm.registered_delivery,
        sm.replace_if_present_flag,
        sm.data_coding,
        sm.sm_default_msg_id,
    ]);
    let sm_length = u8::try_from(sm.short_message.len())
        .map_err(|_| PduError::TooLong("short_message", 254))?;
    if sm_length > 254 {
        return Err(PduError::TooLong("short_message", 254));
    }
    out.push(sm_length);
    out.extend_from_slice(&sm.short_message);
    for tlv in &sm.tlvs {
        let len =
            u16::try_from(tlv.value.len()).map_err(|_| PduError::TooLong("TLV value", 65535))?;
        out.extend(tlv.tag.to_be_bytes());
        out.extend(len.to_be_bytes());
        out.extend_from_slice(&tlv.value);
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        let (&b, rest) = self.data.split_first().ok_or(PduError::Truncated(field))?;
        self.data = rest;
        Ok(b)
    }

    /// A C-octet string of at most `max_with_nul` octets, NUL included.
    fn c_string(&mut self, field: &'static str, max_with_nul: usize) -> Result<String, PduError> {
        let window = &self.data[..self.data.len().min(max_with_nul)];
        let Some(nul) = window.iter().position(|&b| b == 0) else {
            return Err(if self.data.len() < max_with_nul {
                PduError::Truncated(field)
            } else {
                PduError::Unterminated(field, max_with_nul)
            });
        };
        let value = String::from_utf8_lossy(&window[..nul]).into_owned();
        self.data = &self.data[nul + 1..];
        Ok(value)
    }

    fn c_string_or_empty(
        &mut self,
        field: &'static str,
        max_with_nul: usize,
    ) -> Result<String, PduError> {
        if self.data.is_empty() {
            Ok(String::new())
        } else {
            self.c_string(field, max_with_nul)
        }
    }

    fn short_message(&mut self) -> Result<ShortMessage, PduError> {
        let mut sm = ShortMessage {
            service_type: self.c_string("service_type", 6)?,
            source_addr_ton: self.u8("source_addr_ton")?,
            source_addr_npi: self.u8("source_addr_npi")?,
            source_addr: self.c_string("source_addr", 21)?,
            dest_addr_ton: self.u8("dest_addr_ton")?,
            dest_addr_npi: self.u8("dest_addr_npi")?,
            destination_addr: self.c_string("destination_addr", 21)?,
            esm_class: self.u8("esm_class")?,
            protocol_id: self.u8("protocol_id")?,
            priority_flag: self.u8("priority_flag")?,
            schedule_delivery_time: self.c_string("schedule_delivery_time", 17)?,
            validity_period: self.c_string("validity_period", 17)?,
            registered_delivery: self.u8("registered_delivery")?,
            replace_if_present_flag: self.u8("replace_if_present_flag")?,
            data_coding: self.u8("data_coding")?,
            sm_default_msg_id: self.u8("sm_default_msg_id")?,
            ..ShortMessage::default()
        };
        let sm_length = usize::from(self.u8("sm_length")?);
        if self.data.len() < sm_length {
            return Err(PduError::Truncated("short_message"));
        }
        let (message, rest) = self.data.split_at(sm_length);
        sm.short_message = message.to_vec();
        self.data = rest;
        while !self.data.is_empty() {
            if self.data.len() < 4 {
                return Err(PduError::Truncated("TLV header"));
            }
            let tag = u16::from_be_bytes([self.data[0], self.data[1]]);
            let len = usize::from(u16::from_be_bytes([self.data[2], self.data[3]]));
            let rest = &self.data[4..];
            if rest.len() < len {
                return Err(PduError::Truncated("TLV value"));
            }
            sm.tlvs.push(Tlv {
                tag,
                value: rest[..len].to_vec(),
            });
            self.data = &rest[len..];
        }
        Ok(sm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Pdu> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(pdu) = decode(&mut buf).unwrap() {
            out.push(pdu);
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn bind_transceiver_bytes_match_the_spec_layout() {
        let pdu = Pdu {
            command_id: BIND_TRANSCEIVER,
            status: 0,
            sequence: 1,
            body: Body::Bind(Bind {
                system_id: "ivm".into(),
                password: "secret".into(),
                system_type: String::new(),
                interface_version: 0x34,
                addr_ton: 0,
                addr_npi: 0,
                address_range: String::new(),
            }),
        };
        let bytes = encode(&pdu).unwrap();
        assert_eq!(
            bytes,
            hex("0000 0020 0000 0009 0000 0000 0000 0001
                 69766d00 73656372657400 00 34 00 00 00")
        );
        assert_eq!(decode_all(&bytes), [pdu]);
    }

    #[test]
    fn submit_sm_round_trips_with_tlvs() {
        let pdu = Pdu {
            command_id: SUBMIT_SM,
            status: 0,
            sequence: 7,
            body: Body::SubmitSm(ShortMessage {
                source_addr_ton: 5,
                source_addr: "ivm".into(),
                dest_addr_ton: 1,
                dest_addr_npi: 1,
                destination_addr: "4915550001".into(),
                registered_delivery: 1,
                short_message: b"Dial *55123456".to_vec(),
                tlvs: vec![Tlv {
                    tag: TLV_MESSAGE_PAYLOAD,
                    value: vec![1, 2, 3],
                }],
                ..ShortMessage::default()
            }),
        };
        assert_eq!(decode_all(&encode(&pdu).unwrap()), [pdu]);
    }

    #[test]
    fn encode_refuses_overlong_fields() {
        let pdu = Pdu {
            command_id: SUBMIT_SM,
            status: 0,
            sequence: 1,
            body: Body::SubmitSm(ShortMessage {
                destination_addr: "1".repeat(21),
                ..ShortMessage::default()
            }),
        };
        assert_eq!(encode(&pdu), Err(PduError::TooLong("destination_addr", 20)));
    }
}
