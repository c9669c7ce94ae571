//! Verity's chunk proofs: the halo2 circuit that checks a chunk's state-tree steps (see
//! [`circuit`]), the conversion of native steps into its witness, and the prove/verify API.
//!
//! The backend is `halo2-axiom`: PLONK with the KZG commitment over BN254, SHPLONK openings,
//! chosen by measurement against zcash's `halo2_proofs` (IPA over Pasta; that backend was removed
//! after the measurement, see `docs/adr/0007-halo2-backend.md`).
//!
//! KZG needs a structured reference string ([`Params`]). Production loads the parameters of a
//! public ceremony ([`Params::read`]); [`Params::setup_insecure`] makes local ones, which is
//! fine for tests and a devnet and nothing else: whoever ran it could have kept the secret and
//! could forge proofs. Provers and verifiers must use the same parameters; from them and the
//! shape alone, each derives the same keys.

mod backend;
pub mod circuit;
mod poseidon2;
mod witness;

use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::{B256, keccak256};
use halo2_axiom::{
    SerdeFormat,
    halo2curves::bn256::{Bn256, G1Affine},
    plonk::{self, ProvingKey, VerifyingKey},
    poly::{
        VerificationStrategy,
        commitment::{Params as _, ParamsProver},
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

pub use backend::{F as Fr, Field, PrimeField};
pub use circuit::{ChunkCircuit, Step as CircuitStep, Terminal, poseidon};
pub use witness::{Instances, PublicEntry, StepError, circuit_step};

/// The columns of `public` as halo2 takes them.
fn columns(public: &[Vec<Fr>]) -> Vec<&[Fr]> {
    public.iter().map(Vec::as_slice).collect()
}

/// Runs `f` with halo2's parallel loops on one thread (a rayon pool of one thread, one pool per
/// calling thread, which waits for it). Verification is many small pieces of work (a proof's points
/// decompressed, its gates evaluated at one point, a few dozen-term MSMs) that halo2 spreads
/// over rayon's global pool, whose idle workers spin and yield between them: measured on the
/// 8-step shape, a batch cost ~4.4 ms of CPU per proof for 2.8 ms of wall time, about half of it
/// in the scheduler (`perf`: `sched_yield`). On one thread the same work costs its wall time
/// alone, and a verifier with more to check runs batches on several threads. Proving keeps the
/// global pool: its FFTs and MSMs are large.
fn on_this_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread_local! {
        static POOL: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "verity-verify".into())
            .build()
            .ok();
    }
    POOL.with(|pool| match pool {
        Some(pool) => pool.install(f),
        None => f(),
    })
}

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
    /// A segment claims a shape that is neither the main nor the deep one.
    #[error("no keys for circuit shape {0:?}")]
    Shape(Shape),
    /// A larger segment shape that holds no more steps than the main shape.
    #[error("a larger segment of {steps} steps must hold more than the main shape's {main}")]
    Larger {
        /// The larger shape's steps.
        steps: usize,
        /// The main shape's steps.
        main: usize,
    },
    /// The KZG parameters cannot be read or written, or are too small for the shape.
    #[error("KZG parameters: {0}")]
    Params(String),
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

    /// The shape of a segment of one step whose path is longer than the main shape holds: 256
    /// levels, as long as a path of 256-bit keys can be (two distinct keys differ within their
    /// 256 bits). Long paths are not chance: anyone can grind a key sharing a prefix with an
    /// existing one (about 2^d / n hashes for depth d in a tree of n keys, milliseconds for
    /// d = 32), or two keys of their own sharing one (a birthday search, about 2^(d/2)).
    /// Without this shape such a key would make its chunk unprovable and stop `safe` for good.
    pub const DEEP: Shape = Shape {
        steps: 1,
        depth: 256,
    };

    /// Whether a circuit of this shape can be built: at least one step, and between 1 and 256
    /// levels (a path of 256-bit keys is never longer).
    pub fn check(&self) -> Result<(), Error> {
        if self.steps == 0 || self.depth == 0 || self.depth > Self::DEEP.depth {
            return Err(Error::Shape(*self));
        }
        Ok(())
    }

    /// Whether larger segments of `larger` steps each can go beside this main shape: each
    /// must hold more steps than it.
    pub fn check_larger(&self, larger: &[usize]) -> Result<(), Error> {
        match larger.iter().find(|steps| **steps <= self.steps) {
            Some(steps) => Err(Error::Larger {
                steps: *steps,
                main: self.steps,
            }),
            None => Ok(()),
        }
    }

    /// Whether a step whose longer path (before or after it) has `levels` levels fits.
    pub fn holds(&self, levels: usize) -> bool {
        levels <= self.depth
    }
}

