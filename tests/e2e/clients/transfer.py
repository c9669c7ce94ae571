"""A dApp backend's view of Verity, through web3.py against the JSON-RPC gateway.

Usage: transfer.py RPC_URL
Signs and sends a transfer with account 0 of the standard test mnemonic, waits for its receipt,
reads the new balances, then sends each kind of bad input and records the error each one got.
Prints one JSON object with everything it saw; the Rust test asserts on it.
"""

import json
import sys

import rlp

from eth_account import Account
from web3 import Web3

from devnet_web3 import account as devnet_account, error_of


def main():
    w3 = Web3(Web3.HTTPProvider(sys.argv[1], request_kwargs={"timeout": 30}))
    sender = devnet_account(0)
    recipient = Account.create()
    out = {"chain_id": w3.eth.chain_id, "client_version": w3.client_version}
    # Wei amounts are printed as decimal strings: they exceed what a JSON number carries exactly.
    out["sender_before"] = str(w3.eth.get_balance(sender.address))
    value = Web3.to_wei(1.5, "ether")
    nonce = w3.eth.get_transaction_count(sender.address, "pending")
    latest = w3.eth.get_block("latest")
    tx = {
        "type": 2,
        "chainId": out["chain_id"],
        "nonce": nonce,
        "to": recipient.address,
        "value": value,
        "gas": w3.eth.estimate_gas({"from": sender.address, "to": recipient.address, "value": value}),
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
        "maxFeePerGas": latest["baseFeePerGas"] * 2 + w3.eth.max_priority_fee,
    }
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)
    out["tx_hash"] = tx_hash.to_0x_hex()
    out["receipt"] = {
        "status": receipt["status"],
        "gasUsed": receipt["gasUsed"],
        "effectiveGasPrice": receipt["effectiveGasPrice"],
        "blockNumber": receipt["blockNumber"],
        "blockHash": receipt["blockHash"].to_0x_hex(),
        "transactionHash": receipt["transactionHash"].to_0x_hex(),
        "from": receipt["from"],
        "to": receipt["to"],
    }
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    out["block_has_tx"] = any(t["hash"] == tx_hash for t in block["transactions"])
    by_hash = w3.eth.get_block(receipt["blockHash"])
    out["block_by_hash_number"] = by_hash["number"]
    fetched = w3.eth.get_transaction(tx_hash)
    out["tx_value"] = str(fetched["value"])
    out["recipient_after"] = str(w3.eth.get_balance(recipient.address))
    out["sender_after"] = str(w3.eth.get_balance(sender.address))
    out["value"] = str(value)
    out["fee"] = str(receipt["gasUsed"] * receipt["effectiveGasPrice"])
    out["sender_nonce_after"] = w3.eth.get_transaction_count(sender.address)

    # Past state, by number and by EIP-1898 block hash: before the transfer's block and after it.
    mined = receipt["blockNumber"]
    out["sender_at_parent"] = str(w3.eth.get_balance(sender.address, mined - 1))
    out["sender_at_block"] = str(w3.eth.get_balance(sender.address, mined))
    out["recipient_at_parent"] = str(w3.eth.get_balance(recipient.address, mined - 1))
    out["nonce_at_parent"] = w3.eth.get_transaction_count(sender.address, mined - 1)
    by_1898 = w3.provider.make_request(
        "eth_getBalance",
        [recipient.address, {"blockHash": receipt["blockHash"].to_0x_hex(), "requireCanonical": True}],
    )
    out["recipient_at_block_hash"] = str(int(by_1898["result"], 16))
    out["recipient_at_earliest"] = str(w3.eth.get_balance(recipient.address, "earliest"))
    out["future_block_error"] = error_of(
        lambda: w3.eth.get_balance(sender.address, w3.eth.block_number + 1000)
    )
    unknown_hash = "0x" + "ab" * 32
    out["unknown_hash_error"] = w3.provider.make_request(
        "eth_getBalance", [sender.address, {"blockHash": unknown_hash}]
    ).get("error")

    # Bad input: each gets its own error, and the node keeps serving.
    def signed_raw(account, **overrides):
        base = dict(tx)
        base["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
        base.update(overrides)
        return account.sign_transaction(base).raw_transaction

    errors = {}
    errors["malformed_rlp"] = error_of(lambda: w3.eth.send_raw_transaction(b"\xf8\x01\x02\x03"))
    errors["wrong_chain_id"] = error_of(
        lambda: w3.eth.send_raw_transaction(signed_raw(sender, chainId=out["chain_id"] + 1))
    )
    # A well-formed envelope whose signature has r = 0: no sender can be recovered from it.
    raw = signed_raw(sender)
    fields = rlp.decode(raw[1:])
    fields[-2] = b""
    errors["bad_signature"] = error_of(lambda: w3.eth.send_raw_transaction(raw[:1] + rlp.encode(fields)))
    errors["nonce_too_low"] = error_of(lambda: w3.eth.send_raw_transaction(signed_raw(sender, nonce=0)))
    errors["unfunded_sender"] = error_of(
        lambda: w3.eth.send_raw_transaction(signed_raw(Account.create()))
    )
    out["errors"] = errors
    out["block_number_after_errors"] = w3.eth.block_number
    print(json.dumps(out))


if __name__ == "__main__":
    main()
