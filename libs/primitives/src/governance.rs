//! Sequencer epochs, governance appointments and handovers.
//!
//! An appointment says: from block `first_height` on, whose parent is `parent_hash`, the chain's
//! blocks are signed by `sequencer` under epoch `epoch`. It is valid when at least `threshold` of
//! the governance keys (fixed by the chain's genesis) signed its [`Appointment::signing_hash`],
//! its epoch is above every epoch used so far, and it extends the chain where it is. An
//! appointment with `first_height` 0 is *standing*: it pre-authorises a hot standby to open that
//! epoch wherever it takes over.
//!
//! An appointment takes effect when the appointed sequencer puts a [`Handover`] into the chain
//! stream: the stream's compare-and-set publish orders it against everything the deposed
//! sequencer sends, and from that position on every consumer accepts mini-blocks and blocks only
//! from the new key under the new epoch ([`Epoch::check_handover`]). Epoch 0 is the sequencer
//! that genesis names. The refusals carry a reason an operator can act on.

use std::collections::BTreeSet;

use alloy_primitives::{Address, B256, Signature, keccak256};

use crate::SigningKey;

/// Domain tag of appointment signatures: a governance signature can never be mistaken for a
/// signature over a block or mini-block hash.
const DOMAIN: &[u8] = b"verity/appointment/v1";
/// Domain tag of handover signatures (by the appointed sequencer).
const HANDOVER_DOMAIN: &[u8] = b"verity/handover/v1";

/// Who may appoint sequencers: `threshold` signatures among `keys`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Governance {
    /// The governance keys' addresses.
    pub keys: Vec<Address>,
    /// How many of them must sign (m of n).
    pub threshold: usize,
}

/// A sequencer appointment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appointment {
    /// The chain it is for.
    pub chain_id: u64,
    /// The epoch it opens (strictly above every earlier one).
    pub epoch: u64,
    /// The appointed sequencer's key.
    pub sequencer: Address,
    /// The first block the sequencer signs; 0 for a standing appointment (a hot standby's:
    /// wherever it takes over).
    pub first_height: u64,
    /// The hash of block `first_height - 1` (zero for a standing appointment).
    pub parent_hash: B256,
}

/// An appointment with the governance signatures collected for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedAppointment {
    /// What is signed.
    pub appointment: Appointment,
    /// Signatures over [`Appointment::signing_hash`], in any order.
    pub signatures: Vec<Signature>,
}

/// Why governance or an appointment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppointmentError {
    /// The governance set itself is unusable.
    #[error(
        "governance needs 1 <= threshold <= keys, without repeated keys; got {threshold} of {keys}"
    )]
    BadGovernance {
        /// Threshold.
        threshold: usize,
        /// Number of distinct keys.
        keys: usize,
    },
    /// Fewer valid governance signatures than the threshold.
    #[error(
        "appointment of epoch {epoch} has {valid} valid governance signature(s), {threshold} needed"
    )]
    TooFewSignatures {
        /// The epoch.
        epoch: u64,
        /// Distinct governance keys that signed.
        valid: usize,
        /// Required.
        threshold: usize,
    },
    /// A signature by a key that is not a governance key.
    #[error("appointment signed by {signer}, which is not a governance key")]
    NotAGovernanceKey {
        /// Who signed.
        signer: Address,
    },
    /// A signature that does not recover to any key.
    #[error("appointment carries a malformed signature: {0}")]
    Malformed(String),
    /// The epoch was used already.
    #[error("appointment epoch {epoch} is not above the current epoch {current}")]
    EpochReused {
        /// Claimed.
        epoch: u64,
        /// In force.
        current: u64,
    },
    /// The appointment does not extend the chain where it is.
    #[error(
        "appointment starts at block {first_height} on parent {parent_hash}, but the chain is building block {} on block {height} = {hash}", height + 1
    )]
    WrongParent {
        /// The appointment's first height.
        first_height: u64,
        /// The appointment's parent hash.
        parent_hash: B256,
        /// The chain's block `first_height - 1`, as the caller knows it.
        height: u64,
        /// Its hash.
        hash: B256,
    },
    /// The chain's genesis names no governance, so no appointment can be valid.
    #[error(
        "this chain's genesis sets no governance (config.verity.governance): nothing can appoint a sequencer"
    )]
    NoGovernance,
    /// A mini-block or block of another epoch than the one in force.
    #[error("signed under epoch {epoch}, but epoch {current} is in force here")]
    WrongEpoch {
        /// Claimed.
        epoch: u64,
        /// In force.
        current: u64,
    },
    /// For another chain.
    #[error("appointment is for chain {claimed}, this is chain {chain_id}")]
    WrongChain {
        /// Claimed.
        claimed: u64,
        /// This chain.
        chain_id: u64,
    },
}

