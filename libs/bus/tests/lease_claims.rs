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

/// Against a real server: a bare deletion of the entry (which any writer of the lease subject
/// can make) neither frees the lease nor keeps it alive; the holder's signed release newer than
/// its last renewal frees it at once; an older release written again does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holders_signed_release_frees_the_lease_at_once() {
    use std::time::Duration;
    use verity_bus::lease::{self, LEASE_KEY};
    let dir = tempfile::tempdir().unwrap();
    let server = verity_bus::server::NatsServer::start(dir.path())
        .await
        .unwrap();
    let (_client, js) = verity_bus::connect(server.url(), "lease-test")
        .await
        .unwrap();
    let store = lease::lease_store(&js).await.unwrap();
    let key = SigningKey::random();
    let rules = Sequencing {
        chain_id: 7,
        governance: None,
        genesis: Epoch {
            number: 0,
            sequencer: key.address(),
        },
    };
    let ttl = Duration::from_secs(2);
    // A standby waiting for the lease, taking nothing over at once.
    let wait = |store: &async_nats::jetstream::kv::Store, rules: &Sequencing| {
        let (store, rules) = (store.clone(), rules.clone());
        tokio::spawn(async move { lease::wait_vacant(&store, &rules, ttl, |_| false).await })
    };
    let first = Holder::signed(&key, 7, 0, "http://127.0.0.1:1".into(), None);
    let revision = lease::write(&store, &first, None).await.unwrap();
    let old_release = first.released(&key, 7);
    assert!(old_release.is_release());
    old_release.verify(&rules).unwrap();
    let renewed = first.renewed(&key, 7).renewed(&key, 7);
    lease::write(&store, &renewed, Some(revision))
        .await
        .unwrap();

    // Deleted under a waiting standby: it still waits out the time to live.
    let started = tokio::time::Instant::now();
    let waiting = wait(&store, &rules);
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.delete(LEASE_KEY).await.unwrap();
    let vacancy = waiting.await.unwrap().unwrap().expect("an entry");
    assert!(
        started.elapsed() >= ttl,
        "a deletion freed the lease after {:?}",
        started.elapsed()
    );
    assert!(
        vacancy.holder.is_none() && vacancy.refused.is_some(),
        "{vacancy:?}"
    );

    // The holder alive again; an older release written again is not a release now.
    let entry = lease::read(&store, &rules).await.unwrap().unwrap();
    let alive = renewed.renewed(&key, 7);
    let revision = lease::write(&store, &alive, Some(entry.revision))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let waiting = wait(&store, &rules);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revision = lease::write(&store, &old_release, Some(revision))
        .await
        .unwrap();
    let vacancy = waiting.await.unwrap().unwrap().expect("an entry");
    assert!(
        started.elapsed() >= ttl,
        "a replayed release freed the lease"
    );
    assert_eq!(vacancy.revision, revision);

    // The holder's own release, after its newest renewal: free at once.
    let revision = lease::write(&store, &alive.renewed(&key, 7), Some(revision))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let waiting = wait(&store, &rules);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let release = alive.renewed(&key, 7).released(&key, 7);
    lease::release(&store, &release, revision).await.unwrap();
    let vacancy = waiting.await.unwrap().unwrap().expect("an entry");
    assert!(
        started.elapsed() < ttl,
        "a signed release waited {:?}",
        started.elapsed()
    );
    assert_eq!(vacancy.holder, Some(release));
}
