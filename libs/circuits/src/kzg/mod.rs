//! The chunk circuit on `halo2-axiom`: PLONK with the KZG commitment over BN254 (SHPLONK
//! openings), for the measured comparison with the production backend in
//! `docs/adr/0007-halo2-backend.md`. Behind the `kzg` feature; no service uses it.
//!
//! The constraint system is the production one: `circuit.rs` and `witness.rs` are compiled
//! again here against [`backend`]'s names, with Poseidon over BN254's scalar field
//! ([`PoseidonBn254`] natively, the chip of `pow5` in-circuit) instead of over Pasta.
//!
//! **The KZG parameters made here are insecure**: [`Keys::generate`] runs a local setup whose
//! secret (the toxic waste) passes through this process's memory. That is fine to measure
//! with and for a devnet; a production deployment would load the parameters of a public
//! ceremony (for example the perpetual powers of tau) instead, which this module does not do.

mod backend;
// The production circuit and witness code, compiled a second time against this backend.
#[allow(clippy::duplicate_mod)]
#[path = "../circuit.rs"]
pub mod circuit;
mod pow5;
#[allow(clippy::duplicate_mod)]
#[path = "../witness.rs"]
mod witness;

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use halo2_axiom::{
    halo2curves::bn256::{Bn256, G1Affine},
    plonk::{self, ProvingKey, VerifyingKey},
    poly::{
        VerificationStrategy,
        commitment::{Params, ParamsProver},
        kzg::{
            commitment::{KZGCommitmentScheme, ParamsKZG},
            multiopen::{ProverSHPLONK, VerifierSHPLONK},
            strategy::{AccumulatorStrategy, SingleStrategy},
        },
    },
    transcript::{
        Blake2bRead, Blake2bWrite, Challenge255, TranscriptReadBuffer, TranscriptWriterBuffer,
    },
};
use rand_core_06::OsRng;
use verity_commitment::TreeHasher;

pub use backend::{F as Fr, Field, PrimeField};
pub use circuit::{ChunkCircuit, Step as CircuitStep, Terminal};
pub use pow5::poseidon;
pub use witness::{Instances, StepError, chain_hash, circuit_step};

use crate::{Error, Shape};

/// The state tree's hasher over BN254: the same construction as `verity_commitment`'s
/// `PoseidonPasta` (limbs for keys and values, a third domain for non-canonical digests),
/// with the Poseidon of this module.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoseidonBn254;

/// A 32-byte string as two 128-bit limbs, high first.
pub fn limbs(bytes: &B256) -> [Fr; 2] {
    let half = |range: std::ops::Range<usize>| {
        let mut limb = [0u8; 16];
        limb.copy_from_slice(&bytes[range]);
        Fr::from_u128(u128::from_be_bytes(limb))
    };
    [half(0..16), half(16..32)]
}

/// A digest as the field element it encodes, if it is canonical.
pub fn field_element(digest: &B256) -> Option<Fr> {
    Option::from(Fr::from_repr(digest.0))
}

/// A field element as a digest.
pub fn digest(element: Fr) -> B256 {
    B256::from(element.to_repr())
}

impl TreeHasher for PoseidonBn254 {
    fn leaf(&self, key: &B256, value: &B256) -> B256 {
        let [key_hi, key_lo] = limbs(key);
        let [value_hi, value_lo] = limbs(value);
        digest(poseidon([key_hi, key_lo, value_hi, value_lo]))
    }

    fn node(&self, left: &B256, right: &B256) -> B256 {
        match (field_element(left), field_element(right)) {
            (Some(left), Some(right)) => digest(poseidon([left, right])),
            _ => {
                let [a, b] = limbs(left);
                let [c, d] = limbs(right);
                digest(poseidon([a, b, c, d, Fr::ONE]))
            }
        }
    }
}

fn halo2(error: plonk::Error) -> Error {
    Error::Halo2(error.to_string())
}

/// Parameters (insecure local setup, see the module documentation) and keys of one shape.
#[derive(Debug)]
pub struct Keys {
    shape: Shape,
    params: ParamsKZG<Bn256>,
    pk: ProvingKey<G1Affine>,
    generated_in: Duration,
}