/// A sequencer taking over: the appointment it acts on, where in the chain it takes over, and
/// its own signature (so nobody but the appointed key can spend its appointment). It travels as
/// an event of the chain stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The governance-signed appointment.
    pub appointment: SignedAppointment,
    /// The block being built when it takes over (the new sequencer seals it).
    pub block_number: u64,
    /// Hash of block `block_number - 1`.
    pub parent_hash: B256,
    /// `compute_hash()` of the above.
    pub hash: B256,
    /// The appointed sequencer's signature over `hash`.
    pub signature: Signature,
}

impl Handover {
    /// A handover at `block_number` (parent `parent_hash`), signed by `key`.
    pub fn new(
        appointment: SignedAppointment,
        block_number: u64,
        parent_hash: B256,
        key: &SigningKey,
    ) -> Self {
        let mut handover = Self {
            appointment,
            block_number,
            parent_hash,
            hash: B256::ZERO,
            signature: crate::UNSIGNED,
        };
        handover.hash = handover.compute_hash();
        handover.signature = key.sign(&handover.hash);
        handover
    }

    /// keccak256 of the domain tag, the appointment's signing hash, the block number and the
    /// parent hash.
    pub fn compute_hash(&self) -> B256 {
        let mut buf = Vec::with_capacity(HANDOVER_DOMAIN.len() + 32 + 8 + 32);
        buf.extend_from_slice(HANDOVER_DOMAIN);
        buf.extend_from_slice(self.appointment.appointment.signing_hash().as_slice());
        buf.extend_from_slice(&self.block_number.to_be_bytes());
        buf.extend_from_slice(self.parent_hash.as_slice());
        keccak256(buf)
    }

    /// The epoch it opens.
    pub fn epoch(&self) -> u64 {
        self.appointment.appointment.epoch
    }

    /// The key it hands the chain to.
    pub fn sequencer(&self) -> Address {
        self.appointment.appointment.sequencer
    }
}

/// Storage meta key under which nodes keep the epoch in force ([`Epoch::to_bytes`]).
pub const EPOCH_META_KEY: &str = "epoch";

/// The chain's sequencing rules, from genesis: who sequences epoch 0 and who may appoint.
#[derive(Debug, Clone)]
pub struct Sequencing {
    /// The chain id appointments must name.
    pub chain_id: u64,
    /// The governance set, if genesis has one.
    pub governance: Option<Governance>,
    /// Epoch 0.
    pub genesis: Epoch,
}

impl Sequencing {
    /// The epoch in force given what is stored under [`EPOCH_META_KEY`] (nothing: epoch 0).
    pub fn current(&self, stored: Option<&[u8]>) -> Epoch {
        stored.and_then(Epoch::from_bytes).unwrap_or(self.genesis)
    }

    /// [`Epoch::check_handover`] under these rules.
    pub fn check_handover(
        &self,
        epoch: &Epoch,
        handover: &Handover,
        open_block: u64,
        parent_hash: B256,
    ) -> Result<Epoch, AppointmentError> {
        epoch.check_handover(
            handover,
            self.governance.as_ref(),
            self.chain_id,
            open_block,
            parent_hash,
        )
    }
}

