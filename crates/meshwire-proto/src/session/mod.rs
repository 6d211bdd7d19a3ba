//! Link sessions (being written).
