//! Conformance with three real client libraries on one devnet with the proving path on: viem
//! and ethers v6 (Node.js) and web3.py each deploy an ERC-20 compiled from Solidity by solc-js, transfer it
//! with legacy, EIP-2930 and EIP-1559 transactions, read its Transfer logs through eth_getLogs,
//! a filter and a WebSocket subscription, call balanceOf, decode a revert reason, replace a
//! pending transaction with a higher fee, and read the safe and finalized blocks.

use serde_json::{Value, json};
use verity_e2e::TestNet;

fn check(library: &str, out: &Value, status_ok: &Value, types: [&Value; 3]) {
    let context = format!("{library}: {out}");
    assert_eq!(&out["deploy_status"], status_ok, "{context}");
    for (name, expected_type) in ["legacy", "eip2930", "eip1559"].iter().zip(types) {
        assert_eq!(&out["types"][name]["status"], status_ok, "{name} {context}");
        assert_eq!(
            &out["types"][name]["type"], expected_type,
            "{name} {context}"
        );
    }
    let number = |v: &Value| -> u64 {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("not a number: {v} in {context}"))
    };
    let values = |key: &str| -> Vec<u64> {
        out[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing: {context}"))
            .iter()
            .map(number)
            .collect()
    };
    assert_eq!(number(&out["balance"]), 600, "{context}");
    assert_eq!(values("get_logs"), [1_000_000, 100, 200, 300], "{context}");
    assert_eq!(values("filter_logs"), [100, 200, 300], "{context}");
    assert_eq!(values("streamed"), [100, 200, 300], "{context}");
    assert!(
        out["revert"]
            .as_str()
            .unwrap_or_default()
            .contains("balance too low"),
        "{context}"
    );
    assert_eq!(&out["replacement"]["status"], status_ok, "{context}");
    assert_eq!(out["replacement"]["nonce_after"], json!(6), "{context}");
    assert!(
        out["replaced_receipt"]
            .as_str()
            .unwrap()
            .contains("NotFound"),
        "the replaced transaction never lands: {context}"
    );
    let latest = number(&out["latest"]);
    for tag in ["safe", "finalized"] {
        let block = &out[tag];
        assert!(block["hash"].is_string(), "{tag} block: {context}");
        assert!(
            number(&block["number"]) <= latest,
            "{tag} above latest: {context}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viem_ethers_and_web3py_run_an_erc20_through_every_transaction_type_and_read_path() {
    let net = TestNet::start(|o| o.proving = true).await.unwrap();
    let url = net.devnet.rpc_url();
    let viem = net.node("conformance.mjs", &[&url, "1"]).await;
    check(
        "viem",
        &viem,
        &json!("success"),
        [&json!("legacy"), &json!("eip2930"), &json!("eip1559")],
    );
    let web3py = net.python("conformance.py", &[&url, "2"]).await;
    check(
        "web3.py",
        &web3py,
        &json!(1),
        [&json!(0), &json!(1), &json!(2)],
    );
    let ethers = net.node("ethers_conformance.mjs", &[&url, "3"]).await;
    check(
        "ethers",
        &ethers,
        &json!(1),
        [&json!(0), &json!(1), &json!(2)],
    );
    // ethers's fee data: eth_gasPrice, and EIP-1559 fees from the latest block's base fee and
    // eth_maxPriorityFeePerGas.
    let fee = |key: &str| -> u128 {
        ethers["fee_data"][key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("fee_data.{key}: {ethers}"))
    };
    assert_eq!(fee("max_priority_fee"), 1_000_000, "{ethers}");
    assert!(fee("gas_price") > fee("max_priority_fee"), "{ethers}");
    assert!(fee("max_fee") > fee("max_priority_fee"), "{ethers}");

    every_monitored_series_exists(&net).await;
    verity_status_shows_the_chain(&net).await;
    proofs_at_finalized_verify_and_tampered_ones_do_not(&net, &viem).await;
    net.stop().await.unwrap();
}

/// `verity status --json` on the proving devnet after the clients' traffic: heads with
/// `finalized` reached, the epoch-0 sequencer holding the lease (checked against genesis), the
/// prover pool, the verifier's signed attestation of a block at least as new as `finalized`
/// with the root its proofs established, the streams, and no alarm and nothing unreadable.
async fn verity_status_shows_the_chain(net: &TestNet) {
    let output = tokio::process::Command::new(verity_devnet::default_bin_dir().join("verity"))
        .args([
            "status",
            "--json",
            "--rpc-url",
            &net.devnet.rpc_url(),
            "--devnet-dir",
        ])
        .arg(net.devnet.data_dir())
        .env("VERITY_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["unavailable"], json!([]), "{status}");
    assert_eq!(status["alarms"], json!([]), "{status}");
    assert_eq!(status["chain_id"], json!(31337), "{status}");
    let finalized = status["heads"]["finalized"].as_u64().expect("finalized");
    assert!(status["heads"]["latest"].as_u64().unwrap() >= finalized);
    assert_eq!(status["sequencer"]["epoch"], json!(0), "{status}");
    assert_eq!(status["sequencer"]["refused"], json!(null));
    let provers = status["provers"].as_array().unwrap();
    assert!(!provers.is_empty(), "{status}");
    assert!(provers[0]["done"].as_u64().unwrap() > 0, "{status}");
    let verifiers = status["verifiers"].as_array().unwrap();
    assert_eq!(verifiers.len(), 1, "{status}");
    assert!(
        verifiers[0]["block"].as_u64().unwrap() >= finalized,
        "{status}"
    );
    assert_eq!(verifiers[0]["fraud"], json!(null));
    assert_eq!(verifiers[0]["registered"], json!(true), "{status}");
    assert!(
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "VERITY_CHAIN" && s["messages"].as_u64() > Some(0)),
        "{status}"
    );
}

/// Every series the chart's dashboards and alert rules name is exported by this devnet (with
/// proving, after the clients' traffic and `safe`/`finalized` reached): a panel or an alert on a
/// series nobody exports would stay silent forever.
async fn every_monitored_series_exists(net: &TestNet) {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/verity");
    let mut named = std::collections::BTreeSet::new();
    let mut sources = vec![chart.join("templates/prometheusrule.yaml")];
    for entry in std::fs::read_dir(chart.join("dashboards")).unwrap() {
        sources.push(entry.unwrap().path());
    }
    for source in &sources {
        let text = std::fs::read_to_string(source).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("verity_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            // Histograms are named by their series (`_bucket`); the others as exported.
            named.insert(name);
        }
    }
    assert!(named.len() > 20, "{named:?}");
    // The provers report their pool's backlog, and the sequencer the streams, every 10 s.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let mut exported = std::collections::BTreeSet::new();
    for service in net.devnet.services() {
        let metrics = net.devnet.address(service, "metrics").unwrap();
        let (status, body) = verity_e2e::http_get(&format!("http://{metrics}/metrics"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{service}");
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some(name) = line.split(['{', ' ']).next() {
                exported.insert(name.to_string());
            }
        }
    }
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named by a dashboard or an alert but exported by no service: {missing:?}"
    );
    assert!(exported.contains("verity_prover_pool_backlog_jobs"));
}

/// Runs `verity verify-proof` on `answer` (written to a file) with `flags`: whether it held, and
/// what it printed.
async fn verify_proof(net: &TestNet, answer: &Value, flags: &[String]) -> (bool, String) {
    let file = net.devnet.data_dir().join("proof.json");
    std::fs::write(&file, answer.to_string()).unwrap();
    let output = tokio::process::Command::new(verity_devnet::default_bin_dir().join("verity"))
        .arg("verify-proof")
        .arg("--proof")
        .arg(&file)
        .args(flags)
        .env("VERITY_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `eth_getProof` at `finalized`, after the clients' traffic is final: the ERC-20 viem deployed
/// (its recipient's balance slot, found with `eth_createAccessList`) verifies with
/// `verity verify-proof` against the verifier's signed attestation of that block; one byte
/// changed in a proof, or the proof checked against another block's root, is refused. `cast
/// proof` gets the same proofs.
async fn proofs_at_finalized_verify_and_tampered_ones_do_not(net: &TestNet, viem: &Value) {
    let rpc = net.rpc();
    let token = viem["token"]
        .as_str()
        .expect("viem's token address")
        .to_string();
    // balanceOf(0x4e…4e): the slot it reads holds the 600 transferred to it.
    let call = json!({
        "to": token,
        "data": format!("0x70a08231{:0>64}", "4e".repeat(20)),
    });
    let listed = rpc
        .call("eth_createAccessList", json!([call]))
        .await
        .unwrap();
    let slots: Vec<Value> = listed["accessList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"].as_str().unwrap().eq_ignore_ascii_case(&token))
        .unwrap_or_else(|| panic!("{listed}"))["storageKeys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(slots.len(), 1, "{listed}");
    let slot = slots[0].as_str().unwrap().to_string();

    // Wait for the traffic's last block to be final and its attestation stored by the witness.
    let last = rpc.quantity("eth_blockNumber", json!([])).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let answer = loop {
        let finalized = rpc
            .call("eth_getBlockByNumber", json!(["finalized", false]))
            .await
            .unwrap();
        let number = verity_e2e::parse_quantity(&finalized["number"]).unwrap();
        if number >= last {
            let answer = rpc
                .call(
                    "eth_getProof",
                    json!([token, [slot], format!("{number:#x}")]),
                )
                .await
                .unwrap();
            if answer["attestations"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break answer;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "block {last} not final with an attestation in 600 s (finalized: {number})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(
        answer["storageProof"][0]["value"],
        json!("0x258"),
        "{answer}"
    );
    assert_eq!(answer["storageHash"], answer["stateRoot"], "{answer}");
    let number = answer["blockNumber"].as_str().unwrap().to_string();
    // The block's root alone, with the same attestations.
    let root_only = rpc
        .call("verity_getStateRoot", json!([number]))
        .await
        .unwrap();
    for field in ["stateRoot", "blockHash", "attestations"] {
        assert_eq!(root_only[field], answer[field], "{field}: {root_only}");
    }
    // Where a client reads a block, the root is beside the header's (zero) stateRoot.
    for method in ["eth_getBlockByNumber", "eth_getHeaderByNumber"] {
        let params = if method == "eth_getBlockByNumber" {
            json!([number, false])
        } else {
            json!([number])
        };
        let block = rpc.call(method, params).await.unwrap();
        assert_eq!(
            block["verityStateRoot"], answer["stateRoot"],
            "{method}: {block}"
        );
        assert_eq!(block["hash"], answer["blockHash"], "{method}: {block}");
    }

    let trust = vec![
        "--verifier".to_string(),
        net.devnet.verifier_address().to_string(),
        "--chain-id".to_string(),
        net.devnet.chain_id().to_string(),
    ];
    let (held, out) = verify_proof(net, &answer, &trust).await;
    assert!(held, "{out}");
    assert!(out.contains("0x258 (proven)"), "{out}");
    assert!(out.contains("finality attestations signed by"), "{out}");

    // One byte changed in the account proof's first sibling, or in the slot's terminal leaf.
    let flip = |hex: &str| -> String {
        let mut bytes = alloy_primitives::hex::decode(hex).unwrap();
        bytes[7] ^= 0x01;
        alloy_primitives::hex::encode_prefixed(bytes)
    };
    let mut tampered = answer.clone();
    tampered["accountProof"][0] = json!(flip(answer["accountProof"][0].as_str().unwrap()));
    let (held, out) = verify_proof(net, &tampered, &trust).await;
    assert!(!held, "a changed sibling verified: {out}");
    assert!(out.contains("does not hold"), "{out}");
    let mut tampered = answer.clone();
    let leaf = answer["storageProof"][0]["proof"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    let at = answer["storageProof"][0]["proof"].as_array().unwrap().len() - 1;
    tampered["storageProof"][0]["proof"][at] = json!(flip(leaf.as_str().unwrap()));
    let (held, out) = verify_proof(net, &tampered, &trust).await;
    assert!(!held, "a changed leaf verified: {out}");

    // Another block's root: genesis's (the token did not exist yet). Against it the proofs do
    // not hold, and the attestation of this block does not vouch for it.
    let genesis = rpc
        .call("eth_getProof", json!([token, [slot], "0x0"]))
        .await
        .unwrap();
    let other_root = genesis["stateRoot"].as_str().unwrap().to_string();
    assert_ne!(json!(other_root), answer["stateRoot"]);
    let (held, out) = verify_proof(net, &answer, &["--root".to_string(), other_root.clone()]).await;
    assert!(!held, "verified against genesis's root: {out}");
    let mut moved = answer.clone();
    moved["stateRoot"] = json!(other_root);
    moved["storageHash"] = json!(other_root);
    let (held, out) = verify_proof(net, &moved, &trust).await;
    assert!(!held, "another root passed as this block's: {out}");
    assert!(out.contains("0 of the listed verifiers attested"), "{out}");
    // Genesis's own answer holds under its own root (the token absent there).
    let (held, out) = verify_proof(net, &genesis, &["--root".to_string(), other_root]).await;
    assert!(held, "{out}");
    assert!(out.contains("account: does not exist (proven)"), "{out}");

    // Foundry's `cast proof` reads the same proofs; what it prints verifies against the
    // attested root.
    let printed = verity_e2e::cast(&rpc_url(net), &["proof", &token, &slot, "--block", &number])
        .await
        .unwrap();
    let from_cast: Value =
        serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(
        from_cast["accountProof"], answer["accountProof"],
        "{printed}"
    );
    let root = answer["stateRoot"].as_str().unwrap().to_string();
    let (held, out) = verify_proof(net, &from_cast, &["--root".to_string(), root]).await;
    assert!(held, "{out}");
}

fn rpc_url(net: &TestNet) -> String {
    net.devnet.rpc_url()
}
