#![allow(clippy::unwrap_used)]

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, address, hex, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use verity_circuits::{KeyRing, Params, Shape};
use verity_primitives::{Account, AccountDiff, InMemoryState, SigningKey, Transaction, TxEnvelope};

use super::*;

const CHAIN_ID: u64 = 31337;
const GAS_LIMIT: u64 = 30_000_000;
const ETH: u128 = 1_000_000_000_000_000_000;
const COUNTER: Address = address!("0x00000000000000000000000000000000000c0de0");
/// Reads slot 5, then increments slot 0.
const COUNTER_CODE: &[u8] = &hex!("6005545060005460010160005500");

fn sign(signer: &PrivateKeySigner, nonce: u64, to: Address, value: U256) -> Transaction {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 100_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        to: TxKind::Call(to),
        value,
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Transaction::new_unchecked(envelope, signer.address())
}

/// A state with a funded sender and a counter contract, and its full diff (for the tree).
fn state(signer: &PrivateKeySigner) -> (InMemoryState, StateDiff) {
    let mut state = InMemoryState::default();
    let mut all = StateDiff::default();
    let sender = Account {
        balance: U256::from(10 * ETH),
        ..Account::default()
    };
    state.insert_account(signer.address(), sender);
    all.accounts.insert(
        signer.address(),
        AccountDiff {
            balance: Some(sender.balance),
            nonce: Some(0),
            ..Default::default()
        },
    );
    let code = Bytes::from_static(COUNTER_CODE);
    let counter = AccountDiff {
        nonce: Some(1),
        balance: Some(U256::ZERO),
        code: Some(code.clone()),
        storage: [(U256::ZERO, U256::from(7)), (U256::from(5), U256::from(9))].into(),
        destroyed: false,
    };
    state.apply(&StateDiff {
        accounts: [(COUNTER, counter.clone())].into(),
    });
    all.accounts.insert(COUNTER, counter);
    assert_eq!(state.code.get(&keccak256(&code)), Some(&code));
    (state, all)
}

fn mini_block(state: &InMemoryState, txs: Vec<Transaction>, key: &SigningKey) -> MiniBlock {
    let mut mini = MiniBlock {
        number: 3,
        block_number: 1,
        index: 0,
        epoch: 0,
        timestamp_ms: 1_700_000_000_000,
        parent_hash: B256::repeat_byte(1),
        base_fee: 1_000_000_000,
        block_timestamp: 1_700_000_000,
        beneficiary: address!("0x00000000000000000000000000000000000fee00"),
        transactions: vec![],
        receipts: vec![],
        diff: StateDiff::default(),
        hash: B256::ZERO,
        signature: verity_primitives::UNSIGNED,
    };
    let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
    let outcome = verity_execution::execute(state, &env, txs, 0).unwrap();
    assert!(outcome.rejected.is_empty());
    mini.transactions = outcome.executed;
    mini.receipts = outcome.receipts;
    mini.diff = outcome.diff;
    mini.seal(key);
    mini
}

/// A job, and the witness's tree before it.
fn setup(tamper: bool) -> (ChunkJob, StateTree) {
    let signer = PrivateKeySigner::random();
    let key = SigningKey::random();
    let (state, all) = state(&signer);
    let txs = vec![
        sign(&signer, 0, Address::repeat_byte(0x42), U256::from(ETH)),
        sign(&signer, 1, COUNTER, U256::ZERO),
    ];
    let mut mini = mini_block(&state, txs, &key);
    if tamper {
        // Credit an account that paid nothing.
        mini.diff.accounts.insert(
            Address::repeat_byte(0x66),
            AccountDiff {
                balance: Some(U256::from(1000 * ETH)),
                ..Default::default()
            },
        );
        mini.seal(&key);
    }
    let before = genesis_tree(&all);
    let mut tree = before.clone();
    let job = build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini]).unwrap();
    assert_eq!(job.post_root, tree.root());
    (job, before)
}

