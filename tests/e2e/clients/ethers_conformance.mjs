// Conformance through ethers v6 (the npm package pinned in package-lock.json), the same
// scenario as conformance.mjs: an ERC-20 compiled from Solidity by solc-js is deployed,
// transferred with legacy, EIP-2930 and EIP-1559 transactions (gas estimated by the node), its
// Transfer logs read through eth_getLogs (queryFilter), a polling filter (contract.on over HTTP)
// and a WebSocket subscription (contract.on over WebSocketProvider); balanceOf; a revert reason
// decoded by ethers; fee data; a pending transaction replaced with a higher fee; the safe and
// finalized blocks. ethers batches its HTTP requests, so JSON-RPC batches are exercised too.
//
// Usage: node ethers_conformance.mjs RPC_URL ACCOUNT_INDEX
// Prints one JSON object; the Rust test asserts on it.

import { ethers } from 'ethers';
import { compileToken } from './compile.mjs';

const MNEMONIC = 'test test test test test test test test test test test junk';
const url = process.argv[2];
const index = Number(process.argv[3] ?? 3);
const provider = new ethers.JsonRpcProvider(url, undefined, { pollingInterval: 50 });
const ws = new ethers.WebSocketProvider(url.replace('http://', 'ws://'));
const wallet = ethers.HDNodeWallet.fromPhrase(MNEMONIC, undefined, `m/44'/60'/0'/0/${index}`).connect(provider);
const recipient = '0x' + '4e'.repeat(20);
const out = {};
const { abi, bytecode } = compileToken();
const wait = (hash) => provider.waitForTransaction(hash, 1, 30_000);

const factory = new ethers.ContractFactory(abi, bytecode, wallet);
const contract = await factory.deploy('Verity Token', 'VRT', 1_000_000n);
const deployed = await contract.deploymentTransaction().wait(1, 30_000);
const token = await contract.getAddress();
out.deploy_status = deployed.status;

// Listen before transferring: a polling filter over HTTP and a subscription over WebSocket.
const filtered = [];
const streamed = [];
await contract.on('Transfer', (_from, _to, value) => filtered.push(value.toString()));
const wsToken = new ethers.Contract(token, abi, ws);
await wsToken.on('Transfer', (_from, _to, value) => streamed.push(value.toString()));
await new Promise((resolve) => setTimeout(resolve, 300));

// One transfer per transaction type.
const fees = await provider.getFeeData();
out.fee_data = {
  gas_price: fees.gasPrice?.toString(),
  max_fee: fees.maxFeePerGas?.toString(),
  max_priority_fee: fees.maxPriorityFeePerGas?.toString(),
};
const price = fees.gasPrice * 2n;
const tip = ethers.parseUnits('0.001', 'gwei');
const types = {};
for (const [type, value, overrides] of [
  ['legacy', 100n, { type: 0, gasPrice: price }],
  ['eip2930', 200n, { type: 1, gasPrice: price, accessList: [{ address: token, storageKeys: [] }] }],
  ['eip1559', 300n, { type: 2, maxFeePerGas: price, maxPriorityFeePerGas: tip }],
]) {
  const tx = await contract.transfer(recipient, value, overrides);
  const receipt = await tx.wait(1, 30_000);
  types[type] = { status: receipt.status, type: receipt.type };
}
out.types = types;

out.balance = (await contract.balanceOf(recipient)).toString();
out.get_logs = (await contract.queryFilter('Transfer', deployed.blockNumber)).map((l) => l.args.value.toString());
const deadline = Date.now() + 10_000;
while ((filtered.length < 3 || streamed.length < 3) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
await contract.removeAllListeners();
await wsToken.removeAllListeners();
out.filter_logs = filtered;
out.streamed = streamed;

// A revert reason, decoded by ethers.
try {
  // As the recipient (an address without a key here): a contract bound to the provider.
  const reader = new ethers.Contract(token, abi, provider);
  await reader.transfer.staticCall(wallet.address, 10n ** 30n, { from: recipient });
  out.revert = 'no revert';
} catch (e) {
  out.revert = e.reason ?? e.shortMessage ?? String(e);
}

// Replace a pending transaction (held by a nonce gap) with a higher fee.
const nonce = await provider.getTransactionCount(wallet.address, 'pending');
const base = { to: recipient, value: 1n, gasLimit: 21_000n, nonce: nonce + 1, type: 2, maxPriorityFeePerGas: tip };
const first = await wallet.sendTransaction({ ...base, maxFeePerGas: price });
const second = await wallet.sendTransaction({ ...base, maxFeePerGas: (price * 12n) / 10n, maxPriorityFeePerGas: tip * 2n });
const filler = await wallet.sendTransaction({ to: recipient, value: 1n, gasLimit: 21_000n, nonce, type: 2, maxFeePerGas: price, maxPriorityFeePerGas: tip });
await wait(filler.hash);
const replaced = await wait(second.hash);
out.replacement = { status: replaced.status, nonce_after: await provider.getTransactionCount(wallet.address) };
// ethers answers a receipt the node does not have with null.
out.replaced_receipt = (await provider.getTransactionReceipt(first.hash)) === null ? 'NotFound (null)' : 'found';

// The verified heads.
for (const tag of ['safe', 'finalized']) {
  try {
    const block = await provider.getBlock(tag);
    out[tag] = { number: block.number.toString(), hash: block.hash };
  } catch (e) {
    out[tag] = { error: e.shortMessage ?? String(e) };
  }
}
out.latest = (await provider.getBlockNumber()).toString();
await ws.destroy();
provider.destroy();
console.log(JSON.stringify(out));
process.exit(0);
