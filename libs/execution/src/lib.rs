//! verity-execution (being written).