/// The KZG structured reference string: powers of a secret in BN254's G1 (and G2), for
/// circuits of up to 2^k rows.
#[derive(Debug, Clone)]
pub struct Params(ParamsKZG<Bn256>);

impl Params {
    /// Parameters made here, from fresh randomness. **Insecure**: the secret passed through
    /// this process, so these are only for tests and devnets, never for a chain whose proofs
    /// anyone relies on.
    pub fn setup_insecure(k: u32) -> Self {
        Self(ParamsKZG::<Bn256>::setup(k, OsRng))
    }

    /// Reads parameters in halo2's raw format (what the public ceremonies' BN254 files for
    /// halo2 use), checking every point is on the curve.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Params(format!("cannot open {}: {e}", path.display())))?;
        let mut reader = std::io::BufReader::new(file);
        ParamsKZG::read_custom(&mut reader, SerdeFormat::RawBytes)
            .map(Self)
            .map_err(|e| Error::Params(format!("cannot read {}: {e}", path.display())))
    }

    /// Reads parameters (as [`Params::read`]) and checks they serve `shape`'s circuit and
    /// [`Shape::DEEP`]'s (a [`KeyRing`] proves and verifies both).
    pub fn read_for(path: &Path, shape: Shape) -> Result<Self, Error> {
        Self::read_for_larger(path, shape, &[])
    }

    /// [`Params::read_for`], also serving larger segments of `larger` steps
    /// ([`KeyRing::generate_with_larger`]).
    pub fn read_for_larger(path: &Path, shape: Shape, larger: &[usize]) -> Result<Self, Error> {
        shape.check()?;
        let params = Self::read(path)?;
        let needed = KeyRing::k_with_larger(shape, larger);
        if params.k() < needed {
            return Err(Error::Params(format!(
                "{} serves circuits of 2^{} rows; {shape:?} with larger segments of {larger:?} \
                 steps needs 2^{needed}",
                path.display(),
                params.k()
            )));
        }
        Ok(params)
    }

    /// Writes the parameters in the format [`Params::read`] takes (atomically: a temporary
    /// file renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Params(format!("cannot write {}: {e}", path.display()));
        let partial = path.with_extension("partial");
        {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
            self.0
                .write_custom(&mut file, SerdeFormat::RawBytes)
                .map_err(io)?;
            std::io::Write::flush(&mut file).map_err(io)?;
            file.get_ref().sync_all().map_err(io)?;
        }
        std::fs::rename(&partial, path).map_err(io)
    }

    /// log2 of the largest circuit these parameters serve.
    pub fn k(&self) -> u32 {
        self.0.k()
    }
}

fn halo2(error: plonk::Error) -> Error {
    Error::Halo2(error.to_string())
}

/// The parameters and keys of one shape.
#[derive(Debug)]
pub struct Keys {
    shape: Shape,
    params: ParamsKZG<Bn256>,
    pk: ProvingKey<G1Affine>,
    generated_in: Duration,
}

impl Keys {
    /// The rows a shape needs: its regions laid out as the prover will, plus halo2's blinding
    /// rows, as a power of two. (Of a shape that [`Shape::check`] accepts; others panic.)
    pub fn k_of(shape: Shape) -> u32 {
        let mut cs = plonk::ConstraintSystem::default();
        let config = <ChunkCircuit as plonk::Circuit<Fr>>::configure(&mut cs);
        let mut planner = backend::Planner::measuring();
        let circuit = ChunkCircuit::blank(shape);
        // Measuring never fails: it assigns nothing.
        let _ = circuit.layout(&config, &mut planner);
        let rows = planner.rows() + cs.minimum_rows();
        rows.next_power_of_two().trailing_zeros()
    }

