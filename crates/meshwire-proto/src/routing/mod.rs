//! Subscription table (being written).
