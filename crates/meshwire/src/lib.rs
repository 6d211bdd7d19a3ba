//! meshwire (being written).
