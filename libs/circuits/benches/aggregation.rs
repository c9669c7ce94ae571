//! What aggregating chunk proofs costs on this machine (issue 23, ADR 0015 point 4): `n`
//! consecutive segments of the main shape (8 steps of 32 levels over a 100,000-leaf tree) are
//! proven with the Poseidon transcript an in-circuit verifier needs, then one aggregation proof
//! (axiom's `snark-verifier-sdk`, SHPLONK accumulation) verifies them all and exposes their
//! public inputs; a verifier then checks one proof and one pairing for the `n` segments.
//!
//! `cargo bench -p verity-circuits --features aggregation --bench aggregation` (not part of
//! `make bench` or `make test`: it compiles the SDK and needs minutes and gigabytes).
//! `VERITY_AGG_SEGMENTS` (default `2`) lists the segment counts, comma-separated;
//! `VERITY_AGG_K` (default 21) is the aggregation circuit's log2 rows. Prints figures; asserts
//! nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{key, peak_mib};
use halo2_axiom::{
    circuit::Layouter,
    halo2curves::bn256::{Bn256, G1Affine},
    plonk::{Circuit, ConstraintSystem, Error},
    poly::{
        commitment::{Params as _, ParamsProver as _},
        kzg::commitment::ParamsKZG,
    },
};
use rand_core_06::OsRng;
use snark_verifier_sdk::{
    CircuitExt, NativeLoader, PlonkVerifier, SHPLONK, Snark, gen_pk,
    halo2::{
        POSEIDON_SPEC, PoseidonTranscript,
        aggregation::{AggregationCircuit, AggregationConfigParams, VerifierUniversality},
        gen_snark_shplonk,
    },
    snark_verifier::{pcs::kzg::KzgDecidingKey, verifier::SnarkVerifier},
};
use verity_circuits::{ChunkCircuit, Fr, Instances, Keys, Shape, circuit_step, tx_digest};
use verity_commitment::{Poseidon2Bn254, SparseMerkleTree};

/// The stage of halo2-base's circuit builder (re-exported through the SDK's halo2-ecc).
use snark_verifier_sdk::snark_verifier::loader::halo2::halo2_ecc::halo2_base::gates::circuit::CircuitBuilderStage;

const SHAPE: Shape = Shape {
    steps: 8,
    depth: 32,
};

/// A chunk circuit with its public inputs, as the SDK takes a circuit.
#[derive(Clone)]
struct Segment {
    circuit: ChunkCircuit,
    instances: Vec<Vec<Fr>>,
}

impl Circuit<Fr> for Segment {
    type Config = <ChunkCircuit as Circuit<Fr>>::Config;
    type FloorPlanner = <ChunkCircuit as Circuit<Fr>>::FloorPlanner;
    type Params = ();

    fn without_witnesses(&self) -> Self {
        Self {
            circuit: self.circuit.without_witnesses(),
            instances: self.instances.clone(),
        }
    }

    fn configure(meta: &mut ConstraintSystem<Fr>) -> Self::Config {
        ChunkCircuit::configure(meta)
    }

    fn synthesize(&self, config: Self::Config, layouter: impl Layouter<Fr>) -> Result<(), Error> {
        self.circuit.synthesize(config, layouter)
    }
}

impl CircuitExt<Fr> for Segment {
    fn num_instance(&self) -> Vec<usize> {
        self.instances.iter().map(Vec::len).collect()
    }

    fn instances(&self) -> Vec<Vec<Fr>> {
        self.instances.clone()
    }
}

