//! AGI codec (being written).
