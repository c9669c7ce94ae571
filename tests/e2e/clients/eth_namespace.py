"""The eth namespace beyond transfers, through web3.py: block receipts and counts, transactions
by block and index, eth_getLogs with its filters, polling filters, eth_feeHistory, and the small
net/web3 methods.

Usage: eth_namespace.py RPC_URL
Deploys a contract that emits LOG1 with its 32-byte call data as the topic, makes two calls
(topics A and B), then reads everything back. Prints one JSON object; the Rust test asserts on it.
"""

import json
import sys
import time

from web3 import Web3

from devnet_web3 import account as devnet_account, error_of, send

RUNTIME = "36156012576000358060005560006000a1005b60005460005260206000f3"
INIT = "601e80600c6000396000f300" + RUNTIME
TOPIC_A = "0x" + "aa" * 32
TOPIC_B = "0x" + "bb" * 32


def hexes(logs):
    return [log["topics"][0].to_0x_hex() for log in logs]


def main():
    w3 = Web3(Web3.HTTPProvider(sys.argv[1], request_kwargs={"timeout": 30}))
    account = devnet_account(6)
    out = {}
    out["syncing"] = w3.eth.syncing
    out["listening"] = w3.net.listening
    out["peer_count"] = w3.net.peer_count
    out["sha3"] = w3.provider.make_request("web3_sha3", ["0x68656c6c6f"])["result"]

    block_filter = w3.eth.filter("latest")
    pending_filter = w3.eth.filter("pending")
    deployed = send(w3, account, {"data": "0x" + INIT}, tip=1_000_000, gas=200_000)
    address = deployed["contractAddress"]
    log_filter = w3.eth.filter({"address": address})
    topic_filter = w3.eth.filter({"address": address, "topics": [TOPIC_B]})
    first = send(w3, account, {"to": address, "data": TOPIC_A}, tip=2_000_000, gas=200_000)
    second = send(w3, account, {"to": address, "data": TOPIC_B}, tip=3_000_000, gas=200_000)

    # Blocks and their transactions.
    number = second["blockNumber"]
    receipts = w3.eth.get_block_receipts(number)
    out["block_receipts"] = [r["transactionHash"].to_0x_hex() for r in receipts]
    out["second_hash"] = second["transactionHash"].to_0x_hex()
    out["second_log_index"] = second["logs"][0]["logIndex"]
    out["block_receipt_log_index"] = [r["logs"][0]["logIndex"] for r in receipts if r["logs"]]
    out["count_by_number"] = w3.eth.get_block_transaction_count(number)
    out["count_by_hash"] = w3.eth.get_block_transaction_count(second["blockHash"])
    by_index = w3.eth.get_transaction_by_block(number, second["transactionIndex"])
    out["by_number_and_index"] = by_index["hash"].to_0x_hex()
    by_hash_index = w3.eth.get_transaction_by_block(second["blockHash"], second["transactionIndex"])
    out["by_hash_and_index"] = by_hash_index["hash"].to_0x_hex()
    out["missing_index"] = w3.provider.make_request(
        "eth_getTransactionByBlockNumberAndIndex", [hex(number), "0x3e8"]
    )["result"]
    out["missing_block_count"] = w3.provider.make_request(
        "eth_getBlockTransactionCountByNumber", [hex(number + 10_000)]
    )["result"]
    out["uncles"] = w3.provider.make_request("eth_getUncleCountByBlockNumber", [hex(number)])["result"]

    # eth_getLogs: by address, by topic, by block hash, over a range.
    start = deployed["blockNumber"]
    out["logs_by_address"] = hexes(w3.eth.get_logs({"address": address, "fromBlock": start}))
    out["logs_by_topic"] = hexes(
        w3.eth.get_logs({"fromBlock": start, "toBlock": "latest", "topics": [TOPIC_A]})
    )
    out["logs_by_topic_or"] = hexes(
        w3.eth.get_logs({"fromBlock": start, "topics": [[TOPIC_A, TOPIC_B]]})
    )
    out["logs_by_block_hash"] = hexes(w3.eth.get_logs({"blockHash": first["blockHash"]}))
    out["logs_before_deploy"] = hexes(w3.eth.get_logs({"fromBlock": 0, "toBlock": start - 1}))
    out["inverted_range_error"] = error_of(
        lambda: w3.eth.get_logs({"fromBlock": start + 1, "toBlock": start})
    )
    out["unknown_hash_error"] = error_of(lambda: w3.eth.get_logs({"blockHash": "0x" + "12" * 32}))

    # Polling filters: installed before the calls, they report each change once.
    out["filter_changes"] = hexes(log_filter.get_new_entries())
    out["filter_changes_again"] = hexes(log_filter.get_new_entries())
    out["topic_filter_changes"] = hexes(topic_filter.get_new_entries())
    out["filter_logs"] = hexes(w3.eth.get_filter_logs(log_filter.filter_id))
    pending = [h.to_0x_hex() for h in pending_filter.get_new_entries()]
    out["pending_filter_has_calls"] = all(
        r["transactionHash"].to_0x_hex() in pending for r in (deployed, first, second)
    )
    out["pending_filter_again"] = len(pending_filter.get_new_entries())
    blocks = block_filter.get_new_entries()
    out["block_filter_count"] = len(blocks)
    out["block_filter_has_second"] = second["blockHash"] in blocks
    out["uninstall"] = w3.eth.uninstall_filter(log_filter.filter_id)
    out["uninstall_again"] = w3.eth.uninstall_filter(log_filter.filter_id)
    out["removed_filter_error"] = error_of(lambda: w3.eth.get_filter_changes(log_filter.filter_id))

    # eth_call and eth_estimateGas with geth's state and block overrides.
    value = "0x" + "77" * 32
    out["override_slot"] = w3.eth.call(
        {"to": address}, "latest", {address: {"stateDiff": {"0x" + "00" * 32: value}}}
    ).to_0x_hex()
    out["override_value"] = value
    stranger = Web3.to_checksum_address("0x" + "5e" * 20)
    out["override_code"] = w3.eth.call(
        {"to": stranger},
        "latest",
        {stranger: {"code": "0x" + RUNTIME, "state": {"0x" + "00" * 32: value}}},
    ).to_0x_hex()
    poor = Web3.to_checksum_address("0x" + "70" * 20)
    out["without_balance"] = error_of(
        lambda: w3.eth.call({"from": poor, "to": stranger, "value": 10**18})
    )
    out["with_balance"] = w3.eth.call(
        {"from": poor, "to": stranger, "value": 10**18}, "latest", {poor: {"balance": hex(2 * 10**18)}}
    ).to_0x_hex()
    out["estimate_with_balance"] = w3.eth.estimate_gas(
        {"from": poor, "to": stranger, "value": 10**18}, "latest", {poor: {"balance": hex(2 * 10**18)}}
    )
    # NUMBER, then TIMESTAMP, each returned as one word.
    env_reader = "0x4360005260206000f3"
    time_reader = "0x4260005260206000f3"
    out["block_number_override"] = w3.provider.make_request(
        "eth_call",
        [{"to": stranger}, "latest", {stranger: {"code": env_reader}}, {"number": "0x1234"}],
    )["result"]
    out["block_time_override"] = w3.provider.make_request(
        "eth_call",
        [{"to": stranger}, "latest", {stranger: {"code": time_reader}}, {"time": "0x5678"}],
    )["result"]
    out["unsupported_override"] = w3.provider.make_request(
        "eth_call", [{"to": stranger}, "latest", {}, {"random": "0x" + "11" * 32}]
    ).get("error")
    out["both_state_and_diff"] = w3.provider.make_request(
        "eth_call", [{"to": stranger}, "latest", {stranger: {"state": {}, "stateDiff": {}}}]
    ).get("error")

    # Fee history over the blocks of the three transactions, with reward percentiles.
    newest = second["blockNumber"]
    count = newest - deployed["blockNumber"] + 1
    history = w3.eth.fee_history(count, newest, [0, 50, 100])
    out["fee_oldest"] = history["oldestBlock"]
    out["fee_base_fees"] = len(history["baseFeePerGas"])
    out["fee_ratios"] = len(history["gasUsedRatio"])
    out["fee_rewards"] = history["reward"]
    out["deploy_block"] = deployed["blockNumber"]
    out["fee_base_fee_of_second"] = history["baseFeePerGas"][-2]
    out["second_base_fee"] = w3.eth.get_block(newest)["baseFeePerGas"]
    out["fee_beyond_head_error"] = error_of(lambda: w3.eth.fee_history(1, newest + 10_000, []))
    out["fee_bad_percentile_error"] = error_of(lambda: w3.eth.fee_history(1, newest, [60, 10]))
    # Raw transactions: the signed bytes as sent, by hash and by block and index; the hash is
    # the bytes' keccak and the sender the one that signed them.
    raw = w3.provider.make_request("eth_getRawTransactionByHash", [out["second_hash"]])["result"]
    out["raw_keccak"] = Web3.keccak(hexstr=raw).to_0x_hex()
    out["raw_sender"] = w3.eth.account.recover_transaction(raw)
    out["sender"] = account.address
    out["raw_by_number_and_index"] = w3.provider.make_request(
        "eth_getRawTransactionByBlockNumberAndIndex", [hex(number), hex(second["transactionIndex"])]
    )["result"]
    out["raw_by_hash_and_index"] = w3.provider.make_request(
        "eth_getRawTransactionByBlockHashAndIndex",
        [second["blockHash"].to_0x_hex(), hex(second["transactionIndex"])],
    )["result"]
    out["raw"] = raw
    out["raw_unknown"] = w3.provider.make_request(
        "eth_getRawTransactionByHash", ["0x" + "12" * 32]
    )["result"]

    # Headers: the block's fields without its transactions.
    block = w3.provider.make_request("eth_getBlockByNumber", [hex(number), False])["result"]
    header = w3.provider.make_request("eth_getHeaderByNumber", [hex(number)])["result"]
    out["header_equals_block"] = header == {
        k: v for k, v in block.items() if k not in ("transactions", "uncles", "withdrawals")
    }
    out["header_keys"] = sorted(header.keys())
    out["header_by_hash"] = w3.provider.make_request(
        "eth_getHeaderByHash", [block["hash"]]
    )["result"] == header
    out["header_missing"] = w3.provider.make_request(
        "eth_getHeaderByNumber", [hex(number + 10_000)]
    )["result"]
    out["blob_base_fee"] = w3.eth.blob_base_fee

    # The mempool (txpool_*): a transaction behind a nonce gap waits there as queued until the
    # gap is filled.
    def signed(nonce):
        latest = w3.eth.get_block("latest")
        return account.sign_transaction(
            {
                "type": 2,
                "chainId": w3.eth.chain_id,
                "nonce": nonce,
                "to": "0x" + "42" * 20,
                "value": 7,
                "gas": 21_000,
                "maxPriorityFeePerGas": 1_000_000,
                "maxFeePerGas": latest["baseFeePerGas"] * 2 + 1_000_000,
            }
        )

    def rpc(method, *params):
        response = w3.provider.make_request(method, list(params))
        if "result" not in response:
            raise RuntimeError(f"{method}: {response}")
        return response["result"]

    nonce = w3.eth.get_transaction_count(account.address, "pending")
    gapped = signed(nonce + 1)
    gapped_hash = w3.eth.send_raw_transaction(gapped.raw_transaction).to_0x_hex()
    out["txpool_status"] = rpc("txpool_status")
    content = rpc("txpool_content")
    queued = content["queued"].get(account.address, {}).get(str(nonce + 1))
    out["txpool_queued_hash"] = queued and queued["hash"]
    out["txpool_queued_block"] = queued and queued["blockHash"]
    out["gapped_hash"] = gapped_hash
    out["txpool_pending_of_sender"] = content["pending"].get(account.address, {})
    out["txpool_inspect"] = rpc("txpool_inspect")["queued"].get(account.address, {}).get(str(nonce + 1))
    out["txpool_content_from"] = sorted(rpc("txpool_contentFrom", account.address)["queued"].keys())
    out["txpool_content_from_stranger"] = rpc("txpool_contentFrom", "0x" + "43" * 20)
    out["gap_nonce"] = nonce + 1
    filler = w3.eth.send_raw_transaction(signed(nonce).raw_transaction)
    w3.eth.wait_for_transaction_receipt(filler, timeout=30, poll_latency=0.1)
    out["gapped_status"] = w3.eth.wait_for_transaction_receipt(gapped_hash, timeout=30, poll_latency=0.1)["status"]
    out["txpool_status_after"] = rpc("txpool_status")

    # eth_createAccessList: a contract that STATICCALLs the logging contract, which then reads
    # its slot 0. The list names that contract and slot; a transaction carrying it is valid,
    # uses what the node said and less than the same transaction without it.
    caller_runtime = "6000600060006000" + "73" + address[2:].lower() + "5afa5000"
    caller_init = "6021" + "80600c6000396000f300" + caller_runtime
    caller = send(w3, account, {"data": "0x" + caller_init}, gas=200_000)["contractAddress"]
    found = w3.eth.create_access_list({"from": account.address, "to": caller, "gas": 100_000})
    out["access_list"] = [
        {"address": item["address"], "storageKeys": [k if isinstance(k, str) else k.to_0x_hex() for k in item["storageKeys"]]}
        for item in found["accessList"]
    ]
    out["access_list_target"] = address
    out["access_list_gas"] = found["gasUsed"]
    with_list = send(
        w3, account, {"to": caller, "accessList": found["accessList"]}, gas=100_000
    )
    without_list = send(w3, account, {"to": caller}, gas=100_000)
    out["with_list_status"] = with_list["status"]
    out["with_list_gas"] = with_list["gasUsed"]
    out["without_list_gas"] = without_list["gasUsed"]
    out["access_list_reverted"] = w3.provider.make_request(
        "eth_createAccessList", [{"to": stranger, "gas": "0x186a0"}, "latest"]
    )

    # Otterscan's ots_ methods built so far, over the block of the second call.
    ots = lambda method, *params: w3.provider.make_request(method, list(params))
    out["ots_has_code"] = [ots("ots_hasCode", address, "latest")["result"], ots("ots_hasCode", stranger, "latest")["result"]]
    details = ots("ots_getBlockDetails", number)["result"]
    out["ots_details_count"] = details["block"]["transactionCount"]
    out["ots_details_has_transactions"] = "transactions" in details["block"]
    out["ots_details_hash"] = details["block"]["hash"]
    out["block_hash"] = second["blockHash"].to_0x_hex()
    out["ots_total_fees"] = int(details["totalFees"], 16)
    out["block_fees"] = sum(r["gasUsed"] * r["effectiveGasPrice"] for r in receipts)
    out["ots_issuance"] = details["issuance"]
    out["ots_details_by_hash_equal"] = ots("ots_getBlockDetailsByHash", out["block_hash"])["result"] == details
    page = ots("ots_getBlockTransactions", number, 0, 1)["result"]
    out["ots_page_count"] = page["fullblock"]["transactionCount"]
    out["ots_page_txs"] = [t["hash"] for t in page["fullblock"]["transactions"]]
    out["ots_page_inputs"] = [t["input"] for t in page["fullblock"]["transactions"]]
    out["ots_page_receipts"] = [(r["transactionHash"], r["logs"], r["logsBloom"]) for r in page["receipts"]]
    out["last_tx_of_block"] = receipts[-1]["transactionHash"].to_0x_hex()
    out["ots_page_beyond"] = ots("ots_getBlockTransactions", number, 1000, 1)["result"]["fullblock"]["transactions"]
    second_nonce = w3.eth.get_transaction(second["transactionHash"])["nonce"]
    out["ots_by_nonce"] = ots("ots_getTransactionBySenderAndNonce", account.address, second_nonce)["result"]
    out["ots_by_nonce_hex"] = ots("ots_getTransactionBySenderAndNonce", account.address, hex(second_nonce))["result"]
    out["ots_by_nonce_unused"] = ots("ots_getTransactionBySenderAndNonce", account.address, 10_000)["result"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
