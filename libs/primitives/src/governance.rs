//! Governance appointments of sequencers (issue 6, in progress).
//!
//! An appointment says: from block `first_height` on, whose parent is `parent_hash`, the chain's
//! blocks are signed by `sequencer` under epoch `epoch`. It is valid when at least `threshold` of
//! the governance keys (fixed by the chain's genesis) signed its [`Appointment::signing_hash`],
//! its epoch is above every epoch used so far, and it extends the chain where the caller says
//! the chain is. Every consumer checks appointments with [`Governance::verify`]; the refusals
//! carry a reason an operator can act on.
//!
//! Built so far: the appointment, its signing and its verification. Not built yet: governance
//! keys in genesis, the `verity governance` command, epochs in blocks, and the consumers that
//! switch keys at an appointment's first height.

use std::collections::BTreeSet;

use alloy_primitives::{Address, B256, Signature, keccak256};

use crate::SequencerKey;

/// Domain tag of appointment signatures: a governance signature can never be mistaken for a
/// signature over a block or mini-block hash.
const DOMAIN: &[u8] = b"verity/appointment/v1";

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
    /// The first block the sequencer signs.
    pub first_height: u64,
    /// The hash of block `first_height - 1`.
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
        "appointment starts at block {first_height} on parent {parent_hash}, but block {height} is {hash}"
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
    /// For another chain.
    #[error("appointment is for chain {claimed}, this is chain {chain_id}")]
    WrongChain {
        /// Claimed.
        claimed: u64,
        /// This chain.
        chain_id: u64,
    },
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
    pub fn sign(&self, key: &SequencerKey) -> Signature {
        key.sign(&self.signing_hash())
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

    /// Checks `signed` for chain `chain_id` whose current epoch is `current_epoch` and whose
    /// block `signed.appointment.first_height - 1` has hash `parent_hash` (as this node knows
    /// it). A signature by a non-governance key refuses the whole appointment (it is malformed,
    /// not merely short); a key that signed twice counts once.
    pub fn verify(
        &self,
        signed: &SignedAppointment,
        chain_id: u64,
        current_epoch: u64,
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
        if a.parent_hash != parent_hash {
            return Err(AppointmentError::WrongParent {
                first_height: a.first_height,
                parent_hash: a.parent_hash,
                height: a.first_height.saturating_sub(1),
                hash: parent_hash,
            });
        }
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

    fn setup() -> (Vec<SequencerKey>, Governance, SignedAppointment) {
        let keys: Vec<SequencerKey> = (0..5).map(|_| SequencerKey::random()).collect();
        let governance = Governance::new(keys.iter().map(SequencerKey::address).collect(), 3);
        let appointment = Appointment {
            chain_id: 31337,
            epoch: 2,
            sequencer: SequencerKey::random().address(),
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

    /// m of n signatures appoint; m-1, a reused epoch, a wrong parent, another chain or an
    /// outsider's signature are refused with their reason.
    #[test]
    fn an_appointment_needs_m_of_n_on_the_right_parent_and_a_new_epoch() {
        let (keys, governance, signed) = setup();
        let parent = B256::repeat_byte(7);
        assert_eq!(governance.verify(&signed, 31337, 1, parent), Ok(()));

        let mut short = signed.clone();
        short.signatures.pop();
        // A key signing twice still counts once.
        short.signatures.push(short.signatures[0]);
        assert_eq!(
            governance.verify(&short, 31337, 1, parent),
            Err(AppointmentError::TooFewSignatures {
                epoch: 2,
                valid: 2,
                threshold: 3
            })
        );
        assert_eq!(
            governance.verify(&signed, 31337, 2, parent),
            Err(AppointmentError::EpochReused {
                epoch: 2,
                current: 2
            })
        );
        let wrong_parent = governance.verify(&signed, 31337, 1, B256::repeat_byte(8));
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
                .is_some_and(|e| e.to_string().contains("block 99 is 0x0808"))
        );
        assert_eq!(
            governance.verify(&signed, 1, 1, parent),
            Err(AppointmentError::WrongChain {
                claimed: 31337,
                chain_id: 1
            })
        );
        let outsider = SequencerKey::random();
        let mut foreign = signed.clone();
        foreign.signatures.push(signed.appointment.sign(&outsider));
        assert_eq!(
            governance.verify(&foreign, 31337, 1, parent),
            Err(AppointmentError::NotAGovernanceKey {
                signer: outsider.address()
            })
        );
        // Signatures bind every field: moving the first height invalidates them.
        let mut moved = signed.clone();
        moved.appointment.first_height = 101;
        assert!(matches!(
            governance.verify(&moved, 31337, 1, parent),
            Err(AppointmentError::NotAGovernanceKey { .. })
        ));
        // And a signature over a block hash is not an appointment signature.
        let mut reused = signed;
        reused.signatures = keys[..3]
            .iter()
            .map(|k| k.sign(&B256::repeat_byte(7)))
            .collect();
        assert!(governance.verify(&reused, 31337, 1, parent).is_err());
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
