"""Contract state through the replica, via web3.py: code, storage, logs and eth_call.

Usage: contract.py RPC_URL
Deploys a 30-byte contract (a call with 32 bytes of data stores them at slot 0 and emits LOG1
with them as topic; a call without data returns slot 0), stores a value, and reads everything
back through the gateway. The replica never executes these transactions: it applies the
sequencer's state diffs, so this checks that code, storage and logs survive that path.
Prints one JSON object; the Rust test asserts on it.
"""

import json
import sys

from web3 import Web3

from devnet_web3 import account as devnet_account, send

RUNTIME = "36156012576000358060005560006000a1005b60005460005260206000f3"
INIT = "601e80600c6000396000f300" + RUNTIME
VALUE = 0x2A2A


def main():
    w3 = Web3(Web3.HTTPProvider(sys.argv[1], request_kwargs={"timeout": 30}))
    account = devnet_account(4)
    out = {}
    deployed = send(w3, account, {"data": "0x" + INIT})
    address = deployed["contractAddress"]
    out["deploy_status"] = deployed["status"]
    out["contract_address"] = address
    out["code"] = w3.eth.get_code(address).hex()
    value = VALUE.to_bytes(32, "big")
    stored = send(w3, account, {"to": address, "data": "0x" + value.hex()})
    out["store_status"] = stored["status"]
    out["log_count"] = len(stored["logs"])
    out["log_address"] = stored["logs"][0]["address"] if stored["logs"] else None
    out["log_topic"] = stored["logs"][0]["topics"][0].hex() if stored["logs"] else None
    out["log_index"] = stored["logs"][0]["logIndex"] if stored["logs"] else None
    out["slot0"] = w3.eth.get_storage_at(address, 0).hex()
    out["call"] = w3.eth.call({"to": address}).hex()
    # The same reads at the block before the store: slot 0 was still empty then.
    before = stored["blockNumber"] - 1
    out["slot0_before"] = w3.eth.get_storage_at(address, 0, before).hex()
    out["call_before"] = w3.eth.call({"to": address}, before).hex()
    out["call_at_store"] = w3.eth.call({"to": address}, stored["blockNumber"]).hex()
    out["code_before_deploy"] = w3.eth.get_code(address, deployed["blockNumber"] - 1).hex()
    out["value"] = value.hex()
    out["runtime"] = RUNTIME
    print(json.dumps(out))


if __name__ == "__main__":
    main()
