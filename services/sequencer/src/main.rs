//! `verity-sequencer`: wiring only; the logic is in the library.

verity_server::main!(verity_sequencer::Sequencer);