/// Domain tag of sequencer-lease signatures (by the lease holder's sequencer key).
const LEASE_DOMAIN: &[u8] = b"verity/lease/v1";

/// What a sequencer signs when it claims the lease: its key and the epoch it produces under,
/// for one chain, and `claim`, the rest of the entry as its writer encodes it (the gRPC URL
/// ingress and gateways forward to, which process, which renewal).
pub fn lease_signing_hash(chain_id: u64, epoch: u64, sequencer: Address, claim: &[u8]) -> B256 {
    let mut buf = Vec::with_capacity(LEASE_DOMAIN.len() + 8 * 3 + 20 + claim.len());
    buf.extend_from_slice(LEASE_DOMAIN);
    buf.extend_from_slice(&chain_id.to_be_bytes());
    buf.extend_from_slice(&epoch.to_be_bytes());
    buf.extend_from_slice(sequencer.as_slice());
    buf.extend_from_slice(&(claim.len() as u64).to_be_bytes());
    buf.extend_from_slice(claim);
    keccak256(buf)
}

/// Why a lease claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseClaimError {
    /// The signature does not recover to the claimed sequencer.
    #[error("the lease is not signed by the sequencer it names ({0})")]
    BadSignature(String),
    /// Epoch 0 claimed by a key other than genesis's.
    #[error("epoch 0 is sequenced by {genesis}, not by {claimed}")]
    NotGenesisSequencer {
        /// The genesis's sequencer.
        genesis: Address,
        /// The lease's.
        claimed: Address,
    },
    /// A later epoch without an appointment naming this key and epoch.
    #[error("no governance appointment of {sequencer} for epoch {epoch} comes with the lease")]
    NoAppointment {
        /// The lease's key.
        sequencer: Address,
        /// The lease's epoch.
        epoch: u64,
    },
    /// The appointment that comes with it is not governance's.
    #[error(transparent)]
    Appointment(#[from] AppointmentError),
}

impl Sequencing {
    /// Checks a lease claim (`claim`: what else the entry says) by `sequencer` for `epoch`:
    /// signed by `sequencer`'s key,
    /// which is genesis's for epoch 0 and, for a later epoch, the one a governance-signed
    /// appointment of that epoch on this chain (carried with the claim) names. It does not say
    /// the epoch is the newest: a follower keeps the highest it has seen for that.
    pub fn check_lease(
        &self,
        sequencer: Address,
        epoch: u64,
        claim: &[u8],
        appointment: Option<&SignedAppointment>,
        signature: &Signature,
    ) -> Result<(), LeaseClaimError> {
        if epoch == self.genesis.number {
            if sequencer != self.genesis.sequencer {
                return Err(LeaseClaimError::NotGenesisSequencer {
                    genesis: self.genesis.sequencer,
                    claimed: sequencer,
                });
            }
        } else {
            let signed = appointment
                .filter(|s| s.appointment.epoch == epoch && s.appointment.sequencer == sequencer)
                .ok_or(LeaseClaimError::NoAppointment { sequencer, epoch })?;
            if signed.appointment.chain_id != self.chain_id {
                return Err(AppointmentError::WrongChain {
                    claimed: signed.appointment.chain_id,
                    chain_id: self.chain_id,
                }
                .into());
            }
            self.governance
                .as_ref()
                .ok_or(AppointmentError::NoGovernance)?
                .check_signatures(signed)?;
        }
        let hash = lease_signing_hash(self.chain_id, epoch, sequencer, claim);
        crate::signing::verify(&hash, signature, sequencer)
            .map_err(|e| LeaseClaimError::BadSignature(e.to_string()))
    }
}

