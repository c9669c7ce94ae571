//! Verity's chunk proofs: the halo2 circuit that checks a chunk's state-tree steps (see
//! [`circuit`]), the conversion of native steps into its witness, and the prove/verify API.
//!
//! The backend is zcash's `halo2_proofs` (PLONK with the inner-product-argument commitment over
//! the Pasta cycle): no trusted setup, and the parameters and keys of a shape are derived
//! deterministically, so provers and verifiers generate the same keys independently. Why this
//! backend, and what it costs, is in `docs/adr/0007-halo2-backend.md`.

mod backend;
pub mod circuit;
#[cfg(feature = "kzg")]
pub mod kzg;
mod witness;

use std::time::{Duration, Instant};

use alloy_primitives::{B256, keccak256};
use ff::{Field, PrimeField};
use halo2_proofs::{
    pasta::{EqAffine, Fp},
    plonk::{self, BatchVerifier, ProvingKey, SingleVerifier, VerifyingKey},
    poly::commitment::Params,
    transcript::{Blake2bRead, Blake2bWrite, Challenge255},
};
use rand::rngs::SysRng;
use rand_core::UnwrapErr;

pub use circuit::{ChunkCircuit, Step as CircuitStep, Terminal, poseidon};
pub use witness::{Instances, StepError, chain_hash, circuit_step};

/// Why proving or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A segment holds more steps than the shape.
    #[error("a segment of {given} steps does not fit a circuit of {capacity}")]
    TooManySteps {
        /// Steps given.
        given: usize,
        /// Steps the circuit holds.
        capacity: usize,
    },
    /// A step cannot be put into the circuit.
    #[error(transparent)]
    Step(#[from] StepError),
    /// halo2 refused (keygen or proving).
    #[error("halo2: {0}")]
    Halo2(String),
    /// The proof does not verify against the given public inputs.
    #[error("the proof does not verify against the chunk's public inputs")]
    Invalid,
}

impl From<plonk::Error> for Error {
    fn from(error: plonk::Error) -> Self {
        Error::Halo2(error.to_string())
    }
}

/// The size of a chunk circuit: how many steps one proof holds and how deep a path may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Steps per proof.
    pub steps: usize,
    /// Levels per path: a key whose path is longer cannot be proven with this shape.
    pub depth: usize,
}

impl Shape {
    /// The production shape: 8 steps, 32 levels (a tree of ~2^30 random keys has paths of
    /// about 32 levels at its deepest).
    pub const DEFAULT: Shape = Shape {
        steps: 8,
        depth: 32,
    };

    fn padding(&self) -> ChunkCircuit {
        ChunkCircuit {
            depth: self.depth,
            steps: (0..self.steps)
                .map(|_| CircuitStep::padding(self.depth))
                .collect(),
        }
    }
}

/// Parameters and keys of one shape.
#[derive(Debug)]
pub struct Keys {
    shape: Shape,
    params: Params<EqAffine>,
    pk: ProvingKey<EqAffine>,
    generated_in: Duration,
}

impl Keys {
    /// Derives the parameters and keys of `shape` (deterministic; takes seconds).
    pub fn generate(shape: Shape) -> Result<Self, Error> {
        let started = Instant::now();
        let circuit = shape.padding();
        let mut k = 10;
        loop {
            let params = Params::<EqAffine>::new(k);
            match plonk::keygen_vk(&params, &circuit) {
                Ok(vk) => {
                    let pk = plonk::keygen_pk(&params, vk, &circuit)?;
                    return Ok(Self {
                        shape,
                        params,
                        pk,
                        generated_in: started.elapsed(),
                    });
                }
                Err(plonk::Error::NotEnoughRowsAvailable { .. }) if k < 22 => k += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// log2 of the circuit's rows.
    pub fn k(&self) -> u32 {
        self.params.k()
    }

    /// How long key generation took.
    pub fn generated_in(&self) -> Duration {
        self.generated_in
    }

    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<EqAffine> {
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

    /// Proves one segment.
    pub fn prove(&self, steps: Vec<CircuitStep>, instances: &Instances) -> Result<Vec<u8>, Error> {
        let circuit = self.circuit(steps)?;
        let public = instances.to_vec();
        let mut transcript = Blake2bWrite::<_, _, Challenge255<_>>::init(vec![]);
        plonk::create_proof(
            &self.params,
            &self.pk,
            &[circuit],
            &[&[&public]],
            UnwrapErr(SysRng),
            &mut transcript,
        )?;
        Ok(transcript.finalize())
    }

    /// Verifies one proof against its public inputs.
    pub fn verify(&self, instances: &Instances, proof: &[u8]) -> Result<(), Error> {
        let public = instances.to_vec();
        let mut transcript = Blake2bRead::<_, _, Challenge255<_>>::init(proof);
        plonk::verify_proof(
            &self.params,
            self.vk(),
            SingleVerifier::new(&self.params),
            &[&[&public]],
            &mut transcript,
        )
        .map_err(|_| Error::Invalid)
    }

    /// Verifies several proofs at once (one multi-scalar multiplication for all). False when
    /// any of them is invalid; check them one by one to find which.
    pub fn verify_batch<'a>(
        &self,
        proofs: impl IntoIterator<Item = (&'a Instances, &'a [u8])>,
    ) -> bool {
        let mut batch = BatchVerifier::new();
        for (instances, proof) in proofs {
            batch.add_proof(vec![vec![instances.to_vec()]], proof.to_vec());
        }
        batch.finalize(&self.params, self.vk())
    }
}

/// The field element standing for a chunk's transactions: keccak256 over their hashes in
/// order, with the top two bits cleared so it is below the Pasta modulus.
pub fn tx_digest(tx_hashes: impl IntoIterator<Item = B256>) -> Fp {
    let mut buf = Vec::new();
    for hash in tx_hashes {
        buf.extend_from_slice(hash.as_slice());
    }
    let mut bytes = keccak256(&buf).0;
    // Little-endian repr: the last byte is the most significant.
    bytes.reverse();
    bytes[31] &= 0x3f;
    Option::from(Fp::from_repr(bytes)).unwrap_or(Fp::ZERO)
}

/// Field element helpers shared with services (public inputs travel as 32-byte encodings).
pub fn element_bytes(value: Fp) -> [u8; 32] {
    value.to_repr()
}

#[cfg(test)]
mod tests;