    /// Derives the keys of `shape` from `params` (deterministic; takes seconds). Parameters
    /// for larger circuits are cut down to the shape's size.
    pub fn generate(shape: Shape, params: &Params) -> Result<Self, Error> {
        shape.check()?;
        let started = Instant::now();
        let k = Self::k_of(shape);
        if params.k() < k {
            return Err(Error::Params(format!(
                "they serve circuits of 2^{} rows; {shape:?} needs 2^{k}",
                params.k()
            )));
        }
        let mut params = params.0.clone();
        if params.k() > k {
            params.downsize(k);
        }
        let circuit = ChunkCircuit::blank(shape);
        let vk = plonk::keygen_vk(&params, &circuit).map_err(halo2)?;
        let pk = plonk::keygen_pk(&params, vk, &circuit).map_err(halo2)?;
        Ok(Self {
            shape,
            params,
            pk,
            generated_in: started.elapsed(),
        })
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
    pub fn vk(&self) -> &VerifyingKey<G1Affine> {
        self.pk.get_vk()
    }

    /// The instance column of `instances` for this shape (more entries than its steps: refused,
    /// never cut).
    fn public(&self, instances: &Instances) -> Result<Vec<Vec<Fr>>, Error> {
        instances
            .to_columns(self.shape.steps)
            .ok_or(Error::TooManySteps {
                given: instances.entries.len(),
                capacity: self.shape.steps,
            })
    }

    /// The circuit for `steps` (padded to the shape).
    pub fn circuit(&self, steps: Vec<CircuitStep>) -> Result<ChunkCircuit, Error> {
        ChunkCircuit::padded(self.shape, steps)
    }

    /// Proves one segment (SHPLONK openings, Blake2b transcript).
    pub fn prove(&self, steps: Vec<CircuitStep>, instances: &Instances) -> Result<Vec<u8>, Error> {
        let circuit = self.circuit(steps)?;
        let public = self.public(instances)?;
        let mut transcript = Blake2bWrite::<_, G1Affine, Challenge255<_>>::init(vec![]);
        plonk::create_proof::<KZGCommitmentScheme<Bn256>, ProverSHPLONK<'_, Bn256>, _, _, _, _>(
            &self.params,
            &self.pk,
            &[circuit],
            &[&columns(&public)],
            OsRng,
            &mut transcript,
        )
        .map_err(halo2)?;
        Ok(transcript.finalize())
    }

    /// Verifies one proof (one pairing check), on the calling thread ([`on_this_thread`]).
    pub fn verify(&self, instances: &Instances, proof: &[u8]) -> Result<(), Error> {
        on_this_thread(|| self.verify_here(instances, proof))
    }

    fn verify_here(&self, instances: &Instances, proof: &[u8]) -> Result<(), Error> {
        let public = self.public(instances)?;
        let mut transcript = Blake2bRead::<_, G1Affine, Challenge255<_>>::init(proof);
        plonk::verify_proof::<KZGCommitmentScheme<Bn256>, VerifierSHPLONK<'_, Bn256>, _, _, _>(
            self.params.verifier_params(),
            self.vk(),
            SingleStrategy::new(&self.params),
            &[&columns(&public)],
            &mut transcript,
        )
        .map_err(|_| Error::Invalid)
    }

    /// Verifies several proofs at once: their pairing checks are folded (random linear
    /// combination) into one. False when any of them is invalid.
    pub fn verify_batch<'a>(
        &self,
        proofs: impl IntoIterator<Item = (&'a Instances, &'a [u8])> + Send,
    ) -> bool {
        on_this_thread(|| self.verify_batch_here(proofs))
    }

    fn verify_batch_here<'a>(
        &self,
        proofs: impl IntoIterator<Item = (&'a Instances, &'a [u8])>,
    ) -> bool {
        let mut strategy = AccumulatorStrategy::new(&self.params);
        for (instances, proof) in proofs {
            let Ok(public) = self.public(instances) else {
                return false;
            };
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
                &[&columns(&public)],
                &mut transcript,
            ) {
                Ok(strategy) => strategy,
                Err(_) => return false,
            };
        }
        VerificationStrategy::<_, VerifierSHPLONK<'_, Bn256>>::finalize(strategy)
    }
}

/// The keys of a chain's segment shapes: its main shape, made at once; optionally larger shapes
/// of the same depth (more steps per proof, for chunks that fill them: a proof verifies in the
/// same time whatever it holds, ADR 0015 point 7); and [`Shape::DEEP`] for a step the main
/// shape cannot hold. Keys other than the main shape's are made from the same parameters the
/// first time one is needed (seconds, once; most chains never need the deep ones).
#[derive(Debug)]
pub struct KeyRing {
    main: Keys,
    params: Params,
    /// The larger shapes, by steps ascending, each with its keys once made.
    larger: Vec<(Shape, std::sync::OnceLock<Result<Keys, String>>)>,
    deep: std::sync::OnceLock<Result<Keys, String>>,
}

impl KeyRing {
    /// The rows both shapes need, as log2: what the parameters must serve.
    pub fn k_of(shape: Shape) -> u32 {
        Self::k_with_larger(shape, &[])
    }

    /// The rows the main shape, larger shapes of `larger` steps and the deep shape need, as
    /// log2 (of shapes [`Shape::check`] accepts).
    pub fn k_with_larger(shape: Shape, larger: &[usize]) -> u32 {
        larger
            .iter()
            .map(|steps| {
                Keys::k_of(Shape {
                    steps: *steps,
                    ..shape
                })
            })
            .fold(Keys::k_of(shape).max(Keys::k_of(Shape::DEEP)), u32::max)
    }