#[test]
fn an_honest_chunk_re_executes_statelessly_to_its_claimed_writes() {
    let (job, mut whole) = setup(false);
    assert_eq!(job.pre_root, whole.root());
    assert_ne!(job.pre_root, job.post_root);
    // Sender, recipient, fee recipient, counter account; slots 0 (written) and 5 (read only).
    assert!(job.witness.storage.contains_key(&(COUNTER, U256::from(5))));
    assert!(job.witness.codes.contains_key(&keccak256(COUNTER_CODE)));
    let steps = job.steps().unwrap();
    assert!(
        steps.iter().any(|s| s.before == s.after && s.was_present),
        "a pure read"
    );
    // The steps the prover derives from the pre-state proofs are those the witness's whole
    // tree takes, one key at a time.
    let writes = job.writes();
    for (step, (key, _)) in steps.iter().zip(&job.pre_proofs) {
        assert_eq!(*step, whole.step(*key, writes.get(key).copied()));
    }
    assert_eq!(whole.root(), job.post_root);
    assert_eq!(
        check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap(),
        Verdict::Valid
    );
}

/// A chunk of three mini-blocks of one block, each reading what the one before wrote: built
/// over the pre-chunk state (the witness holds pre-chunk values only), re-executed mini-block by
/// mini-block, proven once, and checked by a verifier against its own copies of all three.
#[test]
fn a_chunk_of_several_mini_blocks_is_built_checked_and_proven_as_one() {
    let signer = PrivateKeySigner::random();
    let key = SigningKey::random();
    let (mut state, all) = state(&signer);
    let pre_state = state.clone();
    let batches = [
        vec![sign(&signer, 0, COUNTER, U256::ZERO)],
        vec![
            sign(&signer, 1, COUNTER, U256::ZERO),
            sign(&signer, 2, Address::repeat_byte(0x42), U256::from(ETH)),
        ],
        vec![],
    ];
    let mut minis = vec![];
    for (i, txs) in batches.into_iter().enumerate() {
        let mut mini = mini_block(&state, txs, &key);
        mini.number = 3 + i as u64;
        mini.index = i as u32;
        mini.seal(&key);
        state.apply(&mini.diff);
        minis.push(mini);
    }
    let before = genesis_tree(&all);
    let mut tree = before.clone();
    let job = build_job(&pre_state, &mut tree, CHAIN_ID, GAS_LIMIT, minis.clone()).unwrap();
    assert_eq!(job.chunk, 3);
    assert_eq!(job.transactions(), 3);
    // Pre-chunk values, not what the first mini-block left for the second.
    assert_eq!(job.witness.accounts[&signer.address()].unwrap().nonce, 0);
    assert_eq!(job.witness.storage[&(COUNTER, U256::ZERO)], U256::from(7));
    let mut after = all.clone();
    after.merge(&merged_diff(&minis));
    assert_eq!(job.post_root, genesis_tree(&after).root());
    assert_eq!(job.post_root, tree.root());
    assert_eq!(
        check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap(),
        Verdict::Valid
    );
    let decoded = ChunkJob::try_from(&verity_proto::v1::ChunkJob::from(&job)).unwrap();
    assert_eq!(decoded, job);

    // Proven once; a verifier checks it against its own three mini-blocks.
    let shape = Shape {
        steps: 4,
        depth: 12,
    };
    let keys = ring(shape);
    let prover = SigningKey::random();
    let steps = job.steps().unwrap();
    let mut proof = prove_job(&keys, &job, &steps, |_, _| {}).unwrap();
    proof.prover = prover.address();
    proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &proof));
    assert_eq!(proof.mini_block_hashes, job.mini_block_hashes());
    let provers = [prover.address()];
    let statement = check_claim(CHAIN_ID, shape, &provers, job.pre_root, &minis, &proof).unwrap();
    verify_proofs(&keys, &[(&statement, &proof)])
        .remove(0)
        .unwrap();
    // A verifier that holds only the first two cannot take it for a chunk of two.
    assert!(matches!(
        check_claim(CHAIN_ID, shape, &provers, job.pre_root, &minis[..2], &proof),
        Err(Rejection::WrongChunk { .. })
    ));
    // Nor can a proof name fewer mini-blocks than it proves the writes of. (Dropping only the
    // empty third one would still be a true statement.)
    let mut fewer = proof.clone();
    fewer.mini_block_hashes.truncate(1);
    fewer.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &fewer));
    assert!(matches!(
        check_claim(CHAIN_ID, shape, &provers, job.pre_root, &minis, &fewer),
        Err(Rejection::Statement(_))
    ));

    // Tampering with the middle mini-block is fraud, and the evidence says which.
    let mut tampered = minis.clone();
    tampered[1].diff.accounts.insert(
        Address::repeat_byte(0x66),
        AccountDiff {
            balance: Some(U256::from(1000 * ETH)),
            ..Default::default()
        },
    );
    tampered[1].seal(&key);
    let job = build_job(
        &pre_state,
        &mut before.clone(),
        CHAIN_ID,
        GAS_LIMIT,
        tampered,
    )
    .unwrap();
    match check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap() {
        Verdict::Fraud { reason, .. } => assert!(reason.starts_with("mini-block 4:"), "{reason}"),
        Verdict::Valid => panic!("fraud not detected"),
    }

    // Not chunks: a gap, or mini-blocks of two blocks.
    let gap = vec![minis[0].clone(), minis[2].clone()];
    assert!(matches!(
        build_job(&pre_state, &mut before.clone(), CHAIN_ID, GAS_LIMIT, gap),
        Err(JobError::Chunk(_))
    ));
    let mut two_blocks = minis.clone();
    two_blocks[2].block_number += 1;
    assert!(chunk_of(&two_blocks, 3).is_err());
    assert!(chunk_of(&[], 3).is_err());
}

