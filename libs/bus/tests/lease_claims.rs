//! Lease entries without NATS: a renewal is signed anew and stays valid, the claim covers the
//! instance and renewal count, and "newer" means another holder or process, or a higher renewal.

#![allow(clippy::unwrap_used)]

use verity_bus::lease::Holder;
use verity_primitives::{
    SigningKey,
    governance::{Epoch, Sequencing},
};

#[test]
fn renewals_verify_and_only_a_higher_one_counts_as_newer() {
    let key = SigningKey::random();
    let rules = Sequencing {
        chain_id: 7,
        governance: None,
        genesis: Epoch {
            number: 0,
            sequencer: key.address(),
        },
    };
    let first = Holder::signed(&key, 7, 0, "http://127.0.0.1:1".into(), None);
    first.verify(&rules).unwrap();
    let second = first.renewed(&key, 7);
    second.verify(&rules).unwrap();
    assert_eq!(second.renewal, 1);
    assert!(second.is_newer_than(&first));
    // The same entry written again, or an older one, is no sign of life.
    assert!(!second.is_newer_than(&second));
    assert!(!first.is_newer_than(&second));
    // Another process with the same key is.
    let restarted = Holder::signed(&key, 7, 0, "http://127.0.0.1:1".into(), None);
    assert_ne!(restarted.instance, first.instance);
    assert!(restarted.is_newer_than(&second));
    // The renewal count and the instance are signed: raising either by hand breaks it.
    let mut forged = second.clone();
    forged.renewal += 5;
    assert!(forged.verify(&rules).is_err());
    let mut forged = second.clone();
    forged.instance ^= 1;
    assert!(forged.verify(&rules).is_err());
    // Signed for another chain: refused.
    assert!(
        Holder::signed(&key, 8, 0, "x".into(), None)
            .verify(&rules)
            .is_err()
    );
}
