"""Errors as geth gives them, seen by web3.py and on the wire: transaction pool refusals, reverts
with their data and reason, invalid params, unknown methods, parse errors and batches.

Usage: errors.py RPC_URL
Prints one JSON object with each error object received; the Rust test asserts on it.
"""

import json
import sys
import urllib.request

from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
# Runtime code that reverts with Error("nope") on any call; run as init code by a creation call.
REVERTER = "6308c379a060e01b600052" "6020600452" "6004602452" "636e6f706560e01b604452" "60646000fd"


def post(url, body):
    request = urllib.request.Request(
        url, data=body.encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main():
    url = sys.argv[1]
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    account = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/7")
    chain_id = w3.eth.chain_id
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    nonce = w3.eth.get_transaction_count(account.address, "pending")

    def raw(**fields):
        tx = {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": "0x" + "42" * 20,
            "value": 1,
            "gas": 21_000,
            "maxPriorityFeePerGas": 1_000_000,
            "maxFeePerGas": base_fee * 4 + 1_000_000,
        }
        tx.update(fields)
        return account.sign_transaction(tx).raw_transaction.to_0x_hex()

    def send(raw_tx):
        return w3.provider.make_request("eth_sendRawTransaction", [raw_tx])

    out = {}
    # A transaction one nonce ahead waits in the pool (a gap): sending it again is "already known",
    # the same nonce at the same fee is an underpriced replacement, +10% replaces it.
    gap = raw(nonce=nonce + 1)
    out["gap"] = send(gap)
    out["already_known"] = send(gap).get("error")
    out["underpriced"] = send(raw(nonce=nonce + 1, value=2)).get("error")
    out["replacement"] = send(
        raw(nonce=nonce + 1, value=3, maxPriorityFeePerGas=1_100_000, maxFeePerGas=base_fee * 5 + 1_100_000)
    )
    out["nonce_too_high"] = send(raw(nonce=nonce + 10_000)).get("error")
    out["intrinsic_gas"] = send(raw(gas=20_000)).get("error")
    out["below_base_fee"] = send(raw(maxFeePerGas=1, maxPriorityFeePerGas=1)).get("error")
    # Filling the gap lets both in.
    first = send(raw())
    receipt = w3.eth.wait_for_transaction_receipt(first["result"], timeout=30, poll_latency=0.1)
    replaced = w3.eth.wait_for_transaction_receipt(
        out["replacement"]["result"], timeout=30, poll_latency=0.1
    )
    out["filled_status"] = [receipt["status"], replaced["status"]]
    out["nonce_after"] = w3.eth.get_transaction_count(account.address)

    out["nonce_too_low"] = send(raw(nonce=0)).get("error")
    stranger = Account.create()
    out["insufficient_funds"] = send(
        stranger.sign_transaction(
            {"type": 2, "chainId": chain_id, "nonce": 0, "to": "0x" + "42" * 20, "value": 1,
             "gas": 21_000, "maxPriorityFeePerGas": 1, "maxFeePerGas": base_fee * 4}
        ).raw_transaction.to_0x_hex()
    ).get("error")
    out["over_block_gas_limit"] = send(raw(nonce=out["nonce_after"], gas=10**9)).get("error")
    out["over_tx_gas_cap"] = send(raw(nonce=out["nonce_after"], gas=20_000_000)).get("error")
    out["wrong_chain"] = send(raw(nonce=out["nonce_after"], chainId=chain_id + 1)).get("error")

    # Reverts: code 3, the revert data, the reason in the message; web3.py decodes the reason.
    out["call_revert"] = w3.provider.make_request("eth_call", [{"data": "0x" + REVERTER}, "latest"]).get("error")
    out["estimate_revert"] = w3.provider.make_request("eth_estimateGas", [{"data": "0x" + REVERTER}]).get("error")
    try:
        w3.eth.call({"data": "0x" + REVERTER})
        out["web3_revert"] = None
    except ContractLogicError as error:
        out["web3_revert"] = {"message": error.message, "data": error.data}

    # JSON-RPC framing.
    out["invalid_params"] = w3.provider.make_request("eth_getBalance", ["0x1234", "latest"]).get("error")
    out["missing_param"] = w3.provider.make_request("eth_getBalance", []).get("error")
    out["unknown_method"] = w3.provider.make_request("eth_notAMethod", []).get("error")
    out["parse_error"] = post(url, '{"jsonrpc": "2.0", "method": "eth_chainId", "id": 1')
    out["batch"] = post(
        url,
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
                {"jsonrpc": "2.0", "id": 2, "method": "eth_notAMethod"},
                {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": ["0xzz"]},
                {"id": 4, "method": "eth_chainId"},
                {"jsonrpc": "2.0", "method": "eth_chainId"},
                {"jsonrpc": "2.0", "id": 5, "method": "eth_blockNumber"},
            ]
        ),
    )
    out["empty_batch"] = post(url, "[]")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