#[test]
fn a_tampered_diff_is_fraud() {
    let (job, _) = setup(true);
    match check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap() {
        Verdict::Fraud { reason, reexecuted } => {
            assert!(
                reason.contains(&Address::repeat_byte(0x66).to_string()),
                "{reason}"
            );
            assert!(
                !reexecuted
                    .accounts
                    .contains_key(&Address::repeat_byte(0x66))
            );
        }
        Verdict::Valid => panic!("fraud not detected"),
    }
}

#[test]
fn a_transaction_its_claimed_sender_did_not_sign_is_fraud() {
    // The sequencer executes a transfer signed by a stranger as if the funded account had sent
    // it: everything else about the mini-block (diff, receipts, hash, signature) is consistent.
    let victim = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    let key = SigningKey::random();
    let (state, all) = state(&victim);
    let signed = sign(&stranger, 0, Address::repeat_byte(0x42), U256::from(ETH));
    let forged = Transaction::new_unchecked(signed.into_inner(), victim.address());
    let mini = mini_block(&state, vec![forged], &key);
    assert!(mini.diff.accounts[&victim.address()].balance < Some(U256::from(9 * ETH)));
    let mut tree = genesis_tree(&all);
    let job = build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini]).unwrap();
    match check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap() {
        Verdict::Fraud { reason, .. } => {
            assert!(
                reason.contains(&format!(
                    "is signed by {}, not by its claimed sender {}",
                    stranger.address(),
                    victim.address()
                )),
                "{reason}"
            );
        }
        Verdict::Valid => panic!("a forged sender passed"),
    }
}

#[test]
fn an_incomplete_or_inconsistent_witness_is_a_bad_job_not_fraud() {
    let (job, before) = setup(false);
    let mut incomplete = job.clone();
    incomplete.witness.storage.remove(&(COUNTER, U256::from(5)));
    assert!(matches!(
        check_job(&incomplete, CHAIN_ID, GAS_LIMIT),
        Err(JobError::Incomplete(Missing::Storage(COUNTER, _)))
    ));
    let mut lying = job.clone();
    lying
        .witness
        .storage
        .insert((COUNTER, U256::from(5)), U256::from(10));
    assert!(matches!(
        check_job(&lying, CHAIN_ID, GAS_LIMIT),
        Err(JobError::WitnessMismatch(_))
    ));
    let mut wrong_root = job.clone();
    wrong_root.post_root = B256::repeat_byte(3);
    assert!(matches!(
        check_job(&wrong_root, CHAIN_ID, GAS_LIMIT),
        Err(JobError::BrokenSteps(_))
    ));
    // A written key without its pre-state proof.
    let written = *job.writes().keys().next().unwrap();
    let mut unproven = job.clone();
    unproven.pre_proofs.retain(|(key, _)| *key != written);
    assert!(matches!(
        check_job(&unproven, CHAIN_ID, GAS_LIMIT),
        Err(JobError::BrokenSteps(reason)) if reason.contains("no pre-state proof")
    ));
    // A proof with a sibling that is not the tree's.
    let mut forged = job.clone();
    forged.pre_proofs[0].1.siblings[0] = B256::repeat_byte(5);
    assert!(matches!(
        check_job(&forged, CHAIN_ID, GAS_LIMIT),
        Err(JobError::BrokenSteps(_))
    ));
    // Proofs out of key order.
    let mut shuffled = job.clone();
    shuffled.pre_proofs.swap(0, 1);
    assert!(matches!(
        check_job(&shuffled, CHAIN_ID, GAS_LIMIT),
        Err(JobError::BrokenSteps(reason)) if reason.contains("increasing")
    ));
    // A key neither read nor written, with a genuine proof.
    let mut extra = job;
    let stranger = account_key(Address::repeat_byte(0x77));
    let proof = before.prove(&stranger);
    let at = extra.pre_proofs.partition_point(|(key, _)| *key < stranger);
    extra.pre_proofs.insert(at, (stranger, proof));
    assert!(matches!(
        check_job(&extra, CHAIN_ID, GAS_LIMIT),
        Err(JobError::BrokenSteps(reason)) if reason.contains("neither read nor written")
    ));
}

