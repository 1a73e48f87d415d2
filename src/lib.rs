//! `ivm`: instant voice messaging for FreeSWITCH and Asterisk.
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod api;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod numbering;
pub mod proto;
pub mod server;
pub mod store;
pub mod switch;
