//! FastAGI server (being written).
