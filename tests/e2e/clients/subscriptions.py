"""WebSocket subscriptions through web3.py's AsyncWeb3 and WebSocketProvider: newHeads, logs
(sealed, and pending = per mini-block), newPendingTransactions, and Verity's miniBlocks and
stateChanges; regular calls over the same socket; unsubscribe; a bad subscription's error.

Usage: subscriptions.py WS_URL
Prints one JSON object with what arrived; the Rust test asserts on it.
"""

import asyncio
import json
import sys

import websockets

from eth_account import Account
from web3 import AsyncWeb3, WebSocketProvider

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
RUNTIME = "36156012576000358060005560006000a1005b60005460005260206000f3"
INIT = "601e80600c6000396000f300" + RUNTIME
TOPIC = "0x" + "cc" * 32


def hexstr(value):
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if hasattr(value, "to_0x_hex"):
        return value.to_0x_hex()
    return value


async def send(w3, account, tx, wait=True):
    latest = await w3.eth.get_block("latest")
    tip = 1_000_000
    tx.update(
        {
            "type": 2,
            "chainId": await w3.eth.chain_id,
            "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": latest["baseFeePerGas"] * 2 + tip,
            "gas": tx.get("gas", 200_000),
        }
    )
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    if not wait:
        return tx_hash
    return await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)


async def main():
    url = sys.argv[1]
    out = {}
    account = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/8")
    recipient = Account.create().address
    async with AsyncWeb3(WebSocketProvider(url, max_connection_retries=1)) as w3:
        out["chain_id_over_ws"] = await w3.eth.chain_id
        deployed = await send(w3, account, {"data": "0x" + INIT})
        contract = deployed["contractAddress"]

        subs = {}
        subs["heads"] = await w3.eth.subscribe("newHeads")
        subs["pending"] = await w3.eth.subscribe("newPendingTransactions")
        subs["logs"] = await w3.eth.subscribe("logs", {"address": contract})
        # web3.py knows newHeads, logs (address and topics only) and newPendingTransactions;
        # Verity's own subscriptions and pending logs are spoken raw on a second socket, on the
        # /ws path.
        raw = await websockets.connect(url.rstrip("/") + "/ws")
        raw_subs = {}
        for name, params in [
            ("mini", ["miniBlocks"]),
            ("state", ["stateChanges", [recipient, contract]]),
            ("pending_logs", ["logs", {"address": contract, "fromBlock": "pending"}]),
            ("bad", ["notAKind"]),
        ]:
            await raw.send(json.dumps({"jsonrpc": "2.0", "id": name, "method": "eth_subscribe", "params": params}))
            reply = json.loads(await raw.recv())
            if name == "bad":
                out["bad_subscription"] = reply.get("error")
            else:
                raw_subs[reply["result"]] = name
        ids = list(subs.values()) + list(raw_subs)
        out["subscription_ids_distinct"] = len(set(ids)) == len(ids)
        by_id = {v: k for k, v in subs.items()}

        transfer = await send(w3, account, {"to": recipient, "value": 12345, "gas": 21_000}, wait=False)
        call = await send(w3, account, {"to": contract, "data": TOPIC}, wait=False)
        transfer_hash = hexstr(transfer)
        call_hash = hexstr(call)
        out["transfer_hash"] = transfer_hash
        out["call_hash"] = call_hash

        seen = {k: [] for k in list(subs) + list(raw_subs.values())}
        call_block = None

        async def collect():
            nonlocal call_block
            async for message in w3.socket.process_subscriptions():
                sub = by_id.get(message.get("subscription"))
                result = message.get("result")
                if sub is None:
                    continue
                seen[sub].append(result)
                if sub == "heads" and call_block is not None and result["number"] >= call_block:
                    return
                if sub == "logs":
                    call_block = result["blockNumber"]

        try:
            await asyncio.wait_for(collect(), timeout=20)
        except asyncio.TimeoutError:
            out["timed_out"] = True

        # The raw socket's notifications arrived meanwhile; read what is there.
        async def drain():
            while True:
                message = json.loads(await raw.recv())
                params = message.get("params", {})
                name = raw_subs.get(params.get("subscription"))
                if name is not None:
                    seen[name].append(params["result"])

        try:
            await asyncio.wait_for(drain(), timeout=2)
        except asyncio.TimeoutError:
            pass
        await raw.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"}))
        while True:
            reply = json.loads(await raw.recv())
            if reply.get("id") == 2:
                out["block_number_on_ws_path"] = reply.get("result")
                break
        await raw.close()

        out["pending_hashes"] = [hexstr(h) for h in seen["pending"]]
        out["mini_blocks"] = [
            {
                "number": m["number"],
                "blockNumber": m["blockNumber"],
                "transactions": m["transactions"],
                "receipt_status": [r["status"] for r in m["receipts"]],
            }
            for m in seen["mini"]
        ]
        out["state_changes"] = seen["state"]
        out["logs"] = [
            {
                "topic": hexstr(log["topics"][0]),
                "blockHash": hexstr(log.get("blockHash")),
                "blockNumber": log["blockNumber"],
                "transactionHash": hexstr(log["transactionHash"]),
                "logIndex": log["logIndex"],
            }
            for log in seen["logs"]
        ]
        out["pending_logs"] = [
            {
                "topic": hexstr(log["topics"][0]),
                "blockHash": hexstr(log.get("blockHash")),
                "blockNumber": log["blockNumber"],
                "transactionHash": hexstr(log["transactionHash"]),
            }
            for log in seen["pending_logs"]
        ]
        out["heads"] = [
            {"number": h["number"], "hash": hexstr(h["hash"]), "miniBlockCount": h.get("miniBlockCount")}
            for h in seen["heads"]
        ]
        out["call_block"] = call_block
        receipt = await w3.eth.wait_for_transaction_receipt(call, timeout=30, poll_latency=0.1)
        out["call_receipt_block_hash"] = hexstr(receipt["blockHash"])
        out["unsubscribe"] = await w3.eth.unsubscribe(subs["heads"])
        again = await w3.provider.make_request("eth_unsubscribe", [subs["heads"]])
        out["unsubscribe_again"] = again.get("result")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
