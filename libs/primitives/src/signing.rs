//! Signing keys (secp256k1, Ethereum-style signatures over 32-byte hashes) and their checks. One
//! type serves every role that signs: the sequencer's epoch key (every mini-block and block
//! hash), a prover's attestation key, a verifier's finality key, a governance key. Every
//! consumer checks a signature against the key it expects for that role before accepting
//! anything.

use alloy_primitives::{Address, B256, Signature};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

/// Why a signature did not check out.
#[derive(Debug, thiserror::Error)]
pub enum SignatureCheckError {
    /// The signature bytes are not a valid secp256k1 signature.
    #[error("malformed signature: {0}")]
    Malformed(#[from] alloy_primitives::SignatureError),
    /// The signature is valid but made by another key.
    #[error("signed by {signer}, expected {expected}")]
    WrongSigner {
        /// Who signed.
        signer: Address,
        /// Who should have.
        expected: Address,
    },
}

/// The placeholder signature of something nobody signs (the genesis block, derived from the chain
/// spec by every node) or not signed yet. It never verifies.
pub const UNSIGNED: Signature = Signature::new(
    alloy_primitives::U256::ZERO,
    alloy_primitives::U256::ZERO,
    false,
);

/// A signing key (of a sequencer, a prover, a verifier or a governance member).
#[derive(Debug, Clone)]
pub struct SigningKey {
    signer: PrivateKeySigner,
}

impl SigningKey {
    /// Wraps a local private key.
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self { signer }
    }

    /// Parses a hex private key (with or without `0x`).
    pub fn from_hex(hex: &str) -> Result<Self, alloy_signer_local::LocalSignerError> {
        Ok(Self::new(hex.trim().parse()?))
    }

    /// A fresh random key.
    pub fn random() -> Self {
        Self::new(PrivateKeySigner::random())
    }

    /// The key's address, which consumers are configured to expect.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The private key as hex (for writing a key file).
    pub fn to_hex(&self) -> String {
        alloy_primitives::hex::encode_prefixed(self.signer.to_bytes())
    }

    /// Signs a 32-byte hash.
    pub fn sign(&self, hash: &B256) -> Signature {
        // Signing a prehash with a local key cannot fail: the error type exists for remote signers.
        match self.signer.sign_hash_sync(hash) {
            Ok(signature) => signature,
            Err(error) => unreachable!("local secp256k1 signing failed: {error}"),
        }
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or creating the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold a hex private key.
    #[error("{path} does not hold a hex private key: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl SigningKey {
    /// Reads the hex key in `path`, or creates the file (mode 0600) with a fresh key when it does
    /// not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &std::path::Path) -> Result<(Self, bool), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_hex(&text)
                    .map(|key| (key, false))
                    .map_err(|e| KeyFileError::Invalid {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                let key = Self::random();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                options
                    .open(path)
                    .and_then(|mut f| f.write_all(key.to_hex().as_bytes()))
                    .map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// Checks that `signature` over `hash` was made by `expected`.
pub fn verify(
    hash: &B256,
    signature: &Signature,
    expected: Address,
) -> Result<(), SignatureCheckError> {
    let signer = signature.recover_address_from_prehash(hash)?;
    if signer == expected {
        Ok(())
    } else {
        Err(SignatureCheckError::WrongSigner { signer, expected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_key_only() {
        let key = SigningKey::random();
        let other = SigningKey::random();
        let hash = B256::repeat_byte(7);
        let signature = key.sign(&hash);
        assert!(verify(&hash, &signature, key.address()).is_ok());
        assert!(matches!(
            verify(&hash, &signature, other.address()),
            Err(SignatureCheckError::WrongSigner { .. })
        ));
        assert!(verify(&B256::repeat_byte(8), &signature, key.address()).is_err());
        let restored = SigningKey::from_hex(&key.to_hex()).expect("hex round trip");
        assert_eq!(restored.address(), key.address());
    }
}