/// The whole path: a job proven in segments and attested passes the checks a verifier makes
/// with its own copy of the mini-block; every kind of forgery is refused with its reason.
#[test]
fn proofs_verify_for_their_chunk_and_forgeries_are_refused() {
    let (job, _) = setup(false);
    let shape = Shape {
        steps: 4,
        depth: 12,
    };
    let keys = ring(shape);
    let prover = SigningKey::random();
    let mut calls = vec![];
    let steps = job.steps().unwrap();
    let mut proof =
        prove_job(&keys, &job, &steps, |done, total| calls.push((done, total))).unwrap();
    assert!(proof.segments.len() >= 2, "several segments");
    assert_eq!(
        calls.last(),
        Some(&(proof.segments.len(), proof.segments.len()))
    );
    assert_eq!(proof.post_root, job.post_root);
    attest_and_round_trip(&mut proof, &prover);

    let provers = [prover.address()];
    let check = |proof: &wire::ChunkProof, mini_block: &MiniBlock| {
        verdict(
            &keys,
            &provers,
            job.pre_root,
            std::slice::from_ref(mini_block),
            proof,
        )
    };
    check(&proof, &job.mini_blocks[0]).unwrap();

    // One flipped byte in a proof.
    let mut flipped = proof.clone();
    flipped.segments[1].proof[100] ^= 1;
    assert!(matches!(
        check(&flipped, &job.mini_blocks[0]),
        Err(Rejection::Proof { segment: 1, .. })
    ));
    // The right proof presented for another mini-block.
    let mut other = job.mini_blocks[0].clone();
    other.hash = B256::repeat_byte(9);
    assert!(matches!(
        check(&proof, &other),
        Err(Rejection::WrongChunk { .. })
    ));
    // A mini-block whose writes differ from what was proven.
    let mut tampered = job.mini_blocks[0].clone();
    if let Some(change) = tampered.diff.accounts.values_mut().next() {
        change.balance = Some(U256::from(1));
    }
    assert!(matches!(
        check(&proof, &tampered),
        Err(Rejection::Statement(StatementError::Writes(_)))
    ));
    // An attestation by a key nobody registered, even if well signed.
    let stranger = SigningKey::random();
    let mut unregistered = proof.clone();
    unregistered.prover = stranger.address();
    unregistered.signature = stranger.sign(&wire::attestation_hash(CHAIN_ID, &unregistered));
    assert!(matches!(
        check(&unregistered, &job.mini_blocks[0]),
        Err(Rejection::UnregisteredProver(a)) if a == stranger.address()
    ));
    // A registered prover's name with someone else's signature.
    let mut forged = proof.clone();
    forged.signature = unregistered.signature;
    assert!(matches!(
        check(&forged, &job.mini_blocks[0]),
        Err(Rejection::Signature(_))
    ));
    // Claiming another post-root than the segments reach.
    let mut wrong_post = proof.clone();
    wrong_post.post_root = job.pre_root;
    wrong_post.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &wrong_post));
    assert!(matches!(
        check(&wrong_post, &job.mini_blocks[0]),
        Err(Rejection::PostRoot { .. })
    ));
    // A proof that does not start at the verifier's root.
    assert!(matches!(
        check_claim(
            CHAIN_ID,
            shape,
            &provers,
            B256::repeat_byte(1),
            &job.mini_blocks,
            &proof
        ),
        Err(Rejection::PreRoot { .. })
    ));
    // Reordering segment proofs breaks the chain of public inputs.
    let mut swapped = proof.clone();
    let (a, b) = (
        swapped.segments[0].proof.clone(),
        swapped.segments[1].proof.clone(),
    );
    swapped.segments[0].proof = b;
    swapped.segments[1].proof = a;
    assert!(matches!(
        check(&swapped, &job.mini_blocks[0]),
        Err(Rejection::Proof { segment: 0, .. })
    ));
    // A segment boundary claimed elsewhere (signed by the registered prover): the verifier
    // chains each segment from the one before, from its own root, so the segment that ends
    // at the moved root and the one that starts there cannot both verify.
    let mut moved = proof.clone();
    moved.segments[0].post_root = job.pre_root;
    moved.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &moved));
    assert!(matches!(
        check(&moved, &job.mini_blocks[0]),
        Err(Rejection::Proof { segment: 0, .. })
    ));
}

