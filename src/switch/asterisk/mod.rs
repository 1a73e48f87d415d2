//! The Asterisk adapter: FastAGI for call control, AMI for originate,
//! events, presence and SIP MESSAGE. The only module that knows their syntax.

pub mod agi;
pub mod ami;
