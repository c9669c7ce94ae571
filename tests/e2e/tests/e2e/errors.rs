//! Errors as geth gives them, so client libraries decode them: the transaction pool's refusals,
//! reverts as code 3 with their data and reason, invalid params, unknown methods, parse errors,
//! and batches answered entry by entry.

use serde_json::{Value, json};
use verity_e2e::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_geths_codes_and_texts() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net.python("errors.py", &[&net.devnet.rpc_url()]).await;
    // Every error a client can get here: (case, code, how geth's message starts).
    let table: &[(&str, i64, &str)] = &[
        ("already_known", -32000, "already known"),
        ("underpriced", -32000, "replacement transaction underpriced"),
        ("nonce_too_high", -32000, "nonce too high"),
        ("nonce_too_low", -32000, "nonce too low"),
        (
            "insufficient_funds",
            -32000,
            "insufficient funds for gas * price + value",
        ),
        ("intrinsic_gas", -32000, "intrinsic gas too low"),
        (
            "below_base_fee",
            -32000,
            "max fee per gas less than block base fee",
        ),
        ("over_block_gas_limit", -32000, "exceeds block gas limit"),
        (
            "over_tx_gas_cap",
            -32000,
            "transaction gas limit too high (cap: 16777216, tx: 20000000)",
        ),
        ("wrong_chain", -32000, "invalid chain id for signer"),
        ("call_revert", 3, "execution reverted: nope"),
        ("estimate_revert", 3, "execution reverted: nope"),
        ("invalid_params", -32602, "invalid params: parameter 0"),
        (
            "missing_param",
            -32602,
            "invalid params: missing value for required argument 0",
        ),
        (
            "unknown_method",
            -32601,
            "the method eth_notAMethod does not exist/is not available",
        ),
    ];
    for (case, code, message) in table {
        let error = &out[*case];
        assert_eq!(error["code"], json!(code), "{case}: {out}");
        let text = error["message"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(message),
            "{case}: {text:?} does not start with {message:?}"
        );
    }
    for (case, code) in [("parse_error", -32700), ("empty_batch", -32600)] {
        assert_eq!(out[case]["error"]["code"], json!(code), "{case}: {out}");
        assert_eq!(out[case]["id"], Value::Null, "{case}");
    }

    // The pool: a gap waits, +10% replaces it, and filling the gap lets both in.
    assert!(out["gap"]["result"].is_string(), "{out}");
    assert!(out["replacement"]["result"].is_string(), "{out}");
    assert_eq!(out["filled_status"], json!([1, 1]), "{out}");
    assert_eq!(out["nonce_after"], json!(2));

    // Reverts carry Error("nope") as data, which web3.py decodes.
    let revert_data = "0x08c379a0\
        0000000000000000000000000000000000000000000000000000000000000020\
        0000000000000000000000000000000000000000000000000000000000000004\
        6e6f706500000000000000000000000000000000000000000000000000000000";
    for key in ["call_revert", "estimate_revert"] {
        assert_eq!(out[key]["data"], json!(revert_data), "{key}");
    }
    assert_eq!(
        out["web3_revert"]["message"],
        json!("execution reverted: nope")
    );
    assert_eq!(out["web3_revert"]["data"], json!(revert_data));

    // A batch answers each entry.
    let batch = out["batch"].as_array().unwrap();
    let ids: Vec<&Value> = batch.iter().map(|entry| &entry["id"]).collect();
    assert_eq!(
        ids,
        [json!(1), json!(2), json!(3), json!(4), json!(5)]
            .iter()
            .collect::<Vec<_>>(),
        "one answer per request, none for the notification: {out}"
    );
    assert!(batch[0]["result"].is_string());
    assert_eq!(batch[1]["error"]["code"], json!(-32601));
    assert_eq!(batch[2]["error"]["code"], json!(-32602));
    assert_eq!(batch[3]["error"]["code"], json!(-32600));
    assert!(batch[4]["result"].is_string());
    net.stop().await.unwrap();
}
