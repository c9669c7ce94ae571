// Tracing against a reference: the same transactions, sent by the same key at the same nonces
// (so the contracts land at the same addresses), on the gateway and on anvil (Foundry's
// devnet, the npm package pinned in package-lock.json, started here on a port the OS picks),
// then traced on both with geth's tracers through viem. Contracts/Traced.sol: Outer calls
// Inner, which writes, logs and reverts past 100; tryPoke catches the revert, mustPoke
// bubbles it.
//
// Usage: node traces.mjs RPC_URL ACCOUNT_INDEX
// Prints one JSON object: each trace from both nodes, plus what the gateway's own reads say
// (receipts, storage, balances), for the Rust test to compare.

import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublicClient, createWalletClient, defineChain, encodeFunctionData, http, publicActions } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { compileContracts } from './compile.mjs';

const MNEMONIC = 'test test test test test test test test test test test junk';
const url = process.argv[2];
const index = Number(process.argv[3] ?? 7);
const here = dirname(fileURLToPath(import.meta.url));
const anvilBin = join(here, 'node_modules', '@foundry-rs', 'anvil-linux-amd64', 'bin', 'anvil');

// anvil on an OS-chosen loopback port, under the fork every Verity block runs (Prague).
const anvil = spawn(anvilBin, ['--host', '127.0.0.1', '--port', '0', '--hardfork', 'prague', '--steps-tracing'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const anvilUrl = await new Promise((resolve, reject) => {
  let seen = '';
  const timer = setTimeout(() => reject(new Error(`anvil did not start: ${seen}`)), 30_000);
  anvil.stdout.on('data', (chunk) => {
    seen += chunk;
    const found = seen.match(/Listening on (127\.0\.0\.1:\d+)/);
    if (found) {
      clearTimeout(timer);
      resolve(`http://${found[1]}`);
    }
  });
  anvil.on('exit', (code) => reject(new Error(`anvil exited with ${code}: ${seen}`)));
});

async function node(rpc) {
  const bootstrap = createPublicClient({ transport: http(rpc) });
  const chain = defineChain({
    id: await bootstrap.getChainId(),
    name: 'traced',
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpc] } },
  });
  const account = mnemonicToAccount(MNEMONIC, { addressIndex: index });
  return createWalletClient({ account, chain, transport: http(rpc), pollingInterval: 50 }).extend(publicActions);
}

const { Inner, Outer } = compileContracts('Traced.sol');
const out = { anvil: {}, verity: {} };
// Fixed gas and fees: the top frame's gas and every gas figure then agree across the nodes.
const fees = { maxFeePerGas: 10_000_000_000n, maxPriorityFeePerGas: 1_000_000n };

