// Conformance through viem: an ERC-20 compiled from Solidity by solc-js is deployed,
// transferred with legacy, EIP-2930 and EIP-1559 transactions, its Transfer logs read through
// eth_getLogs, a polling filter and a WebSocket subscription; balanceOf; a decoded revert
// reason; a pending transaction replaced with a higher fee; the safe and finalized blocks.
//
// Usage: node conformance.mjs RPC_URL ACCOUNT_INDEX
// Prints one JSON object; the Rust test asserts on it.

import {
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  parseGwei,
  publicActions,
  webSocket,
} from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { compileToken } from './compile.mjs';

const MNEMONIC = 'test test test test test test test test test test test junk';
const url = process.argv[2];
const index = Number(process.argv[3] ?? 10);
const wsUrl = url.replace('http://', 'ws://');
const bootstrap = createPublicClient({ transport: http(url) });
const chain = defineChain({
  id: await bootstrap.getChainId(),
  name: 'verity',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [url], webSocket: [wsUrl] } },
});
const account = mnemonicToAccount(MNEMONIC, { addressIndex: index });
const client = createWalletClient({ account, chain, transport: http(url), pollingInterval: 50 }).extend(
  publicActions,
);
const ws = createPublicClient({ chain, transport: webSocket(wsUrl) });
const recipient = '0x' + '4e'.repeat(20);
const out = {};
const { abi, bytecode } = compileToken();
const wait = (hash) => client.waitForTransactionReceipt({ hash, pollingInterval: 50, timeout: 30_000 });

const deployHash = await client.deployContract({ abi, bytecode, args: ['Verity Token', 'VRT', 1_000_000n] });
const deployed = await wait(deployHash);
const token = deployed.contractAddress;
out.deploy_status = deployed.status;
out.token = token;

// Listen before transferring: a filter and a WebSocket subscription.
const filter = await client.createContractEventFilter({ address: token, abi, eventName: 'Transfer' });
const streamed = [];
const unwatch = ws.watchContractEvent({
  address: token,
  abi,
  eventName: 'Transfer',
  poll: false,
  onLogs: (logs) => streamed.push(...logs.map((l) => l.args.value.toString())),
});
await new Promise((resolve) => setTimeout(resolve, 200));

// One transfer per transaction type.
const price = (await client.getGasPrice()) * 2n;
const types = {};
for (const [type, value, extra] of [
  ['legacy', 100n, { type: 'legacy', gasPrice: price }],
  ['eip2930', 200n, { type: 'eip2930', gasPrice: price, accessList: [{ address: token, storageKeys: [] }] }],
  ['eip1559', 300n, { type: 'eip1559', maxFeePerGas: price, maxPriorityFeePerGas: parseGwei('0.001') }],
]) {
  const hash = await client.writeContract({ address: token, abi, functionName: 'transfer', args: [recipient, value], ...extra });
  const receipt = await wait(hash);
  types[type] = { status: receipt.status, type: receipt.type };
}
out.types = types;

out.balance = (await client.readContract({ address: token, abi, functionName: 'balanceOf', args: [recipient] })).toString();
out.get_logs = (
  await client.getContractEvents({ address: token, abi, eventName: 'Transfer', fromBlock: deployed.blockNumber })
).map((l) => l.args.value.toString());
out.filter_logs = (await client.getFilterChanges({ filter })).map((l) => l.args.value.toString());
const deadline = Date.now() + 10_000;
while (streamed.length < 3 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
unwatch();
out.streamed = streamed;

// A revert reason, decoded by viem.
try {
  await client.simulateContract({
    address: token,
    abi,
    functionName: 'transfer',
    args: [account.address, 10n ** 30n],
    account: recipient,
  });
  out.revert = 'no revert';
} catch (e) {
  const reason = e.walk?.((err) => err.reason !== undefined)?.reason;
  out.revert = reason ?? e.shortMessage;
}

// Replace a pending transaction (held by a nonce gap) with a higher fee.
const nonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
const base = { to: recipient, value: 1n, gas: 21_000n, nonce: nonce + 1, type: 'eip1559', maxPriorityFeePerGas: parseGwei('0.001') };
const first = await client.sendTransaction({ ...base, maxFeePerGas: price });
const second = await client.sendTransaction({ ...base, maxFeePerGas: (price * 12n) / 10n, maxPriorityFeePerGas: parseGwei('0.002') });
const filler = await client.sendTransaction({ to: recipient, value: 1n, gas: 21_000n, nonce, maxFeePerGas: price });
await wait(filler);
const replaced = await wait(second);
out.replacement = { status: replaced.status, nonce_after: await client.getTransactionCount({ address: account.address }) };
try {
  await client.getTransactionReceipt({ hash: first });
  out.replaced_receipt = 'found';
} catch (e) {
  out.replaced_receipt = e.name;
}

// The verified heads.
for (const tag of ['safe', 'finalized']) {
  try {
    const block = await client.getBlock({ blockTag: tag });
    out[tag] = { number: block.number.toString(), hash: block.hash };
  } catch (e) {
    out[tag] = { error: e.details ?? e.shortMessage };
  }
}
out.latest = (await client.getBlockNumber()).toString();
await ws.transport.getRpcClient().then((c) => c.close());
console.log(JSON.stringify(out));
process.exit(0);
