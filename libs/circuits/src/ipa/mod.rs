//! The chunk circuit on zcash's `halo2_proofs`: PLONK with the inner-product-argument
//! commitment over the Pasta cycle, no trusted setup (parameters and keys derive from the shape
//! alone). The backend Verity first used, kept behind the `ipa` feature for the measured
//! comparison of `docs/adr/0007-halo2-backend.md`; no service uses it.
//!
//! The constraint system is the production one: `circuit.rs` and `witness.rs` are compiled
//! again here against [`backend`]'s names, with `halo2_gadgets`' `Pow5Chip` and Poseidon over
//! Pasta (`verity_commitment::pasta`).

mod backend;
// The production circuit and witness code, compiled a second time against this backend.
#[allow(clippy::duplicate_mod)]
#[path = "../circuit.rs"]
pub mod circuit;
#[allow(clippy::duplicate_mod)]
#[path = "../witness.rs"]
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

pub use circuit::{ChunkCircuit, Step as CircuitStep};
pub use witness::{Instances, circuit_step};

use crate::{Error, Shape};

fn halo2(error: plonk::Error) -> Error {
    Error::Halo2(error.to_string())
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
        let circuit = ChunkCircuit::blank(shape);
        let mut k = 10;
        loop {
            let params = Params::<EqAffine>::new(k);
            match plonk::keygen_vk(&params, &circuit) {
                Ok(vk) => {
                    let pk = plonk::keygen_pk(&params, vk, &circuit).map_err(halo2)?;
                    return Ok(Self {
                        shape,
                        params,
                        pk,
                        generated_in: started.elapsed(),
                    });
                }
                Err(plonk::Error::NotEnoughRowsAvailable { .. }) if k < 22 => k += 1,
                Err(error) => return Err(halo2(error)),
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
        ChunkCircuit::padded(self.shape, steps)
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
        )
        .map_err(halo2)?;
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

#[cfg(test)]
mod tests;
