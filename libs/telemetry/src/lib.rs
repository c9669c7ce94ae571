//! verity-telemetry (being written).
