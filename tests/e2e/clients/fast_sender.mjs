// One sender sending contiguous transfers as fast as it can, as a bot or market maker does:
// every transaction signed ahead (viem, locally), then all sent at once over JSON-RPC batches
// (viem's batching HTTP transport), none waiting for another's inclusion. Then it waits until
// the last one is included.
//
// Usage: node fast_sender.mjs RPC_URL ACCOUNT_INDEX COUNT
// Prints one JSON object; the Rust test asserts on it.

import { createPublicClient, createWalletClient, defineChain, http, publicActions } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';

const MNEMONIC = 'test test test test test test test test test test test junk';
const [url, index, count] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const bootstrap = createPublicClient({ transport: http(url) });
const chain = defineChain({
  id: await bootstrap.getChainId(),
  name: 'verity',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [url] } },
});
const account = mnemonicToAccount(MNEMONIC, { addressIndex: index });
const client = createWalletClient({
  account,
  chain,
  transport: http(url, { batch: { batchSize: 500, wait: 0 } }),
}).extend(publicActions);

const start = await client.getTransactionCount({ address: account.address });
const price = (await client.getGasPrice()) * 4n;
const signed = [];
for (let i = 0; i < count; i++) {
  signed.push(
    await account.signTransaction({
      chainId: chain.id,
      type: 'eip1559',
      nonce: start + i,
      to: '0x' + '7a'.repeat(20),
      value: 1n,
      gas: 21_000n,
      maxFeePerGas: price,
      maxPriorityFeePerGas: 1_000_000n,
    }),
  );
}
const started = Date.now();
const answers = await Promise.allSettled(
  signed.map((serializedTransaction) => client.sendRawTransaction({ serializedTransaction })),
);
const send_ms = Date.now() - started;
const errors = answers
  .map((a, i) => (a.status === 'rejected' ? { nonce: start + i, error: a.reason?.details ?? a.reason?.message } : null))
  .filter((e) => e !== null);
const hashes = answers.filter((a) => a.status === 'fulfilled').map((a) => a.value);
let last = null;
if (hashes.length > 0) {
  const receipt = await client.waitForTransactionReceipt({ hash: hashes[hashes.length - 1], pollingInterval: 100, timeout: 120_000 });
  last = { status: receipt.status, block: receipt.blockNumber.toString() };
}
const end = await client.getTransactionCount({ address: account.address });
console.log(
  JSON.stringify({
    sent: count,
    accepted: hashes.length,
    errors: errors.slice(0, 5),
    refused: errors.length,
    start,
    end,
    last,
    send_ms,
  }),
);
