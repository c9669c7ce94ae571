//! `verity-autoscaler`: wiring only; the logic is in `verity_kube`.

verity_server::main!(verity_autoscaler::Autoscaler);
