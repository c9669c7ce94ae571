//! `verity-prover`: wiring only; the logic is in the library.

verity_server::main!(verity_prover::Prover);
