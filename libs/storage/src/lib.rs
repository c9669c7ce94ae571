//! verity-storage (being written).