/// Signs `proof` as `prover`, and checks it comes back the same through the wire.
fn attest_and_round_trip(proof: &mut wire::ChunkProof, prover: &SigningKey) {
    proof.prover = prover.address();
    proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, proof));
    let result = wire::ProverResult::Proof(Box::new(proof.clone()));
    let decoded =
        wire::ProverResult::try_from(&verity_proto::v1::ProverResult::from(&result)).unwrap();
    assert_eq!(decoded, result);
}

/// What a verifier holding `keys` says of `proof`: its claim checked against `mini_blocks` from
/// `pre_root` ([`check_claim`] with the keys' main shape), then its halo2 proofs.
fn verdict(
    keys: &KeyRing,
    provers: &[Address],
    pre_root: B256,
    mini_blocks: &[MiniBlock],
    proof: &wire::ChunkProof,
) -> Result<(), Rejection> {
    let statement = check_claim(
        CHAIN_ID,
        keys.shape(),
        provers,
        pre_root,
        mini_blocks,
        proof,
    )?;
    verify_proofs(keys, &[(&statement, proof)]).remove(0)
}

/// The keys of `shape` (and the deep shape) from parameters made here.
fn ring(shape: Shape) -> KeyRing {
    KeyRing::generate(shape, &Params::setup_insecure(KeyRing::k_of(shape))).unwrap()
}

/// An address whose account key shares its first `bits` bits with `near`'s: what anyone can
/// grind (about 2^bits hashes) to put a key deeper in the tree than a circuit shape holds.
fn ground_address(near: Address, bits: u32) -> Address {
    let target = verity_commitment::account_key(near);
    let prefix = |key: B256| u64::from_be_bytes(key[..8].try_into().unwrap()) >> (64 - bits);
    (0u64..)
        .map(|i| Address::left_padding_from(&i.to_be_bytes()))
        .find(|candidate| {
            *candidate != near
                && prefix(verity_commitment::account_key(*candidate)) == prefix(target)
        })
        .unwrap()
}