/// The epoch in force and the key that signs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Epoch number (0: the sequencer genesis names).
    pub number: u64,
    /// The sequencer key of the epoch.
    pub sequencer: Address,
}

impl Epoch {
    /// Encoding for storage: 8 bytes of epoch, 20 of address.
    pub fn to_bytes(self) -> [u8; 28] {
        let mut out = [0u8; 28];
        out[..8].copy_from_slice(&self.number.to_be_bytes());
        out[8..].copy_from_slice(self.sequencer.as_slice());
        out
    }

    /// Decodes [`Epoch::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let number = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let sequencer = Address::from_slice(bytes.get(8..28)?);
        Some(Self { number, sequencer })
    }

    /// Checks that a mini-block or block of `epoch`, signed by `signer`'s key, belongs to this
    /// epoch.
    pub fn check_producer(&self, epoch: u64) -> Result<(), AppointmentError> {
        if epoch != self.number {
            return Err(AppointmentError::WrongEpoch {
                epoch,
                current: self.number,
            });
        }
        Ok(())
    }

    /// Checks a handover found in the chain where block `open_block` is being built on parent
    /// `parent_hash`, and returns the epoch it opens.
    pub fn check_handover(
        &self,
        handover: &Handover,
        governance: Option<&Governance>,
        chain_id: u64,
        open_block: u64,
        parent_hash: B256,
    ) -> Result<Self, AppointmentError> {
        let governance = governance.ok_or(AppointmentError::NoGovernance)?;
        governance.verify(
            &handover.appointment,
            chain_id,
            self.number,
            open_block,
            parent_hash,
        )?;
        if handover.block_number != open_block || handover.parent_hash != parent_hash {
            return Err(AppointmentError::WrongParent {
                first_height: handover.block_number,
                parent_hash: handover.parent_hash,
                height: open_block.saturating_sub(1),
                hash: parent_hash,
            });
        }
        if handover.compute_hash() != handover.hash {
            return Err(AppointmentError::Malformed(
                "handover hash does not match its contents".into(),
            ));
        }
        crate::signing::verify(&handover.hash, &handover.signature, handover.sequencer())
            .map_err(|e| AppointmentError::Malformed(format!("handover signature: {e}")))?;
        Ok(Self {
            number: handover.epoch(),
            sequencer: handover.sequencer(),
        })
    }
}

impl Appointment {
    /// The hash governance keys sign: keccak256 of the domain tag and every field, fixed width.
    pub fn signing_hash(&self) -> B256 {
        let mut buf = Vec::with_capacity(DOMAIN.len() + 8 * 3 + 20 + 32);
        buf.extend_from_slice(DOMAIN);
        buf.extend_from_slice(&self.chain_id.to_be_bytes());
        buf.extend_from_slice(&self.epoch.to_be_bytes());
        buf.extend_from_slice(self.sequencer.as_slice());
        buf.extend_from_slice(&self.first_height.to_be_bytes());
        buf.extend_from_slice(self.parent_hash.as_slice());
        keccak256(buf)
    }

    /// One governance key's signature over it.
    pub fn sign(&self, key: &SigningKey) -> Signature {
        key.sign(&self.signing_hash())
    }

    /// A standing appointment pre-authorises a hot standby to open its epoch at whatever height
    /// it takes over.
    pub fn is_standing(&self) -> bool {
        self.first_height == 0
    }
}

impl Governance {
    /// `threshold` of `keys`; refused unless 1 <= threshold <= keys and no key repeats.
    pub fn new(keys: Vec<Address>, threshold: usize) -> Result<Self, AppointmentError> {
        let distinct: BTreeSet<&Address> = keys.iter().collect();
        if distinct.len() != keys.len() || threshold == 0 || threshold > keys.len() {
            return Err(AppointmentError::BadGovernance {
                threshold,
                keys: distinct.len(),
            });
        }
        Ok(Self { keys, threshold })
    }