impl Keys {
    /// The rows a shape needs: its regions laid out as the prover will, plus halo2's blinding
    /// rows, as a power of two.
    pub fn k_of(shape: Shape) -> u32 {
        let mut cs = plonk::ConstraintSystem::default();
        let config = <ChunkCircuit as plonk::Circuit<Fr>>::configure(&mut cs);
        let mut planner = backend::Planner::measuring();
        let circuit = shape_circuit(shape);
        // Measuring never fails: it assigns nothing.
        let _ = circuit.layout(&config, &mut planner);
        let rows = planner.rows() + cs.minimum_rows();
        rows.next_power_of_two().trailing_zeros()
    }

    /// Runs the local (insecure) setup for `shape` and derives its keys.
    pub fn generate(shape: Shape) -> Result<Self, Error> {
        let started = Instant::now();
        let k = Self::k_of(shape);
        let params = ParamsKZG::<Bn256>::setup(k, OsRng);
        let circuit = shape_circuit(shape);
        let vk = plonk::keygen_vk(&params, &circuit).map_err(halo2)?;
        let pk = plonk::keygen_pk(&params, vk, &circuit).map_err(halo2)?;
        Ok(Self {
            shape,
            params,
            pk,
            generated_in: started.elapsed(),
        })
    }

    /// log2 of the circuit's rows.
    pub fn k(&self) -> u32 {
        self.params.k()
    }

    /// How long the setup and key generation took.
    pub fn generated_in(&self) -> Duration {
        self.generated_in
    }

    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<G1Affine> {
        self.pk.get_vk()
    }

    /// The circuit for `steps` (padded to the shape).
    pub fn circuit(&self, steps: Vec<CircuitStep>) -> Result<ChunkCircuit, Error> {
        if steps.len() > self.shape.steps {
            return Err(Error::TooManySteps {
                given: steps.len(),
                capacity: self.shape.steps,
            });
        }
        let mut steps = steps;
        steps.resize_with(self.shape.steps, || CircuitStep::padding(self.shape.depth));
        Ok(ChunkCircuit {
            depth: self.shape.depth,
            steps,
        })
    }

    /// Proves one segment (SHPLONK openings, Blake2b transcript).
    pub fn prove(&self, steps: Vec<CircuitStep>, instances: &Instances) -> Result<Vec<u8>, Error> {
        let circuit = self.circuit(steps)?;
        let public = instances.to_vec();
        let mut transcript = Blake2bWrite::<_, G1Affine, Challenge255<_>>::init(vec![]);
        plonk::create_proof::<KZGCommitmentScheme<Bn256>, ProverSHPLONK<'_, Bn256>, _, _, _, _>(
            &self.params,
            &self.pk,
            &[circuit],
            &[&[&public]],
            OsRng,
            &mut transcript,
        )
        .map_err(halo2)?;
        Ok(transcript.finalize())
    }

    /// Verifies one proof (one pairing check).
    pub fn verify(&self, instances: &Instances, proof: &[u8]) -> Result<(), Error> {
        let public = instances.to_vec();
        let mut transcript = Blake2bRead::<_, G1Affine, Challenge255<_>>::init(proof);
        plonk::verify_proof::<KZGCommitmentScheme<Bn256>, VerifierSHPLONK<'_, Bn256>, _, _, _>(
            self.params.verifier_params(),
            self.vk(),
            SingleStrategy::new(&self.params),
            &[&[&public]],
            &mut transcript,
        )
        .map_err(|_| Error::Invalid)
    }

    /// Verifies several proofs at once: their pairing checks are folded (random linear
    /// combination) into one. False when any of them is invalid.
    pub fn verify_batch<'a>(
        &self,
        proofs: impl IntoIterator<Item = (&'a Instances, &'a [u8])>,
    ) -> bool {
        let mut strategy = AccumulatorStrategy::new(&self.params);
        for (instances, proof) in proofs {
            let public = instances.to_vec();
            let mut transcript = Blake2bRead::<_, G1Affine, Challenge255<_>>::init(proof);
            strategy = match plonk::verify_proof::<
                KZGCommitmentScheme<Bn256>,
                VerifierSHPLONK<'_, Bn256>,
                _,
                _,
                _,
            >(
                self.params.verifier_params(),
                self.vk(),
                strategy,
                &[&[&public]],
                &mut transcript,
            ) {
                Ok(strategy) => strategy,
                Err(_) => return false,
            };
        }
        VerificationStrategy::<_, VerifierSHPLONK<'_, Bn256>>::finalize(strategy)
    }
}

fn shape_circuit(shape: Shape) -> ChunkCircuit {
    ChunkCircuit {
        depth: shape.depth,
        steps: (0..shape.steps)
            .map(|_| CircuitStep::padding(shape.depth))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