/// A transfer to an address ground to sit deeper than the main shape's paths: its step is
/// proven alone in the deep shape, the others in the main one, and a verifier takes the proof;
/// a segment may claim only the two shapes and no more steps than its circuit holds.
#[test]
fn a_key_ground_deeper_than_the_main_shape_is_proven_in_the_deep_shape() {
    let signer = PrivateKeySigner::random();
    let key = SigningKey::random();
    let (state, all) = state(&signer);
    let shape = Shape {
        steps: 4,
        depth: 12,
    };
    let deep = ground_address(signer.address(), 14);
    let mini = mini_block(&state, vec![sign(&signer, 0, deep, U256::from(ETH))], &key);
    let mut tree = genesis_tree(&all);
    let job = build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini]).unwrap();
    let steps = job.steps().unwrap();
    assert!(
        steps.iter().any(|s| s.new.siblings.len() > shape.depth),
        "the ground key is not deeper than the main shape"
    );

    let keys = ring(shape);
    let prover = SigningKey::random();
    let mut proof = prove_job(&keys, &job, &steps, |_, _| {}).unwrap();
    let shapes: Vec<Shape> = proof.segments.iter().map(|s| s.shape).collect();
    assert!(shapes.contains(&Shape::DEEP), "{shapes:?}");
    assert!(
        proof
            .segments
            .iter()
            .all(|s| s.shape == shape || s.steps == 1),
        "{:?}",
        proof
            .segments
            .iter()
            .map(|s| (s.shape, s.steps))
            .collect::<Vec<_>>()
    );
    assert_eq!(proof.post_root, job.post_root);
    attest_and_round_trip(&mut proof, &prover);

    let provers = [prover.address()];
    let claim = |proof: &wire::ChunkProof| {
        check_claim(
            CHAIN_ID,
            shape,
            &provers,
            job.pre_root,
            &job.mini_blocks,
            proof,
        )
    };
    let check =
        |proof: &wire::ChunkProof| verdict(&keys, &provers, job.pre_root, &job.mini_blocks, proof);
    check(&proof).unwrap();
    // A shape no verifier holds keys for.
    let unheld = Shape {
        steps: 1,
        depth: 64,
    };

    let deep_at = shapes.iter().position(|s| *s == Shape::DEEP).unwrap();
    let resigned = |mut proof: wire::ChunkProof| {
        proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &proof));
        proof
    };
    // The deep proof presented as one of the main shape: it verifies under neither's key.
    let mut relabelled = proof.clone();
    relabelled.segments[deep_at].shape = shape;
    assert!(matches!(
        check(&resigned(relabelled)),
        Err(Rejection::Proof { segment, .. }) if segment == deep_at
    ));
    // A shape the verifier has no keys for.
    let mut unknown = proof.clone();
    unknown.segments[deep_at].shape = unheld;
    assert!(matches!(
        check(&resigned(unknown)),
        Err(Rejection::Shape { .. })
    ));
    // More steps in a segment than its circuit holds.
    let mut crowded = proof.clone();
    crowded.segments[deep_at].steps = 2;
    assert!(matches!(
        check(&resigned(crowded)),
        Err(Rejection::Statement(StatementError::Segments { .. }))
    ));
    // The segmentation is signed: changing it without signing again is refused.
    let mut unsigned = proof.clone();
    unsigned.segments[deep_at].shape = shape;
    assert!(matches!(check(&unsigned), Err(Rejection::Signature(_))));
    // Verification refuses, never skips, what it cannot check: a segment of a shape it holds
    // no keys for, or segments that are not the statement's.
    let statement = claim(&proof).unwrap();
    let mut stranger = proof.clone();
    stranger.segments[deep_at].shape = unheld;
    assert!(matches!(
        verify_proofs(&keys, &[(&statement, &stranger)]).remove(0),
        Err(Rejection::Shape { .. })
    ));
    let mut fewer = proof.clone();
    fewer.segments.pop();
    assert!(matches!(
        verify_proofs(&keys, &[(&statement, &fewer)]).remove(0),
        Err(Rejection::Statement(StatementError::Segments { .. }))
    ));
}

/// A verifier that stored no blocks (the test chunks read no `BLOCKHASH`).
fn no_blocks(_: u64) -> Option<B256> {
    None
}

/// Fraud evidence for `job` signed by a fresh prover key, with `reason`.
fn evidence_for(job: ChunkJob, reason: &str) -> wire::FraudEvidence {
    let prover = SigningKey::random();
    let mut evidence = wire::FraudEvidence {
        job,
        reexecuted: StateDiff::default(),
        reason: reason.into(),
        prover: prover.address(),
        signature: verity_primitives::signing::UNSIGNED,
    };
    evidence.signature = prover.sign(&wire::fraud_hash(CHAIN_ID, &evidence));
    evidence
}

