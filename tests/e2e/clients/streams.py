"""Subscription streams lose nothing: while at least 1,000 mini-blocks are published (one or a
few transactions each, sent every few milliseconds from four accounts), web3.py's
newPendingTransactions and newHeads subscriptions and a raw miniBlocks subscription (a Verity
extension no library knows) are read to the end.

Usage: streams.py RPC_URL
Prints one JSON object with what was sent and seen; the Rust test asserts on it.
"""

import asyncio
import json
import sys
import time

import websockets
from eth_account import Account
from web3 import AsyncWeb3, Web3, WebSocketProvider

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
TARGET_MINI_BLOCKS = 1_000


async def main():
    url = sys.argv[1].replace("http://", "ws://")
    accounts = [Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(4)]
    out = {}
    sent = []
    mini_numbers = []
    mini_txs = []
    async with AsyncWeb3(WebSocketProvider(url, max_connection_retries=1)) as w3, websockets.connect(
        url.rstrip("/") + "/ws", max_size=None
    ) as raw:
        chain_id = await w3.eth.chain_id
        base_fee = (await w3.eth.get_block("latest"))["baseFeePerGas"]
        nonces = [await w3.eth.get_transaction_count(a.address, "pending") for a in accounts]
        pending_sub = await w3.eth.subscribe("newPendingTransactions")
        heads_sub = await w3.eth.subscribe("newHeads")
        await raw.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["miniBlocks"]}))
        mini_sub = json.loads(await raw.recv())["result"]
        pending, heads = [], []
        done = asyncio.Event()

        async def read_web3():
            async for message in w3.socket.process_subscriptions():
                if message["subscription"] == pending_sub:
                    pending.append(message["result"].to_0x_hex())
                elif message["subscription"] == heads_sub:
                    heads.append(message["result"]["number"])

        async def read_minis():
            async for text in raw:
                message = json.loads(text)
                if message.get("params", {}).get("subscription") == mini_sub:
                    mini = message["params"]["result"]
                    mini_numbers.append(int(mini["number"], 16))
                    mini_txs.extend(mini["transactions"])
                    if len(set(mini_numbers)) >= TARGET_MINI_BLOCKS:
                        done.set()

        async def send():
            i = 0
            deadline = time.monotonic() + 90
            while not done.is_set() and time.monotonic() < deadline:
                who = i % len(accounts)
                tx = {
                    "type": 2,
                    "chainId": chain_id,
                    "nonce": nonces[who],
                    "to": "0x" + "61" * 20,
                    "value": 1,
                    "gas": 21_000,
                    "maxFeePerGas": base_fee * 4 + 1_000_000,
                    "maxPriorityFeePerGas": 1_000_000,
                }
                nonces[who] += 1
                signed = accounts[who].sign_transaction(tx)
                sent.append((await w3.eth.send_raw_transaction(signed.raw_transaction)).to_0x_hex())
                i += 1
                await asyncio.sleep(0.008)

        readers = [asyncio.create_task(read_web3()), asyncio.create_task(read_minis())]
        await send()
        # Let the last mini-blocks and a block seal arrive.
        await asyncio.sleep(2.5)
        for task in readers:
            task.cancel()
        out["sent"] = len(sent)
        out["pending_seen"] = len(pending)
        out["pending_missing"] = len(set(sent) - set(pending))
        out["pending_duplicates"] = len(pending) - len(set(pending))
        out["mini_blocks"] = len(mini_numbers)
        out["mini_block_gaps"] = sum(
            1 for a, b in zip(mini_numbers, mini_numbers[1:]) if b != a + 1
        )
        out["mini_block_txs_missing"] = len(set(sent) - set(mini_txs))
        out["heads"] = len(heads)
        out["head_gaps"] = sum(1 for a, b in zip(heads, heads[1:]) if b != a + 1)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