    /// Checks `signed` for chain `chain_id` whose current epoch is `current_epoch`, where block
    /// `open_block` is the one being built and its parent has hash `parent_hash` (as this node
    /// knows them). A standing appointment fits anywhere; any other must start at `open_block`
    /// on `parent_hash`. A signature by a non-governance key refuses the whole appointment (it
    /// is malformed, not merely short); a key that signed twice counts once.
    pub fn verify(
        &self,
        signed: &SignedAppointment,
        chain_id: u64,
        current_epoch: u64,
        open_block: u64,
        parent_hash: B256,
    ) -> Result<(), AppointmentError> {
        let a = &signed.appointment;
        if a.chain_id != chain_id {
            return Err(AppointmentError::WrongChain {
                claimed: a.chain_id,
                chain_id,
            });
        }
        if a.epoch <= current_epoch {
            return Err(AppointmentError::EpochReused {
                epoch: a.epoch,
                current: current_epoch,
            });
        }
        if !a.is_standing() && (a.first_height != open_block || a.parent_hash != parent_hash) {
            return Err(AppointmentError::WrongParent {
                first_height: a.first_height,
                parent_hash: a.parent_hash,
                height: open_block.saturating_sub(1),
                hash: parent_hash,
            });
        }
        self.check_signatures(signed)
    }

