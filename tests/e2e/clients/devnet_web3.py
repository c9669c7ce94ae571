"""What the web3.py clients share: the devnet's accounts, sending a dynamic-fee transaction and
waiting for its receipt, and the JSON-RPC error inside whatever web3 raised."""

from eth_account import Account

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"


def account(index):
    """The devnet's account `index` (BIP-44 path m/44'/60'/0'/0/index of the test mnemonic)."""
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def error_of(call):
    """The JSON-RPC error object `call` failed with, or None when it succeeded."""
    try:
        call()
    except Exception as error:  # web3 raises several types; the JSON-RPC error is what matters
        response = getattr(error, "rpc_response", None)
        if isinstance(response, dict) and isinstance(response.get("error"), dict):
            return response["error"]
        args = getattr(error, "args", ())
        if args and isinstance(args[0], dict):
            return args[0]
        return {"message": str(error)}
    return None


def send(w3, account, tx, tip=None, gas=None):
    """Signs `tx` as a type-2 transaction of `account` (pending nonce, fee cap twice the base fee
    plus `tip`, the node's suggested tip by default; `gas` estimated unless given), sends it and
    returns its receipt."""
    latest = w3.eth.get_block("latest")
    tip = w3.eth.max_priority_fee if tip is None else tip
    tx = dict(tx)
    tx.update(
        {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": latest["baseFeePerGas"] * 2 + tip,
        }
    )
    if gas is None:
        call = {k: v for k, v in tx.items() if k in ("to", "data", "value")}
        gas = w3.eth.estimate_gas({"from": account.address, **call})
    tx["gas"] = gas
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)