try {
  for (const [name, rpc] of [['verity', url], ['anvil', anvilUrl]]) {
    const client = await node(rpc);
    const wait = (hash) => client.waitForTransactionReceipt({ hash, pollingInterval: 50, timeout: 30_000 });
    const mine = async (request) => wait(await client.sendTransaction({ ...request, ...fees }));
    const into = out[name];
    into.sender = client.account.address;
    into.nonce = await client.getTransactionCount({ address: client.account.address });

    const inner = (await mine({ data: Inner.bytecode, gas: 1_000_000n })).contractAddress;
    // The constructor's argument, ABI-encoded, follows the init code.
    const outer = (await mine({ data: Outer.bytecode + inner.slice(2).padStart(64, '0'), gas: 1_000_000n })).contractAddress;
    into.inner = inner;
    into.outer = outer;

    const call = (fn, value) => encodeFunctionData({ abi: Outer.abi, functionName: fn, args: [value] });
    const txs = {
      caught: { to: outer, data: call('tryPoke', 500n), gas: 300_000n },
      bubbled: { to: outer, data: call('mustPoke', 500n), gas: 300_000n },
      succeeded: { to: outer, data: call('tryPoke', 5n), gas: 300_000n },
    };
    into.tx = {};
    for (const [label, request] of Object.entries(txs)) {
      const receipt = await mine(request);
      const hash = receipt.transactionHash;
      const trace = (options) => client.request({ method: 'debug_traceTransaction', params: [hash, options] });
      const entry = {
        hash,
        status: receipt.status,
        gas_used: Number(receipt.gasUsed),
        effective_gas_price: receipt.effectiveGasPrice.toString(),
        block: Number(receipt.blockNumber),
        call: await trace({ tracer: 'callTracer', tracerConfig: { withLog: true } }),
        top: await trace({ tracer: 'callTracer', tracerConfig: { onlyTopCall: true } }),
        four_byte: await trace({ tracer: '4byteTracer' }),
        struct: await trace({}),
        struct_lean: await trace({ disableStack: true, disableStorage: true, enableMemory: false }),
        prestate: await trace({ tracer: 'prestateTracer' }),
        diff: await trace({ tracer: 'prestateTracer', tracerConfig: { diffMode: true } }),
        parity: await client.request({ method: 'trace_transaction', params: [hash] }),
        parity_block: await client.request({ method: 'trace_block', params: [`0x${receipt.blockNumber.toString(16)}`] }),
      };
      try {
        entry.parity_get = await client.request({ method: 'trace_get', params: [hash, ['0x0']] });
      } catch (e) {
        entry.parity_get = { unsupported: e.shortMessage ?? String(e) };
      }
      if (name === 'verity') {
        // What the gateway's own reads say about the same transaction.
        const at = (n) => ({ blockNumber: BigInt(n) });
        entry.calls_before = await client.getStorageAt({ address: outer, slot: '0x0', ...at(entry.block - 1) });
        entry.calls_after = await client.getStorageAt({ address: outer, slot: '0x0', ...at(entry.block) });
        entry.stored_before = await client.getStorageAt({ address: inner, slot: '0x0', ...at(entry.block - 1) });
        entry.stored_after = await client.getStorageAt({ address: inner, slot: '0x0', ...at(entry.block) });
        entry.balance_before = (await client.getBalance({ address: client.account.address, ...at(entry.block - 1) })).toString();
        entry.balance_after = (await client.getBalance({ address: client.account.address, ...at(entry.block) })).toString();
        entry.nonce_before = await client.getTransactionCount({ address: client.account.address, ...at(entry.block - 1) });
        const block = await client.request({
          method: 'debug_traceBlockByNumber',
          params: [`0x${entry.block.toString(16)}`, { tracer: 'callTracer', tracerConfig: { withLog: true } }],
        });
        entry.block_trace = block.find((t) => t.txHash === hash) ?? null;
        entry.block_trace_hashes = block.map((t) => t.txHash);
        const byHash = await client.request({
          method: 'debug_traceBlockByHash',
          params: [receipt.blockHash, { tracer: '4byteTracer' }],
        });
        entry.block_by_hash_four_byte = byHash.find((t) => t.txHash === hash)?.result ?? null;
      }
      into.tx[label] = entry;
    }

    // Otterscan's methods over the same transactions, and a factory whose child receives an
    // endowment and sends it on.
    const { Factory } = compileContracts('Traced.sol');
    const factory = (await mine({ data: Factory.bytecode, gas: 1_000_000n })).contractAddress;
    const made = await mine({
      to: factory,
      data: encodeFunctionData({ abi: Factory.abi, functionName: 'make' }),
      value: 1000n,
      gas: 500_000n,
    });
    const child = '0x' + made.logs[0].data.slice(26);
    const Child = compileContracts('Traced.sol').Child;
    const gave = await mine({
      to: child,
      data: encodeFunctionData({ abi: Child.abi, functionName: 'give', args: ['0x' + '4e'.repeat(20)] }),
      gas: 200_000n,
    });
    const ots = (method, params) => client.request({ method, params });
    into.ots = {
      factory,
      child,
      made: made.transactionHash,
      trace_caught: await ots('ots_traceTransaction', [into.tx.caught.hash]),
      trace_made: await ots('ots_traceTransaction', [made.transactionHash]),
      error_bubbled: await ots('ots_getTransactionError', [into.tx.bubbled.hash]),
      error_caught: await ots('ots_getTransactionError', [into.tx.caught.hash]),
      internal_made: await ots('ots_getInternalOperations', [made.transactionHash]),
      internal_gave: await ots('ots_getInternalOperations', [gave.transactionHash]),
      internal_caught: await ots('ots_getInternalOperations', [into.tx.caught.hash]),
      creator_child: await ots('ots_getContractCreator', [child]),
      creator_outer: await ots('ots_getContractCreator', [outer]),
      creator_eoa: await ots('ots_getContractCreator', [client.account.address]),
      api_level: await ots('ots_getApiLevel', []),
    };
    // Otterscan's searches over the sender's transactions (all sealed: viem waited for each
    // receipt, which this gateway gives once its block is sealed).
    const me = client.account.address;
    const shape = (page) => ({
      hashes: page.txs.map((t) => t.hash),
      receipts: page.receipts.map((r) => r.transactionHash),
      timestamps: page.receipts.every((r) => Number(r.timestamp) > 0),
      firstPage: page.firstPage,
      lastPage: page.lastPage,
    });
    const newest = await ots('ots_searchTransactionsBefore', [me, 0, 3]);
    const lastBlock = Number(newest.txs[newest.txs.length - 1].blockNumber);
    into.search = {
      all: shape(await ots('ots_searchTransactionsBefore', [me, 0, 25])),
      newest: shape(newest),
      older: shape(await ots('ots_searchTransactionsBefore', [me, lastBlock, 3])),
      oldest: shape(await ots('ots_searchTransactionsAfter', [me, 0, 3])),
    };

    // debug_traceCall: the caught revert as a call, at latest, and with a state override that
    // makes Inner's slot read differently (the override reaches the traced call).
    const callRequest = { from: client.account.address, to: outer, data: call('tryPoke', 500n), gas: '0x493e0' };
    into.trace_call = await client.request({
      method: 'debug_traceCall',
      params: [callRequest, 'latest', { tracer: 'callTracer', tracerConfig: { withLog: true } }],
    });
    into.trace_call_struct_count = (
      await client.request({ method: 'debug_traceCall', params: [callRequest, 'latest', {}] })
    ).structLogs.length;
    if (name === 'verity') {
      into.trace_call_override = await client.request({
        method: 'debug_traceCall',
        params: [
          { ...callRequest, data: call('tryPoke', 5n) },
          'latest',
          { tracer: 'prestateTracer', stateOverrides: { [inner]: { stateDiff: { ['0x' + '0'.repeat(64)]: '0x' + '7'.padStart(64, '0') } } } },
        ],
      });
      // eth_callMany: calls in a row over one state, bundles in a row, from a context.
      const innerCall = (fn, args = []) => ({
        from: client.account.address,
        to: inner,
        data: encodeFunctionData({ abi: Inner.abi, functionName: fn, args }),
      });
      const outerCall = (fn, args = []) => ({
        from: client.account.address,
        to: outer,
        data: encodeFunctionData({ abi: Outer.abi, functionName: fn, args }),
      });
      const caughtTx = await client.getTransaction({ hash: into.tx.caught.hash });
      const caughtBlock = `0x${into.tx.caught.block.toString(16)}`;
      into.call_many = {
        chained: await client.request({
          method: 'eth_callMany',
          params: [
            [
              { transactions: [innerCall('poke', [5n]), innerCall('stored')] },
              {
                transactions: [innerCall('stored'), outerCall('mustPoke', [500n])],
                blockOverride: { blockNumber: '0x100000' },
              },
            ],
            { blockNumber: 'latest' },
          ],
        }),
        before_caught: await client.request({
          method: 'eth_callMany',
          params: [[{ transactions: [outerCall('calls')] }], { blockNumber: caughtBlock, transactionIndex: caughtTx.transactionIndex }],
        }),
        after_caught_block: await client.request({
          method: 'eth_callMany',
          params: [[{ transactions: [outerCall('calls')] }], { blockNumber: caughtBlock, transactionIndex: -1 }],
        }),
        overridden: await client.request({
          method: 'eth_callMany',
          params: [
            [{ transactions: [innerCall('stored')] }],
            { blockNumber: 'latest' },
            { [inner]: { stateDiff: { ['0x' + '0'.repeat(64)]: '0x' + '2a'.padStart(64, '0') } } },
          ],
        }),
      };
      // eth_simulateV1 through viem's simulateCalls and simulateBlocks.
      const plain = (v) => JSON.parse(JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x)));
      const simulatedCalls = await client.simulateCalls({
        account: client.account.address,
        calls: [
          { to: inner, abi: Inner.abi, functionName: 'poke', args: [6n] },
          { to: inner, abi: Inner.abi, functionName: 'stored' },
          { to: outer, abi: Outer.abi, functionName: 'mustPoke', args: [500n] },
        ],
      });
      const simulatedBlocks = await client.simulateBlocks({
        blocks: [
          {
            calls: [{ from: client.account.address, to: inner, abi: Inner.abi, functionName: 'poke', args: [7n] }],
          },
          {
            blockOverrides: { time: 4_000_000_000n },
            stateOverrides: [{ address: inner, stateDiff: [{ slot: '0x' + '0'.repeat(64), value: '0x' + '63'.padStart(64, '0') }] }],
            calls: [{ to: inner, abi: Inner.abi, functionName: 'stored' }],
          },
        ],
      });
      const errorOf = async (method, params) => {
        try {
          await client.request({ method, params });
          return null;
        } catch (e) {
          return { code: e.cause?.code ?? e.code, message: e.cause?.message ?? e.details ?? e.message };
        }
      };
      // With geth's validation: fees charged at a base fee that follows the parent's, nonces
      // taken from the state.
      const price = (await client.getGasPrice()) * 2n;
      const validated = await client.simulateBlocks({
        validation: true,
        blocks: [
          {
            calls: [
              { from: client.account.address, to: inner, abi: Inner.abi, functionName: 'poke', args: [8n], maxFeePerGas: price, maxPriorityFeePerGas: 1n },
              { from: client.account.address, to: inner, abi: Inner.abi, functionName: 'stored', maxFeePerGas: price, maxPriorityFeePerGas: 1n },
            ],
          },
        ],
      });
      const pokeData = encodeFunctionData({ abi: Inner.abi, functionName: 'poke', args: [8n] });
      const validatedCall = (extra) => ({ from: client.account.address, to: inner, data: pokeData, ...extra });
      into.simulate_validated = {
        block: plain({ number: validated[0].number, baseFeePerGas: validated[0].baseFeePerGas, gasUsed: validated[0].gasUsed }),
        latest_base_fee: plain((await client.getBlock()).baseFeePerGas),
        calls: plain(validated[0].calls.map((c) => ({ status: c.status, result: c.result ?? null, gasUsed: c.gasUsed }))),
        underpriced: await errorOf('eth_simulateV1', [{ blockStateCalls: [{ calls: [validatedCall({})] }], validation: true }, 'latest']),
        nonce_low: await errorOf('eth_simulateV1', [{ blockStateCalls: [{ calls: [validatedCall({ nonce: '0x0', maxFeePerGas: '0x' + price.toString(16) })] }], validation: true }, 'latest']),
        poor: await errorOf('eth_simulateV1', [{ blockStateCalls: [{ calls: [validatedCall({ from: '0x' + '01'.repeat(20), maxFeePerGas: '0x' + price.toString(16) })] }], validation: true }, 'latest']),
        block_gas: await errorOf('eth_simulateV1', [{ blockStateCalls: [{ calls: [validatedCall({ gas: '0x' + (10n ** 12n).toString(16) })] }] }, 'latest']),
        unvalidated_underpriced: plain((await client.request({ method: 'eth_simulateV1', params: [{ blockStateCalls: [{ calls: [validatedCall({})] }] }, 'latest'] }))[0].calls[0].status),
      };
      into.simulate = {
        calls: plain(simulatedCalls.results.map((r) => ({ status: r.status, result: r.result, logs: r.logs?.length, gasUsed: r.gasUsed, error: r.error?.shortMessage ?? null }))),
        blocks: plain(simulatedBlocks.map((b) => ({
          number: b.number,
          timestamp: b.timestamp,
          hash: b.hash,
          parentHash: b.parentHash,
          gasUsed: b.gasUsed,
          calls: b.calls.map((c) => ({ status: c.status, result: c.result ?? null, logs: c.logs?.length })),
        }))),
        base: plain((await client.getBlock()).number),
      };
      into.errors = {
        unknown_tx: await errorOf('debug_traceTransaction', ['0x' + 'ab'.repeat(32), {}]),
        js_tracer: await errorOf('debug_traceTransaction', [into.tx.caught.hash, { tracer: '{ result: function() { return 1; } }' }]),
        bad_config: await errorOf('debug_traceTransaction', [into.tx.caught.hash, { tracer: 'callTracer', tracerConfig: { onlyTopCall: 'yes' } }]),
        future_block: await errorOf('debug_traceBlockByNumber', ['0xffffff', {}]),
        bad_timeout: await errorOf('debug_traceTransaction', [into.tx.caught.hash, { timeout: 'soon' }]),
        poor_call: await errorOf('debug_traceCall', [{ from: '0x' + '01'.repeat(20), to: outer, value: '0xde0b6b3a7640000' }, 'latest', {}]),
        tx_index: await errorOf('debug_traceCall', [callRequest, 'latest', { txIndex: '0x0' }]),
        call_many_empty: await errorOf('eth_callMany', [[], {}]),
        simulate_order: await errorOf('eth_simulateV1', [{ blockStateCalls: [{ blockOverrides: { number: '0x1' }, calls: [] }] }, 'latest']),
        call_many_index_latest: await errorOf('eth_callMany', [[{ transactions: [outerCall('calls')] }], { blockNumber: 'latest', transactionIndex: 0 }]),
      };
    }
  }
} finally {
  anvil.kill();
}
console.log(JSON.stringify(out));
