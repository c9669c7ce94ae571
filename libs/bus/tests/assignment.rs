//! How chunks are assigned to registered provers (`verity_bus::proving::Assignment`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use verity_bus::proving::Assignment;

fn assignment(provers: usize, quorum: usize) -> Assignment {
    Assignment {
        provers: (0..provers).map(|i| [i as u8 + 1; 20]).collect(),
        quorum,
        takeover: Duration::from_secs(10),
    }
}

#[test]
fn every_chunk_ranks_each_registered_prover_once() {
    let a = assignment(5, 2);
    for chunk in 0..50 {
        let mut ranks: Vec<usize> = a
            .provers
            .iter()
            .map(|p| a.rank(chunk, p).unwrap())
            .collect();
        ranks.sort_unstable();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4]);
    }
    assert_eq!(a.rank(0, &[99; 20]), None, "not registered");
}

#[test]
fn the_first_ranks_go_round_so_no_prover_takes_every_chunk() {
    let a = assignment(4, 1);
    let mut first = [0usize; 4];
    for chunk in 0..400 {
        let top = a.provers.iter().position(|p| a.rank(chunk, p) == Some(0));
        first[top.unwrap()] += 1;
    }
    // Each of four provers is first for about a quarter of the chunks.
    assert!(first.iter().all(|n| (60..=140).contains(n)), "{first:?}");
}

#[test]
fn later_ranks_wait_one_takeover_period_more_each() {
    let a = assignment(4, 2);
    let after: Vec<u64> = (0..4).map(|r| a.start_after(r).as_secs()).collect();
    assert_eq!(after, vec![0, 0, 10, 20]);
}
