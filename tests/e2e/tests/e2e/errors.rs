//! Errors as geth gives them, so client libraries decode them: the transaction pool's refusals,
//! reverts as code 3 with their data and reason, invalid params, unknown methods, parse errors,
//! and batches answered entry by entry.

use serde_json::{Value, json};
use verity_e2e::{TestNet, run_python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_geths_codes_and_texts() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = match run_python("errors.py", &[&net.devnet.rpc_url()]).await {
        Ok(out) => out,
        Err(error) => {
            net.dump_logs();
            panic!("{error:#}");
        }
    };
    let message = |key: &str| out[key]["message"].as_str().unwrap_or_default().to_owned();
    let code = |key: &str| out[key]["code"].clone();

    // The pool: a gap waits; resending it, or replacing it without +10%, is refused.
    assert!(out["gap"]["result"].is_string(), "{out}");
    assert_eq!(message("already_known"), "already known", "{out}");
    assert_eq!(
        message("underpriced"),
        "replacement transaction underpriced"
    );
    assert!(out["replacement"]["result"].is_string(), "{out}");
    assert!(
        message("nonce_too_high").starts_with("nonce too high"),
        "{out}"
    );
    assert!(
        message("intrinsic_gas").starts_with("intrinsic gas too low"),
        "{out}"
    );
    assert!(
        message("below_base_fee").starts_with("max fee per gas less than block base fee"),
        "{out}"
    );
    for key in [
        "already_known",
        "underpriced",
        "nonce_too_high",
        "intrinsic_gas",
        "below_base_fee",
    ] {
        assert_eq!(code(key), json!(-32000), "{key}: {out}");
    }
    assert_eq!(out["filled_status"], json!([1, 1]), "{out}");
    assert_eq!(out["nonce_after"], json!(2));

    // Reverts: code 3, Error("nope") as data, the reason in the message, decoded by web3.py.
    let revert_data = "0x08c379a0\
        0000000000000000000000000000000000000000000000000000000000000020\
        0000000000000000000000000000000000000000000000000000000000000004\
        6e6f706500000000000000000000000000000000000000000000000000000000";
    for key in ["call_revert", "estimate_revert"] {
        assert_eq!(code(key), json!(3), "{key}: {out}");
        assert_eq!(message(key), "execution reverted: nope", "{key}");
        assert_eq!(out[key]["data"], json!(revert_data), "{key}");
    }
    assert_eq!(
        out["web3_revert"]["message"],
        json!("execution reverted: nope")
    );
    assert_eq!(out["web3_revert"]["data"], json!(revert_data));

    // Framing.
    assert_eq!(code("invalid_params"), json!(-32602), "{out}");
    assert_eq!(code("missing_param"), json!(-32602));
    assert_eq!(code("unknown_method"), json!(-32601));
    assert_eq!(out["parse_error"]["error"]["code"], json!(-32700));
    assert_eq!(out["parse_error"]["id"], Value::Null);
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
    assert_eq!(out["empty_batch"]["error"]["code"], json!(-32600));
    net.stop().await.unwrap();
}
