"""Conformance through web3.py (AsyncWeb3 over its WebSocketProvider): an ERC-20 compiled from
Solidity by solc-js is deployed, transferred with legacy, EIP-2930 and EIP-1559 transactions,
its Transfer logs read through eth_getLogs, a polling filter and a subscription; balanceOf; a
decoded revert reason; a pending transaction replaced with a higher fee; the safe and finalized
blocks.

Usage: conformance.py RPC_URL ACCOUNT_INDEX
Prints one JSON object; the Rust test asserts on it.
"""

import asyncio
import json
import os
import subprocess
import sys

from eth_account import Account
from web3 import AsyncWeb3, Web3, WebSocketProvider
from web3.exceptions import ContractLogicError, TransactionNotFound

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
HERE = os.path.dirname(os.path.abspath(__file__))


def compile_token():
    output = subprocess.run(
        ["node", os.path.join(HERE, "compile.mjs")], check=True, capture_output=True, text=True
    )
    return json.loads(output.stdout)


async def main():
    url = sys.argv[1].replace("http://", "ws://")
    index = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    account = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    recipient = Web3.to_checksum_address("0x" + "5d" * 20)
    compiled = compile_token()
    out = {}
    async with AsyncWeb3(WebSocketProvider(url, max_connection_retries=1)) as w3:
        chain_id = await w3.eth.chain_id
        price = (await w3.eth.gas_price) * 2

        async def send(tx):
            tx.setdefault("chainId", chain_id)
            tx.setdefault("nonce", await w3.eth.get_transaction_count(account.address, "pending"))
            signed = account.sign_transaction(tx)
            return await w3.eth.send_raw_transaction(signed.raw_transaction)

        async def mined(tx_hash):
            return await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)

        factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
        deploy = await factory.constructor("Verity Token", "VRT", 1_000_000).build_transaction(
            {"from": account.address, "maxFeePerGas": price, "maxPriorityFeePerGas": 1_000_000, "nonce": 0}
        )
        deployed = await mined(await send(deploy))
        out["deploy_status"] = deployed["status"]
        token = w3.eth.contract(address=deployed["contractAddress"], abi=compiled["abi"])

        # Listen before transferring: a filter and a subscription.
        transfer_topic = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
        log_filter = await token.events.Transfer.create_filter(from_block="latest")
        subscription = await w3.eth.subscribe(
            "logs", {"address": token.address, "topics": [transfer_topic]}
        )

        types = {}
        for name, value, fields in [
            ("legacy", 100, {"gasPrice": price}),
            ("eip2930", 200, {"type": 1, "gasPrice": price, "accessList": [{"address": token.address, "storageKeys": []}]}),
            ("eip1559", 300, {"maxFeePerGas": price, "maxPriorityFeePerGas": 1_000_000}),
        ]:
            params = {"from": account.address, **fields}
            params["gas"] = await token.functions.transfer(recipient, value).estimate_gas(params)
            tx = await token.functions.transfer(recipient, value).build_transaction(params)
            receipt = await mined(await send(tx))
            types[name] = {"status": receipt["status"], "type": receipt["type"]}
        out["types"] = types

        out["balance"] = await token.functions.balanceOf(recipient).call()
        logs = await token.events.Transfer.get_logs(from_block=deployed["blockNumber"])
        out["get_logs"] = [log["args"]["value"] for log in logs]
        out["filter_logs"] = [log["args"]["value"] for log in await log_filter.get_new_entries()]

        streamed = []

        async def collect():
            async for message in w3.socket.process_subscriptions():
                if message.get("subscription") == subscription:
                    streamed.append(int(message["result"]["data"].hex(), 16))
                    if len(streamed) == 3:
                        return

        try:
            await asyncio.wait_for(collect(), timeout=10)
        except asyncio.TimeoutError:
            pass
        out["streamed"] = streamed
        await w3.eth.unsubscribe(subscription)

        # A revert reason, decoded by web3.py.
        try:
            await token.functions.transfer(account.address, 10**30).call({"from": recipient})
            out["revert"] = "no revert"
        except ContractLogicError as error:
            out["revert"] = error.message

        # Replace a pending transaction (held by a nonce gap) with a higher fee.
        nonce = await w3.eth.get_transaction_count(account.address, "pending")
        base = {"to": recipient, "value": 1, "gas": 21_000, "nonce": nonce + 1, "maxPriorityFeePerGas": 1_000_000}
        first = await send({**base, "maxFeePerGas": price})
        second = await send({**base, "maxFeePerGas": price * 12 // 10, "maxPriorityFeePerGas": 2_000_000})
        await mined(await send({"to": recipient, "value": 1, "gas": 21_000, "nonce": nonce, "maxFeePerGas": price, "maxPriorityFeePerGas": 1_000_000}))
        replaced = await mined(second)
        out["replacement"] = {
            "status": replaced["status"],
            "nonce_after": await w3.eth.get_transaction_count(account.address),
        }
        try:
            await w3.eth.get_transaction_receipt(first)
            out["replaced_receipt"] = "found"
        except TransactionNotFound:
            out["replaced_receipt"] = "TransactionNotFound"

        for tag in ("safe", "finalized"):
            try:
                block = await w3.eth.get_block(tag)
                out[tag] = {"number": block["number"], "hash": block["hash"].to_0x_hex()}
            except Exception as error:  # the JSON-RPC error is what matters
                out[tag] = {"error": str(error)}
        out["latest"] = await w3.eth.block_number
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