    /// Derives the main shape's keys from `params` (checked to serve the deep shape too; only
    /// what the deep shape needs of them is kept for later).
    pub fn generate(shape: Shape, params: &Params) -> Result<Self, Error> {
        Self::generate_with_larger(shape, &[], params)
    }

    /// [`KeyRing::generate`] with larger shapes of `larger` steps each (the main shape's depth;
    /// each more steps than the main shape), whose keys are made when first needed. The
    /// parameters must serve the largest.
    pub fn generate_with_larger(
        shape: Shape,
        larger: &[usize],
        params: &Params,
    ) -> Result<Self, Error> {
        shape.check()?;
        shape.check_larger(larger)?;
        let mut sizes: Vec<usize> = larger.to_vec();
        sizes.sort_unstable();
        sizes.dedup();
        let needed = Self::k_with_larger(shape, &sizes);
        if params.k() < needed {
            return Err(Error::Params(format!(
                "they serve circuits of 2^{} rows; {shape:?}, larger segments of {sizes:?} steps \
                 and the deep shape {:?} need 2^{needed}",
                params.k(),
                Shape::DEEP
            )));
        }
        let mut kept = params.0.clone();
        if kept.k() > needed {
            kept.downsize(needed);
        }
        Ok(Self {
            main: Keys::generate(shape, params)?,
            params: Params(kept),
            larger: sizes
                .into_iter()
                .map(|steps| (Shape { steps, ..shape }, std::sync::OnceLock::new()))
                .collect(),
            deep: std::sync::OnceLock::new(),
        })
    }

    /// The main shape.
    pub fn shape(&self) -> Shape {
        self.main.shape()
    }

    /// The main shape's keys.
    pub fn main(&self) -> &Keys {
        &self.main
    }

    /// The shapes a segment may have: the main one, the larger ones and [`Shape::DEEP`] (once
    /// when it is the main one).
    pub fn shapes(&self) -> Vec<Shape> {
        let mut shapes = vec![self.main.shape()];
        shapes.extend(self.larger.iter().map(|(shape, _)| *shape));
        if !shapes.contains(&Shape::DEEP) {
            shapes.push(Shape::DEEP);
        }
        shapes
    }

    /// The shapes of the main depth, by steps, largest first: what a run of steps the main
    /// shape holds is cut into.
    pub fn sizes(&self) -> Vec<Shape> {
        let mut sizes: Vec<Shape> = self.larger.iter().map(|(shape, _)| *shape).collect();
        sizes.reverse();
        sizes.push(self.main.shape());
        sizes
    }

    /// The keys of `shape`, one of [`KeyRing::shapes`] (made now if not yet).
    pub fn keys(&self, shape: Shape) -> Result<&Keys, Error> {
        if shape == self.main.shape() {
            return Ok(&self.main);
        }
        let lazy = if shape == Shape::DEEP {
            &self.deep
        } else {
            match self.larger.iter().find(|(larger, _)| *larger == shape) {
                Some((_, keys)) => keys,
                None => return Err(Error::Shape(shape)),
            }
        };
        lazy.get_or_init(|| Keys::generate(shape, &self.params).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Halo2(format!("keys of {shape:?}: {e}")))
    }

    /// The shape of the segment a step whose longer path has `levels` levels goes into: the
    /// main one when it holds the step, else the deep one (None: longer than any path).
    pub fn shape_for(&self, levels: usize) -> Option<Shape> {
        [self.main.shape(), Shape::DEEP]
            .into_iter()
            .find(|shape| shape.holds(levels))
    }
}

/// The field element standing for a chunk's transactions: keccak256 over their hashes in
/// order, with the top three bits cleared so it is below the BN254 scalar modulus.
pub fn tx_digest(tx_hashes: impl IntoIterator<Item = B256>) -> Fr {
    let mut buf = Vec::new();
    for hash in tx_hashes {
        buf.extend_from_slice(hash.as_slice());
    }
    let mut bytes = keccak256(&buf).0;
    // Little-endian repr: the last byte is the most significant.
    bytes.reverse();
    bytes[31] &= 0x1f;
    Option::from(Fr::from_repr(bytes)).unwrap_or(Fr::ZERO)
}

/// Field element helpers shared with services (public inputs travel as 32-byte encodings).
pub fn element_bytes(value: Fr) -> [u8; 32] {
    value.to_repr()
}

#[cfg(test)]
mod tests;