    /// Checks only that `threshold` distinct governance keys signed `signed` (and no other key
    /// did): what a node that does not follow the chain (ingress, a gateway) can check of an
    /// appointment.
    pub fn check_signatures(&self, signed: &SignedAppointment) -> Result<(), AppointmentError> {
        let a = &signed.appointment;
        let hash = a.signing_hash();
        let mut signers = BTreeSet::new();
        for signature in &signed.signatures {
            let signer = signature
                .recover_address_from_prehash(&hash)
                .map_err(|e| AppointmentError::Malformed(e.to_string()))?;
            if !self.keys.contains(&signer) {
                return Err(AppointmentError::NotAGovernanceKey { signer });
            }
            signers.insert(signer);
        }
        if signers.len() < self.threshold {
            return Err(AppointmentError::TooFewSignatures {
                epoch: a.epoch,
                valid: signers.len(),
                threshold: self.threshold,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Vec<SigningKey>, Governance, SignedAppointment) {
        let keys: Vec<SigningKey> = (0..5).map(|_| SigningKey::random()).collect();
        let governance = Governance::new(keys.iter().map(SigningKey::address).collect(), 3);
        let appointment = Appointment {
            chain_id: 31337,
            epoch: 2,
            sequencer: SigningKey::random().address(),
            first_height: 100,
            parent_hash: B256::repeat_byte(7),
        };
        let signatures = keys[..3].iter().map(|k| appointment.sign(k)).collect();
        match governance {
            Ok(governance) => (
                keys,
                governance,
                SignedAppointment {
                    appointment,
                    signatures,
                },
            ),
            Err(e) => panic!("{e}"),
        }
    }

    /// A lease claim verifies only when signed by its epoch's key: genesis's for epoch 0, the
    /// key a governance appointment of that epoch names otherwise; the URL is signed too.
    #[test]
    fn a_lease_claim_needs_its_epochs_key_and_signs_its_url() {
        let (keys, governance, _) = setup();
        let genesis = SigningKey::random();
        let rules = Sequencing {
            chain_id: 31337,
            governance: Some(governance),
            genesis: Epoch {
                number: 0,
                sequencer: genesis.address(),
            },
        };
        let url = "http://10.0.0.1:7100";
        let claim = |key: &SigningKey, epoch, url: &str| {
            key.sign(&lease_signing_hash(
                31337,
                epoch,
                key.address(),
                url.as_bytes(),
            ))
        };
        let signature = claim(&genesis, 0, url);
        assert_eq!(
            rules.check_lease(genesis.address(), 0, url.as_bytes(), None, &signature),
            Ok(())
        );
        // The URL is part of what is signed.
        assert!(matches!(
            rules.check_lease(
                genesis.address(),
                0,
                "http://evil:1".as_bytes(),
                None,
                &signature
            ),
            Err(LeaseClaimError::BadSignature(_))
        ));
        // Another key cannot claim epoch 0, even signing for itself.
        let other = SigningKey::random();
        assert!(matches!(
            rules.check_lease(
                other.address(),
                0,
                url.as_bytes(),
                None,
                &claim(&other, 0, url)
            ),
            Err(LeaseClaimError::NotGenesisSequencer { .. })
        ));
        // Epoch 1 needs the appointment naming the key and epoch, signed by governance.
        let appointee = SigningKey::random();
        let appointment = Appointment {
            chain_id: 31337,
            epoch: 1,
            sequencer: appointee.address(),
            first_height: 0,
            parent_hash: B256::ZERO,
        };
        let signed = SignedAppointment {
            signatures: keys[..3].iter().map(|k| appointment.sign(k)).collect(),
            appointment,
        };
        let signature = claim(&appointee, 1, url);
        assert_eq!(
            rules.check_lease(
                appointee.address(),
                1,
                url.as_bytes(),
                Some(&signed),
                &signature
            ),
            Ok(())
        );
        assert!(matches!(
            rules.check_lease(appointee.address(), 1, url.as_bytes(), None, &signature),
            Err(LeaseClaimError::NoAppointment { epoch: 1, .. })
        ));
        assert!(matches!(
            rules.check_lease(
                appointee.address(),
                2,
                url.as_bytes(),
                Some(&signed),
                &claim(&appointee, 2, url)
            ),
            Err(LeaseClaimError::NoAppointment { epoch: 2, .. })
        ));
        let mut short = signed.clone();
        short.signatures.pop();
        assert!(matches!(
            rules.check_lease(
                appointee.address(),
                1,
                url.as_bytes(),
                Some(&short),
                &signature
            ),
            Err(LeaseClaimError::Appointment(
                AppointmentError::TooFewSignatures { .. }
            ))
        ));
        // The appointee's appointment does not let another key sign in its name.
        assert!(matches!(
            rules.check_lease(
                appointee.address(),
                1,
                url.as_bytes(),
                Some(&signed),
                &claim(&other, 1, url)
            ),
            Err(LeaseClaimError::BadSignature(_))
        ));
    }

    /// m of n signatures appoint; m-1, a reused epoch, a wrong parent, another chain or an
    /// outsider's signature are refused with their reason.
    #[test]
    fn an_appointment_needs_m_of_n_on_the_right_parent_and_a_new_epoch() {
        let (keys, governance, signed) = setup();
        let parent = B256::repeat_byte(7);
        assert_eq!(governance.verify(&signed, 31337, 1, 100, parent), Ok(()));

        let mut short = signed.clone();
        short.signatures.pop();
        // A key signing twice still counts once.
        short.signatures.push(short.signatures[0]);
        assert_eq!(
            governance.verify(&short, 31337, 1, 100, parent),
            Err(AppointmentError::TooFewSignatures {
                epoch: 2,
                valid: 2,
                threshold: 3
            })
        );
        assert_eq!(
            governance.verify(&signed, 31337, 2, 100, parent),
            Err(AppointmentError::EpochReused {
                epoch: 2,
                current: 2
            })
        );
        let wrong_parent = governance.verify(&signed, 31337, 1, 100, B256::repeat_byte(8));
        assert!(
            matches!(
                wrong_parent,
                Err(AppointmentError::WrongParent { height: 99, .. })
            ),
            "{wrong_parent:?}"
        );
        assert!(
            wrong_parent
                .err()
                .is_some_and(|e| e.to_string().contains("block 99 = 0x0808"))
        );
        assert_eq!(
            governance.verify(&signed, 1, 1, 100, parent),
            Err(AppointmentError::WrongChain {
                claimed: 31337,
                chain_id: 1
            })
        );
        let outsider = SigningKey::random();
        let mut foreign = signed.clone();
        foreign.signatures.push(signed.appointment.sign(&outsider));
        assert_eq!(
            governance.verify(&foreign, 31337, 1, 100, parent),
            Err(AppointmentError::NotAGovernanceKey {
                signer: outsider.address()
            })
        );
        // Signatures bind every field: moving the first height invalidates them.
        let mut moved = signed.clone();
        moved.appointment.first_height = 101;
        assert!(matches!(
            governance.verify(&moved, 31337, 1, 101, parent),
            Err(AppointmentError::NotAGovernanceKey { .. })
        ));
        // And a signature over a block hash is not an appointment signature.
        let mut reused = signed;
        reused.signatures = keys[..3]
            .iter()
            .map(|k| k.sign(&B256::repeat_byte(7)))
            .collect();
        assert!(governance.verify(&reused, 31337, 1, 100, parent).is_err());
    }

    /// A handover opens the appointed epoch only where its appointment fits, only when signed by
    /// the appointed key, and never twice.
    #[test]
    fn a_handover_opens_its_epoch_only_where_it_fits() {
        let (keys, governance, mut standing) = setup();
        let sequencer = SigningKey::random();
        standing.appointment.sequencer = sequencer.address();
        standing.appointment.first_height = 0;
        standing.appointment.parent_hash = B256::ZERO;
        standing.signatures = keys[..3]
            .iter()
            .map(|k| standing.appointment.sign(k))
            .collect();
        let old = Epoch {
            number: 1,
            sequencer: SigningKey::random().address(),
        };
        let parent = B256::repeat_byte(3);
        // A standing appointment fits wherever the chain is.
        let handover = Handover::new(standing.clone(), 57, parent, &sequencer);
        let opened = old.check_handover(&handover, Some(&governance), 31337, 57, parent);
        assert_eq!(
            opened,
            Ok(Epoch {
                number: 2,
                sequencer: sequencer.address()
            })
        );
        // Not at another place than the one it names.
        assert!(matches!(
            old.check_handover(&handover, Some(&governance), 31337, 58, parent),
            Err(AppointmentError::WrongParent { .. })
        ));
        // Not twice: epoch 2 is in force after it.
        let again = Epoch {
            number: 2,
            sequencer: sequencer.address(),
        };
        assert!(matches!(
            again.check_handover(&handover, Some(&governance), 31337, 57, parent),
            Err(AppointmentError::EpochReused { .. })
        ));
        // Not by anyone but the appointed key.
        let stolen = Handover::new(standing, 57, parent, &SigningKey::random());
        assert!(matches!(
            old.check_handover(&stolen, Some(&governance), 31337, 57, parent),
            Err(AppointmentError::Malformed(_))
        ));
        // Not on a chain without governance.
        assert_eq!(
            old.check_handover(&handover, None, 31337, 57, parent),
            Err(AppointmentError::NoGovernance)
        );
        // And blocks of the old epoch are refused once the new one is in force.
        assert!(matches!(
            again.check_producer(1),
            Err(AppointmentError::WrongEpoch {
                epoch: 1,
                current: 2
            })
        ));
    }

    #[test]
    fn governance_sets_must_be_usable() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        assert!(Governance::new(vec![a, b], 2).is_ok());
        assert!(Governance::new(vec![a, b], 3).is_err());
        assert!(Governance::new(vec![a, b], 0).is_err());
        assert!(Governance::new(vec![a, a], 2).is_err());
    }

    /// Appointments travel as JSON files between governance key holders.
    #[test]
    fn appointments_round_trip_through_json() {
        let (_, _, signed) = setup();
        let text = serde_json::to_string(&signed).unwrap_or_default();
        let back: Result<SignedAppointment, _> = serde_json::from_str(&text);
        assert_eq!(back.ok(), Some(signed));
    }
}