fn main() {
    let counts: Vec<usize> = std::env::var("VERITY_AGG_SEGMENTS")
        .unwrap_or_else(|_| "2".into())
        .split(',')
        .map(|n| n.trim().parse().expect("VERITY_AGG_SEGMENTS: numbers"))
        .collect();
    let k_agg: u32 = std::env::var("VERITY_AGG_K")
        .ok()
        .map_or(21, |k| k.parse().expect("VERITY_AGG_K: a number"));
    let max = counts.iter().copied().max().unwrap_or(2);

    // One setup for both layers: the aggregate's accumulator is checked against the same
    // secret the segments were committed under. Local and insecure: fine for measuring.
    let started = Instant::now();
    let params = ParamsKZG::<Bn256>::setup(k_agg, OsRng);
    let k_inner = Keys::k_of(SHAPE);
    let mut inner = params.clone();
    inner.downsize(k_inner);
    println!(
        "KZG setup at k={k_agg} in {:.1?} (segments at k={k_inner})",
        started.elapsed()
    );

    // `max` consecutive segments of 8 steps over a 100,000-leaf tree, chained as a prover
    // chains them: each one's roots start where the previous one's end.
    let mut tree = SparseMerkleTree::new(Poseidon2Bn254);
    tree.apply((0..100_000u64).map(|n| (key(n), Some(key(n + 1)))));
    let tx = tx_digest([key(1)]);
    let mut segments = Vec::new();
    for s in 0..max {
        let pre_root = tree.root();
        let native: Vec<_> = (0..SHAPE.steps as u64)
            .map(|i| {
                let n = s as u64 * 100 + i;
                tree.step(key(n * 7919 % 100_000), Some(key(1_000_000 + n)))
            })
            .collect();
        let instances = Instances::of_steps(pre_root, &native, tx).unwrap();
        let steps = native
            .iter()
            .map(|step| circuit_step(step, SHAPE.depth).unwrap())
            .collect();
        segments.push(Segment {
            circuit: ChunkCircuit::padded(SHAPE, steps).unwrap(),
            instances: instances.to_columns(SHAPE.steps).unwrap(),
        });
    }

    let started = Instant::now();
    let blank = Segment {
        circuit: ChunkCircuit::blank(SHAPE),
        instances: segments[0].instances.clone(),
    };
    let pk = gen_pk(&inner, &blank, None);
    println!("segment keygen in {:.1?}", started.elapsed());
    let started = Instant::now();
    let snarks: Vec<Snark> = segments
        .iter()
        .map(|segment| gen_snark_shplonk(&inner, &pk, segment.clone(), None::<&str>))
        .collect();
    println!(
        "{max} segments proven with the Poseidon transcript in {:.1?} ({:.2} s each, with the \
         SDK's own check of each), proof {} bytes",
        started.elapsed(),
        started.elapsed().as_secs_f64() / max as f64,
        snarks[0].proof.len()
    );

    for n in counts {
        aggregate(&params, k_agg, &snarks[..n]);
    }
}

fn aggregate(params: &ParamsKZG<Bn256>, k: u32, snarks: &[Snark]) {
    let n = snarks.len();
    let config = AggregationConfigParams {
        degree: k,
        lookup_bits: k as usize - 1,
        ..Default::default()
    };
    // The same circuit at both stages, every segment's public inputs exposed.
    let circuit = |stage, config| {
        let mut circuit = AggregationCircuit::new::<SHPLONK>(
            stage,
            config,
            params,
            snarks.to_vec(),
            VerifierUniversality::None,
        );
        circuit.expose_previous_instances(false);
        circuit
    };
    let started = Instant::now();
    let mut keygen = circuit(CircuitBuilderStage::Keygen, config);
    let config = keygen.calculate_params(Some(10));
    let pk = gen_pk(params, &keygen, None);
    let break_points = keygen.break_points();
    drop(keygen);
    let keygen_time = started.elapsed();

    let started = Instant::now();
    let prover = circuit(CircuitBuilderStage::Prover, config).use_break_points(break_points);
    let aggregate = gen_snark_shplonk(params, &pk, prover, None::<&str>);
    let prove_time = started.elapsed();

    // What a light verifier would do: read and verify the aggregate, which also decides the
    // accumulator of the segments' openings (one pairing check for all of them).
    let deciding: KzgDecidingKey<Bn256> = (params.get_g()[0], params.g2(), params.s_g2()).into();
    let verify = || {
        let mut transcript = PoseidonTranscript::<NativeLoader, &[u8]>::from_spec(
            aggregate.proof(),
            POSEIDON_SPEC.clone(),
        );
        let proof = <PlonkVerifier<SHPLONK> as SnarkVerifier<G1Affine, NativeLoader>>::read_proof(
            &deciding,
            &aggregate.protocol,
            &aggregate.instances,
            &mut transcript,
        )
        .unwrap();
        <PlonkVerifier<SHPLONK> as SnarkVerifier<G1Affine, NativeLoader>>::verify(
            &deciding,
            &aggregate.protocol,
            &aggregate.instances,
            &proof,
        )
        .unwrap();
    };
    verify();
    let runs = 20;
    let started = Instant::now();
    for _ in 0..runs {
        verify();
    }
    let verify_time = started.elapsed() / runs;
    println!(
        "aggregate of {n} segments ({} steps): k={k}, {} advice columns, keygen {keygen_time:.1?}, \
         witness and proof {prove_time:.1?}, verify {verify_time:.2?} ({:.2?} per segment), \
         proof {} bytes, {} public inputs, peak RSS {:.0} MiB",
        n * SHAPE.steps,
        config.num_advice,
        verify_time / n as u32,
        aggregate.proof.len(),
        aggregate.instances[0].len(),
        peak_mib()
    );
}