#[test]
fn real_fraud_is_confirmed_on_the_verifiers_own_mini_blocks() {
    let (job, _) = setup(true);
    let own = job.mini_blocks.clone();
    let evidence = evidence_for(job.clone(), "tampered diff");
    match judge_fraud(
        &evidence,
        &own,
        job.pre_root,
        &no_blocks,
        CHAIN_ID,
        GAS_LIMIT,
    ) {
        Judgement::Confirmed { reason } => {
            assert!(
                reason.contains(&Address::repeat_byte(0x66).to_string()),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn evidence_built_on_an_edited_receipt_is_a_false_accusation() {
    // An honest chunk; the accuser edits a receipt in its copy of the job (the mini-block keeps
    // its hash field) so that its re-execution "differs".
    let (job, _) = setup(false);
    let own = job.mini_blocks.clone();
    let mut edited = job.clone();
    edited.mini_blocks[0].receipts[0].gas_used += 1;
    assert!(
        matches!(
            check_job(&edited, CHAIN_ID, GAS_LIMIT),
            Ok(Verdict::Fraud { .. })
        ),
        "the edited job alone looks fraudulent"
    );
    let evidence = evidence_for(edited, "the receipts differ from re-execution");
    match judge_fraud(
        &evidence,
        &own,
        job.pre_root,
        &no_blocks,
        CHAIN_ID,
        GAS_LIMIT,
    ) {
        Judgement::FalseAccusation { reason } => {
            assert!(
                reason.contains("reproduces their writes and receipts"),
                "{reason}"
            );
        }
        other => panic!("a forged accusation was confirmed: {other:?}"),
    }
    // Evidence for other mini-blocks, or from another root, is unfounded (a dishonest witness
    // could have handed it to an honest prover): dropped, nobody accused.
    let mut elsewhere = job.clone();
    elsewhere.mini_blocks[0].hash = B256::repeat_byte(9);
    assert!(matches!(
        judge_fraud(
            &evidence_for(elsewhere, "x"),
            &own,
            job.pre_root,
            &no_blocks,
            CHAIN_ID,
            GAS_LIMIT
        ),
        Judgement::Unfounded { .. }
    ));
    assert!(matches!(
        judge_fraud(
            &evidence_for(job.clone(), "x"),
            &own,
            B256::repeat_byte(3),
            &no_blocks,
            CHAIN_ID,
            GAS_LIMIT
        ),
        Judgement::Unfounded { .. }
    ));
}

#[test]
fn evidence_with_a_block_hash_the_verifier_did_not_store_is_unfounded() {
    // Real fraud, but the accuser's witness also claims a BLOCKHASH value of its own.
    let (mut job, _) = setup(true);
    let own = job.mini_blocks.clone();
    job.witness.block_hashes.insert(0, B256::repeat_byte(0xbb));
    let ours = |number: u64| (number == 0).then(|| B256::repeat_byte(0xaa));
    match judge_fraud(
        &evidence_for(job.clone(), "x"),
        &own,
        job.pre_root,
        &ours,
        CHAIN_ID,
        GAS_LIMIT,
    ) {
        Judgement::Unfounded { reason } => {
            assert!(reason.contains("BLOCKHASH(0)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // With the verifier's own hash, the fraud stands.
    job.witness.block_hashes.insert(0, B256::repeat_byte(0xaa));
    assert!(matches!(
        judge_fraud(
            &evidence_for(job.clone(), "x"),
            &own,
            job.pre_root,
            &ours,
            CHAIN_ID,
            GAS_LIMIT
        ),
        Judgement::Confirmed { .. }
    ));
}

#[test]
fn jobs_and_fraud_evidence_survive_the_wire() {
    let (job, _) = setup(true);
    let decoded = ChunkJob::try_from(&verity_proto::v1::ChunkJob::from(&job)).unwrap();
    assert_eq!(decoded, job);
    let Verdict::Fraud { reason, reexecuted } = check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap()
    else {
        panic!("fraud expected");
    };
    let prover = SigningKey::random();
    let mut evidence = wire::FraudEvidence {
        job,
        reexecuted,
        reason,
        prover: prover.address(),
        signature: verity_primitives::signing::UNSIGNED,
    };
    evidence.signature = prover.sign(&wire::fraud_hash(CHAIN_ID, &evidence));
    let result = wire::ProverResult::Fraud(Box::new(evidence));
    let decoded =
        wire::ProverResult::try_from(&verity_proto::v1::ProverResult::from(&result)).unwrap();
    assert_eq!(decoded, result);

    // A job whose number is not its mini-block's is refused where it arrives.
    let mut wrong = verity_proto::v1::ChunkJob::from(&decoded_job(&decoded));
    wrong.chunk += 1;
    assert!(ChunkJob::try_from(&wrong).is_err());
}

fn decoded_job(result: &wire::ProverResult) -> ChunkJob {
    match result {
        wire::ProverResult::Fraud(evidence) => evidence.job.clone(),
        wire::ProverResult::Proof(_) => panic!("fraud expected"),
    }
}

#[test]
fn pre_state_proofs_share_their_upper_siblings_on_the_wire() {
    let (mut job, _) = setup(false);
    let mut tree = StateTree::default();
    tree.apply((0..2_000u64).map(|n| (keccak256(n.to_be_bytes()), Some(B256::with_last_byte(1)))));
    let mut keys: Vec<B256> = (0..300u64)
        .map(|n| keccak256((n * 7).to_be_bytes()))
        .collect();
    keys.sort();
    job.pre_proofs = keys.iter().copied().zip(tree.prove_many(&keys)).collect();
    let wire = verity_proto::v1::ChunkJob::from(&job);
    assert_eq!(ChunkJob::try_from(&wire).unwrap(), job);
    let shared: u32 = wire.pre_proofs.iter().map(|p| p.shared_siblings).sum();
    let total: usize = job.pre_proofs.iter().map(|(_, p)| p.siblings.len()).sum();
    assert!(
        shared as usize * 4 > total,
        "{shared} of {total} siblings shared"
    );
    // A proof claiming more shared siblings than the one before it has is refused.
    let mut bad = wire;
    bad.pre_proofs[1].shared_siblings = 300;
    assert!(ChunkJob::try_from(&bad).is_err());
}

#[test]
fn a_fraud_signature_covers_every_field_of_the_evidence() {
    let (job, _) = setup(true);
    let evidence = evidence_for(job, "tampered diff");
    let signed = wire::fraud_hash(CHAIN_ID, &evidence);
    type Edit = fn(&mut wire::FraudEvidence);
    let edits: [(&str, Edit); 7] = [
        ("reason", |e| e.reason.push('!')),
        ("post-root", |e| e.job.post_root = B256::repeat_byte(3)),
        ("witness", |e| e.job.witness = Default::default()),
        ("tree proofs", |e| e.job.pre_proofs.clear()),
        ("stream positions", |e| e.job.mini_block_seqs.push(99)),
        ("epoch positions", |e| e.job.epoch_seqs.push(99)),
        ("a receipt", |e| {
            if let Some(receipt) = e.job.mini_blocks[0].receipts.first_mut() {
                receipt.gas_used += 1;
            }
        }),
    ];
    for (what, edit) in edits {
        let mut edited = evidence.clone();
        edit(&mut edited);
        assert_ne!(
            wire::fraud_hash(CHAIN_ID, &edited),
            signed,
            "{what} is not signed"
        );
    }
}

/// With a larger shape beside the main one, a prover cuts a chunk's steps into the largest
/// segments they fill (the rest in the main shape), and a verifier holding the same shapes
/// takes the proof; one holding only the main shape refuses it, and a larger segment cannot
/// pass for a main one.
#[test]
fn steps_fill_the_largest_segments_first_and_a_verifier_takes_only_shapes_it_holds() {
    let signer = PrivateKeySigner::random();
    let key = SigningKey::random();
    let (state, all) = state(&signer);
    let shape = Shape {
        steps: 2,
        depth: 32,
    };
    let larger = Shape { steps: 4, ..shape };
    let txs = (0..3u64)
        .map(|n| {
            sign(
                &signer,
                n,
                Address::repeat_byte(0x40 + n as u8),
                U256::from(ETH),
            )
        })
        .collect();
    let mini = mini_block(&state, txs, &key);
    let mut tree = genesis_tree(&all);
    let job = build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini]).unwrap();
    let steps = job.steps().unwrap();
    assert_eq!(steps.len(), 5, "sender, three recipients, fee recipient");

    let params = Params::setup_insecure(KeyRing::k_with_larger(shape, &[larger.steps]));
    let ladder = KeyRing::generate_with_larger(shape, &[larger.steps], &params).unwrap();
    let plain = KeyRing::generate(shape, &params).unwrap();
    let cut = |keys: &KeyRing| -> Vec<(usize, usize)> {
        crate::prove::segments(keys, &steps)
            .unwrap()
            .iter()
            .map(|(shape, steps)| (shape.steps, steps.len()))
            .collect()
    };
    assert_eq!(cut(&ladder), [(4, 4), (2, 1)]);
    assert_eq!(cut(&plain), [(2, 2), (2, 2), (2, 1)]);

    let prover = SigningKey::random();
    let mut proof = prove_job(&ladder, &job, &steps, |_, _| {}).unwrap();
    assert_eq!(proof.segments[0].shape, larger);
    assert_eq!(proof.post_root, job.post_root);
    attest_and_round_trip(&mut proof, &prover);
    let provers = [prover.address()];
    let check = |keys: &KeyRing, proof: &wire::ChunkProof| {
        verdict(keys, &provers, job.pre_root, &job.mini_blocks, proof)
    };
    check(&ladder, &proof).unwrap();
    // A verifier without the larger shape refuses it (never skips it).
    assert!(matches!(
        check(&plain, &proof),
        Err(Rejection::Shape { claimed, .. }) if claimed == larger
    ));
    // The larger segment presented as a main one holds more steps than that circuit.
    let mut relabelled = proof.clone();
    relabelled.segments[0].shape = shape;
    relabelled.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &relabelled));
    assert!(matches!(
        check(&ladder, &relabelled),
        Err(Rejection::Statement(StatementError::Segments { .. }))
    ));
    // A larger shape must hold more steps than the main one.
    assert!(KeyRing::generate_with_larger(shape, &[2], &params).is_err());
}
