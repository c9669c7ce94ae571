//! Contract code, storage and logs reach the replica through state diffs (it executes nothing),
//! and ingress's batch submission judges each entry on its own.

use alloy_primitives::{Address, U256};
use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_transfer, verity_devnet::Service};
use verity_proto::v1::{self, ingress_client::IngressClient, submit_result::Result as Entry};
use verity_server::status::rejection_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_state_and_logs_are_served_by_the_replica() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net.python("contract.py", &[&net.devnet.rpc_url()]).await;
    assert_eq!(out["deploy_status"], json!(1), "{out}");
    assert_eq!(out["store_status"], json!(1), "{out}");
    let hex = |key: &str| {
        out[key]
            .as_str()
            .unwrap()
            .trim_start_matches("0x")
            .to_owned()
    };
    assert_eq!(hex("code"), hex("runtime"));
    assert_eq!(out["log_count"], json!(1));
    assert_eq!(out["log_address"], out["contract_address"]);
    assert_eq!(hex("log_topic"), hex("value"));
    assert_eq!(hex("slot0"), hex("value"));
    assert_eq!(hex("call"), hex("value"));
    // Past blocks' state: before the store the slot was zero, before the deploy there was no code.
    assert_eq!(hex("slot0_before"), "00".repeat(32), "{out}");
    assert_eq!(hex("call_before"), "00".repeat(32), "{out}");
    assert_eq!(hex("call_at_store"), hex("value"), "{out}");
    assert_eq!(hex("code_before_deploy"), "", "{out}");
    net.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_submission_answers_each_entry() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let signer = dev_signer(&net, 5).unwrap();
    let chain_id = net.devnet.chain_id();
    let raw = |nonce: u64, chain_id: u64| {
        let (raw, hash) = sign_transfer(
            &signer,
            chain_id,
            nonce,
            Address::repeat_byte(0x99),
            U256::from(5),
        )
        .unwrap();
        (
            alloy_primitives::hex::decode(raw).unwrap(),
            alloy_primitives::hex::decode(hash).unwrap(),
        )
    };
    let (first, first_hash) = raw(0, chain_id);
    let (second, second_hash) = raw(1, chain_id);
    let (wrong_chain, _) = raw(2, chain_id + 1);
    let mut ingress = IngressClient::new(
        verity_e2e::grpc(&net.devnet, Service::Ingress)
            .await
            .unwrap(),
    );
    let results = ingress
        .submit_batch(v1::SubmitBatchRequest {
            raw: vec![first.clone(), wrong_chain.clone(), second, vec![0xc0]],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].result, Some(Entry::TxHash(first_hash)));
    match &results[1].result {
        Some(Entry::Error(error)) => {
            assert!(error.message.starts_with("invalid chain id"), "{error:?}");
            assert_eq!(error.rejection, v1::TxRejection::Invalid as i32);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(results[2].result, Some(Entry::TxHash(second_hash.clone())));
    assert!(matches!(results[3].result, Some(Entry::Error(_))));

    let rpc = net.rpc();
    let receipt = rpc
        .wait_receipt(
            &alloy_primitives::hex::encode_prefixed(&second_hash),
            std::time::Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(receipt["status"], json!("0x1"));

    // One submission's refusal carries its reason typed, in the status details: from ingress's
    // own checks and from the sequencer's mempool alike.
    let refused = ingress
        .submit(v1::SubmitRequest { raw: wrong_chain })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(rejection_of(&refused), Some(v1::TxRejection::Invalid));
    let replayed = ingress
        .submit(v1::SubmitRequest { raw: first })
        .await
        .unwrap_err();
    assert!(
        replayed.message().starts_with("nonce too low"),
        "{replayed:?}"
    );
    assert_eq!(replayed.code(), tonic::Code::FailedPrecondition);
    assert_eq!(rejection_of(&replayed), Some(v1::TxRejection::NonceTooLow));

    // Straight to the sequencer, a transfer signed by a stranger but claiming a funded sender:
    // the sequencer recovers the signer itself and refuses.
    let stranger = alloy_signer_local::PrivateKeySigner::random();
    let (raw, hash) =
        sign_transfer(&stranger, chain_id, 2, stranger.address(), U256::from(1)).unwrap();
    let forged = v1::ForwardRequest {
        id: 7,
        transaction: Some(v1::Transaction {
            raw: alloy_primitives::hex::decode(raw).unwrap(),
            sender: signer.address().to_vec(),
            hash: alloy_primitives::hex::decode(hash).unwrap(),
        }),
        ..Default::default()
    };
    let mut sequencer = verity_e2e::sequencer_client(&net.devnet, Service::Sequencer)
        .await
        .unwrap();
    let answer = sequencer
        .forward(futures::stream::iter([forged]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(
        answer.rejection,
        v1::TxRejection::Invalid as i32,
        "{answer:?}"
    );
    assert!(answer.message.starts_with("invalid sender"), "{answer:?}");
    net.stop().await.unwrap();
}
