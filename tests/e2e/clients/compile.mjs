// Compiles contracts/Token.sol with solc-js (the npm package pinned in package-lock.json) and
// prints {"abi": [...], "bytecode": "0x...", "runtime": "0x..."}: the conformance clients of both
// languages deploy what this prints.
//
// Usage: node compile.mjs            the JSON above
//        node compile.mjs --runtime  only the deployed code, as hex: libs/workload/src/token.hex
//                                    (the load generator's ERC-20) is this output

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

export function compileToken() {
  const here = dirname(fileURLToPath(import.meta.url));
  const input = {
    language: 'Solidity',
    sources: { 'Token.sol': { content: readFileSync(join(here, 'contracts', 'Token.sol'), 'utf8') } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: 'cancun',
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length > 0) {
    throw new Error(errors.map((e) => e.formattedMessage).join('\n'));
  }
  const token = output.contracts['Token.sol'].Token;
  return {
    abi: token.abi,
    bytecode: '0x' + token.evm.bytecode.object,
    runtime: '0x' + token.evm.deployedBytecode.object,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const token = compileToken();
  console.log(process.argv.includes('--runtime') ? token.runtime : JSON.stringify(token));
}
