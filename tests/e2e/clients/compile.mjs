// Compiles contracts/Token.sol with solc-js (the npm package pinned in package-lock.json) and
// prints {"abi": [...], "bytecode": "0x...", "runtime": "0x..."}: the conformance clients of both
// languages deploy what this prints.
//
// Usage: node compile.mjs            the JSON above
//        node compile.mjs --file F   every contract of contracts/F: {"Name": {abi, bytecode, runtime}}
//        node compile.mjs --runtime  only the deployed code, as hex: libs/workload/src/token.hex
//                                    (the load generator's ERC-20) is this output

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

/// Every contract of contracts/FILE, by name: {abi, bytecode, runtime}.
export function compileContracts(file) {
  const here = dirname(fileURLToPath(import.meta.url));
  const input = {
    language: 'Solidity',
    sources: { [file]: { content: readFileSync(join(here, 'contracts', file), 'utf8') } },
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
  const contracts = {};
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    contracts[name] = {
      abi: contract.abi,
      bytecode: '0x' + contract.evm.bytecode.object,
      runtime: '0x' + contract.evm.deployedBytecode.object,
    };
  }
  return contracts;
}

export function compileToken() {
  return compileContracts('Token.sol').Token;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv.indexOf('--file');
  if (file > 0) {
    console.log(JSON.stringify(compileContracts(process.argv[file + 1])));
  } else {
    const token = compileToken();
    console.log(process.argv.includes('--runtime') ? token.runtime : JSON.stringify(token));
  }
}
