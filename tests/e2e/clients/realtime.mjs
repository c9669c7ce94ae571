// The realtime extensions through viem: eth_sendRawTransactionSync (EIP-7966) and
// realtime_sendRawTransaction return the receipt in the same call; a transaction that cannot be
// processed (a nonce gap) times out with error 4 naming its hash; eth_callAfter runs a call once
// an account's nonce reaches a target; viem's WebSocket transport watches blocks over
// eth_subscribe.
//
// Usage: node realtime.mjs RPC_URL
// Prints one JSON object; the Rust test asserts on it.

import {
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  publicActions,
  webSocket,
} from 'viem';
import { mnemonicToAccount } from 'viem/accounts';

const MNEMONIC = 'test test test test test test test test test test test junk';
const RUNTIME = '36156012576000358060005560006000a1005b60005460005260206000f3';
const INIT = '0x601e80600c6000396000f300' + RUNTIME;
const VALUE = '0x' + '5a'.repeat(32);

const url = process.argv[2];
const bootstrap = createPublicClient({ transport: http(url) });
const chain = defineChain({
  id: await bootstrap.getChainId(),
  name: 'verity',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [url], webSocket: [url.replace('http://', 'ws://')] } },
});
const account = mnemonicToAccount(MNEMONIC, { addressIndex: 9 });
const client = createWalletClient({ account, chain, transport: http(url) }).extend(publicActions);
const out = {};

const sign = async (fields) =>
  client.signTransaction(await client.prepareTransactionRequest({ gas: 200_000n, ...fields }));
const errorOf = (e) => ({ code: e.code ?? e.cause?.code, message: e.details ?? e.message, data: e.cause?.data ?? e.data });

// A receipt in the call that sends: viem's own action.
let started = Date.now();
const deployed = await client.sendRawTransactionSync({
  serializedTransaction: await sign({ data: INIT }),
  timeout: 5000,
});
out.sync_ms = Date.now() - started;
out.deploy = {
  status: deployed.status,
  contractAddress: deployed.contractAddress,
  blockNumber: deployed.blockNumber.toString(),
  blockHash: deployed.blockHash ?? null,
  transactionIndex: deployed.transactionIndex,
};
const contract = deployed.contractAddress;

// The MegaETH-style name answers the same.
started = Date.now();
const transfer = await client.request({
  method: 'realtime_sendRawTransaction',
  params: [await sign({ to: '0x' + '31'.repeat(20), value: 7n, gas: 21_000n })],
});
out.realtime_ms = Date.now() - started;
out.realtime_status = transfer.status;
out.realtime_has_hash = typeof transfer.transactionHash === 'string';

// A nonce gap cannot be processed: error 4 with the hash as data, after the requested timeout.
const nonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
const gapped = await sign({ to: '0x' + '32'.repeat(20), value: 1n, gas: 21_000n, nonce: nonce + 5 });
started = Date.now();
try {
  await client.sendRawTransactionSync({ serializedTransaction: gapped, timeout: 300 });
  out.gap = 'no error';
} catch (e) {
  out.gap = errorOf(e);
}
out.gap_ms = Date.now() - started;

// eth_callAfter: asked before the store, it answers after it with the stored value.
const pending = client.request({
  method: 'eth_callAfter',
  params: [{ to: contract, data: '0x' }, { address: account.address, nonce: `0x${(nonce + 1).toString(16)}` }, 10000],
});
await new Promise((resolve) => setTimeout(resolve, 200));
out.store_hash = await client.sendRawTransaction({
  serializedTransaction: await sign({ to: contract, data: VALUE, nonce }),
});
out.call_after = await pending;
out.value = VALUE;
try {
  await client.request({
    method: 'eth_callAfter',
    params: [{ to: contract, data: '0x' }, { address: account.address, nonce: '0x3e8' }, 300],
  });
  out.call_after_timeout = 'no error';
} catch (e) {
  out.call_after_timeout = errorOf(e);
}

// viem's WebSocket transport: blocks arrive over eth_subscribe, not polling.
const ws = createPublicClient({ chain, transport: webSocket(url.replace('http://', 'ws://')) });
out.ws_block = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no block over WebSocket in 10 s')), 10000);
  const unwatch = ws.watchBlocks({
    poll: false,
    onBlock: (block) => {
      clearTimeout(timer);
      unwatch();
      resolve({ number: block.number.toString(), hash: block.hash });
    },
    onError: reject,
  });
});
await ws.transport.getRpcClient().then((c) => c.close());
console.log(JSON.stringify(out));
process.exit(0);
