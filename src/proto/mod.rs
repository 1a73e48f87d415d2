//! Sans-IO wire codecs for the switches' control protocols.
//!
//! Owns: turning bytes into typed messages and typed commands into bytes.
//! Must not know: sockets, clocks, the session engine, or the store.
//! Every decoder takes a `BytesMut`, returns `Ok(None)` on partial input and
//! caps every length a peer can choose.

pub mod agi;
pub mod ami;
pub mod audiosocket;
pub mod esl;
