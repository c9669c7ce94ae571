//! verity-bus (being written).
